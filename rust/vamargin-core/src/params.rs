//! The engine's view of a configuration: assets and perpetuals by dense id.
//!
//! The Python `RiskConfig` parses and validates TOML; it hands the numbers that the
//! kernels need to these types, which check them again so that no kernel can be handed
//! an impossible table.

use crate::error::{Error, Result};
use crate::perp::ContractKind;
use crate::tiers::{SizeTiers, TierTable};

/// The three haircut levels of a collateral asset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Haircuts {
    pub initial: f64,
    pub maintenance: f64,
    pub liquidation: f64,
}

impl Haircuts {
    /// Ineligible assets count in equity but earn no credit.
    pub const NO_CREDIT: Haircuts = Haircuts {
        initial: 1.0,
        maintenance: 1.0,
        liquidation: 1.0,
    };

    pub fn new(initial: f64, maintenance: f64, liquidation: f64) -> Result<Self> {
        for (key, h) in [
            ("initial_haircut", initial),
            ("maintenance_haircut", maintenance),
            ("liquidation_haircut", liquidation),
        ] {
            if !(0.0..=1.0).contains(&h) {
                return Err(Error::config(key, format!("{h} is outside [0, 1]")));
            }
        }
        if !(initial >= maintenance && maintenance >= liquidation) {
            return Err(Error::config(
                "initial_haircut",
                "haircuts must satisfy initial ≥ maintenance ≥ liquidation",
            ));
        }
        Ok(Haircuts {
            initial,
            maintenance,
            liquidation,
        })
    }
}

/// A spot asset or cash as collateral.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetParams {
    /// Effective haircuts: the configured ones when eligible, 100% otherwise.
    pub haircuts: Haircuts,
    pub eligible: bool,
    pub size_tiers: SizeTiers,
    /// Cost of a forced sale, as a fraction of the value sold.
    pub sale_fee: f64,
}

fn fraction(key: &str, value: f64) -> Result<f64> {
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::config(key, format!("{value} is outside [0, 1)")))
    }
}

impl AssetParams {
    /// Sets the forced-sale fee (a fraction in [0, 1)).
    pub fn with_sale_fee(mut self, fee: f64) -> Result<Self> {
        self.sale_fee = fraction("sale_fee", fee)?;
        Ok(self)
    }

    pub fn new(haircuts: Haircuts, eligible: bool, size_tiers: SizeTiers) -> Self {
        AssetParams {
            haircuts: if eligible {
                haircuts
            } else {
                Haircuts::NO_CREDIT
            },
            eligible,
            size_tiers,
            sale_fee: 0.0,
        }
    }
}

/// A perpetual contract.
#[derive(Debug, Clone, PartialEq)]
pub struct PerpetualParams {
    pub kind: ContractKind,
    pub contract_size: f64,
    /// Dense id of the asset PnL and margin settle in.
    pub settle_asset: u32,
    pub tiers: TierTable,
    /// Fee charged on the notional a liquidation closes.
    pub liquidation_fee: f64,
}

impl PerpetualParams {
    /// Sets the liquidation fee (a fraction in [0, 1)).
    pub fn with_liquidation_fee(mut self, fee: f64) -> Result<Self> {
        self.liquidation_fee = fraction("liquidation_fee", fee)?;
        Ok(self)
    }

    pub fn new(
        kind: ContractKind,
        contract_size: f64,
        settle_asset: u32,
        tiers: TierTable,
    ) -> Result<Self> {
        if !(contract_size > 0.0 && contract_size.is_finite()) {
            return Err(Error::config(
                "contract_size",
                "must be a finite number > 0",
            ));
        }
        Ok(PerpetualParams {
            kind,
            contract_size,
            settle_asset,
            tiers,
            liquidation_fee: 0.0,
        })
    }
}

/// What a margin call restores equity to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTarget {
    Initial,
    Maintenance,
}

/// Everything the kernels read from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineParams {
    pub assets: Vec<AssetParams>,
    pub perpetuals: Vec<PerpetualParams>,
    pub call_target: CallTarget,
    /// A liquidation stops once equity is back to maintenance × (1 + buffer).
    pub liquidation_buffer: f64,
}

impl EngineParams {
    /// Sets the liquidation buffer (≥ 0).
    pub fn with_liquidation_buffer(mut self, buffer: f64) -> Result<Self> {
        if !(buffer >= 0.0 && buffer.is_finite()) {
            return Err(Error::config(
                "liquidation_buffer",
                "must be a finite number ≥ 0",
            ));
        }
        self.liquidation_buffer = buffer;
        Ok(self)
    }

    pub fn new(
        assets: Vec<AssetParams>,
        perpetuals: Vec<PerpetualParams>,
        call_target: CallTarget,
    ) -> Result<Self> {
        for (k, perp) in perpetuals.iter().enumerate() {
            if perp.settle_asset as usize >= assets.len() {
                return Err(Error::config(
                    format!("perpetual[{k}].settle"),
                    format!("asset id {} is not configured", perp.settle_asset),
                ));
            }
        }
        Ok(EngineParams {
            assets,
            perpetuals,
            call_target,
            liquidation_buffer: 0.0,
        })
    }
}
