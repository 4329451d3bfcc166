//! Liquidation queue with close plans, and the ADL queues.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core::liquidation::{
    adl_queue as core_adl_queue, liquidation_queue as core_queue, LiquidationQueue,
};
use vamargin_core::loss_allocation::{run_liquidations, Party};
use vamargin_core::Scope;

use crate::book::PyCoreBook;
use crate::columns::column;
use crate::errors::to_py;
use crate::params::PyEngineParams;
use crate::revaluation::after_revaluation;

/// Revalues the book and returns the liquidation queue (`entries`) and the plans'
/// steps (`steps`) as numpy columns; entry `i` owns steps `first_step[i] ..
/// first_step[i] + n_steps[i]`.
#[pyfunction]
pub fn liquidation_queue<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'py, f64>,
    marks: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyDict>> {
    // The queue reads margins and account figures only.
    let scope = Scope::WithoutPrices;
    let queue = after_revaluation(py, params, book, &asset_prices, &marks, scope, |r| {
        core_queue(
            &params.inner,
            r.book,
            r.market,
            &r.revaluation,
            r.account_ids,
        )
    })?;
    queue_dict(py, &queue)
}

/// Revalues the book and returns the ADL queues: instrument, side, row, score, rank,
/// bucket, ordered by instrument, side (long first), then rank.
#[pyfunction]
pub fn adl_queue<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'py, f64>,
    marks: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let queue = after_revaluation(py, params, book, &asset_prices, &marks, Scope::Full, |r| {
        core_adl_queue(r.book, &r.revaluation, r.account_ids)
    })?;
    let out = PyDict::new(py);
    out.set_item("instrument", column(py, &queue, |x| x.instrument))?;
    out.set_item("side", column(py, &queue, |x| x.side))?;
    out.set_item("row", column(py, &queue, |x| x.row))?;
    out.set_item("score", column(py, &queue, |x| x.score))?;
    out.set_item("rank", column(py, &queue, |x| x.rank))?;
    out.set_item("bucket", column(py, &queue, |x| x.bucket))?;
    Ok(out)
}

/// The queue as `{"entries": {...}, "steps": {...}}` of numpy columns.
fn queue_dict<'py>(py: Python<'py>, queue: &LiquidationQueue) -> PyResult<Bound<'py, PyDict>> {
    let entries = PyDict::new(py);
    let e = &queue.entries;
    entries.set_item("account", column(py, e, |x| x.account))?;
    entries.set_item(
        "position_row",
        column(py, e, |x| x.position_row.map_or(-1, i64::from)),
    )?;
    entries.set_item("health", column(py, e, |x| x.health))?;
    entries.set_item("deficit", column(py, e, |x| x.deficit))?;
    entries.set_item("bankrupt", column(py, e, |x| x.bankrupt))?;
    entries.set_item("insurance_draw", column(py, e, |x| x.insurance_draw))?;
    entries.set_item("close_value", column(py, e, |x| x.close_value))?;
    entries.set_item("fees", column(py, e, |x| x.fees))?;
    entries.set_item("full_close", column(py, e, |x| x.full_close))?;
    entries.set_item("first_step", column(py, e, |x| x.first_step as u64))?;
    entries.set_item("n_steps", column(py, e, |x| x.n_steps as u64))?;
    let steps = PyDict::new(py);
    let s = &queue.steps;
    steps.set_item("kind", column(py, s, |x| x.kind as u8))?;
    steps.set_item("row", column(py, s, |x| x.row))?;
    steps.set_item("fraction", column(py, s, |x| x.fraction))?;
    steps.set_item("quantity", column(py, s, |x| x.quantity))?;
    steps.set_item("value", column(py, s, |x| x.value))?;
    steps.set_item("fee", column(py, s, |x| x.fee))?;
    let out = PyDict::new(py);
    out.set_item("entries", entries)?;
    out.set_item("steps", steps)?;
    Ok(out)
}

/// Revalues, queues and executes the liquidations against the insurance `fund` (minor
/// units per asset): `{"queue": ..., "postings": {...}, "fills": {...}, "fund": [...]}`.
/// Posting parties: 0 account (`account` column), 1 clearing, 2 insurance fund,
/// 3 uncovered.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn liquidate<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    book: &PyCoreBook,
    asset_prices: PyReadonlyArray1<'py, f64>,
    marks: PyReadonlyArray1<'py, f64>,
    fund: Vec<i64>,
    decimals: Vec<u32>,
    reporting_asset: Option<u32>,
) -> PyResult<Bound<'py, PyDict>> {
    let n_assets = params.inner.assets.len();
    if fund.len() != n_assets || decimals.len() != n_assets {
        return Err(crate::errors::DataError::new_err(
            "liquidate: one fund balance and one minor unit per asset",
        ));
    }
    let (queue, run) =
        after_revaluation(py, params, book, &asset_prices, &marks, Scope::Full, |r| {
            let queue = core_queue(
                &params.inner,
                r.book,
                r.market,
                &r.revaluation,
                r.account_ids,
            );
            let adl = core_adl_queue(r.book, &r.revaluation, r.account_ids);
            run_liquidations(
                &params.inner,
                r.book,
                r.market,
                &r.revaluation,
                &queue,
                &adl,
                &fund,
                &decimals,
                reporting_asset,
            )
            .map(|run| (queue, run))
        })?
        .map_err(|e| to_py(e, "liquidate"))?;
    let postings = PyDict::new(py);
    let p = &run.postings;
    postings.set_item("entry", column(py, p, |x| x.entry))?;
    let kind = |party: &Party| match party {
        Party::Account(_) => 0u8,
        Party::Clearing => 1,
        Party::InsuranceFund => 2,
        Party::Uncovered => 3,
    };
    postings.set_item("party", column(py, p, |x| kind(&x.party)))?;
    postings.set_item(
        "account",
        column(py, p, |x| match x.party {
            Party::Account(a) => a,
            _ => u32::MAX,
        }),
    )?;
    postings.set_item("asset", column(py, p, |x| x.asset))?;
    postings.set_item("amount", column(py, p, |x| x.amount))?;
    postings.set_item("reason", column(py, p, |x| x.reason as u8))?;
    let fills = PyDict::new(py);
    let f = &run.fills;
    fills.set_item("entry", column(py, f, |x| x.entry))?;
    fills.set_item("bankrupt_row", column(py, f, |x| x.bankrupt_row))?;
    fills.set_item("counterparty_row", column(py, f, |x| x.counterparty_row))?;
    fills.set_item("contracts", column(py, f, |x| x.contracts))?;
    fills.set_item("price", column(py, f, |x| x.price))?;
    fills.set_item("amount", column(py, f, |x| x.amount))?;
    let out = PyDict::new(py);
    out.set_item("queue", queue_dict(py, &queue)?)?;
    out.set_item("postings", postings)?;
    out.set_item("fills", fills)?;
    out.set_item("fund", run.fund.into_pyarray(py))?;
    Ok(out)
}
