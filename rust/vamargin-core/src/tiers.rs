//! Tier tables: perpetual margin brackets and size-tiered collateral credit.

use crate::error::{Error, Result};

/// One bracket of a perpetual's margin table.
///
/// `maintenance_amount` (Binance's `cum`) makes the maintenance margin continuous across
/// floors: `MM(N) = N·mmr − maintenance_amount` inside the bracket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarginTier {
    pub floor: f64,
    pub mmr: f64,
    pub max_leverage: f64,
    pub maintenance_amount: f64,
}

/// The brackets of one perpetual, ordered by floor, the first at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct TierTable {
    tiers: Vec<MarginTier>,
}

/// `(floor, mmr, max_leverage)` of one bracket, as configured.
pub type TierSpec = (f64, f64, f64);

impl TierTable {
    /// Builds a table from configured brackets, deriving each maintenance amount.
    ///
    /// Rejects: no brackets, a first floor other than 0, floors not strictly increasing,
    /// mmr outside [0, 1) or decreasing, leverage below 1, and `mmr ≥ 1/max_leverage`
    /// (a position could then be opened already below maintenance).
    pub fn new(brackets: &[TierSpec]) -> Result<Self> {
        if brackets.is_empty() {
            return Err(Error::config("tiers", "at least one tier is required"));
        }
        if brackets.len() > usize::from(u8::MAX) {
            return Err(Error::config("tiers", "at most 255 tiers are supported"));
        }
        let mut tiers = Vec::with_capacity(brackets.len());
        let mut previous: Option<MarginTier> = None;
        for (k, &(floor, mmr, max_leverage)) in brackets.iter().enumerate() {
            let key = |field: &str| format!("tiers[{k}].{field}");
            if !floor.is_finite() || floor < 0.0 {
                return Err(Error::config(key("floor"), "must be a finite number ≥ 0"));
            }
            if !(0.0..1.0).contains(&mmr) {
                return Err(Error::config(key("mmr"), "must be in [0, 1)"));
            }
            // +inf means "no leverage limit" (calculators given only floors and rates).
            if max_leverage.is_nan() || max_leverage < 1.0 {
                return Err(Error::config(key("max_leverage"), "must be ≥ 1"));
            }
            if max_leverage.is_finite() && mmr >= 1.0 / max_leverage {
                return Err(Error::config(
                    key("mmr"),
                    format!(
                        "{mmr} must be below 1/max_leverage = {}",
                        1.0 / max_leverage
                    ),
                ));
            }
            let maintenance_amount = match previous {
                None => {
                    if floor != 0.0 {
                        return Err(Error::config(
                            key("floor"),
                            "the first tier must start at 0",
                        ));
                    }
                    0.0
                }
                Some(prev) => {
                    if floor <= prev.floor {
                        return Err(Error::config(
                            key("floor"),
                            "floors must be strictly increasing",
                        ));
                    }
                    if mmr < prev.mmr {
                        return Err(Error::config(key("mmr"), "mmr must not decrease with size"));
                    }
                    // floor·mmr − floor·mmr_prev (not floor·(mmr − mmr_prev)) keeps the
                    // published round ladders exact: 1e6·0.025 − 1e6·0.01 is exactly 15 000.
                    prev.maintenance_amount + (floor * mmr - floor * prev.mmr)
                }
            };
            let tier = MarginTier {
                floor,
                mmr,
                max_leverage,
                maintenance_amount,
            };
            tiers.push(tier);
            previous = Some(tier);
        }
        Ok(TierTable { tiers })
    }

    /// A one-bracket table with a fixed rate and maintenance amount (calculator use).
    pub fn fixed(mmr: f64, maintenance_amount: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&mmr) {
            return Err(Error::config("mmr", "must be in [0, 1)"));
        }
        if !maintenance_amount.is_finite() {
            return Err(Error::config("maintenance_amount", "must be finite"));
        }
        Ok(TierTable {
            tiers: vec![MarginTier {
                floor: 0.0,
                mmr,
                max_leverage: f64::INFINITY,
                maintenance_amount,
            }],
        })
    }

    pub fn tiers(&self) -> &[MarginTier] {
        &self.tiers
    }

    /// Index of the bracket with `floor ≤ notional < next floor`.
    #[inline]
    pub fn index(&self, notional: f64) -> usize {
        // Tables are short (a handful of brackets): a forward scan beats a binary search.
        let mut k = 0;
        while k + 1 < self.tiers.len() && self.tiers[k + 1].floor <= notional {
            k += 1;
        }
        k
    }

    #[inline]
    pub fn tier(&self, notional: f64) -> &MarginTier {
        &self.tiers[self.index(notional)]
    }

    /// Maintenance margin of a position of this notional.
    #[inline]
    pub fn maintenance_margin(&self, notional: f64) -> f64 {
        let tier = self.tier(notional);
        notional * tier.mmr - tier.maintenance_amount
    }
}

/// Size tiers of a collateral asset: the part of a holding's value between consecutive
/// floors is credited at that band's factor (marginal, like tax brackets), so credit grows
/// continuously with size and a large block of one asset is credited less than pro rata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SizeTiers {
    floors: Vec<f64>,
    factors: Vec<f64>,
}

impl SizeTiers {
    /// `(floor, factor)` bands; an empty list credits the full value.
    pub fn new(bands: &[(f64, f64)]) -> Result<Self> {
        let mut floors = Vec::with_capacity(bands.len());
        let mut factors = Vec::with_capacity(bands.len());
        for (k, &(floor, factor)) in bands.iter().enumerate() {
            let key = |field: &str| format!("size_tiers[{k}].{field}");
            if !floor.is_finite() || floor < 0.0 {
                return Err(Error::config(key("floor"), "must be a finite number ≥ 0"));
            }
            if k == 0 && floor != 0.0 {
                return Err(Error::config(
                    key("floor"),
                    "the first band must start at 0",
                ));
            }
            if k > 0 && floor <= floors[k - 1] {
                return Err(Error::config(
                    key("floor"),
                    "floors must be strictly increasing",
                ));
            }
            if !(0.0..=1.0).contains(&factor) {
                return Err(Error::config(key("factor"), "must be in [0, 1]"));
            }
            if k > 0 && factor > factors[k - 1] {
                return Err(Error::config(
                    key("factor"),
                    "factors must not increase with size",
                ));
            }
            floors.push(floor);
            factors.push(factor);
        }
        Ok(SizeTiers { floors, factors })
    }

    pub fn is_empty(&self) -> bool {
        self.floors.is_empty()
    }

    /// `(floors, factors)` of the bands.
    pub fn bands(&self) -> (&[f64], &[f64]) {
        (&self.floors, &self.factors)
    }

    /// Credited value `T(v)` of a holding worth `value ≥ 0`.
    #[inline]
    pub fn credited_value(&self, value: f64) -> f64 {
        if self.floors.is_empty() {
            return value;
        }
        // Most holdings sit in the first band (from 0): the loop below would add
        // `(value − 0)·factor` to 0 and stop, which is this product bit for bit.
        if self.floors.get(1).is_none_or(|&second| value <= second) && value > 0.0 {
            return value * self.factors[0];
        }
        let mut credited = 0.0;
        for k in 0..self.floors.len() {
            let lo = self.floors[k];
            if value <= lo {
                break;
            }
            let hi = self.floors.get(k + 1).copied().unwrap_or(f64::INFINITY);
            credited += (value.min(hi) - lo) * self.factors[k];
        }
        credited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binance_btcusdt() -> TierTable {
        TierTable::new(&[
            (0.0, 0.004, 125.0),
            (50_000.0, 0.005, 100.0),
            (250_000.0, 0.01, 50.0),
            (1_000_000.0, 0.025, 20.0),
        ])
        .unwrap()
    }

    #[test]
    fn maintenance_amounts_follow_the_published_ladder() {
        // Binance BTCUSDT brackets: cum = 0, 50, 1 300, 16 300.
        let amounts: Vec<f64> = binance_btcusdt()
            .tiers()
            .iter()
            .map(|t| t.maintenance_amount)
            .collect();
        assert_eq!(amounts, vec![0.0, 50.0, 1_300.0, 16_300.0]);
    }

    #[test]
    fn maintenance_margin_is_continuous_at_every_floor() {
        let table = binance_btcusdt();
        for tier in &table.tiers()[1..] {
            let below = table.maintenance_margin(tier.floor - 1e-7);
            let at = table.maintenance_margin(tier.floor);
            assert!((below - at).abs() < 1e-6, "jump at {}", tier.floor);
        }
        assert_eq!(
            table.maintenance_margin(100_000.0),
            100_000.0 * 0.005 - 50.0
        );
    }

    #[test]
    fn tier_index_takes_the_bracket_containing_the_floor() {
        let table = binance_btcusdt();
        assert_eq!(table.index(0.0), 0);
        assert_eq!(table.index(49_999.99), 0);
        assert_eq!(table.index(50_000.0), 1);
        assert_eq!(table.index(5e9), 3);
    }

    #[test]
    fn invalid_tables_name_the_key() {
        let err = TierTable::new(&[(10.0, 0.004, 125.0)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tiers[0].floor: the first tier must start at 0"
        );
        let err = TierTable::new(&[(0.0, 0.004, 125.0), (0.0, 0.005, 100.0)]).unwrap_err();
        assert!(err.to_string().starts_with("tiers[1].floor"));
        let err = TierTable::new(&[(0.0, 0.01, 125.0)]).unwrap_err();
        assert!(err.to_string().starts_with("tiers[0].mmr"));
        let err = TierTable::new(&[(0.0, 0.005, 100.0), (10.0, 0.004, 100.0)]).unwrap_err();
        assert!(err.to_string().starts_with("tiers[1].mmr"));
    }

    #[test]
    fn size_tiers_credit_marginal_bands() {
        let bands = SizeTiers::new(&[(0.0, 1.0), (100.0, 0.5), (200.0, 0.0)]).unwrap();
        assert_eq!(bands.credited_value(50.0), 50.0);
        assert_eq!(bands.credited_value(150.0), 125.0);
        assert_eq!(bands.credited_value(1_000.0), 150.0);
        assert_eq!(SizeTiers::default().credited_value(42.0), 42.0);
    }

    #[test]
    fn the_first_band_shortcut_is_the_band_sum_bit_for_bit() {
        // The band sum written out: Σ (min(v, next floor) − floor)·factor over the bands
        // below v, from 0.
        fn banded(floors: &[f64], factors: &[f64], v: f64) -> f64 {
            let mut sum = 0.0;
            for k in 0..floors.len() {
                let next = floors.get(k + 1).copied().unwrap_or(f64::INFINITY);
                if v > floors[k] {
                    sum += (v.min(next) - floors[k]) * factors[k];
                }
            }
            sum
        }
        let (floors, factors) = ([0.0, 10_000_000.0, 50_000_000.0], [0.95, 0.9, 0.75]);
        let bands = SizeTiers::new(&[(0.0, 0.95), (1e7, 0.9), (5e7, 0.75)]).unwrap();
        let one_band = SizeTiers::new(&[(0.0, 0.8)]).unwrap();
        let values = [
            f64::MIN_POSITIVE,
            0.1,
            1.0 / 3.0,
            123_456.789,
            9_999_999.999_999_998,
            1e7,
            1e7 + 1e-8,
            3.3e7,
            5e7,
            7.77e8,
            1e300,
        ];
        for v in values {
            assert_eq!(
                bands.credited_value(v).to_bits(),
                banded(&floors, &factors, v).to_bits(),
                "{v}"
            );
            assert_eq!(one_band.credited_value(v).to_bits(), (v * 0.8).to_bits());
        }
        assert_eq!(bands.credited_value(0.0), 0.0);
    }
}
