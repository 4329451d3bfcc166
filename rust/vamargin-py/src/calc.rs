//! Scalar calculators: the same core functions the batch kernels use, one value at a time.

use pyo3::prelude::*;
use vamargin_core::{perp, ContractKind, SizeTiers, TierSpec, TierTable};

use crate::errors::{to_py, ConfigError};

pub fn parse_kind(kind: &str) -> PyResult<ContractKind> {
    match kind {
        "linear" => Ok(ContractKind::Linear),
        "inverse" => Ok(ContractKind::Inverse),
        other => Err(ConfigError::new_err(format!(
            "kind: {other:?} is not a contract kind (linear | inverse)"
        ))),
    }
}

/// Rejects a contract size that is not a finite number > 0.
fn check_contract_size(contract_size: f64) -> PyResult<()> {
    if contract_size > 0.0 && contract_size.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::new_err(format!(
            "contract_size: {contract_size} must be a finite number > 0"
        )))
    }
}

fn tier_table(tiers: &[TierSpec]) -> PyResult<TierTable> {
    TierTable::new(tiers).map_err(|err| to_py(err, ""))
}

/// Maintenance amount (`cum`) of each bracket.
#[pyfunction]
fn maintenance_amounts(tiers: Vec<TierSpec>) -> PyResult<Vec<f64>> {
    Ok(tier_table(&tiers)?
        .tiers()
        .iter()
        .map(|t| t.maintenance_amount)
        .collect())
}

/// Maintenance margin of a position of `notional` under `tiers`.
#[pyfunction]
fn maintenance_margin(notional: f64, tiers: Vec<TierSpec>) -> PyResult<f64> {
    Ok(tier_table(&tiers)?.maintenance_margin(notional))
}

/// 1-based bracket of `notional`.
#[pyfunction]
fn tier_of(notional: f64, tiers: Vec<TierSpec>) -> PyResult<usize> {
    Ok(tier_table(&tiers)?.index(notional) + 1)
}

#[pyfunction]
fn unrealized_pnl(
    kind: &str,
    contract_size: f64,
    qty: f64,
    entry_price: f64,
    mark_price: f64,
) -> PyResult<f64> {
    check_contract_size(contract_size)?;
    Ok(perp::unrealized_pnl(
        parse_kind(kind)?,
        contract_size,
        qty,
        entry_price,
        mark_price,
    ))
}

#[pyfunction]
fn notional(kind: &str, contract_size: f64, qty: f64, price: f64) -> PyResult<f64> {
    check_contract_size(contract_size)?;
    Ok(perp::notional(parse_kind(kind)?, contract_size, qty, price))
}

/// Liquidation price with a bracket table, or a fixed rate and maintenance amount when
/// `tiers` is `None`.
#[pyfunction]
#[pyo3(signature = (kind, contract_size, qty, entry_price, balance, tiers, mmr, maintenance_amount))]
#[allow(clippy::too_many_arguments)]
fn liquidation_price(
    kind: &str,
    contract_size: f64,
    qty: f64,
    entry_price: f64,
    balance: f64,
    tiers: Option<Vec<TierSpec>>,
    mmr: f64,
    maintenance_amount: f64,
) -> PyResult<Option<f64>> {
    check_contract_size(contract_size)?;
    let table = match tiers {
        Some(tiers) => tier_table(&tiers)?,
        None => TierTable::fixed(mmr, maintenance_amount).map_err(|err| to_py(err, ""))?,
    };
    Ok(perp::liquidation_price(
        parse_kind(kind)?,
        contract_size,
        qty,
        entry_price,
        balance,
        &table,
    ))
}

#[pyfunction]
fn bankruptcy_price(
    kind: &str,
    contract_size: f64,
    qty: f64,
    entry_price: f64,
    balance: f64,
) -> PyResult<Option<f64>> {
    check_contract_size(contract_size)?;
    Ok(perp::bankruptcy_price(
        parse_kind(kind)?,
        contract_size,
        qty,
        entry_price,
        balance,
    ))
}

/// Credited value of a holding worth `value` under marginal size bands.
#[pyfunction]
fn tiered_value(value: f64, size_tiers: Vec<(f64, f64)>) -> PyResult<f64> {
    let bands = SizeTiers::new(&size_tiers).map_err(|err| to_py(err, ""))?;
    Ok(bands.credited_value(value))
}

#[pyfunction]
fn adl_score(upnl: f64, entry_value: f64, notional: f64, margin_balance: f64) -> f64 {
    perp::adl_score(upnl, entry_value, notional, margin_balance)
}

/// Funding rate of one interval from its premium samples.
#[pyfunction]
fn funding_rate(premiums: Vec<f64>, interest_rate: f64, clamp: f64, cap: f64) -> f64 {
    vamargin_core::funding::funding_rate(&premiums, interest_rate, clamp, cap)
}

/// Premium of one sample from impact bid/ask and index.
#[pyfunction]
fn premium(impact_bid: f64, impact_ask: f64, index_price: f64) -> f64 {
    vamargin_core::funding::premium(impact_bid, impact_ask, index_price)
}

/// Base units to close to cure a shortage: `shortage / (margin_rate − fee) / price`.
#[pyfunction]
fn close_size(shortage: f64, price: f64, margin_rate: f64, fee: f64) -> f64 {
    vamargin_core::liquidation::close_size(shortage, price, margin_rate, fee)
}

/// Interest owed, in minor units (`10^-decimals`), rounded up; exact on decimal inputs.
#[pyfunction]
fn interest(
    principal: f64,
    annual_rate: f64,
    days: u32,
    day_count: &str,
    decimals: u32,
) -> PyResult<i64> {
    let day_count = crate::financing::parse_day_count(day_count)?;
    vamargin_core::financing::interest(principal, annual_rate, days, day_count, decimals)
        .map_err(|e| to_py(e, ""))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(interest, m)?)?;
    m.add_function(wrap_pyfunction!(close_size, m)?)?;
    m.add_function(wrap_pyfunction!(funding_rate, m)?)?;
    m.add_function(wrap_pyfunction!(premium, m)?)?;
    m.add_function(wrap_pyfunction!(maintenance_amounts, m)?)?;
    m.add_function(wrap_pyfunction!(maintenance_margin, m)?)?;
    m.add_function(wrap_pyfunction!(tier_of, m)?)?;
    m.add_function(wrap_pyfunction!(unrealized_pnl, m)?)?;
    m.add_function(wrap_pyfunction!(notional, m)?)?;
    m.add_function(wrap_pyfunction!(liquidation_price, m)?)?;
    m.add_function(wrap_pyfunction!(bankruptcy_price, m)?)?;
    m.add_function(wrap_pyfunction!(tiered_value, m)?)?;
    m.add_function(wrap_pyfunction!(adl_score, m)?)?;
    Ok(())
}
