"""Revaluation benchmarks: vamargin against vectorised numpy and polars peers.

    pytest benches --benchmark-only                       # 1M positions (CI quick mode)
    VAMARGIN_BENCH_FULL=1 pytest benches --benchmark-only  # 1M and 10M positions

Cases, each in a benchmark group per size and row order so the report shows them side by
side:

- ``vamargin``: end to end from the Arrow tables: ``Book(...)`` (validation, account
  index, groupings), binding to the config, and ``RiskEngine.revalue``;
- ``numpy`` / ``polars``: the peers in ``peers.py``, end to end from the same tables;
- the engine's stages, which add up to ``vamargin``: ``vamargin-book`` (``Book(...)``),
  ``vamargin-bind`` (``Book.bind(config)`` of a fresh Book: symbols, loan eligibility,
  uniqueness checks) and ``vamargin-built`` (``revalue`` on a Book already built and
  bound, as intraday re-runs do: prices, the Rust kernel, result tables).

``test_speedup_floor`` times the engine (end to end and on a built Book) and the two peers
in alternation and asserts that the engine beats the faster peer by at least the
``revalue e2e`` / ``revalue built`` floors of ``conftest.FLOORS`` (``VAMARGIN_MIN_SPEEDUP``
overrides every floor): a ratio measured in the same run, not a wall-clock limit.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import vamargin as vm
from conftest import (
    CHECK_ACCOUNTS,
    SEED,
    Tables,
    Workload,
    check_floor,
    compare_with_engine,
    quiesce,
    record,
)
from vamargin.synthetic import synthetic_book

IMPLS = ("vamargin", "numpy", "polars")


def _rounds(workload: Workload) -> tuple[int, int]:
    """(rounds, warmup rounds) for the size."""
    return (3, 1) if workload.size == "10M" else (5, 1)


def _bench(benchmark, workload: Workload, order: str, impl: str) -> None:
    run, setup = workload.runner(impl, order)
    benchmark.group = f"revalue {workload.size} positions, {order}"
    benchmark.name = f"{impl} [{workload.size} {order}]"
    benchmark.extra_info.update(workload.describe(order))
    seconds: list[float] = []

    def timed(*args: object) -> None:
        start = time.perf_counter()
        run(*args)
        seconds.append(time.perf_counter() - start)

    rounds, warmup = _rounds(workload)
    gc.collect()
    benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    record(workload.size, order, impl, seconds[warmup:] or seconds)


@pytest.mark.parametrize("impl", IMPLS)
def test_revalue(
    benchmark: BenchmarkFixture, workload: Workload, impl: str, peers_checked: None
) -> None:
    """End to end from Arrow tables, positions in account order."""
    _bench(benchmark, workload, "sorted", impl)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
@pytest.mark.parametrize("stage", ["vamargin-book", "vamargin-bind", "vamargin-built"])
def test_engine_stages(
    benchmark: BenchmarkFixture, workload: Workload, order: str, stage: str
) -> None:
    """The engine's end-to-end time split: Book(...) construction, binding a fresh Book to
    the config, and revalue on a Book already built and bound (intraday re-runs)."""
    _bench(benchmark, workload, order, stage)


@pytest.mark.parametrize("impl", IMPLS)
def test_revalue_shuffled(
    benchmark: BenchmarkFixture, workload: Workload, impl: str, peers_checked: None
) -> None:
    """End to end from Arrow tables, position rows scattered across accounts."""
    _bench(benchmark, workload, "shuffled", impl)


def test_speedup_floor(
    benchmark: BenchmarkFixture, workload: Workload, peers_checked: None
) -> None:
    """Engine end to end and on a built Book vs the faster peer, timed in alternation in
    this test; asserts the ``revalue e2e`` and ``revalue built`` floors
    (``conftest.FLOORS``; ``VAMARGIN_MIN_SPEEDUP`` overrides them)."""
    cases = (*IMPLS, "vamargin-built")
    runs: dict[str, Callable[[], object]] = {
        impl: workload.runner(impl, "sorted")[0] for impl in cases
    }
    seconds: dict[str, list[float]] = {impl: [] for impl in cases}

    def timed(impl: str) -> None:
        start = time.perf_counter()
        runs[impl]()
        seconds[impl].append(time.perf_counter() - start)

    def others_first() -> None:
        # pedantic's setup is not timed by pytest-benchmark: the peers and the built-book
        # case run here, then the engine end to end, every round. Each case starts on a
        # quiet process: for a second or more after polars returns, its allocator's
        # background thread gives the freed memory back to the OS, and every page
        # returned interrupts the CPUs running this process's threads (TLB shootdowns).
        # A 10M revaluation started then took 1.1-1.3 s instead of 0.57-0.74 s (0.7 s of
        # system time instead of 0.06 s); after the numpy peer, whose frees are
        # synchronous, it is unaffected.
        for impl in ("polars", "numpy", "vamargin-built"):
            quiesce()
            timed(impl)
        quiesce()

    rounds, warmup = _rounds(workload)
    benchmark.group = f"speedup check {workload.size}"
    benchmark.name = f"vamargin vs peers [{workload.size}]"
    benchmark.pedantic(
        timed, args=("vamargin",), setup=others_first, rounds=rounds, warmup_rounds=warmup
    )
    medians = {impl: statistics.median(s[warmup:] or s) for impl, s in seconds.items()}
    best_peer = min(("numpy", "polars"), key=medians.__getitem__)
    e2e = medians[best_peer] / medians["vamargin"]
    built = medians[best_peer] / medians["vamargin-built"]
    benchmark.extra_info.update(workload.describe())
    benchmark.extra_info.update(
        {f"median_{impl}": m for impl, m in medians.items()}
        | {"best_peer": best_peer, "speedup": e2e, "speedup_built": built}
    )
    size = workload.size
    check_floor("revalue e2e", size, e2e, medians[best_peer], medians["vamargin"])
    check_floor("revalue built", size, built, medians[best_peer], medians["vamargin-built"])


def test_peers_match_engine(config: vm.RiskConfig) -> None:
    """Plain test (skipped under --benchmark-only, where ``peers_checked`` runs instead)."""
    for shuffle in (False, True):
        book = synthetic_book(
            config, n_accounts=CHECK_ACCOUNTS, seed=SEED + 1, shuffle_positions=shuffle
        )
        compare_with_engine(config, Tables.of(book))
