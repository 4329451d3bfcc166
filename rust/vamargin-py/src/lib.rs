//! `vamargin._core`: thin PyO3 bindings over `vamargin-core`.
//!
//! Each function converts (borrowing numpy buffers, no copies), releases the GIL, calls
//! the core inside the vamargin thread pool, and wraps the result (handing vectors to
//! numpy without a copy). No formula lives here.

use pyo3::prelude::*;

mod book;
mod calc;
mod column_pool;
mod columns;
mod errors;
mod financing;
mod funding;
mod huge_pages;
mod liquidation;
mod params;
mod pool;
mod pretrade;
mod revaluation;
mod stress;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    calc::register(m)?;
    m.add_class::<params::PyEngineParams>()?;
    m.add_class::<book::PyAccountIndex>()?;
    m.add_class::<book::PyGrouping>()?;
    m.add_class::<book::PyCoreBook>()?;
    m.add_function(wrap_pyfunction!(book::first_repeated_key, m)?)?;
    m.add_function(wrap_pyfunction!(book::first_broken_rule, m)?)?;
    m.add_function(wrap_pyfunction!(book::bind_positions, m)?)?;
    m.add_function(wrap_pyfunction!(book::bind_holdings, m)?)?;
    m.add_function(wrap_pyfunction!(revaluation::revalue, m)?)?;
    m.add_function(wrap_pyfunction!(stress::stress, m)?)?;
    m.add_function(wrap_pyfunction!(stress::stressed_equity, m)?)?;
    m.add_function(wrap_pyfunction!(funding::settle_funding, m)?)?;
    m.add_function(wrap_pyfunction!(funding::funding_house, m)?)?;
    m.add_function(wrap_pyfunction!(liquidation::liquidation_queue, m)?)?;
    m.add_function(wrap_pyfunction!(liquidation::adl_queue, m)?)?;
    m.add_function(wrap_pyfunction!(liquidation::liquidate, m)?)?;
    m.add_function(wrap_pyfunction!(pretrade::order_impact, m)?)?;
    m.add_function(wrap_pyfunction!(financing::margin_calls, m)?)?;
    m.add_function(wrap_pyfunction!(financing::accrue_interest, m)?)?;
    m.add_function(wrap_pyfunction!(financing::collateral_figures, m)?)?;
    pool::register(m)?;
    m.add_function(wrap_pyfunction!(column_pool::column_pool_held, m)?)?;
    m.add_function(wrap_pyfunction!(column_pool::column_pool_clear, m)?)?;
    m.add("STATUS_NAMES", vamargin_core::Status::NAMES.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
