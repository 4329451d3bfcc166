//! Output columns backed by transparent huge pages.
//!
//! A revaluation of 10M positions writes about 0.8 GB of fresh columns. Faulted in 4 KiB
//! at a time that is ~200 000 page faults, a third of the kernel's time on a built book
//! (BENCHMARKS.md, "Where the time goes"). Linux backs memory with 2 MiB pages where the
//! process asks for it (`madvise(MADV_HUGEPAGE)`; the default `transparent_hugepage`
//! mode is `madvise`), so the big columns are advised before their first write.
//!
//! This is one of the project's two `unsafe` calls (the core forbids `unsafe`; the other
//! lends a pooled column to numpy, in `column_pool`). It is only advice: the kernel may
//! ignore it, and a failure changes nothing but speed.

use vamargin_core::Columns;

/// Columns from the allocator's zeroed memory, advised for huge pages when large.
#[derive(Debug, Clone, Copy, Default)]
pub struct HugePages;

impl Columns for HugePages {
    fn f64s(&self, n: usize) -> Vec<f64> {
        advised(n)
    }

    fn u8s(&self, n: usize) -> Vec<u8> {
        advised(n)
    }

    fn u32s(&self, n: usize) -> Vec<u32> {
        advised(n)
    }

    fn i64s(&self, n: usize) -> Vec<i64> {
        advised(n)
    }

    fn usizes(&self, n: usize) -> Vec<usize> {
        advised(n)
    }
}

/// A zeroed column of `n` numbers (from the allocator's zeroed memory), advised.
fn advised<T: Clone + Default>(n: usize) -> Vec<T> {
    let column = vec![T::default(); n];
    advise(&column);
    column
}

const HUGE_PAGE: usize = 2 << 20;

/// Advises the whole huge pages inside `column` (columns under 8 MiB are left alone: they
/// may come from the heap, and a few faults cost less than the advice).
fn advise<T>(column: &[T]) {
    let bytes = std::mem::size_of_val(column);
    if bytes < 4 * HUGE_PAGE {
        return;
    }
    let start = column.as_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        advise_range(first, end - first);
    }
}

#[cfg(target_os = "linux")]
fn advise_range(address: usize, length: usize) {
    // SAFETY: `[address, address + length)` lies inside a live allocation that the caller
    // owns. MADV_HUGEPAGE neither reads nor writes it and leaves its contents as they are;
    // it only asks the kernel to back it with huge pages. The result is ignored on
    // purpose: declined advice only costs speed.
    let _ = unsafe { libc::madvise(address as *mut libc::c_void, length, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_address: usize, _length: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advised_columns_are_zeroed_and_sized() {
        let columns = HugePages;
        let big = columns.f64s(3 << 20);
        assert_eq!(big.len(), 3 << 20);
        assert!(big.iter().all(|&x| x == 0.0));
        assert!(columns.u8s(5).iter().all(|&x| x == 0));
    }
}
