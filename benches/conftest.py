"""Fixtures for the revaluation benchmarks (``pytest benches --benchmark-only``).

Sizes: ``1M`` positions (215 000 accounts) always; ``10M`` positions (2 150 000 accounts)
only with ``VAMARGIN_BENCH_FULL=1`` (marker ``full``). Books come from
``vamargin.synthetic.synthetic_book``; one size is held in memory at a time.

Before any peer is timed, the peers are checked against ``RiskEngine.revalue`` on a
10 000-account book (``peers_checked``), so a benchmark run never compares against a peer
that computes something else. The same check runs as a plain test without
``--benchmark-only``.

At the end of the run a summary prints each case's median and the engine's speedups over
the peers measured in that run.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import vamargin as vm
from peers import Params, numpy_revalue, params_of, polars_revalue
from vamargin import _core
from vamargin.engine import ACCOUNT_COLUMNS, POSITION_COLUMNS
from vamargin.synthetic import SyntheticBook, synthetic_book

FULL = os.environ.get("VAMARGIN_BENCH_FULL", "").strip() not in ("", "0")
SIZES = {"1M": 215_000, "10M": 2_150_000}
"""Accounts per size; the default config gives about 4.7 positions per account."""
SEED = 7
CHECK_ACCOUNTS = 10_000
RTOL = 1e-9


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "full: 10M-position cases; they run only with VAMARGIN_BENCH_FULL=1"
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # The benchmark modules are named bench_*.py, which pytest does not collect by default
    # (unless named on the command line: then pytest collects them itself).
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


SIZE_PARAMS = [
    pytest.param("1M", id="1M"),
    pytest.param(
        "10M",
        id="10M",
        marks=[
            pytest.mark.full,
            pytest.mark.skipif(not FULL, reason="10M cases need VAMARGIN_BENCH_FULL=1"),
        ],
    ),
]


# -- workloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    accounts: Any
    holdings: Any
    positions: Any
    prices: dict[str, float]

    @classmethod
    def of(cls, book: SyntheticBook) -> Tables:
        return cls(book.accounts, book.holdings, book.positions, book.prices)

    @property
    def arrow(self) -> tuple[Any, Any, Any]:
        return (self.accounts, self.holdings, self.positions)


class Workload:
    """One benchmark size: the config, the engine, and lazily built books."""

    def __init__(self, size: str, config: vm.RiskConfig) -> None:
        self.size = size
        self.n_accounts = SIZES[size]
        self.config = config
        self.engine = vm.RiskEngine(config)
        self._built: dict[str, vm.Book] = {}

    @cached_property
    def sorted(self) -> Tables:
        """Positions in account order (how books are usually stored)."""
        return Tables.of(synthetic_book(self.config, n_accounts=self.n_accounts, seed=SEED))

    @cached_property
    def shuffled(self) -> Tables:
        """The same book with position rows scattered across accounts."""
        return Tables.of(
            synthetic_book(
                self.config, n_accounts=self.n_accounts, seed=SEED, shuffle_positions=True
            )
        )

    @cached_property
    def params(self) -> Params:
        return params_of(self.config, self.sorted.prices)

    def built_book(self, order: str = "sorted") -> vm.Book:
        """The book, validated and bound to the config (first revalue done), cached."""
        if order not in self._built:
            t: Tables = getattr(self, order)
            book = vm.Book(*t.arrow)
            self.engine.revalue(book, t.prices)
            self._built[order] = book
        return self._built[order]

    def runner(
        self, impl: str, order: str = "sorted"
    ) -> tuple[Callable[[], object], Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None]:
        """``(run, setup)``: ``run(*args)`` does one timed unit of work of ``impl``, with the
        arguments ``setup()`` returns (untimed) when ``setup`` is not None.

        ``vamargin`` is the engine end to end; ``vamargin-book``, ``vamargin-bind`` and
        ``vamargin-built`` are its three stages: ``Book(...)``, ``Book.bind(config)`` of a
        fresh Book, and ``revalue`` of a Book already built and bound.
        """
        t: Tables = getattr(self, order)
        engine, config, params = self.engine, self.config, self.params
        if impl == "vamargin":
            return lambda: engine.revalue(vm.Book(*t.arrow), t.prices), None
        if impl == "vamargin-book":
            return lambda: vm.Book(*t.arrow), None
        if impl == "vamargin-bind":
            return lambda book: book.bind(config), lambda: ((vm.Book(*t.arrow),), {})
        if impl == "vamargin-built":
            book = self.built_book(order)
            return lambda: engine.revalue(book, t.prices), None
        if impl == "numpy":
            return lambda: numpy_revalue(config, *t.arrow, t.prices, params), None
        if impl == "polars":
            return lambda: polars_revalue(config, *t.arrow, t.prices, params), None
        raise ValueError(impl)

    def describe(self, order: str = "sorted") -> dict[str, object]:
        t: Tables = getattr(self, order)
        return {
            "accounts": t.accounts.num_rows,
            "holdings": t.holdings.num_rows,
            "positions": t.positions.num_rows,
            "order": order,
            "vamargin_threads": _core.thread_count(),
            "polars_threads": pl.thread_pool_size(),
        }


@pytest.fixture(scope="session")
def config() -> vm.RiskConfig:
    return vm.RiskConfig.hk_default()


@pytest.fixture(scope="session", params=SIZE_PARAMS)
def workload(request: pytest.FixtureRequest, config: vm.RiskConfig) -> Workload:
    # Session-scoped and parametrized: pytest finishes one size before building the next.
    return Workload(request.param, config)


# -- correctness of the peers ----------------------------------------------------------------


def _as_numpy(values: Any) -> np.ndarray:
    return values.to_numpy() if isinstance(values, pl.Series) else np.asarray(values)


def compare_with_engine(config: vm.RiskConfig, tables: Tables) -> None:
    """Asserts that both peers give the engine's numbers: float columns within ``RTOL``
    (NaN where the engine has NaN, ±inf where it has ±inf), status and tier exactly."""
    engine = vm.RiskEngine(config)
    expected = engine.revalue(vm.Book(*tables.arrow), tables.prices)
    from_numpy = numpy_revalue(config, *tables.arrow, tables.prices)
    polars_accounts, polars_positions = polars_revalue(config, *tables.arrow, tables.prices)
    peers = {
        "numpy": (from_numpy["accounts"], from_numpy["positions"]),
        "polars": (polars_accounts, polars_positions),
    }
    for name, (accounts, positions) in peers.items():
        for table, columns, got in (
            (expected.accounts, ACCOUNT_COLUMNS, accounts),
            (expected.positions, POSITION_COLUMNS, positions),
        ):
            for column in columns:
                if column == "instrument":
                    continue
                want = table.codes(column).codes if column == "status" else table[column]
                have = _as_numpy(got[column])
                where = f"{name} peer, column {column!r}"
                assert have.shape == want.shape, where
                if want.dtype.kind == "f":
                    np.testing.assert_allclose(
                        have, want, rtol=RTOL, atol=0.0, equal_nan=True, err_msg=where
                    )
                else:
                    np.testing.assert_array_equal(have.astype(np.int64), want, err_msg=where)


@pytest.fixture(scope="session")
def peers_checked(config: vm.RiskConfig) -> None:
    """Runs ``compare_with_engine`` once per session, on a 10k-account book in account
    order and shuffled."""
    for shuffle in (False, True):
        book = synthetic_book(
            config, n_accounts=CHECK_ACCOUNTS, seed=SEED + 1, shuffle_positions=shuffle
        )
        compare_with_engine(config, Tables.of(book))


# -- the CI gate: speedup floors ---------------------------------------------------------------

TARGET = 5.0
"""The issue's floor for every job."""
FLOORS: dict[str, float] = {
    # job → the least numpy_time ÷ vamargin_time a quick-mode run must show, with the
    # default engine threads (all cores; 2 on the CI machine). A floor fails when its job
    # gets roughly 2–3× slower. The issue asks for 5× on every job: most cases reach it
    # in every run, but on this shared machine a ratio can halve, so the floors are
    # regression guards below the target, except those set to TARGET (below). A floor
    # below 1 leaves room for the engine to be slower than numpy under load.
    # Raised on 2026-11-22 (fourth session: one-pass input checks, revaluation without
    # prices for the queue and calls, stress and funding fixes) to ~45% of the lowest
    # ratio of four quick runs, three local and the clean-clone CI run's (in brackets;
    # BENCHMARKS.md, "The CI gate"), as a loaded machine halves a ratio; none lowered.
    # Funding and the firm report raised again in the fifth session (division-free
    # floors and sums made with the payments; one pass over holdings), from three local
    # quick runs and the clean-clone CI run's. Sixth session (the column pool from 64 KiB,
    # pooled funding payments, faster lookups and groupings): raised from five local quick
    # runs; the liquidation queue and margin calls on a built Book now gate the 5×
    # itself, at half or less of their lowest ratio. Eighth session (Python's main thread
    # works in its own pool, funding in branch-free runs): raised from five local quick
    # runs (in brackets); margin calls end to end now gate 5× too. Tenth session (stress
    # prepares a block's rows once): stress from five local runs of its bench, 2 threads
    # (in brackets); stress on a built Book now gates 5× itself. Thirteenth session
    # (funding's AVX-512 run kernel, its sums as runs): funding from four local quick
    # runs (in brackets); funding on a built Book now gates 5× itself. Fourteenth
    # session (the firm report's collateral sums as runs of rows): from three local quick
    # runs (in brackets); every job on a built Book, and stress and the liquidation queue
    # end to end, now gate 5× itself (each lowest ratio about twice that). Fifteenth
    # session (the revaluation's per-row steps eight rows at a time): revalue end to end
    # gates 5× too, from three local quick runs (in brackets; was [7.43–8.58] and 3.3).
    "revalue e2e": TARGET,  # [11.19–12.18] (was 3.3)
    "revalue built": TARGET,  # [20.25–28.85] (was [10.17–14.00])
    "stress built": TARGET,  # [11.24–13.92]
    "stress e2e": TARGET,  # [10.07–12.40] (was 4.3)
    "funding e2e": 2.0,  # [4.70–5.08]
    "funding built": TARGET,  # [11.82–12.75]
    "liquidation_queue e2e": TARGET,  # [10.39–11.19] (was 3.4)
    "liquidation_queue built": TARGET,  # [16.00–17.30]
    "margin_calls e2e": TARGET,  # [14.26–15.37]
    "margin_calls built": TARGET,  # [24.71–27.33]
    "firm_report e2e": 1.6,  # [3.50–4.16] (was 1.5)
    "firm_report built": TARGET,  # [9.38–10.53] (was 3.4)
}
GATED_SIZES = ("1M", "1M positions", "200k accounts")
"""Sizes the floors were measured at (quick mode). Ratios at the full-mode sizes are
reported; they are asserted only when ``VAMARGIN_MIN_SPEEDUP`` is set."""
GATES: list[dict[str, Any]] = []
"""Every ratio a gate test measured in this run (printed in the summary)."""


def floor_of(job: str, size: str) -> float | None:
    """The floor ``job`` must clear at ``size``: ``VAMARGIN_MIN_SPEEDUP`` when set (every
    job, every size), else ``FLOORS[job]`` at the quick sizes, else None (not gated)."""
    override = os.environ.get("VAMARGIN_MIN_SPEEDUP", "").strip()
    if override:
        return float(override)
    return FLOORS[job] if size in GATED_SIZES else None


def quiesce(idle_share: float = 0.1, step_s: float = 0.05, limit_s: float = 3.0) -> None:
    """Collects garbage, then waits (at most ``limit_s``) until this process's threads
    use under ``idle_share`` of one CPU over ``step_s``: work a case left running in the
    background (polars' allocator returning memory from its own thread, for a second or
    more after a 10M run) then does not slow the next case timed."""
    gc.collect()
    deadline = time.perf_counter() + limit_s

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    while time.perf_counter() < deadline:
        before = cpu()
        time.sleep(step_s)
        if cpu() - before < idle_share * step_s:
            return


def check_floor(job: str, size: str, ratio: float, peer_s: float, engine_s: float) -> None:
    """Records ``ratio`` (peer ÷ engine medians, alternating rounds of one test) and asserts
    it clears the job's floor."""
    floor = floor_of(job, size)
    GATES.append(
        {
            "job": job,
            "size": size,
            "ratio": ratio,
            "floor": floor,
            "peer_s": peer_s,
            "engine_s": engine_s,
            "threads": _core.thread_count(),
        }
    )
    if floor is not None:
        assert ratio >= floor, (
            f"{job} at {size}: vamargin {engine_s:.3f}s is only {ratio:.2f}x the numpy peer "
            f"({peer_s:.3f}s); floor {floor:g}x"
        )


# -- summary of this run ---------------------------------------------------------------------

MEDIANS: dict[tuple[str, str, str], float] = {}
"""(size, order, impl) → median seconds, filled by the benchmarks of this run."""


def record(size: str, order: str, impl: str, seconds: list[float]) -> None:
    MEDIANS[(size, order, impl)] = statistics.median(seconds)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write = terminalreporter.write_line
    if GATES:
        terminalreporter.section("vamargin speedup gate: peer ÷ engine, alternating rounds")
        write(f"vamargin threads: {_core.thread_count()}; the issue's target: {TARGET:g}x")
        write(f"{'job':<24} {'size':<22} {'peer s':>8} {'engine s':>9} {'ratio':>7} {'floor':>6}")
        for gate in GATES:
            floor = gate["floor"]
            verdict = "not gated" if floor is None else ("ok" if gate["ratio"] >= floor else "FAIL")
            shown = "-" if floor is None else f"{floor:g}x"
            write(
                f"{gate['job']:<24} {gate['size']:<22} {gate['peer_s']:8.3f} "
                f"{gate['engine_s']:9.3f} {gate['ratio']:6.2f}x {shown:>6} {verdict}"
                f"{'' if gate['ratio'] >= TARGET else ' (below 5x)'}"
            )
        path = os.environ.get("VAMARGIN_GATE_JSON")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"gates": GATES, "loadavg": os.getloadavg()}, handle, indent=2)
    if not MEDIANS:
        return
    terminalreporter.section("vamargin revalue and stress: medians and speedups in this run")
    write(f"vamargin threads: {_core.thread_count()}, polars threads: {pl.thread_pool_size()}")
    header = f"{'size':>4} {'positions':>15} {'case':<15} {'median s':>9}"
    write(f"{header} {'÷numpy':>8} {'÷polars':>8}")
    for (size, order, impl), median in sorted(MEDIANS.items()):
        cells = ""
        if impl in ("vamargin", "vamargin-built"):
            for peer in ("numpy", "polars"):
                other = MEDIANS.get((size, order, peer))
                cells += f" {other / median:7.2f}x" if other else f" {'':>8}"
        write(f"{size:>4} {order:>15} {impl:<15} {median:9.3f}{cells}")
