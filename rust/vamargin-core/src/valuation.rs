//! Account revaluation: the one pass that values holdings and perpetuals together.
//!
//! Three sweeps, each parallel and each writing disjoint rows:
//! 1. per position (row order): notional, uPnL, tier, initial and maintenance margin,
//!    and the row's contribution to its account's cross sums;
//! 2. per account (its rows in key order, so sums are bitwise reproducible): equity,
//!    requirements, ratios and status;
//! 3. per position: liquidation and bankruptcy prices and ADL score, which need the
//!    account's totals from sweep 2.
//!
//! Money here is `f64` in the reporting currency (risk measures, not cash movements).

use crate::book::{Book, Positions};
use crate::columns::{Columns, Zeroed};
use crate::error::{Error, Result};
use crate::parallel::{column_bundle, for_each_chunk};
use crate::params::{CallTarget, EngineParams};
use crate::perp;

const POSITION_CHUNK: usize = 16 * 1024;
const ACCOUNT_CHUNK: usize = 2 * 1024;

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
    /// Sweep-1 outputs, plus each row's contribution to its account's cross sums
    /// (reporting currency; 0 for isolated and empty rows), which sweep 2 adds up. The
    /// contributions live in sweep 3's output columns until sweep 3 overwrites them: the
    /// account pass then reads 3 columns per row instead of 6 (on a shuffled book each
    /// read is a cache miss), and no scratch memory is added.
    PositionMargins {
        notional: f64,
        upnl: f64,
        initial_margin: f64,
        maintenance_margin: f64,
        tier: u8,
        cross_upnl: f64,
        cross_initial: f64,
        cross_maintenance: f64,
    }
);

column_bundle!(
    /// Sweep-3 outputs.
    PositionPrices {
        liquidation_price: f64,
        bankruptcy_price: f64,
        adl_score: f64,
    }
);

column_bundle!(
    /// Sweep-2 outputs, plus what sweep 3 needs to price cross positions.
    AccountRows {
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
        backing: CrossBacking,
    }
);

/// What backs an account's cross positions, in the reporting currency: everything sweep
/// 3 reads of the account, packed in one row so that a position reaches it in one cache
/// line (a shuffled book's positions reach their accounts at random). Indexed by the
/// constants below.
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
pub(crate) fn holding_totals(
    params: &EngineParams,
    book: &Book<'_>,
    prices: &[f64],
    account: usize,
) -> HoldingTotals {
    let holdings = &book.holdings;
    let mut totals = HoldingTotals::default();
    book.holding_groups.for_each_row(account, |row| {
        let asset_id = holdings.asset[row] as usize;
        let asset = &params.assets[asset_id];
        let v = holdings.amount[row] * prices[asset_id];
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
    });
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
    book.position_groups.for_each_row(account, |row| {
        if is_cross(positions, row) {
            let c = cross_contribution(params, positions, prices, row, &figures(row));
            sums.upnl += c.upnl;
            sums.initial_margin += c.initial_margin;
            sums.maintenance_margin += c.maintenance_margin;
        }
    });
    sums
}

/// Whether a row counts towards its account's cross sums: live and not isolated.
#[inline]
fn is_cross(positions: &Positions<'_>, row: usize) -> bool {
    positions.qty[row] != 0.0 && positions.isolated_margin(row).is_none()
}

/// What a cross row with figures `m` (settle currency) adds to its account's sums, in the
/// reporting currency.
#[inline]
fn cross_contribution(
    params: &EngineParams,
    positions: &Positions<'_>,
    prices: &[f64],
    row: usize,
    m: &perp::Margins,
) -> CrossSums {
    let contract = &params.perpetuals[positions.instrument[row] as usize];
    let settle_price = prices[contract.settle_asset as usize];
    CrossSums {
        upnl: m.upnl * settle_price,
        initial_margin: m.initial_margin * settle_price,
        maintenance_margin: m.maintenance_margin * settle_price,
    }
}

/// Loans over eligible collateral: 0 without loans, ∞ with loans and no collateral.
#[inline]
pub fn loan_to_value(debit: f64, collateral: f64) -> f64 {
    if debit == 0.0 {
        0.0
    } else if collateral == 0.0 {
        f64::INFINITY
    } else {
        debit / collateral
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
    revalue_into(params, book, market, &Zeroed)
}

/// [`revalue`] with output columns from `columns`.
pub fn revalue_into(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    columns: &impl Columns,
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
    position_margins(params, book, market, &mut positions);

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
    // Five figures per account, in one flat column (so `columns` allocates it like the
    // others) seen as rows.
    let mut backing = columns.f64s(5 * n_accounts);
    let (backing_rows, _) = backing.as_chunks_mut::<5>();
    account_pass(
        params,
        book,
        market,
        &positions,
        &mut accounts,
        backing_rows,
    );
    position_prices(params, book, market, backing_rows, &mut positions);
    columns.give_back(backing);
    Ok(Revaluation {
        accounts,
        positions,
    })
}

fn position_margins(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    out: &mut PositionFigures,
) {
    let columns = PositionMargins {
        notional: &mut out.notional,
        upnl: &mut out.upnl,
        initial_margin: &mut out.initial_margin,
        maintenance_margin: &mut out.maintenance_margin,
        tier: &mut out.tier,
        cross_upnl: &mut out.liquidation_price,
        cross_initial: &mut out.bankruptcy_price,
        cross_maintenance: &mut out.adl_score,
    };
    let positions = &book.positions;
    for_each_chunk(
        columns,
        POSITION_CHUNK,
        &|first, chunk: PositionMargins<'_>| {
            for i in 0..chunk.notional.len() {
                let row = first + i;
                let qty = positions.qty[row];
                // Empty rows are ignored: their instrument need not even be priced.
                let figures = if qty == 0.0 {
                    perp::Margins::default()
                } else {
                    let instrument = positions.instrument[row] as usize;
                    perp::margins(
                        &params.perpetuals[instrument],
                        qty,
                        positions.entry_price[row],
                        market.marks[instrument],
                        positions.leverage.map_or(f64::NAN, |col| col[row]),
                    )
                };
                chunk.notional[i] = figures.notional;
                chunk.upnl[i] = figures.upnl;
                chunk.initial_margin[i] = figures.initial_margin;
                chunk.maintenance_margin[i] = figures.maintenance_margin;
                // Tables have at most 255 brackets (checked when built).
                chunk.tier[i] = (figures.tier + 1) as u8;
                // What cross_totals adds for this row, so the account pass's sums are
                // bitwise the same (a +0.0 term leaves a sum that starts at +0.0 as it is).
                let cross = if is_cross(positions, row) {
                    cross_contribution(params, positions, market.asset_prices, row, &figures)
                } else {
                    CrossSums::default()
                };
                chunk.cross_upnl[i] = cross.upnl;
                chunk.cross_initial[i] = cross.initial_margin;
                chunk.cross_maintenance[i] = cross.maintenance_margin;
            }
        },
    );
}

fn account_pass(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    positions: &PositionFigures,
    out: &mut AccountFigures,
    backing: &mut [CrossBacking],
) {
    let columns = AccountRows {
        equity: &mut out.equity,
        collateral_value: &mut out.collateral_value,
        debit: &mut out.debit,
        upnl: &mut out.upnl,
        initial_requirement: &mut out.initial_requirement,
        maintenance_requirement: &mut out.maintenance_requirement,
        liquidation_requirement: &mut out.liquidation_requirement,
        excess: &mut out.excess,
        margin_ratio: &mut out.margin_ratio,
        ltv: &mut out.ltv,
        call_amount: &mut out.call_amount,
        status: &mut out.status,
        backing,
    };
    let prices = market.asset_prices;
    for_each_chunk(columns, ACCOUNT_CHUNK, &|first, chunk: AccountRows<'_>| {
        for i in 0..chunk.equity.len() {
            let account = first + i;
            let held = holding_totals(params, book, prices, account);
            // Sweep 1 left each row's cross contributions in sweep 3's columns.
            let mut cross = CrossSums::default();
            book.position_groups.for_each_row(account, |row| {
                cross.upnl += positions.liquidation_price[row];
                cross.initial_margin += positions.bankruptcy_price[row];
                cross.maintenance_margin += positions.adl_score[row];
            });
            let credit_limit = book.accounts.credit_limit[account];
            let v = value_account(params, credit_limit, &held, &cross);
            let (equity, initial, maintenance) = (v.equity, v.initial, v.maintenance);
            let debit = held.debit;

            chunk.equity[i] = equity;
            chunk.collateral_value[i] = held.collateral;
            chunk.debit[i] = debit;
            chunk.upnl[i] = cross.upnl;
            chunk.initial_requirement[i] = initial;
            chunk.maintenance_requirement[i] = maintenance;
            chunk.liquidation_requirement[i] = v.liquidation;
            chunk.excess[i] = (equity - initial).min(credit_limit - debit);
            chunk.margin_ratio[i] = if maintenance == 0.0 {
                0.0
            } else if equity <= 0.0 {
                f64::INFINITY
            } else {
                maintenance / equity
            };
            chunk.ltv[i] = loan_to_value(debit, held.collateral);
            chunk.call_amount[i] = v.call_amount;
            chunk.status[i] = v.status as u8;
            let backing = &mut chunk.backing[i];
            backing[WALLET] = held.value - held.liquidation;
            backing[HOLDINGS_VALUE] = held.value;
            backing[CROSS_MAINTENANCE] = cross.maintenance_margin;
            backing[CROSS_UPNL] = cross.upnl;
            backing[EQUITY] = equity;
        }
    });
}

fn position_prices(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    backing: &[CrossBacking],
    out: &mut PositionFigures,
) {
    let columns = PositionPrices {
        liquidation_price: &mut out.liquidation_price,
        bankruptcy_price: &mut out.bankruptcy_price,
        adl_score: &mut out.adl_score,
    };
    let positions = &book.positions;
    let upnl = &out.upnl;
    let maintenance = &out.maintenance_margin;
    let notional = &out.notional;
    // Per contract: its settle asset's price, to convert the account's figures into the
    // settle currency, and its reciprocal, so the three conversions back multiply.
    let settle: Vec<(f64, f64)> = params
        .perpetuals
        .iter()
        .map(|contract| {
            let price = market.asset_prices[contract.settle_asset as usize];
            (price, 1.0 / price)
        })
        .collect();
    for_each_chunk(
        columns,
        POSITION_CHUNK,
        &|first, chunk: PositionPrices<'_>| {
            for i in 0..chunk.liquidation_price.len() {
                let row = first + i;
                let qty = positions.qty[row];
                if qty == 0.0 {
                    chunk.liquidation_price[i] = f64::NAN;
                    chunk.bankruptcy_price[i] = f64::NAN;
                    chunk.adl_score[i] = f64::NAN;
                    continue;
                }
                let instrument = positions.instrument[row] as usize;
                let contract = &params.perpetuals[instrument];
                let entry = positions.entry_price[row];
                let (liquidation_balance, bankruptcy_balance, margin_balance) = match positions
                    .isolated_margin(row)
                {
                    Some(margin) => (margin, margin, margin + upnl[row]),
                    None => {
                        // Other cross positions stay at their current marks and are converted
                        // to this position's settle currency at today's price.
                        let (settle_price, per_settle_unit) = settle[instrument];
                        let account = &backing[positions.account[row] as usize];
                        let other_upnl = account[CROSS_UPNL] - upnl[row] * settle_price;
                        let other_maintenance =
                            account[CROSS_MAINTENANCE] - maintenance[row] * settle_price;
                        (
                            (account[WALLET] - other_maintenance + other_upnl) * per_settle_unit,
                            (account[HOLDINGS_VALUE] + other_upnl) * per_settle_unit,
                            account[EQUITY] * per_settle_unit,
                        )
                    }
                };
                let exposure =
                    perp::Exposure::new(contract.kind, contract.contract_size, qty, entry);
                let (liquidation, bankruptcy, score) = match exposure {
                    Some(exposure) => (
                        exposure
                            .liquidation_price(liquidation_balance, &contract.tiers)
                            .unwrap_or(f64::NAN),
                        exposure
                            .bankruptcy_price(bankruptcy_balance)
                            .unwrap_or(f64::NAN),
                        perp::adl_score(
                            upnl[row],
                            exposure.entry_value(),
                            notional[row],
                            margin_balance,
                        ),
                    ),
                    None => (f64::NAN, f64::NAN, f64::NAN),
                };
                chunk.liquidation_price[i] = liquidation;
                chunk.bankruptcy_price[i] = bankruptcy;
                chunk.adl_score[i] = score;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Accounts, Grouping, Holdings};
    use crate::columns::Stale;
    use crate::params::{AssetParams, Haircuts, PerpetualParams};
    use crate::perp::ContractKind;
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

    /// Every output of a revaluation is written: columns that start out stale give the
    /// same results, bit for bit, as zeroed ones. Rows are deliberately out of account
    /// order and cover linear and inverse, long and short, cross and isolated, an empty
    /// position, a loan, a size-tiered holding and an account with nothing.
    #[test]
    fn every_output_element_is_written() {
        let params = params();
        let account = [2, 0, 1, 0, 2, 1, 0];
        let instrument = [0, 1, 0, 0, 1, 1, 1];
        let qty = [3_000.0, -40.0, 0.0, -1_500.0, 25.0, 7.0, 10.0];
        let entry = [
            60_000.0, 61_000.0, 59_000.0, 58_000.0, 62_000.0, 60_500.0, 57_000.0,
        ];
        let isolated = [
            f64::NAN,
            f64::NAN,
            f64::NAN,
            500.0,
            f64::NAN,
            0.002,
            f64::NAN,
        ];
        let h_account = [0, 1, 1, 2];
        let h_asset = [0, 1, 0, 1];
        let h_amount = [20_000.0, 3.5, -40_000.0, 0.25];
        let credit = [f64::INFINITY, 50_000.0, 0.0, f64::INFINITY];
        let n_accounts = credit.len();
        let position_groups =
            Grouping::build(&account, None, n_accounts, "positions.account_id").unwrap();
        let holding_groups =
            Grouping::build(&h_account, None, n_accounts, "holdings.account_id").unwrap();
        let book = Book::new(
            &params,
            Accounts {
                credit_limit: &credit,
            },
            Holdings {
                account: &h_account,
                asset: &h_asset,
                amount: &h_amount,
            },
            Positions {
                account: &account,
                instrument: &instrument,
                qty: &qty,
                entry_price: &entry,
                isolated_margin: Some(&isolated),
                leverage: None,
            },
            &holding_groups,
            &position_groups,
        )
        .unwrap();
        let market = Market {
            asset_prices: &[1.0, 61_000.0],
            marks: &[61_000.0, 61_000.0],
        };
        let zeroed = revalue_into(&params, &book, &market, &Zeroed).unwrap();
        let stale = revalue_into(&params, &book, &market, &Stale).unwrap();
        let bits = |r: &Revaluation| -> Vec<Vec<u64>> {
            let (a, p) = (&r.accounts, &r.positions);
            [
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
            .collect()
        };
        assert_eq!(bits(&stale), bits(&zeroed));
        assert_eq!(stale.accounts.status, zeroed.accounts.status);
        assert_eq!(stale.positions.tier, zeroed.positions.tier);
        let stale_bits = Stale::F64.to_bits();
        assert!(bits(&stale).iter().flatten().all(|&b| b != stale_bits));
    }
}
