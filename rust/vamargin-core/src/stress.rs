//! Stress testing (SPEC §9): the whole book revalued under each scenario's prices.
//!
//! A scenario is a full set of prices: asset prices in the reporting currency and
//! perpetual marks (the caller moves the marks with their base). Each scenario is one
//! account sweep over the book as it is — nothing is validated, copied or regrouped again,
//! and no per-position columns are written: margins are computed inline and only the
//! totals the risk team reads are kept.
//!
//! The sweep runs over fixed blocks of accounts, and for each block over every scenario,
//! so a block's rows stay in cache while all scenarios are priced. Block totals are added
//! in block order, so results are bitwise identical for any number of threads.
//!
//! What a scenario reports (reporting currency):
//! - accounts by status, and isolated positions below their maintenance margin;
//! - `call_amount`: Σ call amounts of accounts in margin call or liquidation;
//! - the uncovered loss, split by who bears it: an account with negative equity that
//!   holds cross perpetuals is closed out on the platform, so its shortfall is an
//!   insurance-fund draw (as in [`crate::loss_allocation`]), and so is an isolated
//!   position's margin + uPnL below zero; a negative equity from margin loans alone is
//!   the broker's loss. Liquidation fees and ADL are not modelled: these are shortfalls
//!   at the stressed prices.

use rayon::prelude::*;

use crate::book::{check_len, Book};
use crate::error::{Error, Result};
use crate::params::EngineParams;
use crate::valuation::{cross_totals, holding_totals, value_account, Status};

/// Accounts per block: a block's rows are priced under every scenario before moving on.
const BLOCK: usize = 512;

/// Prices of `n` scenarios, row-major: scenario `s`'s asset prices are
/// `asset_prices[s * n_assets..][..n_assets]`, its marks `marks[s * n_perpetuals..]`.
#[derive(Debug, Clone, Copy)]
pub struct Scenarios<'a> {
    pub count: usize,
    pub asset_prices: &'a [f64],
    pub marks: &'a [f64],
}

/// One scenario's totals.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScenarioTotals {
    /// Accounts per [`Status`] code.
    pub accounts_by_status: [u64; 4],
    /// Isolated positions whose margin + uPnL is below their maintenance margin.
    pub isolated_liquidations: u64,
    pub call_amount: f64,
    /// Shortfalls on the perpetual platform: cross accounts with perpetuals and
    /// negative equity, and isolated positions below zero.
    pub insurance_draw: f64,
    /// Negative equity of accounts without perpetuals (margin loans gone bad).
    pub broker_loss: f64,
}

impl ScenarioTotals {
    fn add(&mut self, other: &ScenarioTotals) {
        for (mine, theirs) in self
            .accounts_by_status
            .iter_mut()
            .zip(other.accounts_by_status)
        {
            *mine += theirs;
        }
        self.isolated_liquidations += other.isolated_liquidations;
        self.call_amount += other.call_amount;
        self.insurance_draw += other.insurance_draw;
        self.broker_loss += other.broker_loss;
    }
}

/// The result of [`stress`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StressResult {
    pub totals: Vec<ScenarioTotals>,
    /// Per account, its lowest equity over all scenarios (empty unless asked for).
    pub min_equity: Vec<f64>,
}

impl Scenarios<'_> {
    /// Checks both price matrices hold `count` whole rows of the parameters' width.
    pub fn check(&self, params: &EngineParams) -> Result<()> {
        check_len(
            "scenario asset prices",
            self.count * params.assets.len(),
            self.asset_prices.len(),
        )?;
        check_len(
            "scenario marks",
            self.count * params.perpetuals.len(),
            self.marks.len(),
        )?;
        Ok(())
    }

    fn prices(&self, params: &EngineParams, scenario: usize) -> (&[f64], &[f64]) {
        let n_assets = params.assets.len();
        let n_perpetuals = params.perpetuals.len();
        (
            &self.asset_prices[scenario * n_assets..][..n_assets],
            &self.marks[scenario * n_perpetuals..][..n_perpetuals],
        )
    }
}

/// One account under one scenario.
#[derive(Debug, Clone, Copy)]
pub struct StressedAccount {
    pub equity: f64,
    pub status: Status,
    pub call_amount: f64,
    pub insurance_draw: f64,
    pub broker_loss: f64,
    pub isolated_liquidations: u64,
}

/// Values one account at one scenario's prices (margins computed inline).
pub fn stress_account(
    params: &EngineParams,
    book: &Book<'_>,
    asset_prices: &[f64],
    marks: &[f64],
    account: usize,
) -> StressedAccount {
    let positions = &book.positions;
    let margins_at = |row: usize| positions.margins_at(params, marks, row);
    let held = holding_totals(params, book, asset_prices, account);
    let mut has_cross = false;
    let cross = cross_totals(params, book, asset_prices, account, |row| {
        has_cross = true;
        margins_at(row)
    });
    let value = value_account(params, book.accounts.credit_limit[account], &held, &cross);
    let shortfall = (-value.equity).max(0.0);
    let mut stressed = StressedAccount {
        equity: value.equity,
        status: value.status,
        call_amount: value.call_amount,
        insurance_draw: if has_cross { shortfall } else { 0.0 },
        broker_loss: if has_cross { 0.0 } else { shortfall },
        isolated_liquidations: 0,
    };
    if positions.isolated_margin.is_some() {
        for row in book.position_groups.rows_of(account) {
            let Some(margin) = positions.isolated_margin(row) else {
                continue;
            };
            if positions.qty[row] == 0.0 {
                continue;
            }
            let m = margins_at(row);
            let balance = margin + m.upnl;
            if balance < m.maintenance_margin {
                stressed.isolated_liquidations += 1;
            }
            if balance < 0.0 {
                let contract = &params.perpetuals[positions.instrument[row] as usize];
                stressed.insurance_draw -= balance * asset_prices[contract.settle_asset as usize];
            }
        }
    }
    stressed
}

/// Revalues `book` under every scenario and totals each; with `keep_min_equity`, also
/// returns each account's lowest equity over the scenarios (to find the worst accounts).
pub fn stress(
    params: &EngineParams,
    book: &Book<'_>,
    scenarios: &Scenarios<'_>,
    keep_min_equity: bool,
) -> Result<StressResult> {
    scenarios.check(params)?;
    let n_scenarios = scenarios.count;
    let n_accounts = book.n_accounts();
    let mut min_equity = if keep_min_equity {
        vec![f64::INFINITY; n_accounts]
    } else {
        Vec::new()
    };
    let n_blocks = n_accounts.div_ceil(BLOCK);
    let block_totals: Vec<Vec<ScenarioTotals>> = if keep_min_equity {
        min_equity
            .par_chunks_mut(BLOCK)
            .enumerate()
            .map(|(block, lowest)| {
                stress_block(params, book, scenarios, n_scenarios, block, lowest)
            })
            .collect()
    } else {
        (0..n_blocks)
            .into_par_iter()
            .map(|block| stress_block(params, book, scenarios, n_scenarios, block, &mut []))
            .collect()
    };
    let mut totals = vec![ScenarioTotals::default(); n_scenarios];
    for block in &block_totals {
        for (total, part) in totals.iter_mut().zip(block) {
            total.add(part);
        }
    }
    Ok(StressResult { totals, min_equity })
}

/// One block of accounts under every scenario; `lowest` (empty, or one per account of
/// the block) receives each account's lowest equity.
fn stress_block(
    params: &EngineParams,
    book: &Book<'_>,
    scenarios: &Scenarios<'_>,
    n_scenarios: usize,
    block: usize,
    lowest: &mut [f64],
) -> Vec<ScenarioTotals> {
    let first = block * BLOCK;
    let end = (first + BLOCK).min(book.n_accounts());
    (0..n_scenarios)
        .map(|scenario| {
            let (asset_prices, marks) = scenarios.prices(params, scenario);
            let mut totals = ScenarioTotals::default();
            for account in first..end {
                let a = stress_account(params, book, asset_prices, marks, account);
                totals.accounts_by_status[a.status as usize] += 1;
                totals.isolated_liquidations += a.isolated_liquidations;
                totals.call_amount += a.call_amount;
                totals.insurance_draw += a.insurance_draw;
                totals.broker_loss += a.broker_loss;
                if let Some(low) = lowest.get_mut(account - first) {
                    *low = low.min(a.equity);
                }
            }
            totals
        })
        .collect()
}

/// The equity of each of `accounts` under each scenario, scenario-major:
/// `out[s * accounts.len() + k]`.
pub fn stressed_equity(
    params: &EngineParams,
    book: &Book<'_>,
    scenarios: &Scenarios<'_>,
    accounts: &[u32],
) -> Result<Vec<f64>> {
    scenarios.check(params)?;
    let n_scenarios = scenarios.count;
    let n_accounts = book.n_accounts();
    if let Some((row, &id)) = accounts
        .iter()
        .enumerate()
        .find(|(_, &a)| a as usize >= n_accounts)
    {
        return Err(Error::IdOutOfRange {
            column: "accounts",
            row,
            id: u64::from(id),
            len: n_accounts,
        });
    }
    Ok((0..n_scenarios)
        .into_par_iter()
        .flat_map_iter(|scenario| {
            let (asset_prices, marks) = scenarios.prices(params, scenario);
            accounts.iter().map(move |&account| {
                stress_account(params, book, asset_prices, marks, account as usize).equity
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{AssetParams, CallTarget, Haircuts, PerpetualParams};
    use crate::perp::ContractKind;
    use crate::test_book::TestBook;
    use crate::tiers::{SizeTiers, TierTable};

    #[test]
    fn loan_and_cross_perpetual_under_two_falls() {
        // Assets: USD (cash), BTC (haircuts 60/50/40). One perpetual on BTC settled in USD,
        // 1% maintenance, 50x.
        let cash = AssetParams::new(
            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
            true,
            SizeTiers::default(),
        );
        let btc = AssetParams::new(
            Haircuts::new(0.6, 0.5, 0.4).unwrap(),
            true,
            SizeTiers::default(),
        );
        let tiers = TierTable::new(&[(0.0, 0.01, 50.0)]).unwrap();
        let params = EngineParams::new(
            vec![cash, btc],
            vec![PerpetualParams::new(ContractKind::Linear, 1.0, 0, tiers).unwrap()],
            CallTarget::Initial,
        )
        .unwrap();
        // Account 0: 1 BTC against a 40 000 USD loan. Account 1: 10 000 USD and a cross
        // long of 1 entered at 100 000.
        let owned = TestBook::new(
            &[f64::INFINITY; 2],
            &[(0, 1, 1.0), (0, 0, -40_000.0), (1, 0, 10_000.0)],
            &[(1, 0, 1.0, 100_000.0)],
            None,
        );
        let book = owned.book(&params);
        // BTC −30% and −70%, the mark with it.
        let scenarios = Scenarios {
            count: 2,
            asset_prices: &[1.0, 70_000.0, 1.0, 30_000.0],
            marks: &[70_000.0, 30_000.0],
        };
        let result = stress(&params, &book, &scenarios, true).unwrap();
        // −30%: account 0 has 30 000 in [28 000, 35 000): margin call for 42 000 − 30 000;
        // account 1 has −20 000: liquidation, call 1 400 + 20 000, an insurance draw.
        let fall = result.totals[0];
        assert_eq!(fall.accounts_by_status, [0, 0, 1, 1]);
        assert_eq!(fall.call_amount, 12_000.0 + 21_400.0);
        assert_eq!((fall.insurance_draw, fall.broker_loss), (20_000.0, 0.0));
        // −70%: account 0 has −10 000 (the broker's), account 1 has −60 000.
        let crash = result.totals[1];
        assert_eq!(crash.accounts_by_status, [0, 0, 0, 2]);
        assert_eq!(crash.call_amount, 28_000.0 + 60_600.0);
        assert_eq!(
            (crash.insurance_draw, crash.broker_loss),
            (60_000.0, 10_000.0)
        );
        assert_eq!(result.min_equity, vec![-10_000.0, -60_000.0]);
        let equity = stressed_equity(&params, &book, &scenarios, &[1, 0]).unwrap();
        assert_eq!(equity, vec![-20_000.0, 30_000.0, -60_000.0, -10_000.0]);
        // A price matrix one row short is an error, not a panic.
        let short = Scenarios {
            count: 2,
            asset_prices: &[1.0, 70_000.0],
            marks: &[70_000.0],
        };
        assert!(matches!(
            stress(&params, &book, &short, false),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(stressed_equity(&params, &book, &scenarios, &[2]).is_err());
    }
}
