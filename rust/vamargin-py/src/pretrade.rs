//! `order_impact`: one account's margin after a hypothetical order (pre-trade check).

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use vamargin_core::pretrade::order_impact as core_order_impact;
use vamargin_core::Market;

use crate::book::PyCoreBook;
use crate::errors::to_py;
use crate::params::PyEngineParams;

/// `(status_before, reducing, qty_before, qty_after, entry_after, notional_after,
/// tier_after, max_leverage, equity_after, initial_after, maintenance_after)`.
type Impact = (u8, bool, f64, f64, f64, f64, usize, f64, f64, f64, f64);

/// The account's figures after buying (`qty > 0`) or selling `qty` contracts at `price`.
/// Touches only the account's rows, so it runs in microseconds whatever the book's size
/// (and keeps the GIL: releasing it would cost more than the work).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn order_impact(
    py: Python<'_>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'_, f64>,
    marks: PyReadonlyArray1<'_, f64>,
    account: usize,
    instrument: usize,
    qty: f64,
    price: f64,
    leverage: f64,
) -> PyResult<Impact> {
    let borrowed = book.borrow(py);
    let core_book = borrowed.account_book()?;
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    let impact = core_order_impact(
        &params.inner,
        &core_book,
        &market,
        account,
        instrument,
        qty,
        price,
        leverage,
    )
    .map_err(|e| to_py(e, "order"))?;
    Ok((
        impact.status_before as u8,
        impact.reducing,
        impact.qty_before,
        impact.qty_after,
        impact.entry_after,
        impact.notional_after,
        impact.tier_after,
        impact.max_leverage,
        impact.equity_after,
        impact.initial_after,
        impact.maintenance_after,
    ))
}
