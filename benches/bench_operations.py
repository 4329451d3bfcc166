"""Batch operations and pre-trade latency: vamargin beside vectorised numpy (and, for
funding, polars) peers.

    VAMARGIN_NUM_THREADS=2 pytest benches/bench_operations.py --benchmark-only
    VAMARGIN_BENCH_FULL=1 VAMARGIN_NUM_THREADS=2 pytest benches/bench_operations.py --benchmark-only

Operations (peers in ``operations_peers.py``; each benchmark group holds one operation at
one size, engine and peer side by side):

- ``funding``: ``engine.funding(book, rates, prices)`` at 1M positions (215 000 accounts)
  and, with ``VAMARGIN_BENCH_FULL=1``, 10M positions (2 150 000 accounts), each with the
  positions laid out by account and shuffled (the issue's targets are for books "not
  sorted by account"), against a numpy and a polars peer;
- ``liquidation_queue``, ``margin_calls``, ``firm_report``, and ``revalue`` as a
  reference for how much of them is revaluation: 200 000 accounts (~0.94M positions),
  or 1 000 000 accounts (~4.7M positions) with ``VAMARGIN_BENCH_FULL=1``;
- ``pretrade``: ``engine.pretrade(book, prices).check(...)`` on a 1M-position book
  (215 000 accounts): a plain loop of 20 000 timed calls (p50 / p99 printed), and the same
  calls as a pytest-benchmark with 20 000 rounds. The issue's target is p50 ≤ 20 µs; it is
  reported, not asserted (the machine is shared).

Cases per operation: ``vamargin`` end to end from the Arrow tables (``Book(...)``,
binding, the operation; funding and the firm report read only the tables their peers
read, ``JOB_TABLES``), ``vamargin-built`` (the operation on a Book already built and
bound, as intraday re-runs do) and ``numpy`` (the peer, end to end from the same Arrow
tables; funding also ``polars``), each in its own test; and ``paired``, which runs them
in turn every round (the peers and ``vamargin`` in pedantic's untimed setup, then the
timed ``vamargin-built``) so that load from other processes hits them all alike; the
paired test asserts the operation's ``e2e`` and ``built`` floors (``conftest.FLOORS``,
numpy ÷ vamargin, as the issue's CI gate asks) at the quick sizes, the shuffled ones
reported only. Books come from ``vamargin.synthetic.synthetic_book``, one in memory at a
time.

Correctness: before any peer is timed (``operations_checked``), and again as a plain test
without ``--benchmark-only``, each peer is compared with the engine on a 20 000-account
book, positions in account order and shuffled; after each peer's timing the same
comparison runs at the benchmark size. Floats agree within ``RTOL``; funding payments
within one minor unit (the peer floors float64 products, the engine is exact).

At the end of the session a summary prints each case's median and the ratios
``numpy / vamargin`` and ``better peer / vamargin`` (> 1: the engine is faster), from the
separate tests and from the alternating runs. ``VAMARGIN_OPS_JSON=path`` also writes it
as JSON.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import itertools
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import vamargin as vm
from conftest import FULL, SEED, SIZES, check_floor
from operations_peers import (
    numpy_firm_report,
    numpy_funding,
    numpy_liquidation_queue,
    numpy_margin_calls,
    polars_funding,
)
from peers import Params, numpy_revalue, params_of
from vamargin import _core
from vamargin.synthetic import synthetic_book

CONFIG = vm.RiskConfig.hk_default()
ENGINE = vm.RiskEngine(CONFIG)

RATES = {
    "BTC-USDT-PERP": 0.0001,
    "ETH-USDT-PERP": 0.0003,
    "BTC-USD-PERP": 0.000125,
    "ETH-USD-PERP": 0.00007,
}
"""One funding interval. 0.01% is the usual settled rate; the others are chosen so that
some exact per-contract amounts are whole minor units, where the float peer can be one
unit off (see ``operations_peers.funding_coefficients``)."""
AS_OF = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
CAPITAL_PER_ACCOUNT = 10_000.0
"""Firm capital scales with the book: loans / capital ≈ 2.2 on the synthetic book."""

FUNDING_SIZES = {"1M positions": SIZES["1M"], "10M positions": SIZES["10M"]}
OPS_SIZE, OPS_ACCOUNTS = ("1M accounts", 1_000_000) if FULL else ("200k accounts", 200_000)
PRETRADE_SIZE, PRETRADE_ACCOUNTS = "1M positions", SIZES["1M"]
PRETRADE_CALLS = 20_000
PRETRADE_TARGET_US = 20.0
CHECK_ACCOUNTS = 20_000
RTOL = 1e-9
IMPLS = ("vamargin", "vamargin-built", "numpy")
"""The cases of every operation; ``peers_of`` adds the polars peer where there is one."""
ORDERS = ("sorted", "shuffled")
"""Position row orders of the funding cases: laid out by account, and scattered."""


# -- workloads -------------------------------------------------------------------------------


class Workload:
    """One synthetic book: its Arrow tables, prices, peer parameters and a built Book."""

    def __init__(self, n_accounts: int, *, seed: int = SEED, shuffle: bool = False) -> None:
        book = synthetic_book(CONFIG, n_accounts=n_accounts, seed=seed, shuffle_positions=shuffle)
        self.n_accounts = n_accounts
        self.accounts: pa.Table = book.accounts
        self.holdings: pa.Table = book.holdings
        self.positions: pa.Table = book.positions
        self.prices = book.prices
        self.capital = CAPITAL_PER_ACCOUNT * n_accounts

    @property
    def arrow(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        return (self.accounts, self.holdings, self.positions)

    @cached_property
    def params(self) -> Params:
        return params_of(CONFIG, self.prices)

    @cached_property
    def built(self) -> vm.Book:
        """Validated and bound to the config (what every later engine call reuses)."""
        book = vm.Book(*self.arrow)
        book.bind(CONFIG)
        return book

    def describe(self) -> dict[str, object]:
        return {
            "accounts": self.accounts.num_rows,
            "holdings": self.holdings.num_rows,
            "positions": self.positions.num_rows,
            "vamargin_threads": _core.thread_count(),
        }


_LOADED: dict[tuple[int, bool], Workload] = {}


def workload_of(n_accounts: int, shuffle: bool = False) -> Workload:
    """The benchmark book of ``n_accounts``, positions shuffled or not (only one book is
    held at a time)."""
    key = (n_accounts, shuffle)
    if key not in _LOADED:
        _LOADED.clear()
        gc.collect()
        _LOADED[key] = Workload(n_accounts, shuffle=shuffle)
    return _LOADED[key]


ENGINE_OPS: dict[str, Callable[[vm.Book, Workload], Any]] = {
    "funding": lambda book, w: ENGINE.funding(book, RATES, w.prices),
    "liquidation_queue": lambda book, w: ENGINE.liquidation_queue(book, w.prices),
    "margin_calls": lambda book, w: ENGINE.margin_calls(book, w.prices, AS_OF),
    "firm_report": lambda book, w: ENGINE.firm_report(book, w.prices, capital=w.capital),
    "revalue": lambda book, w: ENGINE.revalue(book, w.prices),
}
PEER_OPS: dict[str, Callable[[Workload], Any]] = {
    "funding": lambda w: numpy_funding(CONFIG, w.accounts, w.positions, RATES, w.prices),
    "liquidation_queue": lambda w: numpy_liquidation_queue(CONFIG, *w.arrow, w.prices, w.params),
    "margin_calls": lambda w: numpy_margin_calls(CONFIG, *w.arrow, w.prices, AS_OF, w.params),
    "firm_report": lambda w: numpy_firm_report(
        CONFIG, w.accounts, w.holdings, w.prices, capital=w.capital
    ),
    "revalue": lambda w: numpy_revalue(CONFIG, *w.arrow, w.prices, w.params),
}
POLARS_OPS: dict[str, Callable[[Workload], Any]] = {
    "funding": lambda w: polars_funding(CONFIG, w.accounts, w.positions, RATES, w.prices),
}
"""Operations with a polars peer too (revaluation's is in ``bench_revalue.py``)."""


def peers_of(op: str) -> tuple[str, ...]:
    return ("numpy", "polars") if op in POLARS_OPS else ("numpy",)


def impls_of(op: str) -> tuple[str, ...]:
    return ("vamargin", "vamargin-built", *peers_of(op))


JOB_TABLES: dict[str, tuple[str, ...]] = {
    "funding": ("accounts", "positions"),
    "firm_report": ("accounts", "holdings"),
}
"""The tables a job reads, where it does not need all three: its numpy peer reads only
these, and so does the engine's end-to-end case (``vm.Book`` takes the others as empty),
as a caller running only that job would. Every other job reads all three."""


def e2e_book(op: str, w: Workload) -> vm.Book:
    """``vm.Book`` of the tables ``op`` reads, from the workload's Arrow tables."""
    names = JOB_TABLES.get(op, ("accounts", "holdings", "positions"))
    return vm.Book(**{name: getattr(w, name) for name in names})


def runner(op: str, impl: str, w: Workload) -> Callable[[], Any]:
    if impl == "vamargin":
        return lambda: ENGINE_OPS[op](e2e_book(op, w), w)
    if impl == "vamargin-built":
        book = w.built
        return lambda: ENGINE_OPS[op](book, w)
    if impl == "numpy":
        return lambda: PEER_OPS[op](w)
    if impl == "polars":
        return lambda: POLARS_OPS[op](w)
    raise ValueError(impl)


# -- comparing peers with the engine ---------------------------------------------------------


def _close(have: np.ndarray, want: np.ndarray, where: str) -> None:
    assert have.shape == want.shape, f"{where}: {have.shape} vs {want.shape}"
    if want.dtype.kind == "f":
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=0.0, equal_nan=True, err_msg=where)
    else:
        np.testing.assert_array_equal(have, want, err_msg=where)


def compare_funding(engine: Any, peer: dict[str, Any], w: Workload) -> dict[str, Any]:
    """Payments within one minor unit; sums within one unit per row summed. Returns how
    many payments differ."""
    book = w.built
    bound = book.bind(CONFIG)
    n_assets = len(CONFIG.assets)
    diff = peer["payments"] - engine.payments
    assert np.abs(diff).max(initial=0) <= 1, "funding payments: more than one minor unit off"
    settle = np.array([CONFIG.asset_ids[p.settle] for p in CONFIG.perpetuals])
    key = book.position_account.astype(np.int64) * n_assets + settle[bound.position_instrument]
    rows_summed = np.bincount(key, minlength=book.n_accounts * n_assets)

    def dense(table: dict[str, np.ndarray], asset_codes: np.ndarray) -> np.ndarray:
        out = np.zeros(book.n_accounts * n_assets, dtype=np.int64)
        rows = np.searchsorted(book.account_id, table["account_id"])
        out[rows * n_assets + asset_codes] = table["amount"]
        return out

    by_engine = engine.by_account
    engine_dense = dense(
        {"account_id": by_engine["account_id"], "amount": by_engine["amount"]},
        by_engine.codes("asset").codes.astype(np.int64),
    )
    peer_dense = dense(peer["by_account"], peer["by_account"]["asset"])
    assert (np.abs(peer_dense - engine_dense) <= rows_summed).all(), "funding by_account"
    used = np.flatnonzero(bound.instruments_used)
    rows_per_instrument = np.bincount(bound.position_instrument, minlength=len(settle))[used]
    mine = peer["by_instrument"]
    for column in ("received", "paid", "dust"):
        gap = np.abs(mine[column][used] - engine.by_instrument[column])
        assert (gap <= rows_per_instrument + 1).all(), f"funding {column}"
    assert (np.abs(mine["house"][used] - engine.by_instrument["house"]) <= 1).all(), "house"
    total = mine["received"] + mine["paid"] + mine["house"] + mine["dust"]
    assert not total.any(), "peer postings do not balance"
    return {
        "payments": len(diff),
        "payments_off_by_one": int(np.count_nonzero(diff)),
        "by_account_rows_differing": int(np.count_nonzero(peer_dense != engine_dense)),
    }


def compare_queue(engine: Any, peer: dict[str, np.ndarray], w: Workload) -> dict[str, Any]:
    _close(peer["account_id"], engine["account_id"], "queue account_id (order)")
    _close(peer["position_row"], engine["position_row"], "queue position_row (order)")
    for column in ("health", "deficit", "insurance_draw"):
        _close(peer[column], engine[column], f"queue {column}")
    _close(peer["bankrupt"], engine["bankrupt"], "queue bankrupt")
    return {"entries": len(engine), "plan_steps": len(engine.plan)}


def compare_calls(engine: Any, peer: dict[str, np.ndarray], w: Workload) -> dict[str, Any]:
    assert engine.columns == list(peer), f"{engine.columns} vs {list(peer)}"
    for column in engine.columns:
        want = engine.codes(column).codes if column == "status" else engine[column]
        have = peer[column].astype(want.dtype) if column == "status" else peer[column]
        _close(have, want, f"margin_calls {column}")
    return {"calls": len(engine), "forced_sale_steps": len(engine.forced_sales)}


def compare_firm(engine: Any, peer: dict[str, Any], w: Workload) -> dict[str, Any]:
    for name in ("total_loans", "loans_to_capital", "va_share", "capital_uncovered"):
        _close(np.array(peer[name]), np.array(getattr(engine, name)), f"firm {name}")
    tables = ("top_clients", "top_groups", "collateral_by_asset", "by_group")
    for table in (t for t in tables if hasattr(engine, t)):  # top_groups: newer engines
        got, want = peer[table], getattr(engine, table)
        for column in want.columns:
            expected = want.codes(column).codes if column == "asset" else want[column]
            have = got[column]
            if column == "asset":
                have = have.astype(expected.dtype)
            _close(np.asarray(have), np.asarray(expected), f"firm {table}.{column}")
    breaches = engine.breaches
    expected = list(zip(breaches["rule"], breaches["subject"], strict=True))
    assert [(r, s) for r, s, _, _ in peer["breaches"]] == expected, "firm breaches"
    return {"breaches": len(breaches)}


def compare_revalue(engine: Any, peer: dict[str, Any], w: Workload) -> dict[str, Any]:
    for column in ("equity", "liquidation_requirement", "call_amount"):
        _close(peer["accounts"][column], engine.accounts[column], f"revalue {column}")
    return {}


COMPARE: dict[str, Callable[[Any, Any, Workload], dict[str, Any]]] = {
    "funding": compare_funding,
    "liquidation_queue": compare_queue,
    "margin_calls": compare_calls,
    "firm_report": compare_firm,
    "revalue": compare_revalue,
}


def check_all(w: Workload) -> dict[str, dict[str, Any]]:
    """Every peer against the engine on ``w``."""
    book = w.built
    found = {op: COMPARE[op](ENGINE_OPS[op](book, w), PEER_OPS[op](w), w) for op in COMPARE}
    for op, peer in POLARS_OPS.items():
        found[f"{op} (polars)"] = COMPARE[op](ENGINE_OPS[op](book, w), peer(w), w)
    return found


def _check_books() -> Iterator[tuple[str, Workload]]:
    for shuffle in (False, True):
        order = "shuffled" if shuffle else "sorted"
        yield order, Workload(CHECK_ACCOUNTS, seed=SEED + 1, shuffle=shuffle)


@functools.cache
def _checked() -> None:
    for order, w in _check_books():
        NOTES[f"check {CHECK_ACCOUNTS} accounts {order}"] = check_all(w)


@pytest.fixture(scope="session")
def operations_checked() -> None:
    """The peers give the engine's results on a 20 000-account book (both row orders),
    once per session."""
    _checked()


def test_operations_peers_match_engine() -> None:
    """Plain test (skipped under --benchmark-only, where ``operations_checked`` runs)."""
    for _, w in _check_books():
        check_all(w)


# -- summary ---------------------------------------------------------------------------------

MEDIANS: dict[tuple[str, str, str], float] = {}
"""(operation, size, impl) → median seconds in this run."""
MINS: dict[tuple[str, str, str], float] = {}
"""(operation, size, impl) → fastest round in this run (less sensitive to other load)."""
PAIRED: dict[tuple[str, str, str], float] = {}
"""(operation, size, impl) → median seconds when the three cases alternate round by round."""
_PRINTED: list[bool] = []
NOTES: dict[str, Any] = {}


def _summary_lines() -> list[str]:
    lines = [
        f"vamargin threads: {_core.thread_count()}; median seconds of each case's own test; "
        "np = numpy / vamargin, best = the faster peer (numpy or polars) / vamargin (> 1: "
        "engine faster); alternating: the ratios when the cases run in turn, round by round",
        f"{'operation':<18} {'size':<23} {'vamargin':>9} {'built':>9} {'numpy':>9} "
        f"{'polars':>9} {'np/e2e':>7} {'np/built':>8} {'best/e2e':>8} {'best/built':>10} | "
        f"{'alternating np/e2e':>18} {'np/built':>8} {'best/e2e':>8} {'best/built':>10}",
    ]
    cases = sorted({(op, size) for op, size, _ in MEDIANS}, key=lambda c: (c[1], c[0]))

    def peer_s(table: dict[tuple[str, str, str], float], op: str, size: str, peer: str) -> float:
        if peer == "best":
            found = [table[(op, size, p)] for p in peers_of(op) if (op, size, p) in table]
            return min(found, default=0.0)
        return table.get((op, size, peer), 0.0)

    def ratio(
        table: dict[tuple[str, str, str], float], op: str, size: str, peer: str, impl: str
    ) -> str:
        mine, engine = peer_s(table, op, size, peer), table.get((op, size, impl))
        return f"{mine / engine:6.2f}x" if mine and engine else f"{'-':>7}"

    for op, size in cases:
        cells = " ".join(
            f"{MEDIANS[(op, size, i)]:9.4f}" if (op, size, i) in MEDIANS else f"{'-':>9}"
            for i in (*IMPLS, "polars")
        )
        figures = [
            f"{ratio(table, op, size, peer, impl):>{width}}"
            for table in (MEDIANS, PAIRED)
            for peer, impl, width in (
                ("numpy", "vamargin", 7 if table is MEDIANS else 18),
                ("numpy", "vamargin-built", 8),
                ("best", "vamargin", 8),
                ("best", "vamargin-built", 10),
            )
        ]
        separate, alternating = " ".join(figures[:4]), " ".join(figures[4:])
        lines.append(f"{op:<18} {size:<23} {cells} {separate} | {alternating}")
    for key, value in NOTES.items():
        lines.append(f"{key}: {value}")
    return lines


@pytest.fixture(scope="session", autouse=True)
def operations_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints the medians and ratios of this module's cases when the session ends."""
    yield
    if (not MEDIANS and not NOTES) or _PRINTED:
        return
    _PRINTED.append(True)
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    # Teardown output is captured (and dropped for passing tests): write past the capture.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter is None:
            print("\n".join(_summary_lines()), file=sys.__stdout__)
        else:
            reporter.write_line("")
            reporter.write_sep("=", "vamargin operations: medians and ratios in this run")
            for line in _summary_lines():
                reporter.write_line(line)
    path = os.environ.get("VAMARGIN_OPS_JSON")
    if path:
        payload = {
            "medians": [
                {
                    "operation": op,
                    "size": size,
                    "impl": impl,
                    "median_s": median,
                    "min_s": MINS[(op, size, impl)],
                }
                for (op, size, impl), median in MEDIANS.items()
            ],
            "alternating": [
                {"operation": op, "size": size, "impl": impl, "median_s": median}
                for (op, size, impl), median in PAIRED.items()
            ],
            "notes": NOTES,
            "threads": _core.thread_count(),
            "full": FULL,
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, default=str)


# -- pre-trade latency -----------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    account_id: int
    instrument: str
    qty: float
    price: float


def _orders(w: Workload, n: int, seed: int = 11) -> list[Order]:
    """Orders on accounts drawn uniformly from the book (retail included: rejected, but
    only after the impact is computed), on every instrument, both sides, 1–50 contracts
    at a limit within ±0.2% of the mark."""
    rng = np.random.default_rng(seed)
    ids = w.accounts.column("account_id").to_numpy()
    symbols = [p.symbol for p in CONFIG.perpetuals]
    account = rng.choice(ids, size=n)
    instrument = rng.integers(0, len(symbols), size=n)
    qty = rng.integers(1, 51, size=n) * rng.choice([-1.0, 1.0], size=n)
    move = 1.0 + rng.uniform(-0.002, 0.002, size=n)
    return [
        Order(int(a), symbols[i], float(q), round(w.prices[symbols[i]] * m, 1))
        for a, i, q, m in zip(account, instrument, qty, move, strict=True)
    ]


@functools.cache
def _pretrade_setup() -> tuple[Any, list[Order]]:
    w = workload_of(PRETRADE_ACCOUNTS)
    checker = ENGINE.pretrade(w.built, w.prices)
    return checker, _orders(w, PRETRADE_CALLS)


@pytest.fixture(scope="session")
def pretrade_setup() -> tuple[Any, list[Order]]:
    return _pretrade_setup()


def _percentile_us(ns: np.ndarray, q: float) -> float:
    return float(np.percentile(ns, q)) / 1e3


def test_pretrade_latency_loop(
    benchmark: BenchmarkFixture, pretrade_setup: tuple[Any, list[Order]]
) -> None:
    """A plain loop of 20 000 ``check`` calls, each timed with ``perf_counter_ns``; the
    pytest-benchmark entry is one pass of the whole loop."""
    checker, orders = pretrade_setup
    check = checker.check
    for order in orders[:500]:  # warm up
        check(order.account_id, order.instrument, order.qty, order.price)
    elapsed = np.empty(len(orders), dtype=np.int64)
    reasons: Counter[str] = Counter()
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i, order in enumerate(orders):
            start = clock()
            decision = check(order.account_id, order.instrument, order.qty, order.price)
            elapsed[i] = clock() - start
            reasons[decision.reason] += 1
    finally:
        gc.enable()
    p50, p99 = _percentile_us(elapsed, 50), _percentile_us(elapsed, 99)
    line = (
        f"p50 {p50:.1f} µs, p99 {p99:.1f} µs, mean {elapsed.mean() / 1e3:.1f} µs, "
        f"max {elapsed.max() / 1e3:.1f} µs over {len(orders)} calls "
        f"(target p50 ≤ {PRETRADE_TARGET_US:g} µs: "
        f"{'met' if p50 <= PRETRADE_TARGET_US else 'NOT met'})"
    )
    print(f"\npre-trade check, plain loop: {line}")
    NOTES[f"pretrade {PRETRADE_SIZE} plain loop"] = line
    NOTES["pretrade decisions"] = dict(reasons.most_common())

    def whole_loop() -> None:
        for order in orders:
            check(order.account_id, order.instrument, order.qty, order.price)

    benchmark.group = f"pretrade {PRETRADE_SIZE}"
    benchmark.name = f"vamargin [{PRETRADE_CALLS} checks, one loop]"
    benchmark.extra_info.update(
        {"p50_us": p50, "p99_us": p99, "calls": len(orders), "reasons": dict(reasons)}
    )
    benchmark.pedantic(whole_loop, rounds=3, iterations=1)


def test_pretrade_check(
    benchmark: BenchmarkFixture, pretrade_setup: tuple[Any, list[Order]]
) -> None:
    """One ``check`` per round, 20 000 rounds, cycling through the orders."""
    checker, orders = pretrade_setup
    check = checker.check
    cycle = itertools.cycle(orders)

    def one() -> None:
        order = next(cycle)
        check(order.account_id, order.instrument, order.qty, order.price)

    benchmark.group = f"pretrade {PRETRADE_SIZE}"
    benchmark.name = "vamargin [one check per round]"
    benchmark.pedantic(one, rounds=PRETRADE_CALLS, warmup_rounds=500, iterations=1)
    data = np.asarray(benchmark.stats.stats.data) * 1e9
    p50, p99 = _percentile_us(data, 50), _percentile_us(data, 99)
    benchmark.extra_info.update({"p50_us": p50, "p99_us": p99})
    NOTES[f"pretrade {PRETRADE_SIZE} pytest-benchmark"] = (
        f"p50 {p50:.1f} µs, p99 {p99:.1f} µs over {PRETRADE_CALLS} rounds"
    )


# -- batch operations ------------------------------------------------------------------------


def _bench(
    benchmark: BenchmarkFixture,
    op: str,
    size: str,
    w: Workload,
    impl: str,
    rounds: int,
) -> None:
    """One case in its own test. The summary's medians time the call alone; the
    pytest-benchmark entry also includes freeing the result (a few % for the large
    per-position results of ``revalue`` and ``funding``)."""
    run = runner(op, impl, w)
    benchmark.group = f"{op} {size}"
    benchmark.name = f"{impl} [{op} {size}]"
    benchmark.extra_info.update(w.describe())
    seconds: list[float] = []
    last: list[Any] = []
    calls = rounds + 1  # with the warm-up round

    def timed() -> None:
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
        if len(seconds) == calls:  # keep only the last result: no round holds another's
            last.append(result)

    gc.collect()
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1, iterations=1)
    MEDIANS[(op, size, impl)] = statistics.median(seconds[1:] or seconds)
    MINS[(op, size, impl)] = min(seconds[1:] or seconds)
    if impl in peers_of(op):
        # The peer's last result against the engine's, at the benchmark size (untimed).
        peer = last.pop()
        found = COMPARE[op](ENGINE_OPS[op](w.built, w), peer, w)
        benchmark.extra_info.update(found)
        if found:
            NOTES[f"{op} {size} ({impl})"] = found


def _paired(benchmark: BenchmarkFixture, op: str, size: str, w: Workload, rounds: int) -> None:
    """Every case in alternation, every round: the peers and ``vamargin`` in pedantic's
    (untimed) setup, then the timed ``vamargin-built``. Load from other processes then
    hits every case alike, so these ratios are the steadier ones."""
    impls = impls_of(op)
    runs = {impl: runner(op, impl, w) for impl in impls}
    seconds: dict[str, list[float]] = {impl: [] for impl in impls}

    def timed(impl: str) -> None:
        start = time.perf_counter()
        runs[impl]()
        seconds[impl].append(time.perf_counter() - start)

    def others_first() -> tuple[tuple[str], dict[str, Any]]:
        for impl in (*peers_of(op), "vamargin"):
            gc.collect()
            timed(impl)
        gc.collect()
        return ("vamargin-built",), {}

    benchmark.group = f"{op} {size}"
    benchmark.name = f"vamargin-built, alternating with the others [{op} {size}]"
    benchmark.extra_info.update(w.describe())
    benchmark.pedantic(timed, setup=others_first, rounds=rounds, warmup_rounds=1, iterations=1)
    medians = {impl: statistics.median(s[1:] or s) for impl, s in seconds.items()}
    for impl, median in medians.items():
        PAIRED[(op, size, impl)] = median
    benchmark.extra_info.update({f"median_{impl}": m for impl, m in medians.items()})
    if op != "revalue":  # revalue is gated in bench_revalue.py (against both peers)
        peer = medians["numpy"]
        check_floor(f"{op} e2e", size, peer / medians["vamargin"], peer, medians["vamargin"])
        built = medians["vamargin-built"]
        check_floor(f"{op} built", size, peer / built, peer, built)


def _case(
    benchmark: BenchmarkFixture,
    op: str,
    size: str,
    n_accounts: int,
    impl: str,
    rounds: int,
    order: str = "sorted",
) -> None:
    w = workload_of(n_accounts, shuffle=order == "shuffled")
    if order != "sorted":
        size = f"{size}, {order}"  # reported, not gated (not in conftest.GATED_SIZES)
    if impl == "paired":
        _paired(benchmark, op, size, w, rounds)
    else:
        _bench(benchmark, op, size, w, impl, rounds)


CASES = (*IMPLS, "paired")
FUNDING_CASES = (*impls_of("funding"), "paired")


@pytest.mark.parametrize("impl", FUNDING_CASES)
@pytest.mark.parametrize("order", ORDERS)
def test_funding_1m(
    benchmark: BenchmarkFixture, order: str, impl: str, operations_checked: None
) -> None:
    """Funding settlement of one interval, 1M positions (215 000 accounts)."""
    size = "1M positions"
    _case(benchmark, "funding", size, FUNDING_SIZES[size], impl, rounds=7, order=order)


OPS = ("liquidation_queue", "margin_calls", "firm_report", "revalue")


@pytest.mark.parametrize("impl", CASES)
@pytest.mark.parametrize("op", OPS)
def test_operation(
    benchmark: BenchmarkFixture, op: str, impl: str, operations_checked: None
) -> None:
    """Liquidation queue, margin calls, firm report (and revaluation, for reference) over
    200 000 accounts, or 1 000 000 with ``VAMARGIN_BENCH_FULL=1``."""
    _case(benchmark, op, OPS_SIZE, OPS_ACCOUNTS, impl, rounds=5 if FULL else 7)


@pytest.mark.full
@pytest.mark.skipif(not FULL, reason="10M positions need VAMARGIN_BENCH_FULL=1")
@pytest.mark.parametrize("impl", FUNDING_CASES)
@pytest.mark.parametrize("order", ORDERS)
def test_funding_10m(
    benchmark: BenchmarkFixture, order: str, impl: str, operations_checked: None
) -> None:
    """Funding settlement of one interval, 10M positions (2 150 000 accounts)."""
    size = "10M positions"
    _case(benchmark, "funding", size, FUNDING_SIZES[size], impl, rounds=3, order=order)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "--benchmark-only", *sys.argv[1:]]))
