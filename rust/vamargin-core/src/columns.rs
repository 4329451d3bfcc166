//! Output columns: who allocates them, and where spent ones go.

/// Where a kernel's output columns come from.
///
/// A column's contents are unspecified: zeros, or the values of a column that was handed
/// back earlier. Kernels write every element before they read it or return it. (A kernel
/// that reports an error may return nothing else, so it may leave rows unwritten.)
///
/// [`Zeroed`] asks the allocator for zeroed vectors, whose fresh pages the operating
/// system faults in and clears on first write. The Python bindings advise large fresh
/// columns for transparent huge pages and reuse the columns of results that Python has
/// freed, which skips the clearing altogether.
pub trait Columns: Sync {
    fn f64s(&self, n: usize) -> Vec<f64> {
        vec![0.0; n]
    }

    fn u8s(&self, n: usize) -> Vec<u8> {
        vec![0; n]
    }

    fn u32s(&self, n: usize) -> Vec<u32> {
        vec![0; n]
    }

    fn i64s(&self, n: usize) -> Vec<i64> {
        vec![0; n]
    }

    fn usizes(&self, n: usize) -> Vec<usize> {
        vec![0; n]
    }

    /// Takes back a column the kernel no longer needs (by default: frees it).
    fn give_back(&self, column: Vec<f64>) {
        drop(column);
    }
}

/// Plain zeroed vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zeroed;

impl Columns for Zeroed {}

/// Columns filled with values no kernel computes (a NaN with a payload, `0xA5` bytes,
/// `0xDEAD_BEEF`), to test that kernels write every element they return.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stale;

#[cfg(test)]
impl Stale {
    pub(crate) const F64: f64 = f64::from_bits(0x7ff8_dead_beef_0001);
    pub(crate) const I64: i64 = 0x5EAD_BEEF_DEAD_BEEF;
}

#[cfg(test)]
impl Columns for Stale {
    fn f64s(&self, n: usize) -> Vec<f64> {
        vec![Self::F64; n]
    }

    fn u8s(&self, n: usize) -> Vec<u8> {
        vec![0xA5; n]
    }

    fn u32s(&self, n: usize) -> Vec<u32> {
        vec![0xDEAD_BEEF; n]
    }

    fn i64s(&self, n: usize) -> Vec<i64> {
        vec![Self::I64; n]
    }

    fn usizes(&self, n: usize) -> Vec<usize> {
        vec![0x5EAD_BEEF; n]
    }
}
