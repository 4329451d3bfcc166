//! Account revaluation: values holdings and perpetuals together.
//!
//! Per position: notional, uPnL, tier, initial and maintenance margin; per account (its
//! rows in key order, so sums are bitwise reproducible): equity, requirements, ratios and
//! status; then per position the liquidation and bankruptcy prices and ADL score, which
//! need the account's totals. A book whose positions are laid out by account does all
//! three in one pass over blocks of accounts; any other book in three parallel sweeps
//! (see `Walk`).
//!
//! The per-row steps (a position's margins, balances and prices) run eight rows at a time
//! where the CPU has AVX-512 (see `position_lanes`), with the same bits as the
//! one-row steps here.
//!
//! Money here is `f64` in the reporting currency (risk measures, not cash movements).

use std::ops::Range;

use crate::book::{Book, Positions, RowsOf};
use crate::columns::{Columns, Zeroed};
use crate::error::{Error, Result};
use crate::parallel::{column_bundle, for_each_chunk, SplitRows};
use crate::params::{CallTarget, EngineParams, PerpetualParams};
use crate::perp;
use crate::position_lanes::{
    AccountBacking, BalanceRows, MarginColumns, MarginRows, PositionLanes, PriceRows, LANES,
};
use crate::prefetch::Prefetch;
use crate::steps::Steps;

const POSITION_CHUNK: usize = 16 * 1024;
const ACCOUNT_CHUNK: usize = 2 * 1024;
/// Rows (or accounts) whose scattered reads [`Walk::Sweeps`] makes together, before the
/// work that needs them: enough loads in flight to hide most of a cache miss.
const GATHER: usize = 16;
/// How far ahead of its gathers [`Walk::Sweeps`] sends for scattered rows (rows, or
/// accounts in the account pass): far enough that they arrive in time.
const PREFETCH_AHEAD: usize = 2 * GATHER;
/// The group of [`GATHER`] rows (or accounts) [`PREFETCH_AHEAD`] on from the group at
/// `start`, of `n`: what a sweep sends for before gathering its group at `start`.
fn gather_ahead(start: usize, n: usize) -> Range<usize> {
    (start + PREFETCH_AHEAD).min(n)..(start + PREFETCH_AHEAD + GATHER).min(n)
}

/// Rows of accounts laid out by account that the one-pass walk takes through each lane
/// step at once (more when one account has more): their figures stay in the nearest
/// caches between the steps.
const LANE_BLOCK_ROWS: usize = 512;

/// Margin status, worst last. The discriminant is the code used in result columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    Normal = 0,
    Restricted = 1,
    MarginCall = 2,
    Liquidation = 3,
}

impl Status {
    pub const NAMES: [&'static str; 4] = ["normal", "restricted", "margin_call", "liquidation"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Prices by dense id: assets in the reporting currency, perpetual marks in their quote.
#[derive(Debug, Clone, Copy)]
pub struct Market<'a> {
    pub asset_prices: &'a [f64],
    pub marks: &'a [f64],
}

/// Per-position results, in the book's position row order; amounts in settle currency.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PositionFigures {
    pub notional: Vec<f64>,
    pub upnl: Vec<f64>,
    pub initial_margin: Vec<f64>,
    pub maintenance_margin: Vec<f64>,
    /// 1-based bracket number.
    pub tier: Vec<u8>,
    /// NaN where no positive price liquidates the position.
    pub liquidation_price: Vec<f64>,
    /// NaN where no positive price bankrupts the position.
    pub bankruptcy_price: Vec<f64>,
    /// NaN for empty positions and positions with no positive margin balance.
    pub adl_score: Vec<f64>,
}

/// Per-account results, in the accounts table's row order; reporting currency.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountFigures {
    pub equity: Vec<f64>,
    pub collateral_value: Vec<f64>,
    pub debit: Vec<f64>,
    pub upnl: Vec<f64>,
    pub initial_requirement: Vec<f64>,
    pub maintenance_requirement: Vec<f64>,
    pub liquidation_requirement: Vec<f64>,
    pub excess: Vec<f64>,
    pub margin_ratio: Vec<f64>,
    pub ltv: Vec<f64>,
    pub call_amount: Vec<f64>,
    /// [`Status`] codes.
    pub status: Vec<u8>,
}

/// The result of [`revalue`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Revaluation {
    pub accounts: AccountFigures,
    pub positions: PositionFigures,
}

column_bundle!(
    /// The position result columns. Sweep 1 of [`Walk::Sweeps`] leaves each row's
    /// contribution to its account's cross sums (reporting currency; 0 for isolated and
    /// empty rows) in the last three until sweep 3 overwrites them, a row's three figures
    /// side by side (see `Contributions`): the account pass then reads one place per row
    /// (on a shuffled book each read is a cache miss), and no scratch memory is added.
    PositionColumns {
        notional: f64,
        upnl: f64,
        initial_margin: f64,
        maintenance_margin: f64,
        tier: u8,
        liquidation_price: f64,
        bankruptcy_price: f64,
        adl_score: f64,
    }
);

column_bundle!(
    /// Sweep-3 outputs. The prices lane step reads each row's three balances from them
    /// and writes its prices over them.
    PositionPrices {
        liquidation_price: f64,
        bankruptcy_price: f64,
        adl_score: f64,
    }
);

column_bundle!(
    /// The account result columns.
    AccountColumns {
        equity: f64,
        collateral_value: f64,
        debit: f64,
        upnl: f64,
        initial_requirement: f64,
        maintenance_requirement: f64,
        liquidation_requirement: f64,
        excess: f64,
        margin_ratio: f64,
        ltv: f64,
        call_amount: f64,
        status: u8,
    }
);

impl PositionFigures {
    fn columns(&mut self) -> PositionColumns<'_> {
        PositionColumns {
            notional: &mut self.notional,
            upnl: &mut self.upnl,
            initial_margin: &mut self.initial_margin,
            maintenance_margin: &mut self.maintenance_margin,
            tier: &mut self.tier,
            liquidation_price: &mut self.liquidation_price,
            bankruptcy_price: &mut self.bankruptcy_price,
            adl_score: &mut self.adl_score,
        }
    }
}

impl AccountFigures {
    fn columns(&mut self) -> AccountColumns<'_> {
        AccountColumns {
            equity: &mut self.equity,
            collateral_value: &mut self.collateral_value,
            debit: &mut self.debit,
            upnl: &mut self.upnl,
            initial_requirement: &mut self.initial_requirement,
            maintenance_requirement: &mut self.maintenance_requirement,
            liquidation_requirement: &mut self.liquidation_requirement,
            excess: &mut self.excess,
            margin_ratio: &mut self.margin_ratio,
            ltv: &mut self.ltv,
            call_amount: &mut self.call_amount,
            status: &mut self.status,
        }
    }
}

/// Sweep-2 outputs of [`Walk::Sweeps`]: the account columns, and what backs each
/// account's cross positions for sweep 3.
type AccountRows<'a> = (AccountColumns<'a>, &'a mut [CrossBacking]);

/// What backs an account's cross positions, in the reporting currency: everything a
/// position's prices read of its account, packed in one row so that a position reaches
/// it in one cache line (a shuffled book's positions reach their accounts at random).
/// Indexed by the constants below.
type CrossBacking = [f64; 5];

/// Σ holdings value − holdings' liquidation requirement (Binance's wallet balance for a
/// cash-only account).
const WALLET: usize = 0;
const HOLDINGS_VALUE: usize = 1;
/// Σ maintenance margin of the cross positions.
const CROSS_MAINTENANCE: usize = 2;
/// Σ uPnL of the cross positions.
const CROSS_UPNL: usize = 3;
const EQUITY: usize = 4;

/// An account's holdings, valued (reporting currency).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HoldingTotals {
    pub value: f64,
    pub debit: f64,
    pub collateral: f64,
    pub initial: f64,
    pub maintenance: f64,
    pub liquidation: f64,
}

/// Values an account's holdings and their three requirements, rows in key order.
#[inline(always)]
pub(crate) fn holding_totals(
    params: &EngineParams,
    book: &Book<'_>,
    prices: &[f64],
    account: usize,
) -> HoldingTotals {
    let holdings = &book.holdings;
    // Rows laid out by account are two slices, walked without an index or its bounds
    // checks; a loop per case keeps each one tight.
    match book.holding_groups.rows_of(account) {
        RowsOf::InPlace(rows) => {
            let (assets, amounts) = (&holdings.asset[rows.clone()], &holdings.amount[rows]);
            sum_holdings(
                params,
                prices,
                assets.iter().copied().zip(amounts.iter().copied()),
            )
        }
        reordered => sum_holdings(
            params,
            prices,
            reordered.map(|row| (holdings.asset[row], holdings.amount[row])),
        ),
    }
}

/// [`holding_totals`] of `(asset id, amount)` pairs.
#[inline(always)]
pub(crate) fn sum_holdings(
    params: &EngineParams,
    prices: &[f64],
    holdings: impl Iterator<Item = (u32, f64)>,
) -> HoldingTotals {
    let mut totals = HoldingTotals::default();
    for (asset_id, amount) in holdings {
        let asset_id = asset_id as usize;
        let asset = &params.assets[asset_id];
        let v = amount * prices[asset_id];
        totals.value += v;
        if v < 0.0 {
            totals.debit -= v;
        } else if v > 0.0 {
            let credited = asset.size_tiers.credited_value(v);
            totals.initial += v - (1.0 - asset.haircuts.initial) * credited;
            totals.maintenance += v - (1.0 - asset.haircuts.maintenance) * credited;
            totals.liquidation += v - (1.0 - asset.haircuts.liquidation) * credited;
            if asset.eligible {
                totals.collateral += v;
            }
        }
    }
    totals
}

/// An account's cross positions, summed in reporting currency.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CrossSums {
    pub upnl: f64,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
}

/// Sums the cross positions of an account (rows in key order), each row's figures given
/// by `figures(row)` in settle currency.
pub(crate) fn cross_totals(
    params: &EngineParams,
    book: &Book<'_>,
    prices: &[f64],
    account: usize,
    mut figures: impl FnMut(usize) -> perp::Margins,
) -> CrossSums {
    let positions = &book.positions;
    let mut sums = CrossSums::default();
    // A loop, not `for_each_row` and a closure: the closure ended up called per row.
    for row in book.position_groups.rows_of(account) {
        if is_cross(positions, row) {
            let contract = &params.perpetuals[positions.instrument[row] as usize];
            let settle_price = prices[contract.settle_asset as usize];
            sums.add(&CrossSums::of(&figures(row), settle_price));
        }
    }
    sums
}

/// Whether a row counts towards its account's cross sums: live and not isolated.
#[inline]
fn is_cross(positions: &Positions<'_>, row: usize) -> bool {
    positions.qty[row] != 0.0 && positions.isolated_margin(row).is_none()
}

impl CrossSums {
    /// Adds a row's contribution, one figure at a time (every walk adds in the same
    /// order, so sums are bitwise the same).
    #[inline]
    pub(crate) fn add(&mut self, row: &CrossSums) {
        self.upnl += row.upnl;
        self.initial_margin += row.initial_margin;
        self.maintenance_margin += row.maintenance_margin;
    }

    /// What a cross row with figures `m` (settle currency) adds to its account's sums, in
    /// the reporting currency, at `settle_price`.
    #[inline]
    pub(crate) fn of(m: &perp::Margins, settle_price: f64) -> Self {
        CrossSums {
            upnl: m.upnl * settle_price,
            initial_margin: m.initial_margin * settle_price,
            maintenance_margin: m.maintenance_margin * settle_price,
        }
    }
}

/// Whole triples of rows of a bundle: splits only between triples, so that every chunk
/// of [`Walk::Sweeps`]' sweep 1 holds whole triples (its rows count must be a multiple
/// of 3).
struct Triples<T>(T);

impl<T: SplitRows> SplitRows for Triples<T> {
    fn rows(&self) -> usize {
        self.0.rows() / 3
    }

    fn split_at_row(self, mid: usize) -> (Self, Self) {
        let (left, right) = self.0.split_at_row(3 * mid);
        (Triples(left), Triples(right))
    }
}

/// Rewrites a chunk's cross contributions, left by figure in the three price columns
/// (upnl, initial, maintenance), triple of rows by triple of rows so that each row's
/// three figures lie together: row `3q + c`'s figures go to column `c`, elements
/// `3q..3q + 3` (see [`Contributions`]). A 3 × 3 transposition in place; the chunk
/// starts on a multiple of 3 and any last rows short of a triple stay as they were.
fn interleave_contributions(chunk: &mut PositionColumns<'_>) {
    let (upnl, _) = chunk.liquidation_price.as_chunks_mut::<3>();
    let (initial, _) = chunk.bankruptcy_price.as_chunks_mut::<3>();
    let (maintenance, _) = chunk.adl_score.as_chunks_mut::<3>();
    for ((row_0, row_1), row_2) in upnl.iter_mut().zip(initial).zip(maintenance) {
        let [u, i, m] = [*row_0, *row_1, *row_2];
        *row_0 = [u[0], i[0], m[0]];
        *row_1 = [u[1], i[1], m[1]];
        *row_2 = [u[2], i[2], m[2]];
    }
}

/// Where sweep 1 of [`Walk::Sweeps`] leaves each row's cross contributions for the
/// account pass, which reads them in the grouping's order, at random on a shuffled
/// book. They share the three price columns (no scratch memory), laid out so that a
/// row's three figures are one read, not three: row `3q + c` has its (uPnL, initial,
/// maintenance) at elements `3q..3q + 3` of price column `c`. Rows from `whole` (the
/// last `n % 3`) keep one figure per column.
struct Contributions<'a> {
    columns: [&'a [f64]; 3],
    whole: usize,
}

impl<'a> Contributions<'a> {
    fn of(positions: &'a PositionFigures) -> Self {
        Contributions {
            columns: [
                &positions.liquidation_price,
                &positions.bankruptcy_price,
                &positions.adl_score,
            ],
            whole: Self::interleaved_rows(positions.liquidation_price.len()),
        }
    }

    /// Of `n` rows, how many lie in whole triples (interleaved): the rest, the last
    /// `n % 3`, keep one figure per column. Sweep 1 writes by this and the account pass
    /// reads by it.
    fn interleaved_rows(n: usize) -> usize {
        n / 3 * 3
    }

    /// Row `row`'s three figures, where they lie side by side (not in the last `n % 3`
    /// rows).
    #[inline(always)]
    fn triple(&self, row: usize) -> Option<&[f64; 3]> {
        if row >= self.whole {
            return None;
        }
        let start = row - row % 3;
        self.columns[row % 3][start..].first_chunk()
    }

    /// Where row `row`'s first figure lies (to send for its cache line).
    #[inline(always)]
    fn first_of(&self, row: usize) -> &f64 {
        match self.triple(row) {
            Some(figures) => &figures[0],
            None => &self.columns[0][row],
        }
    }

    #[inline(always)]
    fn of_row(&self, row: usize) -> CrossSums {
        let [upnl, initial_margin, maintenance_margin] = match self.triple(row) {
            Some(&figures) => figures,
            None => self.columns.map(|column| column[row]),
        };
        CrossSums {
            upnl,
            initial_margin,
            maintenance_margin,
        }
    }
}

/// Loans over eligible collateral: 0 without loans, ∞ with loans and no collateral.
///
/// The quotient is always taken and the cases pick among values, so the compiler can
/// choose without a branch (a branch on whether an account borrows mispredicts often in
/// a book that mixes borrowers and others).
#[inline]
pub fn loan_to_value(debit: f64, collateral: f64) -> f64 {
    let quotient = debit / collateral;
    let backed = if collateral == 0.0 {
        f64::INFINITY
    } else {
        quotient
    };
    if debit == 0.0 {
        0.0
    } else {
        backed
    }
}

/// Status from equity and requirements, worst first.
#[inline]
pub fn classify(
    equity: f64,
    initial: f64,
    maintenance: f64,
    liquidation: f64,
    over_credit_limit: bool,
) -> Status {
    if equity < liquidation {
        Status::Liquidation
    } else if equity < maintenance {
        Status::MarginCall
    } else if equity < initial || over_credit_limit {
        Status::Restricted
    } else {
        Status::Normal
    }
}

/// An account's equity, requirements, status and call, from its valued holdings and
/// cross positions (reporting currency).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccountValue {
    pub equity: f64,
    pub initial: f64,
    pub maintenance: f64,
    pub liquidation: f64,
    pub status: Status,
    /// What brings equity back to the call target; 0 unless in margin call or liquidation.
    pub call_amount: f64,
}

pub(crate) fn value_account(
    params: &EngineParams,
    credit_limit: f64,
    held: &HoldingTotals,
    cross: &CrossSums,
) -> AccountValue {
    let equity = held.value + cross.upnl;
    let initial = held.initial + cross.initial_margin;
    let maintenance = held.maintenance + cross.maintenance_margin;
    let liquidation = held.liquidation + cross.maintenance_margin;
    let status = classify(
        equity,
        initial,
        maintenance,
        liquidation,
        held.debit > credit_limit,
    );
    let target = match params.call_target {
        CallTarget::Initial => initial,
        CallTarget::Maintenance => maintenance,
    };
    let call_amount = if status >= Status::MarginCall {
        (target - equity).max(0.0)
    } else {
        0.0
    };
    AccountValue {
        equity,
        initial,
        maintenance,
        liquidation,
        status,
        call_amount,
    }
}

/// Revalues every account and position of `book` at `market`.
pub fn revalue(params: &EngineParams, book: &Book<'_>, market: &Market<'_>) -> Result<Revaluation> {
    revalue_into(params, book, market, &Zeroed, Scope::Full)
}

/// Which figures a revaluation computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every account and position figure (SPEC §10).
    Full,
    /// Everything but the positions' liquidation and bankruptcy prices and ADL scores,
    /// which are left NaN: for jobs that read only margins and account figures (the
    /// liquidation queue, margin calls). The prices are most of a position's work.
    WithoutPrices,
}

/// [`revalue`] with output columns from `columns`, computing the figures of `scope`.
pub fn revalue_into(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    columns: &impl Columns,
    scope: Scope,
) -> Result<Revaluation> {
    let walk = match book.position_groups.row_starts() {
        Some(starts) => Walk::InAccountOrder(starts),
        None => Walk::Sweeps,
    };
    revalue_walking(
        params,
        book,
        market,
        columns,
        walk,
        Steps::from_environment(),
        scope,
    )
}

/// How [`revalue_into`] goes through the book. Both walks compute every figure with the
/// same operations in the same order, so their results are bitwise equal.
#[derive(Debug, Clone, Copy)]
enum Walk<'a> {
    /// Positions laid out by account (the grouping's row starts): one pass over blocks of
    /// accounts values an account's positions, sums them, values the account and prices
    /// its positions while their rows are still in cache. Each input and output row goes
    /// through memory once, and no scratch column is needed.
    InAccountOrder(&'a [usize]),
    /// Rows in any order: three sweeps, each parallel and each writing disjoint rows.
    /// 1. per position (row order): notional, uPnL, tier, initial and maintenance margin,
    ///    and the row's contribution to its account's cross sums;
    /// 2. per account (its rows in key order): equity, requirements, ratios and status;
    /// 3. per position: liquidation and bankruptcy prices and ADL score.
    Sweeps,
}

fn revalue_walking(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    columns: &impl Columns,
    walk: Walk<'_>,
    steps: Steps,
    scope: Scope,
) -> Result<Revaluation> {
    if market.asset_prices.len() != params.assets.len() {
        return Err(Error::LengthMismatch {
            column: "asset prices",
            expected: params.assets.len(),
            actual: market.asset_prices.len(),
        });
    }
    if market.marks.len() != params.perpetuals.len() {
        return Err(Error::LengthMismatch {
            column: "marks",
            expected: params.perpetuals.len(),
            actual: market.marks.len(),
        });
    }
    let n_positions = book.positions.qty.len();
    let n_accounts = book.n_accounts();
    let mut positions = PositionFigures {
        notional: columns.f64s(n_positions),
        upnl: columns.f64s(n_positions),
        initial_margin: columns.f64s(n_positions),
        maintenance_margin: columns.f64s(n_positions),
        tier: columns.u8s(n_positions),
        liquidation_price: columns.f64s(n_positions),
        bankruptcy_price: columns.f64s(n_positions),
        adl_score: columns.f64s(n_positions),
    };
    let mut accounts = AccountFigures {
        equity: columns.f64s(n_accounts),
        collateral_value: columns.f64s(n_accounts),
        debit: columns.f64s(n_accounts),
        upnl: columns.f64s(n_accounts),
        initial_requirement: columns.f64s(n_accounts),
        maintenance_requirement: columns.f64s(n_accounts),
        liquidation_requirement: columns.f64s(n_accounts),
        excess: columns.f64s(n_accounts),
        margin_ratio: columns.f64s(n_accounts),
        ltv: columns.f64s(n_accounts),
        call_amount: columns.f64s(n_accounts),
        status: columns.u8s(n_accounts),
    };
    let kernel = Kernel::new(params, book, market, steps);
    match walk {
        Walk::InAccountOrder(starts) => {
            kernel.in_account_order(starts, accounts.columns(), positions.columns(), scope)
        }
        Walk::Sweeps => {
            kernel.position_margins(positions.columns());
            // Five figures per account, in one flat column (so `columns` allocates it
            // like the others) seen as rows.
            let mut backing = columns.f64s(5 * n_accounts);
            let (backing_rows, _) = backing.as_chunks_mut::<5>();
            kernel.account_pass(&positions, (accounts.columns(), &mut *backing_rows));
            if scope == Scope::Full {
                kernel.position_prices(backing_rows, &mut positions);
            }
            columns.give_back(backing);
        }
    }
    if scope == Scope::WithoutPrices {
        // Neither walk wrote the prices (sweep 1 left cross contributions there).
        positions.clear_prices();
    }
    Ok(Revaluation {
        accounts,
        positions,
    })
}

impl PositionFigures {
    /// The prices of a [`Scope::WithoutPrices`] revaluation: NaN, in parallel chunks.
    fn clear_prices(&mut self) {
        let columns = PositionPrices {
            liquidation_price: &mut self.liquidation_price,
            bankruptcy_price: &mut self.bankruptcy_price,
            adl_score: &mut self.adl_score,
        };
        for_each_chunk(columns, POSITION_CHUNK, &|_, chunk: PositionPrices<'_>| {
            chunk.liquidation_price.fill(f64::NAN);
            chunk.bankruptcy_price.fill(f64::NAN);
            chunk.adl_score.fill(f64::NAN);
        });
    }
}

impl PositionColumns<'_> {
    /// The margins lane step's columns over rows `rows` of this block; it leaves each
    /// row's cross contributions in the price columns (as sweep 1 does).
    fn margin_columns(&mut self, rows: Range<usize>) -> MarginColumns<'_> {
        MarginColumns {
            notional: &mut self.notional[rows.clone()],
            upnl: &mut self.upnl[rows.clone()],
            initial_margin: &mut self.initial_margin[rows.clone()],
            maintenance_margin: &mut self.maintenance_margin[rows.clone()],
            tier: &mut self.tier[rows.clone()],
            cross_upnl: &mut self.liquidation_price[rows.clone()],
            cross_initial: &mut self.bankruptcy_price[rows.clone()],
            cross_maintenance: &mut self.adl_score[rows],
        }
    }

    /// Row `i`'s cross contributions, where the margins lane step left them.
    #[inline]
    fn contribution(&self, i: usize) -> CrossSums {
        CrossSums {
            upnl: self.liquidation_price[i],
            initial_margin: self.bankruptcy_price[i],
            maintenance_margin: self.adl_score[i],
        }
    }

    /// Row `i`'s sweep-1 figures (its prices are written later).
    #[inline]
    fn set_margins(&mut self, i: usize, figures: &perp::Margins) {
        self.notional[i] = figures.notional;
        self.upnl[i] = figures.upnl;
        self.initial_margin[i] = figures.initial_margin;
        self.maintenance_margin[i] = figures.maintenance_margin;
        // Tables have at most 255 brackets (checked when built).
        self.tier[i] = (figures.tier + 1) as u8;
    }
}

/// A [`AccountColumns`] block and the rows of its accounts' positions, which are laid out
/// by account: split at an account, the position columns split where its rows start.
struct AccountBlock<'a> {
    accounts: AccountColumns<'a>,
    positions: PositionColumns<'a>,
    /// Where each of the block's accounts' rows start (book rows), plus where the last
    /// one's end.
    starts: &'a [usize],
}

impl SplitRows for AccountBlock<'_> {
    fn rows(&self) -> usize {
        self.accounts.rows()
    }

    fn split_at_row(self, mid: usize) -> (Self, Self) {
        let (left_accounts, right_accounts) = self.accounts.split_at_row(mid);
        let (left_positions, right_positions) = self
            .positions
            .split_at_row(self.starts[mid] - self.starts[0]);
        (
            AccountBlock {
                accounts: left_accounts,
                positions: left_positions,
                starts: &self.starts[..=mid],
            },
            AccountBlock {
                accounts: right_accounts,
                positions: right_positions,
                starts: &self.starts[mid..],
            },
        )
    }
}

/// What a row reads of its contract and the market, gathered per contract once per
/// revaluation (or stress scenario) so a row finds it in one place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quote<'p> {
    pub contract: &'p PerpetualParams,
    pub mark: perp::MarkTerms,
    /// The settle asset's price, to convert the account's figures into the settle
    /// currency, and its reciprocal, so the three conversions back multiply.
    pub settle_price: f64,
    pub per_settle_unit: f64,
}

impl<'p> Quote<'p> {
    /// `contract` marked at `mark`, its settle asset priced from `asset_prices`.
    pub(crate) fn new(contract: &'p PerpetualParams, mark: f64, asset_prices: &[f64]) -> Self {
        let settle_price = asset_prices[contract.settle_asset as usize];
        Quote {
            contract,
            mark: perp::MarkTerms::new(contract.kind, mark),
            settle_price,
            per_settle_unit: 1.0 / settle_price,
        }
    }
}

/// The position columns and the quotes, for the per-row steps.
#[derive(Debug, Clone, Copy)]
struct PositionRows<'a> {
    positions: Positions<'a>,
    quotes: &'a [Quote<'a>],
}

impl PositionRows<'_> {
    /// A position's notional, uPnL, tier and margins, and what it adds to its account's
    /// cross sums (+0.0 unless cross: a +0.0 term leaves a sum that starts at +0.0 as it
    /// is, so every walk can add every row).
    #[inline(always)]
    fn margins(&self, row: usize) -> (perp::Margins, CrossSums) {
        let positions = &self.positions;
        let qty = positions.qty[row];
        // Empty rows are ignored: their instrument need not even be priced.
        if qty == 0.0 {
            return (perp::Margins::default(), CrossSums::default());
        }
        let quote = &self.quotes[positions.instrument[row] as usize];
        let figures = perp::PositionTerms::new(
            quote.contract,
            qty,
            positions.entry_price[row],
            positions.leverage(row),
        )
        .margins(quote.contract, &quote.mark);
        let cross = if is_cross(positions, row) {
            CrossSums::of(&figures, quote.settle_price)
        } else {
            CrossSums::default()
        };
        (figures, cross)
    }

    /// What backs a live position (settle currency): the balance its liquidation price
    /// solves for, the one its bankruptcy price solves for, and its margin balance (for
    /// its ADL score); `backing` gives what backs its account's cross positions (asked
    /// for cross rows only).
    #[inline(always)]
    fn balances<'a>(
        &self,
        row: usize,
        upnl: f64,
        maintenance: f64,
        backing: impl FnOnce() -> &'a CrossBacking,
    ) -> [f64; 3] {
        match self.positions.isolated_margin(row) {
            Some(margin) => [margin, margin, margin + upnl],
            None => {
                // Other cross positions stay at their current marks and are converted
                // to this position's settle currency at today's price.
                let quote = &self.quotes[self.positions.instrument[row] as usize];
                let (settle_price, per_settle_unit) = (quote.settle_price, quote.per_settle_unit);
                let account = backing();
                let other_upnl = account[CROSS_UPNL] - upnl * settle_price;
                let other_maintenance = account[CROSS_MAINTENANCE] - maintenance * settle_price;
                [
                    (account[WALLET] - other_maintenance + other_upnl) * per_settle_unit,
                    (account[HOLDINGS_VALUE] + other_upnl) * per_settle_unit,
                    account[EQUITY] * per_settle_unit,
                ]
            }
        }
    }

    /// The book's columns over `rows`, for the margins lane step.
    fn margin_rows(&self, rows: Range<usize>) -> MarginRows<'_> {
        let positions = &self.positions;
        MarginRows {
            qty: &positions.qty[rows.clone()],
            entry_price: &positions.entry_price[rows.clone()],
            instrument: &positions.instrument[rows.clone()],
            leverage: positions.leverage.map(|column| &column[rows.clone()]),
            isolated_margin: positions.isolated_margin.map(|column| &column[rows]),
        }
    }

    /// The book's columns over `rows` and the margins' `upnl` and `notional` (the same
    /// rows), for the prices lane step.
    fn price_rows<'a>(
        &'a self,
        rows: Range<usize>,
        upnl: &'a [f64],
        notional: &'a [f64],
    ) -> PriceRows<'a> {
        let positions = &self.positions;
        PriceRows {
            qty: &positions.qty[rows.clone()],
            entry_price: &positions.entry_price[rows.clone()],
            instrument: &positions.instrument[rows],
            upnl,
            notional,
        }
    }

    /// A position's liquidation price, bankruptcy price and ADL score (NaN where there is
    /// none), from its uPnL, maintenance margin and notional; `backing` gives what backs
    /// its account's cross positions (asked for cross rows only).
    #[inline(always)]
    fn prices<'a>(
        &self,
        row: usize,
        upnl: f64,
        maintenance: f64,
        notional: f64,
        backing: impl FnOnce() -> &'a CrossBacking,
    ) -> [f64; 3] {
        let positions = &self.positions;
        let qty = positions.qty[row];
        if qty == 0.0 {
            return [f64::NAN; 3];
        }
        let quote = &self.quotes[positions.instrument[row] as usize];
        let contract = quote.contract;
        let entry = positions.entry_price[row];
        let [liquidation_balance, bankruptcy_balance, margin_balance] =
            self.balances(row, upnl, maintenance, backing);
        match perp::Exposure::new(contract.kind, contract.contract_size, qty, entry) {
            Some(exposure) => [
                exposure
                    .liquidation_price(liquidation_balance, &contract.tiers)
                    .unwrap_or(f64::NAN),
                exposure
                    .bankruptcy_price(bankruptcy_balance)
                    .unwrap_or(f64::NAN),
                perp::adl_score(upnl, exposure.entry_value(), notional, margin_balance),
            ],
            None => [f64::NAN; 3],
        }
    }
}

/// The per-row and per-account steps of a revaluation, and the walks that run them.
struct Kernel<'k, 'b> {
    params: &'k EngineParams,
    book: &'k Book<'b>,
    market: &'k Market<'k>,
    /// By contract id.
    quotes: Vec<Quote<'k>>,
    /// The per-row steps eight rows at a time, where they run.
    lanes: Option<PositionLanes>,
}

impl<'k, 'b> Kernel<'k, 'b> {
    fn new(
        params: &'k EngineParams,
        book: &'k Book<'b>,
        market: &'k Market<'k>,
        steps: Steps,
    ) -> Self {
        let quotes: Vec<Quote<'k>> = params
            .perpetuals
            .iter()
            .zip(market.marks)
            .map(|(contract, &mark)| Quote::new(contract, mark, market.asset_prices))
            .collect();
        let lanes = steps.lanes(|| PositionLanes::new(&quotes));
        Kernel {
            params,
            book,
            market,
            quotes,
            lanes,
        }
    }

    /// What the row steps read, copied out of the kernel into the caller's frame: the
    /// compiler then keeps the column handles in registers instead of reloading them
    /// through `self` after every store to an output column.
    #[inline(always)]
    fn rows(&self) -> PositionRows<'_> {
        PositionRows {
            positions: self.book.positions,
            quotes: &self.quotes,
        }
    }

    /// Values `account` from its holdings and the sums of its cross positions into row
    /// `i` of `out`, and returns what backs its cross positions.
    #[inline(always)]
    fn account(
        &self,
        account: usize,
        cross: &CrossSums,
        out: &mut AccountColumns<'_>,
        i: usize,
    ) -> CrossBacking {
        let held = holding_totals(self.params, self.book, self.market.asset_prices, account);
        let credit_limit = self.book.accounts.credit_limit[account];
        let v = value_account(self.params, credit_limit, &held, cross);
        let (equity, initial, maintenance, debit) =
            (v.equity, v.initial, v.maintenance, held.debit);
        out.equity[i] = equity;
        out.collateral_value[i] = held.collateral;
        out.debit[i] = debit;
        out.upnl[i] = cross.upnl;
        out.initial_requirement[i] = initial;
        out.maintenance_requirement[i] = maintenance;
        out.liquidation_requirement[i] = v.liquidation;
        out.excess[i] = (equity - initial).min(credit_limit - debit);
        out.margin_ratio[i] = if maintenance == 0.0 {
            0.0
        } else if equity <= 0.0 {
            f64::INFINITY
        } else {
            maintenance / equity
        };
        out.ltv[i] = loan_to_value(debit, held.collateral);
        out.call_amount[i] = v.call_amount;
        out.status[i] = v.status as u8;
        let mut backing = [0.0; 5];
        backing[WALLET] = held.value - held.liquidation;
        backing[HOLDINGS_VALUE] = held.value;
        backing[CROSS_MAINTENANCE] = cross.maintenance_margin;
        backing[CROSS_UPNL] = cross.upnl;
        backing[EQUITY] = equity;
        backing
    }

    /// [`Walk::InAccountOrder`].
    fn in_account_order(
        &self,
        starts: &[usize],
        accounts: AccountColumns<'_>,
        positions: PositionColumns<'_>,
        scope: Scope,
    ) {
        let block = AccountBlock {
            accounts,
            positions,
            starts,
        };
        for_each_chunk(block, ACCOUNT_CHUNK, &|first, block: AccountBlock<'_>| {
            let AccountBlock {
                mut accounts,
                positions: mut out,
                starts,
            } = block;
            if let Some(lanes) = &self.lanes {
                self.account_block_in_lanes(lanes, first, starts, &mut accounts, &mut out, scope);
                return;
            }
            let steps = self.rows();
            let first_row = starts[0];
            for i in 0..accounts.rows() {
                let rows = starts[i]..starts[i + 1];
                let mut cross = CrossSums::default();
                for row in rows.clone() {
                    let (figures, contribution) = steps.margins(row);
                    out.set_margins(row - first_row, &figures);
                    cross.add(&contribution);
                }
                let backing = self.account(first + i, &cross, &mut accounts, i);
                if scope == Scope::WithoutPrices {
                    continue; // `revalue_walking` clears the prices.
                }
                for row in rows {
                    let j = row - first_row;
                    let [liquidation, bankruptcy, score] = steps.prices(
                        row,
                        out.upnl[j],
                        out.maintenance_margin[j],
                        out.notional[j],
                        || &backing,
                    );
                    out.liquidation_price[j] = liquidation;
                    out.bankruptcy_price[j] = bankruptcy;
                    out.adl_score[j] = score;
                }
            }
        });
    }

    /// A block of [`Walk::InAccountOrder`] (accounts from `first`, their rows from
    /// `starts[0]`) through the lane steps, a few hundred rows at a time: the rows'
    /// margins, then each account's sums and figures, then the rows' balances and
    /// prices. Sums run over the rows in the same order as the one-row walk.
    fn account_block_in_lanes(
        &self,
        lanes: &PositionLanes,
        first: usize,
        starts: &[usize],
        accounts: &mut AccountColumns<'_>,
        out: &mut PositionColumns<'_>,
        scope: Scope,
    ) {
        let steps = self.rows();
        let first_row = starts[0];
        let n_accounts = accounts.rows();
        // What backs each account's cross positions, by figure (see `AccountBacking`).
        let height = n_accounts + LANES;
        let mut backing = vec![0.0; 5 * height];
        let mut i = 0;
        while i < n_accounts {
            let mut end = i + 1;
            while end < n_accounts && starts[end + 1] - starts[i] <= LANE_BLOCK_ROWS {
                end += 1;
            }
            let rows = starts[i]..starts[end];
            let local = rows.start - first_row..rows.end - first_row;
            lanes.margins(
                steps.margin_rows(rows.clone()),
                out.margin_columns(local.clone()),
            );
            for account in i..end {
                let mut cross = CrossSums::default();
                for j in starts[account] - first_row..starts[account + 1] - first_row {
                    cross.add(&out.contribution(j));
                }
                let figures = self.account(first + account, &cross, accounts, account);
                for (figure, value) in figures.into_iter().enumerate() {
                    backing[figure * height + account] = value;
                }
            }
            if scope == Scope::WithoutPrices {
                // `revalue_walking` clears the prices.
                i = end;
                continue;
            }
            let PositionColumns {
                notional,
                upnl,
                maintenance_margin,
                liquidation_price,
                bankruptcy_price,
                adl_score,
                ..
            } = out;
            let figure = |k: usize| &backing[k * height..(k + 1) * height];
            let positions = &self.book.positions;
            lanes.prices_from_backing(
                steps.price_rows(rows.clone(), &upnl[local.clone()], &notional[local.clone()]),
                BalanceRows {
                    account: &positions.account[rows.clone()],
                    isolated_margin: positions
                        .isolated_margin
                        .map(|column| &column[rows.clone()]),
                    maintenance_margin: &maintenance_margin[local.clone()],
                    backing: AccountBacking {
                        first: first as u32,
                        wallet: figure(WALLET),
                        holdings_value: figure(HOLDINGS_VALUE),
                        cross_maintenance: figure(CROSS_MAINTENANCE),
                        cross_upnl: figure(CROSS_UPNL),
                        equity: figure(EQUITY),
                    },
                },
                PositionPrices {
                    liquidation_price: &mut liquidation_price[local.clone()],
                    bankruptcy_price: &mut bankruptcy_price[local.clone()],
                    adl_score: &mut adl_score[local],
                },
            );
            i = end;
        }
    }

    /// Sweep 1 of [`Walk::Sweeps`]. Each row's cross contributions are left in the price
    /// columns in [`Contributions`]' layout: in parallel chunks of whole triples of rows,
    /// each triple interleaved while its rows are in cache, and the last `n % 3` rows as
    /// they are.
    fn position_margins(&self, columns: PositionColumns<'_>) {
        let whole = Contributions::interleaved_rows(columns.rows());
        let (triples, mut tail) = columns.split_at_row(whole);
        let sweep = |first_triple: usize, Triples(mut chunk): Triples<PositionColumns<'_>>| {
            self.margins_of_rows(3 * first_triple, &mut chunk);
            interleave_contributions(&mut chunk);
        };
        for_each_chunk(Triples(triples), POSITION_CHUNK / 3, &sweep);
        self.margins_of_rows(whole, &mut tail);
    }

    /// Sweep 1's figures for the rows of `chunk` (book rows from `first`), its cross
    /// contributions in the three price columns.
    fn margins_of_rows(&self, first: usize, chunk: &mut PositionColumns<'_>) {
        let n = chunk.rows();
        if let Some(lanes) = &self.lanes {
            lanes.margins(
                self.rows().margin_rows(first..first + n),
                chunk.margin_columns(0..n),
            );
            return;
        }
        let steps = self.rows();
        for i in 0..n {
            let (figures, cross) = steps.margins(first + i);
            chunk.set_margins(i, &figures);
            chunk.liquidation_price[i] = cross.upnl;
            chunk.bankruptcy_price[i] = cross.initial_margin;
            chunk.adl_score[i] = cross.maintenance_margin;
        }
    }

    /// Sweep 2 of [`Walk::Sweeps`]: the accounts, and what backs their cross positions.
    ///
    /// A group of [`GATHER`] accounts has its cross sums gathered first, then is valued:
    /// the rows lie anywhere in sweep 1's columns, and one tight loop over several
    /// accounts' rows keeps many of those loads in flight at once, where an account's
    /// valuation between two accounts' loads left one account's in flight. Each account's
    /// rows are summed in the same order either way.
    fn account_pass(&self, positions: &PositionFigures, columns: AccountRows<'_>) {
        let groups = self.book.position_groups;
        let contributions = Contributions::of(positions);
        let prefetch = Prefetch::new();
        for_each_chunk(columns, ACCOUNT_CHUNK, &|first, rows: AccountRows<'_>| {
            let (mut chunk, backing) = rows;
            let n = backing.len();
            let mut sums = [CrossSums::default(); GATHER];
            for (g, group) in backing.chunks_mut(GATHER).enumerate() {
                let base = g * GATHER;
                // The rows of the group `PREFETCH_AHEAD` accounts on are sent for.
                for account in gather_ahead(base, n) {
                    for row in groups.rows_of(first + account) {
                        prefetch.read(contributions.first_of(row));
                    }
                }
                for (k, sum) in sums[..group.len()].iter_mut().enumerate() {
                    let mut cross = CrossSums::default();
                    for row in groups.rows_of(first + base + k) {
                        cross.add(&contributions.of_row(row));
                    }
                    *sum = cross;
                }
                for (k, backing) in group.iter_mut().enumerate() {
                    *backing = self.account(first + base + k, &sums[k], &mut chunk, base + k);
                }
            }
        });
    }

    /// Sweep 3 of [`Walk::Sweeps`].
    fn position_prices(&self, backing: &[CrossBacking], out: &mut PositionFigures) {
        let columns = PositionPrices {
            liquidation_price: &mut out.liquidation_price,
            bankruptcy_price: &mut out.bankruptcy_price,
            adl_score: &mut out.adl_score,
        };
        let (upnl, maintenance, notional) = (&out.upnl, &out.maintenance_margin, &out.notional);
        let account_of = self.book.positions.account;
        let prefetch = Prefetch::new();
        for_each_chunk(
            columns,
            POSITION_CHUNK,
            &|first, chunk: PositionPrices<'_>| {
                let steps = self.rows();
                let n = chunk.liquidation_price.len();
                let mut gathered = [CrossBacking::default(); GATHER];
                for start in (0..n).step_by(GATHER) {
                    let rows = first + start..first + (start + GATHER).min(n);
                    // The backing of the rows `PREFETCH_AHEAD` on is sent for.
                    let ahead = gather_ahead(start, n);
                    for &account in &account_of[first + ahead.start..first + ahead.end] {
                        // Both ends: a 40-byte record can straddle two cache lines.
                        let [first_figure, .., last_figure] = &backing[account as usize];
                        prefetch.read(first_figure);
                        prefetch.read(last_figure);
                    }
                    // The group's backing rows first, in one tight loop (every row's, cross
                    // or not: each names an account), so their loads are in flight at once.
                    for (slot, &account) in gathered.iter_mut().zip(&account_of[rows.clone()]) {
                        *slot = backing[account as usize];
                    }
                    for (k, row) in rows.enumerate() {
                        let i = start + k;
                        let [liquidation, bankruptcy, score] = match &self.lanes {
                            // The lanes price the chunk below from its rows' balances.
                            Some(_) => {
                                steps.balances(row, upnl[row], maintenance[row], || &gathered[k])
                            }
                            None => steps.prices(
                                row,
                                upnl[row],
                                maintenance[row],
                                notional[row],
                                || &gathered[k],
                            ),
                        };
                        chunk.liquidation_price[i] = liquidation;
                        chunk.bankruptcy_price[i] = bankruptcy;
                        chunk.adl_score[i] = score;
                    }
                }
                if let Some(lanes) = &self.lanes {
                    let rows = first..first + n;
                    lanes.prices(
                        steps.price_rows(rows.clone(), &upnl[rows.clone()], &notional[rows]),
                        chunk,
                    );
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::Stale;
    use crate::params::{AssetParams, Haircuts, PerpetualParams};
    use crate::perp::ContractKind;
    use crate::test_book::TestBook;
    use crate::tiers::{SizeTiers, TierTable};

    fn params() -> EngineParams {
        let tiers = TierTable::new(&[(0.0, 0.004, 125.0), (50_000.0, 0.005, 100.0)]).unwrap();
        let usd = AssetParams::new(
            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
            true,
            SizeTiers::default(),
        );
        let btc = AssetParams::new(
            Haircuts::new(0.6, 0.5, 0.4).unwrap(),
            true,
            SizeTiers::new(&[(0.0, 1.0), (100_000.0, 0.5)]).unwrap(),
        );
        let linear = PerpetualParams::new(ContractKind::Linear, 0.001, 0, tiers.clone()).unwrap();
        let inverse = PerpetualParams::new(ContractKind::Inverse, 100.0, 1, tiers).unwrap();
        EngineParams::new(vec![usd, btc], vec![linear, inverse], CallTarget::Initial).unwrap()
    }

    /// Every result column's bits, account columns first.
    fn bits(r: &Revaluation) -> Vec<Vec<u64>> {
        let (a, p) = (&r.accounts, &r.positions);
        let mut columns: Vec<Vec<u64>> = [
            &a.equity,
            &a.collateral_value,
            &a.debit,
            &a.upnl,
            &a.initial_requirement,
            &a.maintenance_requirement,
            &a.liquidation_requirement,
            &a.excess,
            &a.margin_ratio,
            &a.ltv,
            &a.call_amount,
            &p.notional,
            &p.upnl,
            &p.initial_margin,
            &p.maintenance_margin,
            &p.liquidation_price,
            &p.bankruptcy_price,
            &p.adl_score,
        ]
        .iter()
        .map(|column| column.iter().map(|x| x.to_bits()).collect())
        .collect();
        columns.push(a.status.iter().map(|&s| u64::from(s)).collect());
        columns.push(p.tier.iter().map(|&t| u64::from(t)).collect());
        columns
    }

    /// A small book covering linear and inverse, long and short, cross and isolated, an
    /// empty position, a loan, a size-tiered holding and an account with nothing; its
    /// positions in the given order of the rows below.
    struct SmallBook(TestBook);

    impl SmallBook {
        const MARKET: Market<'static> = Market {
            asset_prices: &[1.0, 61_000.0],
            marks: &[61_000.0, 61_000.0],
        };

        fn new(order: &[usize]) -> Self {
            let account = [2, 0, 1, 0, 2, 1, 0];
            let instrument = [0, 1, 0, 0, 1, 1, 1];
            let qty = [3_000.0, -40.0, 0.0, -1_500.0, 25.0, 7.0, 10.0];
            let entry = [
                60_000.0, 61_000.0, 59_000.0, 58_000.0, 62_000.0, 60_500.0, 57_000.0,
            ];
            let nan = f64::NAN;
            let isolated = [nan, nan, nan, 500.0, nan, 0.002, nan];
            let rows: Vec<_> = order
                .iter()
                .map(|&r| (account[r], instrument[r], qty[r], entry[r]))
                .collect();
            let isolated: Vec<f64> = order.iter().map(|&r| isolated[r]).collect();
            SmallBook(TestBook::new(
                &[f64::INFINITY, 50_000.0, 0.0, f64::INFINITY],
                &[
                    (0, 0, 20_000.0),
                    (1, 1, 3.5),
                    (1, 0, -40_000.0),
                    (2, 1, 0.25),
                ],
                &rows,
                Some(&isolated),
            ))
        }

        /// Revalues the book walking it as `walk` asks (`None`: as `revalue_into` picks),
        /// with output columns from `columns`.
        fn revalue(&self, columns: &impl Columns, walk: Option<bool>) -> Revaluation {
            self.revalue_scoped(columns, walk, Steps::Best, Scope::Full)
        }

        /// [`Self::revalue`] with the per-row steps `steps` (`walk: None` picks them as
        /// `revalue_into` does) and the figures of `scope`.
        fn revalue_scoped(
            &self,
            columns: &impl Columns,
            walk: Option<bool>,
            steps: Steps,
            scope: Scope,
        ) -> Revaluation {
            let params = params();
            let book = self.0.book(&params);
            let position_groups = &self.0.position_groups;
            match walk {
                None => revalue_into(&params, &book, &Self::MARKET, columns, scope).unwrap(),
                Some(in_account_order) => {
                    let walk = if in_account_order {
                        Walk::InAccountOrder(position_groups.row_starts().unwrap())
                    } else {
                        Walk::Sweeps
                    };
                    revalue_walking(&params, &book, &Self::MARKET, columns, walk, steps, scope)
                        .unwrap()
                }
            }
        }
    }

    /// Every output of a revaluation is written, by either walk and either kind of
    /// step: columns that start out stale give the same results, bit for bit, as zeroed
    /// ones, and the steps eight rows at a time give the one-row steps' bits.
    #[test]
    fn every_output_element_is_written() {
        let shuffled = SmallBook::new(&[0, 1, 2, 3, 4, 5, 6]);
        let by_account = SmallBook::new(&[1, 3, 6, 2, 5, 0, 4]);
        for (book, walk) in [(&shuffled, Some(false)), (&by_account, Some(true))] {
            let zeroed = book.revalue_scoped(&Zeroed, walk, Steps::Scalar, Scope::Full);
            let stale = book.revalue(&Stale, walk);
            assert_eq!(bits(&stale), bits(&zeroed));
            let stale_scalar = book.revalue_scoped(&Stale, walk, Steps::Scalar, Scope::Full);
            assert_eq!(bits(&stale_scalar), bits(&zeroed));
            let stale_bits = Stale::F64.to_bits();
            assert!(bits(&stale)[..18]
                .iter()
                .flatten()
                .all(|&b| b != stale_bits));
        }
    }

    /// Both walks of a book laid out by account give the same results, bit for bit (and
    /// so does `revalue_into`); the same rows shuffled give the same accounts and the
    /// same figures per position.
    #[test]
    fn walks_agree_bit_for_bit() {
        let order = [1, 3, 6, 2, 5, 0, 4];
        let by_account = SmallBook::new(&order);
        let one_pass = by_account.revalue(&Stale, Some(true));
        let sweeps = by_account.revalue(&Stale, Some(false));
        assert_eq!(bits(&one_pass), bits(&sweeps));
        assert_eq!(bits(&by_account.revalue(&Zeroed, None)), bits(&one_pass));

        let shuffled = SmallBook::new(&[0, 1, 2, 3, 4, 5, 6]).revalue(&Zeroed, None);
        let unshuffled = |column: &Vec<u64>| order.iter().map(|&r| column[r]).collect::<Vec<_>>();
        let (shuffled_bits, one_pass_bits) = (bits(&shuffled), bits(&one_pass));
        assert_eq!(shuffled_bits[..11], one_pass_bits[..11]);
        assert_eq!(shuffled_bits[18], one_pass_bits[18]);
        for column in (11..18).chain([19]) {
            assert_eq!(unshuffled(&shuffled_bits[column]), one_pass_bits[column]);
        }
    }

    /// A book of `n_accounts` with a few positions each (some empty, some isolated, both
    /// contracts, long and short) and a holding or two, and where each of its positions
    /// (laid out by account) lies: in that order, or `scattered` (every account's first
    /// position, then every account's second, ..., the accounts in a shuffled order, so
    /// each account's positions keep their order, and their sums their bits).
    fn generated_book(n_accounts: u32, scattered: bool) -> (TestBook, Vec<usize>) {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut by_account = Vec::new();
        let mut isolated_by_account = Vec::new();
        let mut holdings = Vec::new();
        let mut rank = Vec::new();
        for account in 0..n_accounts {
            holdings.push((account, 0, next(50_000) as f64 - 10_000.0));
            if next(3) == 0 {
                holdings.push((account, 1, next(400) as f64 / 100.0));
            }
            for k in 0..next(7) {
                let instrument = next(2) as u32;
                let qty = match next(8) {
                    0 => 0.0,
                    j => (next(5_000) as f64 + 1.0) * if j % 2 == 0 { 1.0 } else { -1.0 },
                };
                let entry = 50_000.0 + next(20_000) as f64;
                by_account.push((account, instrument, qty, entry));
                isolated_by_account.push(if next(4) == 0 {
                    next(2_000) as f64
                } else {
                    f64::NAN
                });
                rank.push((k, u64::from(account) * 7_919 % u64::from(n_accounts)));
            }
        }
        let n = by_account.len();
        let mut order: Vec<usize> = (0..n).collect();
        if scattered {
            let mut laid = order.clone();
            laid.sort_by_key(|&i| rank[i]);
            for (row, &i) in laid.iter().enumerate() {
                order[i] = row;
            }
        }
        let mut rows = by_account.clone();
        let mut isolated = isolated_by_account.clone();
        for (i, &row) in order.iter().enumerate() {
            rows[row] = by_account[i];
            isolated[row] = isolated_by_account[i];
        }
        let credit = vec![f64::INFINITY; n_accounts as usize];
        (
            TestBook::new(&credit, &holdings, &rows, Some(&isolated)),
            order,
        )
    }

    /// The sweeps read a scattered book in groups of [`GATHER`] rows and accounts, and
    /// the one-pass walk reads a laid-out one; over many groups (and a last one cut
    /// short) both give every figure bit for bit, each position's at its own row.
    #[test]
    fn sweeps_over_a_scattered_book_agree_with_the_one_pass_walk_bit_for_bit() {
        let revalue_with = |book: &TestBook, walk: Walk<'_>, steps: Steps| {
            let params = params();
            let view = book.book(&params);
            let market = SmallBook::MARKET;
            revalue_walking(&params, &view, &market, &Stale, walk, steps, Scope::Full).unwrap()
        };
        // Each walk gives the same bits with the steps eight rows at a time as with the
        // one-row steps; the comparisons below are then between the walks.
        let revalue = |book: &TestBook, walk: Walk<'_>| {
            let lanes = revalue_with(book, walk, Steps::Best);
            let one_row = revalue_with(book, walk, Steps::Scalar);
            assert!(bits(&lanes) == bits(&one_row), "the steps disagree");
            lanes
        };
        // Accounts 7919 apart (a prime, not dividing the count) are laid out side by side.
        let n_accounts = 3 * ACCOUNT_CHUNK as u32 + 5 * GATHER as u32 + 3;
        assert!(!n_accounts.is_multiple_of(7_919) && !(n_accounts as usize).is_multiple_of(GATHER));
        let (laid_out, _) = generated_book(n_accounts, false);
        let (scattered, order) = generated_book(n_accounts, true);
        let n = laid_out.qty.len();
        // Several chunks of sweep 1, and rows past the last whole triple (see
        // `Contributions`).
        assert!(n > POSITION_CHUNK && !n.is_multiple_of(GATHER), "{n} rows");
        assert!(!n.is_multiple_of(3), "{n} rows");
        assert!(scattered.position_groups.row_starts().is_none());
        // Both walks price cross and isolated positions.
        let isolated = laid_out.isolated.as_ref().unwrap();
        let cross = isolated.iter().filter(|m| m.is_nan()).count();
        assert!(cross > n / 2 && cross < n);

        let starts = laid_out.position_groups.row_starts().unwrap();
        let one_pass = bits(&revalue(&laid_out, Walk::InAccountOrder(starts)));
        let sweeps = bits(&revalue(&scattered, Walk::Sweeps));
        assert!(sweeps[..11] == one_pass[..11], "an account figure differs");
        assert!(sweeps[18] == one_pass[18], "an account status differs");
        for column in (11..18).chain([19]) {
            let by_account: Vec<u64> = order.iter().map(|&row| sweeps[column][row]).collect();
            assert!(
                by_account == one_pass[column],
                "position column {column} differs"
            );
        }
    }

    /// Without prices, both walks give the full revaluation's other figures bit for bit
    /// and NaN prices, over stale columns too.
    #[test]
    fn a_revaluation_without_prices_leaves_only_the_prices_out() {
        let shuffled = SmallBook::new(&[0, 1, 2, 3, 4, 5, 6]);
        let by_account = SmallBook::new(&[1, 3, 6, 2, 5, 0, 4]);
        let cases = [(&shuffled, Some(false)), (&by_account, Some(true))];
        for ((book, walk), steps) in cases.into_iter().zip([Steps::Best, Steps::Scalar]) {
            let full = bits(&book.revalue(&Zeroed, walk));
            let partial = book.revalue_scoped(&Stale, walk, steps, Scope::WithoutPrices);
            let partial_bits = bits(&partial);
            for column in (0..15).chain([18, 19]) {
                assert_eq!(partial_bits[column], full[column], "column {column}");
            }
            let p = &partial.positions;
            for prices in [&p.liquidation_price, &p.bankruptcy_price, &p.adl_score] {
                assert!(prices.iter().all(|x| x.is_nan()));
            }
            // The small book has prices to leave out.
            assert!(full[15].iter().any(|&b| !f64::from_bits(b).is_nan()));
        }
    }
}
