//! Fresh output columns: who allocates them.

/// Where a kernel's fresh output columns come from. Every element is written before it
/// is read, so the memory may be lazily zeroed: [`Zeroed`] asks the allocator for zeroed
/// vectors (fresh pages the kernel faults in on first write); the Python bindings hand
/// out the same vectors advised for transparent huge pages, which cuts those faults
/// 512-fold on a large book.
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
}

/// Plain zeroed vectors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zeroed;

impl Columns for Zeroed {}
