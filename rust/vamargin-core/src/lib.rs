//! vamargin-core: margin and risk kernels for virtual-asset brokers and perpetual
//! platforms, over columnar books. Pure Rust; the Python bindings live in `vamargin-py`.
//!
//! Units: quantities and prices are `f64`; risk measures are `f64` in the reporting
//! currency; per-position perpetual figures are in the contract's settle currency.
#![forbid(unsafe_code)]

pub mod binding;
pub mod book;
pub mod columns;
pub mod error;
pub mod financing;
pub mod funding;
mod funding_run;
pub mod liquidation;
pub mod loss_allocation;
pub mod money;
mod parallel;
pub mod params;
mod partitioned_sums;
pub mod perp;
mod position_lanes;
mod prefetch;
pub mod pretrade;
mod run_sum_lanes;
pub mod scan;
mod steps;
pub mod stress;
#[cfg(test)]
mod test_book;
#[cfg(test)]
mod test_rng;
pub mod tiers;
pub mod valuation;

pub use book::{first_repeated_key, AccountIndex, Accounts, Book, Grouping, Holdings, Positions};
pub use columns::{Columns, Zeroed};
pub use error::{Error, Result};
pub use params::{AssetParams, CallTarget, EngineParams, Haircuts, PerpetualParams};
pub use perp::ContractKind;
pub use stress::{stress, stressed_equity, ScenarioTotals, Scenarios, StressResult};
pub use tiers::{MarginTier, SizeTiers, TierSpec, TierTable};
pub use valuation::{
    revalue, revalue_into, AccountFigures, Market, PositionFigures, Revaluation, Scope, Status,
};
