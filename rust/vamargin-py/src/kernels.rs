//! Batch kernels: engine parameters, account index, groupings and revaluation.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vamargin_core as core;
use vamargin_core::{
    AccountIndex, Accounts, AssetParams, Book, CallTarget, EngineParams, Grouping, Haircuts,
    Holdings, Market, PerpetualParams, Positions, SizeTiers, TierSpec, TierTable,
};

use crate::calc::parse_kind;
use crate::errors::{to_py, ConfigError};
use crate::pool;

/// `(symbol, initial, maintenance, liquidation, eligible, size_tiers)` of one asset.
type AssetRow = (String, f64, f64, f64, bool, Vec<(f64, f64)>);
/// `(symbol, kind, contract_size, settle_asset_id, tiers)` of one perpetual.
type PerpetualRow = (String, String, f64, u32, Vec<TierSpec>);

/// What the kernels read from a `RiskConfig`, checked again on the Rust side.
#[pyclass(frozen, name = "EngineParams", module = "vamargin._core")]
pub struct PyEngineParams {
    pub inner: EngineParams,
}

#[pymethods]
impl PyEngineParams {
    #[new]
    fn new(
        assets: Vec<AssetRow>,
        perpetuals: Vec<PerpetualRow>,
        call_target: &str,
    ) -> PyResult<Self> {
        let mut asset_params = Vec::with_capacity(assets.len());
        for (symbol, initial, maintenance, liquidation, eligible, bands) in assets {
            let context = format!("asset[{symbol}]");
            let haircuts =
                Haircuts::new(initial, maintenance, liquidation).map_err(|e| to_py(e, &context))?;
            let size_tiers = SizeTiers::new(&bands).map_err(|e| to_py(e, &context))?;
            asset_params.push(AssetParams::new(haircuts, eligible, size_tiers));
        }
        let mut perpetual_params = Vec::with_capacity(perpetuals.len());
        for (symbol, kind, contract_size, settle, tiers) in perpetuals {
            let context = format!("perpetual[{symbol}]");
            let table = TierTable::new(&tiers).map_err(|e| to_py(e, &context))?;
            let kind = parse_kind(&kind)?;
            perpetual_params.push(
                PerpetualParams::new(kind, contract_size, settle, table)
                    .map_err(|e| to_py(e, &context))?,
            );
        }
        let call_target = match call_target {
            "initial" => CallTarget::Initial,
            "maintenance" => CallTarget::Maintenance,
            other => {
                return Err(ConfigError::new_err(format!(
                    "policy.call_target: {other:?} is not initial | maintenance"
                )))
            }
        };
        let inner = EngineParams::new(asset_params, perpetual_params, call_target)
            .map_err(|e| to_py(e, ""))?;
        Ok(PyEngineParams { inner })
    }

    #[getter]
    fn n_assets(&self) -> usize {
        self.inner.assets.len()
    }

    #[getter]
    fn n_perpetuals(&self) -> usize {
        self.inner.perpetuals.len()
    }
}

/// `account_id` → dense row of the accounts table.
#[pyclass(frozen, name = "AccountIndex", module = "vamargin._core")]
pub struct PyAccountIndex {
    inner: AccountIndex,
}

#[pymethods]
impl PyAccountIndex {
    /// Indexes `ids` (the accounts table's `account_id` column); a duplicate is a
    /// `DataError` naming its row.
    #[new]
    fn new(py: Python<'_>, ids: PyReadonlyArray1<'_, i64>) -> PyResult<Self> {
        let ids = ids.as_slice()?;
        let pool = pool::current()?;
        let inner = py
            .detach(|| pool::install(&pool, || AccountIndex::build(ids)))
            .map_err(|e| to_py(e, "accounts.account_id"))?;
        Ok(PyAccountIndex { inner })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Dense rows of `ids`; an unknown id is a `DataError` naming `context` and its row.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray1<'py, i64>,
        context: &str,
    ) -> PyResult<Bound<'py, numpy::PyArray1<u32>>> {
        let ids = ids.as_slice()?;
        let pool = pool::current()?;
        let rows = py
            .detach(|| pool::install(&pool, || self.inner.lookup_all(ids)))
            .map_err(|e| to_py(e, context))?;
        Ok(rows.into_pyarray(py))
    }
}

/// Rows of a table grouped by account (a stable counting sort, built once per book).
#[pyclass(frozen, name = "Grouping", module = "vamargin._core")]
pub struct PyGrouping {
    inner: Grouping,
}

#[pymethods]
impl PyGrouping {
    /// Groups rows by account and, within an account, by `keys` (unique per account).
    #[new]
    #[pyo3(signature = (account_rows, n_accounts, context, keys=None))]
    fn new(
        py: Python<'_>,
        account_rows: PyReadonlyArray1<'_, u32>,
        n_accounts: usize,
        context: &str,
        keys: Option<PyReadonlyArray1<'_, u32>>,
    ) -> PyResult<Self> {
        let rows = account_rows.as_slice()?;
        let keys = keys.as_ref().map(|k| k.as_slice()).transpose()?;
        let inner = py
            .detach(|| Grouping::build(rows, keys, n_accounts, "account"))
            .map_err(|e| to_py(e, context))?;
        Ok(PyGrouping { inner })
    }

    #[getter]
    fn is_sorted(&self) -> bool {
        self.inner.is_sorted()
    }

    #[getter]
    fn n_accounts(&self) -> usize {
        self.inner.n_accounts()
    }
}

fn optional_slice<'a>(array: &'a Option<PyReadonlyArray1<'_, f64>>) -> PyResult<Option<&'a [f64]>> {
    array
        .as_ref()
        .map(|a| a.as_slice().map_err(PyErr::from))
        .transpose()
}

/// Revalues a validated book; returns `{"accounts": {...}, "positions": {...}}` of numpy
/// columns (status as `uint8` codes, tier as 1-based `uint8`).
#[pyfunction]
#[pyo3(signature = (
    params, credit_limit,
    holding_account, holding_asset, holding_amount, holding_groups,
    position_account, position_instrument, qty, entry_price, isolated_margin, leverage, position_groups,
    asset_prices, marks,
))]
#[allow(clippy::too_many_arguments)]
fn revalue<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    credit_limit: PyReadonlyArray1<'py, f64>,
    holding_account: PyReadonlyArray1<'py, u32>,
    holding_asset: PyReadonlyArray1<'py, u32>,
    holding_amount: PyReadonlyArray1<'py, f64>,
    holding_groups: &PyGrouping,
    position_account: PyReadonlyArray1<'py, u32>,
    position_instrument: PyReadonlyArray1<'py, u32>,
    qty: PyReadonlyArray1<'py, f64>,
    entry_price: PyReadonlyArray1<'py, f64>,
    isolated_margin: Option<PyReadonlyArray1<'py, f64>>,
    leverage: Option<PyReadonlyArray1<'py, f64>>,
    position_groups: &PyGrouping,
    asset_prices: PyReadonlyArray1<'py, f64>,
    marks: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let accounts = Accounts {
        credit_limit: credit_limit.as_slice()?,
    };
    let holdings = Holdings {
        account: holding_account.as_slice()?,
        asset: holding_asset.as_slice()?,
        amount: holding_amount.as_slice()?,
    };
    let positions = Positions {
        account: position_account.as_slice()?,
        instrument: position_instrument.as_slice()?,
        qty: qty.as_slice()?,
        entry_price: entry_price.as_slice()?,
        isolated_margin: optional_slice(&isolated_margin)?,
        leverage: optional_slice(&leverage)?,
    };
    let market = Market {
        asset_prices: asset_prices.as_slice()?,
        marks: marks.as_slice()?,
    };
    let pool = pool::current()?;
    let result = py
        .detach(|| {
            pool::install(&pool, || {
                let book = Book::new(
                    &params.inner,
                    accounts,
                    holdings,
                    positions,
                    &holding_groups.inner,
                    &position_groups.inner,
                )?;
                core::revalue(&params.inner, &book, &market)
            })
        })
        .map_err(|e| to_py(e, "revalue"))?;

    let accounts_out = PyDict::new(py);
    let a = result.accounts;
    accounts_out.set_item("equity", a.equity.into_pyarray(py))?;
    accounts_out.set_item("collateral_value", a.collateral_value.into_pyarray(py))?;
    accounts_out.set_item("debit", a.debit.into_pyarray(py))?;
    accounts_out.set_item("upnl", a.upnl.into_pyarray(py))?;
    accounts_out.set_item(
        "initial_requirement",
        a.initial_requirement.into_pyarray(py),
    )?;
    accounts_out.set_item(
        "maintenance_requirement",
        a.maintenance_requirement.into_pyarray(py),
    )?;
    accounts_out.set_item(
        "liquidation_requirement",
        a.liquidation_requirement.into_pyarray(py),
    )?;
    accounts_out.set_item("excess", a.excess.into_pyarray(py))?;
    accounts_out.set_item("margin_ratio", a.margin_ratio.into_pyarray(py))?;
    accounts_out.set_item("ltv", a.ltv.into_pyarray(py))?;
    accounts_out.set_item("status", a.status.into_pyarray(py))?;
    accounts_out.set_item("call_amount", a.call_amount.into_pyarray(py))?;

    let positions_out = PyDict::new(py);
    let p = result.positions;
    positions_out.set_item("notional", p.notional.into_pyarray(py))?;
    positions_out.set_item("upnl", p.upnl.into_pyarray(py))?;
    positions_out.set_item("initial_margin", p.initial_margin.into_pyarray(py))?;
    positions_out.set_item("maintenance_margin", p.maintenance_margin.into_pyarray(py))?;
    positions_out.set_item("tier", p.tier.into_pyarray(py))?;
    positions_out.set_item("liquidation_price", p.liquidation_price.into_pyarray(py))?;
    positions_out.set_item("bankruptcy_price", p.bankruptcy_price.into_pyarray(py))?;
    positions_out.set_item("adl_score", p.adl_score.into_pyarray(py))?;

    let out = PyDict::new(py);
    out.set_item("accounts", accounts_out)?;
    out.set_item("positions", positions_out)?;
    Ok(out)
}

/// First position row repeating an earlier (account, instrument, margin mode), or `None`.
#[pyfunction]
fn first_duplicate_position(
    py: Python<'_>,
    position_instrument: PyReadonlyArray1<'_, u32>,
    qty: PyReadonlyArray1<'_, f64>,
    isolated_margin: Option<PyReadonlyArray1<'_, f64>>,
    position_groups: &PyGrouping,
    n_instruments: usize,
) -> PyResult<Option<usize>> {
    let instrument = position_instrument.as_slice()?;
    let qty = qty.as_slice()?;
    if instrument.len() != qty.len() || position_groups.inner.n_rows() != qty.len() {
        return Err(crate::errors::DataError::new_err(
            "positions: instrument, qty and grouping lengths differ",
        ));
    }
    let positions = Positions {
        // Only the grouping locates accounts here.
        account: &[],
        instrument,
        qty,
        entry_price: &[],
        isolated_margin: optional_slice(&isolated_margin)?,
        leverage: None,
    };
    let pool = pool::current()?;
    Ok(py.detach(|| {
        pool::install(&pool, || {
            core::first_duplicate_position(&positions, &position_groups.inner, n_instruments)
        })
    }))
}

/// Settles funding per position in minor units; `rates`+`marks` (one interval) or
/// `index_now`+`position_index` (cumulative index), one value per instrument.
#[pyfunction]
#[pyo3(signature = (params, position_instrument, qty, settle_decimals, *, rates=None, marks=None, index_now=None, position_index=None))]
#[allow(clippy::too_many_arguments)]
fn settle_funding<'py>(
    py: Python<'py>,
    params: &PyEngineParams,
    position_instrument: PyReadonlyArray1<'py, u32>,
    qty: PyReadonlyArray1<'py, f64>,
    settle_decimals: Vec<u32>,
    rates: Option<PyReadonlyArray1<'py, f64>>,
    marks: Option<PyReadonlyArray1<'py, f64>>,
    index_now: Option<PyReadonlyArray1<'py, f64>>,
    position_index: Option<PyReadonlyArray1<'py, f64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let n_instruments = params.inner.perpetuals.len();
    let instrument = position_instrument.as_slice()?;
    let qty = qty.as_slice()?;
    let fail = |message: &str| crate::errors::DataError::new_err(format!("funding: {message}"));
    if instrument.len() != qty.len() {
        return Err(fail("instrument and qty lengths differ"));
    }
    if let Some(bad) = instrument
        .iter()
        .position(|&id| id as usize >= n_instruments)
    {
        return Err(fail(&format!(
            "positions row {bad}: instrument id out of range"
        )));
    }
    if settle_decimals.len() != params.inner.assets.len() {
        return Err(fail("one minor-unit scale per asset is required"));
    }
    let rates = optional_slice(&rates)?;
    let marks = optional_slice(&marks)?;
    let index_now = optional_slice(&index_now)?;
    let position_index = optional_slice(&position_index)?;
    let basis = match (rates, marks, index_now, position_index) {
        (Some(rates), Some(marks), None, None)
            if rates.len() == n_instruments && marks.len() == n_instruments =>
        {
            core::funding::FundingBasis::Mark { rates, marks }
        }
        (None, None, Some(index_now), Some(position_index)) if index_now.len() == n_instruments => {
            core::funding::FundingBasis::Index {
                index_now,
                position_index,
            }
        }
        _ => {
            return Err(fail(
                "give rates and marks, or index_now and position_index, one per instrument",
            ))
        }
    };
    let positions = Positions {
        account: &[],
        instrument,
        qty,
        entry_price: &[],
        isolated_margin: None,
        leverage: None,
    };
    let pool = pool::current()?;
    let settlement = py
        .detach(|| {
            pool::install(&pool, || {
                core::funding::settle_funding(&params.inner, &positions, basis, &settle_decimals)
            })
        })
        .map_err(|e| to_py(e, "funding"))?;
    let out = PyDict::new(py);
    out.set_item("payments", settlement.payments.into_pyarray(py))?;
    out.set_item("dust", settlement.dust.into_pyarray(py))?;
    out.set_item("house", settlement.house.into_pyarray(py))?;
    out.set_item("received", settlement.received.into_pyarray(py))?;
    out.set_item("paid", settlement.paid.into_pyarray(py))?;
    Ok(out)
}

/// Per account (row) and key (column): sums of integer amounts over each account's rows.
#[pyfunction]
fn sum_by_account<'py>(
    py: Python<'py>,
    groups: &PyGrouping,
    keys: PyReadonlyArray1<'py, u32>,
    amounts: PyReadonlyArray1<'py, i64>,
    n_keys: usize,
) -> PyResult<Bound<'py, numpy::PyArray1<i64>>> {
    let keys = keys.as_slice()?;
    let amounts = amounts.as_slice()?;
    let pool = pool::current()?;
    let sums = py
        .detach(|| {
            pool::install(&pool, || {
                core::money::sum_by_account(&groups.inner, keys, amounts, n_keys)
            })
        })
        .map_err(|e| to_py(e, "by account"))?;
    Ok(sums.into_pyarray(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngineParams>()?;
    m.add_class::<PyAccountIndex>()?;
    m.add_class::<PyGrouping>()?;
    m.add_function(wrap_pyfunction!(revalue, m)?)?;
    m.add_function(wrap_pyfunction!(first_duplicate_position, m)?)?;
    m.add_function(wrap_pyfunction!(settle_funding, m)?)?;
    m.add_function(wrap_pyfunction!(sum_by_account, m)?)?;
    m.add("STATUS_NAMES", core::Status::NAMES.to_vec())?;
    Ok(())
}
