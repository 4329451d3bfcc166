"""Where the engine's time goes, stage by stage, next to the numpy peer.

    python benches/breakdown.py --size 10M [--shuffled] [--rounds 3]

Runs, in alternation, ``RiskEngine.revalue`` end to end from Arrow tables, its three
stages (``Book(...)``, ``Book.bind(config)`` of a fresh Book, ``revalue`` of a Book already
built and bound) and the numpy peer, and prints for each the median wall time, user and
system CPU time and minor page faults of the process (``getrusage``). CPU times are less
sensitive than wall time to other load on the machine; system time and page faults show
what fresh memory costs (every large allocation is zero-filled by the kernel on first
touch). ``VAMARGIN_NUM_THREADS`` sets the engine's threads as usual.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vamargin as vm
from peers import numpy_revalue, params_of
from vamargin import _core
from vamargin.synthetic import synthetic_book

SIZES = {"1M": 215_000, "10M": 2_150_000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1M")
    parser.add_argument("--shuffled", action="store_true", help="positions not in account order")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = vm.RiskConfig.hk_default()
    engine = vm.RiskEngine(config)
    book = synthetic_book(
        config, n_accounts=SIZES[args.size], seed=7, shuffle_positions=args.shuffled
    )
    tables = (book.accounts, book.holdings, book.positions)
    prices = book.prices
    params = params_of(config, prices)
    built = vm.Book(*tables)
    engine.revalue(built, prices)

    def fresh_bind() -> Callable[[], object]:
        fresh = vm.Book(*tables)
        return lambda: fresh.bind(config)

    cases: dict[str, Callable[[], Callable[[], object]]] = {
        "vamargin end to end": lambda: lambda: engine.revalue(vm.Book(*tables), prices),
        "  Book(...)": lambda: lambda: vm.Book(*tables),
        "  Book.bind(config)": fresh_bind,
        "  revalue (built Book)": lambda: lambda: engine.revalue(built, prices),
        "numpy peer": lambda: lambda: numpy_revalue(config, *tables, prices, params),
    }
    samples: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, make in cases.items():
            run = make()
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            samples[name].append(
                (
                    wall,
                    after.ru_utime - before.ru_utime,
                    after.ru_stime - before.ru_stime,
                    after.ru_minflt - before.ru_minflt,
                )
            )
            del run

    order = "shuffled" if args.shuffled else "sorted"
    print(
        f"{args.size} positions ({book.positions.num_rows:,} rows, {order}), "
        f"{_core.thread_count()} engine thread(s), medians of {args.rounds} rounds"
    )
    print(f"{'case':<24}{'wall s':>9}{'user s':>9}{'sys s':>9}{'faults':>11}")
    for name, rows in samples.items():
        columns = zip(*rows, strict=True)
        wall, user, system, faults = (statistics.median(column) for column in columns)
        print(f"{name:<24}{wall:9.3f}{user:9.3f}{system:9.3f}{faults:11,.0f}")


if __name__ == "__main__":
    main()
