"""Property tests of ``RiskEngine.revalue`` against the pure-Python reference
(``tests/reference.py``) and against the defining equations of its outputs.

Books are random but valid: small configurations (cash, a size-tiered VA, maybe a third
asset; linear and inverse perpetuals with random valid bracket tables), accounts with and
without credit, loans only for credit-approved margin clients in borrowable assets,
cross and isolated positions, chosen leverages, empty rows, and holdings and positions
rows interleaved across accounts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
import vamargin as vm

# -- tolerances ---------------------------------------------------------------------------

REL = 1e-9
ABS = 1e-9


def close(actual: float, expected: float, *, scale: float = 0.0) -> bool:
    """Equal within ``REL`` relative / ``ABS`` absolute, or ``REL`` of ``scale`` (the gross
    size of the terms a difference was computed from); NaN equals NaN, infinities match."""
    actual, expected = float(actual), float(expected)
    if math.isnan(actual) or math.isnan(expected):
        return math.isnan(actual) and math.isnan(expected)
    if math.isinf(actual) or math.isinf(expected):
        return actual == expected
    bound = max(REL * max(abs(actual), abs(expected)), ABS, REL * scale)
    return abs(actual - expected) <= bound


def near(x: float, y: float) -> bool:
    """Whether the comparison ``x < y`` is too close to call (1e-9 relative)."""
    if math.isinf(x) or math.isinf(y):
        return False
    return abs(x - y) <= REL * max(abs(x), abs(y), 1.0)


# -- strategies ---------------------------------------------------------------------------


def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log(low), math.log(high)).map(math.exp)


def unit(low: float = 0.0, high: float = 1.0) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def haircut_ladders(draw: st.DrawFn, lowest_initial: float = 0.0) -> tuple[float, float, float]:
    initial = draw(unit(lowest_initial, 1.0))
    maintenance = initial * draw(unit(0.5, 1.0))
    liquidation = maintenance * draw(unit(0.5, 1.0))
    return initial, maintenance, liquidation


@st.composite
def size_tier_tables(draw: st.DrawFn) -> tuple[vm.SizeTier, ...]:
    n = draw(st.integers(1, 3))
    floors = sorted(set(draw(st.lists(log_uniform(1e3, 1e6), min_size=n - 1, max_size=n - 1))))
    factor = draw(st.sampled_from([1.0, draw(unit(0.5, 1.0))]))
    bands = [vm.SizeTier(0.0, factor)]
    for floor in floors:
        factor = draw(unit(0.0, factor))
        bands.append(vm.SizeTier(floor, factor))
    return tuple(bands)


@st.composite
def margin_tier_tables(draw: st.DrawFn, reference_notional: float) -> tuple[vm.MarginTier, ...]:
    """Floors strictly increasing from 0 around ``reference_notional``, mmr non-decreasing,
    ``mmr < 1/max_leverage``."""
    n = draw(st.integers(1, 4))
    floors = sorted(
        {reference_notional * 10 ** draw(unit(-1.5, 1.5)) for _ in range(n - 1)} - {0.0}
    )
    mmr = draw(unit(0.001, 0.05))
    tiers = []
    for floor in [0.0, *floors]:
        mmr = mmr + draw(st.sampled_from([0.0, draw(unit(0.0, 0.05))]))
        leverage = min(125.0, draw(unit(1.0, 0.999 / mmr)))
        tiers.append(vm.MarginTier(floor, mmr, leverage))
    return tuple(tiers)


ASSET_PRICES = {
    "USD": st.just(1.0),
    "BTC": log_uniform(100.0, 1e5),
    "ETH": log_uniform(10.0, 1e4),
    "USDT": unit(0.95, 1.05),
    "HKD": unit(0.12, 0.14),
}
VA = ("BTC", "ETH")
CASH_LIKE = ("USD", "USDT", "HKD")


@dataclass
class Scenario:
    config: vm.RiskConfig
    accounts: dict[str, list[Any]]
    holdings: dict[str, list[Any]]
    positions: dict[str, list[Any]]
    prices: dict[str, float]
    omit: tuple[str, ...] = ()
    """Position columns left out of the engine's book (the reference reads them as NaN)."""

    def book(self) -> vm.Book:
        positions = {k: v for k, v in self.positions.items() if k not in self.omit}
        return make_book(self.accounts, self.holdings, positions)

    def revalue(self, prices: dict[str, float] | None = None) -> vm.Revaluation:
        return vm.RiskEngine(self.config).revalue(self.book(), prices or self.prices)

    def reference(self) -> ref.Result:
        return ref.revalue(self.config, self.accounts, self.holdings, self.positions, self.prices)


ACCOUNT_DTYPES = {
    "account_id": np.int64,
    "investor_class": np.str_,
    "affiliate_market_maker": np.bool_,
    "credit_limit": np.float64,
    "margin_client": np.bool_,
    "credit_approved": np.bool_,
}
HOLDING_DTYPES = {"account_id": np.int64, "asset": np.str_, "amount": np.float64}
POSITION_DTYPES = {
    "account_id": np.int64,
    "instrument": np.str_,
    "qty": np.float64,
    "entry_price": np.float64,
    "isolated_margin": np.float64,
    "leverage": np.float64,
}


def _arrays(table: dict[str, list[Any]], dtypes: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.asarray(values, dtype=dtypes[name]) for name, values in table.items()}


def make_book(
    accounts: dict[str, list[Any]],
    holdings: dict[str, list[Any]],
    positions: dict[str, list[Any]],
) -> vm.Book:
    return vm.Book(
        accounts=_arrays(accounts, ACCOUNT_DTYPES),
        holdings=_arrays(holdings, HOLDING_DTYPES),
        positions=_arrays(positions, POSITION_DTYPES),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    # Assets: cash, a size-tiered VA, maybe one more.
    extra = draw(st.sampled_from([None, "ETH", "USDT", "HKD"]))
    symbols = ["USD", "BTC"] + ([extra] if extra else [])
    prices = {s: draw(ASSET_PRICES[s]) for s in symbols}
    policy = vm.Policy(
        va_haircut_floor=draw(st.sampled_from([0.6, 0.5, 0.75])),
        call_target=draw(st.sampled_from(["initial", "maintenance"])),
    )
    assets = []
    for symbol in symbols:
        if symbol in VA:
            eligible = draw(st.booleans())
            ladder = draw(haircut_ladders(policy.va_haircut_floor if eligible else 0.0))
            bands = draw(size_tier_tables()) if symbol == "BTC" else ()
            asset_class, borrowable = "va", False
        else:
            eligible = draw(st.sampled_from([True, True, False]))
            ladder = draw(st.sampled_from([(0.0, 0.0, 0.0), draw(haircut_ladders())]))
            bands = ()
            asset_class = "cash" if symbol != "USDT" else "stablecoin"
            borrowable = symbol != "USDT" or draw(st.booleans())
        initial, maintenance, liquidation = ladder
        assets.append(
            vm.AssetSpec(
                symbol=symbol,
                asset_class=asset_class,
                minor_unit=1e-8 if symbol in VA else 0.01,
                eligible=eligible,
                initial_haircut=initial,
                maintenance_haircut=maintenance,
                liquidation_haircut=liquidation,
                size_tiers=bands,
                borrowable=borrowable,
            )
        )

    # Perpetuals: linear and inverse on the VA, random bracket tables.
    vas = [s for s in symbols if s in VA]
    cash_like = [s for s in symbols if s in CASH_LIKE]
    n_perps = draw(st.integers(1, 3))
    kinds = draw(
        st.lists(st.sampled_from(["linear", "inverse"]), min_size=n_perps, max_size=n_perps)
    )
    if n_perps >= 2 and len(set(kinds)) == 1:
        kinds[-1] = "inverse" if kinds[0] == "linear" else "linear"
    perps = []
    for i, kind in enumerate(kinds):
        base = draw(st.sampled_from(vas))
        settle = base if kind == "inverse" else draw(st.sampled_from(cash_like))
        symbol = f"P{i}-{base}-{kind[:3].upper()}"
        if kind == "linear":
            mark = prices[base] / prices[settle] * draw(unit(0.8, 1.25))
            contract_size = draw(st.sampled_from([0.001, 0.01, 1.0]))
            reference_notional = 5.0 * mark
        else:
            mark = prices[base] * draw(unit(0.8, 1.25))
            contract_size = draw(st.sampled_from([1.0, 10.0, 100.0]))
            reference_notional = 5.0
        prices[symbol] = mark
        perps.append(
            vm.PerpetualSpec(
                symbol=symbol,
                kind=kind,
                base=base,
                settle=settle,
                contract_size=contract_size,
                tiers=draw(margin_tier_tables(reference_notional)),
            )
        )
    config = vm.RiskConfig(assets=tuple(assets), perpetuals=tuple(perps), policy=policy)

    # Accounts.
    n_accounts = draw(st.integers(1, 6))
    if draw(st.booleans()):
        first = draw(st.integers(-5, 5))
        ids = list(range(first, first + n_accounts))
    else:
        ids = draw(
            st.lists(
                st.integers(-(2**40), 2**40), min_size=n_accounts, max_size=n_accounts, unique=True
            )
        )
    accounts: dict[str, list[Any]] = {name: [] for name in ACCOUNT_DTYPES}
    for account_id in ids:
        margin_client = draw(st.integers(0, 3)) > 0
        accounts["account_id"].append(account_id)
        accounts["investor_class"].append(draw(st.sampled_from(vm.INVESTOR_CLASSES)))
        accounts["affiliate_market_maker"].append(draw(st.booleans()))
        accounts["credit_limit"].append(
            draw(st.sampled_from([math.inf, 0.0, draw(log_uniform(1.0, 1e6))]))
        )
        accounts["margin_client"].append(margin_client)
        accounts["credit_approved"].append(margin_client and draw(st.integers(0, 3)) > 0)

    # Holdings: one row per (account, asset); loans only where allowed.
    holdings: dict[str, list[Any]] = {name: [] for name in HOLDING_DTYPES}
    for row, account_id in enumerate(ids):
        may_borrow = accounts["margin_client"][row] and accounts["credit_approved"][row]
        values: dict[str, float] = {}
        for asset in assets:
            if not draw(st.booleans()):
                continue
            value = 0.0 if draw(st.integers(0, 5)) == 0 else draw(log_uniform(1.0, 1e6))
            if asset.borrowable and may_borrow and draw(st.booleans()):
                value = -value
            values[asset.symbol] = value
        if may_borrow and draw(st.integers(0, 2)) > 0:
            # A USD loan that puts equity near one of the holdings' requirement levels,
            # so that every status (margin_call included) comes up.
            lent_against = [
                a for a in assets if values.get(a.symbol, 0.0) > 0 and a.symbol != "USD"
            ]
            worth = sum(values[a.symbol] for a in lent_against)
            required = [
                sum(
                    ref.requirement(values[a.symbol], ref.effective_haircuts(a)[level], a)
                    for a in lent_against
                )
                for level in range(3)
            ]
            target = draw(
                st.sampled_from(
                    [
                        (required[1] + required[2]) / 2,  # between liquidation and maintenance
                        required[draw(st.integers(0, 2))] * draw(unit(0.95, 1.05)),
                    ]
                )
            )
            loan = worth - target
            if loan > 0:
                values["USD"] = -loan
        for symbol, value in values.items():
            holdings["account_id"].append(account_id)
            holdings["asset"].append(symbol)
            holdings["amount"].append(value / prices[symbol])

    # Positions: at most one cross and one isolated row per (account, instrument).
    positions: dict[str, list[Any]] = {name: [] for name in POSITION_DTYPES}
    for account_id in ids:
        keys = draw(
            st.lists(
                st.tuples(st.sampled_from(perps), st.booleans()),
                max_size=4,
                unique_by=lambda key: (key[0].symbol, key[1]),
            )
        )
        for perp, is_isolated in keys:
            mark = prices[perp.symbol]
            units = 0.0 if draw(st.integers(0, 5)) == 0 else draw(log_uniform(1e-3, 50.0))
            units *= draw(st.sampled_from([1.0, -1.0]))
            qty = units / perp.contract_size
            if perp.kind == "inverse":
                qty *= prices[perp.base]
            entry = mark * draw(unit(0.7, 1.4))
            entry_notional = ref.notional(perp.kind, perp.contract_size, qty, entry)
            margin = (
                entry_notional * draw(st.sampled_from([0.0, draw(unit(0.0, 0.6))]))
                if is_isolated
                else math.nan
            )
            positions["account_id"].append(account_id)
            positions["instrument"].append(perp.symbol)
            positions["qty"].append(qty)
            positions["entry_price"].append(entry)
            positions["isolated_margin"].append(margin)
            positions["leverage"].append(draw(st.sampled_from([math.nan, draw(unit(1.0, 150.0))])))
    if not draw(st.booleans()):
        del positions["leverage"]
    # Without isolated positions the engine may also be given no isolated_margin column.
    omit = ()
    if all(math.isnan(m) for m in positions["isolated_margin"]) and draw(st.booleans()):
        omit = ("isolated_margin",)

    # Prices the book does not need (unused assets, instruments with only empty rows)
    # may be missing.
    live = {i for i, q in zip(positions["instrument"], positions["qty"], strict=True) if q != 0}
    needed = set(holdings["asset"]) | {config.perpetual(i).settle for i in live}
    for symbol in [*symbols, *(p.symbol for p in perps)]:
        if symbol not in needed and symbol not in live and draw(st.booleans()):
            del prices[symbol]

    # Interleave rows across accounts (the engine must group them itself).
    holdings = _reorder(holdings, draw(st.permutations(range(len(holdings["amount"])))))
    positions = _reorder(positions, draw(st.permutations(range(len(positions["qty"])))))
    return Scenario(config, accounts, holdings, positions, prices, omit)


def _reorder(table: dict[str, list[Any]], order: list[int]) -> dict[str, list[Any]]:
    return {name: [values[i] for i in order] for name, values in table.items()}


# -- 1. revalue equals the reference -------------------------------------------------------


def account_scales(scenario: Scenario, prices: dict[str, float] | None = None) -> dict[int, float]:
    """Gross size of each account's terms (reporting currency): what the rounding of its
    sums and differences is relative to."""
    prices = prices or scenario.prices
    gross = dict.fromkeys(scenario.accounts["account_id"], 0.0)
    holdings = scenario.holdings
    for owner, asset, amount in zip(
        holdings["account_id"], holdings["asset"], holdings["amount"], strict=True
    ):
        gross[owner] += abs(amount * prices[asset])
    for row, owner in enumerate(scenario.positions["account_id"]):
        if scenario.positions["qty"][row] == 0:
            continue
        if math.isnan(scenario.positions["isolated_margin"][row]):
            px = prices[perp_of(scenario, row).settle]
            gross[owner] += position_scale(scenario, row, prices) * px
    return gross


def perp_of(scenario: Scenario, row: int) -> vm.PerpetualSpec:
    return scenario.config.perpetual(scenario.positions["instrument"][row])


def position_scale(scenario: Scenario, row: int, prices: dict[str, float]) -> float:
    """Gross size of a position's own terms (settle currency)."""
    perp = perp_of(scenario, row)
    qty = scenario.positions["qty"][row]
    margin = scenario.positions["isolated_margin"][row]
    if qty == 0:
        return 0.0
    at_mark = ref.notional(perp.kind, perp.contract_size, qty, prices[perp.symbol])
    at_entry = ref.notional(
        perp.kind, perp.contract_size, qty, scenario.positions["entry_price"][row]
    )
    return at_mark + at_entry + (0.0 if math.isnan(margin) else margin)


def status_is_close_call(figures: dict[str, Any], credit_limit: float) -> bool:
    equity = figures["equity"]
    return any(
        near(equity, figures[name])
        for name in ("liquidation_requirement", "maintenance_requirement", "initial_requirement")
    ) or near(figures["debit"], credit_limit)


ACCOUNT_FLOATS = [c for c in ref.ACCOUNT_COLUMNS if c not in ("account_id", "status")]
POSITION_FLOATS = ["notional", "upnl", "initial_margin", "maintenance_margin", "adl_score"]


def check_price(
    scenario: Scenario, result: ref.Result, row: int, column: str, actual: float
) -> None:
    """A liquidation/bankruptcy price equals the reference's, or (badly conditioned) is a
    root of the same equation to within the rounding of its terms."""
    expected = result.positions[column][row]
    if close(actual, expected):
        return
    perp = perp_of(scenario, row)
    tiers = ref.tiers_of(perp)
    if column == "bankruptcy_price":
        tiers = [(0.0, 0.0, math.inf)]
    balance = balance_for(scenario, result, row, column)
    qty, entry = scenario.positions["qty"][row], scenario.positions["entry_price"][row]
    args = (perp.kind, perp.contract_size, qty, entry, balance, tiers)
    for price in (actual, expected):
        if not math.isnan(price):
            gap, gross = ref.margin_gap(*args, price)
            assert abs(gap) <= REL * gross, (column, row, actual, expected, gap, gross)
    if math.isnan(actual) != math.isnan(expected):
        # One found no root: only acceptable when the root sits at the edge (P → 0 or ∞).
        edge = 1e-300 if perp.kind == "linear" else 1e300
        gap, gross = ref.margin_gap(*args, edge)
        gross += abs(balance) + ref.notional(perp.kind, perp.contract_size, qty, entry)
        assert abs(gap) <= REL * gross, (column, row, actual, expected)


def balance_for(scenario: Scenario, result: ref.Result, row: int, column: str) -> float:
    """The balance (settle ccy) the reference priced ``column`` of ``row`` with."""
    margin = scenario.positions["isolated_margin"][row]
    if not math.isnan(margin):
        return margin
    perp = perp_of(scenario, row)
    px = scenario.prices[perp.settle]
    t = result.totals[scenario.positions["account_id"][row]]
    own_upnl = result.positions["upnl"][row]
    other_upnl = t.upnl - own_upnl * px
    if column == "bankruptcy_price":
        return (t.holdings_value + other_upnl) / px
    other_mm = t.maintenance_margin - result.positions["maintenance_margin"][row] * px
    return (t.holdings_value - t.holdings_req[2] - other_mm + other_upnl) / px


def assert_matches_reference(scenario: Scenario) -> None:
    actual = scenario.revalue()
    expected = scenario.reference()
    accounts, positions = actual.accounts, actual.positions
    assert accounts.columns == list(ref.ACCOUNT_COLUMNS)
    assert positions.columns == list(ref.POSITION_COLUMNS)
    assert accounts["account_id"].tolist() == expected.accounts["account_id"]
    assert positions["account_id"].tolist() == expected.positions["account_id"]
    assert positions["instrument"].tolist() == expected.positions["instrument"]
    assert positions["tier"].tolist() == expected.positions["tier"]

    scales = account_scales(scenario)
    for i, account_id in enumerate(expected.accounts["account_id"]):
        scale = scales[account_id]
        figures = {name: expected.accounts[name][i] for name in ref.ACCOUNT_COLUMNS}
        credit_limit = scenario.accounts["credit_limit"][i]
        close_call = status_is_close_call(figures, credit_limit)
        if not close_call:
            assert accounts["status"][i] == figures["status"], (account_id, figures)
        for name in ACCOUNT_FLOATS:
            if name == "call_amount" and close_call:
                continue
            # Money is compared to the account's gross size; ratios only relatively.
            money_scale = 0.0 if name in ("margin_ratio", "ltv") else scale
            assert close(accounts[name][i], figures[name], scale=money_scale), (
                account_id,
                name,
                accounts[name][i],
                figures[name],
            )
    for row in range(len(positions)):
        scale = position_scale(scenario, row, scenario.prices)
        for name in POSITION_FLOATS:
            money_scale = 0.0 if name == "adl_score" else scale
            actual_value, expected_value = positions[name][row], expected.positions[name][row]
            assert close(actual_value, expected_value, scale=money_scale), (
                row,
                name,
                actual_value,
                expected_value,
            )
        for name in ("liquidation_price", "bankruptcy_price"):
            check_price(scenario, expected, row, name, positions[name][row])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_revalue_equals_reference(scenario: Scenario) -> None:
    assert_matches_reference(scenario)


# -- 2. invariances -------------------------------------------------------------------------


def position_keys(positions: dict[str, list[Any]]) -> list[tuple[int, str, bool]]:
    return [
        (a, i, math.isnan(m))
        for a, i, m in zip(
            positions["account_id"], positions["instrument"], positions["isolated_margin"],
            strict=True,
        )
    ]  # fmt: skip


def bits(value: Any) -> Any:
    """A float's bit pattern (so that -0.0 ≠ 0.0 and NaN == NaN), other values as is."""
    if isinstance(value, float | np.floating):
        return np.float64(value).view(np.int64).item()
    return value.item() if isinstance(value, np.generic) else value


def rows_by_key(result: vm.Revaluation, scenario: Scenario) -> tuple[dict[Any, Any], ...]:
    accounts = {
        result.accounts["account_id"][i].item(): tuple(
            bits(result.accounts[c][i]) for c in ref.ACCOUNT_COLUMNS
        )
        for i in range(len(result.accounts))
    }
    positions = {
        key: tuple(bits(result.positions[c][row]) for c in ref.POSITION_COLUMNS)
        for row, key in enumerate(position_keys(scenario.positions))
    }
    return accounts, positions


def shuffled(scenario: Scenario, seed: int, *, keep_account_order: bool) -> Scenario:
    """The same book with its accounts rows permuted and its holdings and positions rows
    shuffled, either freely or keeping each account's rows in their relative order."""
    rng = random.Random(seed)

    def order(owners: list[int]) -> list[int]:
        rows = list(range(len(owners)))
        rng.shuffle(rows)
        if keep_account_order:
            # Deal the shuffled slots back to each account's rows in their original order.
            queues: dict[int, list[int]] = {}
            for row in range(len(owners)):
                queues.setdefault(owners[row], []).append(row)
            rows = [queues[owners[slot]].pop(0) for slot in rows]
        return rows

    account_order = list(range(len(scenario.accounts["account_id"])))
    rng.shuffle(account_order)
    return replace(
        scenario,
        accounts=_reorder(scenario.accounts, account_order),
        holdings=_reorder(scenario.holdings, order(scenario.holdings["account_id"])),
        positions=_reorder(scenario.positions, order(scenario.positions["account_id"])),
    )


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(0, 2**32))
def test_results_do_not_depend_on_how_accounts_are_interleaved(
    scenario: Scenario, seed: int
) -> None:
    """Bitwise: permuting the accounts table and interleaving accounts' rows differently."""
    other = shuffled(scenario, seed, keep_account_order=True)
    assert rows_by_key(scenario.revalue(), scenario) == rows_by_key(other.revalue(), other)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.integers(0, 2**32))
def test_any_row_shuffle_changes_no_bit(scenario: Scenario, seed: int) -> None:
    """Bitwise, for any shuffle of all three tables: each account's rows are summed in key
    order (asset; instrument and margin mode), not in input order."""
    other = shuffled(scenario, seed, keep_account_order=False)
    assert rows_by_key(scenario.revalue(), scenario) == rows_by_key(other.revalue(), other)


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.integers(0, 2**32))
def test_any_row_order_gives_the_reference_figures(scenario: Scenario, seed: int) -> None:
    """Any shuffle of the rows: the reference's figures, in the new orders."""
    assert_matches_reference(shuffled(scenario, seed, keep_account_order=False))


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.data())
def test_affiliate_flag_changes_nothing(scenario: Scenario, data: st.DataObject) -> None:
    flags = scenario.accounts["affiliate_market_maker"]
    flipped = [not f for f in flags]
    if data.draw(st.booleans()):
        flipped = [True] * len(flags)
    other = replace(scenario, accounts={**scenario.accounts, "affiliate_market_maker": flipped})
    assert rows_by_key(scenario.revalue(), scenario) == rows_by_key(other.revalue(), other)


# -- 3. and 4. the prices solve their equations ---------------------------------------------


def repriceable_rows(scenario: Scenario) -> list[int]:
    """Non-empty isolated rows, and cross rows that are their account's only cross row on
    that instrument (so moving the mark moves no other term of the account)."""
    keys = position_keys(scenario.positions)
    rows = []
    for row, (account_id, instrument, cross) in enumerate(keys):
        if scenario.positions["qty"][row] == 0:
            continue
        if cross and keys.count((account_id, instrument, True)) > 1:
            continue
        rows.append(row)
    return rows


def assert_balance_at_price(scenario: Scenario, column: str) -> None:
    """At the mark ``column`` reports, an isolated position's balance (isolated margin +
    uPnL) equals its MM (liquidation) or 0 (bankruptcy); for a cross position the account's
    equity equals its liquidation requirement (the liquidation balance + uPnL = MM
    condition, in reporting currency) or 0."""
    result = scenario.revalue()
    for row in repriceable_rows(scenario):
        price = float(result.positions[column][row])
        if math.isnan(price):
            continue
        perp = perp_of(scenario, row)
        prices = {**scenario.prices, perp.symbol: price}
        moved = scenario.revalue(prices)
        margin = scenario.positions["isolated_margin"][row]
        if math.isnan(margin):
            i = scenario.accounts["account_id"].index(scenario.positions["account_id"][row])
            balance = float(moved.accounts["equity"][i])
            target = (
                float(moved.accounts["liquidation_requirement"][i])
                if column == "liquidation_price"
                else 0.0
            )
            scale = account_scales(scenario, prices)[scenario.accounts["account_id"][i]]
        else:
            balance = margin + float(moved.positions["upnl"][row])
            target = (
                float(moved.positions["maintenance_margin"][row])
                if column == "liquidation_price"
                else 0.0
            )
            scale = position_scale(scenario, row, prices)
        assert abs(balance - target) <= REL * scale, (row, column, price, balance, target, scale)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_liquidation_price_puts_the_position_at_maintenance(scenario: Scenario) -> None:
    assert_balance_at_price(scenario, "liquidation_price")


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_bankruptcy_price_zeroes_the_balance(scenario: Scenario) -> None:
    assert_balance_at_price(scenario, "bankruptcy_price")


# -- 5. the scalar calculator agrees with the reference solver -------------------------------


@st.composite
def scalar_positions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["linear", "inverse"]))
    contract_size = draw(st.sampled_from([0.001, 1.0, 100.0]))
    entry = draw(log_uniform(1.0, 1e5))
    qty = draw(log_uniform(1e-2, 1e4)) * draw(st.sampled_from([1.0, -1.0]))
    size = ref.notional(kind, contract_size, qty, entry)
    case: dict[str, Any] = {
        "kind": kind,
        "contract_size": contract_size,
        "qty": qty,
        "entry_price": entry,
        "balance": size * draw(unit(-1.0, 2.0)),
        "other_maintenance": draw(st.sampled_from([0.0, size * draw(unit(0.0, 0.5))])),
        "other_upnl": draw(st.sampled_from([0.0, size * draw(unit(-0.5, 0.5))])),
    }
    if draw(st.booleans()):
        case["tiers"] = [(t.floor, t.mmr, t.max_leverage) for t in draw(margin_tier_tables(size))]
    else:
        # A bracket of a real table: its rate with its derived maintenance amount.
        tiers = draw(margin_tier_tables(size))
        k = draw(st.integers(0, len(tiers) - 1))
        case["mmr"] = tiers[k].mmr
        case["maintenance_amount"] = ref.maintenance_amounts(
            [(t.floor, t.mmr, t.max_leverage) for t in tiers]
        )[k]
    return case


def reference_inputs(case: dict[str, Any]) -> tuple[tuple[Any, ...], list[float] | None]:
    """The reference solver's arguments (less ``cums``) and its ``cums`` for ``case``."""
    balance = case["balance"] - case["other_maintenance"] + case["other_upnl"]
    if "tiers" in case:
        tiers, cums = case["tiers"], None
    else:
        tiers, cums = [(0.0, case["mmr"], math.inf)], [case["maintenance_amount"]]
    position = (case["kind"], case["contract_size"], case["qty"], case["entry_price"])
    return (*position, balance, tiers), cums


@settings(max_examples=1000, deadline=None)
@given(scalar_positions())
def test_calc_liquidation_price_agrees_with_reference(case: dict[str, Any]) -> None:
    args, cums = reference_inputs(case)
    actual = vm.calc.liquidation_price(**case)
    expected = ref.liquidation_price(*args, cums)
    actual_f = math.nan if actual is None else actual
    expected_f = math.nan if expected is None else expected
    if close(actual_f, expected_f):
        return
    # Badly conditioned (the balance nearly cancels the entry value): both must be roots.
    for price in (actual_f, expected_f):
        if not math.isnan(price):
            gap, gross = ref.margin_gap(*args, price, cums)
            assert abs(gap) <= REL * gross, (case, actual, expected, gap)
    assert math.isnan(actual_f) == math.isnan(expected_f), (case, actual, expected)


# -- a book larger than the kernels' parallel chunks -----------------------------------------


def large_scenario(seed: int, n_accounts: int = 9000) -> Scenario:
    """More accounts than the account pass's chunk (2 048) and more positions than the
    position passes' chunk (16 384), rows interleaved across accounts."""
    rng = random.Random(seed)
    config = vm.RiskConfig.hk_default()
    prices = {a.symbol: 1.0 for a in config.assets}
    prices.update(BTC=rng.uniform(2e4, 1e5), ETH=rng.uniform(1e3, 5e3), HKD=0.128, USDT=1.0)
    for perp in config.perpetuals:
        prices[perp.symbol] = prices[perp.base] * rng.uniform(0.98, 1.02)
    ids = rng.sample(range(-(10**9), 10**9), n_accounts)
    accounts: dict[str, list[Any]] = {name: [] for name in ACCOUNT_DTYPES}
    holdings: dict[str, list[Any]] = {name: [] for name in HOLDING_DTYPES}
    positions: dict[str, list[Any]] = {name: [] for name in POSITION_DTYPES}
    for account_id in ids:
        approved = rng.random() < 0.5
        accounts["account_id"].append(account_id)
        accounts["investor_class"].append(rng.choice(vm.INVESTOR_CLASSES))
        accounts["affiliate_market_maker"].append(rng.random() < 0.1)
        accounts["credit_limit"].append(rng.choice([math.inf, rng.uniform(0.0, 1e6)]))
        accounts["margin_client"].append(approved)
        accounts["credit_approved"].append(approved)
        for asset in rng.sample(config.assets, rng.randint(0, 3)):
            value = rng.uniform(0.0, 1e6)
            if asset.borrowable and approved and rng.random() < 0.5:
                value = -value * 0.3
            holdings["account_id"].append(account_id)
            holdings["asset"].append(asset.symbol)
            holdings["amount"].append(value / prices[asset.symbol])
        keys = [(perp, isolated) for perp in config.perpetuals for isolated in (False, True)]
        for perp, isolated in rng.sample(keys, rng.randint(0, len(keys))):
            mark = prices[perp.symbol]
            units = rng.choice([0.0, rng.uniform(-20.0, 20.0)])
            qty = units / perp.contract_size * (mark if perp.kind == "inverse" else 1.0)
            entry = mark * rng.uniform(0.8, 1.25)
            size = ref.notional(perp.kind, perp.contract_size, qty, entry)
            positions["account_id"].append(account_id)
            positions["instrument"].append(perp.symbol)
            positions["qty"].append(qty)
            positions["entry_price"].append(entry)
            positions["isolated_margin"].append(
                size * rng.uniform(0, 0.3) if isolated else math.nan
            )
            positions["leverage"].append(rng.choice([math.nan, rng.uniform(1.0, 100.0)]))
    holding_order = list(range(len(holdings["amount"])))
    position_order = list(range(len(positions["qty"])))
    rng.shuffle(holding_order)
    rng.shuffle(position_order)
    return Scenario(
        config,
        accounts,
        _reorder(holdings, holding_order),
        _reorder(positions, position_order),
        prices,
    )


def test_large_book_equals_reference() -> None:
    scenario = large_scenario(seed=20260214)
    assert len(scenario.accounts["account_id"]) > 2 * 2048
    assert len(scenario.positions["qty"]) > 2 * 16384
    assert_matches_reference(scenario)


# -- fixed examples ---------------------------------------------------------------------------


def test_spec_worked_example() -> None:
    """SPEC §6: cash −15 000, stock A 5 000 (30%/25%), stock B 19 500 (50%/45%) → equity
    9 500, initial 11 250, maintenance 10 025, margin_call, call 1 750 (reference and
    engine). The example gives no liquidation haircuts; with the config default (= the
    maintenance one) the status would be liquidation, so lower ones are set here."""
    config = vm.RiskConfig(
        assets=(
            vm.AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True),
            vm.AssetSpec("A", "security", 0.01, eligible=True, initial_haircut=0.30,
                         maintenance_haircut=0.25, liquidation_haircut=0.20),
            vm.AssetSpec("B", "security", 0.01, eligible=True, initial_haircut=0.50,
                         maintenance_haircut=0.45, liquidation_haircut=0.40),
        )
    )  # fmt: skip
    scenario = Scenario(
        config,
        accounts={
            "account_id": [7],
            "investor_class": ["retail"],
            "affiliate_market_maker": [False],
            "credit_limit": [math.inf],
            "margin_client": [True],
            "credit_approved": [True],
        },
        holdings={
            "account_id": [7, 7, 7],
            "asset": ["USD", "A", "B"],
            "amount": [-15_000.0, 50.0, 195.0],
        },
        positions={name: [] for name in POSITION_DTYPES},
        prices={"USD": 1.0, "A": 100.0, "B": 100.0},
    )
    expected = scenario.reference().accounts
    assert expected["equity"] == [9_500.0]
    assert expected["initial_requirement"] == [11_250.0]
    assert expected["maintenance_requirement"] == [10_025.0]
    assert expected["status"] == ["margin_call"]
    assert expected["call_amount"] == [1_750.0]
    assert_matches_reference(scenario)


@pytest.mark.parametrize("kind", ["linear", "inverse"])
def test_notional_on_a_floor_takes_the_upper_bracket(kind: str) -> None:
    # linear: 1 contract × 1 × 1 000 = 1 000; inverse: 10 contracts × 100 / 1 000 = 1 coin.
    floor = 1_000.0 if kind == "linear" else 1.0
    settle = "USD" if kind == "linear" else "BTC"
    perp = vm.PerpetualSpec(
        symbol="X",
        kind=kind,
        base="BTC",
        settle=settle,
        contract_size=1.0 if kind == "linear" else 100.0,
        tiers=(vm.MarginTier(0.0, 0.01, 50.0), vm.MarginTier(floor, 0.02, 25.0)),
    )
    config = vm.RiskConfig(
        assets=(
            vm.AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True),
            vm.AssetSpec("BTC", "va", 1e-8),
        ),
        perpetuals=(perp,),
    )
    qty = 1.0 if kind == "linear" else 10.0
    scenario = Scenario(
        config,
        accounts={
            "account_id": [1],
            "investor_class": ["corporate_pi"],
            "credit_limit": [math.inf],
        },
        holdings={"account_id": [1], "asset": ["USD"], "amount": [100.0]},
        positions={
            "account_id": [1, 1],
            "instrument": ["X", "X"],
            "qty": [qty, -qty],
            "entry_price": [1_000.0, 1_000.0],
            "isolated_margin": [math.nan, floor * 0.05],
            "leverage": [math.nan, 10.0],
        },
        prices={"USD": 1.0, "BTC": 1_000.0, "X": 1_000.0},
    )
    assert scenario.revalue().positions["tier"].tolist() == [2, 2]
    assert_matches_reference(scenario)


# -- regressions for engine bugs these tests found ------------------------------------------


def _one_account_book(holdings: dict[str, list[Any]], positions: dict[str, list[Any]]) -> vm.Book:
    accounts = {"account_id": [1], "investor_class": ["institutional_pi"]}
    return make_book(accounts, holdings, positions)


def test_empty_inverse_row_with_zero_entry_price_is_ignored() -> None:
    """Regression (found by the reference comparison, fixed in e5558c7): an empty row of an
    inverse perpetual with entry_price 0, which Book accepts, got uPnL 0·(1/0 − 1/P) = NaN
    and made its account's equity NaN while the status stayed 'normal'."""
    config = vm.RiskConfig.hk_default()
    inverse = next(p.symbol for p in config.perpetuals if p.kind == "inverse")
    book = _one_account_book(
        {"account_id": [1], "asset": ["USD"], "amount": [1000.0]},
        {"account_id": [1], "instrument": [inverse], "qty": [0.0], "entry_price": [0.0]},
    )
    prices = {"USD": 1.0, "BTC": 60_000.0, "ETH": 3_000.0, inverse: 60_000.0}
    result = vm.RiskEngine(config).revalue(book, prices)
    assert result.positions["upnl"][0] == 0.0
    assert result.accounts["equity"][0] == 1000.0


def test_fixed_rate_liquidation_price_counts_the_maintenance_amount() -> None:
    """Regression: with mmr= and maintenance_amount= the solver ruled out a root from the
    balance at P → 0 as if MM were 0 there; it is −maintenance_amount."""
    # A cross short whose other positions' maintenance (61 000) exceeds its wallet (1 000)
    # by the entry value: margin balance 1 000 − 61 000 − (L − 60 000) meets
    # MM = 0.005·L − 50 at L = 50 / 1.005.
    case = {
        "qty": -1.0,
        "entry_price": 60_000.0,
        "balance": 1_000.0,
        "mmr": 0.005,
        "maintenance_amount": 50.0,
        "other_maintenance": 61_000.0,
        "other_upnl": 0.0,
        "kind": "linear",
        "contract_size": 1.0,
    }
    args, cums = reference_inputs(case)
    expected = ref.liquidation_price(*args, cums)
    assert expected is not None
    gap, gross = ref.margin_gap(*args, expected, cums)
    assert abs(gap) <= REL * gross
    actual = vm.calc.liquidation_price(**case)
    assert actual is not None
    assert close(actual, expected)


def test_row_order_within_an_account_changes_no_bit() -> None:
    """Each account's rows are summed in key order (asset; instrument and margin mode),
    so even 0.1 + 0.2 + 0.3 comes out bitwise the same whatever the input order."""
    config = vm.RiskConfig.hk_default()
    prices = {"USD": 1.0, "HKD": 1.0, "USDT": 1.0}
    amounts = {"USD": 0.1, "HKD": 0.2, "USDT": 0.3}
    equities = []
    for order in (["USD", "HKD", "USDT"], ["USDT", "HKD", "USD"]):
        holdings = {"account_id": [1, 1, 1], "asset": order, "amount": [amounts[a] for a in order]}
        book = _one_account_book(
            holdings, {k: [] for k in ("account_id", "instrument", "qty", "entry_price")}
        )
        equities.append(bits(vm.RiskEngine(config).revalue(book, prices).accounts["equity"][0]))
    assert equities[0] == equities[1]
