"""Scalar calculators (SPEC §10): one position or value at a time, running the same Rust
functions as the batch kernels.

Tiers are given as mappings ``{"floor", "mmr", "max_leverage"}`` (``max_leverage`` may be
omitted: no leverage limit), as ``MarginTier`` objects, or as ``(floor, mmr,
max_leverage)`` tuples; size tiers as ``{"floor", "factor"}``, ``SizeTier`` or tuples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from vamargin import _core
from vamargin.config import ContractKind, MarginTier, SizeTier
from vamargin.errors import ConfigError

TierLike = Mapping[str, float] | MarginTier | tuple[float, float] | tuple[float, float, float]
SizeTierLike = Mapping[str, float] | SizeTier | tuple[float, float]


def _tier(index: int, tier: Any) -> tuple[float, float, float]:
    try:
        if isinstance(tier, MarginTier):
            return (tier.floor, tier.mmr, tier.max_leverage)
        if isinstance(tier, Mapping):
            return (
                float(tier["floor"]),
                float(tier["mmr"]),
                float(tier.get("max_leverage", math.inf)),
            )
        values = tuple(float(v) for v in tier)
        if len(values) == 2:
            return (values[0], values[1], math.inf)
        floor, mmr, max_leverage = values
        return (floor, mmr, max_leverage)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"tiers[{index}]: expected floor, mmr[, max_leverage]: {error}") from None


def _tiers(tiers: Iterable[TierLike]) -> list[tuple[float, float, float]]:
    return [_tier(i, t) for i, t in enumerate(tiers)]


def _size_tiers(bands: Iterable[SizeTierLike]) -> list[tuple[float, float]]:
    out = []
    for i, band in enumerate(bands):
        try:
            if isinstance(band, SizeTier):
                out.append((band.floor, band.factor))
            elif isinstance(band, Mapping):
                out.append((float(band["floor"]), float(band["factor"])))
            else:
                floor, factor = band
                out.append((float(floor), float(factor)))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"size_tiers[{i}]: expected floor, factor: {error}") from None
    return out


def maintenance_amounts(tiers: Iterable[TierLike]) -> list[float]:
    """Maintenance amount (``cum``) of each bracket: ``cum_k = cum_{k−1} + F_k·(mmr_k −
    mmr_{k−1})``, which makes ``MM(N) = N·mmr_k − cum_k`` continuous."""
    return _core.maintenance_amounts(_tiers(tiers))


def maintenance_margin(notional: float, tiers: Iterable[TierLike]) -> float:
    """Maintenance margin of a position of ``notional`` (settle currency)."""
    return _core.maintenance_margin(notional, _tiers(tiers))


def tier_of(notional: float, tiers: Iterable[TierLike]) -> int:
    """1-based bracket containing ``notional`` (``floor ≤ notional < next floor``)."""
    return _core.tier_of(notional, _tiers(tiers))


def unrealized_pnl(
    qty: float,
    entry_price: float,
    mark_price: float,
    *,
    kind: ContractKind = "linear",
    contract_size: float = 1.0,
) -> float:
    """``q·cs·(P − EP)`` (linear, quote currency) or ``q·cs·(1/EP − 1/P)`` (inverse, coin)."""
    return _core.unrealized_pnl(kind, contract_size, qty, entry_price, mark_price)


def notional(
    qty: float, price: float, *, kind: ContractKind = "linear", contract_size: float = 1.0
) -> float:
    """``|q|·cs·P`` (linear) or ``|q|·cs/P`` (inverse), in the settle currency."""
    return _core.notional(kind, contract_size, qty, price)


def liquidation_price(
    qty: float,
    entry_price: float,
    balance: float,
    *,
    tiers: Iterable[TierLike] | None = None,
    mmr: float | None = None,
    maintenance_amount: float = 0.0,
    other_maintenance: float = 0.0,
    other_upnl: float = 0.0,
    kind: ContractKind = "linear",
    contract_size: float = 1.0,
) -> float | None:
    """Mark price at which the position's margin balance equals its maintenance margin,
    with the maintenance margin evaluated at that price; ``None`` if no positive price.

    ``balance`` is the isolated margin, or for cross the wallet balance; cross positions
    also pass the other positions' maintenance (``other_maintenance``, Binance's TMM) and
    unrealised PnL (``other_upnl``). Give either ``tiers`` or a fixed ``mmr`` (with its
    ``maintenance_amount``).
    """
    if (tiers is None) == (mmr is None):
        raise ConfigError("liquidation_price: give exactly one of tiers= or mmr=")
    effective_balance = balance - other_maintenance + other_upnl
    return _core.liquidation_price(
        kind,
        contract_size,
        qty,
        entry_price,
        effective_balance,
        None if tiers is None else _tiers(tiers),
        0.0 if mmr is None else mmr,
        maintenance_amount,
    )


def bankruptcy_price(
    qty: float,
    entry_price: float,
    balance: float,
    *,
    kind: ContractKind = "linear",
    contract_size: float = 1.0,
) -> float | None:
    """Mark price at which the margin balance reaches zero; ``None`` if no positive price."""
    return _core.bankruptcy_price(kind, contract_size, qty, entry_price, balance)


def tiered_value(value: float, size_tiers: Iterable[SizeTierLike]) -> float:
    """Credited value of a holding worth ``value`` under marginal size bands: each band
    ``[floor_k, floor_{k+1})`` of the value is credited at ``factor_k``."""
    return _core.tiered_value(value, _size_tiers(size_tiers))


def adl_score(upnl: float, entry_value: float, notional: float, margin_balance: float) -> float:
    """``pnl_pct·eff_lev`` if profitable else ``pnl_pct/eff_lev`` (NaN if the margin
    balance is not positive)."""
    return _core.adl_score(upnl, entry_value, notional, margin_balance)


def premium(impact_bid: float, impact_ask: float, index_price: float) -> float:
    """Premium of one sample: ``[max(0, bid − index) − max(0, index − ask)] / index``."""
    return _core.premium(impact_bid, impact_ask, index_price)


def funding_rate(
    premiums: Iterable[float],
    *,
    interest_rate: float = 0.0001,
    clamp: float = 0.0005,
    cap: float | None = None,
) -> float:
    """Funding rate of one interval: ``p̄ + clamp(r − p̄, −clamp, +clamp)``, then within
    ``±cap``; ``p̄`` is the mean of the interval's premium samples, ``r`` the interest rate
    per interval. Positive: longs pay shorts."""
    return _core.funding_rate(
        [float(p) for p in premiums], interest_rate, clamp, math.inf if cap is None else cap
    )


def advance_funding_index(
    index: float, mark_price: float, rate: float, *, kind: ContractKind = "linear"
) -> float:
    """The cumulative funding index after one interval: ``I + P·F`` (linear, quote per
    base unit) or ``I + F/P`` (inverse, coin per quote unit)."""
    return index + (mark_price * rate if kind == "linear" else rate / mark_price)


def close_size(shortage: float, price: float, margin_rate: float, *, fee: float = 0.0) -> float:
    """Base units to close to cure ``shortage``: closing notional ``x`` frees
    ``margin_rate·x`` of requirement and costs ``fee·x``, so ``x = shortage /
    (margin_rate − fee)``, in base units ``x / price``; ``inf`` when ``margin_rate ≤ fee``
    (closing cannot cure: close everything)."""
    return _core.close_size(shortage, price, margin_rate, fee)


def interest(
    principal: float,
    annual_rate: float,
    days: int,
    *,
    day_count: str = "ACT/365",
    minor_unit: float = 0.01,
) -> Decimal:
    """Interest owed on ``principal`` for ``days`` actual days, rounded up to the minor
    unit (never under-charged), exact on decimal inputs: ``interest(10_000, 0.08906, 7)``
    is ``Decimal('17.08')``."""
    decimals = round(-math.log10(minor_unit))
    if abs(10.0**-decimals - minor_unit) > minor_unit * 1e-9 or not 0 <= decimals <= 18:
        raise ConfigError(f"minor_unit: {minor_unit} is not a power of ten")
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ConfigError(f"days: {days!r} is not a whole number of days ≥ 0")
    minor = _core.interest(principal, annual_rate, days, day_count, decimals)
    return Decimal(minor).scaleb(-decimals)
