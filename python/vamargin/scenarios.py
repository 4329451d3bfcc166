"""Stress scenarios (SPEC §9): relative price moves per asset, and the shipped sets.

A scenario is ``{asset: move}`` with ``move`` relative (``-0.30`` is a 30% fall; a move
must be finite and above ``-1``). Assets a scenario does not name keep their price.
Perpetual marks move with their base and against their quote:
``mark × (1 + move[base]) / (1 + move[quote])`` (a quote the config does not list as an
asset counts as unmoved). A scenario may also name an instrument to move its mark by
that move alone (a basis or mark-price dislocation), overriding the base/quote rule.

Scenario sets are ordered ``{name: {asset: move}}`` mappings, or long tables with
columns ``scenario, asset, move`` (any table ``vm.Book`` reads), or files: TOML (one
table per scenario, ``["BTC crash"]`` then ``BTC = -0.3``) or CSV in the long layout.

Shipped sets (moves of the config's virtual assets; BTC and ETH in the HK profile):

- ``smf``: the SMF-style falls of 30% and 50% in every virtual asset at once;
- ``joint``: BTC and ETH falling together, ETH further (its beta to BTC is above one);
- ``weekend``: a gap over a weekend, when hedging is thin, both down and up (a gap up
  hurts the shorts);
- ``grid``: every virtual asset moved together from −90% to +90% in 5% steps.
"""

from __future__ import annotations

import csv
import math
import numbers
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vamargin._columns import TableReader
from vamargin.config import RiskConfig
from vamargin.errors import DataError

Scenario = dict[str, float]
ScenarioSet = dict[str, Scenario]

DEFAULT_ASSETS: tuple[str, ...] = ("BTC", "ETH")
"""The virtual assets the shipped sets move (the HK profile's ``policy.va_assets``)."""


def smf_falls(assets: Iterable[str] = DEFAULT_ASSETS) -> ScenarioSet:
    """Every virtual asset falling 30%, then 50%, at once (the SMF-style falls)."""
    names = tuple(assets)
    return {f"SMF {pct}% fall": dict.fromkeys(names, -pct / 100) for pct in (30, 50)}


def joint_fall() -> ScenarioSet:
    """BTC and ETH falling together, ETH further than BTC."""
    pairs = ((20, 25), (40, 50), (60, 70))
    return {
        f"BTC -{btc}% ETH -{eth}%": {"BTC": -btc / 100, "ETH": -eth / 100} for btc, eth in pairs
    }


def weekend_gap() -> ScenarioSet:
    """A Monday open 15% (BTC) and 20% (ETH) away from Friday's close, either way."""
    return {
        "weekend gap down": {"BTC": -0.15, "ETH": -0.20},
        "weekend gap up": {"BTC": 0.15, "ETH": 0.20},
    }


def grid_shocks(low: float = -0.90, high: float = 0.90, step: float = 0.05) -> dict[str, float]:
    """Scenario name → common move of the grid, from ``low`` to ``high`` in ``step``s."""
    if not (-1 < low <= high and step > 0):
        raise DataError(f"grid: need -1 < low ≤ high and step > 0 (got {low}, {high}, {step})")
    count = round((high - low) / step)
    shocks = [round(low + k * step, 10) for k in range(count + 1)]
    return {f"grid {shock * 100:+.0f}%": shock for shock in shocks}


def grid(
    assets: Iterable[str] = DEFAULT_ASSETS,
    low: float = -0.90,
    high: float = 0.90,
    step: float = 0.05,
) -> ScenarioSet:
    """Every asset of ``assets`` moved together by each shock of :func:`grid_shocks`."""
    names = tuple(assets)
    return {
        name: dict.fromkeys(names, shock) for name, shock in grid_shocks(low, high, step).items()
    }


SETS: dict[str, str] = {
    "smf": "SMF-style 30% and 50% falls",
    "joint": "BTC and ETH falling together",
    "weekend": "weekend gap, down and up",
    "grid": "all virtual assets together, −90% … +90% in 5% steps",
    "standard": "all of the above",
}
"""The shipped sets by name (see :func:`shipped`)."""


def shipped(name: str) -> ScenarioSet:
    """A shipped set by name (:data:`SETS`)."""
    sets = {
        "smf": smf_falls,
        "joint": joint_fall,
        "weekend": weekend_gap,
        "grid": grid,
        "standard": standard,
    }
    if name not in sets:
        raise DataError(f"scenarios: unknown set {name!r} (shipped: {', '.join(SETS)})")
    return sets[name]()


def standard() -> ScenarioSet:
    """Every shipped scenario: SMF falls, joint falls, weekend gaps, then the grid."""
    return {**smf_falls(), **joint_fall(), **weekend_gap(), **grid()}


def load(source: str | Path) -> ScenarioSet:
    """A shipped set by name, or a TOML or CSV scenario file (see the module docs)."""
    if isinstance(source, str) and source in SETS:
        return shipped(source)
    path = Path(source)
    if path.suffix.lower() not in (".toml", ".csv"):
        raise DataError(
            f"scenarios: {str(source)!r} is neither a shipped set ({', '.join(SETS)}) "
            "nor a .toml or .csv file"
        )
    try:
        if path.suffix.lower() == ".toml":
            with path.open("rb") as handle:
                document = tomllib.load(handle)
            return _from_toml(path, document)
        with path.open(newline="", encoding="utf-8") as handle:
            return _from_csv(path, list(csv.DictReader(handle)))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable scenario file ({error})") from error


def _from_toml(path: Path, document: Mapping[str, Any]) -> ScenarioSet:
    scenarios: ScenarioSet = {}
    for name, moves in document.items():
        if not isinstance(moves, Mapping):
            raise DataError(f"{path}: [{name}] must be a table of asset = move")
        scenarios[name] = dict(moves)
    return scenarios


def _from_csv(path: Path, rows: list[dict[str, str]]) -> ScenarioSet:
    scenarios: ScenarioSet = {}
    for column in ("scenario", "asset", "move"):
        if rows and column not in rows[0]:
            raise DataError(f"{path}: missing column {column!r} (has {list(rows[0])})")
    for row, record in enumerate(rows):
        try:
            move = float(record["move"])
        except (TypeError, ValueError):
            raise DataError(f"{path}: move row {row}: {record['move']!r} is not a number") from None
        scenario = scenarios.setdefault(record["scenario"], {})
        if record["asset"] in scenario:
            raise DataError(f"{path}: asset row {row}: {record['asset']} moved twice")
        scenario[record["asset"]] = move
    return scenarios


def _from_table(table: Any) -> ScenarioSet:
    reader = TableReader(table, "scenarios")
    names = reader.strings("scenario")
    assets = reader.strings("asset")
    moves = reader.float64("move", finite=False)
    scenarios: ScenarioSet = {}
    for row in range(reader.rows):
        scenario = scenarios.setdefault(names.names[names.codes[row]], {})
        asset = assets.names[assets.codes[row]]
        if asset in scenario:
            raise DataError(f"scenarios.asset row {row}: {asset} moved twice in one scenario")
        scenario[asset] = float(moves[row])
    return scenarios


def read_scenarios(scenarios: Any) -> ScenarioSet:
    """Parses a scenario set (mapping or long table) and checks every move."""
    if isinstance(scenarios, str | Path):
        scenarios = load(scenarios)
    if isinstance(scenarios, Mapping) and not (
        "scenario" in scenarios and not isinstance(scenarios["scenario"], Mapping)
    ):
        parsed: ScenarioSet = {}
        for name, moves in scenarios.items():
            if not isinstance(name, str):
                raise DataError(f"scenarios: scenario name {name!r} is not a string")
            if not isinstance(moves, Mapping):
                raise DataError(f"scenarios[{name!r}]: expected {{asset: move}}, got {moves!r}")
            parsed[name] = dict(moves)
    else:
        parsed = _from_table(scenarios)
    if not parsed:
        raise DataError("scenarios: no scenario given")
    for name, moves in parsed.items():
        for asset, move in moves.items():
            where = f"scenarios[{name!r}][{asset!r}]"
            if not isinstance(asset, str):
                raise DataError(f"{where}: asset must be a string")
            if isinstance(move, bool | np.bool_) or not isinstance(move, numbers.Real):
                raise DataError(f"{where}: {move!r} is not a number")
            if not (math.isfinite(float(move)) and float(move) > -1):
                raise DataError(f"{where}: move {move} must be finite and > -1 (−100%)")
            moves[asset] = float(move)
    return parsed


@dataclass(frozen=True)
class ScenarioPrices:
    """Every scenario's full price set, one row per scenario (C-contiguous)."""

    names: list[str]
    asset_prices: npt.NDArray[np.float64]
    marks: npt.NDArray[np.float64]


def scenario_prices(
    config: RiskConfig,
    scenarios: ScenarioSet,
    asset_prices: npt.NDArray[np.float64],
    marks: npt.NDArray[np.float64],
) -> ScenarioPrices:
    """Moves the base prices (dense, by config id) by each scenario. Naming a symbol the
    config does not know is an error: a typo must not pass as an unmoved price."""
    asset_ids = config.asset_ids
    perpetual_ids = config.perpetual_ids
    names = list(scenarios)
    asset_moves = np.zeros((len(names), len(config.assets)))
    mark_moves = np.full((len(names), len(config.perpetuals)), np.nan)
    for s, (name, moves) in enumerate(scenarios.items()):
        for symbol, move in moves.items():
            if symbol in asset_ids:
                asset_moves[s, asset_ids[symbol]] = move
            elif symbol in perpetual_ids:
                mark_moves[s, perpetual_ids[symbol]] = move
            else:
                raise DataError(
                    f"scenarios[{name!r}][{symbol!r}]: not an asset or instrument of the config"
                )
    moved_assets = asset_prices[np.newaxis, :] * (1.0 + asset_moves)
    moved_marks = np.empty_like(mark_moves)
    for i, perp in enumerate(config.perpetuals):
        factor = 1.0 + asset_moves[:, asset_ids[perp.base]]
        if perp.quote is not None and perp.quote in asset_ids:
            factor = factor / (1.0 + asset_moves[:, asset_ids[perp.quote]])
        explicit = ~np.isnan(mark_moves[:, i])
        factor = np.where(explicit, 1.0 + mark_moves[:, i], factor)
        moved_marks[:, i] = marks[i] * factor
    return ScenarioPrices(
        names=names,
        asset_prices=np.ascontiguousarray(moved_assets),
        marks=np.ascontiguousarray(moved_marks),
    )
