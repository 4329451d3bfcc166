"""A slow, independent pure-Python reference of ``RiskEngine.revalue`` (SPEC §5–§6).

This is a test oracle: plain loops over rows and accounts, Python floats and dicts. It
deliberately does not import ``vamargin._core`` or ``vamargin.calc``; it only reads the
``vamargin.config`` dataclasses of a ``RiskConfig``. Liquidation prices are found by the
closed form of each margin bracket in *price* space, accepting the bracket that contains
the notional at that price (not a port of the engine's x-space search).

Inputs are plain Python: ``accounts``, ``holdings`` and ``positions`` are dicts of
equally long lists (the same columns a ``vamargin.Book`` takes; optional columns may be
absent), ``prices`` is ``{symbol: price}``.

Sums over an account's rows run in the rows' order in the input tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vamargin.config import AssetSpec, PerpetualSpec, RiskConfig

NAN = float("nan")
INF = float("inf")

STATUS_NAMES = ("normal", "restricted", "margin_call", "liquidation")

ACCOUNT_COLUMNS = (
    "account_id", "equity", "collateral_value", "debit", "upnl", "initial_requirement",
    "maintenance_requirement", "liquidation_requirement", "excess", "margin_ratio", "ltv",
    "status", "call_amount",
)  # fmt: skip
POSITION_COLUMNS = (
    "account_id", "instrument", "notional", "upnl", "initial_margin", "maintenance_margin",
    "tier", "liquidation_price", "bankruptcy_price", "adl_score",
)  # fmt: skip

Tier = tuple[float, float, float]  # (floor, mmr, max_leverage)


# -- tiers ------------------------------------------------------------------------------------


def tiers_of(perp: PerpetualSpec) -> list[Tier]:
    return [(t.floor, t.mmr, t.max_leverage) for t in perp.tiers]


def maintenance_amounts(tiers: Sequence[Tier]) -> list[float]:
    """``cum_1 = 0``, ``cum_k = cum_{k−1} + F_k·(mmr_k − mmr_{k−1})``."""
    cums: list[float] = []
    for k, (floor, mmr, _) in enumerate(tiers):
        if k == 0:
            cums.append(0.0)
        else:
            cums.append(cums[-1] + floor * (mmr - tiers[k - 1][1]))
    return cums


def bracket_bounds(tiers: Sequence[Tier], k: int) -> tuple[float, float]:
    upper = tiers[k + 1][0] if k + 1 < len(tiers) else INF
    return tiers[k][0], upper


def tier_index(notional: float, tiers: Sequence[Tier]) -> int:
    """0-based bracket with ``floor_k ≤ notional < floor_{k+1}``."""
    for k in range(len(tiers)):
        lower, upper = bracket_bounds(tiers, k)
        if lower <= notional < upper:
            return k
    return 0  # notional below the first floor (0) cannot happen for |q|·cs·P ≥ 0


def maintenance_margin(notional: float, tiers: Sequence[Tier]) -> float:
    k = tier_index(notional, tiers)
    return notional * tiers[k][1] - maintenance_amounts(tiers)[k]


def credited_value(value: float, asset: AssetSpec) -> float:
    """``T(v)``: each band ``[floor_k, floor_{k+1})`` of the value credited at factor_k."""
    bands = asset.size_tiers
    if not bands:
        return value
    credited = 0.0
    for k, band in enumerate(bands):
        upper = bands[k + 1].floor if k + 1 < len(bands) else INF
        if value > band.floor:
            credited += (min(value, upper) - band.floor) * band.factor
    return credited


def effective_haircuts(asset: AssetSpec) -> tuple[float, float, float]:
    return asset.haircuts if asset.eligible else (1.0, 1.0, 1.0)


def requirement(value: float, haircut: float, asset: AssetSpec) -> float:
    """``req(v, h) = v − (1 − h)·T(v)`` for a holding worth ``v > 0``."""
    return value - (1.0 - haircut) * credited_value(value, asset)


# -- per-position perpetual math ---------------------------------------------------------------


def notional(kind: str, contract_size: float, qty: float, price: float) -> float:
    if kind == "linear":
        return abs(qty) * contract_size * price
    return abs(qty) * contract_size / price


def upnl(kind: str, contract_size: float, qty: float, entry: float, price: float) -> float:
    if kind == "linear":
        return qty * contract_size * (price - entry)
    return qty * contract_size * (1.0 / entry - 1.0 / price)


def margin_gap(
    kind: str,
    contract_size: float,
    qty: float,
    entry: float,
    balance: float,
    tiers: Sequence[Tier],
    price: float,
    cums: Sequence[float] | None = None,
) -> tuple[float, float]:
    """``balance + uPnL(P) − MM(N(P))`` at ``price`` and the gross size of its terms (what
    its rounding error is relative to)."""
    cums = maintenance_amounts(tiers) if cums is None else cums
    size = notional(kind, contract_size, qty, price)
    k = tier_index(size, tiers)
    mm = size * tiers[k][1] - cums[k]
    pnl = upnl(kind, contract_size, qty, entry, price)
    gross = abs(balance) + abs(cums[k]) + size + notional(kind, contract_size, qty, entry)
    return balance + pnl - mm, gross


def liquidation_price(
    kind: str,
    contract_size: float,
    qty: float,
    entry: float,
    balance: float,
    tiers: Sequence[Tier],
    cums: Sequence[float] | None = None,
) -> float | None:
    """Positive ``L`` with ``balance + uPnL(L) = MM(N(L))``, or ``None``.

    Per bracket ``k`` the equation is linear in ``L`` (linear) or in ``1/L`` (inverse);
    its root is accepted when the notional at it lies in bracket ``k``. The margin balance
    minus MM is strictly monotone in the price (``mmr < 1``), so at most one bracket can
    accept; a root that rounding puts just outside its bracket (at a floor, where
    neighbouring brackets agree) is taken from the nearest bracket.

    ``cums`` overrides the derived maintenance amounts (a fixed rate with its own amount).
    """
    a = abs(qty) * contract_size
    if not (a > 0 and math.isfinite(a) and entry > 0 and math.isfinite(balance)):
        return None
    s = 1.0 if qty > 0 else -1.0
    cums = maintenance_amounts(tiers) if cums is None else cums
    near: list[tuple[float, float]] = []
    for k, (_, mmr, _) in enumerate(tiers):
        cum = cums[k]
        if kind == "linear":
            # balance + s·a·(L − EP) = a·L·mmr − cum
            price = (s * a * entry - balance - cum) / (a * (s - mmr))
        else:
            # balance + s·a·(1/EP − 1/L) = (a/L)·mmr − cum, times L
            denominator = balance + cum + s * a / entry
            if denominator == 0:
                continue
            price = a * (mmr + s) / denominator
        if not (price > 0 and math.isfinite(price)):
            continue
        at = notional(kind, contract_size, qty, price)
        lower, upper = bracket_bounds(tiers, k)
        if lower <= at < upper:
            return price
        outside = max(lower - at, at - upper, 0.0) / max(at, 1e-300)
        near.append((outside, price))
    if near:
        outside, price = min(near)
        if outside <= 1e-9:
            return price
    return None


def bankruptcy_price(
    kind: str, contract_size: float, qty: float, entry: float, balance: float
) -> float | None:
    """Positive ``B`` with ``balance + uPnL(B) = 0``, or ``None``."""
    a = abs(qty) * contract_size
    if not (a > 0 and math.isfinite(a) and entry > 0 and math.isfinite(balance)):
        return None
    s = 1.0 if qty > 0 else -1.0
    if kind == "linear":
        price = entry - balance / (s * a)
    else:
        inverse_price = 1.0 / entry + balance / (s * a)
        if inverse_price <= 0:
            return None
        price = 1.0 / inverse_price
    return price if price > 0 and math.isfinite(price) else None


def adl_score(
    kind: str, contract_size: float, qty: float, entry: float, pnl: float, size: float,
    margin_balance: float,
) -> float:  # fmt: skip
    if qty == 0 or not margin_balance > 0:
        return NAN
    entry_value = notional(kind, contract_size, qty, entry)
    pnl_pct = pnl / entry_value
    effective_leverage = size / margin_balance
    return pnl_pct * effective_leverage if pnl_pct > 0 else pnl_pct / effective_leverage


# -- the book --------------------------------------------------------------------------------


@dataclass
class AccountTotals:
    """What the account pass accumulates (reporting currency)."""

    holdings_value: float = 0.0
    debit: float = 0.0
    collateral: float = 0.0
    holdings_req: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    upnl: float = 0.0
    initial_margin: float = 0.0
    maintenance_margin: float = 0.0


@dataclass
class Result:
    accounts: dict[str, list[Any]]
    positions: dict[str, list[Any]]
    totals: dict[int, AccountTotals]


def _column(table: Mapping[str, Sequence[Any]], name: str, default: Any) -> list[Any]:
    n = len(next(iter(table.values()))) if table else 0
    if name in table:
        return [default if v is None else v for v in table[name]]
    return [default] * n


def revalue(
    config: RiskConfig,
    accounts: Mapping[str, Sequence[Any]],
    holdings: Mapping[str, Sequence[Any]] | None,
    positions: Mapping[str, Sequence[Any]] | None,
    prices: Mapping[str, float],
) -> Result:
    """The reference revaluation. Returns plain lists in the input row orders."""
    holdings = holdings or {"account_id": [], "asset": [], "amount": []}
    positions = positions or {"account_id": [], "instrument": [], "qty": [], "entry_price": []}
    assets = {a.symbol: a for a in config.assets}
    perps = {p.symbol: p for p in config.perpetuals}

    account_ids = [int(a) for a in accounts["account_id"]]
    credit_limits = [float(c) for c in _column(accounts, "credit_limit", INF)]
    totals = {a: AccountTotals() for a in account_ids}

    # Holdings, in row order.
    for account, symbol, amount in zip(
        holdings["account_id"], holdings["asset"], holdings["amount"], strict=True
    ):
        asset = assets[symbol]
        t = totals[int(account)]
        v = float(amount) * prices[symbol]
        t.holdings_value += v
        if v < 0:
            t.debit -= v
        elif v > 0:
            for level, h in enumerate(effective_haircuts(asset)):
                t.holdings_req[level] += requirement(v, h, asset)
            if asset.eligible:
                t.collateral += v

    # Per-position figures (settle currency), then cross sums in row order.
    n_positions = len(positions["account_id"])
    isolated = [float(m) for m in _column(positions, "isolated_margin", NAN)]
    leverage = [float(m) for m in _column(positions, "leverage", NAN)]
    rows: list[dict[str, Any]] = []
    for i in range(n_positions):
        perp = perps[positions["instrument"][i]]
        tiers = tiers_of(perp)
        qty = float(positions["qty"][i])
        entry = float(positions["entry_price"][i])
        row: dict[str, Any] = {
            "perp": perp, "tiers": tiers, "qty": qty, "entry": entry,
            "cross": math.isnan(isolated[i]),
        }  # fmt: skip
        if qty == 0:
            # An empty row is ignored: its instrument need not be priced, and its entry
            # price may be anything (even 0).
            row.update(notional=0.0, upnl=0.0, initial_margin=0.0, maintenance_margin=0.0)
            row.update(tier=1, px=NAN)
            rows.append(row)
            continue
        mark = prices[perp.symbol]
        cs = perp.contract_size
        size = notional(perp.kind, cs, qty, mark)
        k = tier_index(size, tiers)
        _, mmr, max_leverage = tiers[k]
        lev = max_leverage if math.isnan(leverage[i]) else min(leverage[i], max_leverage)
        row.update(
            notional=size,
            upnl=upnl(perp.kind, cs, qty, entry, mark),
            initial_margin=size / lev,
            maintenance_margin=size * mmr - maintenance_amounts(tiers)[k],
            tier=k + 1,
            px=prices[perp.settle],
        )
        rows.append(row)
    for i, row in enumerate(rows):
        if row["cross"] and row["qty"] != 0:
            t = totals[int(positions["account_id"][i])]
            t.upnl += row["upnl"] * row["px"]
            t.initial_margin += row["initial_margin"] * row["px"]
            t.maintenance_margin += row["maintenance_margin"] * row["px"]

    # Account figures.
    out_accounts: dict[str, list[Any]] = {name: [] for name in ACCOUNT_COLUMNS}
    figures: dict[int, dict[str, float]] = {}
    for account, credit_limit in zip(account_ids, credit_limits, strict=True):
        t = totals[account]
        equity = t.holdings_value + t.upnl
        initial = t.holdings_req[0] + t.initial_margin
        maintenance = t.holdings_req[1] + t.maintenance_margin
        liquidation = t.holdings_req[2] + t.maintenance_margin
        if equity < liquidation:
            status = "liquidation"
        elif equity < maintenance:
            status = "margin_call"
        elif equity < initial or t.debit > credit_limit:
            status = "restricted"
        else:
            status = "normal"
        target = initial if config.policy.call_target == "initial" else maintenance
        call = max(0.0, target - equity) if status in ("margin_call", "liquidation") else 0.0
        if maintenance == 0:
            margin_ratio = 0.0
        elif equity <= 0:
            margin_ratio = INF
        else:
            margin_ratio = maintenance / equity
        if t.debit == 0:
            ltv = 0.0
        elif t.collateral == 0:
            ltv = INF
        else:
            ltv = t.debit / t.collateral
        values = {
            "account_id": account,
            "equity": equity,
            "collateral_value": t.collateral,
            "debit": t.debit,
            "upnl": t.upnl,
            "initial_requirement": initial,
            "maintenance_requirement": maintenance,
            "liquidation_requirement": liquidation,
            "excess": min(equity - initial, credit_limit - t.debit),
            "margin_ratio": margin_ratio,
            "ltv": ltv,
            "status": status,
            "call_amount": call,
        }
        figures[account] = values
        for name in ACCOUNT_COLUMNS:
            out_accounts[name].append(values[name])

    # Position prices and ADL scores.
    out_positions: dict[str, list[Any]] = {name: [] for name in POSITION_COLUMNS}
    for i, row in enumerate(rows):
        account = int(positions["account_id"][i])
        perp: PerpetualSpec = row["perp"]
        qty, entry = row["qty"], row["entry"]
        if qty == 0:
            liq = bankrupt = score = NAN
        else:
            if row["cross"]:
                t = totals[account]
                px = row["px"]
                other_upnl = t.upnl - row["upnl"] * px
                other_mm = t.maintenance_margin - row["maintenance_margin"] * px
                wallet = t.holdings_value - t.holdings_req[2]
                liq_balance = (wallet - other_mm + other_upnl) / px
                bankrupt_balance = (t.holdings_value + other_upnl) / px
                margin_balance = figures[account]["equity"] / px
            else:
                liq_balance = bankrupt_balance = isolated[i]
                margin_balance = isolated[i] + row["upnl"]
            cs = perp.contract_size
            found = liquidation_price(perp.kind, cs, qty, entry, liq_balance, row["tiers"])
            liq = NAN if found is None else found
            found = bankruptcy_price(perp.kind, cs, qty, entry, bankrupt_balance)
            bankrupt = NAN if found is None else found
            score = adl_score(
                perp.kind, cs, qty, entry, row["upnl"], row["notional"], margin_balance
            )
        values = {
            "account_id": account,
            "instrument": perp.symbol,
            "notional": row["notional"],
            "upnl": row["upnl"],
            "initial_margin": row["initial_margin"],
            "maintenance_margin": row["maintenance_margin"],
            "tier": row["tier"],
            "liquidation_price": liq,
            "bankruptcy_price": bankrupt,
            "adl_score": score,
        }
        for name in POSITION_COLUMNS:
            out_positions[name].append(values[name])
    return Result(accounts=out_accounts, positions=out_positions, totals=totals)
