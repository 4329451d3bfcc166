//! `EngineParams`: the numbers the kernels read from a `RiskConfig`.

use pyo3::prelude::*;
use vamargin_core::{
    AssetParams, CallTarget, EngineParams, Haircuts, PerpetualParams, SizeTiers, TierSpec,
    TierTable,
};

use crate::calc::parse_kind;
use crate::errors::{to_py, ConfigError};

/// `(symbol, initial, maintenance, liquidation, eligible, size_tiers, sale_fee)` of one asset.
type AssetRow = (String, f64, f64, f64, bool, Vec<(f64, f64)>, f64);
/// `(symbol, kind, contract_size, settle_asset_id, tiers, liquidation_fee)` of one perpetual.
type PerpetualRow = (String, String, f64, u32, Vec<TierSpec>, f64);

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
        liquidation_buffer: f64,
    ) -> PyResult<Self> {
        let mut asset_params = Vec::with_capacity(assets.len());
        for (symbol, initial, maintenance, liquidation, eligible, bands, sale_fee) in assets {
            let context = format!("asset[{symbol}]");
            let haircuts =
                Haircuts::new(initial, maintenance, liquidation).map_err(|e| to_py(e, &context))?;
            let size_tiers = SizeTiers::new(&bands).map_err(|e| to_py(e, &context))?;
            let asset = AssetParams::new(haircuts, eligible, size_tiers)
                .with_sale_fee(sale_fee)
                .map_err(|e| to_py(e, &context))?;
            asset_params.push(asset);
        }
        let mut perpetual_params = Vec::with_capacity(perpetuals.len());
        for (symbol, kind, contract_size, settle, tiers, fee) in perpetuals {
            let context = format!("perpetual[{symbol}]");
            let table = TierTable::new(&tiers).map_err(|e| to_py(e, &context))?;
            let perpetual = PerpetualParams::new(parse_kind(&kind)?, contract_size, settle, table)
                .and_then(|p| p.with_liquidation_fee(fee))
                .map_err(|e| to_py(e, &context))?;
            perpetual_params.push(perpetual);
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
            .and_then(|p| p.with_liquidation_buffer(liquidation_buffer))
            .map_err(|e| to_py(e, "policy"))?;
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
