"""Pre-trade checks (SPEC §10 ``check_order``): margin before every order.

An order is valued as filled at its limit price into the account's cross position on the
instrument. Checks, in order; the first that fails decides:

1. ``reducing`` — an order that only reduces a position is always accepted;
2. ``not_professional_investor`` — a retail account on a ``professional_only`` contract;
3. ``account_restricted`` / ``account_margin_call`` / ``account_liquidation`` — no new
   risk while the account is below its initial requirement, over its credit limit, or
   under a call;
4. ``leverage_above_tier_maximum`` — the chosen leverage exceeds the maximum of the
   bracket the position lands in;
5. ``insufficient_margin`` — equity after the order is below the initial requirement after
   the order.

Otherwise ``ok``. Fees of the order itself are not charged in the check. The affiliate
flag is not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vamargin import _core
from vamargin.book import INVESTOR_CLASSES, Book, BoundBook
from vamargin.config import RiskConfig
from vamargin.errors import DataError
from vamargin.market import Market

REASONS: tuple[str, ...] = (
    "ok", "reducing", "not_professional_investor", "account_restricted", "account_margin_call",
    "account_liquidation", "leverage_above_tier_maximum", "insufficient_margin",
)  # fmt: skip

_STATUSES: tuple[str, ...] = tuple(_core.STATUS_NAMES)
_RETAIL = INVESTOR_CLASSES.index("retail")


@dataclass(frozen=True)
class OrderDecision:
    """The verdict and the figures behind it (reporting currency; quantities in
    contracts)."""

    accepted: bool
    reason: str
    message: str
    status_before: str
    qty_before: float
    qty_after: float
    entry_after: float
    equity_after: float
    initial_requirement_after: float
    maintenance_requirement_after: float
    tier_after: int
    max_leverage: float

    @property
    def excess_after(self) -> float:
        return self.equity_after - self.initial_requirement_after


class PreTrade:
    """A book and its prices, ready to check orders in microseconds."""

    def __init__(self, config: RiskConfig, book: Book, bound: BoundBook, market: Market) -> None:
        self._config = config
        self._params = config.engine_params
        self._book = book
        self._core = bound.core
        self._market = market
        self._instrument_ids = config.perpetual_ids
        self._professional_only = [p.professional_only for p in config.perpetuals]
        self._settle_ids = [config.asset_ids[p.settle] for p in config.perpetuals]
        self._retail = book.investor_class == _RETAIL

    def check(
        self,
        account_id: int,
        instrument: str,
        qty: float,
        price: float,
        *,
        leverage: float | None = None,
    ) -> OrderDecision:
        """Accepts or rejects buying (``qty > 0``) or selling ``qty`` contracts of
        ``instrument`` at ``price`` for ``account_id``; see the module docstring."""
        account = self._book.account_row(account_id)
        perp_id = self._instrument_ids.get(instrument)
        if perp_id is None:
            raise DataError(f"order.instrument: unknown instrument {instrument!r}")
        if not (math.isfinite(qty) and qty != 0):
            raise DataError(f"order.qty: {qty} is not a non-zero finite quantity")
        if not (math.isfinite(price) and price > 0):
            raise DataError(f"order.price: {price} is not a finite price > 0")
        if leverage is not None and not (math.isfinite(leverage) and leverage >= 1):
            raise DataError(f"order.leverage: {leverage} is not a leverage ≥ 1")
        market = self._market
        if not (
            math.isfinite(market.marks[perp_id])
            and math.isfinite(market.asset_prices[self._settle_ids[perp_id]])
        ):
            raise DataError(f"prices: missing mark or settle-asset price for {instrument!r}")
        (
            status_code, reducing, qty_before, qty_after, entry_after, _notional, tier,
            max_leverage, equity, initial, maintenance,
        ) = _core.order_impact(
            self._params, self._core, market.asset_prices, market.marks, account, perp_id,
            float(qty), float(price), math.nan if leverage is None else float(leverage),
        )  # fmt: skip
        status = _STATUSES[status_code]
        if reducing:
            reason, message = "reducing", "reduces an existing position"
        elif self._professional_only[perp_id] and self._retail[account]:
            reason, message = (
                "not_professional_investor",
                f"{instrument} is for professional investors only",
            )
        elif status != "normal":
            reason, message = f"account_{status}", f"account is in {status}: no new risk"
        elif leverage is not None and leverage > max_leverage:
            reason, message = (
                "leverage_above_tier_maximum",
                f"leverage {leverage:g} exceeds {max_leverage:g} in bracket {tier}",
            )
        elif equity < initial:
            reason, message = (
                "insufficient_margin",
                f"equity after the order {equity:,.2f} is below the initial requirement "
                f"{initial:,.2f}",
            )
        else:
            reason, message = "ok", "accepted"
        return OrderDecision(
            accepted=reason in ("ok", "reducing"),
            reason=reason,
            message=message,
            status_before=status,
            qty_before=qty_before,
            qty_after=qty_after,
            entry_after=entry_after,
            equity_after=equity,
            initial_requirement_after=initial,
            maintenance_requirement_after=maintenance,
            tier_after=tier,
            max_leverage=max_leverage,
        )
