//! `revalue`: the account pass over a `CoreBook`.

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core as core;
use vamargin_core::{Book, Columns, Market, Revaluation, Scope};

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
        core::revalue_into(&params.inner, core_book, &market, &Recycled, Scope::Full)
    })
}

/// Borrows `book`, revalues it at the prices (the figures of `scope`) and runs `work` on
/// the result, all with the GIL released and inside the vamargin pool; the revaluation's
/// columns then go to the column pool.
pub fn after_revaluation<T: Send>(
    py: Python<'_>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: &PyReadonlyArray1<'_, f64>,
    marks: &PyReadonlyArray1<'_, f64>,
    scope: Scope,
    work: impl FnOnce(&Revalued<'_>) -> T + Send,
) -> PyResult<T> {
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    on_book(py, params, book, "revalue", |core_book, account_ids| {
        let revaluation = core::revalue_into(&params.inner, core_book, &market, &Recycled, scope)?;
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

/// A revaluation's columns under their result names: the `f64` ones, and the `u8` codes.
struct NamedColumns {
    accounts: [(&'static str, Vec<f64>); 11],
    status: Vec<u8>,
    positions: [(&'static str, Vec<f64>); 7],
    tier: Vec<u8>,
}

impl From<Revaluation> for NamedColumns {
    fn from(revaluation: Revaluation) -> Self {
        let (a, p) = (revaluation.accounts, revaluation.positions);
        NamedColumns {
            accounts: [
                ("equity", a.equity),
                ("collateral_value", a.collateral_value),
                ("debit", a.debit),
                ("upnl", a.upnl),
                ("initial_requirement", a.initial_requirement),
                ("maintenance_requirement", a.maintenance_requirement),
                ("liquidation_requirement", a.liquidation_requirement),
                ("excess", a.excess),
                ("margin_ratio", a.margin_ratio),
                ("ltv", a.ltv),
                ("call_amount", a.call_amount),
            ],
            status: a.status,
            positions: [
                ("notional", p.notional),
                ("upnl", p.upnl),
                ("initial_margin", p.initial_margin),
                ("maintenance_margin", p.maintenance_margin),
                ("liquidation_price", p.liquidation_price),
                ("bankruptcy_price", p.bankruptcy_price),
                ("adl_score", p.adl_score),
            ],
            tier: p.tier,
        }
    }
}

/// Hands every `f64` column of `revaluation` to the column pool.
fn give_back(revaluation: Revaluation) {
    let columns = NamedColumns::from(revaluation);
    for (_, column) in columns.accounts.into_iter().chain(columns.positions) {
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
    let columns = NamedColumns::from(revaluation(py, params, book, &asset_prices, &marks)?);
    let accounts = PyDict::new(py);
    for (name, column) in columns.accounts {
        accounts.set_item(name, result_array(py, column)?)?;
    }
    accounts.set_item("status", result_array(py, columns.status)?)?;
    let positions = PyDict::new(py);
    for (name, column) in columns.positions {
        positions.set_item(name, result_array(py, column)?)?;
    }
    positions.set_item("tier", result_array(py, columns.tier)?)?;
    let out = PyDict::new(py);
    out.set_item("accounts", accounts)?;
    out.set_item("positions", positions)?;
    Ok(out)
}
