//! Margin financing: margin calls with their cures, and interest accrual.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core::financing::{
    accrue_interest as core_accrue, margin_calls as core_calls, DayCount,
};
use vamargin_core::Scope;

use crate::book::{on_book, PyCoreBook};
use crate::column_pool::{result_array, Recycled};
use crate::columns::column;
use crate::errors::{to_py, ConfigError, DataError};
use crate::params::PyEngineParams;
use crate::pool;
use crate::revaluation::after_revaluation;

pub fn parse_day_count(day_count: &str) -> PyResult<DayCount> {
    match day_count {
        "ACT/365" => Ok(DayCount::Act365),
        "ACT/360" => Ok(DayCount::Act360),
        other => Err(ConfigError::new_err(format!(
            "day_count: {other:?} is not ACT/365 | ACT/360"
        ))),
    }
}

/// Revalues and returns every account under a call with its cures: `account`,
/// `call_amount`, `forced`, `deposit` and `sell` (row-major, one value per asset, NaN where
/// impossible), and the forced-sale steps (`sale_call`, `sale_row`, `sale_value`,
/// `sale_fee`).
#[pyfunction]
#[pyo3(signature = (params, book, asset_prices, marks, past_deadline=None))]
pub fn margin_calls<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'py, f64>,
    marks: PyReadonlyArray1<'py, f64>,
    past_deadline: Option<PyReadonlyArray1<'py, bool>>,
) -> PyResult<Bound<'py, PyDict>> {
    let past = past_deadline
        .as_ref()
        .map(|a| a.as_slice())
        .transpose()?
        .unwrap_or(&[]);
    // Calls read account figures only.
    let scope = Scope::WithoutPrices;
    let calls = after_revaluation(py, params, book, &asset_prices, &marks, scope, |r| {
        if !past.is_empty() && past.len() != r.book.n_accounts() {
            return None;
        }
        Some(core_calls(
            &params.inner,
            r.book,
            r.market,
            &r.revaluation,
            past,
        ))
    })?
    .ok_or_else(|| DataError::new_err("past_deadline: one flag per account"))?;
    let out = PyDict::new(py);
    out.set_item("account", column(py, &calls, |c| c.account))?;
    out.set_item("call_amount", column(py, &calls, |c| c.call_amount))?;
    out.set_item("forced", column(py, &calls, |c| c.forced))?;
    out.set_item("status", column(py, &calls, |c| c.status))?;
    out.set_item("equity", column(py, &calls, |c| c.equity))?;
    out.set_item(
        "deposit",
        calls
            .iter()
            .flat_map(|c| c.deposit.iter().copied())
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    out.set_item(
        "sell",
        calls
            .iter()
            .flat_map(|c| c.sell.iter().copied())
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    let steps: Vec<(u32, u32, f64, f64)> = calls
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.forced_sales
                .iter()
                .map(move |&(row, value, fee)| (i as u32, row, value, fee))
        })
        .collect();
    out.set_item("sale_call", column(py, &steps, |s| s.0))?;
    out.set_item("sale_row", column(py, &steps, |s| s.1))?;
    out.set_item("sale_value", column(py, &steps, |s| s.2))?;
    out.set_item("sale_fee", column(py, &steps, |s| s.3))?;
    Ok(out)
}

/// Interest owed for `days` on every loan row, minor units of the loan's asset (0 for
/// other rows).
#[pyfunction]
pub fn accrue_interest<'py>(
    py: Python<'py>,
    amounts: PyReadonlyArray1<'py, f64>,
    assets: PyReadonlyArray1<'py, u32>,
    annual_rates: Vec<f64>,
    day_counts: Vec<String>,
    decimals: Vec<u32>,
    days: u32,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let amounts = amounts.as_slice()?;
    let assets = assets.as_slice()?;
    let n = annual_rates.len();
    if day_counts.len() != n || decimals.len() != n {
        return Err(DataError::new_err(
            "accrue_interest: one rate, day count and minor unit per asset",
        ));
    }
    if let Some(row) = assets.iter().position(|&a| a as usize >= n) {
        return Err(DataError::new_err(format!(
            "holdings.asset row {row}: asset id out of range"
        )));
    }
    let day_counts = day_counts
        .iter()
        .map(|d| parse_day_count(d))
        .collect::<PyResult<Vec<_>>>()?;
    let pool = pool::current()?;
    let charges = py
        .detach(|| {
            pool::install(&pool, || {
                core_accrue(amounts, assets, &annual_rates, &day_counts, &decimals, days)
            })
        })
        .map_err(|e| to_py(e, "interest"))?;
    Ok(charges.into_pyarray(py))
}

/// Collateral figures from holdings alone: `{"by_asset", "debit", "collateral", "ltv",
/// "total_debit", "uncovered", "top_debits"}` (the rows of the `top` largest debits,
/// largest first, ties by row).
#[pyfunction]
pub fn collateral_figures<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'py, f64>,
    weights: PyReadonlyArray1<'py, f64>,
    top: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let prices = asset_prices.as_slice()?;
    let weights = weights.as_slice()?;
    if prices.len() != params.inner.assets.len() || weights.len() != prices.len() {
        return Err(DataError::new_err(
            "collateral_figures: one price and one weight per asset",
        ));
    }
    let figures = on_book(py, params, book, "collateral", |core_book, _| {
        Ok(vamargin_core::financing::collateral_figures(
            &params.inner,
            core_book,
            prices,
            weights,
            top,
            &Recycled,
        ))
    })?;
    let out = PyDict::new(py);
    out.set_item("by_asset", figures.by_asset.into_pyarray(py))?;
    out.set_item("debit", result_array(py, figures.debit)?)?;
    out.set_item("collateral", result_array(py, figures.collateral)?)?;
    out.set_item("ltv", result_array(py, figures.ltv)?)?;
    out.set_item("total_debit", figures.total_debit)?;
    out.set_item("uncovered", figures.uncovered)?;
    out.set_item("top_debits", figures.top_debits.into_pyarray(py))?;
    Ok(out)
}
