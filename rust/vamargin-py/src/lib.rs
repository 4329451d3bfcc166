//! `vamargin._core`: thin PyO3 bindings over `vamargin-core`.
//!
//! Each function converts (borrowing numpy buffers, no copies), releases the GIL, calls
//! the core inside the vamargin thread pool, and wraps the result (handing vectors to
//! numpy without a copy). No formula lives here.

use pyo3::prelude::*;

mod calc;
mod errors;
mod kernels;
mod pool;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    calc::register(m)?;
    kernels::register(m)?;
    m.add_function(wrap_pyfunction!(pool::thread_count, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
