"""Firm-wide controls of a margin-financing book (SPEC §7 "firm controls").

- ``loans_to_capital``: total margin loans / the firm's capital, against
  ``policy.max_loans_to_capital`` (the SMF benchmark is 5×);
- ``top_clients``: the largest borrowers, with their share of all loans, against
  ``policy.max_client_share``; ``top_groups``: the same for related clients (the optional
  ``client_group`` column of the accounts table; a client without one is its own group);
- ``collateral_by_asset`` / ``by_group``: collateral value and share per asset and per
  correlated group (BTC and ETH move together as ``VA``), against
  ``policy.max_collateral_share`` per asset when set;
- ``va_share``: virtual assets' share of all collateral;
- ``capital_uncovered``: the capital view beside the client view —
  ``Σ_accounts max(0, debit − Σ v·(1 − capital_haircut))``, where VA collateral counts for
  nothing in the broker's liquid capital by default (capital haircut 100%);
- ``breaches``: each rule broken, with its value and limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vamargin.tables import Table


@dataclass(frozen=True)
class FirmReport:
    capital: float
    total_loans: float
    loans_to_capital: float
    top_clients: Table
    top_groups: Table
    collateral_by_asset: Table
    by_group: Table
    va_share: float
    capital_uncovered: float
    breaches: Table

    @property
    def breached(self) -> bool:
        return len(self.breaches) > 0


def share(part: np.ndarray, whole: float) -> np.ndarray:
    """``part / whole``, 0 where the whole is 0."""
    return part / whole if whole > 0 else np.zeros_like(part, dtype=np.float64)


def largest_positive(values: np.ndarray, top: int) -> np.ndarray:
    """Rows of the ``top`` largest positive values, largest first, ties by row: what
    ``np.argsort(-values, kind="stable")[:top]`` then dropping values ≤ 0 (and NaN) gives,
    in linear time (a partition finds the cut; only the rows at or above it are sorted)."""
    rows = np.flatnonzero(values > 0)
    if top <= 0:
        return rows[:0]
    if len(rows) > top:
        candidates = values[rows]
        cut = np.partition(candidates, len(rows) - top)[len(rows) - top]
        rows = rows[candidates >= cut]
    return rows[np.argsort(-values[rows], kind="stable")][:top]
