"""The outcome of executing a liquidation queue (``RiskEngine.liquidate``).

Model, in the order it runs (queue order, one entry at a time):

1. each plan step closes at the mark against the exchange's **clearing** account: the
   closed contracts' PnL is realised, and the liquidation fee (or, for a holding, the sale
   fee) goes to the **insurance fund** of the settle asset (reporting currency for sales);
2. an entry that ends below zero is **bankrupt**: the fund of each affected settle asset
   pays what it can;
3. what the fund cannot pay is **deleveraged**: profitable positions on the opposite side
   of the same instrument, in ADL rank order, are closed at the bankrupt position's
   bankruptcy price instead of the mark, and the profit they forgo covers the rest (the
   last one partly filled); what even that cannot cover is the platform's **uncovered**
   loss. A margin loan that goes bad without positions to close is uncovered too (the
   broker's bad debt).

Every movement is two postings that sum to zero, in integer minor units rounded against
the account they are credited to, so the ledger of each asset sums to exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vamargin.book import Book, BoundBook
from vamargin.config import RiskConfig
from vamargin.funding import category
from vamargin.liquidation import LiquidationQueue
from vamargin.tables import Table

PARTIES: tuple[str, ...] = ("account", "clearing", "insurance_fund", "uncovered")
REASONS: tuple[str, ...] = (
    "realized_pnl", "liquidation_fee", "asset_sold", "sale_proceeds", "fund_cover",
    "deleverage", "uncovered_loss",
)  # fmt: skip


@dataclass(frozen=True)
class LiquidationRun:
    """``queue`` (with its ``plan``) as executed; ``postings`` (rank, party, account_id
    — −1 for platform parties — asset, amount in minor units, reason); ``deleverage``
    (rank, bankrupt and counterparty account and row, contracts, price, amount);
    ``fund_before`` / ``fund_after`` per asset in minor units."""

    queue: LiquidationQueue
    postings: Table
    deleverage: Table
    fund_before: dict[str, int]
    fund_after: dict[str, int]

    def totals_by_asset(self) -> dict[str, int]:
        """Σ postings per asset: zero for every asset, by construction."""
        assets = self.postings["asset"]
        amounts = self.postings["amount"]
        return {str(a): int(amounts[assets == a].sum()) for a in np.unique(assets)}


def liquidation_run(
    config: RiskConfig,
    book: Book,
    bound: BoundBook,
    queue: LiquidationQueue,
    raw: dict[str, Any],
    fund_before: list[int],
) -> LiquidationRun:
    assets = [a.symbol for a in config.assets]
    postings, fills = raw["postings"], raw["fills"]
    is_account = postings["party"] == 0
    account_rows = np.where(is_account, postings["account"], 0)
    account_id = np.where(
        is_account, book.account_id[account_rows] if book.n_accounts else -1, -1
    ).astype(np.int64)
    rank = postings["entry"].astype(np.int64) + 1
    posting_table = Table(
        {
            "rank": rank,
            "party": category(list(PARTIES), postings["party"]),
            "account_id": account_id,
            "asset": category(assets, postings["asset"]),
            "amount": postings["amount"],
            "reason": category(list(REASONS), postings["reason"]),
        }
    )
    bankrupt_row = fills["bankrupt_row"].astype(np.int64)
    counterparty_row = fills["counterparty_row"].astype(np.int64)
    deleverage = Table(
        {
            "rank": fills["entry"].astype(np.int64) + 1,
            "instrument": category(
                [p.symbol for p in config.perpetuals], bound.position_instrument[bankrupt_row]
            ),
            "account_id": book.position_account_id[bankrupt_row],
            "position_row": bankrupt_row,
            "counterparty_account_id": book.position_account_id[counterparty_row],
            "counterparty_row": counterparty_row,
            "contracts": fills["contracts"],
            "price": fills["price"],
            "amount": fills["amount"],
        }
    )
    return LiquidationRun(
        queue=queue,
        postings=posting_table,
        deleverage=deleverage,
        fund_before=dict(zip(assets, fund_before, strict=True)),
        fund_after={a: int(v) for a, v in zip(assets, raw["fund"], strict=True)},
    )
