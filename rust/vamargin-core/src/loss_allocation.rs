//! Executing a liquidation queue in integer minor units (SPEC §8 loss allocation).
//!
//! Entries run in queue order, each plan step at the mark:
//!
//! - a position step realises the PnL of the closed contracts against the clearing
//!   account and pays the liquidation fee to the insurance fund of the settle asset;
//! - a holding step sells units to the clearing account for reporting-currency cash, and
//!   pays the sale fee to the reporting currency's insurance fund;
//! - an entry that ends below zero is bankrupt: the fund of each affected settle asset
//!   pays what it can; the rest is deleveraged — counterparties on the opposite side, in
//!   ADL rank order, are closed at the bankrupt position's bankruptcy price instead of the
//!   mark, and the profit they forgo covers the rest (the last one partly filled);
//!   whatever even ADL cannot cover is posted as the platform's uncovered loss.
//!
//! Every movement is a pair of postings that sum to zero, each amount rounded against
//! the account it is credited to, so every asset's postings sum to exactly zero.

use crate::book::Book;
use crate::error::{Error, Result};
use crate::liquidation::{AdlEntry, LiquidationQueue, StepKind};
use crate::money::{floor_amount, ExactAmount};
use crate::params::EngineParams;
use crate::perp::{self, ContractKind};
use crate::valuation::{Market, Revaluation};

/// Who a posting is credited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Account(u32),
    /// The exchange's clearing account: the other side of every close at the mark.
    Clearing,
    InsuranceFund,
    /// A loss neither the fund nor ADL could cover, or a margin loan's bad debt.
    Uncovered,
}

/// Why money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    RealizedPnl = 0,
    LiquidationFee = 1,
    AssetSold = 2,
    SaleProceeds = 3,
    FundCover = 4,
    Deleverage = 5,
    UncoveredLoss = 6,
}

/// One side of a movement: `amount` minor units of `asset` credited to `party`.
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    /// Index of the queue entry that caused it.
    pub entry: u32,
    pub party: Party,
    pub asset: u32,
    pub amount: i64,
    pub reason: Reason,
}

/// A counterparty position closed by auto-deleveraging.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleverageFill {
    pub entry: u32,
    /// The bankrupt position and the counterparty position (rows of the positions table).
    pub bankrupt_row: u32,
    pub counterparty_row: u32,
    /// Contracts of the counterparty closed, and the price they were closed at.
    pub contracts: f64,
    pub price: f64,
    /// Minor units (settle asset) the counterparty forwent.
    pub amount: i64,
}

/// The outcome of a liquidation run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiquidationRun {
    pub postings: Vec<Posting>,
    pub fills: Vec<DeleverageFill>,
    /// Insurance fund per asset after the run (minor units).
    pub fund: Vec<i64>,
}

struct Ledger {
    postings: Vec<Posting>,
}

impl Ledger {
    /// Moves `amount` from `from` to `to` (two postings summing to zero).
    fn transfer(
        &mut self,
        entry: u32,
        from: Party,
        to: Party,
        asset: u32,
        amount: i64,
        reason: Reason,
    ) {
        if amount == 0 {
            return;
        }
        self.postings.push(Posting {
            entry,
            party: from,
            asset,
            amount: -amount,
            reason,
        });
        self.postings.push(Posting {
            entry,
            party: to,
            asset,
            amount,
            reason,
        });
    }
}

fn pow10(decimals: u32) -> f64 {
    10f64.powi(decimals as i32)
}

/// Minor units credited to the holder of `contracts` closed at `price` (realised PnL).
fn realized(
    kind: ContractKind,
    size: f64,
    contracts: f64,
    entry: f64,
    price: f64,
    decimals: u32,
) -> Result<i64> {
    let estimate = perp::unrealized_pnl(kind, size, contracts, entry, price) * pow10(decimals);
    floor_amount(estimate, || {
        let base = ExactAmount::one()
            .times(contracts)
            .times(size)
            .times_pow10(decimals);
        match kind {
            // The price move is taken as computed in f64 (entry prices are averages).
            ContractKind::Linear => base.times(price - entry),
            ContractKind::Inverse => base.times(1.0 / entry - 1.0 / price),
        }
    })
}

/// Minor units credited to an account paying `rate` of `value` (a fee): ≤ 0.
fn fee(rate: f64, value: f64, decimals: u32) -> Result<i64> {
    let estimate = -rate * value * pow10(decimals);
    floor_amount(estimate, || {
        ExactAmount::one()
            .times(-rate)
            .times(value)
            .times_pow10(decimals)
    })
}

/// Runs `queue` (from [`crate::liquidation::liquidation_queue`] on the same revaluation)
/// against the insurance `fund` (minor units per asset), deleveraging through `adl`.
#[allow(clippy::too_many_arguments)]
pub fn run_liquidations(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    revaluation: &Revaluation,
    queue: &LiquidationQueue,
    adl: &[AdlEntry],
    fund: &[i64],
    decimals: &[u32],
    reporting_asset: Option<u32>,
) -> Result<LiquidationRun> {
    let positions = &book.positions;
    let figures = &revaluation.positions;
    let mut fund = fund.to_vec();
    let mut ledger = Ledger {
        postings: Vec::new(),
    };
    let mut fills = Vec::new();
    // Contracts still available to deleverage, per ADL entry; positions being liquidated
    // are never counterparties.
    let mut in_queue = vec![false; book.n_accounts()];
    for entry in &queue.entries {
        if entry.position_row.is_none() {
            in_queue[entry.account as usize] = true;
        }
    }
    let isolated_in_queue: std::collections::HashSet<u32> = queue
        .entries
        .iter()
        .filter_map(|e| e.position_row)
        .collect();
    let mut available: Vec<f64> = adl
        .iter()
        .map(|a| {
            let row = a.row as usize;
            let cross_in_queue = in_queue[positions.account[row] as usize]
                && positions.isolated_margin(row).is_none();
            if cross_in_queue || isolated_in_queue.contains(&a.row) {
                0.0
            } else {
                positions.qty[row].abs()
            }
        })
        .collect();

    for (index, entry) in queue.entries.iter().enumerate() {
        let entry_id = index as u32;
        let owner = Party::Account(entry.account);
        // Per settle asset: this entry's realised PnL and fees, and the closed positions
        // (row, closed value in reporting currency) that would carry a loss.
        let mut closed: Vec<(usize, f64)> = Vec::new();
        let mut asset_change = vec![0i64; params.assets.len()];
        for step in &queue.steps[entry.first_step..entry.first_step + entry.n_steps] {
            let row = step.row as usize;
            match step.kind {
                StepKind::Position => {
                    let contract = &params.perpetuals[positions.instrument[row] as usize];
                    let settle = contract.settle_asset;
                    let d = decimals[settle as usize];
                    let mark = market.marks[positions.instrument[row] as usize];
                    let contracts = -step.quantity;
                    let pnl = realized(
                        contract.kind,
                        contract.contract_size,
                        contracts,
                        positions.entry_price[row],
                        mark,
                        d,
                    )?;
                    ledger.transfer(
                        entry_id,
                        Party::Clearing,
                        owner,
                        settle,
                        pnl,
                        Reason::RealizedPnl,
                    );
                    let notional =
                        perp::notional(contract.kind, contract.contract_size, contracts, mark);
                    let charge = fee(contract.liquidation_fee, notional, d)?;
                    ledger.transfer(
                        entry_id,
                        owner,
                        Party::InsuranceFund,
                        settle,
                        -charge,
                        Reason::LiquidationFee,
                    );
                    fund[settle as usize] =
                        fund[settle as usize]
                            .checked_sub(charge)
                            .ok_or(Error::Overflow {
                                what: "insurance fund",
                            })?;
                    asset_change[settle as usize] += pnl + charge;
                    closed.push((row, step.value));
                }
                StepKind::Holding => {
                    let Some(cash) = reporting_asset else {
                        return Err(Error::config(
                            "reporting_currency",
                            "a forced sale needs the reporting currency configured as an asset",
                        ));
                    };
                    let asset = book.holdings.asset[row];
                    let units = -step.quantity;
                    let d_asset = decimals[asset as usize];
                    let sold = floor_amount(units * pow10(d_asset), || {
                        ExactAmount::one().times(units).times_pow10(d_asset)
                    })?;
                    ledger.transfer(
                        entry_id,
                        owner,
                        Party::Clearing,
                        asset,
                        sold,
                        Reason::AssetSold,
                    );
                    let d_cash = decimals[cash as usize];
                    let value = sold as f64 / pow10(d_asset) * market.asset_prices[asset as usize];
                    let cash_price = market.asset_prices[cash as usize];
                    let proceeds = floor_amount(value / cash_price * pow10(d_cash), || {
                        ExactAmount::one()
                            .times_integer(sold)
                            .times_pow10_signed(-(d_asset as i32))
                            .times(market.asset_prices[asset as usize])
                            .divided_by(cash_price)
                            .times_pow10(d_cash)
                    })?;
                    ledger.transfer(
                        entry_id,
                        Party::Clearing,
                        owner,
                        cash,
                        proceeds,
                        Reason::SaleProceeds,
                    );
                    let charge = fee(
                        params.assets[asset as usize].sale_fee,
                        proceeds as f64 / pow10(d_cash),
                        d_cash,
                    )?;
                    ledger.transfer(
                        entry_id,
                        owner,
                        Party::InsuranceFund,
                        cash,
                        -charge,
                        Reason::LiquidationFee,
                    );
                    fund[cash as usize] =
                        fund[cash as usize]
                            .checked_sub(charge)
                            .ok_or(Error::Overflow {
                                what: "insurance fund",
                            })?;
                }
            }
        }

        // The loss below zero, per settle asset, carried by the closed positions.
        let mut losses: Vec<(usize, u32, i64)> = Vec::new(); // (row, asset, minor units)
        match entry.position_row {
            Some(row) => {
                let row = row as usize;
                let contract = &params.perpetuals[positions.instrument[row] as usize];
                let settle = contract.settle_asset;
                let d = decimals[settle as usize];
                let margin = positions.isolated_margin(row).unwrap_or(0.0);
                let wallet = floor_amount(margin * pow10(d), || {
                    ExactAmount::one().times(margin).times_pow10(d)
                })? + asset_change[settle as usize];
                if wallet < 0 && entry.full_close {
                    losses.push((row, settle, -wallet));
                }
            }
            None => {
                let a = entry.account as usize;
                let fees_paid: f64 = queue.steps
                    [entry.first_step..entry.first_step + entry.n_steps]
                    .iter()
                    .map(|s| s.fee)
                    .sum();
                let shortfall = fees_paid - revaluation.accounts.equity[a];
                if shortfall > 0.0 && entry.full_close {
                    let closed_value: f64 = closed.iter().map(|(_, v)| v).sum();
                    if closed.is_empty() || closed_value <= 0.0 {
                        // A margin loan gone bad: the broker's loss, in the reporting currency.
                        if let Some(cash) = reporting_asset {
                            let d = decimals[cash as usize];
                            let cash_price = market.asset_prices[cash as usize];
                            let amount = (shortfall / cash_price * pow10(d)).ceil() as i64;
                            ledger.transfer(
                                entry_id,
                                Party::Uncovered,
                                owner,
                                cash,
                                amount,
                                Reason::UncoveredLoss,
                            );
                        }
                    } else {
                        for &(row, value) in &closed {
                            let contract = &params.perpetuals[positions.instrument[row] as usize];
                            let settle = contract.settle_asset;
                            let d = decimals[settle as usize];
                            let px = market.asset_prices[settle as usize];
                            let share = shortfall * value / closed_value / px;
                            losses.push((row, settle, (share * pow10(d)).ceil() as i64));
                        }
                    }
                }
            }
        }

        for (row, asset, loss) in losses {
            let covered = loss.min(fund[asset as usize].max(0));
            ledger.transfer(
                entry_id,
                Party::InsuranceFund,
                owner,
                asset,
                covered,
                Reason::FundCover,
            );
            fund[asset as usize] -= covered;
            let mut remaining = loss - covered;
            if remaining > 0 {
                remaining = deleverage(
                    params,
                    book,
                    market,
                    figures.bankruptcy_price[row],
                    row,
                    entry_id,
                    owner,
                    remaining,
                    decimals,
                    adl,
                    &mut available,
                    &mut ledger,
                    &mut fills,
                )?;
            }
            ledger.transfer(
                entry_id,
                Party::Uncovered,
                owner,
                asset,
                remaining,
                Reason::UncoveredLoss,
            );
        }
    }

    // Every movement was a balanced pair: each asset's postings sum to zero.
    let mut totals = vec![0i128; params.assets.len()];
    for posting in &ledger.postings {
        totals[posting.asset as usize] += i128::from(posting.amount);
    }
    if totals.iter().any(|&t| t != 0) {
        return Err(Error::Overflow {
            what: "liquidation ledger (postings do not balance)",
        });
    }
    Ok(LiquidationRun {
        postings: ledger.postings,
        fills,
        fund,
    })
}

/// Covers up to `remaining` minor units of a bankrupt position's loss by closing
/// opposite-side positions at its bankruptcy price, in ADL rank order. Returns what is
/// still uncovered.
#[allow(clippy::too_many_arguments)]
fn deleverage(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    bankruptcy_price: f64,
    row: usize,
    entry: u32,
    owner: Party,
    mut remaining: i64,
    decimals: &[u32],
    adl: &[AdlEntry],
    available: &mut [f64],
    ledger: &mut Ledger,
    fills: &mut Vec<DeleverageFill>,
) -> Result<i64> {
    let positions = &book.positions;
    let instrument = positions.instrument[row];
    let contract = &params.perpetuals[instrument as usize];
    let settle = contract.settle_asset;
    let d = decimals[settle as usize];
    let mark = market.marks[instrument as usize];
    if !(bankruptcy_price.is_finite() && bankruptcy_price > 0.0) {
        return Ok(remaining);
    }
    // What one counterparty contract forgoes by closing at the bankruptcy price.
    let per_contract = perp::unrealized_pnl(
        contract.kind,
        contract.contract_size,
        1.0,
        bankruptcy_price,
        mark,
    )
    .abs();
    if per_contract.is_nan() || per_contract <= 0.0 {
        return Ok(remaining);
    }
    let side = -(positions.qty[row].signum() as i8);
    for (k, candidate) in adl.iter().enumerate() {
        if remaining == 0 {
            break;
        }
        if candidate.instrument != instrument || candidate.side != side || available[k] <= 0.0 {
            continue;
        }
        let needed = remaining as f64 / pow10(d) / per_contract;
        let contracts = needed.min(available[k]);
        let forgone = (contracts * per_contract * pow10(d)).ceil() as i64;
        let amount = forgone.min(remaining);
        let counterparty = Party::Account(positions.account[candidate.row as usize]);
        ledger.transfer(
            entry,
            counterparty,
            owner,
            settle,
            amount,
            Reason::Deleverage,
        );
        available[k] -= contracts;
        remaining -= amount;
        fills.push(DeleverageFill {
            entry,
            bankrupt_row: row as u32,
            counterparty_row: candidate.row,
            contracts,
            price: bankruptcy_price,
            amount,
        });
    }
    Ok(remaining)
}
