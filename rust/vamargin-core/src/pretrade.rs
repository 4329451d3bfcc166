//! Pre-trade check: an account's margin as it would be after an order, computed before the
//! order is accepted (SPEC §10 `check_order`; the SFC asks for margin before every order).
//!
//! Only the account's own rows are touched, so the cost does not depend on the book's
//! size. The order is valued as filled at its limit price into the account's cross
//! position on the instrument: adding to a position averages the entry (arithmetically for
//! linear contracts, harmonically for inverse ones); reducing or flipping realises the
//! PnL of the closed part at the fill price.

use crate::book::Book;
use crate::error::{Error, Result};
use crate::params::EngineParams;
use crate::perp::{self, ContractKind};
use crate::valuation::{classify, cross_totals, holding_totals, CrossSums, Market, Status};

/// The account before and after the order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderImpact {
    pub status_before: Status,
    /// The order only reduces an existing position (never rejected for margin).
    pub reducing: bool,
    pub qty_before: f64,
    pub qty_after: f64,
    pub entry_after: f64,
    /// Of the position after the order: notional (settle currency), 1-based bracket and
    /// the bracket's maximum leverage.
    pub notional_after: f64,
    pub tier_after: usize,
    pub max_leverage: f64,
    /// Account figures after the order (reporting currency).
    pub equity_after: f64,
    pub initial_after: f64,
    pub maintenance_after: f64,
}

/// The effect of buying (`qty > 0`) or selling `qty` contracts of `instrument` at `price`
/// on `account`; `leverage` (NaN: keep the position's) is the leverage the position
/// chooses. Checks the ids of the rows it reads, so it accepts a book built with
/// [`Book::for_single_account`].
#[allow(clippy::too_many_arguments)]
pub fn order_impact(
    params: &EngineParams,
    book: &Book<'_>,
    market: &Market<'_>,
    account: usize,
    instrument: usize,
    qty: f64,
    price: f64,
    leverage: f64,
) -> Result<OrderImpact> {
    book.check_account_ids(params, account)?;
    if instrument >= params.perpetuals.len() {
        return Err(Error::IdOutOfRange {
            column: "instrument",
            row: 0,
            id: instrument as u64,
            len: params.perpetuals.len(),
        });
    }
    if market.asset_prices.len() != params.assets.len()
        || market.marks.len() != params.perpetuals.len()
    {
        return Err(Error::LengthMismatch {
            column: "prices",
            expected: params.assets.len() + params.perpetuals.len(),
            actual: market.asset_prices.len() + market.marks.len(),
        });
    }
    let positions = &book.positions;
    let prices = market.asset_prices;
    let contract = &params.perpetuals[instrument];
    let mark = market.marks[instrument];
    let settle_price = prices[contract.settle_asset as usize];
    let at_mark = |row: usize| positions.margins_at(params, market.marks, row);

    let held = holding_totals(params, book, prices, account);
    let before = cross_totals(params, book, prices, account, at_mark);
    let equity_before = held.value + before.upnl;
    let status_before = classify(
        equity_before,
        held.initial + before.initial_margin,
        held.maintenance + before.maintenance_margin,
        held.liquidation + before.maintenance_margin,
        held.debit > book.accounts.credit_limit[account],
    );

    let mut existing = None;
    book.position_groups.for_each_row(account, |row| {
        if positions.instrument[row] as usize == instrument
            && positions.qty[row] != 0.0
            && positions.isolated_margin(row).is_none()
        {
            existing = Some(row);
        }
    });
    let (qty_before, entry_before) = existing.map_or((0.0, price), |row| {
        (positions.qty[row], positions.entry_price[row])
    });
    let qty_after = qty_before + qty;
    let same_side = qty_before == 0.0 || qty_before.signum() == qty.signum();
    let reducing = !same_side && qty.abs() <= qty_before.abs();
    let (entry_after, realized) = if same_side {
        let entry = match contract.kind {
            ContractKind::Linear => (qty_before * entry_before + qty * price) / qty_after,
            ContractKind::Inverse => qty_after / (qty_before / entry_before + qty / price),
        };
        (entry, 0.0)
    } else {
        let closed = qty_before.signum() * qty.abs().min(qty_before.abs());
        let pnl = perp::unrealized_pnl(
            contract.kind,
            contract.contract_size,
            closed,
            entry_before,
            price,
        );
        (if reducing { entry_before } else { price }, pnl)
    };
    let leverage_after = if leverage.is_nan() {
        existing.map_or(f64::NAN, |row| positions.leverage(row))
    } else {
        leverage
    };
    let after_position = perp::margins(contract, qty_after, entry_after, mark, leverage_after);
    let mut after = cross_totals(params, book, prices, account, |row| {
        if Some(row) == existing {
            after_position
        } else {
            at_mark(row)
        }
    });
    if existing.is_none() {
        after.add(&CrossSums::of(&after_position, settle_price));
    }
    let notional_after = after_position.notional;
    let tier = contract.tiers.index(notional_after);
    Ok(OrderImpact {
        status_before,
        reducing,
        qty_before,
        qty_after,
        entry_after,
        notional_after,
        tier_after: tier + 1,
        max_leverage: contract.tiers.tiers()[tier].max_leverage,
        equity_after: held.value + realized * settle_price + after.upnl,
        initial_after: held.initial + after.initial_margin,
        maintenance_after: held.maintenance + after.maintenance_margin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{AssetParams, CallTarget, Haircuts, PerpetualParams};
    use crate::test_book::TestBook;
    use crate::tiers::{SizeTiers, TierTable};

    #[test]
    fn adding_averages_entry_and_reducing_realises_pnl() {
        let cash = AssetParams::new(
            Haircuts::new(0.0, 0.0, 0.0).unwrap(),
            true,
            SizeTiers::default(),
        );
        let tiers = TierTable::new(&[(0.0, 0.01, 50.0), (100_000.0, 0.02, 20.0)]).unwrap();
        let params = EngineParams::new(
            vec![cash],
            vec![PerpetualParams::new(ContractKind::Linear, 1.0, 0, tiers).unwrap()],
            CallTarget::Initial,
        )
        .unwrap();
        // 10 000 USDT and a long of 1 at 50 000; mark 50 000.
        let owned = TestBook::new(
            &[f64::INFINITY],
            &[(0, 0, 10_000.0)],
            &[(0, 0, 1.0, 50_000.0)],
            None,
        );
        let book = owned.book(&params);
        let market = Market {
            asset_prices: &[1.0],
            marks: &[50_000.0],
        };
        // Buy 1 more at 52 000: entry 51 000, uPnL −2 000 at mark, notional 100 000 in the
        // 2% / 20x bracket: IM 5 000.
        let buy = order_impact(&params, &book, &market, 0, 0, 1.0, 52_000.0, f64::NAN).unwrap();
        assert!(!buy.reducing);
        assert_eq!((buy.qty_after, buy.entry_after), (2.0, 51_000.0));
        assert_eq!(buy.equity_after, 8_000.0);
        assert_eq!((buy.tier_after, buy.initial_after), (2, 5_000.0));
        // Sell 0.5 at 51 000: realises +500, the rest keeps its entry.
        let sell = order_impact(&params, &book, &market, 0, 0, -0.5, 51_000.0, f64::NAN).unwrap();
        assert!(sell.reducing);
        assert_eq!((sell.qty_after, sell.entry_after), (0.5, 50_000.0));
        assert_eq!(sell.equity_after, 10_500.0);
        // Sell 3 at 50 000: flips to a short of 2 entered at 50 000.
        let flip = order_impact(&params, &book, &market, 0, 0, -3.0, 50_000.0, 5.0).unwrap();
        assert!(!flip.reducing);
        assert_eq!((flip.qty_after, flip.entry_after), (-2.0, 50_000.0));
        assert_eq!(flip.initial_after, 100_000.0 / 5.0);
    }
}
