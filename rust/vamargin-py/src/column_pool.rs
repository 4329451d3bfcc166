//! Output columns that outlive their results.
//!
//! A revaluation of 10M positions writes about 0.9 GB of columns. Fresh from the
//! operating system, every page of them is faulted in and cleared before the kernel's
//! first write: a fifth of the CPU time of a revaluation on a built book (BENCHMARKS.md,
//! "Where the time goes"). Intraday and batch callers revalue the same book again and
//! again, so the columns of a result that Python has freed are kept here and handed,
//! uncleared, to the next kernel that asks for columns of the same shape (kernels write
//! every element: see [`Columns`]).
//!
//! - A column's shape is its element width (8, 4 or 1 bytes) and its length. `f64`,
//!   `i64` and `usize` columns share the 8-byte allocations (one size and alignment),
//!   `u32` columns (a book's account rows, config ids and grouping keys) the 4-byte
//!   ones, `u8` columns (status and tier codes) the 1-byte ones.
//! - Columns of at least [`MIN_BYTES`] (64 KiB) are kept; smaller ones go back to the
//!   allocator. The allocator does not keep the larger ones warm: glibc maps a column of
//!   a few MiB afresh, or trims it back to the system when it is freed, so until the pool
//!   kept them a revaluation of 1M positions faulted in all 77 MB of its columns on every
//!   call (18 700 page faults, 47 ms of system time against 85 ms of user time;
//!   BENCHMARKS.md, sixth session).
//! - At most `VAMARGIN_COLUMN_POOL_MB` MiB (default [`DEFAULT_MIB`]; `0` turns the pool
//!   off) are kept; a column that does not fit is freed.
//! - Only columns of the [`RECENT_SHAPES`] shapes asked for most recently are kept. A
//!   book has about six shapes (accounts, holdings and positions long, in two or three
//!   widths), so the pool serves two books, or two jobs on one book, in alternation; the
//!   columns of a shape that drops off the list are freed. (Until the seventh session a
//!   request the pool could not serve emptied it, so a job asking for one more column
//!   than the pool held, or another job's lengths, threw every kept column away.)
//! - [`column_pool_clear`] frees everything kept, for a caller done with its books.
//!
//! Result columns reach Python as numpy arrays whose base object owns the column; when
//! the last reference to the array (or to an Arrow or pandas view of it) goes, the base
//! object's `Drop` hands the column to the pool.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, OnceLock};

use bytemuck::allocation::try_cast_vec;
use bytemuck::{AnyBitPattern, NoUninit, Pod};
use numpy::ndarray::ArrayView1;
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use vamargin_core::Columns;

use crate::huge_pages::HugePages;

/// Columns under 64 KiB (8 192 `f64`) are not kept: the allocator's free lists serve them.
pub const MIN_BYTES: usize = 64 << 10;
/// Pool size unless `VAMARGIN_COLUMN_POOL_MB` says otherwise: the columns of one
/// revaluation of about 20M positions.
pub const DEFAULT_MIB: usize = 2048;
/// Shapes whose columns the pool keeps: the ones asked for most recently.
pub const RECENT_SHAPES: usize = 16;

/// A column's element width and length.
type Shape = (usize, usize);

/// A kept column, held as the allocation of its width.
enum Column {
    Eight(Vec<f64>),
    Four(Vec<u32>),
    One(Vec<u8>),
}

impl Column {
    /// `column` as the allocation of its width, or `column` back when `T` is of no width
    /// the pool holds (or of another alignment than that width's).
    fn of<T: NoUninit>(column: Vec<T>) -> Result<Self, Vec<T>> {
        match size_of::<T>() {
            8 => try_cast_vec(column).map(Column::Eight),
            4 => try_cast_vec(column).map(Column::Four),
            1 => try_cast_vec(column).map(Column::One),
            _ => return Err(column),
        }
        .map_err(|(_, column)| column)
    }

    /// The column as a vector of `T` (its bits reinterpreted), if `T` has its width and
    /// alignment.
    fn into_vec<T: AnyBitPattern>(self) -> Option<Vec<T>> {
        match self {
            Column::Eight(column) => try_cast_vec(column).ok(),
            Column::Four(column) => try_cast_vec(column).ok(),
            Column::One(column) => try_cast_vec(column).ok(),
        }
    }

    /// A view of the column as `T`: `None` if `T` is not of the column's width.
    fn view<T: AnyBitPattern>(&self) -> Option<&[T]> {
        if size_of::<T>() != self.shape().0 {
            return None;
        }
        match self {
            Column::Eight(column) => bytemuck::try_cast_slice(column).ok(),
            Column::Four(column) => bytemuck::try_cast_slice(column).ok(),
            Column::One(column) => bytemuck::try_cast_slice(column).ok(),
        }
    }

    fn shape(&self) -> Shape {
        match self {
            Column::Eight(column) => (8, column.len()),
            Column::Four(column) => (4, column.len()),
            Column::One(column) => (1, column.len()),
        }
    }
}

fn bytes_of((width, n): Shape) -> usize {
    n.saturating_mul(width)
}

/// The spare columns, their total size in bytes, and the shapes asked for most recently
/// (newest first).
struct Spare {
    columns: Vec<Column>,
    bytes: usize,
    recent: VecDeque<Shape>,
}

impl Spare {
    /// Moves `shape` to the front of the recent shapes; the columns of a shape pushed
    /// off the end are returned, for the caller to free outside the lock.
    fn ask_for(&mut self, shape: Shape) -> Vec<Column> {
        if let Some(k) = self.recent.iter().position(|&s| s == shape) {
            self.recent.remove(k);
        }
        self.recent.push_front(shape);
        let mut stale = Vec::new();
        while self.recent.len() > RECENT_SHAPES {
            let Some(old) = self.recent.pop_back() else {
                break;
            };
            let (gone, kept) = std::mem::take(&mut self.columns)
                .into_iter()
                .partition(|c| c.shape() == old);
            self.columns = kept;
            stale.extend(gone);
        }
        self.bytes -= stale.iter().map(|c| bytes_of(c.shape())).sum::<usize>();
        stale
    }

    /// Takes out a kept column of `shape`, if there is one.
    fn take(&mut self, shape: Shape) -> Option<Column> {
        let k = self.columns.iter().position(|c| c.shape() == shape)?;
        self.bytes -= bytes_of(shape);
        Some(self.columns.swap_remove(k))
    }
}

static SPARE: Mutex<Spare> = Mutex::new(Spare {
    columns: Vec::new(),
    bytes: 0,
    recent: VecDeque::new(),
});

/// Pool capacity in bytes, read from the environment once.
fn capacity() -> usize {
    static CAPACITY: OnceLock<usize> = OnceLock::new();
    *CAPACITY.get_or_init(|| {
        std::env::var("VAMARGIN_COLUMN_POOL_MB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_MIB)
            .saturating_mul(1 << 20)
    })
}

fn spare() -> MutexGuard<'static, Spare> {
    // A panic while the lock was held cannot leave `Spare` inconsistent in a way that
    // matters (at worst `bytes` miscounts a column), so a poisoned lock is still used.
    SPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether columns of `shape` are worth keeping at all.
fn poolable(shape: Shape) -> bool {
    bytes_of(shape) >= MIN_BYTES && capacity() > 0
}

/// A kept column of `n` elements of `T`, if there is one; the request makes the shape
/// the most recent.
fn take<T: AnyBitPattern>(n: usize) -> Option<Vec<T>> {
    let shape = (size_of::<T>(), n);
    if !poolable(shape) {
        return None;
    }
    let mut spare = spare();
    let stale = spare.ask_for(shape);
    let column = spare.take(shape);
    drop(spare);
    drop(stale);
    column?.into_vec()
}

/// Keeps `column` for a later request, or frees it: too small, of a shape not asked for
/// recently, or over capacity.
fn keep(column: Column) {
    let shape = column.shape();
    if !poolable(shape) {
        return;
    }
    let mut spare = spare();
    if spare.recent.contains(&shape) && spare.bytes + bytes_of(shape) <= capacity() {
        spare.bytes += bytes_of(shape);
        spare.columns.push(column);
    }
}

/// The columns the pool holds now, and their size in bytes (for tests and monitoring:
/// a long-running caller can see what the pool keeps).
#[pyfunction]
pub fn column_pool_held() -> (usize, usize) {
    let spare = spare();
    (spare.columns.len(), spare.bytes)
}

/// Frees every column the pool holds and forgets the recent shapes; returns the bytes
/// freed. Results alive now still go to the pool when freed if their shape is asked for
/// again first.
#[pyfunction]
pub fn column_pool_clear() -> usize {
    let mut spare = spare();
    let columns = std::mem::take(&mut spare.columns);
    let bytes = std::mem::replace(&mut spare.bytes, 0);
    spare.recent.clear();
    drop(spare);
    drop(columns);
    bytes
}

/// Columns from the pool where it holds one of the shape asked for; otherwise fresh,
/// advised for huge pages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recycled;

impl Columns for Recycled {
    fn f64s(&self, n: usize) -> Vec<f64> {
        take(n).unwrap_or_else(|| HugePages.f64s(n))
    }

    fn u8s(&self, n: usize) -> Vec<u8> {
        take(n).unwrap_or_else(|| HugePages.u8s(n))
    }

    fn u32s(&self, n: usize) -> Vec<u32> {
        take(n).unwrap_or_else(|| HugePages.u32s(n))
    }

    fn i64s(&self, n: usize) -> Vec<i64> {
        take(n).unwrap_or_else(|| HugePages.i64s(n))
    }

    fn usizes(&self, n: usize) -> Vec<usize> {
        take(n).unwrap_or_else(|| HugePages.usizes(n))
    }

    fn give_back(&self, column: Vec<f64>) {
        give_back(column);
    }
}

/// Hands a column the caller no longer needs to the pool (freed if the pool does not
/// hold its type or shape).
pub fn give_back<T: NoUninit>(column: Vec<T>) {
    if let Ok(column) = Column::of(column) {
        keep(column);
    }
}

/// The base object of a result column's numpy array: it owns the column and hands it to
/// the pool when Python frees it. Not exported: Python sees it only as `array.base`.
#[pyclass(frozen, module = "vamargin._core", name = "ResultColumn")]
struct ResultColumn {
    column: Column,
}

impl Drop for ResultColumn {
    fn drop(&mut self) {
        // An empty column in its place: too small to keep, so dropping it frees nothing.
        keep(std::mem::replace(&mut self.column, Column::One(Vec::new())));
    }
}

/// A numpy array of `column`, which goes to the pool when the array is freed (a column
/// too small to keep, or of a type the pool does not hold, becomes a plain array).
pub fn result_array<T>(py: Python<'_>, column: Vec<T>) -> PyResult<Bound<'_, PyArray1<T>>>
where
    T: numpy::Element + Pod,
{
    if !poolable((size_of::<T>(), column.len())) {
        return Ok(column.into_pyarray(py));
    }
    let column = match Column::of(column) {
        Ok(column) => column,
        Err(column) => return Ok(column.into_pyarray(py)),
    };
    let owner = Bound::new(py, ResultColumn { column })?;
    let values = owner.get().column.view::<T>().ok_or_else(|| {
        PyRuntimeError::new_err("a result column does not view as its own element type")
    })?;
    let view = ArrayView1::from(values);
    // SAFETY: the array views `owner`'s column and takes `owner` as its base object, so the
    // column lives as long as the array. `owner` is frozen and its column private: nothing
    // reallocates or moves the column's heap buffer until `owner` is dropped, which numpy
    // does only after the array itself is gone.
    Ok(unsafe { PyArray1::borrow_from_array(&view, owner.clone().into_any()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test owns the process-wide pool (tests run in parallel threads).
    #[test]
    fn the_pool_serves_kept_columns_by_shape_and_forgets_old_shapes() {
        column_pool_clear();
        let n = MIN_BYTES / 8;
        let mut a = Recycled.f64s(n);
        a[0] = 42.0;
        let address = a.as_ptr();
        Recycled.give_back(a);
        Recycled.give_back(vec![1.0; 16]); // too small: freed, not kept
        let again = Recycled.f64s(n);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again[0], 42.0); // handed back as it was, not cleared
        Recycled.give_back(again);
        assert_eq!(column_pool_held(), (1, n * 8));
        // An i64 column of the same length is the same shape: it takes the f64 column.
        let ints = Recycled.i64s(n);
        assert_eq!(ints.as_ptr() as usize, address as usize);
        assert_eq!(ints[0], 42.0f64.to_bits() as i64);
        give_back(ints);
        // Another length is another shape: the kept column stays.
        let other = Recycled.f64s(n + 1);
        assert_eq!(other.len(), n + 1);
        assert_eq!(column_pool_held(), (1, n * 8));
        // u32 columns are kept apart from the 8-byte ones.
        let narrow = Recycled.u32s(2 * n);
        assert!(narrow.iter().all(|&x| x == 0));
        give_back(narrow);
        assert_eq!(column_pool_held(), (2, 2 * n * 8));
        // A column whose shape was never asked for is not kept.
        keep(Column::Eight(vec![0.0; n + 5]));
        assert_eq!(column_pool_held(), (2, 2 * n * 8));
        // Three shapes were asked for: (8, n), (8, n + 1), (4, 2n). Asking for other
        // shapes pushes them off the recent list, oldest first, and frees their columns.
        for k in 0..RECENT_SHAPES - 3 {
            drop(Recycled.u8s(MIN_BYTES + k));
        }
        assert_eq!(column_pool_held(), (2, 2 * n * 8));
        drop(Recycled.u8s(MIN_BYTES + RECENT_SHAPES)); // (8, n) drops off
        assert_eq!(column_pool_held(), (1, n * 8));
        drop(Recycled.u8s(MIN_BYTES + RECENT_SHAPES + 1)); // then (8, n + 1)
        assert_eq!(column_pool_held(), (1, n * 8));
        drop(Recycled.u8s(MIN_BYTES + RECENT_SHAPES + 2)); // then (4, 2n)
        assert_eq!(column_pool_held(), (0, 0));
        assert_eq!(column_pool_clear(), 0);
    }

    #[test]
    fn columns_convert_only_between_types_of_one_width() {
        assert!(matches!(Column::of(vec![1.5f64]), Ok(Column::Eight(_))));
        assert!(matches!(Column::of(vec![7usize]), Ok(Column::Eight(_))));
        assert!(matches!(Column::of(vec![7u32]), Ok(Column::Four(_))));
        assert!(matches!(Column::of(vec![7u8]), Ok(Column::One(_))));
        assert!(Column::of(vec![7u16]).is_err());
        let column = Column::of(vec![-1i64]).unwrap_or_else(|_| unreachable!());
        assert_eq!(column.view::<u64>(), Some(&[u64::MAX][..]));
        assert!(column.view::<u32>().is_none());
        assert_eq!(Column::Four(vec![3]).into_vec::<f64>(), None);
    }
}
