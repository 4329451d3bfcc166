//! Liquidation queue with close plans, and the ADL queues.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core::liquidation::{adl_queue as core_adl_queue, liquidation_queue as core_queue};
use vamargin_core::Market;

use crate::book::PyCoreBook;
use crate::params::PyEngineParams;
use crate::pool;
use crate::revaluation::revalue_book;

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
    let borrowed = book.borrow(py);
    let core_book = borrowed.book(params)?;
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    let account_ids = borrowed.account_id.as_slice()?;
    let revaluation = revalue_book(py, params, &core_book, &market)?;
    let pool = pool::current()?;
    let queue = py.detach(|| {
        pool::install(&pool, || {
            core_queue(
                &params.inner,
                &core_book,
                &market,
                &revaluation,
                account_ids,
            )
        })
    });
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
    let borrowed = book.borrow(py);
    let core_book = borrowed.book(params)?;
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    let account_ids = borrowed.account_id.as_slice()?;
    let revaluation = revalue_book(py, params, &core_book, &market)?;
    let pool = pool::current()?;
    let queue = py.detach(|| {
        pool::install(&pool, || {
            core_adl_queue(&core_book, &revaluation, account_ids)
        })
    });
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
