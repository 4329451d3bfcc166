"""Peer implementations of ``RiskEngine.revalue`` (SPEC §5–§6) for the benchmarks.

Both peers do the engine's whole job, end to end, from the same pyarrow tables the engine
is given (string columns dictionary-encoded):

- map ``account_id`` to account rows, resolve assets and instruments against the config;
- per position: notional, uPnL, margin tier, initial and maintenance margin;
- per holding: value, debit, eligible collateral, and the three haircut requirements with
  the assets' marginal size tiers (``req(v, h) = v − (1 − h)·T(v)``);
- per account: holdings sums plus cross-position sums, equity, the three requirements,
  excess, margin ratio, LTV, status and call amount;
- per position again: liquidation price (the closed form of every margin tier, keeping the
  tier that contains the notional at that price), bankruptcy price and ADL score, from the
  account totals.

They are written the way a competent numpy / polars user would write them: vectorised,
no Python loop over rows or accounts. Loops run only over the handful of configured
instruments, tiers and size bands. They skip the engine's input validation (duplicate
accounts, unknown symbols, NaN, loan eligibility, …) except that an unknown
``account_id`` in the numpy peer's id mapping is an error, so the engine does strictly
more work than they do.

Results: ``numpy_revalue`` returns ``{"accounts": {column: ndarray}, "positions": {...}}``
with the engine's column names (status as ``uint8`` codes into ``STATUSES``, tier 1-based
``uint8``); ``polars_revalue`` returns ``(accounts, positions)`` polars DataFrames with the
same columns.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from vamargin.config import RiskConfig

F64 = npt.NDArray[np.float64]
STATUSES = ("normal", "restricted", "margin_call", "liquidation")
NORMAL, RESTRICTED, MARGIN_CALL, LIQUIDATION = range(4)


# -- configuration → small arrays ------------------------------------------------------------


@dataclass(frozen=True)
class Perp:
    symbol: str
    inverse: bool
    contract_size: float
    mark: float
    settle_price: float
    floors: F64  # tier floors, settle-currency notional
    mmr: F64
    max_leverage: F64
    cum: F64  # maintenance amounts


@dataclass(frozen=True)
class Params:
    """The numbers both peers read, by config id."""

    asset_symbols: tuple[str, ...]
    asset_price: F64  # NaN when unpriced (and then unused)
    keep: F64  # (3, n_assets): 1 − h for the initial, maintenance, liquidation haircut
    eligible: npt.NDArray[np.bool_]
    bands: tuple[tuple[F64, F64], ...]  # per asset: (floors, factors) of its size tiers
    perps: tuple[Perp, ...]
    call_on_initial: bool

    @property
    def n_tiers(self) -> int:
        return max(len(p.floors) for p in self.perps)


def _maintenance_amounts(floors: list[float], mmr: list[float]) -> list[float]:
    cum = [0.0]
    for k in range(1, len(floors)):
        # Same association as the engine's table builder: floor·mmr − floor·mmr_prev.
        cum.append(cum[-1] + (floors[k] * mmr[k] - floors[k] * mmr[k - 1]))
    return cum


def params_of(config: RiskConfig, prices: Mapping[str, float]) -> Params:
    nan = float("nan")
    asset_price = np.array([prices.get(a.symbol, nan) for a in config.assets], dtype=np.float64)
    haircuts = np.array(
        [a.haircuts if a.eligible else (1.0, 1.0, 1.0) for a in config.assets], dtype=np.float64
    )
    bands = tuple(
        (
            np.array([b.floor for b in a.size_tiers] or [0.0]),
            np.array([b.factor for b in a.size_tiers] or [1.0]),
        )
        for a in config.assets
    )
    perps = []
    for p in config.perpetuals:
        floors = [t.floor for t in p.tiers]
        mmr = [t.mmr for t in p.tiers]
        perps.append(
            Perp(
                symbol=p.symbol,
                inverse=p.kind == "inverse",
                contract_size=p.contract_size,
                mark=prices.get(p.symbol, nan),
                settle_price=prices.get(p.settle, nan),
                floors=np.array(floors),
                mmr=np.array(mmr),
                max_leverage=np.array([t.max_leverage for t in p.tiers]),
                cum=np.array(_maintenance_amounts(floors, mmr)),
            )
        )
    return Params(
        asset_symbols=tuple(a.symbol for a in config.assets),
        asset_price=asset_price,
        keep=np.ascontiguousarray((1.0 - haircuts).T),
        eligible=np.array([a.eligible for a in config.assets]),
        bands=bands,
        perps=tuple(perps),
        call_on_initial=config.policy.call_target == "initial",
    )


# -- numpy -----------------------------------------------------------------------------------


def _column(table: pa.Table, name: str) -> np.ndarray:
    data = table.column(name)
    if data.null_count:
        data = pc.fill_null(data.cast(pa.float64()), float("nan"))
    if data.num_chunks == 1:
        return data.chunk(0).to_numpy(zero_copy_only=False)
    return data.to_numpy()


def _codes(table: pa.Table, name: str, symbols: tuple[str, ...]) -> np.ndarray:
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


class _AccountMap:
    """``account_id`` → row of the accounts table (binary search on the sorted ids)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.sorter = None if bool(np.all(ids[1:] > ids[:-1])) else np.argsort(ids)
        self.ids = ids if self.sorter is None else ids[self.sorter]

    def rows(self, keys: np.ndarray, table: str) -> np.ndarray:
        found = np.searchsorted(self.ids, keys)
        np.minimum(found, len(self.ids) - 1, out=found)
        if not np.array_equal(self.ids[found], keys):
            raise ValueError(f"{table}.account_id: unknown account")
        return found if self.sorter is None else self.sorter[found]


def read_accounts(accounts: pa.Table) -> tuple[np.ndarray, F64, _AccountMap]:
    """``account_id``, ``credit_limit`` (∞ where the column is absent) and the id → row map."""
    account_id = _column(accounts, "account_id")
    if "credit_limit" in accounts.column_names:
        credit_limit = _column(accounts, "credit_limit")
    else:
        credit_limit = np.full(len(account_id), np.inf)
    return account_id, credit_limit, _AccountMap(account_id)


def _credited(value: F64, floors: F64, factors: F64) -> F64:
    """Marginal size-tier credit ``T(v)`` of holdings worth ``value > 0``."""
    credited = np.zeros_like(value)
    for k, (lo, factor) in enumerate(zip(floors, factors, strict=True)):
        hi = floors[k + 1] if k + 1 < len(floors) else np.inf
        credited += np.where(value > lo, (np.minimum(value, hi) - lo) * factor, 0.0)
    return credited


def tiered_rows(p: Params, h_asset: np.ndarray) -> dict[int, np.ndarray]:
    """Holding rows of each asset that has size tiers (the others are credited in full)."""
    return {
        asset_id: np.flatnonzero(h_asset == asset_id)
        for asset_id, (floors, factors) in enumerate(p.bands)
        if len(floors) > 1 or factors[0] != 1.0
    }


@dataclass(frozen=True)
class HoldingSums:
    """Per account: Σ holdings value, debit, eligible collateral (``None`` when not asked
    for) and the initial, maintenance and liquidation haircut requirements."""

    value: F64
    debit: F64
    collateral: F64 | None
    requirements: list[F64]


def holding_sums(
    p: Params,
    h_account: np.ndarray,
    h_asset: np.ndarray,
    v: F64,
    n: int,
    tiered: dict[int, np.ndarray],
    *,
    collateral: bool = True,
) -> HoldingSums:
    """Sums holdings worth ``v`` (reporting currency) per account row ``h_account`` (of
    ``n``), with each asset's marginal size tiers: ``req(v, h) = v − (1 − h)·T(v)``."""
    positive = v > 0
    credited = v.copy()  # T(v) = v without size tiers
    for asset_id, rows in tiered.items():
        floors, factors = p.bands[asset_id]
        credited[rows] = _credited(v[rows], floors, factors)
    eligible = (
        np.bincount(h_account, np.where(positive & p.eligible[h_asset], v, 0.0), n)
        if collateral
        else None
    )
    return HoldingSums(
        value=np.bincount(h_account, v, n),
        debit=np.bincount(h_account, np.where(v < 0, -v, 0.0), n),
        collateral=eligible,
        requirements=[
            np.bincount(h_account, np.where(positive, v - keep[h_asset] * credited, 0.0), n)
            for keep in p.keep
        ],
    )


@dataclass(frozen=True)
class Margins:
    """One instrument's positions at its mark: notional and uPnL (settle currency), tier
    (0-based), initial and maintenance margin."""

    notional: F64
    upnl: F64
    tier: np.ndarray
    initial: F64
    maintenance: F64


def position_margins(perp: Perp, q: F64, entry: F64, chosen_leverage: F64 | None) -> Margins:
    """Notional, uPnL, tier (searchsorted on the tier floors), IM and MM of positions
    ``q`` contracts of ``perp`` entered at ``entry``; ``chosen_leverage`` (NaN: none)
    may only lower the tier's maximum leverage."""
    cs, mark = perp.contract_size, perp.mark
    size = np.abs(q) * cs
    if perp.inverse:
        n_i = size / mark
        u_i = q * cs * (1.0 / entry - 1.0 / mark)
    else:
        n_i = size * mark
        u_i = q * cs * (mark - entry)
    k = np.searchsorted(perp.floors, n_i, side="right") - 1
    lev = perp.max_leverage[k]
    if chosen_leverage is not None:
        lev = np.where(chosen_leverage < lev, chosen_leverage, lev)  # NaN: the tier's maximum
    return Margins(
        notional=n_i,
        upnl=u_i,
        tier=k,
        initial=n_i / lev,
        maintenance=n_i * perp.mmr[k] - perp.cum[k],
    )


def account_status(
    equity: F64, initial: F64, maintenance: F64, liquidation: F64, debit: F64, credit_limit: F64
) -> np.ndarray:
    """Status codes (``STATUSES``), worst first."""
    return np.where(
        equity < liquidation,
        LIQUIDATION,
        np.where(
            equity < maintenance,
            MARGIN_CALL,
            np.where((equity < initial) | (debit > credit_limit), RESTRICTED, NORMAL),
        ),
    ).astype(np.uint8)


def call_amounts(p: Params, status: np.ndarray, equity: F64, initial: F64, maintenance: F64) -> F64:
    """What restores the call target, for accounts in margin call or liquidation."""
    target = initial if p.call_on_initial else maintenance
    return np.where(status >= MARGIN_CALL, np.maximum(target - equity, 0.0), 0.0)


def numpy_revalue(
    config: RiskConfig,
    accounts: pa.Table,
    holdings: pa.Table,
    positions: pa.Table,
    prices: Mapping[str, float],
    params: Params | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    p = params_of(config, prices) if params is None else params
    account_id, credit_limit, index = read_accounts(accounts)
    n = len(account_id)

    # -- holdings: value, debit, collateral and haircut requirements ------------------------
    h_account = index.rows(_column(holdings, "account_id"), "holdings")
    h_asset = _codes(holdings, "asset", p.asset_symbols)
    v = _column(holdings, "amount") * p.asset_price[h_asset]
    held = holding_sums(p, h_account, h_asset, v, n, tiered_rows(p, h_asset))
    holdings_value, debit, holdings_req = held.value, held.debit, held.requirements
    collateral = held.collateral
    assert collateral is not None

    # -- positions: notional, uPnL, tier, IM, MM (one vectorised pass per instrument) --------
    p_account = index.rows(_column(positions, "account_id"), "positions")
    instrument = _codes(positions, "instrument", tuple(q.symbol for q in p.perps))
    qty = _column(positions, "qty")
    entry = _column(positions, "entry_price")
    names = positions.column_names
    isolated = _column(positions, "isolated_margin") if "isolated_margin" in names else None
    leverage = _column(positions, "leverage") if "leverage" in names else None
    m = len(qty)
    notional = np.empty(m)
    upnl = np.empty(m)
    initial_margin = np.empty(m)
    maintenance_margin = np.empty(m)
    tier = np.empty(m, dtype=np.uint8)
    # Cross positions' contributions to the account sums, in the reporting currency.
    cross_upnl = np.zeros(m)
    cross_im = np.zeros(m)
    cross_mm = np.zeros(m)
    groups = [np.flatnonzero(instrument == i) for i in range(len(p.perps))]
    for perp, rows in zip(p.perps, groups, strict=True):
        if len(rows) == 0:
            continue
        chosen = None if leverage is None else leverage[rows]
        margins = position_margins(perp, qty[rows], entry[rows], chosen)
        n_i, u_i, k = margins.notional, margins.upnl, margins.tier
        im_i, mm_i = margins.initial, margins.maintenance
        notional[rows] = n_i
        upnl[rows] = u_i
        initial_margin[rows] = im_i
        maintenance_margin[rows] = mm_i
        tier[rows] = k + 1
        sp = perp.settle_price
        if isolated is None:
            cross_upnl[rows] = u_i * sp
            cross_im[rows] = im_i * sp
            cross_mm[rows] = mm_i * sp
        else:
            cross = np.isnan(isolated[rows])
            cross_upnl[rows] = np.where(cross, u_i * sp, 0.0)
            cross_im[rows] = np.where(cross, im_i * sp, 0.0)
            cross_mm[rows] = np.where(cross, mm_i * sp, 0.0)

    # -- accounts ----------------------------------------------------------------------------
    account_upnl = np.bincount(p_account, cross_upnl, n)
    account_im = np.bincount(p_account, cross_im, n)
    account_mm = np.bincount(p_account, cross_mm, n)
    del cross_upnl, cross_im, cross_mm
    equity = holdings_value + account_upnl
    initial = holdings_req[0] + account_im
    maintenance = holdings_req[1] + account_mm
    liquidation = holdings_req[2] + account_mm
    status = account_status(equity, initial, maintenance, liquidation, debit, credit_limit)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_ratio = np.where(
            maintenance == 0, 0.0, np.where(equity <= 0, np.inf, maintenance / equity)
        )
        ltv = np.where(debit == 0, 0.0, np.where(collateral == 0, np.inf, debit / collateral))
    call_amount = call_amounts(p, status, equity, initial, maintenance)
    wallet = holdings_value - holdings_req[2]

    # -- positions again: liquidation and bankruptcy prices, ADL score ------------------------
    liquidation_price = np.empty(m)
    bankruptcy_price = np.empty(m)
    adl_score = np.empty(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        for perp, rows in zip(p.perps, groups, strict=True):
            if len(rows) == 0:
                continue
            q = qty[rows]
            ep = entry[rows]
            acc = p_account[rows]
            u_i = upnl[rows]
            n_i = notional[rows]
            sp = perp.settle_price
            other_upnl = account_upnl[acc] - u_i * sp
            other_mm = account_mm[acc] - maintenance_margin[rows] * sp
            liq_balance = (wallet[acc] - other_mm + other_upnl) / sp
            bk_balance = (holdings_value[acc] + other_upnl) / sp
            margin_balance = equity[acc] / sp
            if isolated is not None:
                iso = isolated[rows]
                cross = np.isnan(iso)
                liq_balance = np.where(cross, liq_balance, iso)
                bk_balance = np.where(cross, bk_balance, iso)
                margin_balance = np.where(cross, margin_balance, iso + u_i)
            a = np.abs(q) * perp.contract_size
            side = np.sign(q)
            sa = side * a
            # Margin balance is affine in x = P (linear) or 1/P (inverse): b0 + b1·x.
            if perp.inverse:
                b1 = -sa
                b0 = liq_balance + sa / ep
                b0_bk = bk_balance + sa / ep
                entry_value = a / ep
            else:
                b1 = sa
                b0 = liq_balance - sa * ep
                b0_bk = bk_balance - sa * ep
                entry_value = a * ep
            valid = (a > 0) & np.isfinite(a) & (ep > 0)
            # A root at x > 0 needs the gap b0 on the other side of 0 from where b1 takes it.
            root = valid & np.isfinite(liq_balance) & np.where(b1 > 0, b0 < 0, b0 > 0)
            x = np.full(len(rows), np.nan)
            floors = perp.floors
            # The tier loop reuses its scratch arrays (no fresh temporaries per tier).
            x_k, denominator, at_l = np.empty((3, len(rows)))
            hit, below = np.empty((2, len(rows)), dtype=np.bool_)
            for k in range(len(floors)):
                hi = floors[k + 1] if k + 1 < len(floors) else np.inf
                # x_k = (b0 + cum_k) / (a·mmr_k − b1), kept if a·x_k is in tier k.
                np.add(b0, perp.cum[k], out=x_k)
                np.multiply(a, perp.mmr[k], out=denominator)
                np.subtract(denominator, b1, out=denominator)
                np.divide(x_k, denominator, out=x_k)
                np.multiply(a, x_k, out=at_l)  # notional at that price
                np.greater_equal(at_l, floors[k], out=hit)
                np.less(at_l, hi, out=below)
                hit &= below
                hit &= root
                np.copyto(x, x_k, where=hit)
            x = np.where((x > 0) & np.isfinite(x), x, np.nan)
            liquidation_price[rows] = 1.0 / x if perp.inverse else x
            x_bk = np.where(valid & np.isfinite(bk_balance), -b0_bk / b1, np.nan)
            x_bk = np.where((x_bk > 0) & np.isfinite(x_bk), x_bk, np.nan)
            bankruptcy_price[rows] = 1.0 / x_bk if perp.inverse else x_bk
            pnl_pct = u_i / entry_value
            effective_leverage = n_i / margin_balance
            adl_score[rows] = np.where(
                (entry_value > 0) & (n_i > 0) & (margin_balance > 0),
                np.where(pnl_pct > 0, pnl_pct * effective_leverage, pnl_pct / effective_leverage),
                np.nan,
            )

    return {
        "accounts": {
            "account_id": account_id,
            "equity": equity,
            "collateral_value": collateral,
            "debit": debit,
            "upnl": account_upnl,
            "initial_requirement": initial,
            "maintenance_requirement": maintenance,
            "liquidation_requirement": liquidation,
            "excess": np.fmin(equity - initial, credit_limit - debit),
            "margin_ratio": margin_ratio,
            "ltv": ltv,
            "status": status,
            "call_amount": call_amount,
        },
        "positions": {
            "account_id": _column(positions, "account_id"),
            "instrument": instrument,
            "notional": notional,
            "upnl": upnl,
            "initial_margin": initial_margin,
            "maintenance_margin": maintenance_margin,
            "tier": tier,
            "liquidation_price": liquidation_price,
            "bankruptcy_price": bankruptcy_price,
            "adl_score": adl_score,
        },
    }


# -- polars ----------------------------------------------------------------------------------


def _asset_frame(p: Params) -> pl.LazyFrame:
    """Asset parameters, one column per size band (padding bands start at +inf)."""
    n_bands = max(len(f) for f, _ in p.bands)
    assets: dict[str, list[object]] = {
        "asset": list(p.asset_symbols),
        "price": list(p.asset_price),
        "keep_i": list(p.keep[0]),
        "keep_m": list(p.keep[1]),
        "keep_l": list(p.keep[2]),
        "eligible": list(p.eligible),
    }
    for b in range(n_bands):
        assets[f"lo_{b}"] = [f[b] if b < len(f) else np.inf for f, _ in p.bands]
        assets[f"hi_{b}"] = [f[b + 1] if b + 1 < len(f) else np.inf for f, _ in p.bands]
        assets[f"f_{b}"] = [g[b] if b < len(g) else 0.0 for _, g in p.bands]
    return pl.DataFrame(assets).with_columns(pl.col("asset").cast(pl.Categorical)).lazy()


class _Lookup:
    """Per-row instrument and tier parameters: gathers from short literal series by the
    instrument's config id (``code``) and ``code·K + tier`` (padding tiers start at +inf)."""

    def __init__(self, p: Params) -> None:
        self.n_tiers = k = p.n_tiers
        self.p = p
        pad = [float("inf")] * (k + 1)

        def flat(values: list[list[float]]) -> list[float]:
            return [v for row in values for v in row]

        self.floor = flat([[*q.floors, *pad][: k + 1] for q in p.perps])  # K + 1 per perp
        self.mmr = flat([[*q.mmr, *[q.mmr[-1]] * k][:k] for q in p.perps])
        self.cum = flat([[*q.cum, *[q.cum[-1]] * k][:k] for q in p.perps])
        self.lev = flat([[*q.max_leverage, *[q.max_leverage[-1]] * k][:k] for q in p.perps])

    @staticmethod
    def _gather(values: list[float], index: pl.Expr) -> pl.Expr:
        return pl.lit(pl.Series(values, dtype=pl.Float64)).gather(index)

    def instrument(self, name: str) -> pl.Expr:
        return self._gather([float(getattr(q, name)) for q in self.p.perps], pl.col("code"))

    def tier(self, table: str, tier: pl.Expr | int) -> pl.Expr:
        width = self.n_tiers + 1 if table == "floor" else self.n_tiers
        return self._gather(getattr(self, table), pl.col("code").cast(pl.UInt32) * width + tier)


def polars_revalue(
    config: RiskConfig,
    accounts: pa.Table,
    holdings: pa.Table,
    positions: pa.Table,
    prices: Mapping[str, float],
    params: Params | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    p = params_of(config, prices) if params is None else params
    asset_params = _asset_frame(p)
    lookup = _Lookup(p)
    n_tiers = lookup.n_tiers
    symbols = [q.symbol for q in p.perps]
    col = pl.col
    inf = float("inf")

    account_columns = [c for c in ("account_id", "credit_limit") if c in accounts.column_names]
    acc = pl.from_arrow(accounts.select(account_columns)).lazy()
    if "credit_limit" not in account_columns:
        acc = acc.with_columns(credit_limit=pl.lit(inf))
    hold = pl.from_arrow(holdings.select(["account_id", "asset", "amount"])).lazy()
    wanted = ["account_id", "instrument", "qty", "entry_price", "isolated_margin", "leverage"]
    pos = pl.from_arrow(positions.select([c for c in wanted if c in positions.column_names]))
    if "isolated_margin" in pos.columns:
        pos = pos.with_columns(col("isolated_margin").fill_null(float("nan")))
    else:
        pos = pos.with_columns(isolated_margin=pl.lit(float("nan")))

    # -- holdings per account ----------------------------------------------------------------
    n_bands = max(len(f) for f, _ in p.bands)
    v = col("v")
    credited = functools.reduce(
        operator.add,
        [
            pl.when(v > col(f"lo_{b}"))
            .then((pl.min_horizontal(v, col(f"hi_{b}")) - col(f"lo_{b}")) * col(f"f_{b}"))
            .otherwise(0.0)
            for b in range(n_bands)
        ],
    )
    positive = v > 0
    holdings_by_account = (
        hold.join(asset_params, on="asset", how="left")
        .with_columns(v=col("amount") * col("price"))
        .with_columns(credited=credited)
        .group_by("account_id")
        .agg(
            holdings_value=v.sum(),
            debit=pl.when(v < 0).then(-v).otherwise(0.0).sum(),
            collateral_value=pl.when(positive & col("eligible")).then(v).otherwise(0.0).sum(),
            **{
                f"h_{level}": pl.when(positive)
                .then(v - col(f"keep_{level}") * col("credited"))
                .otherwise(0.0)
                .sum()
                for level in ("i", "m", "l")
            },
        )
    )

    # -- positions: notional, uPnL, tier, IM, MM ---------------------------------------------
    inverse = col("inverse")
    mark = col("mark")
    size = col("qty").abs() * col("cs")
    tier = col("tier")
    max_leverage = lookup.tier("lev", tier)
    if "leverage" in pos.columns:
        max_leverage = (
            pl.when(col("leverage") < max_leverage).then(col("leverage")).otherwise(max_leverage)
        )
    margins = (
        pos.lazy()
        .with_columns(code=col("instrument").cast(pl.Enum(symbols)).to_physical())
        .with_columns(
            inverse=lookup.instrument("inverse") > 0,
            cs=lookup.instrument("contract_size"),
            mark=lookup.instrument("mark"),
            sp=lookup.instrument("settle_price"),
        )
        .with_columns(
            notional=pl.when(inverse).then(size / mark).otherwise(size * mark),
            upnl=pl.when(inverse)
            .then(col("qty") * col("cs") * (1.0 / col("entry_price") - 1.0 / mark))
            .otherwise(col("qty") * col("cs") * (mark - col("entry_price"))),
            cross=col("isolated_margin").is_nan(),
        )
        .with_columns(
            tier=pl.sum_horizontal(
                [col("notional") >= lookup.tier("floor", k) for k in range(1, n_tiers)]
            ).cast(pl.UInt8)
        )
        .with_columns(
            initial_margin=col("notional") / max_leverage,
            maintenance_margin=col("notional") * lookup.tier("mmr", tier)
            - lookup.tier("cum", tier),
        )
        .collect()
    )

    # -- accounts ----------------------------------------------------------------------------
    def cross_sum(name: str) -> pl.Expr:
        return pl.when(col("cross")).then(col(name) * col("sp")).otherwise(0.0).sum()

    positions_by_account = (
        margins.lazy()
        .group_by("account_id")
        .agg(
            upnl=cross_sum("upnl"),
            a_im=cross_sum("initial_margin"),
            a_mm=cross_sum("maintenance_margin"),
        )
    )
    equity, initial, maintenance = col("equity"), col("initial_requirement"), col("mm_req")
    liquidation, debit = col("liquidation_requirement"), col("debit")
    target = initial if p.call_on_initial else maintenance
    account_figures = (
        acc.join(holdings_by_account, on="account_id", how="left", maintain_order="left")
        .join(positions_by_account, on="account_id", how="left", maintain_order="left")
        .with_columns(pl.exclude("account_id", "credit_limit").fill_null(0.0))
        .with_columns(
            equity=col("holdings_value") + col("upnl"),
            initial_requirement=col("h_i") + col("a_im"),
            mm_req=col("h_m") + col("a_mm"),
            liquidation_requirement=col("h_l") + col("a_mm"),
            wallet=col("holdings_value") - col("h_l"),
        )
        .with_columns(
            status=pl.when(equity < liquidation)
            .then(LIQUIDATION)
            .when(equity < maintenance)
            .then(MARGIN_CALL)
            .when((equity < initial) | (debit > col("credit_limit")))
            .then(RESTRICTED)
            .otherwise(NORMAL)
            .cast(pl.UInt8),
        )
        .with_columns(
            excess=pl.min_horizontal(equity - initial, col("credit_limit") - debit),
            margin_ratio=pl.when(maintenance == 0)
            .then(0.0)
            .when(equity <= 0)
            .then(inf)
            .otherwise(maintenance / equity),
            ltv=pl.when(debit == 0)
            .then(0.0)
            .when(col("collateral_value") == 0)
            .then(inf)
            .otherwise(debit / col("collateral_value")),
            call_amount=pl.when(col("status") >= MARGIN_CALL)
            .then(pl.max_horizontal(target - equity, 0.0))
            .otherwise(0.0),
        )
        .rename({"mm_req": "maintenance_requirement"})
        .collect()
    )

    # -- positions again: liquidation and bankruptcy prices, ADL score ------------------------
    sp, cross, iso = col("sp"), col("cross"), col("isolated_margin")
    a, ep, sa, b1 = col("a"), col("entry_price"), col("sa"), col("b1")
    other_upnl = col("a_upnl") - col("upnl") * sp
    other_mm = col("a_mm") - col("maintenance_margin") * sp
    valid = (a > 0) & a.is_finite() & (ep > 0)
    root = (
        valid
        & col("liq_balance").is_finite()
        & pl.when(b1 > 0).then(col("b0") < 0).otherwise(col("b0") > 0)
    )
    candidates = []
    for k in range(n_tiers):
        x_k = (col("b0") + lookup.tier("cum", k)) / (a * lookup.tier("mmr", k) - b1)
        at_l = a * x_k
        in_tier = root & (at_l >= lookup.tier("floor", k)) & (at_l < lookup.tier("floor", k + 1))
        candidates.append(pl.when(in_tier).then(x_k))
    x, x_bk = col("x"), col("x_bk")
    pnl_pct = col("upnl") / col("entry_value")
    effective_leverage = col("notional") / col("margin_balance")
    positions_out = (
        margins.lazy()
        .join(
            account_figures.lazy().select(
                "account_id",
                "wallet",
                "holdings_value",
                "equity",
                a_upnl=col("upnl"),
                a_mm=col("a_mm"),
            ),
            on="account_id",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            liq_balance=pl.when(cross)
            .then((col("wallet") - other_mm + other_upnl) / sp)
            .otherwise(iso),
            bk_balance=pl.when(cross)
            .then((col("holdings_value") + other_upnl) / sp)
            .otherwise(iso),
            margin_balance=pl.when(cross).then(col("equity") / sp).otherwise(iso + col("upnl")),
            a=size,
            sa=col("qty").sign() * size,
        )
        .with_columns(
            b1=pl.when(inverse).then(-sa).otherwise(sa),
            b0=pl.when(inverse)
            .then(col("liq_balance") + sa / ep)
            .otherwise(col("liq_balance") - sa * ep),
            b0_bk=pl.when(inverse)
            .then(col("bk_balance") + sa / ep)
            .otherwise(col("bk_balance") - sa * ep),
            entry_value=pl.when(inverse).then(a / ep).otherwise(a * ep),
        )
        .with_columns(
            x=pl.coalesce(candidates),
            x_bk=pl.when(valid & col("bk_balance").is_finite()).then(-col("b0_bk") / b1),
        )
        .with_columns(
            x=pl.when((x > 0) & x.is_finite()).then(x),
            x_bk=pl.when((x_bk > 0) & x_bk.is_finite()).then(x_bk),
        )
        .select(
            "account_id",
            "instrument",
            "notional",
            "upnl",
            "initial_margin",
            "maintenance_margin",
            (tier + 1).alias("tier"),
            liquidation_price=pl.when(inverse).then(1.0 / x).otherwise(x).fill_null(np.nan),
            bankruptcy_price=pl.when(inverse).then(1.0 / x_bk).otherwise(x_bk).fill_null(np.nan),
            adl_score=pl.when(
                (col("entry_value") > 0) & (col("notional") > 0) & (col("margin_balance") > 0)
            )
            .then(
                pl.when(pnl_pct > 0)
                .then(pnl_pct * effective_leverage)
                .otherwise(pnl_pct / effective_leverage)
            )
            .otherwise(np.nan),
        )
        .collect()
    )
    accounts_out = account_figures.select(
        "account_id",
        "equity",
        "collateral_value",
        "debit",
        "upnl",
        "initial_requirement",
        "maintenance_requirement",
        "liquidation_requirement",
        "excess",
        "margin_ratio",
        "ltv",
        "status",
        "call_amount",
    )
    return accounts_out, positions_out
