"""Risk configuration: assets, perpetuals and policy (SPEC §4).

A ``RiskConfig`` is built from TOML (``RiskConfig.from_toml``), from Python objects, or
from the shipped Hong Kong profile (``RiskConfig.hk_default()``). It is validated when
built; every rejection is a ``ConfigError`` whose message starts with the key at fault,
e.g. ``asset[BTC].initial_haircut``. Unknown keys are rejected too: a misspelt haircut
must not silently fall back to a default.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vamargin import _core
from vamargin.errors import ConfigError

AssetClass = Literal["va", "stablecoin", "cash", "security"]
ContractKind = Literal["linear", "inverse"]
DayCount = Literal["ACT/365", "ACT/360"]
CallTarget = Literal["initial", "maintenance"]

ASSET_CLASSES: tuple[str, ...] = ("va", "stablecoin", "cash", "security")
CONTRACT_KINDS: tuple[str, ...] = ("linear", "inverse")
DAY_COUNTS: tuple[str, ...] = ("ACT/365", "ACT/360")
CALL_TARGETS: tuple[str, ...] = ("initial", "maintenance")


@dataclass(frozen=True)
class MarginTier:
    """One bracket of a perpetual's margin table (floor in settle-currency notional)."""

    floor: float
    mmr: float
    max_leverage: float

    @classmethod
    def coerce(cls, key: str, value: Any) -> MarginTier:
        """A tier from a ``MarginTier``, a mapping or a ``(floor, mmr, max_leverage)``."""
        if isinstance(value, MarginTier):
            value = (value.floor, value.mmr, value.max_leverage)
        if isinstance(value, Mapping):
            _reject_unknown(key, value, {"floor", "mmr", "max_leverage"})
            fields = [_required(key, value, name) for name in ("floor", "mmr", "max_leverage")]
        elif isinstance(value, list | tuple) and len(value) == 3:
            fields = list(value)
        else:
            raise _fail(key, f"{value!r} is not a tier {{floor, mmr, max_leverage}}")
        names = ("floor", "mmr", "max_leverage")
        floor, mmr, max_leverage = (
            _number(f"{key}.{n}", v) for n, v in zip(names, fields, strict=True)
        )
        return cls(floor, mmr, max_leverage)


@dataclass(frozen=True)
class SizeTier:
    """Above ``floor`` (reporting-currency value), a holding is credited at ``factor``."""

    floor: float
    factor: float

    @classmethod
    def coerce(cls, key: str, value: Any) -> SizeTier:
        """A band from a ``SizeTier``, a mapping or a ``(floor, factor)`` pair."""
        if isinstance(value, SizeTier):
            value = (value.floor, value.factor)
        if isinstance(value, Mapping):
            _reject_unknown(key, value, {"floor", "factor"})
            fields = [_required(key, value, name) for name in ("floor", "factor")]
        elif isinstance(value, list | tuple) and len(value) == 2:
            fields = list(value)
        else:
            raise _fail(key, f"{value!r} is not a size tier {{floor, factor}}")
        return cls(_number(f"{key}.floor", fields[0]), _number(f"{key}.factor", fields[1]))


@dataclass(frozen=True)
class FundingSpec:
    """Funding schedule and the rate formula's parameters (per interval)."""

    interval_hours: float = 8.0
    interest_rate: float = 0.0001
    clamp: float = 0.0005
    cap: float = 0.03


@dataclass(frozen=True)
class AssetSpec:
    """A spot asset or cash currency.

    Haircuts default down the ladder: ``maintenance_haircut`` to the initial one and
    ``liquidation_haircut`` to the maintenance one. ``sale_fee`` is the cost of a forced
    sale, as a fraction of the value sold. ``capital_haircut`` (the broker's own Financial
    Resources Rules view) defaults to 1.0 for class ``va`` and for ineligible assets, and
    to the initial haircut otherwise.
    """

    symbol: str
    asset_class: AssetClass
    minor_unit: float
    eligible: bool = False
    initial_haircut: float = 0.0
    maintenance_haircut: float | None = None
    liquidation_haircut: float | None = None
    size_tiers: tuple[SizeTier, ...] = ()
    group: str | None = None
    borrowable: bool = False
    day_count: DayCount = "ACT/365"
    annual_rate: float = 0.0
    capital_haircut: float | None = None
    sale_fee: float = 0.0

    @property
    def haircuts(self) -> tuple[float, float, float]:
        """``(initial, maintenance, liquidation)`` with the defaults applied."""
        maintenance = (
            self.initial_haircut if self.maintenance_haircut is None else self.maintenance_haircut
        )
        liquidation = maintenance if self.liquidation_haircut is None else self.liquidation_haircut
        return (self.initial_haircut, maintenance, liquidation)

    @property
    def minor_decimals(self) -> int:
        """``k`` of a ``10^-k`` minor unit (validated on load)."""
        return round(-math.log10(self.minor_unit))

    @property
    def effective_capital_haircut(self) -> float:
        """The capital view's haircut: as configured, else 1.0 for class ``va`` (no
        capital recognition for now) and for ineligible assets (no credit anywhere), else
        the initial haircut."""
        if self.capital_haircut is not None:
            return self.capital_haircut
        if self.asset_class == "va" or not self.eligible:
            return 1.0
        return self.initial_haircut


@dataclass(frozen=True)
class PerpetualSpec:
    """A perpetual contract. ``contract_size`` is base per contract (linear) or quote face
    value per contract (inverse); tier floors are in settle-currency notional."""

    symbol: str
    kind: ContractKind
    base: str
    settle: str
    contract_size: float
    tiers: tuple[MarginTier, ...]
    quote: str | None = None
    professional_only: bool = True
    liquidation_fee: float = 0.005
    funding: FundingSpec = field(default_factory=FundingSpec)


@dataclass(frozen=True)
class Policy:
    """Firm-wide rules of the margin book."""

    va_haircut_floor: float = 0.60
    va_assets: tuple[str, ...] = ("BTC", "ETH")
    call_target: CallTarget = "initial"
    call_deadline_hours: float = 24.0
    liquidation_buffer: float = 0.02
    max_loans_to_capital: float = 5.0
    max_client_share: float = 0.10
    """Largest single client's share of all margin loans before it is a breach."""
    max_collateral_share: float | None = None
    """Largest single asset's share of all collateral (None: reported, not limited)."""


def _fail(key: str, reason: str) -> ConfigError:
    return ConfigError(f"{key}: {reason}")


def _check_fraction(key: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise _fail(key, f"{value!r} is outside [0, 1]")


def _check_positive(key: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise _fail(key, f"{value!r} must be a finite number > 0")


def _check_non_negative(key: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise _fail(key, f"{value!r} must be a finite number ≥ 0")


@dataclass(frozen=True)
class RiskConfig:
    """Assets, perpetuals and policy; validated on construction (``ConfigError``)."""

    assets: tuple[AssetSpec, ...]
    perpetuals: tuple[PerpetualSpec, ...] = ()
    policy: Policy = field(default_factory=Policy)
    reporting_currency: str = "USD"

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", _normalised_assets(self.assets))
        object.__setattr__(self, "perpetuals", _normalised_perpetuals(self.perpetuals))
        if not isinstance(self.policy, Policy):
            raise _fail("policy", f"expected a Policy, got {type(self.policy).__name__}")
        if isinstance(self.policy.va_assets, str) or not all(
            isinstance(symbol, str) for symbol in self.policy.va_assets
        ):
            raise _fail("policy.va_assets", "must be a list of asset symbols")
        object.__setattr__(self.policy, "va_assets", tuple(self.policy.va_assets))
        _check_string("reporting_currency", self.reporting_currency)
        self._validate()
        # Building the kernel parameters re-checks tiers and haircuts in Rust, once.
        _ = self.engine_params

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> RiskConfig:
        """Loads and validates a TOML file (see SPEC §4 for the format)."""
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
        return cls.from_dict(document)

    @classmethod
    def from_toml_string(cls, text: str) -> RiskConfig:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"not valid TOML: {error}") from None
        return cls.from_dict(document)

    @classmethod
    def hk_default(cls) -> RiskConfig:
        """The shipped Hong Kong profile: BTC/ETH collateral at the SFC haircut floor,
        USD/HKD cash (borrowable), USDT, and BTC/ETH linear and inverse perpetuals."""
        text = resources.files("vamargin.profiles").joinpath("hk_default.toml").read_text("utf-8")
        return cls.from_toml_string(text)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> RiskConfig:
        """Builds from a parsed TOML document (plain dicts and lists)."""
        _reject_unknown(
            "", document, {"reporting_currency", "asset", "perpetual", "policy", "override"}
        )
        if "override" in document:
            _reject_overrides(document["override"])
        assets = tuple(
            _asset_from_dict(i, entry) for i, entry in enumerate(_table_list(document, "asset"))
        )
        perpetuals = tuple(
            _perpetual_from_dict(i, entry)
            for i, entry in enumerate(_table_list(document, "perpetual"))
        )
        policy = _policy_from_dict(_table("policy", document.get("policy", {})))
        reporting_currency = document.get("reporting_currency", "USD")
        if not isinstance(reporting_currency, str):
            raise _fail("reporting_currency", "must be a string")
        return cls(
            assets=assets,
            perpetuals=perpetuals,
            policy=policy,
            reporting_currency=reporting_currency,
        )

    # -- lookups ------------------------------------------------------------------------

    @cached_property
    def asset_ids(self) -> dict[str, int]:
        return {asset.symbol: i for i, asset in enumerate(self.assets)}

    @cached_property
    def perpetual_ids(self) -> dict[str, int]:
        return {perp.symbol: i for i, perp in enumerate(self.perpetuals)}

    def asset(self, symbol: str) -> AssetSpec:
        return self.assets[self.asset_ids[symbol]]

    def perpetual(self, symbol: str) -> PerpetualSpec:
        return self.perpetuals[self.perpetual_ids[symbol]]

    @cached_property
    def engine_params(self) -> _core.EngineParams:
        """The numbers the Rust kernels read, by dense id."""
        assets = [
            (
                asset.symbol,
                *asset.haircuts,
                asset.eligible,
                [(band.floor, band.factor) for band in asset.size_tiers],
                asset.sale_fee,
            )
            for asset in self.assets
        ]
        perpetuals = [
            (
                perp.symbol,
                str(perp.kind),
                perp.contract_size,
                self.asset_ids[perp.settle],
                [(t.floor, t.mmr, t.max_leverage) for t in perp.tiers],
                perp.liquidation_fee,
            )
            for perp in self.perpetuals
        ]
        return _core.EngineParams(
            assets, perpetuals, self.policy.call_target, self.policy.liquidation_buffer
        )

    # -- validation ---------------------------------------------------------------------

    def _validate(self) -> None:
        if not self.assets:
            raise _fail("asset", "at least one asset is required")
        seen: set[str] = set()
        for asset in self.assets:
            key = f"asset[{asset.symbol}]"
            if asset.symbol in seen:
                raise _fail(key, "symbol defined twice")
            seen.add(asset.symbol)
            self._validate_asset(key, asset)
        for perp in self.perpetuals:
            key = f"perpetual[{perp.symbol}]"
            if perp.symbol in seen:
                raise _fail(key, "symbol already used by another asset or perpetual")
            seen.add(perp.symbol)
            self._validate_perpetual(key, perp)
        self._validate_policy()

    def _validate_asset(self, key: str, asset: AssetSpec) -> None:
        for name in ("eligible", "borrowable"):
            _check_bool(f"{key}.{name}", getattr(asset, name))
        if asset.group is not None:
            _check_string(f"{key}.group", asset.group)
        for name in ("minor_unit", "initial_haircut", "annual_rate", "sale_fee"):
            _number(f"{key}.{name}", getattr(asset, name))
        for name in ("maintenance_haircut", "liquidation_haircut", "capital_haircut"):
            if getattr(asset, name) is not None:
                _number(f"{key}.{name}", getattr(asset, name))
        if asset.asset_class not in ASSET_CLASSES:
            raise _fail(f"{key}.class", f"{asset.asset_class!r} is not one of {ASSET_CLASSES}")
        _check_positive(f"{key}.minor_unit", asset.minor_unit)
        decimals = -math.log10(asset.minor_unit)
        if not (0 <= round(decimals) <= 18 and abs(decimals - round(decimals)) < 1e-9):
            raise _fail(
                f"{key}.minor_unit",
                f"{asset.minor_unit} is not a power of ten between 1 and 1e-18 (money moves in "
                "whole minor units)",
            )
        names = ("initial_haircut", "maintenance_haircut", "liquidation_haircut")
        for name, value in zip(names, asset.haircuts, strict=True):
            _check_fraction(f"{key}.{name}", value)
        initial, maintenance, liquidation = asset.haircuts
        if not initial >= maintenance >= liquidation:
            raise _fail(
                f"{key}.maintenance_haircut",
                f"haircuts must satisfy initial ≥ maintenance ≥ liquidation, got "
                f"{initial} / {maintenance} / {liquidation}",
            )
        if asset.capital_haircut is not None:
            _check_fraction(f"{key}.capital_haircut", asset.capital_haircut)
        if not 0 <= asset.sale_fee < 1:
            raise _fail(f"{key}.sale_fee", f"{asset.sale_fee} is outside [0, 1)")
        if asset.day_count not in DAY_COUNTS:
            raise _fail(f"{key}.day_count", f"{asset.day_count!r} is not one of {DAY_COUNTS}")
        _check_non_negative(f"{key}.annual_rate", asset.annual_rate)
        if asset.eligible and asset.asset_class == "va":
            policy = self.policy
            if asset.symbol not in policy.va_assets:
                raise _fail(
                    f"{key}.eligible",
                    f"only {list(policy.va_assets)} may be eligible VA collateral "
                    "(policy.va_assets)",
                )
            if initial < policy.va_haircut_floor:
                raise _fail(
                    f"{key}.initial_haircut",
                    f"{initial} is below the VA haircut floor policy.va_haircut_floor = "
                    f"{policy.va_haircut_floor}",
                )

    def _validate_perpetual(self, key: str, perp: PerpetualSpec) -> None:
        _check_bool(f"{key}.professional_only", perp.professional_only)
        for name in ("contract_size", "liquidation_fee"):
            _number(f"{key}.{name}", getattr(perp, name))
        if not isinstance(perp.funding, FundingSpec):
            raise _fail(f"{key}.funding", "expected a FundingSpec")
        for name in ("interval_hours", "interest_rate", "clamp", "cap"):
            _number(f"{key}.funding.{name}", getattr(perp.funding, name))
        for k, tier in enumerate(perp.tiers):
            if not (math.isfinite(tier.max_leverage) and tier.max_leverage >= 1):
                raise _fail(f"{key}.tiers[{k}].max_leverage", "must be a finite number ≥ 1")
        if perp.kind not in CONTRACT_KINDS:
            raise _fail(f"{key}.kind", f"{perp.kind!r} is not one of {CONTRACT_KINDS}")
        for name in ("base", "settle"):
            symbol = getattr(perp, name)
            if symbol not in self.asset_ids:
                raise _fail(f"{key}.{name}", f"{symbol!r} is not a configured asset")
        if perp.kind == "inverse" and perp.settle != perp.base:
            raise _fail(f"{key}.settle", "an inverse contract settles in its base coin")
        _check_positive(f"{key}.contract_size", perp.contract_size)
        if not perp.tiers:
            raise _fail(f"{key}.tiers", "at least one tier is required")
        if not 0 <= perp.liquidation_fee < 1:
            raise _fail(f"{key}.liquidation_fee", f"{perp.liquidation_fee} is outside [0, 1)")
        funding = perp.funding
        _check_positive(f"{key}.funding.interval_hours", funding.interval_hours)
        if funding.interval_hours > 24:
            raise _fail(f"{key}.funding.interval_hours", "funding must settle at least daily")
        if not math.isfinite(funding.interest_rate):
            raise _fail(f"{key}.funding.interest_rate", "must be finite")
        _check_non_negative(f"{key}.funding.clamp", funding.clamp)
        _check_positive(f"{key}.funding.cap", funding.cap)

    def _validate_policy(self) -> None:
        policy = self.policy
        for name in (
            "va_haircut_floor",
            "call_deadline_hours",
            "liquidation_buffer",
            "max_loans_to_capital",
        ):
            _number(f"policy.{name}", getattr(policy, name))
        _check_fraction("policy.va_haircut_floor", policy.va_haircut_floor)
        if policy.call_target not in CALL_TARGETS:
            raise _fail(
                "policy.call_target", f"{policy.call_target!r} is not one of {CALL_TARGETS}"
            )
        _check_positive("policy.call_deadline_hours", policy.call_deadline_hours)
        _check_non_negative("policy.liquidation_buffer", policy.liquidation_buffer)
        _check_positive("policy.max_loans_to_capital", policy.max_loans_to_capital)
        _check_fraction("policy.max_client_share", policy.max_client_share)
        if policy.max_collateral_share is not None:
            _check_fraction("policy.max_collateral_share", policy.max_collateral_share)
        for symbol in policy.va_assets:
            if symbol in self.asset_ids and self.asset(symbol).asset_class != "va":
                raise _fail("policy.va_assets", f"{symbol!r} is not of class 'va'")


def _check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool | np.bool_):
        raise _fail(key, f"{value!r} is not true or false")


def _check_string(key: str, value: Any) -> None:
    if not isinstance(value, str):
        raise _fail(key, f"{value!r} is not a string")


def _normalised_assets(assets: Any) -> tuple[AssetSpec, ...]:
    out = []
    for i, asset in enumerate(assets):
        if not isinstance(asset, AssetSpec):
            raise _fail(f"asset[{i}]", f"expected an AssetSpec, got {type(asset).__name__}")
        key = f"asset[{asset.symbol}]"
        _check_string(f"asset[{i}].symbol", asset.symbol)
        if isinstance(asset.size_tiers, str | bytes | Mapping):
            raise _fail(f"{key}.size_tiers", "must be a list of {floor, factor}")
        bands = tuple(
            SizeTier.coerce(f"{key}.size_tiers[{k}]", band)
            for k, band in enumerate(asset.size_tiers)
        )
        out.append(replace(asset, size_tiers=bands))
    return tuple(out)


def _normalised_perpetuals(perpetuals: Any) -> tuple[PerpetualSpec, ...]:
    out = []
    for i, perp in enumerate(perpetuals):
        if not isinstance(perp, PerpetualSpec):
            raise _fail(f"perpetual[{i}]", f"expected a PerpetualSpec, got {type(perp).__name__}")
        key = f"perpetual[{perp.symbol}]"
        _check_string(f"perpetual[{i}].symbol", perp.symbol)
        if isinstance(perp.tiers, str | bytes | Mapping) or not hasattr(perp.tiers, "__iter__"):
            raise _fail(f"{key}.tiers", "must be a list of {floor, mmr, max_leverage}")
        tiers = tuple(MarginTier.coerce(f"{key}.tiers[{k}]", t) for k, t in enumerate(perp.tiers))
        out.append(replace(perp, tiers=tiers))
    return tuple(out)


# -- TOML document → dataclasses ------------------------------------------------------------


def _reject_unknown(prefix: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    for name in entry:
        if name not in allowed:
            key = f"{prefix}.{name}" if prefix else name
            raise _fail(key, "unknown key")


def _reject_overrides(overrides: Any) -> None:
    for i, override in enumerate(overrides if isinstance(overrides, list) else [overrides]):
        selector = override if isinstance(override, Mapping) else {}
        if "affiliate_market_maker" in selector:
            raise _fail(
                f"override[{i}].affiliate_market_maker",
                "an affiliated market maker must get exactly the margin, haircut, "
                "liquidation and ADL treatment of any other account",
            )
        raise _fail(
            f"override[{i}]",
            "per-account overrides are not supported: every account of an investor class "
            "is treated alike",
        )


def _table_list(document: Mapping[str, Any], name: str, key: str | None = None) -> list[Any]:
    entries = document.get(name, [])
    if not isinstance(entries, list):
        raise _fail(key or name, f"must be an array of tables, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise _fail(f"{key or name}[{i}]", f"{entry!r} is not a table")
    return entries


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, f"{value!r} is not a table")
    return value


def _flag(key: str, entry: Mapping[str, Any], name: str, default: bool) -> bool:
    value = entry.get(name, default)
    _check_bool(f"{key}.{name}", value)
    return bool(value)


def _optional_string(key: str, value: Any) -> str | None:
    if value is not None:
        _check_string(key, value)
    return value  # type: ignore[no-any-return]


def _required(key: str, entry: Mapping[str, Any], name: str) -> Any:
    if name not in entry:
        raise _fail(f"{key}.{name}", "is required")
    return entry[name]


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"{value!r} is not a number")
    return float(value)


def _optional_number(key: str, value: Any) -> float | None:
    return None if value is None else _number(key, value)


_ASSET_KEYS = {
    "symbol", "class", "minor_unit", "eligible", "initial_haircut", "maintenance_haircut",
    "liquidation_haircut", "size_tiers", "group", "borrowable", "day_count", "annual_rate",
    "capital_haircut", "sale_fee",
}  # fmt: skip


def _asset_from_dict(index: int, entry: Mapping[str, Any]) -> AssetSpec:
    symbol = entry.get("symbol")
    key = f"asset[{symbol}]" if isinstance(symbol, str) else f"asset[{index}]"
    if not isinstance(symbol, str) or not symbol:
        raise _fail(f"{key}.symbol", "is required (a non-empty string)")
    _reject_unknown(key, entry, _ASSET_KEYS)
    bands = [
        SizeTier.coerce(f"{key}.size_tiers[{k}]", _table(f"{key}.size_tiers[{k}]", band))
        for k, band in enumerate(_table_list(entry, "size_tiers", f"{key}.size_tiers"))
    ]
    return AssetSpec(
        symbol=symbol,
        asset_class=_required(key, entry, "class"),
        minor_unit=_number(f"{key}.minor_unit", _required(key, entry, "minor_unit")),
        eligible=_flag(key, entry, "eligible", False),
        initial_haircut=_number(f"{key}.initial_haircut", entry.get("initial_haircut", 0.0)),
        maintenance_haircut=_optional_number(
            f"{key}.maintenance_haircut", entry.get("maintenance_haircut")
        ),
        liquidation_haircut=_optional_number(
            f"{key}.liquidation_haircut", entry.get("liquidation_haircut")
        ),
        size_tiers=tuple(bands),
        group=_optional_string(f"{key}.group", entry.get("group")),
        borrowable=_flag(key, entry, "borrowable", False),
        day_count=entry.get("day_count", "ACT/365"),
        annual_rate=_number(f"{key}.annual_rate", entry.get("annual_rate", 0.0)),
        capital_haircut=_optional_number(f"{key}.capital_haircut", entry.get("capital_haircut")),
        sale_fee=_number(f"{key}.sale_fee", entry.get("sale_fee", 0.0)),
    )


_PERPETUAL_KEYS = {
    "symbol", "kind", "base", "quote", "settle", "contract_size", "professional_only",
    "liquidation_fee", "funding", "tiers",
}  # fmt: skip


def _perpetual_from_dict(index: int, entry: Mapping[str, Any]) -> PerpetualSpec:
    symbol = entry.get("symbol")
    key = f"perpetual[{symbol}]" if isinstance(symbol, str) else f"perpetual[{index}]"
    if not isinstance(symbol, str) or not symbol:
        raise _fail(f"{key}.symbol", "is required (a non-empty string)")
    _reject_unknown(key, entry, _PERPETUAL_KEYS)
    _required(key, entry, "tiers")
    tiers = [
        MarginTier.coerce(f"{key}.tiers[{k}]", _table(f"{key}.tiers[{k}]", tier))
        for k, tier in enumerate(_table_list(entry, "tiers", f"{key}.tiers"))
    ]
    funding_entry = _table(f"{key}.funding", entry.get("funding", {}))
    _reject_unknown(
        f"{key}.funding", funding_entry, {"interval_hours", "interest_rate", "clamp", "cap"}
    )
    defaults = FundingSpec()
    funding = FundingSpec(
        **{
            name: _number(f"{key}.funding.{name}", funding_entry.get(name, getattr(defaults, name)))
            for name in ("interval_hours", "interest_rate", "clamp", "cap")
        }
    )
    return PerpetualSpec(
        symbol=symbol,
        kind=_required(key, entry, "kind"),
        base=_required(key, entry, "base"),
        settle=_required(key, entry, "settle"),
        quote=entry.get("quote"),
        contract_size=_number(f"{key}.contract_size", _required(key, entry, "contract_size")),
        tiers=tuple(tiers),
        professional_only=_flag(key, entry, "professional_only", True),
        liquidation_fee=_number(f"{key}.liquidation_fee", entry.get("liquidation_fee", 0.005)),
        funding=funding,
    )


_POLICY_KEYS = {
    "va_haircut_floor", "va_assets", "call_target", "call_deadline_hours",
    "liquidation_buffer", "max_loans_to_capital", "max_client_share", "max_collateral_share",
}  # fmt: skip


def _policy_from_dict(entry: Mapping[str, Any]) -> Policy:
    _reject_unknown("policy", entry, _POLICY_KEYS)
    defaults = Policy()
    va_assets = entry.get("va_assets", list(defaults.va_assets))
    if not isinstance(va_assets, list) or not all(isinstance(s, str) for s in va_assets):
        raise _fail("policy.va_assets", "must be a list of asset symbols")
    return Policy(
        va_haircut_floor=_number(
            "policy.va_haircut_floor", entry.get("va_haircut_floor", defaults.va_haircut_floor)
        ),
        va_assets=tuple(va_assets),
        call_target=entry.get("call_target", defaults.call_target),
        call_deadline_hours=_number(
            "policy.call_deadline_hours",
            entry.get("call_deadline_hours", defaults.call_deadline_hours),
        ),
        liquidation_buffer=_number(
            "policy.liquidation_buffer",
            entry.get("liquidation_buffer", defaults.liquidation_buffer),
        ),
        max_loans_to_capital=_number(
            "policy.max_loans_to_capital",
            entry.get("max_loans_to_capital", defaults.max_loans_to_capital),
        ),
        max_client_share=_number(
            "policy.max_client_share", entry.get("max_client_share", defaults.max_client_share)
        ),
        max_collateral_share=_optional_number(
            "policy.max_collateral_share", entry.get("max_collateral_share")
        ),
    )
