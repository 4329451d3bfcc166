//! The vamargin thread pool, sized by `VAMARGIN_NUM_THREADS` (default: all cores).
//!
//! Built on first use and rebuilt in a forked child (a pool's threads do not survive
//! `fork`, so a child must never wait on its parent's pool).

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

static POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

fn configured_threads() -> usize {
    std::env::var("VAMARGIN_NUM_THREADS")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool() -> PyResult<Arc<ThreadPool>> {
    let pid = std::process::id();
    let mut slot = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match slot.as_ref() {
        Some((owner, pool)) if *owner == pid => Ok(Arc::clone(pool)),
        _ => {
            let pool = ThreadPoolBuilder::new()
                .num_threads(configured_threads())
                .thread_name(|i| format!("vamargin-{i}"))
                .build()
                .map(Arc::new)
                .map_err(|err| {
                    PyRuntimeError::new_err(format!("cannot start the vamargin thread pool: {err}"))
                })?;
            *slot = Some((pid, Arc::clone(&pool)));
            Ok(pool)
        }
    }
}

/// Runs `work` inside the vamargin pool (call it with the GIL released).
pub fn install<T: Send>(pool: &ThreadPool, work: impl FnOnce() -> T + Send) -> T {
    pool.install(work)
}

/// The pool to run the next call in; fetch it while holding the GIL.
pub fn current() -> PyResult<Arc<ThreadPool>> {
    pool()
}

/// Number of threads the vamargin pool uses in this process.
#[pyfunction]
pub fn thread_count() -> PyResult<usize> {
    Ok(pool()?.current_num_threads())
}
