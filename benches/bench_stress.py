"""Stress benchmark: ``RiskEngine.stress`` beside a vectorised numpy peer (``stress_peers``).

    pytest benches/bench_stress.py --benchmark-only                       # 1M × 44 scenarios
    VAMARGIN_BENCH_FULL=1 pytest benches/bench_stress.py --benchmark-only  # and 10M × 40

Sizes: 1M positions (215 000 accounts) under the 44 scenarios of
``vamargin.scenarios.standard()``; with ``VAMARGIN_BENCH_FULL=1`` also 10M positions
(2 150 000 accounts) under its first 40 (SMF, joint, weekend, grid −90% … +75%).

One test per size times four cases in alternation, round after round, so load from other
processes hits them alike:

- ``vamargin-built``: ``engine.stress(book, prices, scenarios)`` on a Book already built
  and bound (the timed call of the pytest-benchmark entry);
- ``numpy``: the peer's scenario loop on its prepared arrays (``stress_peers.prepare``, the
  peer's analogue of a built Book);
- ``vamargin`` (end to end): ``engine.stress(vm.Book(*tables), prices, scenarios)``;
- ``numpy-e2e``: ``prepare`` from the Arrow tables, then the scenario loop.

Before anything is timed the peer is checked against the engine on a 20 000-account book
(sorted and shuffled, the standard set plus quote-currency, cash and explicit-instrument
moves): counts exactly, amounts within rtol 1e-9. The last timed results are compared the
same way at the benchmark size. ``test_stress_floor`` asserts numpy ÷ vamargin-built ≥ the
``stress`` floor of ``conftest.FLOORS`` (``VAMARGIN_MIN_SPEEDUP`` overrides every floor).
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import vamargin as vm
from conftest import SEED, Tables, Workload, check_floor, record
from stress_peers import AMOUNT_COLUMNS, COUNT_COLUMNS, StressBook, numpy_stress, prepare
from vamargin import scenarios as shipped
from vamargin.synthetic import synthetic_book

CHECK_ACCOUNTS = 20_000
RTOL = 1e-9
CASES = ("vamargin-built", "numpy", "vamargin", "numpy-e2e")
EXTRA_CHECK_SCENARIOS = {
    "USDT depeg, BTC up": {"USDT": -0.10, "BTC": 0.05},
    "BTC-USDT mark dislocation, ETH down": {"BTC-USDT-PERP": -0.20, "ETH": -0.30},
    "HKD up, USD-quoted down": {"HKD": 0.02, "USD": 0.01, "BTC": -0.25},
}


def scenario_set(size: str) -> dict[str, dict[str, float]]:
    """44 standard scenarios at 1M; the first 40 at 10M (the issue's 10M × 40)."""
    standard = shipped.standard()
    if size == "10M":
        return dict(list(standard.items())[:40])
    return standard


def compare(engine_table: Any, peer: Mapping[str, np.ndarray], where: str) -> None:
    """Counts exactly, amounts within ``RTOL`` (atol 0)."""
    for column in COUNT_COLUMNS:
        np.testing.assert_array_equal(
            peer[column], engine_table[column], err_msg=f"{where}: {column}"
        )
    for column in AMOUNT_COLUMNS:
        np.testing.assert_allclose(
            peer[column], engine_table[column], rtol=RTOL, atol=0.0, err_msg=f"{where}: {column}"
        )


def check_peer(config: vm.RiskConfig) -> None:
    engine = vm.RiskEngine(config)
    sets = {**shipped.standard(), **EXTRA_CHECK_SCENARIOS}
    for shuffle in (False, True):
        t = Tables.of(
            synthetic_book(
                config, n_accounts=CHECK_ACCOUNTS, seed=SEED + 1, shuffle_positions=shuffle
            )
        )
        expected = engine.stress(vm.Book(*t.arrow), t.prices, sets)
        got = numpy_stress(config, prepare(config, *t.arrow, t.prices), t.prices, sets)
        compare(expected, got, f"stress peer, {'shuffled' if shuffle else 'sorted'}")


@functools.cache
def _checked(config: vm.RiskConfig) -> None:
    check_peer(config)


@pytest.fixture(scope="session")
def stress_peer_checked(config: vm.RiskConfig) -> None:
    _checked(config)


def test_stress_peer_matches_engine(config: vm.RiskConfig) -> None:
    """Plain test (skipped under --benchmark-only, where ``stress_peer_checked`` runs)."""
    check_peer(config)


def _rounds(size: str) -> tuple[int, int]:
    """(rounds, warm-up rounds): 3 alternating rounds, no warm-up (every case runs for
    seconds; the Book and the peer's arrays are built before the first round)."""
    return (3, 0)


def test_stress_floor(
    benchmark: BenchmarkFixture, workload: Workload, stress_peer_checked: None
) -> None:
    """The four cases in alternation; asserts numpy ÷ vamargin-built ≥ the stress floor."""
    size, config, engine = workload.size, workload.config, workload.engine
    t = workload.sorted
    sets = scenario_set(size)
    book = workload.built_book("sorted")
    prepared: StressBook = prepare(config, *t.arrow, t.prices)
    runs: dict[str, Callable[[], Any]] = {
        "vamargin-built": lambda: engine.stress(book, t.prices, sets),
        "numpy": lambda: numpy_stress(config, prepared, t.prices, sets),
        "vamargin": lambda: engine.stress(vm.Book(*t.arrow), t.prices, sets),
        "numpy-e2e": lambda: numpy_stress(
            config, prepare(config, *t.arrow, t.prices), t.prices, sets
        ),
    }
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    last: dict[str, Any] = {}

    def timed(case: str) -> None:
        start = time.perf_counter()
        last[case] = runs[case]()
        seconds[case].append(time.perf_counter() - start)

    def others_first() -> tuple[tuple[str], dict[str, Any]]:
        for case in CASES[1:]:
            last.pop(case, None)
            gc.collect()
            timed(case)
        last.pop("vamargin-built", None)
        gc.collect()
        return ("vamargin-built",), {}

    rounds, warmup = _rounds(size)
    benchmark.group = f"stress {size} positions × {len(sets)} scenarios"
    benchmark.name = f"vamargin-built, alternating with the others [stress {size}]"
    benchmark.extra_info.update(workload.describe() | {"scenarios": len(sets)})
    benchmark.pedantic(timed, setup=others_first, rounds=rounds, warmup_rounds=warmup)

    # The last results of this size, engine against peer (untimed).
    compare(last["vamargin-built"], last["numpy"], f"stress {size} built vs numpy")
    compare(last["vamargin"], last["numpy-e2e"], f"stress {size} e2e vs numpy-e2e")

    medians = {case: statistics.median(s[warmup:] or s) for case, s in seconds.items()}
    # Summary rows: built-book engine vs the prepared peer, and end to end vs end to end.
    labels = {
        "vamargin-built": ("built", "vamargin-built"),
        "numpy": ("built", "numpy"),
        "vamargin": ("e2e", "vamargin"),
        "numpy-e2e": ("e2e", "numpy"),
    }
    for case, s in seconds.items():
        variant, impl = labels[case]
        record(size, f"stress×{len(sets)} {variant}", impl, s[warmup:] or s)
    built = medians["numpy"] / medians["vamargin-built"]
    e2e = medians["numpy-e2e"] / medians["vamargin"]
    benchmark.extra_info.update(
        {f"median_{case}": m for case, m in medians.items()}
        | {"speedup_built": built, "speedup_e2e": e2e}
    )
    check_floor("stress built", size, built, medians["numpy"], medians["vamargin-built"])
    check_floor("stress e2e", size, e2e, medians["numpy-e2e"], medians["vamargin"])


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(pytest.main([__file__, "--benchmark-only", *sys.argv[1:]]))
