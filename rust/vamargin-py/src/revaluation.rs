//! `revalue`: the account pass over a `CoreBook`.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core as core;
use vamargin_core::{Book, Market, Revaluation};

use crate::book::{on_book, PyCoreBook};
use crate::huge_pages::HugePages;
use crate::params::PyEngineParams;

/// What a kernel that runs after a revaluation sees (and may keep the revaluation).
pub struct Revalued<'a> {
    pub book: &'a Book<'a>,
    pub market: &'a Market<'a>,
    pub revaluation: Revaluation,
    pub account_ids: &'a [i64],
}

/// Borrows `book`, revalues it at the prices and runs `work` on the result, all with the
/// GIL released and inside the vamargin pool.
pub fn after_revaluation<T: Send>(
    py: Python<'_>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: &PyReadonlyArray1<'_, f64>,
    marks: &PyReadonlyArray1<'_, f64>,
    work: impl FnOnce(Revalued<'_>) -> T + Send,
) -> PyResult<T> {
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    on_book(py, params, book, "revalue", |core_book, account_ids| {
        let revaluation = core::revalue_into(&params.inner, core_book, &market, &HugePages)?;
        Ok(work(Revalued {
            book: core_book,
            market: &market,
            revaluation,
            account_ids,
        }))
    })
}

/// Revalues a validated book; returns `{"accounts": {...}, "positions": {...}}` of numpy
/// columns (status as `uint8` codes, tier as 1-based `uint8`).
#[pyfunction]
pub fn revalue<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'py, f64>,
    marks: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let result = after_revaluation(py, params, book, &asset_prices, &marks, |r| r.revaluation)?;

    let accounts = PyDict::new(py);
    let a = result.accounts;
    accounts.set_item("equity", a.equity.into_pyarray(py))?;
    accounts.set_item("collateral_value", a.collateral_value.into_pyarray(py))?;
    accounts.set_item("debit", a.debit.into_pyarray(py))?;
    accounts.set_item("upnl", a.upnl.into_pyarray(py))?;
    accounts.set_item(
        "initial_requirement",
        a.initial_requirement.into_pyarray(py),
    )?;
    accounts.set_item(
        "maintenance_requirement",
        a.maintenance_requirement.into_pyarray(py),
    )?;
    accounts.set_item(
        "liquidation_requirement",
        a.liquidation_requirement.into_pyarray(py),
    )?;
    accounts.set_item("excess", a.excess.into_pyarray(py))?;
    accounts.set_item("margin_ratio", a.margin_ratio.into_pyarray(py))?;
    accounts.set_item("ltv", a.ltv.into_pyarray(py))?;
    accounts.set_item("status", a.status.into_pyarray(py))?;
    accounts.set_item("call_amount", a.call_amount.into_pyarray(py))?;

    let positions = PyDict::new(py);
    let p = result.positions;
    positions.set_item("notional", p.notional.into_pyarray(py))?;
    positions.set_item("upnl", p.upnl.into_pyarray(py))?;
    positions.set_item("initial_margin", p.initial_margin.into_pyarray(py))?;
    positions.set_item("maintenance_margin", p.maintenance_margin.into_pyarray(py))?;
    positions.set_item("tier", p.tier.into_pyarray(py))?;
    positions.set_item("liquidation_price", p.liquidation_price.into_pyarray(py))?;
    positions.set_item("bankruptcy_price", p.bankruptcy_price.into_pyarray(py))?;
    positions.set_item("adl_score", p.adl_score.into_pyarray(py))?;

    let out = PyDict::new(py);
    out.set_item("accounts", accounts)?;
    out.set_item("positions", positions)?;
    Ok(out)
}
