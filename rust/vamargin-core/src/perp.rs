//! Per-position perpetual math: notional, unrealised PnL, margins, liquidation and
//! bankruptcy prices, ADL score.
//!
//! Linear contracts settle in the quote currency, inverse ones in the base coin. Both are
//! handled in one "x-space": with `a = |q|·cs`, the notional is `a·x` where `x = P`
//! (linear) or `x = 1/P` (inverse), and the position's margin balance is affine in `x`:
//! `balance(x) = b0 + b1·x`. The liquidation condition `balance(x) = MM(a·x)` is then one
//! piecewise-linear equation for both kinds.

use crate::params::PerpetualParams;
use crate::tiers::{MarginTier, TierTable};

/// How a perpetual settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractKind {
    /// PnL and margin in the quote currency; `contract_size` is base per contract.
    Linear,
    /// PnL and margin in the base coin; `contract_size` is quote face value per contract.
    Inverse,
}

/// One position's margin figures at a mark, settle currency.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Margins {
    pub notional: f64,
    pub upnl: f64,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
    /// 0-based bracket.
    pub tier: usize,
}

/// Notional, uPnL, bracket and margins of `qty` contracts entered at `entry_price`,
/// valued at `mark`. A chosen leverage (NaN: none) can only lower the bracket's maximum.
/// An empty position has all zeros (and needs no price).
#[inline]
pub fn margins(
    contract: &PerpetualParams,
    qty: f64,
    entry_price: f64,
    mark: f64,
    chosen_leverage: f64,
) -> Margins {
    if qty == 0.0 {
        return Margins::default();
    }
    PositionTerms::new(contract, qty, entry_price, chosen_leverage)
        .margins(contract, &MarkTerms::new(contract.kind, mark))
}

/// What [`margins`] reads of a live position besides the mark. They do not move with the
/// mark, so a job that prices a position at many marks (stress) computes them once.
///
/// Every figure comes out bitwise as [`notional`] and [`unrealized_pnl`] compute it:
/// those multiply `qty · contract_size` first, which is the product kept here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionTerms {
    /// `|q|·cs`.
    size: f64,
    /// `q·cs`.
    signed_size: f64,
    /// What the uPnL measures the mark against: the entry price (linear) or its
    /// reciprocal (inverse).
    entry_term: f64,
    /// NaN: none.
    chosen_leverage: f64,
}

/// A contract's mark as [`PositionTerms::margins`] reads it: the mark and, for an
/// inverse contract, its reciprocal (one division per contract and mark, not per row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarkTerms {
    mark: f64,
    /// `1/mark` for an inverse contract; NaN (unused) for a linear one.
    reciprocal: f64,
}

impl MarkTerms {
    #[inline]
    pub fn new(kind: ContractKind, mark: f64) -> Self {
        let reciprocal = match kind {
            ContractKind::Linear => f64::NAN,
            ContractKind::Inverse => 1.0 / mark,
        };
        MarkTerms { mark, reciprocal }
    }

    #[inline]
    pub(crate) fn mark(&self) -> f64 {
        self.mark
    }

    /// `1/mark` for an inverse contract; NaN for a linear one.
    #[inline]
    pub(crate) fn reciprocal(&self) -> f64 {
        self.reciprocal
    }
}

impl PositionTerms {
    /// The terms of `qty` contracts (not 0) of `contract` entered at `entry_price`.
    #[inline]
    pub fn new(
        contract: &PerpetualParams,
        qty: f64,
        entry_price: f64,
        chosen_leverage: f64,
    ) -> Self {
        PositionTerms {
            size: qty.abs() * contract.contract_size,
            signed_size: qty * contract.contract_size,
            entry_term: match contract.kind {
                ContractKind::Linear => entry_price,
                ContractKind::Inverse => 1.0 / entry_price,
            },
            chosen_leverage,
        }
    }

    /// [`margins`] at `mark` (of this position's `contract`).
    #[inline]
    pub fn margins(&self, contract: &PerpetualParams, mark: &MarkTerms) -> Margins {
        let (notional, upnl) = match contract.kind {
            ContractKind::Linear => (
                self.size * mark.mark,
                self.signed_size * (mark.mark - self.entry_term),
            ),
            ContractKind::Inverse => (
                self.size / mark.mark,
                self.signed_size * (self.entry_term - mark.reciprocal),
            ),
        };
        let tier_index = contract.tiers.index(notional);
        let tier = &contract.tiers.tiers()[tier_index];
        // NaN compares false, so "no choice" keeps the bracket's maximum.
        let leverage = if self.chosen_leverage < tier.max_leverage {
            self.chosen_leverage
        } else {
            tier.max_leverage
        };
        Margins {
            notional,
            upnl,
            initial_margin: notional / leverage,
            maintenance_margin: notional * tier.mmr - tier.maintenance_amount,
            tier: tier_index,
        }
    }
}

/// Notional in the settle currency at `price`.
#[inline]
pub fn notional(kind: ContractKind, contract_size: f64, qty: f64, price: f64) -> f64 {
    match kind {
        ContractKind::Linear => qty.abs() * contract_size * price,
        ContractKind::Inverse => qty.abs() * contract_size / price,
    }
}

/// Unrealised PnL in the settle currency.
#[inline]
pub fn unrealized_pnl(
    kind: ContractKind,
    contract_size: f64,
    qty: f64,
    entry_price: f64,
    mark_price: f64,
) -> f64 {
    match kind {
        ContractKind::Linear => qty * contract_size * (mark_price - entry_price),
        ContractKind::Inverse => qty * contract_size * (1.0 / entry_price - 1.0 / mark_price),
    }
}

/// A live position as the price formulas see it: `a = |q|·cs`, its side (±1), and its
/// value at the entry price (settle currency). Built once per position, it serves the
/// liquidation price, the bankruptcy price and the ADL score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exposure {
    kind: ContractKind,
    a: f64,
    side: f64,
    entry_value: f64,
}

impl Exposure {
    /// `None` unless `|q|·cs` is positive and finite and the entry price positive (no
    /// price then moves the position).
    #[inline]
    pub fn new(kind: ContractKind, contract_size: f64, qty: f64, entry_price: f64) -> Option<Self> {
        let a = qty.abs() * contract_size;
        if !(a > 0.0 && a.is_finite() && entry_price > 0.0) {
            return None;
        }
        let entry_value = match kind {
            ContractKind::Linear => a * entry_price,
            ContractKind::Inverse => a / entry_price,
        };
        Some(Exposure {
            kind,
            a,
            side: qty.signum(),
            entry_value,
        })
    }

    /// Value at the entry price, in the settle currency.
    #[inline]
    pub fn entry_value(&self) -> f64 {
        self.entry_value
    }

    /// `(b0, b1)` of `balance(x) = b0 + b1·x` for a position holding `balance` of its own
    /// margin (settle currency) before its PnL. (`side·entry_value` is `side·a·EP` or
    /// `side·a/EP` exactly: multiplying by ±1 does not round.)
    #[inline]
    fn balance_line(&self, balance: f64) -> (f64, f64) {
        let Exposure {
            kind,
            a,
            side,
            entry_value,
        } = *self;
        match kind {
            ContractKind::Linear => (balance - side * entry_value, side * a),
            ContractKind::Inverse => (balance + side * entry_value, -side * a),
        }
    }

    /// The mark price at which the margin balance equals the maintenance margin, with the
    /// maintenance margin evaluated at that price (tier search), or `None` when no positive
    /// price does it.
    ///
    /// `balance` is what backs the position in its settle currency, before its own PnL:
    /// the isolated margin, or for cross `WB − TMM + UPNL` of the other positions.
    ///
    /// `balance(x) − MM(a·x)` is strictly monotone in `x` (its slope `b1 − a·mmr` keeps the
    /// sign of `b1` because `mmr < 1`), so there is at most one root; it lies in the
    /// bracket at whose upper floor the function has reached zero.
    ///
    /// Always in line: left to itself the compiler called it from the revaluation's row
    /// loop, and the call cost that loop 4–9% (both builds timed in one process).
    #[inline(always)]
    pub fn liquidation_price(&self, balance: f64, tiers: &TierTable) -> Option<f64> {
        if !balance.is_finite() {
            return None;
        }
        let a = self.a;
        let (b0, b1) = self.balance_line(balance);
        // The gap balance − MM moves with the sign of b1 (±a); multiplying a gap by that
        // sign (exact) says whether it has reached zero without a branch on the direction.
        let direction = b1.signum();
        // At x = 0 the notional is 0 and MM is minus the first bracket's maintenance
        // amount (0 for a real table, which starts at floor 0): the gap is b0 + that
        // amount. A root at x > 0 needs the gap to start on the other side of zero from
        // where the slope takes it.
        let brackets = tiers.tiers();
        if (b0 + brackets[0].maintenance_amount) * direction >= 0.0 {
            return None;
        }
        // The root lies in the first bracket at whose upper floor the gap has reached
        // zero. At a notional N = a·x the gap is b0 + (b1/a)·N − MM(N), and b1/a is
        // exactly ±1, so a floor is tested without dividing by a.
        let slope = b1 / a;
        let reached = |tier: &MarginTier, next_floor: f64| {
            let gap = b0 + slope * next_floor - (next_floor * tier.mmr - tier.maintenance_amount);
            gap * direction >= 0.0
        };
        let k = brackets
            .windows(2)
            .position(|pair| reached(&pair[0], pair[1].floor))
            .unwrap_or(brackets.len() - 1);
        let tier = &brackets[k];
        let x = (b0 + tier.maintenance_amount) / (a * tier.mmr - b1);
        // Rounding can put the root a hair outside its bracket; it is then clamped to the
        // floor, where both brackets agree. The test is on the notional, so the floors are
        // divided by `a` only when it fires.
        let notional = a * x;
        let x = if notional < tier.floor {
            tier.floor / a
        } else {
            match brackets.get(k + 1) {
                Some(next) if notional > next.floor => next.floor / a,
                _ => x,
            }
        };
        (x > 0.0 && x.is_finite()).then(|| match self.kind {
            ContractKind::Linear => x,
            ContractKind::Inverse => 1.0 / x,
        })
    }

    /// The mark price at which the margin balance reaches zero, or `None` when no positive
    /// price does it.
    #[inline]
    pub fn bankruptcy_price(&self, balance: f64) -> Option<f64> {
        if !balance.is_finite() {
            return None;
        }
        let (b0, b1) = self.balance_line(balance);
        // x = −b0/b1, and an inverse contract's price is 1/x = −b1/b0: one division
        // either way.
        let price = match self.kind {
            ContractKind::Linear => -b0 / b1,
            ContractKind::Inverse => -b1 / b0,
        };
        (price > 0.0 && price.is_finite()).then_some(price)
    }
}

/// [`Exposure::liquidation_price`] of `qty` contracts entered at `entry_price`.
pub fn liquidation_price(
    kind: ContractKind,
    contract_size: f64,
    qty: f64,
    entry_price: f64,
    balance: f64,
    tiers: &TierTable,
) -> Option<f64> {
    Exposure::new(kind, contract_size, qty, entry_price)?.liquidation_price(balance, tiers)
}

/// [`Exposure::bankruptcy_price`] of `qty` contracts entered at `entry_price`.
pub fn bankruptcy_price(
    kind: ContractKind,
    contract_size: f64,
    qty: f64,
    entry_price: f64,
    balance: f64,
) -> Option<f64> {
    Exposure::new(kind, contract_size, qty, entry_price)?.bankruptcy_price(balance)
}

/// Auto-deleveraging score: `pnl_pct·eff_lev` for a profitable position, `pnl_pct/eff_lev`
/// otherwise, with `pnl_pct = uPnL / entry value` and `eff_lev = notional / margin balance`.
/// `NaN` when there is no position or its margin balance is not positive (such a position
/// is itself in the liquidation queue, not a deleveraging counterparty).
#[inline]
pub fn adl_score(upnl: f64, entry_value: f64, notional: f64, margin_balance: f64) -> f64 {
    if !(entry_value > 0.0 && notional > 0.0 && margin_balance > 0.0) {
        return f64::NAN;
    }
    // pnl_pct·eff_lev = uPnL·notional / (entry value·balance) and
    // pnl_pct/eff_lev = uPnL·balance / (entry value·notional): one division, and the
    // profit test picks operands instead of a formula (no branch to mispredict).
    let profitable = upnl > 0.0;
    let (over, under) = if profitable {
        (notional, margin_balance)
    } else {
        (margin_balance, notional)
    };
    upnl * over / (entry_value * under)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    #[test]
    fn linear_long_liquidates_where_balance_meets_maintenance() {
        // 1 BTC long at 100 with 10 of margin, flat 1% rate:
        // 10 + (L − 100) = 0.01·L  →  L = 90 / 0.99.
        let table = TierTable::fixed(0.01, 0.0).unwrap();
        let price = liquidation_price(ContractKind::Linear, 1.0, 1.0, 100.0, 10.0, &table).unwrap();
        assert_close(price, 90.0 / 0.99);
    }

    #[test]
    fn linear_short_liquidates_above_entry() {
        // 10 − (L − 100) = 0.01·L  →  L = 110 / 1.01.
        let table = TierTable::fixed(0.01, 0.0).unwrap();
        let price =
            liquidation_price(ContractKind::Linear, 1.0, -1.0, 100.0, 10.0, &table).unwrap();
        assert_close(price, 110.0 / 1.01);
    }

    #[test]
    fn inverse_matches_the_closed_form() {
        // L = a(mmr + s) / (WB + cum + s·a/EP) with a = 100 contracts × 1 USD.
        let table = TierTable::fixed(0.005, 0.0).unwrap();
        let price =
            liquidation_price(ContractKind::Inverse, 1.0, 100.0, 20_000.0, 0.001, &table).unwrap();
        assert_close(price, 100.0 * 1.005 / (0.001 + 100.0 / 20_000.0));
    }

    #[test]
    fn tier_search_evaluates_maintenance_at_the_liquidation_price() {
        // A long whose notional at entry is in bracket 2 but at L is back in bracket 1.
        let table = TierTable::new(&[(0.0, 0.004, 125.0), (50_000.0, 0.005, 100.0)]).unwrap();
        let price =
            liquidation_price(ContractKind::Linear, 1.0, 1.0, 60_000.0, 30_000.0, &table).unwrap();
        let notional_at_l = price;
        assert!(notional_at_l < 50_000.0);
        let balance = 30_000.0 + (price - 60_000.0);
        assert_close(balance, table.maintenance_margin(notional_at_l));
    }

    #[test]
    fn fixed_maintenance_amount_counts_at_zero_price() {
        // Short 1 at 60 000 with 1 000 − 61 000 = −60 000 of balance, MM = 0.005·L − 50:
        // −60 000 − (L − 60 000) = 0.005·L − 50  →  L = 50 / 1.005.
        let table = TierTable::fixed(0.005, 50.0).unwrap();
        let price = liquidation_price(ContractKind::Linear, 1.0, -1.0, 60_000.0, -60_000.0, &table)
            .unwrap();
        assert_close(price, 50.0 / 1.005);
    }

    #[test]
    fn fully_funded_long_has_no_liquidation_price() {
        let table = TierTable::fixed(0.01, 0.0).unwrap();
        assert_eq!(
            liquidation_price(ContractKind::Linear, 1.0, 1.0, 100.0, 100.0, &table),
            None
        );
        assert_eq!(
            bankruptcy_price(ContractKind::Linear, 1.0, 1.0, 100.0, 100.0),
            None
        );
    }

    #[test]
    fn bankruptcy_price_zeroes_the_balance() {
        assert_close(
            bankruptcy_price(ContractKind::Linear, 0.001, 1000.0, 100.0, 10.0).unwrap(),
            90.0,
        );
        assert_close(
            bankruptcy_price(ContractKind::Linear, 1.0, -2.0, 100.0, 10.0).unwrap(),
            105.0,
        );
        // Inverse long: 1/B = 1/EP + WB/(q·cs).
        assert_close(
            bankruptcy_price(ContractKind::Inverse, 100.0, 10.0, 20_000.0, 0.01).unwrap(),
            1.0 / (1.0 / 20_000.0 + 0.01 / 1_000.0),
        );
        // An inverse short can never be bankrupted by a rising price when fully funded.
        assert_eq!(
            bankruptcy_price(ContractKind::Inverse, 100.0, -10.0, 20_000.0, 1.0),
            None
        );
    }

    #[test]
    fn adl_score_rewards_profit_times_leverage() {
        assert_close(adl_score(10.0, 100.0, 110.0, 11.0), 0.1 * 10.0);
        assert_close(adl_score(-10.0, 100.0, 90.0, 9.0), -0.1 / 10.0);
        assert!(adl_score(10.0, 100.0, 110.0, 0.0).is_nan());
    }

    #[test]
    fn prepared_terms_give_the_row_formulas_bit_for_bit() {
        // Stress prices a position's terms at many marks and must agree with a
        // revaluation, which reads the formulas: every figure is compared by its bits.
        let tiers = TierTable::new(&[(0.0, 0.005, 50.0), (250_000.0, 0.01, 25.0)]).unwrap();
        for kind in [ContractKind::Linear, ContractKind::Inverse] {
            for contract_size in [1.0, 0.001, 100.0, 0.1] {
                let contract = PerpetualParams::new(kind, contract_size, 0, tiers.clone()).unwrap();
                for qty in [1.0, -3.0, 0.007, -1234.5678, 1e-9, 7e6] {
                    for entry in [96_400.0, 0.3, 3_381.5, 1.0 / 3.0] {
                        for mark in [96_431.7, 0.29, 3_000.0, 2.0 / 3.0] {
                            for leverage in [f64::NAN, 10.0, 100.0] {
                                let prepared = PositionTerms::new(&contract, qty, entry, leverage)
                                    .margins(&contract, &MarkTerms::new(kind, mark));
                                let expected_notional = notional(kind, contract_size, qty, mark);
                                let expected_upnl =
                                    unrealized_pnl(kind, contract_size, qty, entry, mark);
                                let tier = tiers.tier(expected_notional);
                                let allowed = if leverage < tier.max_leverage {
                                    leverage
                                } else {
                                    tier.max_leverage
                                };
                                for (have, want) in [
                                    (prepared.notional, expected_notional),
                                    (prepared.upnl, expected_upnl),
                                    (prepared.initial_margin, expected_notional / allowed),
                                    (
                                        prepared.maintenance_margin,
                                        tiers.maintenance_margin(expected_notional),
                                    ),
                                ] {
                                    assert_eq!(have.to_bits(), want.to_bits());
                                }
                                assert_eq!(prepared.tier, tiers.index(expected_notional));
                            }
                        }
                    }
                }
            }
        }
    }
}
