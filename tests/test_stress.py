"""Stress testing (SPEC §9): hand-derived totals, the shipped sets, agreement with the slow
reference on random books, agreement with ``revalue`` at the moved prices, and errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
import vamargin as vm
from test_properties import Scenario, near, scenarios
from vamargin import scenarios as sc
from vamargin.config import AssetSpec, MarginTier, PerpetualSpec, RiskConfig
from vamargin.synthetic import synthetic_book

# -- a book small enough to value on paper ---------------------------------------------------


def _paper_config() -> RiskConfig:
    return RiskConfig(
        assets=(
            AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True),
            AssetSpec("USDT", "stablecoin", 1e-6, eligible=True),
            AssetSpec(
                "BTC",
                "va",
                1e-8,
                eligible=True,
                initial_haircut=0.60,
                maintenance_haircut=0.50,
                liquidation_haircut=0.40,
            ),
        ),
        perpetuals=(
            PerpetualSpec(
                "BTC-USDT-PERP",
                "linear",
                "BTC",
                "USDT",
                1.0,
                (MarginTier(0.0, 0.01, 50.0),),
                quote="USDT",
            ),
        ),
        reporting_currency="USD",
    )


PAPER_PRICES = {"USD": 1.0, "USDT": 1.0, "BTC": 100_000.0, "BTC-USDT-PERP": 100_000.0}


def _paper_book() -> vm.Book:
    """Account 1 borrows 40 000 USD against 1 BTC (exactly at the 60% haircut limit);
    account 2 is long 1 BTC perpetual (cross) on 10 000 USDT; account 3 is short 1 BTC
    perpetual isolated with 10 000 USDT of margin and holds 1 000 USD."""
    return vm.Book(
        accounts={
            "account_id": np.array([1, 2, 3]),
            "investor_class": np.array(["individual_pi"] * 3),
            "margin_client": np.array([True, False, False]),
            "credit_approved": np.array([True, False, False]),
        },
        holdings={
            "account_id": np.array([1, 1, 2, 3]),
            "asset": np.array(["BTC", "USD", "USDT", "USD"]),
            "amount": np.array([1.0, -40_000.0, 10_000.0, 1_000.0]),
        },
        positions={
            "account_id": np.array([2, 3]),
            "instrument": np.array(["BTC-USDT-PERP"] * 2),
            "qty": np.array([1.0, -1.0]),
            "entry_price": np.array([100_000.0, 100_000.0]),
            "isolated_margin": np.array([np.nan, 10_000.0]),
        },
    )


PAPER_SCENARIOS = {
    "down 5%": {"BTC": -0.05},
    "SMF 30% fall": {"BTC": -0.30},
    "SMF 50% fall": {"BTC": -0.50},
    "down 70%": {"BTC": -0.70},
    "up 20%": {"BTC": 0.20},
}


def test_paper_book_under_each_scenario() -> None:
    """Worked by hand. BTC at P: account 1 has equity P − 40 000 against requirements
    0.6P / 0.5P / 0.4P (initial / maintenance / liquidation) and is called to initial;
    account 2 has equity 10 000 + (P − 100 000) against MM 1% and IM 2% of P; account 3's
    isolated short has balance 10 000 − (P − 100 000) against MM 1% of P.

    - down 5% (P 95 000): 1 has 55 000 < IM 57 000 → restricted; 2 has 5 000 ≥ IM 1 900.
    - 30% (70 000): 1 has 30 000 in [28 000, 35 000) → margin call for 42 000 − 30 000 =
      12 000; 2 has −20 000 → liquidation, call 1 400 + 20 000 = 21 400, and its 20 000
      shortfall is the insurance fund's (it holds perpetuals).
    - 50% (50 000): 1 has 10 000 < 20 000 → liquidation, call 30 000 − 10 000 = 20 000;
      2 has −40 000, call 41 000.
    - 70% (30 000): 1 has −10 000 → liquidation, call 18 000 + 10 000 = 28 000, and the
      10 000 is the broker's loss (a margin loan, no perpetuals); 2: −60 000, call 60 600.
    - up 20% (120 000): everyone normal, but 3's isolated balance is −10 000 < MM 1 200:
      one isolated liquidation and a 10 000 insurance draw.
    """
    engine = vm.RiskEngine(_paper_config())
    result = engine.stress(
        _paper_book(), PAPER_PRICES, PAPER_SCENARIOS, excess_liquid_capital=5_000.0
    )
    assert result.columns == [
        "scenario", "normal", "restricted", "margin_call", "liquidation",
        "isolated_liquidations", "call_amount", "uncovered_loss", "insurance_draw",
        "broker_loss", "capital_shortfall",
    ]  # fmt: skip
    expected = {
        # normal, restricted, margin_call, liquidation, isolated, call, insurance, broker
        "down 5%": (2, 1, 0, 0, 0, 0.0, 0.0, 0.0),
        "SMF 30% fall": (1, 0, 1, 1, 0, 33_400.0, 20_000.0, 0.0),
        "SMF 50% fall": (1, 0, 0, 2, 0, 61_000.0, 40_000.0, 0.0),
        "down 70%": (1, 0, 0, 2, 0, 88_600.0, 60_000.0, 10_000.0),
        "up 20%": (3, 0, 0, 0, 1, 0.0, 10_000.0, 0.0),
    }
    assert result["scenario"].tolist() == list(expected)
    for row, (name, figures) in enumerate(expected.items()):
        normal, restricted, called, liquidated, isolated, call, insurance, broker = figures
        got = result.row(row)
        assert (
            got["normal"],
            got["restricted"],
            got["margin_call"],
            got["liquidation"],
            got["isolated_liquidations"],
        ) == (normal, restricted, called, liquidated, isolated), name
        assert got["call_amount"] == pytest.approx(call, abs=1e-6), name
        assert got["insurance_draw"] == pytest.approx(insurance, abs=1e-6), name
        assert got["broker_loss"] == pytest.approx(broker, abs=1e-6), name
        assert got["uncovered_loss"] == pytest.approx(insurance + broker, abs=1e-6), name
        assert got["capital_shortfall"] == pytest.approx(max(0.0, broker - 5_000.0)), name


def test_marks_move_with_base_and_against_quote() -> None:
    """A 10% USDT depeg, BTC unchanged in USD: the BTC-USDT mark rises to 100 000 / 0.9,
    so account 2's uPnL is 11 111.11 USDT = 10 000 USD and its 10 000 USDT are worth
    9 000 USD: equity 19 000. Naming the instrument moves its mark alone: at −10%
    account 2 has 10 000 − 10 000 = 0 < MM 900 → liquidation, account 1 is untouched."""
    engine = vm.RiskEngine(_paper_config())
    moves = {"depeg": {"USDT": -0.10}, "mark only": {"BTC-USDT-PERP": -0.10}}
    equity = engine.stress_equity(_paper_book(), PAPER_PRICES, moves, worst=3)
    by_account = {
        int(a): (float(d), float(m))
        for a, d, m in zip(equity["account_id"], equity["depeg"], equity["mark only"], strict=True)
    }
    assert by_account[2][0] == pytest.approx(19_000.0, rel=1e-12)
    assert by_account[2][1] == pytest.approx(0.0, abs=1e-9)
    assert by_account[1] == (60_000.0, 60_000.0)
    assert by_account[3] == (1_000.0, 1_000.0)
    totals = engine.stress(_paper_book(), PAPER_PRICES, moves)
    assert totals.row(1)["liquidation"] == 1
    assert totals.row(1)["normal"] == 2


def test_worst_accounts_are_ordered_by_their_lowest_equity() -> None:
    engine = vm.RiskEngine(_paper_config())
    table = engine.stress_equity(_paper_book(), PAPER_PRICES, PAPER_SCENARIOS, worst=2)
    assert table.columns == ["account_id", "min_equity", *PAPER_SCENARIOS]
    # Lowest equities: account 2 −60 000 (down 70%), account 1 −10 000 (down 70%).
    assert table["account_id"].tolist() == [2, 1]
    assert table["min_equity"].tolist() == pytest.approx([-60_000.0, -10_000.0])
    assert table["SMF 30% fall"].tolist() == pytest.approx([-20_000.0, 30_000.0])
    assert table["up 20%"].tolist() == pytest.approx([30_000.0, 80_000.0])
    assert len(engine.stress_equity(_paper_book(), PAPER_PRICES, PAPER_SCENARIOS, worst=0)) == 0


# -- the shipped sets ------------------------------------------------------------------------


def test_shipped_sets() -> None:
    assert sc.smf_falls() == {
        "SMF 30% fall": {"BTC": -0.30, "ETH": -0.30},
        "SMF 50% fall": {"BTC": -0.50, "ETH": -0.50},
    }
    assert sc.weekend_gap()["weekend gap up"] == {"BTC": 0.15, "ETH": 0.20}
    assert all(m["ETH"] < m["BTC"] < 0 for m in sc.joint_fall().values())
    shocks = sc.grid_shocks()
    assert len(shocks) == 37
    assert next(iter(shocks.items())) == ("grid -90%", -0.9)
    assert shocks["grid +0%"] == 0.0
    assert list(shocks.items())[-1] == ("grid +90%", 0.9)
    assert sc.grid()["grid -35%"] == {"BTC": -0.35, "ETH": -0.35}
    standard = sc.standard()
    assert len(standard) == 2 + 3 + 2 + 37
    assert list(standard)[:2] == ["SMF 30% fall", "SMF 50% fall"]
    assert {name: sc.load(name) for name in ("smf", "grid")} == {
        "smf": sc.smf_falls(),
        "grid": sc.grid(),
    }


def test_standard_sets_run_on_the_default_profile_and_zero_shock_is_revalue() -> None:
    synthetic = synthetic_book(n_accounts=2_000, seed=5)
    book = vm.Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    engine = vm.RiskEngine()
    table = engine.stress(book, synthetic.prices, "standard")
    assert len(table) == 44
    base = engine.revalue(book, synthetic.prices)
    zero = table.row(table["scenario"].tolist().index("grid +0%"))
    counts = np.bincount(base.accounts.codes("status").codes, minlength=4)
    assert [zero[s] for s in vm.STATUSES] == counts.tolist()
    queue = engine.liquidation_queue(book, synthetic.prices)
    assert zero["isolated_liquidations"] == int((queue["scope"] == "isolated").sum())
    # The deeper the fall, the more accounts in liquidation and the larger the loss.
    names = table["scenario"].tolist()
    falls = [table.row(names.index(n)) for n, shock in sc.grid_shocks().items() if shock < 0]
    liquidations = [r["liquidation"] for r in falls]
    losses = [r["uncovered_loss"] for r in falls]
    assert liquidations == sorted(liquidations, reverse=True)
    assert losses == sorted(losses, reverse=True)
    assert liquidations[0] > zero["liquidation"]


# -- agreement with revalue at the moved prices and with the slow reference -----------------


def moved_prices(
    config: RiskConfig, prices: dict[str, float], moves: dict[str, float]
) -> dict[str, float]:
    """The scenario's prices, computed independently of vamargin.scenarios."""
    out = {symbol: price * (1.0 + moves.get(symbol, 0.0)) for symbol, price in prices.items()}
    for perp in config.perpetuals:
        if perp.symbol not in prices:
            continue
        factor = 1.0 + moves.get(perp.base, 0.0)
        if perp.quote is not None:
            factor /= 1.0 + moves.get(perp.quote, 0.0)
        out[perp.symbol] = prices[perp.symbol] * factor
    return out


def test_each_scenario_equals_revalue_at_its_prices() -> None:
    synthetic = synthetic_book(n_accounts=3_000, seed=21, shuffle_positions=True)
    book = vm.Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    engine = vm.RiskEngine()
    chosen = {**sc.smf_falls(), **sc.weekend_gap(), "USDT depeg": {"USDT": -0.08, "BTC": -0.1}}
    table = engine.stress(book, synthetic.prices, chosen)
    worst = engine.stress_equity(book, synthetic.prices, chosen, worst=25)
    for row, (name, moves) in enumerate(chosen.items()):
        at = engine.revalue(book, moved_prices(engine.config, synthetic.prices, moves))
        accounts = at.accounts
        counts = np.bincount(accounts.codes("status").codes, minlength=4)
        got = table.row(row)
        assert [got[s] for s in vm.STATUSES] == counts.tolist(), name
        assert got["call_amount"] == pytest.approx(accounts["call_amount"].sum(), rel=1e-12)
        equity = accounts["equity"]
        by_id = dict(zip(accounts["account_id"].tolist(), equity.tolist(), strict=True))
        # Worst accounts: their equities are revalue's, bit for bit.
        assert worst[name].tolist() == [by_id[a] for a in worst["account_id"].tolist()]
        assert got["uncovered_loss"] >= got["broker_loss"] >= 0.0
    lowest = worst["min_equity"]
    assert np.all(np.diff(lowest) >= 0)


def too_close(x: float, y: float) -> bool:
    """Whether ``x < y`` could go either way in the last bits (exact zeros cannot)."""
    return near(x, y) and not (x == 0.0 and y == 0.0)


def reference_stress(
    config: RiskConfig, case: Scenario, moves: dict[str, float]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Totals from the slow reference at the moved prices, and the slack rounding allows:
    ``count`` accounts or isolated positions sit within rounding of a threshold (their
    status may go either way) and ``call`` is the most their calls could change."""
    prices = moved_prices(config, case.prices, moves)
    result = ref.revalue(config, case.accounts, case.holdings, case.positions, prices)
    perps = {p.symbol: p for p in config.perpetuals}
    totals: dict[str, Any] = dict.fromkeys(vm.STATUSES, 0)
    totals.update(isolated_liquidations=0, call_amount=0.0, insurance_draw=0.0, broker_loss=0.0)
    slack = {"count": 0.0, "call": 0.0}
    positions = case.positions
    holds_cross = {
        int(a)
        for a, q, m in zip(
            positions["account_id"], positions["qty"], positions["isolated_margin"], strict=True
        )
        if q != 0 and math.isnan(m)
    }
    for i, account in enumerate(result.accounts["account_id"]):
        figures = {name: result.accounts[name][i] for name in ref.ACCOUNT_COLUMNS}
        equity = figures["equity"]
        requirements = [
            figures[name]
            for name in (
                "liquidation_requirement",
                "maintenance_requirement",
                "initial_requirement",
            )
        ]
        credit_limit = case.accounts["credit_limit"][i]
        if any(too_close(equity, r) for r in requirements) or too_close(
            figures["debit"], credit_limit
        ):
            slack["count"] += 1
            slack["call"] += max(0.0, *(r - equity for r in requirements))
        totals[figures["status"]] += 1
        totals["call_amount"] += figures["call_amount"]
        shortfall = max(0.0, -equity)
        totals["insurance_draw" if account in holds_cross else "broker_loss"] += shortfall
    for row in range(len(positions["qty"])):
        margin = positions["isolated_margin"][row]
        if math.isnan(margin) or positions["qty"][row] == 0:
            continue
        balance = margin + result.positions["upnl"][row]
        maintenance = result.positions["maintenance_margin"][row]
        slack["count"] += too_close(balance, maintenance)
        if balance < maintenance:
            totals["isolated_liquidations"] += 1
        if balance < 0:
            totals["insurance_draw"] -= balance * prices[perps[positions["instrument"][row]].settle]
    return totals, slack


@st.composite
def stressed_books(draw: st.DrawFn) -> tuple[Scenario, dict[str, dict[str, float]]]:
    case = draw(scenarios())
    # Every asset of the config (an unpriced one is unused by the book: moving it is a no-op).
    symbols = [a.symbol for a in case.config.assets]
    move = st.floats(-0.95, 1.5, allow_nan=False)
    sets = draw(
        st.lists(
            st.dictionaries(st.sampled_from(symbols), move, min_size=1, max_size=len(symbols)),
            min_size=1,
            max_size=4,
        )
    )
    return case, {f"s{k}": moves for k, moves in enumerate(sets)}


def gross_size(case: Scenario, moves: dict[str, float]) -> float:
    """A money scale for tolerances: the book's gross value at the moved prices."""
    prices = moved_prices(case.config, case.prices, moves)
    held = sum(
        abs(v) * prices[a]
        for a, v in zip(case.holdings["asset"], case.holdings["amount"], strict=True)
    )
    perps = {p.symbol: p for p in case.config.perpetuals}
    traded = 0.0
    for symbol, qty, entry, margin in zip(
        case.positions["instrument"],
        case.positions["qty"],
        case.positions["entry_price"],
        case.positions["isolated_margin"],
        strict=True,
    ):
        if qty == 0:
            continue
        perp = perps[symbol]
        px = prices[perp.settle]
        mark = prices[symbol]
        size = abs(qty) * perp.contract_size
        per_side = size * (mark + entry) if perp.kind == "linear" else size * (1 / mark + 1 / entry)
        traded += (per_side + (0.0 if math.isnan(margin) else abs(margin))) * px
    return held + traded + 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stressed_books())
def test_stress_equals_reference(
    case_and_moves: tuple[Scenario, dict[str, dict[str, float]]],
) -> None:
    case, chosen = case_and_moves
    table = vm.RiskEngine(case.config).stress(case.book(), case.prices, chosen)
    assert table["scenario"].tolist() == list(chosen)
    for row, moves in enumerate(chosen.values()):
        totals, slack = reference_stress(case.config, case, moves)
        got = table.row(row)
        assert sum(got[name] for name in vm.STATUSES) == len(case.accounts["account_id"])
        for name in (*vm.STATUSES, "isolated_liquidations"):
            assert abs(got[name] - totals[name]) <= slack["count"], (row, name, got, totals)
        tolerance = 1e-9 * gross_size(case, moves)
        for name in ("insurance_draw", "broker_loss"):
            assert math.isclose(got[name], totals[name], rel_tol=1e-9, abs_tol=tolerance), (
                row,
                name,
                got[name],
                totals[name],
            )
        assert abs(got["call_amount"] - totals["call_amount"]) <= tolerance + slack["call"]
        assert got["uncovered_loss"] == got["insurance_draw"] + got["broker_loss"]


# -- determinism -------------------------------------------------------------------------------

_THREADS_SCRIPT = """
import sys, numpy as np, vamargin as vm
from vamargin.synthetic import synthetic_book
s = synthetic_book(n_accounts=4_000, seed=3, shuffle_positions=True)
book = vm.Book(s.accounts, s.holdings, s.positions)
t = vm.RiskEngine().stress(book, s.prices, "standard")
sys.stdout.write(np.concatenate([t[c].astype(np.float64) for c in t.columns[1:]]).tobytes().hex())
"""


def test_stress_is_bitwise_identical_for_one_and_two_threads() -> None:
    outputs = []
    for threads in ("1", "2"):
        env = {**os.environ, "VAMARGIN_NUM_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > 1_000


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenarios", "message"),
    [
        ({"crash": {"BTCX": -0.3}}, "scenarios['crash']['BTCX']: not an asset or instrument"),
        ({"crash": {"BTC": -1.0}}, "scenarios['crash']['BTC']: move -1.0 must be finite and > -1"),
        ({"crash": {"BTC": float("nan")}}, "scenarios['crash']['BTC']: move nan"),
        ({"crash": {"BTC": "x"}}, "scenarios['crash']['BTC']: 'x' is not a number"),
        ({"crash": {"BTC": True}}, "scenarios['crash']['BTC']: True is not a number"),
        ({"crash": -0.3}, "scenarios['crash']: expected {asset: move}"),
        ({}, "scenarios: no scenario given"),
        ("nonsense", "scenarios: 'nonsense' is neither a shipped set"),
        (
            pa.table({"scenario": ["a", "a"], "asset": ["BTC", "BTC"], "move": [0.1, 0.2]}),
            "scenarios.asset row 1: BTC moved twice",
        ),
        (pa.table({"scenario": ["a"], "asset": ["BTC"]}), "scenarios: missing column 'move'"),
    ],
)
def test_bad_scenarios_are_named(scenarios: Any, message: str) -> None:
    engine = vm.RiskEngine(_paper_config())
    with pytest.raises(vm.DataError) as error:
        engine.stress(_paper_book(), PAPER_PRICES, scenarios)
    assert message in str(error.value)


def test_bad_arguments_are_named() -> None:
    engine = vm.RiskEngine(_paper_config())
    with pytest.raises(vm.DataError, match="excess_liquid_capital"):
        engine.stress(_paper_book(), PAPER_PRICES, "smf", excess_liquid_capital=float("nan"))
    with pytest.raises(vm.DataError, match="worst: -1"):
        engine.stress_equity(_paper_book(), PAPER_PRICES, PAPER_SCENARIOS, worst=-1)
    with pytest.raises(vm.DataError, match="prices: missing price for asset 'BTC'"):
        engine.stress(_paper_book(), {"USD": 1.0, "USDT": 1.0}, PAPER_SCENARIOS)


def test_scenario_files(tmp_path: Path) -> None:
    toml = tmp_path / "moves.toml"
    toml.write_text('["BTC crash"]\nBTC = -0.4\n\n["gap up"]\nBTC = 0.2\nUSDT = 0.01\n')
    assert sc.load(toml) == {"BTC crash": {"BTC": -0.4}, "gap up": {"BTC": 0.2, "USDT": 0.01}}
    csv = tmp_path / "moves.csv"
    csv.write_text("scenario,asset,move\nBTC crash,BTC,-0.4\ngap up,BTC,0.2\ngap up,USDT,0.01\n")
    assert sc.load(csv) == sc.load(toml)
    engine = vm.RiskEngine(_paper_config())
    from_file = engine.stress(_paper_book(), PAPER_PRICES, toml)
    assert from_file["scenario"].tolist() == ["BTC crash", "gap up"]
    bad = tmp_path / "bad.csv"
    bad.write_text("scenario,asset,move\nx,BTC,oops\n")
    with pytest.raises(vm.DataError, match=r"bad.csv: move row 0: 'oops' is not a number"):
        sc.load(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[x\n")
    with pytest.raises(vm.DataError, match=r"broken\.toml: not a readable scenario file"):
        sc.load(broken)


def test_progress_reports_every_slice_and_changes_no_number() -> None:
    synthetic = synthetic_book(n_accounts=1_500, seed=9)
    book = vm.Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    engine = vm.RiskEngine()
    whole = engine.stress(book, synthetic.prices, "standard", excess_liquid_capital=1e6)
    calls: list[tuple[int, int]] = []
    sliced = engine.stress(
        book,
        synthetic.prices,
        "standard",
        excess_liquid_capital=1e6,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert sliced.columns == whole.columns
    for name in whole.columns:
        assert sliced[name].tolist() == whole[name].tolist(), name
    # 44 scenarios in slices of 3 (at most 20 slices): 15 calls, the last at 44 of 44.
    assert len(calls) == 15
    assert calls[0] == (3, 44)
    assert calls[-1] == (44, 44)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
