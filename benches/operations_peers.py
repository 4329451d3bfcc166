"""Vectorised numpy (and, for funding, polars) peers of the engine's batch operations, for
``bench_operations.py``.

Each peer does the same job as one ``RiskEngine`` method, end to end from the same pyarrow
tables the engine is given (string columns dictionary-encoded), written the way a
competent numpy or polars user would: no Python loop over rows or accounts, only over the
handful of configured instruments, assets and size bands.

- ``numpy_funding`` ↔ ``engine.funding(book, rates, prices)``: per-position payments in
  int64 minor units of the settle asset, rounded against the account (the floor of the
  signed credit), per-instrument received / paid / house / dust, and per (account, settle
  asset) sums. The peer computes in float64 and floors; the engine is exact on the
  decimal inputs, so the peer may be one minor unit off where the exact amount is a whole
  number of minor units (see ``funding_coefficients``).
- ``polars_funding``: the same job and the same results in polars (the issue measures
  funding against the better of a numpy and a polars peer): the instrument's figures by
  its ``Enum`` code, the accounts by a hash join, the sums by ``group_by``.
- ``numpy_liquidation_queue`` ↔ ``engine.liquidation_queue``: revaluation (the numpy
  peer of ``peers.py``), then the queue: accounts in ``liquidation`` and isolated positions
  below their maintenance margin, with health, deficit, bankrupt and insurance draw,
  ordered by health ascending, deficit descending, account id (then instrument). **No
  close plans** (the engine builds one per entry).
- ``numpy_margin_calls`` ↔ ``engine.margin_calls``: revaluation, then every account below
  maintenance with its call amount, deadline, and the per-asset deposit and sell cures,
  walking the assets' size bands like the engine. **No forced-sale plans** (the engine
  builds them for accounts in ``liquidation``).
- ``numpy_firm_report`` ↔ ``engine.firm_report``: loans, top-N clients, collateral by
  asset and group, VA share, capital-uncovered loans and breaches. It reads only the
  holdings (nothing in the report depends on positions), while the engine revalues the
  whole book, positions included, to get the account figures.

Input validation is skipped (the engine's ``Book(...)`` / ``bind`` do it), except that an
unknown ``account_id`` is an error in the id mapping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from peers import LIQUIDATION, MARGIN_CALL, Params, numpy_revalue, params_of
from vamargin.config import RiskConfig

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
EXACT_FLOAT = 2.0**53
"""Integers summed as float64 (``np.bincount`` weights) stay exact below this."""


# -- reading the Arrow tables ----------------------------------------------------------------


def _column(table: pa.Table, name: str) -> np.ndarray:
    data = table.column(name)
    if data.null_count:
        data = pc.fill_null(data.cast(pa.float64()), float("nan"))
    if data.num_chunks == 1:
        return data.chunk(0).to_numpy(zero_copy_only=False)
    return data.to_numpy()


def _codes(table: pa.Table, name: str, symbols: tuple[str, ...] | list[str]) -> np.ndarray:
    """A dictionary-encoded (or plain) string column as config ids."""
    data = table.column(name)
    if not pa.types.is_dictionary(data.type):
        data = pc.dictionary_encode(data)
    ids = {s: i for i, s in enumerate(symbols)}
    pieces = []
    for chunk in data.chunks:
        lut = np.array([ids[s] for s in chunk.dictionary.to_pylist()] or [0], dtype=np.intp)
        pieces.append(lut[chunk.indices.to_numpy(zero_copy_only=False)])
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _account_rows(account_id: np.ndarray, keys: np.ndarray, table: str) -> np.ndarray:
    """Rows of ``keys`` in ``account_id`` (binary search; sorts the ids if needed)."""
    sorter = None if bool(np.all(account_id[1:] > account_id[:-1])) else np.argsort(account_id)
    ids = account_id if sorter is None else account_id[sorter]
    found = np.searchsorted(ids, keys)
    np.minimum(found, len(ids) - 1, out=found)
    if not np.array_equal(ids[found], keys):
        raise ValueError(f"{table}.account_id: unknown account")
    return found if sorter is None else sorter[found]


def _sum_int(keys: np.ndarray, values: I64, size: int) -> I64:
    """Exact per-key sums of int64 ``values``: ``np.bincount`` (float64) when every partial
    sum is provably exact, else ``np.add.at`` on int64."""
    if float(np.abs(values).sum(dtype=np.float64)) < EXACT_FLOAT:
        return np.bincount(keys, values, size).astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, keys, values)
    return out


# -- funding ---------------------------------------------------------------------------------


def funding_coefficients(
    config: RiskConfig, rates: Mapping[str, float], prices: Mapping[str, float]
) -> tuple[F64, np.ndarray, np.ndarray]:
    """Per instrument: minor units of the settle asset a long of one contract pays
    (``cs·P·F·10^d`` linear, ``cs·F/P·10^d`` inverse), computed in float64; the settle
    asset id; and whether the instrument is priced and rated (else it moves nothing).

    An exact amount that is a whole number of minor units (e.g. 0.001 × 96 450 × 0.0001 ×
    10⁶ = 9 645 µUSDT) may come out of float64 a hair below or above it, so ``floor`` can
    land one unit off the engine's exact result."""
    asset_ids = config.asset_ids
    k = np.zeros(len(config.perpetuals))
    settle = np.zeros(len(config.perpetuals), dtype=np.intp)
    live = np.zeros(len(config.perpetuals), dtype=np.bool_)
    for i, perp in enumerate(config.perpetuals):
        settle[i] = asset_ids[perp.settle]
        if perp.symbol not in rates or perp.symbol not in prices:
            continue
        scale = 10.0 ** config.assets[settle[i]].minor_decimals
        rate, mark = rates[perp.symbol], prices[perp.symbol]
        if perp.kind == "inverse":
            k[i] = perp.contract_size * rate / mark * scale
        else:
            k[i] = perp.contract_size * mark * rate * scale
        live[i] = True
    return k, settle, live


def numpy_funding(
    config: RiskConfig,
    accounts: pa.Table,
    positions: pa.Table,
    rates: Mapping[str, float],
    prices: Mapping[str, float],
) -> dict[str, Any]:
    """One funding interval: ``payments`` (int64 per position row), ``by_account``
    (``account_id``, ``asset`` id, ``amount``: non-zero sums per account and settle
    asset, in account-row then asset order, like the engine), and per instrument
    ``received``, ``paid``, ``house``, ``dust`` (Σ payments + house + dust = 0)."""
    n_perps, n_assets = len(config.perpetuals), len(config.assets)
    k, settle, live = funding_coefficients(config, rates, prices)
    account_id = _column(accounts, "account_id")
    instrument = _codes(positions, "instrument", [p.symbol for p in config.perpetuals])
    if not live[instrument].all():
        raise ValueError("funding: a position's instrument has no rate or mark")
    qty = _column(positions, "qty")

    # Credit to the holder, floored: a payer pays the ceiling, a receiver gets the floor.
    payments = np.floor(-qty * k[instrument]).astype(np.int64)

    # Per instrument. The house holds the opposite of the net open interest (qty are read
    # as given: whole contracts sum exactly in float64).
    net = np.bincount(instrument, qty, n_perps)
    house = np.floor(net * k).astype(np.int64)
    received = _sum_int(instrument, np.maximum(payments, 0), n_perps)
    paid = _sum_int(instrument, np.minimum(payments, 0), n_perps)
    dust = -(received + paid + house)

    # Per (account, settle asset).
    rows = _account_rows(account_id, _column(positions, "account_id"), "positions")
    key = rows * n_assets + settle[instrument]
    sums = _sum_int(key, payments, len(account_id) * n_assets).reshape(-1, n_assets)
    account_rows, asset_ids = np.nonzero(sums)
    return {
        "payments": payments,
        "by_account": {
            "account_id": account_id[account_rows],
            "asset": asset_ids,
            "amount": sums[account_rows, asset_ids],
        },
        "by_instrument": {"received": received, "paid": paid, "house": house, "dust": dust},
    }


def polars_funding(
    config: RiskConfig,
    accounts: pa.Table,
    positions: pa.Table,
    rates: Mapping[str, float],
    prices: Mapping[str, float],
) -> dict[str, Any]:
    """``numpy_funding``'s job and results, in polars."""
    symbols = [p.symbol for p in config.perpetuals]
    k, settle, live = funding_coefficients(config, rates, prices)
    col = pl.col

    def per_instrument(values: np.ndarray, dtype: Any) -> pl.Expr:
        return pl.lit(pl.Series(values, dtype=dtype)).gather(col("code"))

    rows = pl.from_arrow(positions.select(["account_id", "instrument", "qty"]))
    assert isinstance(rows, pl.DataFrame)
    priced = (
        rows.lazy()
        .with_columns(code=col("instrument").cast(pl.Enum(symbols)).to_physical())
        .with_columns(
            # Credit to the holder, floored: a payer pays the ceiling, a receiver the floor.
            payment=(-col("qty") * per_instrument(k, pl.Float64)).floor().cast(pl.Int64),
            settle=per_instrument(settle, pl.UInt32),
            live=per_instrument(live, pl.Boolean),
        )
        .collect()
    )
    if not priced["live"].all():
        raise ValueError("funding: a position's instrument has no rate or mark")

    # Per instrument; the house holds the opposite of the net open interest.
    sums = (
        priced.lazy()
        .group_by("code")
        .agg(
            net=col("qty").sum(),
            received=col("payment").clip(lower_bound=0).sum(),
            paid=col("payment").clip(upper_bound=0).sum(),
        )
        .collect()
    )
    n_perps = len(symbols)
    net, received, paid = (np.zeros(n_perps, dtype=d) for d in (np.float64, np.int64, np.int64))
    codes = sums["code"].to_numpy()
    net[codes] = sums["net"].to_numpy()
    received[codes] = sums["received"].to_numpy()
    paid[codes] = sums["paid"].to_numpy()
    house = np.floor(net * k).astype(np.int64)

    # Per (account, settle asset): non-zero sums in account-row, then asset order.
    ids = pl.from_arrow(accounts.select(["account_id"]))
    assert isinstance(ids, pl.DataFrame)
    joined = priced.lazy().join(
        ids.lazy().with_row_index("account_row"), on="account_id", how="left"
    )
    grouped = (
        joined.group_by("account_row", "settle")
        .agg(col("account_id").first(), amount=col("payment").sum())
        .collect()
    )
    if grouped["account_row"].null_count():
        raise ValueError("positions.account_id: unknown account")
    by_account = grouped.filter(col("amount") != 0).sort("account_row", "settle")
    return {
        "payments": priced["payment"].to_numpy(),
        "by_account": {
            "account_id": by_account["account_id"].to_numpy(),
            "asset": by_account["settle"].to_numpy().astype(np.intp),
            "amount": by_account["amount"].to_numpy(),
        },
        "by_instrument": {
            "received": received,
            "paid": paid,
            "house": house,
            "dust": -(received + paid + house),
        },
    }


# -- liquidation queue -----------------------------------------------------------------------


def numpy_liquidation_queue(
    config: RiskConfig,
    accounts: pa.Table,
    holdings: pa.Table,
    positions: pa.Table,
    prices: Mapping[str, float],
    params: Params | None = None,
) -> dict[str, np.ndarray]:
    """The queue in order: ``account_id``, ``position_row`` (−1 for an account),
    ``instrument`` (−1 for an account), ``health``, ``deficit``, ``bankrupt``,
    ``insurance_draw``. No close plans."""
    p = params_of(config, prices) if params is None else params
    r = numpy_revalue(config, accounts, holdings, positions, prices, p)
    acc, pos = r["accounts"], r["positions"]

    # Accounts in liquidation.
    in_liquidation = np.flatnonzero(acc["status"] == LIQUIDATION)
    equity = acc["equity"][in_liquidation]
    requirement = acc["liquidation_requirement"][in_liquidation]
    with np.errstate(divide="ignore", invalid="ignore"):
        account_health = np.where(requirement > 0, equity / requirement, -np.inf)

    # Isolated positions below maintenance (NaN isolated margin = cross: never below).
    if "isolated_margin" in positions.column_names:
        balance_all = _column(positions, "isolated_margin") + pos["upnl"]
        below = (balance_all < pos["maintenance_margin"]) & (_column(positions, "qty") != 0)
        rows = np.flatnonzero(below)
    else:
        rows = np.zeros(0, dtype=np.intp)
    balance = balance_all[rows] if len(rows) else np.zeros(0)
    maintenance = pos["maintenance_margin"][rows]
    instrument = pos["instrument"][rows]
    settle_price = np.array([q.settle_price for q in p.perps])[instrument]
    with np.errstate(divide="ignore", invalid="ignore"):
        isolated_health = np.where(maintenance > 0, balance / maintenance, -np.inf)

    account_id = np.concatenate([acc["account_id"][in_liquidation], pos["account_id"][rows]])
    health = np.concatenate([account_health, isolated_health])
    deficit = np.concatenate([requirement - equity, (maintenance - balance) * settle_price])
    bankrupt = np.concatenate([equity < 0, balance < 0])
    draw = np.concatenate([np.maximum(-equity, 0.0), np.maximum(-balance, 0.0) * settle_price])
    position_row = np.concatenate([np.full(len(in_liquidation), -1), rows]).astype(np.int64)
    instrument_key = np.concatenate([np.full(len(in_liquidation), -1), instrument])

    # Last key first: health ascending, deficit descending, account id, cross book first.
    order = np.lexsort((instrument_key, account_id, -deficit, health))
    return {
        "account_id": account_id[order],
        "position_row": position_row[order],
        "instrument": instrument_key[order],
        "health": health[order],
        "deficit": deficit[order],
        "bankrupt": bankrupt[order],
        "insurance_draw": draw[order],
    }


# -- margin calls ----------------------------------------------------------------------------


def _bands(floors: F64, factors: F64) -> list[tuple[float, float, float]]:
    """``(from, to, factor)`` of each size band, covering ``[0, ∞)``."""
    return [
        (float(lo), float(floors[i + 1]) if i + 1 < len(floors) else np.inf, float(f))
        for i, (lo, f) in enumerate(zip(floors, factors, strict=True))
    ]


def deposit_to_cure(
    shortfall: F64, held: F64, haircut: float, bands: list[tuple[float, float, float]]
) -> F64:
    """Value of collateral to deposit on top of ``held`` that raises equity − requirement
    by ``shortfall``: each unit in band k adds ``(1 − h)·factor_k``. NaN where none can."""
    out = np.where(shortfall <= 0, 0.0, np.nan)
    remaining = shortfall.copy()
    deposited = np.zeros_like(shortfall)
    open_ = shortfall > 0
    for lo, hi, factor in bands:
        active = open_ & (hi > held)
        start = np.maximum(held, lo)
        room = hi - start
        gain = (1.0 - haircut) * factor
        if gain > 0:
            fits = active & (remaining <= gain * room)
            out[fits] = (deposited + remaining / gain)[fits]
            open_ &= ~fits
            active &= ~fits
            remaining = np.where(active, remaining - gain * room, remaining)
        deposited = np.where(active, deposited + room, deposited)
    return out


def sale_to_cure(
    shortfall: F64, held: F64, haircut: float, fee: float, bands: list[tuple[float, float, float]]
) -> F64:
    """Value of a holding worth ``held`` to sell (proceeds kept as cash) that raises
    equity − requirement by ``shortfall``, from the top band down: each unit sold adds
    ``1 − (1 − h)·factor_k − fee``. NaN where selling everything does not cure."""
    out = np.where(shortfall <= 0, 0.0, np.nan)
    remaining = shortfall.copy()
    sold = np.zeros_like(shortfall)
    open_ = shortfall > 0
    for lo, hi, factor in reversed(bands):
        active = open_ & (lo < held)
        room = np.minimum(held, hi) - lo
        gain = 1.0 - (1.0 - haircut) * factor - fee
        if gain > 0:
            fits = active & (remaining <= gain * room)
            out[fits] = (sold + remaining / gain)[fits]
            open_ &= ~fits
            active &= ~fits
        remaining = np.where(active, remaining - gain * room, remaining)
        sold = np.where(active, sold + room, sold)
    return out


def numpy_margin_calls(
    config: RiskConfig,
    accounts: pa.Table,
    holdings: pa.Table,
    positions: pa.Table,
    prices: Mapping[str, float],
    as_of: dt.datetime,
    params: Params | None = None,
) -> dict[str, np.ndarray]:
    """Accounts in ``margin_call`` or ``liquidation`` (account order): ``account_id``,
    ``status``, ``equity``, ``call_amount``, ``deadline``, ``forced``, and per asset
    ``deposit_<ASSET>`` (eligible assets) and ``sell_<ASSET>`` in units. No forced-sale
    plans."""
    p = params_of(config, prices) if params is None else params
    r = numpy_revalue(config, accounts, holdings, positions, prices, p)
    acc = r["accounts"]
    status = acc["status"]
    called = np.flatnonzero(status >= MARGIN_CALL)
    call = acc["call_amount"][called]
    n_assets = len(config.assets)

    # Value held per (called account, asset): every row summed, loans included.
    slot = np.full(len(status), -1, dtype=np.intp)
    slot[called] = np.arange(len(called))
    h_slot = slot[_account_rows(acc["account_id"], _column(holdings, "account_id"), "holdings")]
    h_asset = _codes(holdings, "asset", p.asset_symbols)
    keep = h_slot >= 0
    h_slot, h_asset = h_slot[keep], h_asset[keep]
    value = _column(holdings, "amount")[keep] * p.asset_price[h_asset]
    held = np.bincount(h_slot * n_assets + h_asset, value, len(called) * n_assets)
    held = held.reshape(-1, n_assets)

    target = 0 if config.policy.call_target == "initial" else 1
    hours = np.timedelta64(round(config.policy.call_deadline_hours * 3_600_000_000), "us")
    as_of_utc = np.datetime64(as_of.astimezone(dt.UTC).replace(tzinfo=None), "us")
    out: dict[str, np.ndarray] = {
        "account_id": acc["account_id"][called],
        "status": status[called],
        "equity": acc["equity"][called],
        "call_amount": call,
        "deadline": np.full(len(called), as_of_utc + hours, dtype="datetime64[us]"),
        "forced": status[called] == LIQUIDATION,
    }
    cures: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, asset in enumerate(config.assets):
            price = p.asset_price[i]
            haircut = asset.haircuts[target]  # as the engine's call target reads it
            bands = _bands(*p.bands[i])
            if asset.eligible:
                if np.isfinite(price):
                    deposit = deposit_to_cure(call, np.maximum(held[:, i], 0.0), haircut, bands)
                else:
                    deposit = np.full(len(called), np.nan)
                out[f"deposit_{asset.symbol}"] = deposit / price
            sale = sale_to_cure(call, held[:, i], haircut, asset.sale_fee, bands)
            sale = np.where((held[:, i] > 0) & (sale <= held[:, i]), sale, np.nan)
            cures[f"sell_{asset.symbol}"] = sale / price
    out.update(cures)
    return out


# -- firm report -----------------------------------------------------------------------------


def numpy_firm_report(
    config: RiskConfig,
    accounts: pa.Table,
    holdings: pa.Table,
    prices: Mapping[str, float],
    *,
    capital: float,
    top: int = 10,
) -> dict[str, Any]:
    """Firm-wide figures from the holdings: ``total_loans``, ``loans_to_capital``,
    ``top_clients`` (largest debits, ties by row), ``top_groups`` (the same per
    ``client_group`` when the accounts table has one), ``collateral_by_asset`` and ``by_group``
    (value and share), ``va_share``, ``capital_uncovered`` and ``breaches``."""
    policy = config.policy
    symbols = tuple(a.symbol for a in config.assets)
    n_assets = len(symbols)
    asset_price = np.array([prices.get(s, np.nan) for s in symbols])
    eligible = np.array([a.eligible for a in config.assets])
    weight = np.array([1.0 - a.effective_capital_haircut for a in config.assets])

    account_id = _column(accounts, "account_id")
    n = len(account_id)
    h_row = _account_rows(account_id, _column(holdings, "account_id"), "holdings")
    h_asset = _codes(holdings, "asset", symbols)
    v = _column(holdings, "amount") * asset_price[h_asset]
    positive = np.where(v > 0, v, 0.0)
    debit = np.bincount(h_row, np.where(v < 0, -v, 0.0), n)
    collateral = np.bincount(h_row, np.where(eligible[h_asset], positive, 0.0), n)
    recognised = np.bincount(h_row, positive * weight[h_asset], n)
    by_asset = np.bincount(h_asset, positive, n_assets)

    total_loans = float(debit.sum())
    total_collateral = float(by_asset.sum())
    # Top N by debit, ties by account row (the engine's stable order): partition, then
    # sort the candidates, every tie at the cut included.
    k = min(max(top, 1), n)
    cut = debit[np.argpartition(-debit, k - 1)[:k]].min()
    candidates = np.flatnonzero(debit >= cut)
    order = candidates[np.lexsort((candidates, -debit[candidates]))][:top]
    order = order[debit[order] > 0]
    top_debit = debit[order]
    top_collateral = collateral[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        ltv = np.where(
            top_debit == 0, 0.0, np.where(top_collateral == 0, np.inf, top_debit / top_collateral)
        )

    def share(part: F64, whole: float) -> F64:
        return part / whole if whole > 0 else np.zeros_like(part)

    held = np.flatnonzero(by_asset > 0)
    group_of = np.array([a.group or a.symbol for a in config.assets])
    groups = np.unique(group_of[held])
    group_value = np.array([by_asset[held][group_of[held] == g].sum() for g in groups])
    va = np.array([a.asset_class == "va" for a in config.assets])
    loans_to_capital = total_loans / capital

    # Related-client groups (optional ``client_group`` column; else one account each).
    client_share = share(top_debit, total_loans)
    if "client_group" in accounts.column_names:
        group_codes = accounts.column("client_group").combine_chunks().dictionary_encode()
        names = np.asarray(group_codes.dictionary.to_pylist(), dtype=np.str_)
        codes = group_codes.indices.to_numpy()
        loans = np.bincount(codes, debit, len(names))
        members = np.bincount(codes, minlength=len(names))
        group_order = np.lexsort((np.arange(len(names)), -loans))[:top]
        group_order = group_order[loans[group_order] > 0]
        top_groups = {
            "group": names[group_order],
            "accounts": members[group_order].astype(np.int64),
            "debit": loans[group_order],
            "share_of_loans": share(loans[group_order], total_loans),
        }
    else:
        top_groups = {
            "group": account_id[order].astype(np.str_),
            "accounts": np.ones(len(order), dtype=np.int64),
            "debit": top_debit,
            "share_of_loans": client_share,
        }

    breaches: list[tuple[str, str, float, float]] = []
    if loans_to_capital > policy.max_loans_to_capital:
        breaches.append(
            ("max_loans_to_capital", "firm", loans_to_capital, policy.max_loans_to_capital)
        )
    for group, s in zip(top_groups["group"], top_groups["share_of_loans"], strict=True):
        if s > policy.max_client_share:
            breaches.append(("max_client_share", str(group), float(s), policy.max_client_share))
    asset_share = share(by_asset[held], total_collateral)
    if policy.max_collateral_share is not None:
        for i, s in zip(held, asset_share, strict=True):
            if s > policy.max_collateral_share:
                breaches.append(
                    ("max_collateral_share", symbols[i], float(s), policy.max_collateral_share)
                )
    return {
        "total_loans": total_loans,
        "loans_to_capital": loans_to_capital,
        "top_clients": {
            "account_id": account_id[order],
            "debit": top_debit,
            "collateral_value": top_collateral,
            "ltv": ltv,
            "share_of_loans": client_share,
        },
        "top_groups": top_groups,
        "collateral_by_asset": {"asset": held, "value": by_asset[held], "share": asset_share},
        "by_group": {
            "group": groups,
            "value": group_value,
            "share": share(group_value, total_collateral),
        },
        "va_share": float(by_asset[va].sum()) / total_collateral if total_collateral > 0 else 0.0,
        "capital_uncovered": float(np.maximum(0.0, debit - recognised).sum()),
        "breaches": breaches,
    }
