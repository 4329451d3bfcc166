"""RiskEngine: runs the Rust kernels over a validated book and shapes the results."""

from __future__ import annotations

from dataclasses import dataclass

from vamargin import _core
from vamargin.book import Book
from vamargin.config import RiskConfig
from vamargin.market import Prices, resolve_market
from vamargin.tables import CategoryColumn, Column, Table

STATUSES: tuple[str, ...] = tuple(_core.STATUS_NAMES)
"""Account statuses, best first: normal, restricted, margin_call, liquidation."""

ACCOUNT_COLUMNS: tuple[str, ...] = (
    "account_id", "equity", "collateral_value", "debit", "upnl", "initial_requirement",
    "maintenance_requirement", "liquidation_requirement", "excess", "margin_ratio", "ltv",
    "status", "call_amount",
)  # fmt: skip
POSITION_COLUMNS: tuple[str, ...] = (
    "account_id", "instrument", "notional", "upnl", "initial_margin", "maintenance_margin",
    "tier", "liquidation_price", "bankruptcy_price", "adl_score",
)  # fmt: skip


@dataclass(frozen=True)
class Revaluation:
    """Account figures (reporting currency, one row per account, in the accounts table's
    order) and position figures (settle currency, one row per position row, in order).

    ``liquidation_price`` / ``bankruptcy_price`` are NaN where no positive price exists;
    ``adl_score`` is NaN for empty positions and those with no positive margin balance.
    """

    accounts: Table
    positions: Table


class RiskEngine:
    """The margin and risk engine for one configuration."""

    def __init__(self, config: RiskConfig | None = None) -> None:
        self.config = RiskConfig.hk_default() if config is None else config

    def revalue(self, book: Book, prices: Prices) -> Revaluation:
        """Values every account and position at ``prices`` in one Rust pass (SPEC §5–§6)."""
        config = self.config
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        raw = _core.revalue(
            config.engine_params,
            book.credit_limit,
            book.holding_account,
            bound.holding_asset,
            book.holding_amount,
            bound.holding_groups,
            book.position_account,
            bound.position_instrument,
            book.qty,
            book.entry_price,
            book.isolated_margin,
            book.leverage,
            bound.position_groups,
            market.asset_prices,
            market.marks,
        )
        account_figures = raw["accounts"]
        accounts: dict[str, Column] = {"account_id": book.account_id}
        for name in ACCOUNT_COLUMNS[1:]:
            figure = account_figures[name]
            accounts[name] = CategoryColumn(STATUSES, figure) if name == "status" else figure
        instruments = tuple(p.symbol for p in config.perpetuals)
        positions: dict[str, Column] = {
            "account_id": book.position_account_id,
            "instrument": CategoryColumn(instruments, bound.position_instrument),
        }
        positions.update({name: raw["positions"][name] for name in POSITION_COLUMNS[2:]})
        return Revaluation(accounts=Table(accounts), positions=Table(positions))
