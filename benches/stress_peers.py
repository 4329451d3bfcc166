"""Vectorised numpy peer of ``RiskEngine.stress`` (SPEC §9), for ``bench_stress.py``.

The job, per scenario (``vamargin.scenarios`` / ``vamargin.stress``):

- move the prices: every asset ``price × (1 + move)``, every perpetual mark
  ``mark × (1 + move[base]) / (1 + move[quote])`` (an explicit instrument move overrides);
- revalue every account at those prices: holdings value, debit and the three haircut
  requirements with size tiers; cross positions' uPnL, IM and MM (tier by notional) in
  the reporting currency; equity, status and call amount;
- total: accounts by status, isolated positions below their maintenance margin, Σ call
  amounts, the insurance draw (negative equity of accounts holding cross perpetuals, plus
  isolated margin + uPnL below zero) and the broker's loss (negative equity of accounts
  without cross perpetuals).

``prepare`` is the peer's "built book": it reads the Arrow tables once, maps account ids
to rows, resolves symbols, and sorts holdings by asset and positions by instrument (stable,
so each account's rows are summed in the engine's key order and the per-account figures are
bitwise the engine's). ``numpy_stress`` then loops over the scenarios only; every step is
vectorised over rows, the loops run over scenarios, the 4 instruments and 3 size bands. The
revaluation pieces are ``peers.py``'s (``holding_sums``, ``position_margins``,
``account_status``, ``call_amounts``). Input validation is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from peers import (
    F64,
    LIQUIDATION,
    Params,
    _codes,
    _column,
    account_status,
    call_amounts,
    holding_sums,
    params_of,
    position_margins,
    read_accounts,
    tiered_rows,
)
from vamargin.config import RiskConfig

STATUS_COLUMNS = ("normal", "restricted", "margin_call", "liquidation")
COUNT_COLUMNS = (*STATUS_COLUMNS, "isolated_liquidations")
AMOUNT_COLUMNS = ("call_amount", "uncovered_loss", "insurance_draw", "broker_loss")


def moved_prices(
    config: RiskConfig, prices: Mapping[str, float], moves: Mapping[str, float]
) -> dict[str, float]:
    """One scenario's prices, moved as ``vamargin.scenarios.scenario_prices`` moves them."""
    out = dict(prices)
    for asset in config.assets:
        if asset.symbol in prices:
            out[asset.symbol] = prices[asset.symbol] * (1.0 + moves.get(asset.symbol, 0.0))
    asset_ids = config.asset_ids
    for perp in config.perpetuals:
        if perp.symbol not in prices:
            continue
        if perp.symbol in moves:
            factor = 1.0 + moves[perp.symbol]
        else:
            factor = 1.0 + moves.get(perp.base, 0.0)
            if perp.quote is not None and perp.quote in asset_ids:
                factor = factor / (1.0 + moves.get(perp.quote, 0.0))
        out[perp.symbol] = prices[perp.symbol] * factor
    return out


@dataclass(frozen=True)
class Slice:
    """One instrument's rows in the instrument-sorted position arrays."""

    perp: int
    rows: slice


@dataclass(frozen=True)
class StressBook:
    """What does not change between scenarios (the peer's analogue of a built Book)."""

    n_accounts: int
    credit_limit: F64
    # Holdings, stably sorted by asset.
    h_account: np.ndarray
    h_asset: np.ndarray
    h_amount: F64
    tiered: dict[int, np.ndarray]
    # Cross positions (qty ≠ 0, no isolated margin), stably sorted by instrument.
    c_account: np.ndarray
    c_qty: F64
    c_entry: F64
    c_leverage: F64 | None
    c_slices: tuple[Slice, ...]
    has_cross: npt.NDArray[np.bool_]
    # Isolated positions (qty ≠ 0), stably sorted by instrument.
    i_qty: F64
    i_entry: F64
    i_leverage: F64 | None
    i_margin: F64
    i_slices: tuple[Slice, ...]


def _by_instrument(instrument: np.ndarray, n_perps: int) -> tuple[np.ndarray, tuple[Slice, ...]]:
    order = np.argsort(instrument, kind="stable")
    bounds = np.searchsorted(instrument[order], np.arange(n_perps + 1))
    slices = tuple(
        Slice(i, slice(int(bounds[i]), int(bounds[i + 1])))
        for i in range(n_perps)
        if bounds[i + 1] > bounds[i]
    )
    return order, slices


def prepare(
    config: RiskConfig,
    accounts: pa.Table,
    holdings: pa.Table,
    positions: pa.Table,
    prices: Mapping[str, float],
) -> StressBook:
    """Reads the tables once: account rows, config ids, sorted row orders."""
    p = params_of(config, prices)
    account_id, credit_limit, index = read_accounts(accounts)
    n = len(account_id)

    h_asset = _codes(holdings, "asset", p.asset_symbols)
    h_order = np.argsort(h_asset, kind="stable")
    h_asset = h_asset[h_order]
    h_account = index.rows(_column(holdings, "account_id"), "holdings")[h_order]
    h_amount = _column(holdings, "amount")[h_order]

    n_perps = len(p.perps)
    p_account = index.rows(_column(positions, "account_id"), "positions")
    instrument = _codes(positions, "instrument", tuple(q.symbol for q in p.perps))
    qty = _column(positions, "qty")
    entry = _column(positions, "entry_price")
    names = positions.column_names
    if "isolated_margin" in names:
        isolated = _column(positions, "isolated_margin")
    else:
        isolated = np.full(len(qty), np.nan)
    leverage = _column(positions, "leverage") if "leverage" in names else None
    live = qty != 0
    cross = live & np.isnan(isolated)
    iso = live & ~np.isnan(isolated)

    c_rows = np.flatnonzero(cross)
    c_order, c_slices = _by_instrument(instrument[c_rows], n_perps)
    c_rows = c_rows[c_order]
    i_rows = np.flatnonzero(iso)
    i_order, i_slices = _by_instrument(instrument[i_rows], n_perps)
    i_rows = i_rows[i_order]
    c_account = p_account[c_rows]
    return StressBook(
        n_accounts=n,
        credit_limit=credit_limit,
        h_account=h_account,
        h_asset=h_asset,
        h_amount=h_amount,
        tiered=tiered_rows(p, h_asset),
        c_account=c_account,
        c_qty=qty[c_rows],
        c_entry=entry[c_rows],
        c_leverage=None if leverage is None else leverage[c_rows],
        c_slices=c_slices,
        has_cross=np.bincount(c_account, minlength=n) > 0,
        i_qty=qty[i_rows],
        i_entry=entry[i_rows],
        i_leverage=None if leverage is None else leverage[i_rows],
        i_margin=isolated[i_rows],
        i_slices=i_slices,
    )


def _stress_one(book: StressBook, p: Params) -> tuple[list[int], list[float]]:
    """One scenario at the prices in ``p``: (counts, amounts) in ``COUNT_COLUMNS`` and
    ``AMOUNT_COLUMNS`` order."""
    n = book.n_accounts
    v = book.h_amount * p.asset_price[book.h_asset]
    held = holding_sums(p, book.h_account, book.h_asset, v, n, book.tiered, collateral=False)

    # Cross positions, per instrument, in the reporting currency.
    m = len(book.c_qty)
    upnl, im, mm = np.empty(m), np.empty(m), np.empty(m)
    for piece in book.c_slices:
        perp, rows = p.perps[piece.perp], piece.rows
        chosen = None if book.c_leverage is None else book.c_leverage[rows]
        margins = position_margins(perp, book.c_qty[rows], book.c_entry[rows], chosen)
        sp = perp.settle_price
        np.multiply(margins.upnl, sp, out=upnl[rows])
        np.multiply(margins.initial, sp, out=im[rows])
        np.multiply(margins.maintenance, sp, out=mm[rows])
    account_mm = np.bincount(book.c_account, mm, n)
    equity = held.value + np.bincount(book.c_account, upnl, n)
    initial = held.requirements[0] + np.bincount(book.c_account, im, n)
    maintenance = held.requirements[1] + account_mm
    liquidation = held.requirements[2] + account_mm
    status = account_status(
        equity, initial, maintenance, liquidation, held.debit, book.credit_limit
    )
    call = call_amounts(p, status, equity, initial, maintenance)
    shortfall = np.maximum(-equity, 0.0)

    # Isolated positions: below maintenance, and below zero (an insurance-fund draw).
    isolated_liquidations = 0
    isolated_draw = 0.0
    for piece in book.i_slices:
        perp, rows = p.perps[piece.perp], piece.rows
        chosen = None if book.i_leverage is None else book.i_leverage[rows]
        margins = position_margins(perp, book.i_qty[rows], book.i_entry[rows], chosen)
        balance = book.i_margin[rows] + margins.upnl
        isolated_liquidations += int(np.count_nonzero(balance < margins.maintenance))
        isolated_draw -= float(np.minimum(balance, 0.0).sum()) * perp.settle_price

    counts = np.bincount(status, minlength=LIQUIDATION + 1)
    insurance_draw = float(shortfall[book.has_cross].sum()) + isolated_draw
    broker_loss = float(shortfall[~book.has_cross].sum())
    return (
        [*(int(c) for c in counts), isolated_liquidations],
        [float(call.sum()), insurance_draw + broker_loss, insurance_draw, broker_loss],
    )


def numpy_stress(
    config: RiskConfig,
    book: StressBook,
    prices: Mapping[str, float],
    scenarios: Mapping[str, Mapping[str, float]],
) -> dict[str, np.ndarray]:
    """Per scenario (in order): the counts and amounts of ``engine.stress``."""
    counts: list[list[int]] = []
    amounts: list[list[float]] = []
    for moves in scenarios.values():
        p = params_of(config, moved_prices(config, prices, moves))
        with np.errstate(invalid="ignore", divide="ignore"):
            c, a = _stress_one(book, p)
        counts.append(c)
        amounts.append(a)
    count_matrix = np.array(counts, dtype=np.int64).reshape(-1, len(COUNT_COLUMNS))
    amount_matrix = np.array(amounts, dtype=np.float64).reshape(-1, len(AMOUNT_COLUMNS))
    out = {name: count_matrix[:, k] for k, name in enumerate(COUNT_COLUMNS)}
    out.update({name: amount_matrix[:, k] for k, name in enumerate(AMOUNT_COLUMNS)})
    return out
