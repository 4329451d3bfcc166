"""Margin financing results (SPEC §7): margin calls with their cures, the call lifecycle,
and interest accrual.

Cures of a call of size ``C`` (to ``policy.call_target``), each enough on its own:

- ``deposit_<ASSET>``: units of an eligible asset to deposit — ``C`` for cash,
  ``C / (1 − h)`` for collateral with haircut ``h`` (walking its size bands);
- ``sell_<ASSET>``: units of a holding to sell, the proceeds kept as cash —
  ``C / (h − fee)`` (walking its size bands); NaN where the holding is too small.

Accounts in ``liquidation`` status, or whose call expired, also get a forced-sale plan
(most haircut-efficient assets first, curing the call in one pass when the holdings
allow). Calls run in calendar hours (VA trades 24×7): the deadline is ``as_of +
policy.call_deadline_hours``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from vamargin._columns import TableReader
from vamargin.errors import DataError
from vamargin.funding import category
from vamargin.tables import Column, Table

CALL_STATES: tuple[str, ...] = ("new", "open", "partly_met", "met", "expired")


def utc_instant(as_of: dt.datetime, name: str = "as_of") -> np.datetime64:
    """A timezone-aware datetime as a UTC ``datetime64[us]``."""
    if not isinstance(as_of, dt.datetime) or as_of.tzinfo is None:
        raise DataError(f"{name}: {as_of!r} must be a timezone-aware datetime")
    naive_utc = as_of.astimezone(dt.UTC).replace(tzinfo=None)
    return np.datetime64(naive_utc, "us")


class MarginCalls(Table):
    """One row per account in ``margin_call`` or ``liquidation``: ``account_id``,
    ``status``, ``equity``, ``call_amount`` (reporting currency), ``deadline`` (UTC),
    ``forced``, then ``deposit_<ASSET>`` and ``sell_<ASSET>`` in units of each asset.

    ``forced_sales`` has one row per step of the forced-sale plans: ``account_id``,
    ``asset``, ``holding_row``, ``units``, ``value``, ``fee`` (reporting currency)."""

    def __init__(self, columns: Mapping[str, Column], forced_sales: Table) -> None:
        super().__init__(columns)
        self.forced_sales = forced_sales


def call_lifecycle(previous: Any, today: MarginCalls, as_of: dt.datetime) -> Table:
    """What became of each call: ``previous`` holds the open calls (``account_id``,
    ``call_amount``, ``deadline``: a ``MarginCalls`` or any table with those columns),
    ``today`` the calls of the current book. A pure function, for daily or intraday jobs.

    State per account: ``met`` (no call any more), ``partly_met`` (a smaller call remains
    before the deadline), ``open`` (not reduced, before the deadline), ``expired`` (still
    called at or past the deadline: forced liquidation), ``new`` (called today only). An
    open call keeps its original deadline; no new advances while it is open.
    """
    now = utc_instant(as_of)
    if isinstance(previous, Table):
        before_ids = previous["account_id"]
        before_amount = previous["call_amount"]
        before_deadline = previous["deadline"].astype("datetime64[us]")
    else:
        reader = TableReader(previous, "previous")
        before_ids = reader.int64("account_id")
        before_amount = reader.float64("call_amount")
        if not reader.has("deadline"):
            raise DataError("previous: missing column 'deadline'")
        before_deadline = np.asarray(reader.table.column("deadline").to_numpy(), "datetime64[us]")
    today_ids = today["account_id"]
    today_amount = dict(zip(today_ids.tolist(), today["call_amount"].tolist(), strict=True))
    today_deadline = dict(zip(today_ids.tolist(), today["deadline"].tolist(), strict=True))
    ids: list[int] = []
    opened: list[float] = []
    now_amount: list[float] = []
    deadlines: list[Any] = []
    states: list[int] = []
    seen = set()
    for account, amount, deadline in zip(
        before_ids.tolist(), before_amount.tolist(), before_deadline, strict=True
    ):
        seen.add(account)
        current = today_amount.get(account, 0.0)
        if current <= 0.0:
            state = "met"
        elif deadline <= now:
            state = "expired"
        elif current < amount:
            state = "partly_met"
        else:
            state = "open"
        ids.append(account)
        opened.append(amount)
        now_amount.append(current)
        deadlines.append(deadline)
        states.append(CALL_STATES.index(state))
    for account in today_ids.tolist():
        if account not in seen:
            ids.append(account)
            opened.append(today_amount[account])
            now_amount.append(today_amount[account])
            deadlines.append(np.datetime64(today_deadline[account], "us"))
            states.append(CALL_STATES.index("new"))
    return Table(
        {
            "account_id": np.asarray(ids, dtype=np.int64),
            "call_amount_opened": np.asarray(opened, dtype=np.float64),
            "call_amount_now": np.asarray(now_amount, dtype=np.float64),
            "deadline": np.asarray(deadlines, dtype="datetime64[us]"),
            "state": category(list(CALL_STATES), np.asarray(states, dtype=np.uint32)),
        }
    )


def units(
    values: npt.NDArray[np.float64], prices: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Values (reporting currency) as units of assets at ``prices``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return values / prices
