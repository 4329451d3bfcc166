//! `revalue`: the account pass over a `CoreBook`.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core as core;
use vamargin_core::{Book, Columns, Market, Revaluation};

use crate::book::{on_book, PyCoreBook};
use crate::column_pool::{result_array, Recycled};
use crate::params::PyEngineParams;

/// What a kernel that runs after a revaluation sees (and may keep the revaluation).
pub struct Revalued<'a> {
    pub book: &'a Book<'a>,
    pub market: &'a Market<'a>,
    pub revaluation: Revaluation,
    pub account_ids: &'a [i64],
}

/// Borrows `book` and revalues it at the prices, with the GIL released and inside the
/// vamargin pool.
fn revaluation(
    py: Python<'_>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: &PyReadonlyArray1<'_, f64>,
    marks: &PyReadonlyArray1<'_, f64>,
) -> PyResult<Revaluation> {
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    on_book(py, params, book, "revalue", |core_book, _| {
        core::revalue_into(&params.inner, core_book, &market, &Recycled)
    })
}

/// Borrows `book`, revalues it at the prices and runs `work` on the result, all with the
/// GIL released and inside the vamargin pool; the revaluation's columns then go to the
/// column pool.
pub fn after_revaluation<T: Send>(
    py: Python<'_>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: &PyReadonlyArray1<'_, f64>,
    marks: &PyReadonlyArray1<'_, f64>,
    work: impl FnOnce(&Revalued<'_>) -> T + Send,
) -> PyResult<T> {
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    on_book(py, params, book, "revalue", |core_book, account_ids| {
        let revaluation = core::revalue_into(&params.inner, core_book, &market, &Recycled)?;
        let revalued = Revalued {
            book: core_book,
            market: &market,
            revaluation,
            account_ids,
        };
        let result = work(&revalued);
        give_back(revalued.revaluation);
        Ok(result)
    })
}

/// Hands every `f64` column of `revaluation` to the column pool.
fn give_back(revaluation: Revaluation) {
    let (a, p) = (revaluation.accounts, revaluation.positions);
    for column in [
        a.equity,
        a.collateral_value,
        a.debit,
        a.upnl,
        a.initial_requirement,
        a.maintenance_requirement,
        a.liquidation_requirement,
        a.excess,
        a.margin_ratio,
        a.ltv,
        a.call_amount,
        p.notional,
        p.upnl,
        p.initial_margin,
        p.maintenance_margin,
        p.liquidation_price,
        p.bankruptcy_price,
        p.adl_score,
    ] {
        Recycled.give_back(column);
    }
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
    let result = revaluation(py, params, book, &asset_prices, &marks)?;

    let accounts = PyDict::new(py);
    let a = result.accounts;
    accounts.set_item("equity", result_array(py, a.equity)?)?;
    accounts.set_item("collateral_value", result_array(py, a.collateral_value)?)?;
    accounts.set_item("debit", result_array(py, a.debit)?)?;
    accounts.set_item("upnl", result_array(py, a.upnl)?)?;
    accounts.set_item(
        "initial_requirement",
        result_array(py, a.initial_requirement)?,
    )?;
    accounts.set_item(
        "maintenance_requirement",
        result_array(py, a.maintenance_requirement)?,
    )?;
    accounts.set_item(
        "liquidation_requirement",
        result_array(py, a.liquidation_requirement)?,
    )?;
    accounts.set_item("excess", result_array(py, a.excess)?)?;
    accounts.set_item("margin_ratio", result_array(py, a.margin_ratio)?)?;
    accounts.set_item("ltv", result_array(py, a.ltv)?)?;
    accounts.set_item("status", a.status.into_pyarray(py))?;
    accounts.set_item("call_amount", result_array(py, a.call_amount)?)?;

    let positions = PyDict::new(py);
    let p = result.positions;
    positions.set_item("notional", result_array(py, p.notional)?)?;
    positions.set_item("upnl", result_array(py, p.upnl)?)?;
    positions.set_item("initial_margin", result_array(py, p.initial_margin)?)?;
    positions.set_item(
        "maintenance_margin",
        result_array(py, p.maintenance_margin)?,
    )?;
    positions.set_item("tier", p.tier.into_pyarray(py))?;
    positions.set_item("liquidation_price", result_array(py, p.liquidation_price)?)?;
    positions.set_item("bankruptcy_price", result_array(py, p.bankruptcy_price)?)?;
    positions.set_item("adl_score", result_array(py, p.adl_score)?)?;

    let out = PyDict::new(py);
    out.set_item("accounts", accounts)?;
    out.set_item("positions", positions)?;
    Ok(out)
}
