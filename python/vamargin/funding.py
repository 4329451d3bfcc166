"""Funding settlement results and the funding ledger (SPEC §5).

Every amount is an ``int64`` count of minor units of the position's settle asset,
credited to the account (negative = paid), rounded against the account. Per instrument,
Σ payments + dust + house = 0 exactly: ``house`` is the platform's posting for the
open-interest imbalance (the funding of a position opposite to the net open interest,
rounded against the house) and ``dust`` the rounding left over, posted to
``DUST_ACCOUNT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vamargin import _core
from vamargin._columns import TableReader
from vamargin.calc import funding_rate
from vamargin.config import RiskConfig
from vamargin.errors import DataError
from vamargin.tables import CategoryColumn, Table

DUST_ACCOUNT = "platform:funding-dust"
HOUSE_ACCOUNT = "platform:funding-house"

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FundingSettlement:
    """One funding settlement.

    - ``payments``: per position row, minor units of its settle asset credited;
    - ``by_account``: per account and settle asset, the sum (only non-zero rows);
    - ``by_instrument``: per instrument with positions: settle asset, minor unit,
      received, paid, house, dust;
    - ``dust`` / ``house``: per instrument symbol;
    - ``open_interest``: per instrument symbol, the exact net open interest the house is
      computed from (Σ quantities in 1e-9 contracts for one interval; Σ quantity units ×
      index move in index units for the index basis). Totals of parts of a book add up
      to the whole book's, and ``house_postings`` turns them into the house's posting;
    - ``ledger()``: every posting (accounts, house, dust) as a table that sums to 0 per
      instrument and per asset.
    """

    payments: I64
    by_account: Table
    by_instrument: Table
    dust: dict[str, int]
    house: dict[str, int]
    open_interest: dict[str, int]
    dust_account: str = DUST_ACCOUNT
    house_account: str = HOUSE_ACCOUNT

    def ledger(self) -> Table:
        """Postings: one row per account and asset, then the house and dust postings per
        instrument. ``account`` is the account id as a string, or a platform account."""
        accounts = self.by_account
        names = [str(a) for a in accounts["account_id"]]
        assets = list(accounts["asset"])
        amounts = list(accounts["amount"])
        for row in range(len(self.by_instrument)):
            entry = self.by_instrument.row(row)
            names += [self.house_account, self.dust_account]
            assets += [entry["settle"], entry["settle"]]
            amounts += [entry["house"], entry["dust"]]
        return Table(
            {
                "account": np.asarray(names, dtype=np.str_),
                "asset": np.asarray(assets, dtype=np.str_),
                "amount": np.asarray(amounts, dtype=np.int64),
            }
        )


def read_per_instrument(values: Any, name: str, column: str) -> dict[str, float]:
    """``{instrument: value}`` from a mapping, or a table with ``instrument`` and
    ``column`` (rates, index values)."""
    if isinstance(values, Mapping) and "instrument" not in values:
        entries = list(values.items())
        where = [f"{name}[{symbol!r}]" for symbol, _ in entries]
    else:
        table = TableReader(values, name)
        symbols = table.strings("instrument")
        numbers = table.float64(column, finite=False)
        entries = [
            (symbols.names[c], float(v)) for c, v in zip(symbols.codes, numbers, strict=True)
        ]
        where = [f"{name}.{column} row {row}" for row in range(len(entries))]
    parsed: dict[str, float] = {}
    for (symbol, value), location in zip(entries, where, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise DataError(f"{location}: {value!r} is not a number")
        if not np.isfinite(float(value)):
            raise DataError(f"{location}: {value} is not finite ({symbol})")
        if symbol in parsed:
            raise DataError(f"{location}: {symbol} is given twice")
        parsed[str(symbol)] = float(value)
    return parsed


def category(names: list[str], codes: npt.NDArray[np.integer[Any]]) -> CategoryColumn:
    return CategoryColumn(names, np.ascontiguousarray(codes, dtype=np.uint32))


def interest_rates(config: RiskConfig) -> dict[str, float]:
    """Each perpetual's funding rate for a zero premium (its interest rate per interval,
    clamped and capped): the rate a market at its index pays, used when no rates are
    given."""
    return {
        p.symbol: funding_rate(
            [0.0], interest_rate=p.funding.interest_rate, clamp=p.funding.clamp, cap=p.funding.cap
        )
        for p in config.perpetuals
    }


def house_postings(
    config: RiskConfig,
    open_interest: Mapping[str, int],
    *,
    rates: Mapping[str, float] | None = None,
    marks: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """The house's posting per instrument for exact net open-interest totals (as in
    ``FundingSettlement.open_interest``, e.g. summed over the partitions of a book):
    ``rates`` and ``marks`` per instrument for one interval, neither for the index basis.
    The kernel computes it exactly as in one settlement of the whole book."""
    symbols = [p.symbol for p in config.perpetuals]
    unknown = sorted(set(open_interest) - set(symbols))
    if unknown:
        raise DataError(f"open_interest: unknown instruments {unknown}")
    totals = [int(open_interest.get(symbol, 0)) for symbol in symbols]
    decimals = [asset.minor_decimals for asset in config.assets]
    if rates is None and marks is None:
        house = _core.funding_house(config.engine_params, totals, decimals, index=True)
    elif rates is not None and marks is not None:
        used = [s for s in symbols if s in open_interest]
        for what, values in (("rates", rates), ("marks", marks)):
            if missing := [s for s in used if s not in values]:
                raise DataError(f"{what}: missing {missing[0]!r}")
        house = _core.funding_house(
            config.engine_params,
            totals,
            decimals,
            rates=np.array([rates.get(s, 0.0) for s in symbols]),
            marks=np.array([marks.get(s, 1.0) for s in symbols]),
        )
    else:
        raise DataError("house_postings: give rates and marks, or neither (index basis)")
    return {symbol: house[i] for i, symbol in enumerate(symbols) if symbol in open_interest}
