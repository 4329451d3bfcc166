"""Prices: a mapping ``{symbol: price}`` or a table with ``symbol`` and ``price``.

Asset prices are in the reporting currency; perpetual marks in the contract's quote
currency. Every price must be finite and positive, and every asset and instrument the book
uses (including each held perpetual's settle asset) must have one. Symbols the config
does not know are ignored: a price feed may carry more than the book needs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vamargin._columns import F64, TableReader
from vamargin.book import Book, BoundBook
from vamargin.config import RiskConfig
from vamargin.errors import DataError

Prices = Mapping[str, float] | Any


@dataclass(frozen=True)
class Market:
    """Prices by dense id (NaN where absent and unused)."""

    asset_prices: F64
    marks: F64


def _is_price_table(prices: Any) -> bool:
    """A mapping of columns (``{"symbol": [...], "price": [...]}``) rather than of prices."""
    if not isinstance(prices, Mapping) or "symbol" not in prices:
        return False
    return not isinstance(prices["symbol"], str | int | float)


def read_prices(prices: Prices) -> dict[str, float]:
    """Parses and checks a price mapping (dict, pandas Series) or table."""
    if type(prices).__name__ == "Series" and hasattr(prices, "items"):
        prices = dict(prices.items())
    if isinstance(prices, Mapping) and not _is_price_table(prices):
        entries = list(prices.items())
        value_at = [f"prices[{symbol!r}]" for symbol, _ in entries]
        symbol_at = value_at
    else:
        table = TableReader(prices, "prices")
        symbols = table.strings("symbol")
        values = table.float64("price", finite=False)
        entries = [(symbols.names[c], float(v)) for c, v in zip(symbols.codes, values, strict=True)]
        value_at = [f"prices.price row {row}" for row in range(len(entries))]
        symbol_at = [f"prices.symbol row {row}" for row in range(len(entries))]
    parsed: dict[str, float] = {}
    for (symbol, value), where, symbol_where in zip(entries, value_at, symbol_at, strict=True):
        if not isinstance(symbol, str):
            raise DataError(f"{symbol_where}: symbol must be a string")
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise DataError(f"{where}: {value!r} is not a number")
        price = float(value)
        if not (math.isfinite(price) and price > 0):
            raise DataError(f"{where}: {price} is not a finite price > 0 ({symbol})")
        if symbol in parsed:
            raise DataError(f"{symbol_where}: {symbol} is priced twice")
        parsed[symbol] = price
    return parsed


def resolve_market(config: RiskConfig, book: Book, bound: BoundBook, prices: Prices) -> Market:
    """Dense price arrays for ``bound``'s book; a used symbol without a price is an error
    naming the first row that needs it."""
    parsed = read_prices(prices)
    asset_prices = np.full(len(config.assets), np.nan)
    for i, asset in enumerate(config.assets):
        if asset.symbol in parsed:
            asset_prices[i] = parsed[asset.symbol]
        elif bound.assets_used[i]:
            raise DataError(
                f"prices: missing price for asset {asset.symbol!r} "
                f"(needed by {book.where_used(bound, asset=i)})"
            )
    marks = np.full(len(config.perpetuals), np.nan)
    for i, perp in enumerate(config.perpetuals):
        if perp.symbol in parsed:
            marks[i] = parsed[perp.symbol]
        elif bound.instruments_used[i]:
            raise DataError(
                f"prices: missing mark price for instrument {perp.symbol!r} "
                f"(needed by {book.where_used(bound, instrument=i)})"
            )
    return Market(asset_prices=asset_prices, marks=marks)
