//! The vamargin thread pools, sized by `VAMARGIN_NUM_THREADS` (default: all cores).
//!
//! **The main thread works in its own pool.** Python's main thread is thread 0 of the
//! pool it uses (rayon's `use_current_thread`), with `n − 1` rayon threads beside it. A
//! call from it runs on it at once, and the other threads join in when they wake. Under
//! the conventional pool the caller handed each call to a sleeping rayon thread and
//! waited for it: on a virtual machine a sleeping thread takes 0.1–3 ms to wake, and a
//! `Book(...)` plus `bind` plus a job makes about ten such calls. With one thread there
//! is nothing to wake at all.
//!
//! **Every other thread shares a conventional pool** (a Dask worker's task threads, a
//! user's `threading.Thread`): a thread can be thread 0 of only one pool for its whole
//! life, and the main pool runs only what its own threads start.
//!
//! **A forked child builds its own pools.** A pool's threads do not survive `fork`, so a
//! child must never wait on its parent's pool; the parent's pools are left untouched
//! (dropping one would signal threads that do not exist in the child). The thread that
//! forked is still thread 0 of the parent's main pool as far as rayon knows, so in the
//! child it uses the shared pool.
//!
//! **A process is its pid and its forks.** The pid alone can repeat: a process that built
//! pools, forked a child and exited frees its pid, and the child's own child may be given
//! it. So the module counts forks too (`os.register_at_fork`, registered when it loads):
//! pools built before a fork are never taken for the child's, even under the same pid. A
//! fork Python does not see (from C, without Python's fork hooks) is still caught by the
//! pid.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

/// Forks since the module loaded, on the way from the process that loaded it to this
/// one: raised in each forked child by [`note_fork_in_child`].
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Which process this is (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: u32,
    forks: u64,
}

impl Process {
    /// Built before any call (no process has pid 0): the first call builds its pools.
    const NONE: Process = Process { pid: 0, forks: 0 };

    fn current() -> Self {
        Process {
            pid: std::process::id(),
            forks: FORKS.load(Ordering::SeqCst),
        }
    }
}

/// Counts a fork: Python runs it in every child `os.fork` makes (registered by the
/// module with `os.register_at_fork(after_in_child=...)`).
#[pyfunction]
pub fn note_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// This process's pools, and the process they were built in.
struct Pools {
    process: Process,
    /// Python's main thread is its thread 0; `None` until that thread calls.
    main: Option<Arc<ThreadPool>>,
    /// The main thread could not be thread 0 of a pool (it already is of the parent's,
    /// in a forked child): it uses `shared`.
    main_refused: bool,
    /// For every other thread; built when one first calls.
    shared: Option<Arc<ThreadPool>>,
}

impl Pools {
    const fn empty(process: Process) -> Self {
        Pools {
            process,
            main: None,
            main_refused: false,
            shared: None,
        }
    }
}

static POOLS: Mutex<Pools> = Mutex::new(Pools::empty(Process::NONE));

thread_local! {
    /// Whether this thread is Python's main thread, as found in process `.0`.
    static PYTHON_MAIN: Cell<Option<(Process, bool)>> = const { Cell::new(None) };
}

fn configured_threads() -> usize {
    std::env::var("VAMARGIN_NUM_THREADS")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn builder() -> ThreadPoolBuilder {
    ThreadPoolBuilder::new()
        .num_threads(configured_threads())
        .thread_name(|i| format!("vamargin-{i}"))
}

fn cannot_start(err: rayon::ThreadPoolBuildError) -> PyErr {
    PyRuntimeError::new_err(format!("cannot start the vamargin thread pool: {err}"))
}

fn is_python_main_thread(py: Python<'_>, process: Process) -> PyResult<bool> {
    if let Some((owner, main)) = PYTHON_MAIN.get() {
        if owner == process {
            return Ok(main);
        }
    }
    // After a fork, Python's main thread is the one that forked.
    let threading = py.import("threading")?;
    let main = threading
        .call_method0("main_thread")?
        .is(&threading.call_method0("current_thread")?);
    PYTHON_MAIN.set(Some((process, main)));
    Ok(main)
}

/// The pool for the calling thread (see the module docs).
///
/// Nothing here runs Python while `POOLS` is locked: Python may hand the GIL to another
/// thread mid-call, and that thread, holding the GIL, may be waiting for `POOLS`.
fn pool(py: Python<'_>) -> PyResult<Arc<ThreadPool>> {
    let process = Process::current();
    let python_main = is_python_main_thread(py, process)?;
    let mut pools = POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if pools.process != process {
        // A new process (or the first call): the parent's pools are forgotten, not
        // dropped.
        for pool in [pools.main.take(), pools.shared.take()]
            .into_iter()
            .flatten()
        {
            std::mem::forget(pool);
        }
        *pools = Pools::empty(process);
    }
    if let Some(main) = &pools.main {
        if main.current_thread_index().is_some() {
            return Ok(Arc::clone(main));
        }
    } else if python_main && !pools.main_refused {
        if rayon::current_thread_index().is_some() {
            // Already thread 0 of the parent's pool (a forked child): rayon would refuse.
            pools.main_refused = true;
        } else {
            let pool = Arc::new(
                builder()
                    .use_current_thread()
                    .build()
                    .map_err(cannot_start)?,
            );
            pools.main = Some(Arc::clone(&pool));
            return Ok(pool);
        }
    }
    if let Some(shared) = &pools.shared {
        return Ok(Arc::clone(shared));
    }
    let shared = Arc::new(builder().build().map_err(cannot_start)?);
    pools.shared = Some(Arc::clone(&shared));
    Ok(shared)
}

/// Adds [`thread_count`] and [`note_fork_in_child`] to the module, and registers the
/// latter with `os.register_at_fork`, where Python has it.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(thread_count, m)?)?;
    let note = wrap_pyfunction!(note_fork_in_child, m)?;
    m.add_function(note.clone())?;
    let os = m.py().import("os")?;
    if os.hasattr("register_at_fork")? {
        let hooks = pyo3::types::PyDict::new(m.py());
        hooks.set_item("after_in_child", note)?;
        os.call_method("register_at_fork", (), Some(&hooks))?;
    }
    Ok(())
}

/// Runs `work` inside the vamargin pool (call it with the GIL released).
pub fn install<T: Send>(pool: &ThreadPool, work: impl FnOnce() -> T + Send) -> T {
    pool.install(work)
}

/// The pool to run the calling thread's next call in; fetch it while holding the GIL.
pub fn current() -> PyResult<Arc<ThreadPool>> {
    Python::attach(pool)
}

/// Number of threads the vamargin pool of the calling thread uses.
#[pyfunction]
pub fn thread_count(py: Python<'_>) -> PyResult<usize> {
    Ok(pool(py)?.current_num_threads())
}
