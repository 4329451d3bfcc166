//! Liquidation queue with close plans, and the ADL queues.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core::liquidation::{
    adl_queue as core_adl_queue, liquidation_queue as core_queue, LiquidationQueue,
};
use vamargin_core::loss_allocation::{run_liquidations, Party};

use crate::book::PyCoreBook;
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
    let queue = after_revaluation(py, params, book, &asset_prices, &marks, |r| {
        core_queue(
            &params.inner,
            r.book,
            r.market,
            r.revaluation,
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
    let queue = after_revaluation(py, params, book, &asset_prices, &marks, |r| {
        core_adl_queue(r.book, r.revaluation, r.account_ids)
    })?;
    let out = PyDict::new(py);
    out.set_item(
        "instrument",
        queue
            .iter()
            .map(|x| x.instrument)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    out.set_item(
        "side",
        queue
            .iter()
            .map(|x| x.side)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    out.set_item(
        "row",
        queue
            .iter()
            .map(|x| x.row)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    out.set_item(
        "score",
        queue
            .iter()
            .map(|x| x.score)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    out.set_item(
        "rank",
        queue
            .iter()
            .map(|x| x.rank)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    out.set_item(
        "bucket",
        queue
            .iter()
            .map(|x| x.bucket)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    Ok(out)
}

/// The queue as `{"entries": {...}, "steps": {...}}` of numpy columns.
fn queue_dict<'py>(py: Python<'py>, queue: &LiquidationQueue) -> PyResult<Bound<'py, PyDict>> {
    let entries = PyDict::new(py);
    let e = &queue.entries;
    entries.set_item(
        "account",
        e.iter()
            .map(|x| x.account)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "position_row",
        e.iter()
            .map(|x| x.position_row.map_or(-1, i64::from))
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "health",
        e.iter()
            .map(|x| x.health)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "deficit",
        e.iter()
            .map(|x| x.deficit)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "bankrupt",
        e.iter()
            .map(|x| x.bankrupt)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "insurance_draw",
        e.iter()
            .map(|x| x.insurance_draw)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "close_value",
        e.iter()
            .map(|x| x.close_value)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "fees",
        e.iter()
            .map(|x| x.fees)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "full_close",
        e.iter()
            .map(|x| x.full_close)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "first_step",
        e.iter()
            .map(|x| x.first_step as u64)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    entries.set_item(
        "n_steps",
        e.iter()
            .map(|x| x.n_steps as u64)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    let steps = PyDict::new(py);
    let s = &queue.steps;
    steps.set_item(
        "kind",
        s.iter()
            .map(|x| x.kind as u8)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    steps.set_item(
        "row",
        s.iter().map(|x| x.row).collect::<Vec<_>>().into_pyarray(py),
    )?;
    steps.set_item(
        "fraction",
        s.iter()
            .map(|x| x.fraction)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    steps.set_item(
        "quantity",
        s.iter()
            .map(|x| x.quantity)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    steps.set_item(
        "value",
        s.iter()
            .map(|x| x.value)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    steps.set_item(
        "fee",
        s.iter().map(|x| x.fee).collect::<Vec<_>>().into_pyarray(py),
    )?;
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
    let (queue, run) = after_revaluation(py, params, book, &asset_prices, &marks, |r| {
        let queue = core_queue(
            &params.inner,
            r.book,
            r.market,
            r.revaluation,
            r.account_ids,
        );
        let adl = core_adl_queue(r.book, r.revaluation, r.account_ids);
        run_liquidations(
            &params.inner,
            r.book,
            r.market,
            r.revaluation,
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
    postings.set_item(
        "entry",
        p.iter()
            .map(|x| x.entry)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    let kind = |party: &Party| match party {
        Party::Account(_) => 0u8,
        Party::Clearing => 1,
        Party::InsuranceFund => 2,
        Party::Uncovered => 3,
    };
    postings.set_item(
        "party",
        p.iter()
            .map(|x| kind(&x.party))
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    postings.set_item(
        "account",
        p.iter()
            .map(|x| match x.party {
                Party::Account(a) => a,
                _ => u32::MAX,
            })
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    postings.set_item(
        "asset",
        p.iter()
            .map(|x| x.asset)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    postings.set_item(
        "amount",
        p.iter()
            .map(|x| x.amount)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    postings.set_item(
        "reason",
        p.iter()
            .map(|x| x.reason as u8)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    let fills = PyDict::new(py);
    let f = &run.fills;
    fills.set_item(
        "entry",
        f.iter()
            .map(|x| x.entry)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    fills.set_item(
        "bankrupt_row",
        f.iter()
            .map(|x| x.bankrupt_row)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    fills.set_item(
        "counterparty_row",
        f.iter()
            .map(|x| x.counterparty_row)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    fills.set_item(
        "contracts",
        f.iter()
            .map(|x| x.contracts)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    fills.set_item(
        "price",
        f.iter()
            .map(|x| x.price)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    fills.set_item(
        "amount",
        f.iter()
            .map(|x| x.amount)
            .collect::<Vec<_>>()
            .into_pyarray(py),
    )?;
    let out = PyDict::new(py);
    out.set_item("queue", queue_dict(py, &queue)?)?;
    out.set_item("postings", postings)?;
    out.set_item("fills", fills)?;
    out.set_item("fund", run.fund.into_pyarray(py))?;
    Ok(out)
}
