//! Margin financing (SPEC §7): interest on loans, and what cures a margin call.
//!
//! Cures are solved exactly against the size-tiered requirement `req(v) = v − (1 − h)·T(v)`
//! (T piecewise linear in the holding's value), so applying any one of them brings the
//! account back to its call target.

use std::ops::Range;

use rayon::prelude::*;

use crate::book::{Book, Holdings};
use crate::columns::Columns;
use crate::error::{Error, Result};
use crate::money::ExactAmount;
use crate::parallel::{column_bundle, map_chunks};
use crate::params::{CallTarget, EngineParams, Haircuts};
use crate::tiers::SizeTiers;
use crate::valuation::{Market, Revaluation, Status};

/// Day-count basis of a currency's loans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayCount {
    Act365,
    Act360,
}

impl DayCount {
    pub fn days_per_year(self) -> u64 {
        match self {
            DayCount::Act365 => 365,
            DayCount::Act360 => 360,
        }
    }
}

/// Interest owed on `principal` at `annual_rate` for `days` actual days, in minor units
/// (`10^-decimals`), rounded up: an account is never under-charged by a minor unit.
/// Exact on decimal inputs: 10 000 at 8.906% for 7 days (ACT/365) is 1 708 cents.
pub fn interest(
    principal: f64,
    annual_rate: f64,
    days: u32,
    day_count: DayCount,
    decimals: u32,
) -> Result<i64> {
    if !(principal.is_finite() && annual_rate.is_finite() && principal >= 0.0 && annual_rate >= 0.0)
    {
        return Err(Error::config(
            "interest",
            "principal and rate must be finite and ≥ 0",
        ));
    }
    // Credited to the account: −interest, floored; the charge is its negation.
    let credited = ExactAmount::one()
        .times(-principal)
        .times(annual_rate)
        .times_integer(i64::from(days))
        .divided_by_integer(day_count.days_per_year())
        .times_pow10(decimals)
        .floor()?;
    credited
        .checked_neg()
        .ok_or(Error::Overflow { what: "interest" })
}

/// Interest owed today on every loan (negative holding) of a book, in minor units of
/// the loan's asset, rounded up; 0 for other rows. Loans are read in minor units of their
/// asset, so every charge is exact: `ceil(principal × rate × days / basis)`.
pub fn accrue_interest(
    amounts: &[f64],
    assets: &[u32],
    annual_rates: &[f64],
    day_counts: &[DayCount],
    decimals: &[u32],
    days: u32,
) -> Result<Vec<i64>> {
    if amounts.len() != assets.len() {
        return Err(Error::LengthMismatch {
            column: "holdings.asset",
            expected: amounts.len(),
            actual: assets.len(),
        });
    }
    let coefficients: Vec<Option<crate::money::Coefficient>> = (0..annual_rates.len())
        .map(|id| {
            crate::money::Coefficient::new(
                false,
                &[annual_rates[id], f64::from(days)],
                Some(day_counts[id].days_per_year() as f64),
                0,
            )
        })
        .collect();
    amounts
        .par_iter()
        .zip(assets.par_iter())
        .with_min_len(16 * 1024)
        .map(|(&amount, &asset)| {
            if amount >= 0.0 {
                return Ok(0);
            }
            let id = asset as usize;
            let d = decimals[id];
            let principal_minor = (-amount * 10f64.powi(d as i32)).round();
            if !(principal_minor.is_finite() && principal_minor < 9.2e18) {
                return Err(Error::Overflow {
                    what: "loan principal",
                });
            }
            // Credited −interest, floored: the charge rounds up.
            let credited = coefficients[id]
                .and_then(|k| k.floor_times(-(principal_minor as i128)))
                .map_or_else(
                    || {
                        ExactAmount::one()
                            .times_integer(-(principal_minor as i64))
                            .times(annual_rates[id])
                            .times_integer(i64::from(days))
                            .divided_by_integer(day_counts[id].days_per_year())
                            .floor()
                    },
                    Ok,
                )?;
            credited
                .checked_neg()
                .ok_or(Error::Overflow { what: "interest" })
        })
        .collect()
}

/// Firm-wide collateral figures from holdings alone (no position is revalued).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CollateralFigures {
    /// Per asset: Σ of positive holding values over all accounts.
    pub by_asset: Vec<f64>,
    /// Per account: loans (−Σ negative holding values), eligible collateral value and LTV
    /// (0 without loans, ∞ with loans and no collateral), as in the account pass.
    pub debit: Vec<f64>,
    pub collateral: Vec<f64>,
    pub ltv: Vec<f64>,
    /// Σ debit over the accounts.
    pub total_debit: f64,
    /// Σ over the accounts of `max(0, debit − recognised)`, where an account's
    /// recognised value is its positive holding values weighted by `weights[asset]` (the
    /// capital view's `1 − capital_haircut`): loans the capital view does not cover.
    pub uncovered: f64,
    /// The rows of the `top` largest positive debits, largest first, ties by row.
    pub top_debits: Vec<u32>,
}

column_bundle!(
    /// Per-account outputs of [`collateral_figures`].
    CollateralRows {
        debit: f64,
        collateral: f64,
        ltv: f64,
    }
);

/// Accounts per parallel chunk of [`collateral_figures`].
const COLLATERAL_CHUNK: usize = 4096;

/// Collateral figures of every account, in per-account columns from `columns` (every
/// element is written), and the `top` largest debits. Each account's sums run over its
/// rows in key order. The per-asset and firm totals are summed per chunk of accounts and
/// the chunks added in account order; chunks are cut by the number of accounts alone, so
/// the figures do not depend on the thread count.
pub fn collateral_figures(
    params: &EngineParams,
    book: &Book<'_>,
    prices: &[f64],
    weights: &[f64],
    top: usize,
    columns: &impl Columns,
) -> CollateralFigures {
    let n_accounts = book.n_accounts();
    let n_assets = weights.len();
    let mut figures = CollateralFigures {
        by_asset: vec![0.0; n_assets],
        debit: columns.f64s(n_accounts),
        collateral: columns.f64s(n_accounts),
        ltv: columns.f64s(n_accounts),
        total_debit: 0.0,
        uncovered: 0.0,
        top_debits: Vec::new(),
    };
    let columns = CollateralRows {
        debit: &mut figures.debit,
        collateral: &mut figures.collateral,
        ltv: &mut figures.ltv,
    };
    let assets: Vec<AssetTerms> = (0..n_assets)
        .map(|asset| AssetTerms {
            price: prices[asset],
            weight: weights[asset],
            eligible: if params.assets[asset].eligible {
                u64::MAX
            } else {
                0
            },
            total: 0.0,
        })
        .collect();
    // A chunk's accounts: each account's sums first, then one pass over the accounts
    // closes them. It gives its per-asset sums and firm totals, in account order.
    let chunk_figures = |first: usize, mut chunk: CollateralRows<'_>| {
        let mut assets = assets.clone();
        let mut sums = vec![CollateralSums::default(); chunk.debit.len()];
        match book.holding_groups.row_starts() {
            Some(starts) => {
                let rows = starts[first]..starts[first + sums.len()];
                sum_runs(&book.holdings, rows, first, &mut assets, &mut sums);
            }
            None => sum_per_account(book, first, &mut assets, &mut sums),
        }
        let (debit, uncovered, largest) = close_accounts(first, &sums, &mut chunk, top);
        let by_asset: Vec<f64> = assets.iter().map(|asset| asset.total).collect();
        (by_asset, debit, uncovered, largest.largest)
    };
    let chunk_sums = map_chunks(columns, COLLATERAL_CHUNK, &chunk_figures);
    let mut candidates = Vec::new();
    for (by_asset, debit, uncovered, largest) in chunk_sums {
        for (total, sum) in figures.by_asset.iter_mut().zip(by_asset) {
            *total += sum;
        }
        figures.total_debit += debit;
        figures.uncovered += uncovered;
        candidates.extend(largest);
    }
    // Each chunk's largest, in account order: a stable sort by debit keeps ties by row.
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    figures.top_debits = candidates.iter().take(top).map(|&(_, row)| row).collect();
    figures
}

/// The sums of the accounts from `first` (one per element of `sums`), account by
/// account through the grouping (rows not laid out by account).
fn sum_per_account(
    book: &Book<'_>,
    first: usize,
    assets: &mut [AssetTerms],
    sums: &mut [CollateralSums],
) {
    for (i, account_sums) in sums.iter_mut().enumerate() {
        for row in book.holding_groups.rows_of(first + i) {
            let (asset, amount) = (book.holdings.asset[row], book.holdings.amount[row]);
            account_sums.add(assets, asset, amount);
        }
    }
}

/// [`sum_per_account`] over `rows`, laid out by account, the accounts from `first`
/// owning them all: one pass over the rows, with no branch on how many rows an account
/// has. Each row adds to its account's sums, restarted from zero where the account
/// changes, and stores them in its account's slot (the last row's stay), so every
/// account's additions are its rows' in row order, as account by account. Accounts
/// without rows keep the zero sums they came with.
fn sum_runs(
    holdings: &Holdings<'_>,
    rows: Range<usize>,
    first: usize,
    assets: &mut [AssetTerms],
    sums: &mut [CollateralSums],
) {
    let mut running = CollateralSums::default();
    let mut previous = None;
    let accounts = &holdings.account[rows.clone()];
    let assets_of_rows = &holdings.asset[rows.clone()];
    let rows = accounts
        .iter()
        .zip(assets_of_rows)
        .zip(&holdings.amount[rows]);
    for ((&account, &asset), &amount) in rows {
        running.restart_unless(previous == Some(account));
        previous = Some(account);
        running.add(assets, asset, amount);
        sums[account as usize - first] = running;
    }
}

/// Writes the chunk's accounts' debit, collateral and LTV from their `sums`, and sums
/// their debits and uncovered loans in account order, keeping the `top` largest debits.
fn close_accounts(
    first: usize,
    sums: &[CollateralSums],
    chunk: &mut CollateralRows<'_>,
    top: usize,
) -> (f64, f64, LargestDebits) {
    let (mut debit, mut uncovered) = (0.0, 0.0);
    let mut largest = LargestDebits::new(top);
    let outputs = chunk.debit.iter_mut().zip(chunk.collateral.iter_mut());
    for (i, ((account, (debit_out, collateral_out)), ltv)) in sums
        .iter()
        .zip(outputs)
        .zip(chunk.ltv.iter_mut())
        .enumerate()
    {
        *debit_out = account.debit;
        *collateral_out = account.collateral;
        *ltv = crate::valuation::loan_to_value(account.debit, account.collateral);
        debit += account.debit;
        uncovered += (account.debit - account.recognised).max(0.0);
        largest.offer(account.debit, first + i);
    }
    (debit, uncovered, largest)
}

/// The `top` largest positive debits of a chunk of accounts and their rows, largest
/// first, ties by row (rows are offered in increasing order).
struct LargestDebits {
    largest: Vec<(f64, u32)>,
    top: usize,
    /// What a debit must exceed to enter: 0 while fewer than `top` are kept, then the
    /// smallest kept (a debit equal to it loses to its earlier row); ∞ when `top` is 0.
    bar: f64,
}

impl LargestDebits {
    fn new(top: usize) -> Self {
        LargestDebits {
            // A chunk keeps at most `top` of its accounts (and `top` may be any size).
            largest: Vec::with_capacity(top.min(COLLATERAL_CHUNK) + 1),
            top,
            bar: if top == 0 { f64::INFINITY } else { 0.0 },
        }
    }

    /// One comparison per account; NaN and debits ≤ 0 never enter.
    #[inline(always)]
    fn offer(&mut self, debit: f64, row: usize) {
        if debit > self.bar {
            self.enter(debit, row);
        }
    }

    #[cold]
    #[inline(never)]
    fn enter(&mut self, debit: f64, row: usize) {
        let at = self.largest.partition_point(|&(kept, _)| kept >= debit);
        // Fewer accounts than u32::MAX (checked when the book was indexed).
        self.largest.insert(at, (debit, row as u32));
        self.largest.truncate(self.top);
        if self.largest.len() == self.top {
            self.bar = self.largest[self.top - 1].0;
        }
    }
}

/// One account's sums in [`collateral_figures`].
#[derive(Debug, Clone, Copy, Default)]
struct CollateralSums {
    recognised: f64,
    debit: f64,
    collateral: f64,
}

/// What [`CollateralSums::add`] reads per asset, and the chunk's total of its positive
/// values (in one record, so a row indexes one table).
#[derive(Debug, Clone)]
struct AssetTerms {
    price: f64,
    /// The capital view's `1 − capital_haircut`.
    weight: f64,
    /// All ones where the asset is eligible collateral, else zero: a mask on a value's
    /// bits.
    eligible: u64,
    total: f64,
}

impl CollateralSums {
    /// Adds a holding of `amount` of `asset`: a loan to the debit, a positive value to
    /// the recognised value (weighted), to its asset's total and, when eligible, to the
    /// collateral.
    ///
    /// Without a branch on the sign or the eligibility (a book mixes loans, coins and
    /// cash): each sum adds its part of the value, a zero where it has none. A zero added
    /// leaves a sum's bits as they were: the sums start at +0 and never become −0.
    #[inline(always)]
    fn add(&mut self, assets: &mut [AssetTerms], asset: u32, amount: f64) {
        let terms = &mut assets[asset as usize];
        let value = amount * terms.price;
        let (loan, credit) = (-value.min(0.0), value.max(0.0));
        self.debit += loan;
        self.recognised += credit * terms.weight;
        terms.total += credit;
        self.collateral += f64::from_bits(credit.to_bits() & terms.eligible);
    }

    /// Back to zero unless `same` (the next row is of the same account), without a
    /// branch: a value's bits masked to nothing are +0. (The mask is hidden from the
    /// optimiser, which otherwise turns it back into a branch that mispredicts at every
    /// few rows.)
    #[inline(always)]
    fn restart_unless(&mut self, same: bool) {
        let keep = std::hint::black_box(0u64.wrapping_sub(u64::from(same)));
        for sum in [&mut self.recognised, &mut self.debit, &mut self.collateral] {
            *sum = f64::from_bits(sum.to_bits() & keep);
        }
    }
}

/// Bands of the credited value `T`: `(from, to, factor)` covering `[0, ∞)`.
fn bands(tiers: &SizeTiers) -> Vec<(f64, f64, f64)> {
    if tiers.is_empty() {
        return vec![(0.0, f64::INFINITY, 1.0)];
    }
    let (floors, factors) = tiers.bands();
    floors
        .iter()
        .zip(factors)
        .enumerate()
        .map(|(k, (&floor, &factor))| {
            (
                floor,
                floors.get(k + 1).copied().unwrap_or(f64::INFINITY),
                factor,
            )
        })
        .collect()
}

/// Value of eligible collateral to deposit, on top of a holding worth `held`, that raises
/// `equity − requirement` by `shortfall`: each unit deposited in band k improves it by
/// `(1 − h)·factor_k`. `None` when no deposit can (haircut 100%).
pub fn deposit_to_cure(shortfall: f64, held: f64, haircut: f64, tiers: &SizeTiers) -> Option<f64> {
    if shortfall <= 0.0 {
        return Some(0.0);
    }
    let mut remaining = shortfall;
    let mut deposited = 0.0;
    for (from, to, factor) in bands(tiers) {
        if to <= held {
            continue;
        }
        let start = held.max(from);
        let gain = (1.0 - haircut) * factor;
        let room = to - start;
        if gain > 0.0 && remaining <= gain * room {
            return Some(deposited + remaining / gain);
        }
        if gain > 0.0 {
            remaining -= gain * room;
        }
        deposited += room;
    }
    None
}

/// Value of a holding worth `held` to sell that raises `equity − requirement` by
/// `shortfall`, the proceeds kept as cash (no requirement) and `fee` of the value sold
/// lost: each unit sold from band k improves it by `1 − (1 − h)·factor_k − fee`. `None`
/// when even selling everything does not cure.
pub fn sale_to_cure(
    shortfall: f64,
    held: f64,
    haircut: f64,
    fee: f64,
    tiers: &SizeTiers,
) -> Option<f64> {
    if shortfall <= 0.0 {
        return Some(0.0);
    }
    let mut remaining = shortfall;
    let mut sold = 0.0;
    for (from, to, factor) in bands(tiers).into_iter().rev() {
        if from >= held {
            continue;
        }
        let top = held.min(to);
        let room = top - from;
        let gain = 1.0 - (1.0 - haircut) * factor - fee;
        if gain > 0.0 && remaining <= gain * room {
            return Some(sold + remaining / gain);
        }
        remaining -= gain * room;
        sold += room;
    }
    None
}

fn target_haircut(haircuts: &Haircuts, target: CallTarget) -> f64 {
    match target {
        CallTarget::Initial => haircuts.initial,
        CallTarget::Maintenance => haircuts.maintenance,
    }
}

/// One account under a margin call and the ways to cure it.
#[derive(Debug, Clone, PartialEq)]
pub struct MarginCall {
    pub account: u32,
    /// [`Status`] code and equity (reporting currency) of the account.
    pub status: u8,
    pub equity: f64,
    /// What restores the call target (reporting currency).
    pub call_amount: f64,
    /// Per asset: value to deposit (reporting currency); NaN where a deposit cannot cure.
    pub deposit: Vec<f64>,
    /// Per asset: value of the account's holding to sell; NaN where it cannot cure.
    pub sell: Vec<f64>,
    /// A forced sale is due (liquidation status, or the caller says the deadline passed).
    pub forced: bool,
    /// The forced sale plan: `(holding row, value sold, fee)`, most haircut-efficient
    /// assets first; it cures the call in one pass when the holdings allow.
    pub forced_sales: Vec<(u32, f64, f64)>,
}

/// Every account in `margin_call` or `liquidation` status, with its cures. `past_deadline`
/// (per account, may be empty) marks calls whose deadline has expired.
pub fn margin_calls(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    revaluation: &Revaluation,
    past_deadline: &[bool],
) -> Vec<MarginCall> {
    let accounts = &revaluation.accounts;
    let prices = market.asset_prices;
    let target = params.call_target;
    (0..book.n_accounts())
        .into_par_iter()
        .with_min_len(4096)
        .filter(|&a| accounts.status[a] >= Status::MarginCall as u8)
        .map(|a| {
            let call = accounts.call_amount[a];
            // Current value of each asset in the account.
            let mut held = vec![0.0; params.assets.len()];
            let mut rows = Vec::new();
            book.holding_groups.for_each_row(a, |row| {
                let asset = book.holdings.asset[row] as usize;
                let value = book.holdings.amount[row] * prices[asset];
                held[asset] += value;
                if value > 0.0 {
                    rows.push((row, asset, value));
                }
            });
            let deposit = params
                .assets
                .iter()
                .enumerate()
                .map(|(id, asset)| {
                    if !asset.eligible || !prices[id].is_finite() {
                        return f64::NAN;
                    }
                    let h = target_haircut(&asset.haircuts, target);
                    deposit_to_cure(call, held[id].max(0.0), h, &asset.size_tiers)
                        .unwrap_or(f64::NAN)
                })
                .collect();
            let sell = (0..params.assets.len())
                .map(|id| {
                    let asset = &params.assets[id];
                    let h = target_haircut(&asset.haircuts, target);
                    match sale_to_cure(call, held[id], h, asset.sale_fee, &asset.size_tiers) {
                        Some(x) if held[id] > 0.0 && x <= held[id] => x,
                        _ => f64::NAN,
                    }
                })
                .collect();
            let forced = accounts.status[a] == Status::Liquidation as u8
                || past_deadline.get(a).copied().unwrap_or(false);
            let forced_sales = if forced {
                forced_sale_plan(params, call, &rows, target)
            } else {
                Vec::new()
            };
            MarginCall {
                account: a as u32,
                status: accounts.status[a],
                equity: accounts.equity[a],
                call_amount: call,
                deposit,
                sell,
                forced,
                forced_sales,
            }
        })
        .collect()
}

/// Sells holdings, the most requirement freed per unit sold first, until `call` is cured
/// (the last sale partial), or everything when that cannot be reached.
fn forced_sale_plan(
    params: &EngineParams,
    call: f64,
    rows: &[(usize, usize, f64)],
    target: CallTarget,
) -> Vec<(u32, f64, f64)> {
    let mut order: Vec<&(usize, usize, f64)> = rows.iter().collect();
    let efficiency = |asset: usize| {
        let a = &params.assets[asset];
        target_haircut(&a.haircuts, target) - a.sale_fee
    };
    order.sort_by(|x, y| {
        efficiency(y.1)
            .total_cmp(&efficiency(x.1))
            .then(x.0.cmp(&y.0))
    });
    let mut remaining = call;
    let mut plan = Vec::new();
    for &&(row, asset_id, value) in &order {
        if remaining <= 0.0 {
            break;
        }
        let asset = &params.assets[asset_id];
        let h = target_haircut(&asset.haircuts, target);
        if h - asset.sale_fee <= 0.0 {
            continue;
        }
        match sale_to_cure(remaining, value, h, asset.sale_fee, &asset.size_tiers) {
            Some(x) if x <= value => {
                plan.push((row as u32, x, x * asset.sale_fee));
                remaining = 0.0;
            }
            _ => {
                let freed = value
                    - (1.0 - h) * asset.size_tiers.credited_value(value)
                    - asset.sale_fee * value;
                plan.push((row as u32, value, value * asset.sale_fee));
                remaining -= freed;
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::{Stale, Zeroed};
    use crate::params::AssetParams;
    use crate::test_book::TestBook;
    use crate::test_rng::Rng;

    /// Three assets (USD eligible, BTC eligible, an ineligible token) and four accounts:
    /// a loan against BTC, cash only, nothing, and a loan against the token and USD.
    #[test]
    fn collateral_figures_write_every_account_and_sum_per_asset() {
        let asset = |eligible| {
            AssetParams::new(
                Haircuts::new(0.0, 0.0, 0.0).unwrap(),
                eligible,
                SizeTiers::default(),
            )
        };
        let params = EngineParams::new(
            vec![asset(true), asset(true), asset(false)],
            vec![],
            CallTarget::Initial,
        )
        .unwrap();
        let owned = TestBook::new(
            &[f64::INFINITY; 4],
            &[
                (0, 1, 2.0),
                (0, 0, -50_000.0),
                (1, 0, 1_000.0),
                (3, 2, 400.0),
                (3, 0, 300.0),
                (3, 1, -0.5),
            ],
            &[],
            None,
        );
        let book = owned.book(&params);
        // BTC at 60 000, the token at 2.5; capital weights 1 − haircut.
        let prices = [1.0, 60_000.0, 2.5];
        let weights = [1.0, 0.4, 0.0];
        let zeroed = collateral_figures(&params, &book, &prices, &weights, 3, &Zeroed);
        let stale = collateral_figures(&params, &book, &prices, &weights, 3, &Stale);
        for (a, b) in [
            (&zeroed.debit, &stale.debit),
            (&zeroed.collateral, &stale.collateral),
            (&zeroed.ltv, &stale.ltv),
        ] {
            let bits = |c: &[f64]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
        // Account 0: 2 BTC = 120 000 against a 50 000 USD loan. Account 3: 1 000 of the
        // token (ineligible) and 300 USD against 0.5 BTC = 30 000.
        assert_eq!(zeroed.debit, vec![50_000.0, 0.0, 0.0, 30_000.0]);
        assert_eq!(zeroed.collateral, vec![120_000.0, 1_000.0, 0.0, 300.0]);
        assert_eq!(zeroed.ltv, vec![50_000.0 / 120_000.0, 0.0, 0.0, 100.0]);
        assert_eq!(zeroed.by_asset, vec![1_300.0, 120_000.0, 1_000.0]);
        // Recognised: 48 000 (2 BTC at a weight of 0.4), 1 000, 0 and 300 (the token
        // weighs 0). Uncovered: account 0's 50 000 − 48 000 and account 3's 30 000 − 300.
        assert_eq!(zeroed.total_debit, 80_000.0);
        assert_eq!(zeroed.uncovered, 2_000.0 + 29_700.0);
        // Two accounts borrow: the top 3 has only them, the top 1 the larger.
        assert_eq!(zeroed.top_debits, vec![0, 3]);
        let top1 = collateral_figures(&params, &book, &prices, &weights, 1, &Zeroed);
        assert_eq!(top1.top_debits, vec![0]);
        assert!(
            collateral_figures(&params, &book, &prices, &weights, 0, &Zeroed)
                .top_debits
                .is_empty()
        );
    }

    /// Holdings laid out by account are summed as runs of rows; through the grouping,
    /// account by account. Both give the same bits on books of every shape: accounts
    /// without rows, long accounts, loans, zeros of both signs, ineligible assets, and
    /// more accounts than one chunk.
    #[test]
    fn runs_give_the_per_account_sums_bit_for_bit() {
        let mut rng = Rng(0x5eed_cafe);
        let n_assets = 5;
        let assets: Vec<AssetTerms> = (0..n_assets)
            .map(|asset| AssetTerms {
                price: [1.0, 61_234.57, 3_012.5, 0.1, 7.0][asset],
                weight: [1.0, 0.4, 0.35, 0.0, 0.9][asset],
                eligible: if asset == 3 { 0 } else { u64::MAX },
                total: 0.0,
            })
            .collect();
        for case in 0..200 {
            let n_accounts = match case % 4 {
                0 => 1 + rng.below(8) as usize,
                1 => 1 + rng.below(200) as usize,
                _ => 1 + rng.below(2 * COLLATERAL_CHUNK as u64) as usize,
            };
            let mut holdings = Vec::new();
            for account in 0..n_accounts as u32 {
                // Some accounts hold nothing; some hold every asset.
                for asset in 0..n_assets as u32 {
                    if rng.below(3) != 0 {
                        continue;
                    }
                    let amount = match rng.below(8) {
                        0 => 0.0,
                        1 => -0.0,
                        2 | 3 => -((rng.below(1_000_000) + 1) as f64) / 64.0,
                        _ => (rng.below(1_000_000_000) as f64) / 1e3,
                    };
                    holdings.push((account, asset, amount));
                }
            }
            let owned = TestBook::new(&vec![f64::INFINITY; n_accounts], &holdings, &[], None);
            let params = EngineParams::new(
                (0..n_assets)
                    .map(|asset| {
                        AssetParams::new(
                            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
                            asset != 3,
                            SizeTiers::default(),
                        )
                    })
                    .collect(),
                vec![],
                CallTarget::Initial,
            )
            .unwrap();
            let book = owned.book(&params);
            let starts = book.holding_groups.row_starts().expect("rows in key order");
            let (mut in_runs, mut per_account) = (assets.clone(), assets.clone());
            let mut runs = vec![CollateralSums::default(); n_accounts];
            let mut accounts = vec![CollateralSums::default(); n_accounts];
            sum_runs(
                &book.holdings,
                0..starts[n_accounts],
                0,
                &mut in_runs,
                &mut runs,
            );
            sum_per_account(&book, 0, &mut per_account, &mut accounts);
            let bits = |s: &CollateralSums| [s.debit, s.collateral, s.recognised].map(f64::to_bits);
            for (account, (a, b)) in runs.iter().zip(&accounts).enumerate() {
                assert_eq!(bits(a), bits(b), "case {case}, account {account}");
            }
            let totals = |t: &[AssetTerms]| t.iter().map(|a| a.total.to_bits()).collect::<Vec<_>>();
            assert_eq!(totals(&in_runs), totals(&per_account), "case {case}");
            // The whole report, chunk by chunk, writes those sums and their LTVs.
            let prices: Vec<f64> = assets.iter().map(|a| a.price).collect();
            let weights: Vec<f64> = assets.iter().map(|a| a.weight).collect();
            let figures = collateral_figures(&params, &book, &prices, &weights, 3, &Stale);
            for (account, sums) in accounts.iter().enumerate() {
                let ltv = crate::valuation::loan_to_value(sums.debit, sums.collateral);
                let written = [
                    figures.debit[account],
                    figures.collateral[account],
                    figures.ltv[account],
                ];
                assert_eq!(
                    written.map(f64::to_bits),
                    [sums.debit, sums.collateral, ltv].map(f64::to_bits),
                    "case {case}, account {account}"
                );
            }
        }
    }

    /// The largest debits across chunks: largest first, ties by row, as a stable sort
    /// of every positive debit would give.
    #[test]
    fn largest_debits_keep_ties_in_row_order_across_chunks() {
        let debits: Vec<f64> = (0..3 * COLLATERAL_CHUNK + 5)
            .map(|row| {
                [0.0, 7.0, 3.0, 7.0, 1.0, f64::NAN][row % 6] * (1.0 + (row % 5 == 0) as u8 as f64)
            })
            .collect();
        for top in [1, 4, 10, 50] {
            let mut chunks: Vec<(f64, u32)> = Vec::new();
            for (c, chunk) in debits.chunks(COLLATERAL_CHUNK).enumerate() {
                let mut largest = LargestDebits::new(top);
                for (i, &d) in chunk.iter().enumerate() {
                    largest.offer(d, c * COLLATERAL_CHUNK + i);
                }
                chunks.extend(largest.largest);
            }
            chunks.sort_by(|a, b| b.0.total_cmp(&a.0));
            let got: Vec<u32> = chunks.iter().take(top).map(|&(_, r)| r).collect();
            let mut all: Vec<usize> = (0..debits.len()).filter(|&r| debits[r] > 0.0).collect();
            all.sort_by(|&a, &b| debits[b].total_cmp(&debits[a]));
            let want: Vec<u32> = all.iter().take(top).map(|&r| r as u32).collect();
            assert_eq!(got, want, "top {top}");
        }
    }

    #[test]
    fn interest_is_exact_and_never_under_charged() {
        assert_eq!(
            interest(10_000.0, 0.08906, 7, DayCount::Act365, 2),
            Ok(1_708)
        );
        // 1 000 000 HKD at 6.8% for one day: 186.30136… → 186.31.
        assert_eq!(
            interest(1_000_000.0, 0.068, 1, DayCount::Act365, 2),
            Ok(18_631)
        );
        // USD at ACT/360: 100 000 × 8.25% × 30 / 360 = 687.50 exactly.
        assert_eq!(
            interest(100_000.0, 0.0825, 30, DayCount::Act360, 2),
            Ok(68_750)
        );
    }

    #[test]
    fn accrual_charges_each_loan_row() {
        let charges = accrue_interest(
            &[-1_000_000.0, 5.0, -100_000.0],
            &[0, 1, 1],
            &[0.068, 0.0825],
            &[DayCount::Act365, DayCount::Act360],
            &[2, 2],
            1,
        )
        .unwrap();
        // 186.3013… HKD → 18 631 cents; 22.9166… USD → 2 292 cents.
        assert_eq!(charges, vec![18_631, 0, 2_292]);
    }

    #[test]
    fn cures_without_size_tiers_match_the_closed_forms() {
        let none = SizeTiers::default();
        // Deposit C / (1 − h): 1 750 at a 30% haircut → 2 500.
        assert!((deposit_to_cure(1_750.0, 5_000.0, 0.30, &none).unwrap() - 2_500.0).abs() < 1e-9);
        // Sell C / (h − fee): 1 750 at 50% with a 0.25% fee → 3 517.587…
        let sale = sale_to_cure(1_750.0, 19_500.0, 0.50, 0.0025, &none).unwrap();
        assert!((sale - 1_750.0 / 0.4975).abs() < 1e-9);
        // Not enough to sell.
        assert_eq!(sale_to_cure(1_750.0, 1_000.0, 0.50, 0.0025, &none), None);
        assert_eq!(deposit_to_cure(1.0, 0.0, 1.0, &none), None);
    }

    #[test]
    fn cures_walk_the_size_bands() {
        // Bands: 100% credit up to 100, 50% above. h = 0.5.
        let tiers = SizeTiers::new(&[(0.0, 1.0), (100.0, 0.5)]).unwrap();
        // Holding 80: depositing 20 improves by 0.5·20 = 10, then 0.25 per unit.
        let x = deposit_to_cure(15.0, 80.0, 0.5, &tiers).unwrap();
        assert!((x - 40.0).abs() < 1e-12);
        // Holding 120: selling its top 20 improves by 1 − 0.25 = 0.75 each, then 0.5.
        let x = sale_to_cure(20.0, 120.0, 0.5, 0.0, &tiers).unwrap();
        assert!((x - (20.0 + 5.0 / 0.5)).abs() < 1e-12);
    }
}
