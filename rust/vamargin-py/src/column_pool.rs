//! Output columns that outlive their results.
//!
//! A revaluation of 10M positions writes about 0.9 GB of columns. Fresh from the
//! operating system, every page of them is faulted in and cleared before the kernel's
//! first write: a fifth of the CPU time of a revaluation on a built book (BENCHMARKS.md,
//! "Where the time goes"). Intraday and batch callers revalue the same book again and
//! again, so the columns of a result that Python has freed are kept here and handed,
//! uncleared, to the next kernel that asks for columns of the same length (kernels write
//! every element: see [`Columns`]).
//!
//! - Columns of at least [`MIN_BYTES`] (64 KiB) are kept; smaller ones go back to the
//!   allocator. The allocator does not keep the larger ones warm: glibc maps a column of
//!   a few MiB afresh, or trims it back to the system when it is freed, so until the pool
//!   kept them a revaluation of 1M positions faulted in all 77 MB of its columns on every
//!   call (18 700 page faults, 47 ms of system time against 85 ms of user time;
//!   BENCHMARKS.md, sixth session).
//! - `f64` and `i64` columns share the pool (one size and alignment): the revaluation's
//!   figures, the firm report's per-account figures and funding's payments.
//! - At most `VAMARGIN_COLUMN_POOL_MB` MiB (default [`DEFAULT_MIB`]; `0` turns the pool
//!   off) are kept; a column that does not fit is freed.
//! - A request of a length the pool does not hold empties it: the book changed shape, and
//!   what is kept would only hold memory.
//!
//! Result columns reach Python as numpy arrays whose base object owns the column; when
//! the last reference to the array (or to an Arrow or pandas view of it) goes, the base
//! object's `Drop` hands the column to the pool.

use std::sync::{Mutex, OnceLock};

use numpy::ndarray::ArrayView1;
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use vamargin_core::Columns;

use crate::huge_pages::HugePages;

/// Columns under 64 KiB (8 192 `f64`) are not kept: the allocator's free lists serve them.
pub const MIN_BYTES: usize = 64 << 10;
/// Pool size unless `VAMARGIN_COLUMN_POOL_MB` says otherwise: the columns of one
/// revaluation of about 20M positions.
pub const DEFAULT_MIB: usize = 2048;

/// The spare columns and their total size in bytes.
struct Spare {
    columns: Vec<Vec<f64>>,
    bytes: usize,
}

static SPARE: Mutex<Spare> = Mutex::new(Spare {
    columns: Vec::new(),
    bytes: 0,
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

fn spare() -> std::sync::MutexGuard<'static, Spare> {
    // A panic while the lock was held cannot leave `Spare` inconsistent in a way that
    // matters (at worst `bytes` miscounts a column), so a poisoned lock is still used.
    SPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bytes_of(n: usize) -> usize {
    n.saturating_mul(std::mem::size_of::<f64>())
}

/// A kept column of exactly `n` elements, if there is one.
fn take(n: usize) -> Option<Vec<f64>> {
    if bytes_of(n) < MIN_BYTES {
        return None;
    }
    let mut spare = spare();
    match spare.columns.iter().position(|c| c.len() == n) {
        Some(k) => {
            let column = spare.columns.swap_remove(k);
            spare.bytes -= bytes_of(n);
            Some(column)
        }
        None => {
            let dropped = std::mem::take(&mut spare.columns);
            spare.bytes = 0;
            drop(spare);
            drop(dropped);
            None
        }
    }
}

/// Keeps `column` for a later request, or frees it.
fn keep(column: Vec<f64>) {
    let bytes = bytes_of(column.len());
    if bytes < MIN_BYTES {
        return;
    }
    let mut spare = spare();
    if spare.bytes + bytes <= capacity() {
        spare.bytes += bytes;
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

/// Columns from the pool where it holds one of the length asked for; otherwise fresh,
/// advised for huge pages.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recycled;

impl Columns for Recycled {
    fn f64s(&self, n: usize) -> Vec<f64> {
        take(n).unwrap_or_else(|| HugePages.f64s(n))
    }

    fn u8s(&self, n: usize) -> Vec<u8> {
        HugePages.u8s(n)
    }

    fn u32s(&self, n: usize) -> Vec<u32> {
        HugePages.u32s(n)
    }

    /// An `i64` column shares the pool with the `f64` ones: the same size and alignment,
    /// so a kept column's allocation serves either (its bits are overwritten).
    fn i64s(&self, n: usize) -> Vec<i64> {
        take(n).map_or_else(|| HugePages.i64s(n), bytemuck::allocation::cast_vec)
    }

    fn give_back(&self, column: Vec<f64>) {
        keep(column);
    }
}

/// The base object of a result column's numpy array: it owns the column and hands it to
/// the pool when Python frees it. Not exported: Python sees it only as `array.base`.
#[pyclass(frozen, module = "vamargin._core", name = "ResultColumn")]
struct ResultColumn {
    column: Vec<f64>,
}

impl Drop for ResultColumn {
    fn drop(&mut self) {
        keep(std::mem::take(&mut self.column));
    }
}

/// A numpy array of `column` (`f64` or `i64`), which goes to the pool when the array is
/// freed. The pool keeps it as an `f64` allocation (the same size and alignment) and the
/// array views it as `T`.
pub fn result_array<T>(py: Python<'_>, column: Vec<T>) -> PyResult<Bound<'_, PyArray1<T>>>
where
    T: numpy::Element + bytemuck::Pod,
{
    const { assert!(size_of::<T>() == size_of::<f64>() && align_of::<T>() == align_of::<f64>()) };
    if bytes_of(column.len()) < MIN_BYTES || capacity() == 0 {
        return Ok(column.into_pyarray(py));
    }
    let column: Vec<f64> = bytemuck::allocation::cast_vec(column);
    let owner = Bound::new(py, ResultColumn { column })?;
    let view = ArrayView1::from(bytemuck::cast_slice::<f64, T>(&owner.get().column));
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
    fn the_pool_serves_kept_columns_by_length_and_empties_on_a_miss() {
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
        assert_eq!(spare().columns.len(), 1);
        let other = Recycled.f64s(n + 1); // another length: the pool empties
        assert_eq!(other.len(), n + 1);
        assert!(other.iter().all(|&x| x == 0.0));
        assert_eq!(spare().columns.len(), 0);
        assert_eq!(spare().bytes, 0);
    }
}
