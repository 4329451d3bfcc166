//! Stress scenarios over a `CoreBook`: one account sweep per scenario, no per-position
//! outputs.

use numpy::{
    IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core::{stress as core_stress, stressed_equity as core_equity, Scenarios};

use crate::book::{on_book, PyCoreBook};
use crate::columns::column;
use crate::params::PyEngineParams;

/// Scenario prices as the core wants them: two C-contiguous matrices, one row per
/// scenario (asset prices in the reporting currency, perpetual marks).
fn scenarios<'a>(
    asset_prices: &'a PyReadonlyArray2<'_, f64>,
    marks: &'a PyReadonlyArray2<'_, f64>,
) -> PyResult<Scenarios<'a>> {
    Ok(Scenarios {
        count: asset_prices.shape()[0],
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    })
}

/// Totals per scenario (`accounts_by_status` as an `(n, 4)` uint64 matrix), and with
/// `keep_min_equity` each account's lowest equity over the scenarios.
#[pyfunction]
#[pyo3(signature = (params, book, asset_prices, marks, keep_min_equity=false))]
pub fn stress<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray2<'py, f64>,
    marks: PyReadonlyArray2<'py, f64>,
    keep_min_equity: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let scenarios = scenarios(&asset_prices, &marks)?;
    let result = on_book(py, params, book, "stress", |core_book, _| {
        core_stress(&params.inner, core_book, &scenarios, keep_min_equity)
    })?;
    let totals = &result.totals;
    let out = PyDict::new(py);
    let by_status: Vec<u64> = totals.iter().flat_map(|t| t.accounts_by_status).collect();
    out.set_item(
        "accounts_by_status",
        by_status.into_pyarray(py).reshape([totals.len(), 4])?,
    )?;
    out.set_item(
        "isolated_liquidations",
        column(py, totals, |t| t.isolated_liquidations),
    )?;
    out.set_item("call_amount", column(py, totals, |t| t.call_amount))?;
    out.set_item("insurance_draw", column(py, totals, |t| t.insurance_draw))?;
    out.set_item("broker_loss", column(py, totals, |t| t.broker_loss))?;
    out.set_item("min_equity", result.min_equity.into_pyarray(py))?;
    Ok(out)
}

/// The equity of the given account rows under each scenario, an `(n_scenarios,
/// len(accounts))` matrix.
#[pyfunction]
pub fn stressed_equity<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray2<'py, f64>,
    marks: PyReadonlyArray2<'py, f64>,
    accounts: PyReadonlyArray1<'py, u32>,
) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
    let scenarios = scenarios(&asset_prices, &marks)?;
    let rows = accounts.as_slice()?;
    let equity = on_book(py, params, book, "stress", |core_book, _| {
        core_equity(&params.inner, core_book, &scenarios, rows)
    })?;
    equity
        .into_pyarray(py)
        .reshape([scenarios.count, rows.len()])
}
