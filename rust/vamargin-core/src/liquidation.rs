//! Liquidation (SPEC §8): the queue, a close plan per queued account or isolated
//! position, and the auto-deleveraging ranking.
//!
//! Nothing here reads the affiliate flag: the queue is ordered by health, deficit and
//! account id only, and plans depend only on positions, holdings and configuration.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::book::Book;
use crate::params::EngineParams;
use crate::tiers::TierTable;
use crate::valuation::{Market, Revaluation, Status};

/// Base units to close to cure `shortage` when closing notional `x` frees
/// `margin_rate·x` of requirement and costs `fee·x`: `shortage / (margin_rate − fee) /
/// price`; infinite when closing cannot cure (`margin_rate ≤ fee`).
pub fn close_size(shortage: f64, price: f64, margin_rate: f64, fee: f64) -> f64 {
    if shortage <= 0.0 {
        return 0.0;
    }
    let net = margin_rate - fee;
    if net <= 0.0 {
        f64::INFINITY
    } else {
        shortage / net / price
    }
}

/// One queued item: a whole account (cross book) or one isolated position.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub account: u32,
    /// The isolated position, for an isolated entry.
    pub position_row: Option<u32>,
    /// Equity / liquidation requirement (isolated: margin balance / MM); −∞ when there is
    /// no requirement left to divide by.
    pub health: f64,
    /// Liquidation requirement − equity, reporting currency.
    pub deficit: f64,
    /// Equity (margin balance) below zero.
    pub bankrupt: bool,
    /// What the insurance fund covers when the position is closed at its bankruptcy
    /// price: the equity shortfall below zero, reporting currency.
    pub insurance_draw: f64,
    /// Value closed or sold by the plan, and its fees (reporting currency).
    pub close_value: f64,
    pub fees: f64,
    /// The plan closes everything: the target cannot be reached by partial closing.
    pub full_close: bool,
    /// This entry's steps are `steps[first_step .. first_step + n_steps]`.
    pub first_step: usize,
    pub n_steps: usize,
}

/// What a plan step closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StepKind {
    Position = 0,
    Holding = 1,
}

/// One reduction of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    pub kind: StepKind,
    /// Row in the positions or holdings table.
    pub row: u32,
    /// Share of the row closed, in (0, 1].
    pub fraction: f64,
    /// The reducing trade: contracts (positions) or units (holdings), opposite in sign to
    /// the row.
    pub quantity: f64,
    /// Value closed (notional or market value) and fee, reporting currency.
    pub value: f64,
    pub fee: f64,
}

/// Entries in queue order, and their plans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiquidationQueue {
    pub entries: Vec<QueueEntry>,
    pub steps: Vec<PlanStep>,
}

struct Candidate {
    kind: StepKind,
    row: u32,
    /// Requirement freed per unit of value at the margin (mmr or haircut).
    rate: f64,
    fee: f64,
    /// Value available (reporting currency).
    value: f64,
    /// Settle-currency price (positions) to convert shortages.
    settle_price: f64,
    /// Position notional in settle currency, for the exact tier walk.
    notional: f64,
    quantity: f64,
}

/// Settle-currency value to close so that `shortage` (settle currency) is cured, walking
/// down the tiers so that MM is evaluated at the reduced size, or `None` when even a full
/// close does not cure it. `buffer` scales the requirement freed.
fn position_close_value(
    notional: f64,
    tiers: &TierTable,
    fee: f64,
    buffer: f64,
    shortage: f64,
) -> Option<f64> {
    let brackets = tiers.tiers();
    let mut size = notional;
    let mut freed = 0.0;
    for k in (0..=tiers.index(notional)).rev() {
        let floor = brackets[k].floor;
        let segment = size - floor;
        let gain = (1.0 + buffer) * brackets[k].mmr - fee;
        if gain > 0.0 && freed + gain * segment >= shortage {
            return Some(notional - size + (shortage - freed) / gain);
        }
        freed += gain * segment;
        size = floor;
    }
    None
}

/// Freed requirement (settle currency) of a full close.
fn full_close_gain(notional: f64, tiers: &TierTable, fee: f64, buffer: f64) -> f64 {
    (1.0 + buffer) * tiers.maintenance_margin(notional) - fee * notional
}

fn order_entries(
    a: &QueueEntry,
    b: &QueueEntry,
    account_ids: &[i64],
    instrument: &[u32],
) -> Ordering {
    // An account's cross book first, then its isolated positions by instrument (one per
    // instrument): never by row number, so the order does not depend on the input's rows.
    let key = |e: &QueueEntry| {
        e.position_row
            .map_or(-1, |row| i64::from(instrument[row as usize]))
    };
    a.health
        .total_cmp(&b.health)
        .then(b.deficit.total_cmp(&a.deficit))
        .then(account_ids[a.account as usize].cmp(&account_ids[b.account as usize]))
        .then(key(a).cmp(&key(b)))
}

/// The liquidation queue of a revalued book (SPEC §8): accounts in `liquidation` status
/// and isolated positions below their maintenance margin, healthiest last.
pub fn liquidation_queue(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    revaluation: &Revaluation,
    account_ids: &[i64],
) -> LiquidationQueue {
    let accounts = &revaluation.accounts;
    let figures = &revaluation.positions;
    let positions = &book.positions;
    let settle_price = |row: usize| {
        let contract = &params.perpetuals[positions.instrument[row] as usize];
        market.asset_prices[contract.settle_asset as usize]
    };
    let mut entries: Vec<QueueEntry> = (0..book.n_accounts())
        .into_par_iter()
        .with_min_len(4096)
        .filter(|&a| accounts.status[a] == Status::Liquidation as u8)
        .map(|a| {
            let equity = accounts.equity[a];
            let requirement = accounts.liquidation_requirement[a];
            QueueEntry {
                account: a as u32,
                position_row: None,
                health: if requirement > 0.0 {
                    equity / requirement
                } else {
                    f64::NEG_INFINITY
                },
                deficit: requirement - equity,
                bankrupt: equity < 0.0,
                insurance_draw: (-equity).max(0.0),
                close_value: 0.0,
                fees: 0.0,
                full_close: false,
                first_step: 0,
                n_steps: 0,
            }
        })
        .collect();
    let isolated: Vec<QueueEntry> = (0..positions.qty.len())
        .into_par_iter()
        .with_min_len(16 * 1024)
        .filter_map(|row| {
            let margin = positions.isolated_margin(row)?;
            if positions.qty[row] == 0.0 {
                return None;
            }
            let balance = margin + figures.upnl[row];
            let maintenance = figures.maintenance_margin[row];
            if balance >= maintenance {
                return None;
            }
            let px = settle_price(row);
            Some(QueueEntry {
                account: positions.account[row],
                position_row: Some(row as u32),
                health: if maintenance > 0.0 {
                    balance / maintenance
                } else {
                    f64::NEG_INFINITY
                },
                deficit: (maintenance - balance) * px,
                bankrupt: balance < 0.0,
                insurance_draw: (-balance).max(0.0) * px,
                close_value: 0.0,
                fees: 0.0,
                full_close: false,
                first_step: 0,
                n_steps: 0,
            })
        })
        .collect();
    entries.extend(isolated);
    entries.par_sort_unstable_by(|a, b| order_entries(a, b, account_ids, positions.instrument));

    let buffer = params.liquidation_buffer;
    let plans: Vec<(Vec<PlanStep>, f64, f64, bool)> = entries
        .par_iter()
        .with_min_len(256)
        .map(|entry| plan(params, book, market, revaluation, entry, buffer))
        .collect();
    let mut steps = Vec::with_capacity(plans.iter().map(|p| p.0.len()).sum());
    for (entry, (entry_steps, value, fees, full)) in entries.iter_mut().zip(plans) {
        entry.first_step = steps.len();
        entry.n_steps = entry_steps.len();
        entry.close_value = value;
        entry.fees = fees;
        entry.full_close = full;
        steps.extend(entry_steps);
    }
    LiquidationQueue { entries, steps }
}

/// The close plan of one entry: reductions in order of requirement freed per unit of fee,
/// until equity is back to maintenance × (1 + buffer), or everything when that cannot be
/// reached. Returns the steps, total value closed, total fees, and whether all is closed.
fn plan(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    revaluation: &Revaluation,
    entry: &QueueEntry,
    buffer: f64,
) -> (Vec<PlanStep>, f64, f64, bool) {
    let positions = &book.positions;
    let figures = &revaluation.positions;
    let mut candidates: Vec<(StepKind, u32, f64, f64)> = Vec::new(); // kind, row, rate, fee
    let shortage;
    match entry.position_row {
        Some(row) => {
            let row = row as usize;
            let contract = &params.perpetuals[positions.instrument[row] as usize];
            let balance = positions.isolated_margin(row).unwrap_or(0.0) + figures.upnl[row];
            let settle_price = market.asset_prices[contract.settle_asset as usize];
            shortage = ((1.0 + buffer) * figures.maintenance_margin[row] - balance) * settle_price;
            candidates.push((
                StepKind::Position,
                row as u32,
                0.0,
                contract.liquidation_fee,
            ));
        }
        None => {
            let a = entry.account as usize;
            let accounts = &revaluation.accounts;
            shortage = (1.0 + buffer) * accounts.maintenance_requirement[a] - accounts.equity[a];
            book.position_groups.for_each_row(a, |row| {
                if positions.qty[row] != 0.0 && positions.isolated_margin(row).is_none() {
                    let contract = &params.perpetuals[positions.instrument[row] as usize];
                    let tier = &contract.tiers.tiers()[usize::from(figures.tier[row]) - 1];
                    candidates.push((
                        StepKind::Position,
                        row as u32,
                        tier.mmr,
                        contract.liquidation_fee,
                    ));
                }
            });
            book.holding_groups.for_each_row(a, |row| {
                let asset_id = book.holdings.asset[row] as usize;
                let value = book.holdings.amount[row] * market.asset_prices[asset_id];
                let asset = &params.assets[asset_id];
                if value > 0.0 && asset.haircuts.maintenance > 0.0 {
                    candidates.push((
                        StepKind::Holding,
                        row as u32,
                        asset.haircuts.maintenance,
                        asset.sale_fee,
                    ));
                }
            });
            // Most requirement freed per unit of fee first; a free close beats any.
            candidates.sort_by(|x, y| {
                let efficiency = |(_, _, rate, fee): &(StepKind, u32, f64, f64)| {
                    if *fee > 0.0 {
                        rate / fee
                    } else {
                        f64::INFINITY
                    }
                };
                // Ties by the row's key (instrument and margin mode, or asset), never by
                // row number, so the plan does not depend on the input's row order.
                let key = |(kind, row, _, _): &(StepKind, u32, f64, f64)| match kind {
                    StepKind::Position => positions.instrument[*row as usize],
                    StepKind::Holding => book.holdings.asset[*row as usize],
                };
                efficiency(y)
                    .total_cmp(&efficiency(x))
                    .then((x.0 as u8).cmp(&(y.0 as u8)))
                    .then(key(x).cmp(&key(y)))
            });
        }
    }

    let describe = |kind: StepKind, row: usize| -> Candidate {
        match kind {
            StepKind::Position => {
                let contract = &params.perpetuals[positions.instrument[row] as usize];
                let px = market.asset_prices[contract.settle_asset as usize];
                Candidate {
                    kind,
                    row: row as u32,
                    rate: 0.0,
                    fee: contract.liquidation_fee,
                    value: figures.notional[row] * px,
                    settle_price: px,
                    notional: figures.notional[row],
                    quantity: positions.qty[row],
                }
            }
            StepKind::Holding => {
                let asset_id = book.holdings.asset[row] as usize;
                let asset = &params.assets[asset_id];
                let amount = book.holdings.amount[row];
                Candidate {
                    kind,
                    row: row as u32,
                    rate: asset.haircuts.maintenance,
                    fee: asset.sale_fee,
                    value: amount * market.asset_prices[asset_id],
                    settle_price: 1.0,
                    notional: 0.0,
                    quantity: amount,
                }
            }
        }
    };
    let step = |c: &Candidate, fraction: f64| PlanStep {
        kind: c.kind,
        row: c.row,
        fraction,
        quantity: -c.quantity * fraction,
        value: c.value * fraction,
        fee: c.value * fraction * c.fee,
    };

    let mut remaining = shortage;
    let mut steps = Vec::new();
    let mut cured = remaining <= 0.0;
    for &(kind, row, _, _) in &candidates {
        if cured {
            break;
        }
        let candidate = describe(kind, row as usize);
        if candidate.value <= 0.0 {
            continue;
        }
        match kind {
            StepKind::Position => {
                let contract = &params.perpetuals[positions.instrument[row as usize] as usize];
                let px = candidate.settle_price;
                let needed = position_close_value(
                    candidate.notional,
                    &contract.tiers,
                    candidate.fee,
                    buffer,
                    remaining / px,
                );
                match needed {
                    Some(close) if close < candidate.notional => {
                        steps.push(step(&candidate, close / candidate.notional));
                        cured = true;
                    }
                    _ => {
                        let gain = full_close_gain(
                            candidate.notional,
                            &contract.tiers,
                            candidate.fee,
                            buffer,
                        ) * px;
                        steps.push(step(&candidate, 1.0));
                        remaining -= gain;
                        cured = remaining <= 0.0;
                    }
                }
            }
            StepKind::Holding => {
                let gain = (1.0 + buffer) * candidate.rate - candidate.fee;
                if gain <= 0.0 {
                    continue;
                }
                let needed = remaining / gain;
                if needed < candidate.value {
                    steps.push(step(&candidate, needed / candidate.value));
                    cured = true;
                } else {
                    steps.push(step(&candidate, 1.0));
                    remaining -= gain * candidate.value;
                    cured = remaining <= 0.0;
                }
            }
        }
    }
    let full_close = !cured;
    if full_close {
        steps = candidates
            .iter()
            .map(|&(kind, row, _, _)| describe(kind, row as usize))
            .filter(|c| c.value > 0.0)
            .map(|c| step(&c, 1.0))
            .collect();
    }
    let value = steps.iter().map(|s| s.value).sum();
    let fees = steps.iter().map(|s| s.fee).sum();
    (steps, value, fees, full_close)
}

/// One position in the auto-deleveraging queue of its instrument and side.
#[derive(Debug, Clone, PartialEq)]
pub struct AdlEntry {
    pub instrument: u32,
    /// +1 long, −1 short.
    pub side: i8,
    pub row: u32,
    pub score: f64,
    /// 0-based rank within (instrument, side): 0 is deleveraged first.
    pub rank: u32,
    /// Quintile: 5 for the first fifth of the queue … 1 for the last.
    pub bucket: u8,
}

/// The ADL queues: per instrument and side, every position with a score, highest first —
/// profitable positions (positive scores) before losing ones — ties by account id, then
/// cross before isolated.
pub fn adl_queue(book: &Book<'_>, revaluation: &Revaluation, account_ids: &[i64]) -> Vec<AdlEntry> {
    let positions = &book.positions;
    let figures = &revaluation.positions;
    let mut entries: Vec<AdlEntry> = (0..positions.qty.len())
        .into_par_iter()
        .with_min_len(16 * 1024)
        .filter(|&row| positions.qty[row] != 0.0 && figures.adl_score[row].is_finite())
        .map(|row| AdlEntry {
            instrument: positions.instrument[row],
            side: if positions.qty[row] > 0.0 { 1 } else { -1 },
            row: row as u32,
            score: figures.adl_score[row],
            rank: 0,
            bucket: 0,
        })
        .collect();
    let is_isolated = |e: &AdlEntry| positions.isolated_margin(e.row as usize).is_some();
    entries.par_sort_unstable_by(|a, b| {
        a.instrument
            .cmp(&b.instrument)
            .then(b.side.cmp(&a.side))
            .then(b.score.total_cmp(&a.score))
            .then(
                account_ids[positions.account[a.row as usize] as usize]
                    .cmp(&account_ids[positions.account[b.row as usize] as usize]),
            )
            // A cross and an isolated position of one account: cross first, not by row.
            .then(is_isolated(a).cmp(&is_isolated(b)))
    });
    let mut start = 0;
    while start < entries.len() {
        let key = (entries[start].instrument, entries[start].side);
        let end = start
            + entries[start..]
                .iter()
                .take_while(|e| (e.instrument, e.side) == key)
                .count();
        let n = (end - start) as u64;
        for (rank, entry) in entries[start..end].iter_mut().enumerate() {
            entry.rank = rank as u32;
            entry.bucket = (5 - (5 * rank as u64) / n) as u8;
        }
        start = end;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_size_cures_the_shortage_net_of_fees() {
        // Shortage 1 000 at mmr 2.5% and fee 0.5%: 1 000 / 0.02 = 50 000 of notional,
        // 0.5 BTC at 100 000.
        assert!((close_size(1_000.0, 100_000.0, 0.025, 0.005) - 0.5).abs() < 1e-12);
        assert_eq!(close_size(1_000.0, 100_000.0, 0.005, 0.005), f64::INFINITY);
        assert_eq!(close_size(-5.0, 100_000.0, 0.025, 0.005), 0.0);
    }

    #[test]
    fn tier_walk_uses_the_rate_of_each_bracket_crossed() {
        // Brackets 1% below 100 000 and 5% above; a 150 000 position, no fee or buffer.
        // Freeing 2 500 takes the 50 000 above the floor (5%); 3 000 more needs
        // 500 / 1% = 50 000 below it: 100 000 in all.
        let tiers = TierTable::new(&[(0.0, 0.01, 50.0), (100_000.0, 0.05, 10.0)]).unwrap();
        let close = position_close_value(150_000.0, &tiers, 0.0, 0.0, 2_500.0).unwrap();
        assert!((close - 50_000.0).abs() < 1e-9);
        let close = position_close_value(150_000.0, &tiers, 0.0, 0.0, 3_000.0).unwrap();
        assert!((close - 100_000.0).abs() < 1e-9);
        // More than a full close frees (MM 3 500): no partial solution.
        assert_eq!(
            position_close_value(150_000.0, &tiers, 0.0, 0.0, 4_000.0),
            None
        );
    }
}
