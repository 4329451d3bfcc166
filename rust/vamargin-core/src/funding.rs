//! Funding: the rate from premium samples, and settlement in integer minor units with the
//! rounding dust and the house's share posted, so every instrument's postings sum to 0.
//!
//! Money conventions (see [`crate::money`]): each payment is credited to its account and
//! floored (a payer pays the ceiling, a receiver gets the floor). Quantities are read at
//! [`QTY_DECIMALS`] places, the same reading for every payment and for the open-interest
//! total, so the totals below are exact:
//!
//! - `house` is what the platform pays because long and short open interest differ: the
//!   funding of a position opposite to the net open interest, rounded against the house;
//! - `dust` is what rounding left over: `−(Σ payments + house)`, never negative.

use crate::book::Positions;
use crate::error::{Error, Result};
use crate::money::{Coefficient, ExactAmount, ExactSum};
use crate::parallel::{column_bundle, for_each_chunk};
use crate::params::EngineParams;
use crate::perp::ContractKind;

/// Decimal places a quantity is read with when it moves money (1e-9 contract).
pub const QTY_DECIMALS: i32 = 9;
/// Decimal places of a funding index: quote per base (linear), coin per quote (inverse).
pub const fn index_decimals(kind: ContractKind) -> i32 {
    match kind {
        ContractKind::Linear => 12,
        ContractKind::Inverse => 18,
    }
}

const CHUNK: usize = 16 * 1024;

/// Premium of one sample: how far the impact bid is above, or the impact ask below, the
/// index, as a fraction of the index.
pub fn premium(impact_bid: f64, impact_ask: f64, index_price: f64) -> f64 {
    ((impact_bid - index_price).max(0.0) - (index_price - impact_ask).max(0.0)) / index_price
}

/// Funding rate for one interval: `p̄ + clamp(r − p̄, −clamp, +clamp)`, then within
/// `±cap` (`cap = ∞` for none); `p̄` is the mean of the interval's premium samples.
pub fn funding_rate(premiums: &[f64], interest_rate: f64, clamp: f64, cap: f64) -> f64 {
    let mean = if premiums.is_empty() {
        0.0
    } else {
        premiums.iter().sum::<f64>() / premiums.len() as f64
    };
    let rate = mean + (interest_rate - mean).clamp(-clamp, clamp);
    rate.clamp(-cap, cap)
}

/// What each instrument's funding is settled against.
#[derive(Debug, Clone, Copy)]
pub enum FundingBasis<'a> {
    /// One interval at `rates[i]` and mark `marks[i]` per instrument.
    Mark { rates: &'a [f64], marks: &'a [f64] },
    /// Cumulative index: each position pays the index move since its last settlement.
    Index {
        index_now: &'a [f64],
        position_index: &'a [f64],
    },
}

/// The outcome of one settlement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FundingSettlement {
    /// Per position row: minor units of its settle asset credited (negative = paid).
    pub payments: Vec<i64>,
    /// Per instrument: rounding dust posted to the platform's funding account (≥ 0).
    pub dust: Vec<i64>,
    /// Per instrument: the platform's posting for the open-interest imbalance.
    pub house: Vec<i64>,
    /// Per instrument: Σ of positive and of negative payments.
    pub received: Vec<i64>,
    pub paid: Vec<i64>,
    /// Per instrument: the exact net open interest the house is computed from — Σ
    /// quantities in 1e-9 contracts (one interval), or Σ quantity units × index move in
    /// index units (index basis). Sums over parts of a book add up to the whole book's,
    /// so a partitioned settlement gets its house from [`house_posting`].
    pub open_interest: Vec<ExactSum>,
}

/// The house's posting for an instrument whose accounts hold `open_interest` (as in
/// [`FundingSettlement::open_interest`]): the exact funding of the opposite position,
/// floored against the house.
pub fn house_posting(
    params: &EngineParams,
    basis: &FundingBasis<'_>,
    settle_decimals: &[u32],
    instrument: usize,
    open_interest: ExactSum,
) -> Result<i64> {
    let contract = params
        .perpetuals
        .get(instrument)
        .ok_or(Error::IdOutOfRange {
            column: "instrument",
            row: 0,
            id: instrument as u64,
            len: params.perpetuals.len(),
        })?;
    let settle = contract.settle_asset as usize;
    let settle_decimals = *settle_decimals.get(settle).ok_or(Error::LengthMismatch {
        column: "settle_decimals",
        expected: params.assets.len(),
        actual: settle_decimals.len(),
    })?;
    let details = Instrument {
        kind: contract.kind,
        contract_size: contract.contract_size,
        settle_decimals,
    };
    let net = ExactAmount::from_sum(open_interest).times_integer(-1);
    let index_move = match basis {
        FundingBasis::Mark { .. } => None,
        FundingBasis::Index { .. } => Some(1),
    };
    exact_payment(&details, basis, instrument, net, index_move).floor()
}

/// A quantity as an integer count of 1e-9 contracts: its decimal as written, rounded
/// half-even to 9 places if it has more.
#[inline]
fn qty_units(qty: f64) -> Option<i64> {
    // Below 2^53 / 1e9 contracts, q·1e9 is within half a unit of the decimal's value, so
    // rounding it is exact; beyond, read the decimal itself.
    if qty.abs() < 9.0e6 {
        return Some(round_half_away(qty * 1e9));
    }
    index_units(qty, QTY_DECIMALS).and_then(|units| i64::try_from(units).ok())
}

/// `x.round()` (half away from zero) for `|x| < 2^53`, without a call to libm: the
/// conversion truncates, and the fraction it drops is exact (from 2^52 on every `f64` is
/// an integer and the fraction is 0).
#[inline]
fn round_half_away(x: f64) -> i64 {
    let truncated = x as i64;
    let fraction = x - truncated as f64;
    truncated + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5)
}

/// An index value as an integer at the instrument's index scale: its shortest decimal,
/// exactly when it has no more places than the scale, else rounded half-even to it.
fn index_units(value: f64, decimals: i32) -> Option<i128> {
    let (negative, mantissa, exponent) = crate::money::to_decimal(value)?;
    let shift = exponent + decimals;
    let magnitude = if shift >= 0 {
        i128::from(mantissa).checked_mul(10i128.checked_pow(shift as u32)?)?
    } else {
        let divisor = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
        let (q, r) = (
            i128::from(mantissa) / divisor,
            i128::from(mantissa) % divisor,
        );
        let twice = r.saturating_mul(2);
        q + i128::from(twice > divisor || (twice == divisor && q % 2 == 1))
    };
    Some(if negative { -magnitude } else { magnitude })
}

column_bundle!(
    /// Settlement output.
    Payments { payment: i64 }
);

struct Instrument {
    kind: ContractKind,
    contract_size: f64,
    settle_decimals: u32,
}

/// The exact amount (in minor units, credited to the holder) of `qty_units` 1e-9
/// contracts, or of the net open interest when `qty_units` is a sum.
fn exact_payment(
    instrument: &Instrument,
    basis: &FundingBasis<'_>,
    id: usize,
    qty: ExactAmount,
    index_move: Option<i128>,
) -> ExactAmount {
    let base = qty
        .times_integer(-1)
        .times(instrument.contract_size)
        .times_pow10_signed(instrument.settle_decimals as i32 - QTY_DECIMALS);
    match (basis, instrument.kind) {
        (FundingBasis::Mark { rates, marks }, ContractKind::Linear) => {
            base.times(marks[id]).times(rates[id])
        }
        (FundingBasis::Mark { rates, marks }, ContractKind::Inverse) => {
            base.times(rates[id]).divided_by(marks[id])
        }
        (FundingBasis::Index { .. }, kind) => base
            .times_i128(index_move.unwrap_or(0))
            .times_pow10_signed(-index_decimals(kind)),
    }
}

/// Settles one funding interval (or the index move) for every position.
///
/// `settle_decimals[asset]` gives each asset's minor unit (`10^-d`). Errors: an amount
/// that overflows `i64`, or an index or quantity that cannot be read as an integer.
pub fn settle_funding(
    params: &EngineParams,
    positions: &Positions<'_>,
    basis: FundingBasis<'_>,
    settle_decimals: &[u32],
) -> Result<FundingSettlement> {
    let n_instruments = params.perpetuals.len();
    let instruments: Vec<Instrument> = params
        .perpetuals
        .iter()
        .map(|p| Instrument {
            kind: p.kind,
            contract_size: p.contract_size,
            settle_decimals: settle_decimals[p.settle_asset as usize],
        })
        .collect();
    if let FundingBasis::Index { position_index, .. } = basis {
        if position_index.len() != positions.qty.len() {
            return Err(Error::LengthMismatch {
                column: "positions.funding_index",
                expected: positions.qty.len(),
                actual: position_index.len(),
            });
        }
    }
    let index_move = |row: usize, id: usize| -> Result<i128> {
        let FundingBasis::Index {
            index_now,
            position_index,
        } = basis
        else {
            return Ok(0);
        };
        let decimals = index_decimals(instruments[id].kind);
        let unreadable = Error::Overflow {
            what: "funding index at its scale",
        };
        let now = index_units(index_now[id], decimals).ok_or(unreadable.clone())?;
        let then = index_units(position_index[row], decimals).ok_or(unreadable)?;
        Ok(now - then)
    };

    // Each instrument's payment per 1e-9 contract (per unit of index move for the index
    // basis), as an exact coefficient when its digits fit the i128 fast path.
    let coefficients: Vec<Option<Coefficient>> = instruments
        .iter()
        .enumerate()
        .map(|(id, instrument)| {
            let shift = instrument.settle_decimals as i32 - QTY_DECIMALS;
            match (basis, instrument.kind) {
                (FundingBasis::Mark { rates, marks }, ContractKind::Linear) => Coefficient::new(
                    true,
                    &[instrument.contract_size, marks[id], rates[id]],
                    None,
                    shift,
                ),
                (FundingBasis::Mark { rates, marks }, ContractKind::Inverse) => Coefficient::new(
                    true,
                    &[instrument.contract_size, rates[id]],
                    Some(marks[id]),
                    shift,
                ),
                (FundingBasis::Index { .. }, kind) => Coefficient::new(
                    true,
                    &[instrument.contract_size],
                    None,
                    shift - index_decimals(kind),
                ),
            }
        })
        .collect();
    // Per-instrument exact totals: Σ payments, and the open interest (or Σ q·index move),
    // summed per chunk of rows as the payments are made. Every total is an exact integer
    // sum, so the order the chunks are merged in does not matter.
    #[derive(Clone, Default)]
    struct Totals {
        rows: usize,
        received: i128,
        paid: i128,
        open_interest: ExactSum,
    }
    let mut payments = vec![0i64; positions.qty.len()];
    let first_error: std::sync::Mutex<Option<(usize, Error)>> = std::sync::Mutex::new(None);
    let chunk_totals: std::sync::Mutex<Vec<Vec<Totals>>> = std::sync::Mutex::new(Vec::new());
    for_each_chunk(
        Payments {
            payment: &mut payments,
        },
        CHUNK,
        &|first, chunk: Payments<'_>| {
            let mut totals = vec![Totals::default(); n_instruments];
            for (i, slot) in chunk.payment.iter_mut().enumerate() {
                let row = first + i;
                let qty = positions.qty[row];
                if qty == 0.0 {
                    continue;
                }
                let id = positions.instrument[row] as usize;
                let instrument = &instruments[id];
                let outcome = (|| -> Result<(i64, i64, i128)> {
                    let units = qty_units(qty).ok_or(Error::Overflow { what: "quantity" })?;
                    let index_move = index_move(row, id)?;
                    let fast = coefficients[id].and_then(|k| match basis {
                        FundingBasis::Mark { .. } => k.floor_times(i128::from(units)),
                        FundingBasis::Index { .. } => i128::from(units)
                            .checked_mul(index_move)
                            .and_then(|n| k.floor_times(n)),
                    });
                    let amount = match fast {
                        Some(amount) => amount,
                        None => exact_payment(
                            instrument,
                            &basis,
                            id,
                            ExactAmount::one().times_integer(units),
                            Some(index_move),
                        )
                        .floor()?,
                    };
                    Ok((amount, units, index_move))
                })();
                match outcome {
                    Ok((amount, units, index_move)) => {
                        *slot = amount;
                        let entry = &mut totals[id];
                        entry.rows += 1;
                        if amount >= 0 {
                            entry.received += i128::from(amount);
                        } else {
                            entry.paid += i128::from(amount);
                        }
                        let weight = match basis {
                            FundingBasis::Mark { .. } => 1,
                            FundingBasis::Index { .. } => index_move,
                        };
                        entry
                            .open_interest
                            .add(i128::from(units).saturating_mul(weight));
                    }
                    Err(error) => {
                        let mut guard = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        if guard.as_ref().is_none_or(|(r, _)| row < *r) {
                            *guard = Some((row, error));
                        }
                        return;
                    }
                }
            }
            chunk_totals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(totals);
        },
    );
    if let Some((_, error)) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(error);
    }
    let totals = chunk_totals
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .fold(vec![Totals::default(); n_instruments], |mut sum, chunk| {
            for (s, c) in sum.iter_mut().zip(chunk) {
                s.rows += c.rows;
                s.received += c.received;
                s.paid += c.paid;
                s.open_interest = s.open_interest.merge(c.open_interest);
            }
            sum
        });

    let overflow = |what| Error::Overflow { what };
    let mut settlement = FundingSettlement {
        payments,
        ..FundingSettlement::default()
    };
    for (id, total) in totals.into_iter().enumerate() {
        settlement.open_interest.push(total.open_interest);
        if total.rows == 0 {
            // No open position: nothing moves (and the instrument need not be priced).
            for column in [
                &mut settlement.house,
                &mut settlement.dust,
                &mut settlement.received,
                &mut settlement.paid,
            ] {
                column.push(0);
            }
            continue;
        }
        // The house holds the opposite of the net open interest: its exact payment is the
        // negative of the accounts' exact total, floored against the house.
        let house = house_posting(params, &basis, settle_decimals, id, total.open_interest)?;
        let sum = total.received + total.paid;
        let dust = -(sum + i128::from(house));
        // Each payment was floored from its exact value, and so was the house's: the dust
        // is the sum of the fractions given up, never negative.
        if dust < 0 {
            return Err(overflow("funding dust (postings would not balance)"));
        }
        settlement.house.push(house);
        settlement
            .dust
            .push(i64::try_from(dust).map_err(|_| overflow("funding dust"))?);
        settlement
            .received
            .push(i64::try_from(total.received).map_err(|_| overflow("funding received"))?);
        settlement
            .paid
            .push(i64::try_from(total.paid).map_err(|_| overflow("funding paid"))?);
    }
    Ok(settlement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{AssetParams, CallTarget, Haircuts, PerpetualParams};
    use crate::tiers::{SizeTiers, TierTable};

    fn params() -> EngineParams {
        let cash = AssetParams::new(
            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
            true,
            SizeTiers::default(),
        );
        let tiers = TierTable::fixed(0.005, 0.0).unwrap();
        EngineParams::new(
            vec![cash.clone(), cash],
            vec![
                PerpetualParams::new(ContractKind::Linear, 0.001, 0, tiers.clone()).unwrap(),
                PerpetualParams::new(ContractKind::Inverse, 100.0, 1, tiers).unwrap(),
            ],
            CallTarget::Initial,
        )
        .unwrap()
    }

    fn positions<'a>(instrument: &'a [u32], qty: &'a [f64]) -> Positions<'a> {
        Positions {
            account: &[],
            instrument,
            qty,
            entry_price: &[],
            isolated_margin: None,
            leverage: None,
        }
    }

    #[test]
    fn rounding_without_libm_matches_f64_round() {
        let edges = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4_503_599_627_370_495.5,
            -4_503_599_627_370_495.5,
            8_999_999_999_999_999.0,
            123_456_789.000_000_1,
            -987_654_321.499_999,
        ];
        for x in edges {
            assert_eq!(round_half_away(x), x.round() as i64, "{x}");
        }
        let mut x = -3.0e6_f64;
        while x < 3.0e6 {
            let scaled = x * 1e9;
            assert_eq!(round_half_away(scaled), scaled.round() as i64, "{scaled}");
            x += 1_234.567_890_123;
        }
    }

    #[test]
    fn rate_clamps_interest_minus_premium_then_caps() {
        // Binance-style: r = 0.01%, clamp ±0.05%.
        assert!((funding_rate(&[0.0002], 0.0001, 0.0005, 0.03) - 0.0001).abs() < 1e-18);
        assert!((funding_rate(&[0.0010], 0.0001, 0.0005, 0.03) - 0.0005).abs() < 1e-18);
        assert!((funding_rate(&[-0.002], 0.0001, 0.0005, 0.03) + 0.0015).abs() < 1e-18);
        assert_eq!(funding_rate(&[0.5], 0.0001, 0.0005, 0.03), 0.03);
    }

    #[test]
    fn premium_uses_the_side_that_crossed_the_index() {
        assert!((premium(101.0, 102.0, 100.0) - 0.01).abs() < 1e-15);
        assert!((premium(98.0, 99.0, 100.0) + 0.01).abs() < 1e-15);
        assert_eq!(premium(99.0, 101.0, 100.0), 0.0);
    }

    #[test]
    fn longs_pay_shorts_and_postings_balance() {
        // BTC linear, 0.001 BTC contracts, mark 96 450.5, rate 0.01%: one contract moves
        // 0.00964505 USDT = 9 645.05 µUSDT. Long 3, short 2: longs pay 28 936 (ceiling of
        // 28 935.15), the short receives 19 290 (floor of 19 290.1); the house holds the
        // net 1 long's opposite and receives floor(9 645.05) = 9 645; dust 1.
        let params = params();
        let instrument = [0, 0];
        let qty = [3.0, -2.0];
        let settlement = settle_funding(
            &params,
            &positions(&instrument, &qty),
            FundingBasis::Mark {
                rates: &[0.0001, 0.0],
                marks: &[96_450.5, 1.0],
            },
            &[6, 8],
        )
        .unwrap();
        assert_eq!(settlement.payments, vec![-28_936, 19_290]);
        assert_eq!(settlement.house, vec![9_645, 0]);
        assert_eq!(settlement.dust, vec![1, 0]);
    }

    #[test]
    fn house_of_summed_parts_is_the_whole_books_house() {
        // The book of `longs_pay_shorts_and_postings_balance` in two parts: long 3 in
        // one, short 2 in the other. Open interest 3e9 and −2e9 units add to 1e9 (one
        // contract long), whose opposite the house holds: it receives 9 645.
        let params = params();
        let basis = FundingBasis::Mark {
            rates: &[0.0001, 0.0001],
            marks: &[96_450.5, 96_450.5],
        };
        let decimals = [6, 8];
        let part = |qty: &[f64]| {
            let instrument = vec![0u32; qty.len()];
            settle_funding(&params, &positions(&instrument, qty), basis, &decimals)
                .unwrap()
                .open_interest[0]
        };
        let (a, b) = (part(&[3.0]), part(&[-2.0]));
        assert_eq!(a.to_decimal_string().unwrap(), "3000000000");
        let total = a.merge(b);
        assert_eq!(total.to_decimal_string().unwrap(), "1000000000");
        assert_eq!(
            house_posting(&params, &basis, &decimals, 0, total).unwrap(),
            9_645
        );
        assert!(house_posting(&params, &basis, &decimals, 2, total).is_err());
    }

    #[test]
    fn inverse_funding_is_paid_in_coin() {
        // 10 contracts × 100 USD × 0.0001 / 50 000 = 2e-6 BTC = 200 sat.
        let params = params();
        let settlement = settle_funding(
            &params,
            &positions(&[1, 1], &[10.0, -10.0]),
            FundingBasis::Mark {
                rates: &[0.0, 0.0001],
                marks: &[1.0, 50_000.0],
            },
            &[6, 8],
        )
        .unwrap();
        assert_eq!(settlement.payments, vec![-200, 200]);
        assert_eq!((settlement.house[1], settlement.dust[1]), (0, 0));
    }

    #[test]
    fn index_settlement_pays_the_move_since_the_last_settlement() {
        // Index moved by 9.64505 (= 96 450.5 × 0.0001) since position 0 settled, and by
        // twice that since position 1: the long pays 0.00964505 USDT per contract.
        let params = params();
        let settlement = settle_funding(
            &params,
            &positions(&[0, 0], &[1.0, -1.0]),
            FundingBasis::Index {
                index_now: &[19.2901, 0.0],
                position_index: &[9.64505, 0.0],
            },
            &[6, 8],
        )
        .unwrap();
        assert_eq!(settlement.payments, vec![-9_646, 19_290]);
        let total: i64 =
            settlement.payments.iter().sum::<i64>() + settlement.house[0] + settlement.dust[0];
        assert_eq!(total, 0);
        assert!(settlement.dust[0] >= 0);
    }
}
