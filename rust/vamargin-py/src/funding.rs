//! Funding settlement and per-account integer sums.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt};
use vamargin_core as core;
use vamargin_core::columns::Columns;
use vamargin_core::money::ExactSum;
use vamargin_core::Positions;

use crate::book::{optional_slice, PyGrouping};
use crate::column_pool::{result_array, Recycled};
use crate::errors::to_py;
use crate::params::PyEngineParams;
use crate::pool;

/// Settles funding per position in minor units; `rates`+`marks` (one interval) or
/// `index_now`+`position_index` (cumulative index), one value per instrument. With
/// `by_account = (groups, account_id, position_account)` (the positions' grouping, the
/// accounts' ids and each position's account row), also each account's payments summed
/// per settle asset: `by_account = (account_ids, assets, amounts)`, the non-zero sums in
/// account then asset order.
#[pyfunction]
#[pyo3(signature = (params, position_instrument, qty, settle_decimals, *, rates=None, marks=None, index_now=None, position_index=None, by_account=None))]
#[allow(clippy::too_many_arguments)]
pub fn settle_funding<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    position_instrument: PyReadonlyArray1<'py, u32>,
    qty: PyReadonlyArray1<'py, f64>,
    settle_decimals: Vec<u32>,
    rates: Option<PyReadonlyArray1<'py, f64>>,
    marks: Option<PyReadonlyArray1<'py, f64>>,
    index_now: Option<PyReadonlyArray1<'py, f64>>,
    position_index: Option<PyReadonlyArray1<'py, f64>>,
    by_account: Option<(
        PyRef<'py, PyGrouping>,
        PyReadonlyArray1<'py, i64>,
        PyReadonlyArray1<'py, u32>,
    )>,
) -> PyResult<Bound<'py, PyDict>> {
    let instrument = position_instrument.as_slice()?;
    let qty = qty.as_slice()?;
    let fail = |message: &str| crate::errors::DataError::new_err(format!("funding: {message}"));
    // Lengths and ids are checked by the core (`settle_funding`), which names the column.
    let rates = optional_slice(&rates)?;
    let marks = optional_slice(&marks)?;
    let index_now = optional_slice(&index_now)?;
    let position_index = optional_slice(&position_index)?;
    let basis = match (rates, marks, index_now, position_index) {
        (Some(rates), Some(marks), None, None) => {
            core::funding::FundingBasis::Mark { rates, marks }
        }
        (None, None, Some(index_now), Some(position_index)) => core::funding::FundingBasis::Index {
            index_now,
            position_index,
        },
        _ => {
            return Err(fail(
                "give rates and marks, or index_now and position_index, one per instrument",
            ))
        }
    };
    let position_account = match &by_account {
        Some((_, _, position_account)) => position_account.as_slice()?,
        None => &[],
    };
    let positions = Positions {
        account: position_account,
        instrument,
        qty,
        entry_price: &[],
        isolated_margin: None,
        leverage: None,
    };
    let accounts = match &by_account {
        Some((groups, account_id, _)) => {
            let account_id = account_id.as_slice()?;
            if account_id.len() != groups.inner.n_accounts() {
                return Err(fail(&format!(
                    "{} account ids for a grouping of {} accounts",
                    account_id.len(),
                    groups.inner.n_accounts()
                )));
            }
            if position_account.len() != qty.len() {
                return Err(fail(&format!(
                    "{} position accounts for {} positions",
                    position_account.len(),
                    qty.len()
                )));
            }
            Some((&groups.inner, account_id))
        }
        None => None,
    };
    let pool = pool::current()?;
    let (settlement, by_account) = py
        .detach(|| {
            pool::install(&pool, || match accounts {
                Some((groups, account_id)) => core::funding::settle_funding_by_account(
                    &params.inner,
                    &positions,
                    groups,
                    basis,
                    &settle_decimals,
                    &Recycled,
                )
                .and_then(|(settlement, sums)| {
                    // Laid out in pooled columns, each sum's account row (below the
                    // grouping's account count) as its id.
                    let n = sums.len();
                    let (mut ids, mut keys, mut amounts) =
                        (Recycled.i64s(n), Recycled.u32s(n), Recycled.i64s(n));
                    sums.write_into(
                        |row| account_id[row as usize],
                        &mut ids,
                        &mut keys,
                        &mut amounts,
                    )?;
                    Ok((settlement, Some((ids, keys, amounts))))
                }),
                None => core::funding::settle_funding_into(
                    &params.inner,
                    &positions,
                    basis,
                    &settle_decimals,
                    &Recycled,
                )
                .map(|settlement| (settlement, None)),
            })
        })
        .map_err(|e| to_py(e, "funding"))?;
    let out = PyDict::new(py);
    if let Some((ids, keys, amounts)) = by_account {
        out.set_item(
            "by_account",
            (
                result_array(py, ids)?,
                result_array(py, keys)?,
                result_array(py, amounts)?,
            ),
        )?;
    }
    out.set_item("payments", result_array(py, settlement.payments)?)?;
    out.set_item("dust", settlement.dust.into_pyarray(py))?;
    out.set_item("house", settlement.house.into_pyarray(py))?;
    out.set_item("received", settlement.received.into_pyarray(py))?;
    out.set_item("paid", settlement.paid.into_pyarray(py))?;
    let int = py.get_type::<PyInt>();
    let open_interest = settlement
        .open_interest
        .iter()
        .map(|total| match total.to_decimal_string() {
            Some(text) => int.call1((text,)),
            None => Err(fail("open interest beyond 256 bits")),
        })
        .collect::<PyResult<Vec<_>>>()?;
    out.set_item("open_interest", open_interest)?;
    Ok(out)
}

/// The house's posting per instrument for exact open-interest totals (Python ints, as
/// `settle_funding` returns them, summed over the parts of a book): `rates`+`marks` for
/// one interval, or `index=True` for the index basis.
#[pyfunction]
#[pyo3(signature = (params, open_interest, settle_decimals, *, rates=None, marks=None, index=false))]
pub fn funding_house<'py>(
    params: &PyEngineParams,
    open_interest: Vec<Bound<'py, PyInt>>,
    settle_decimals: Vec<u32>,
    rates: Option<PyReadonlyArray1<'py, f64>>,
    marks: Option<PyReadonlyArray1<'py, f64>>,
    index: bool,
) -> PyResult<Vec<i64>> {
    let n_instruments = params.inner.perpetuals.len();
    let fail = |message: &str| crate::errors::DataError::new_err(format!("funding: {message}"));
    if open_interest.len() != n_instruments {
        return Err(fail("one open-interest total per instrument is required"));
    }
    let rates = optional_slice(&rates)?;
    let marks = optional_slice(&marks)?;
    let basis = match (rates, marks, index) {
        (Some(rates), Some(marks), false)
            if rates.len() == n_instruments && marks.len() == n_instruments =>
        {
            core::funding::FundingBasis::Mark { rates, marks }
        }
        (None, None, true) => core::funding::FundingBasis::Index {
            index_now: &[],
            position_index: &[],
        },
        _ => {
            return Err(fail(
                "give rates and marks (one per instrument), or index=True",
            ))
        }
    };
    let totals = open_interest
        .iter()
        .map(|total| {
            let text = total.str()?;
            ExactSum::from_decimal_str(text.to_str()?)
                .ok_or_else(|| fail("open interest beyond 256 bits"))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let mut house = Vec::with_capacity(n_instruments);
    for (id, total) in totals.into_iter().enumerate() {
        let posting =
            core::funding::house_posting(&params.inner, &basis, &settle_decimals, id, total)
                .map_err(|e| to_py(e, "funding"))?;
        house.push(posting);
    }
    Ok(house)
}
