"""The thread pools: Python's main thread computes in a pool it is part of, every other
thread in a shared pool, and a forked child in pools of its own; the numbers are the
same whichever pool a call ran in.

Each test runs in a fresh interpreter with a timeout: a call waiting on a pool that can
never run it (a one-thread main pool, a parent's pool in a forked child) hangs that
interpreter, not the test run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

import vamargin as vm
from vamargin.synthetic import synthetic_book

RATES = {
    "BTC-USDT-PERP": 1e-4,
    "ETH-USDT-PERP": -3e-4,
    "BTC-USD-PERP": 1.25e-4,
    "ETH-USD-PERP": 7e-5,
}

TESTS = os.path.dirname(__file__)

T = TypeVar("T")


def results(n_accounts: int = 30_000, seed: int = 19) -> dict[str, np.ndarray]:
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


def differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Names of the arrays that differ bit for bit."""
    return [name for name in a if a[name].tobytes() != b[name].tobytes()]


def in_threads(work: Callable[[], T], n: int) -> list[T]:
    """``work()`` in ``n`` daemon threads at once; an error or a hang (60 s) fails."""
    got: dict[int, T] = {}
    failures: list[str] = []

    def run(i: int) -> None:
        try:
            got[i] = work()
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(repr(exc))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures
    assert sorted(got) == list(range(n)), "a thread did not finish"
    return [got[i] for i in range(n)]


def pool_threads() -> list[str]:
    """The names of this process's vamargin pool threads."""
    names = (p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
    return sorted(n for n in names if n.startswith("vamargin-"))


_OTHER_THREADS = """
import sys
sys.path.insert(0, {tests!r})
from test_pools import results, differing, in_threads, pool_threads
from vamargin import _core
expected = results()  # the main thread, in its own pool
main_pool = pool_threads()
for got in in_threads(results, 2):  # two threads at once, in the shared pool
    assert differing(expected, got) == []
assert in_threads(_core.thread_count, 1) == [_core.thread_count()]
assert differing(expected, results()) == []  # the main thread after the others
print(main_pool, pool_threads())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
@pytest.mark.parametrize(
    ("threads", "pools"),
    [
        # One thread: the main thread is its pool; the shared pool has one thread, so a
        # call from another thread routed to the main pool would never run.
        ("1", "[] ['vamargin-0']"),
        ("2", "['vamargin-1'] ['vamargin-0', 'vamargin-1', 'vamargin-1']"),
    ],
)
def test_other_threads_share_a_pool_and_compute_what_the_main_thread_does(
    threads: str, pools: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_THREADS.format(tests=TESTS)],
        env={**os.environ, "VAMARGIN_NUM_THREADS": threads},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pools


_FORK = """
import os, sys
sys.path.insert(0, {tests!r})
from test_pools import results, differing, in_threads
from vamargin import _core
# The parent uses both pools: the main thread is now thread 0 of its own.
parent = results()
assert differing(parent, in_threads(results, 1)[0]) == []
pid = os.fork()
if pid == 0:
    try:
        # The main thread, then another thread: neither may wait on the parent's pools.
        ok = differing(parent, results()) == []
        ok &= differing(parent, in_threads(results, 1)[0]) == []
        ok &= _core.thread_count() == int(sys.argv[1])
        os._exit(0 if ok else 1)
    except BaseException as exc:
        print(repr(exc), file=sys.stderr)
        os._exit(2)
_, status = os.waitpid(pid, 0)
assert os.WEXITSTATUS(status) == 0, f"child exit {{os.WEXITSTATUS(status)}}"
# The parent's pools still work after the fork.
assert differing(parent, results()) == []
assert differing(parent, in_threads(results, 1)[0]) == []
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_forked_child_computes_in_pools_of_its_own(threads: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FORK.format(tests=TESTS), threads],
        env={**os.environ, "VAMARGIN_NUM_THREADS": threads},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]


_RECYCLED_PID = """
import os, sys, time
sys.path.insert(0, {tests!r})
from test_pools import results, differing, in_threads
out = sys.argv[1]
# This process builds both pools, forks a child and exits; the child waits for that, then
# forks a grandchild under this process's pid (set through ns_last_pid). A grandchild that
# took this process's pools for its own would wait on threads that do not exist.
expected = results()
assert differing(expected, in_threads(results, 1)[0]) == []
builder = os.getpid()
if os.fork() != 0:
    os._exit(0)
# Let go of the test's pipes, so that it reaps this process's parent (freeing its pid).
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
def report(text):
    with open(out + ".tmp", "w") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
try:
    while os.getppid() == builder:
        time.sleep(0.005)
    for attempt in range(100):
        time.sleep(0.02)  # the exited process is reaped, and its pid freed, meanwhile
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(builder - 1))
        grandchild = os.fork()
        if grandchild == 0:
            if os.getpid() != builder:
                os._exit(3)  # another process took the pid first: try again
            ok = differing(expected, results()) == []
            ok &= differing(expected, in_threads(results, 1)[0]) == []
            os._exit(0 if ok else 1)
        deadline = time.monotonic() + 120
        while (done := os.waitpid(grandchild, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(grandchild, 9)
                report("hung")
                os._exit(0)
            time.sleep(0.01)
        status = os.waitstatus_to_exitcode(done[1])
        if status != 3:
            report("ok" if status == 0 else f"exit {{status}}")
            os._exit(0)
    report("pid not recycled")
except BaseException as exc:
    report(repr(exc))
os._exit(0)
"""


@pytest.mark.skipif(
    not hasattr(os, "fork") or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK),
    reason="needs fork and a writable /proc/sys/kernel/ns_last_pid (root)",
)
def test_a_grandchild_given_a_recycled_pid_builds_pools_of_its_own(tmp_path: Path) -> None:
    # Pools are keyed by the pid and by the forks counted since the module loaded: under
    # the pid alone, the grandchild takes the pools its grandparent built and hangs.
    out = tmp_path / "result"
    run = subprocess.run(
        [sys.executable, "-c", _RECYCLED_PID.format(tests=TESTS), str(out)],
        env={**os.environ, "VAMARGIN_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 180
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    result = out.read_text() if out.exists() else "no report"
    if result == "pid not recycled":
        pytest.skip("the kernel did not hand the pid out again (busy machine)")
    assert result == "ok"


_FIRST_CALLS = """
import sys, threading
sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible
from vamargin import _core
barrier = threading.Barrier(64)
def first_call():
    barrier.wait()
    _core.thread_count()
threads = [threading.Thread(target=first_call, daemon=True) for _ in range(64)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=30)
assert not any(t.is_alive() for t in threads), "a first call hung"
print("ok")
"""


@pytest.mark.parametrize("attempt", range(10))
def test_first_calls_from_many_threads_at_once_do_not_hang(attempt: int) -> None:
    # 64 threads make their first call together, the main thread none: finding
    # whether a thread is Python's main thread runs Python, which may hand the GIL to
    # another thread; doing that while holding the pools' lock deadlocked (16 threads: 8
    # runs of 20; this test: about one attempt in three).
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_CALLS], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]
