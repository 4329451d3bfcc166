//! Asking the CPU to start loading a cache line that a later step will read.
//!
//! A kernel that reads rows at random (a shuffled book's accounts, a hash table's slots)
//! waits on memory, not on arithmetic. An ordinary load of a row needed later would make
//! the CPU wait for it before retiring anything after it, so only as many loads as the
//! reorder buffer holds are ever in flight. A prefetch retires at once: issued some rows
//! ahead, each line is on its way while earlier rows are worked on. On this machine a
//! gather of 40-byte records from 86 MB took 0.70× the time with prefetches 16 rows
//! ahead (BENCHMARKS.md, "eighteenth session").
//!
//! The instruction never faults and changes no result, only when memory arrives; `pulp`
//! offers it as a safe call (this crate forbids `unsafe`). On other architectures the
//! calls do nothing.

/// A handle on the prefetch instruction, made once per kernel call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefetch {
    #[cfg(target_arch = "x86_64")]
    sse: Option<pulp::core_arch::x86::Sse>,
}

impl Prefetch {
    pub(crate) fn new() -> Self {
        Prefetch {
            #[cfg(target_arch = "x86_64")]
            sse: pulp::core_arch::x86::Sse::try_new(),
        }
    }

    /// Starts loading the cache line that holds the start of `value` into every cache
    /// level.
    #[inline(always)]
    pub(crate) fn read<T>(&self, value: &T) {
        #[cfg(target_arch = "x86_64")]
        if let Some(sse) = self.sse {
            use core::arch::x86_64::_MM_HINT_T0;
            sse._mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefetching changes nothing it is pointed at, whatever the type.
    #[test]
    fn a_prefetch_leaves_memory_as_it_was() {
        let prefetch = Prefetch::new();
        let rows = [[1.5_f64; 5], [2.5; 5]];
        let ids = [7_u32, 9];
        for row in &rows {
            prefetch.read(row);
        }
        prefetch.read(&ids[1]);
        assert_eq!(rows, [[1.5; 5], [2.5; 5]]);
        assert_eq!(ids, [7, 9]);
    }
}
