//! Stress testing (SPEC §9): the whole book revalued under each scenario's prices.
//!
//! A scenario is a full set of prices: asset prices in the reporting currency and
//! perpetual marks (the caller moves the marks with their base). Each scenario is one
//! account sweep over the book as it is — nothing is validated or regrouped again, and no
//! per-position columns are written: margins are computed inline and only the totals the
//! risk team reads are kept.
//!
//! The sweep runs over fixed blocks of accounts, and for each block over every scenario,
//! so a block's rows stay in cache while all scenarios are priced. A block's rows are read
//! from the book once, into what does not move with the prices (a position's `|q|·cs`,
//! `q·cs`, entry term and leverage, holdings as pairs, cross and isolated rows apart), so
//! a scenario reads only that and its prices. Where the CPU has AVX-512, a block's
//! positions are priced under a scenario eight rows at a time (the revaluation's margins
//! step, `position_lanes`) before its accounts are summed. Every figure is
//! bitwise a revaluation's at the same prices. Block totals are added in block order, so results are bitwise
//! identical for any number of threads.
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
use crate::perp::PositionTerms;
use crate::position_lanes::{MarginColumns, MarginRows, PositionLanes};
use crate::steps::Steps;
use crate::valuation::{sum_holdings, value_account, CrossSums, HoldingTotals, Quote, Status};

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

/// Every scenario's quotes, made once per stress run.
struct Quotes<'p> {
    /// Scenario-major: `per_scenario` (one per perpetual) for each scenario.
    all: Vec<Quote<'p>>,
    per_scenario: usize,
}

impl<'p> Quotes<'p> {
    fn new(params: &'p EngineParams, scenarios: &Scenarios<'_>) -> Self {
        let all = (0..scenarios.count)
            .flat_map(|scenario| {
                let (asset_prices, marks) = scenarios.prices(params, scenario);
                params
                    .perpetuals
                    .iter()
                    .zip(marks)
                    .map(|(contract, &mark)| Quote::new(contract, mark, asset_prices))
            })
            .collect();
        Quotes {
            all,
            per_scenario: params.perpetuals.len(),
        }
    }

    /// Scenario `scenario`'s quotes, one per perpetual.
    fn of(&self, scenario: usize) -> &[Quote<'p>] {
        &self.all[scenario * self.per_scenario..][..self.per_scenario]
    }
}

/// A live position, in the form every scenario prices it.
#[derive(Debug, Clone, Copy)]
struct PreparedPosition {
    contract: u32,
    terms: PositionTerms,
}

/// The rows of some accounts, read from the book once and kept in the form every
/// scenario reads: holdings as `(asset, amount)`, live positions split into cross and
/// isolated ones with their [`PositionTerms`]. Each list holds the accounts' rows one
/// account after the other, in the groupings' key order, so every sum adds the same
/// terms in the same order as [`crate::valuation`] and the figures are bitwise the same.
struct Prepared {
    /// Per account, where its rows end in `holdings`, `cross` and `isolated`.
    ends: Vec<[usize; 3]>,
    credit_limit: Vec<f64>,
    holdings: Vec<(u32, f64)>,
    cross: Vec<PreparedPosition>,
    /// With the position's isolated margin.
    isolated: Vec<(PreparedPosition, f64)>,
    /// The same cross and isolated rows as the book has them, for the lanes.
    cross_rows: RowColumns,
    isolated_rows: RowColumns,
}

/// Live positions' columns as the book has them (the leverage NaN where none), for the
/// margins lane step.
#[derive(Debug, Default)]
struct RowColumns {
    qty: Vec<f64>,
    entry_price: Vec<f64>,
    instrument: Vec<u32>,
    leverage: Vec<f64>,
}

impl RowColumns {
    fn push(&mut self, qty: f64, entry_price: f64, instrument: u32, leverage: f64) {
        self.qty.push(qty);
        self.entry_price.push(entry_price);
        self.instrument.push(instrument);
        self.leverage.push(leverage);
    }

    fn rows(&self) -> MarginRows<'_> {
        MarginRows {
            qty: &self.qty,
            entry_price: &self.entry_price,
            instrument: &self.instrument,
            leverage: Some(&self.leverage),
            isolated_margin: None,
        }
    }
}

/// The margins step's outputs for a list of rows under one scenario, one figure after
/// the other in one column: notional, uPnL, initial and maintenance margin, and the three
/// cross contributions; and the tiers.
struct RowFigures {
    figures: Vec<f64>,
    tier: Vec<u8>,
}

impl RowFigures {
    fn new(rows: usize) -> Self {
        RowFigures {
            figures: vec![0.0; 7 * rows],
            tier: vec![0; rows],
        }
    }

    /// `rows`' figures under the scenario whose quotes `lanes` holds.
    fn price(&mut self, lanes: &PositionLanes, rows: &RowColumns) {
        let n = self.tier.len();
        let (notional, rest) = self.figures.split_at_mut(n);
        let (upnl, rest) = rest.split_at_mut(n);
        let (initial_margin, rest) = rest.split_at_mut(n);
        let (maintenance_margin, rest) = rest.split_at_mut(n);
        let (cross_upnl, rest) = rest.split_at_mut(n);
        let (cross_initial, cross_maintenance) = rest.split_at_mut(n);
        lanes.margins(
            rows.rows(),
            MarginColumns {
                notional,
                upnl,
                initial_margin,
                maintenance_margin,
                tier: &mut self.tier,
                cross_upnl,
                cross_initial,
                cross_maintenance,
            },
        );
    }

    /// Figure `k` (in the order above) of every row.
    fn figure(&self, k: usize) -> &[f64] {
        let n = self.tier.len();
        &self.figures[k * n..(k + 1) * n]
    }
}

impl Prepared {
    fn new(params: &EngineParams, book: &Book<'_>, accounts: impl Iterator<Item = usize>) -> Self {
        let (holdings, positions) = (&book.holdings, &book.positions);
        let mut prepared = Prepared {
            ends: Vec::new(),
            credit_limit: Vec::new(),
            holdings: Vec::new(),
            cross: Vec::new(),
            isolated: Vec::new(),
            cross_rows: RowColumns::default(),
            isolated_rows: RowColumns::default(),
        };
        for account in accounts {
            prepared
                .credit_limit
                .push(book.accounts.credit_limit[account]);
            prepared.holdings.extend(
                book.holding_groups
                    .rows_of(account)
                    .map(|row| (holdings.asset[row], holdings.amount[row])),
            );
            for row in book.position_groups.rows_of(account) {
                let qty = positions.qty[row];
                // Empty positions are ignored (as in a revaluation).
                if qty == 0.0 {
                    continue;
                }
                let contract = positions.instrument[row];
                let (entry_price, leverage) = (positions.entry_price[row], positions.leverage(row));
                let position = PreparedPosition {
                    contract,
                    terms: PositionTerms::new(
                        &params.perpetuals[contract as usize],
                        qty,
                        entry_price,
                        leverage,
                    ),
                };
                match positions.isolated_margin(row) {
                    Some(margin) => {
                        prepared.isolated.push((position, margin));
                        prepared
                            .isolated_rows
                            .push(qty, entry_price, contract, leverage);
                    }
                    None => {
                        prepared.cross.push(position);
                        prepared
                            .cross_rows
                            .push(qty, entry_price, contract, leverage);
                    }
                }
            }
            prepared.ends.push([
                prepared.holdings.len(),
                prepared.cross.len(),
                prepared.isolated.len(),
            ]);
        }
        prepared
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where the `i`-th account's cross and isolated rows start and end, and its
    /// holdings valued at `asset_prices`.
    #[inline(always)]
    fn positions_and_holdings(
        &self,
        params: &EngineParams,
        i: usize,
        asset_prices: &[f64],
    ) -> ([usize; 2], [usize; 2], HoldingTotals) {
        let [holdings_start, cross_start, isolated_start] = match i {
            0 => [0; 3],
            _ => self.ends[i - 1],
        };
        let [holdings_end, cross_end, isolated_end] = self.ends[i];
        let held = sum_holdings(
            params,
            asset_prices,
            self.holdings[holdings_start..holdings_end].iter().copied(),
        );
        (
            [cross_start, isolated_start],
            [cross_end, isolated_end],
            held,
        )
    }

    /// The `i`-th account at one scenario's `asset_prices` and `quotes`.
    #[inline]
    fn account(
        &self,
        params: &EngineParams,
        i: usize,
        asset_prices: &[f64],
        quotes: &[Quote<'_>],
    ) -> StressedAccount {
        let ([cross_start, isolated_start], [cross_end, isolated_end], held) =
            self.positions_and_holdings(params, i, asset_prices);
        let margins = |position: &PreparedPosition| {
            let quote = &quotes[position.contract as usize];
            let figures = position.terms.margins(quote.contract, &quote.mark);
            (figures, quote.settle_price)
        };
        let cross_rows = &self.cross[cross_start..cross_end];
        let mut cross = CrossSums::default();
        for position in cross_rows {
            let (figures, settle_price) = margins(position);
            cross.add(&CrossSums::of(&figures, settle_price));
        }
        let isolated =
            self.isolated[isolated_start..isolated_end]
                .iter()
                .map(|(position, margin)| {
                    let (figures, settle_price) = margins(position);
                    (
                        *margin,
                        figures.upnl,
                        figures.maintenance_margin,
                        settle_price,
                    )
                });
        self.close(params, i, &held, &cross, !cross_rows.is_empty(), isolated)
    }

    /// [`Self::account`] from its positions' figures under the scenario (`cross` and
    /// `isolated`: the margins lane step's over the block's cross and isolated rows).
    #[inline]
    fn account_from_figures(
        &self,
        params: &EngineParams,
        i: usize,
        asset_prices: &[f64],
        quotes: &[Quote<'_>],
        figures: &BlockFigures,
    ) -> StressedAccount {
        let ([cross_start, isolated_start], [cross_end, isolated_end], held) =
            self.positions_and_holdings(params, i, asset_prices);
        let (upnl, initial, maintenance) = (
            figures.cross.figure(4),
            figures.cross.figure(5),
            figures.cross.figure(6),
        );
        let mut cross = CrossSums::default();
        for row in cross_start..cross_end {
            cross.add(&CrossSums {
                upnl: upnl[row],
                initial_margin: initial[row],
                maintenance_margin: maintenance[row],
            });
        }
        let (upnl, maintenance) = (figures.isolated.figure(1), figures.isolated.figure(3));
        let isolated = (isolated_start..isolated_end).map(|row| {
            let settle_price = quotes[self.isolated_rows.instrument[row] as usize].settle_price;
            (
                self.isolated[row].1,
                upnl[row],
                maintenance[row],
                settle_price,
            )
        });
        self.close(params, i, &held, &cross, cross_end > cross_start, isolated)
    }

    /// The `i`-th account from its valued holdings, its cross sums, and its isolated
    /// positions' `(margin, uPnL, maintenance margin, settle price)`.
    #[inline(always)]
    fn close(
        &self,
        params: &EngineParams,
        i: usize,
        held: &HoldingTotals,
        cross: &CrossSums,
        has_cross: bool,
        isolated: impl Iterator<Item = (f64, f64, f64, f64)>,
    ) -> StressedAccount {
        let value = value_account(params, self.credit_limit[i], held, cross);
        let shortfall = (-value.equity).max(0.0);
        // An account with cross perpetuals is closed out on the platform: its shortfall is
        // the insurance fund's; without, negative equity is a margin loan gone bad.
        let mut stressed = StressedAccount {
            equity: value.equity,
            status: value.status,
            call_amount: value.call_amount,
            insurance_draw: if has_cross { shortfall } else { 0.0 },
            broker_loss: if has_cross { 0.0 } else { shortfall },
            isolated_liquidations: 0,
        };
        for (margin, upnl, maintenance, settle_price) in isolated {
            let balance = margin + upnl;
            if balance < maintenance {
                stressed.isolated_liquidations += 1;
            }
            if balance < 0.0 {
                stressed.insurance_draw -= balance * settle_price;
            }
        }
        stressed
    }
}

/// A block's positions' figures under one scenario, from the margins lane step.
struct BlockFigures {
    cross: RowFigures,
    isolated: RowFigures,
}

impl BlockFigures {
    fn new(prepared: &Prepared) -> Self {
        BlockFigures {
            cross: RowFigures::new(prepared.cross.len()),
            isolated: RowFigures::new(prepared.isolated.len()),
        }
    }

    /// The block's figures under the scenario whose quotes `lanes` holds.
    fn price(&mut self, lanes: &PositionLanes, prepared: &Prepared) {
        self.cross.price(lanes, &prepared.cross_rows);
        self.isolated.price(lanes, &prepared.isolated_rows);
    }
}

/// Revalues `book` under every scenario and totals each; with `keep_min_equity`, also
/// returns each account's lowest equity over the scenarios (to find the worst accounts).
pub fn stress(
    params: &EngineParams,
    book: &Book<'_>,
    scenarios: &Scenarios<'_>,
    keep_min_equity: bool,
) -> Result<StressResult> {
    stress_with(
        params,
        book,
        scenarios,
        keep_min_equity,
        Steps::from_environment(),
    )
}

/// [`stress`], its positions' margins run as `steps` says.
fn stress_with(
    params: &EngineParams,
    book: &Book<'_>,
    scenarios: &Scenarios<'_>,
    keep_min_equity: bool,
    steps: Steps,
) -> Result<StressResult> {
    scenarios.check(params)?;
    let quotes = Quotes::new(params, scenarios);
    let n_scenarios = scenarios.count;
    let n_accounts = book.n_accounts();
    // One per scenario (its quotes in the tables), or none.
    let lanes: Option<Vec<PositionLanes>> = (0..n_scenarios)
        .map(|scenario| steps.lanes(|| PositionLanes::new(quotes.of(scenario))))
        .collect();
    let lanes = lanes.as_deref();
    let mut min_equity = if keep_min_equity {
        vec![f64::INFINITY; n_accounts]
    } else {
        Vec::new()
    };
    let n_blocks = n_accounts.div_ceil(BLOCK);
    let run_block = |block: usize, lowest: &mut [f64]| {
        stress_block(params, book, scenarios, &quotes, lanes, block, lowest)
    };
    let block_totals: Vec<Vec<ScenarioTotals>> = if keep_min_equity {
        min_equity
            .par_chunks_mut(BLOCK)
            .enumerate()
            .map(|(block, lowest)| run_block(block, lowest))
            .collect()
    } else {
        (0..n_blocks)
            .into_par_iter()
            .map(|block| run_block(block, &mut []))
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
/// the block) receives each account's lowest equity. The block's rows are prepared once
/// and stay in cache while every scenario prices them.
fn stress_block(
    params: &EngineParams,
    book: &Book<'_>,
    scenarios: &Scenarios<'_>,
    quotes: &Quotes<'_>,
    lanes: Option<&[PositionLanes]>,
    block: usize,
    lowest: &mut [f64],
) -> Vec<ScenarioTotals> {
    let first = block * BLOCK;
    let end = (first + BLOCK).min(book.n_accounts());
    let prepared = Prepared::new(params, book, first..end);
    let mut figures = lanes.map(|_| BlockFigures::new(&prepared));
    (0..scenarios.count)
        .map(|scenario| {
            let (asset_prices, _) = scenarios.prices(params, scenario);
            let quotes = quotes.of(scenario);
            if let (Some(figures), Some(lanes)) = (&mut figures, lanes) {
                figures.price(&lanes[scenario], &prepared);
            }
            let mut totals = ScenarioTotals::default();
            for i in 0..prepared.len() {
                let a = match &figures {
                    Some(figures) => {
                        prepared.account_from_figures(params, i, asset_prices, quotes, figures)
                    }
                    None => prepared.account(params, i, asset_prices, quotes),
                };
                totals.accounts_by_status[a.status as usize] += 1;
                totals.isolated_liquidations += a.isolated_liquidations;
                totals.call_amount += a.call_amount;
                totals.insurance_draw += a.insurance_draw;
                totals.broker_loss += a.broker_loss;
                if let Some(low) = lowest.get_mut(i) {
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
    let quotes = Quotes::new(params, scenarios);
    let prepared = Prepared::new(params, book, accounts.iter().map(|&a| a as usize));
    Ok((0..scenarios.count)
        .into_par_iter()
        .flat_map_iter(|scenario| {
            let (asset_prices, _) = scenarios.prices(params, scenario);
            let quotes = quotes.of(scenario);
            let prepared = &prepared;
            (0..prepared.len())
                .map(move |i| prepared.account(params, i, asset_prices, quotes).equity)
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

    /// USD (no haircut) and BTC (haircuts 60/50/40, credited by `btc_tiers`).
    fn cash_and_btc(btc_tiers: SizeTiers) -> (AssetParams, AssetParams) {
        let cash = AssetParams::new(
            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
            true,
            SizeTiers::default(),
        );
        let btc = AssetParams::new(Haircuts::new(0.6, 0.5, 0.4).unwrap(), true, btc_tiers);
        (cash, btc)
    }

    /// Stress with the margins lane step gives the one-row steps' totals and lowest
    /// equities bit for bit: 3 books of up to 3 blocks, linear and inverse contracts of
    /// several brackets, cross and isolated positions, loans, and 12 scenarios from a
    /// crash to a squeeze.
    #[test]
    fn the_lane_steps_give_the_one_row_stress_bit_for_bit() {
        use crate::test_rng::Rng;
        let (cash, btc) = cash_and_btc(SizeTiers::new(&[(0.0, 1.0), (200_000.0, 0.5)]).unwrap());
        let tiers = TierTable::new(&[
            (0.0, 0.004, 125.0),
            (50_000.0, 0.005, 100.0),
            (250_000.0, 0.01, 50.0),
            (1_000_000.0, 0.025, 20.0),
        ])
        .unwrap();
        let params = EngineParams::new(
            vec![cash, btc],
            vec![
                PerpetualParams::new(ContractKind::Linear, 0.001, 0, tiers.clone()).unwrap(),
                PerpetualParams::new(ContractKind::Inverse, 100.0, 1, tiers).unwrap(),
            ],
            CallTarget::Initial,
        )
        .unwrap();
        let moves = [
            -0.9, -0.6, -0.3, -0.1, -0.02, 0.0, 0.01, 0.05, 0.2, 0.5, 1.0, 3.0,
        ];
        let asset_prices: Vec<f64> = moves
            .iter()
            .flat_map(|m| [1.0, 60_000.0 * (1.0 + m)])
            .collect();
        let marks: Vec<f64> = moves
            .iter()
            .flat_map(|m| [60_000.0 * (1.0 + m); 2])
            .collect();
        let scenarios = Scenarios {
            count: moves.len(),
            asset_prices: &asset_prices,
            marks: &marks,
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for n_accounts in [7, BLOCK + 3, 2 * BLOCK + 101] {
            let mut holdings = Vec::new();
            let mut positions = Vec::new();
            let mut isolated = Vec::new();
            for account in 0..n_accounts as u32 {
                holdings.push((account, 0, rng.below(60_000) as f64 - 20_000.0));
                if rng.below(2) == 0 {
                    holdings.push((account, 1, rng.below(800) as f64 / 100.0));
                }
                for _ in 0..rng.below(7) {
                    let qty = match rng.below(8) {
                        0 => 0.0,
                        k => (rng.below(20_000) as f64 + 1.0) * if k % 2 == 0 { 1.0 } else { -1.0 },
                    };
                    let entry = 40_000.0 + rng.below(40_000) as f64;
                    positions.push((account, rng.below(2) as u32, qty, entry));
                    isolated.push(if rng.below(3) == 0 {
                        rng.below(5_000) as f64
                    } else {
                        f64::NAN
                    });
                }
            }
            let credit = vec![f64::INFINITY; n_accounts];
            let owned = TestBook::new(&credit, &holdings, &positions, Some(&isolated));
            let book = owned.book(&params);
            let lanes = stress_with(&params, &book, &scenarios, true, Steps::Best).unwrap();
            let one_row = stress_with(&params, &book, &scenarios, true, Steps::Scalar).unwrap();
            let bits = |r: &StressResult| {
                let mut bits: Vec<u64> = r.min_equity.iter().map(|x| x.to_bits()).collect();
                for t in &r.totals {
                    bits.extend(t.accounts_by_status);
                    bits.push(t.isolated_liquidations);
                    bits.extend([t.call_amount, t.insurance_draw, t.broker_loss].map(f64::to_bits));
                }
                bits
            };
            assert!(bits(&lanes) == bits(&one_row), "{n_accounts} accounts");
            // The scenarios reach every status and liquidate isolated positions.
            let reached: u64 = lanes.totals.iter().map(|t| t.accounts_by_status[3]).sum();
            assert!(reached > 0 && lanes.totals.iter().any(|t| t.isolated_liquidations > 0));
        }
    }

    #[test]
    fn loan_and_cross_perpetual_under_two_falls() {
        // Assets: USD (cash), BTC (haircuts 60/50/40). One perpetual on BTC settled in USD,
        // 1% maintenance, 50x.
        let (cash, btc) = cash_and_btc(SizeTiers::default());
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
