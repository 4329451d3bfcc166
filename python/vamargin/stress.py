"""Stress results (SPEC §9): one row per scenario, and the worst accounts' equities.

``engine.stress`` columns (amounts in the reporting currency):

- ``scenario``; ``normal``, ``restricted``, ``margin_call``, ``liquidation``: accounts by
  status; ``isolated_liquidations``: isolated positions below their maintenance margin;
- ``call_amount``: Σ call amounts (accounts in margin call or liquidation);
- ``uncovered_loss`` = ``insurance_draw`` + ``broker_loss``, where ``insurance_draw`` is
  the shortfall the platform's insurance fund meets (negative equity of accounts holding
  cross perpetuals, and isolated positions below zero) and ``broker_loss`` the negative
  equity of accounts without perpetuals (margin loans the collateral no longer covers);
- with ``excess_liquid_capital``: ``capital_shortfall`` = max(0, broker_loss − capital),
  the stressed loss the broker's excess liquid capital would not absorb.

Shortfalls are measured at the stressed prices, before liquidation fees and
auto-deleveraging. Sums are added in account-block order: bitwise identical for any
thread count; a reordered accounts table may differ in the last bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vamargin import _core
from vamargin.tables import CategoryColumn, Column, Table


def stress_table(
    names: list[str], raw: dict[str, Any], excess_liquid_capital: float | None
) -> Table:
    """Shapes the kernel's totals into the per-scenario table."""
    by_status = raw["accounts_by_status"].astype(np.int64)
    columns: dict[str, Column] = {
        "scenario": CategoryColumn(names, np.arange(len(names), dtype=np.uint32)),
    }
    for code, status in enumerate(_core.STATUS_NAMES):
        columns[status] = np.ascontiguousarray(by_status[:, code])
    columns["isolated_liquidations"] = raw["isolated_liquidations"].astype(np.int64)
    columns["call_amount"] = raw["call_amount"]
    columns["uncovered_loss"] = raw["insurance_draw"] + raw["broker_loss"]
    columns["insurance_draw"] = raw["insurance_draw"]
    columns["broker_loss"] = raw["broker_loss"]
    if excess_liquid_capital is not None:
        columns["capital_shortfall"] = np.maximum(raw["broker_loss"] - excess_liquid_capital, 0.0)
    return Table(columns)
