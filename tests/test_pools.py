"""The thread pools: Python's main thread computes in a pool it is part of, every other
thread in a shared pool, and a forked child in pools of its own; the numbers are the
same whichever pool a call ran in."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest

import vamargin as vm
from vamargin import _core
from vamargin.synthetic import synthetic_book

RATES = {
    "BTC-USDT-PERP": 1e-4,
    "ETH-USDT-PERP": -3e-4,
    "BTC-USD-PERP": 1.25e-4,
    "ETH-USD-PERP": 7e-5,
}


def _results(n_accounts: int = 30_000, seed: int = 19) -> dict[str, np.ndarray]:
    """A revaluation and a funding settlement of an unsorted synthetic book (so binding
    takes the parallel radix grouping), as named arrays."""
    s = synthetic_book(n_accounts=n_accounts, seed=seed, shuffle_positions=True)
    engine = vm.RiskEngine()
    book = vm.Book(s.accounts, s.holdings, s.positions)
    revaluation = engine.revalue(book, s.prices)
    settlement = engine.funding(book, RATES, s.prices)
    return {
        "equity": revaluation.accounts["equity"].copy(),
        "liquidation_price": revaluation.positions["liquidation_price"].copy(),
        "payments": settlement.payments.copy(),
        "by_account": np.asarray(settlement.by_account["amount"]).copy(),
    }


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Names of the arrays that differ bit for bit."""
    return [name for name in a if a[name].tobytes() != b[name].tobytes()]


def test_threads_other_than_main_compute_what_the_main_thread_does() -> None:
    expected = _results()
    got: dict[int, dict[str, np.ndarray]] = {}
    counts: dict[int, int] = {}
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            counts[i] = _core.thread_count()
            got[i] = _results()
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    # Two at once: both use the shared pool while the main thread waits.
    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert not failures, failures
    assert sorted(got) == [0, 1]
    assert counts == {0: _core.thread_count(), 1: _core.thread_count()}
    for i in got:
        assert _same(expected, got[i]) == [], f"thread {i}"
    # The main thread still computes after the others did.
    assert _same(expected, _results()) == []


_FORK = """
import os, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_pools import _results, _same
from vamargin import _core
parent = _results()  # the parent's main thread is now thread 0 of its pool
pid = os.fork()
if pid == 0:
    try:
        child = _results()
        ok = _same(parent, child) == [] and _core.thread_count() == int(sys.argv[1])
        os._exit(0 if ok else 1)
    except BaseException as exc:
        print(repr(exc), file=sys.stderr)
        os._exit(2)
_, status = os.waitpid(pid, 0)
assert os.WEXITSTATUS(status) == 0, f"child exit {{os.WEXITSTATUS(status)}}"
# The parent's pool still works after the fork.
assert _same(parent, _results()) == []
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_forked_child_computes_in_pools_of_its_own(threads: str) -> None:
    # In a fresh interpreter, so that a child waiting on its parent's pool would hang
    # that interpreter (and time out here), not the test run.
    env: dict[str, Any] = {**os.environ, "VAMARGIN_NUM_THREADS": threads}
    script = _FORK.format(tests=os.path.dirname(__file__))
    out = subprocess.run(
        [sys.executable, "-c", script, threads],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]
