"""Scaling, memory and bandwidth measurements for ``RiskEngine.revalue`` (BENCHMARKS.md).

    python benches/scaling.py generate --size 10M [--shuffled]   # Arrow IPC file, once
    python benches/scaling.py time --size 10M [--rounds 3] [--skip-peer]  # one process
    python benches/scaling.py memory --size 10M                  # peak RSS, fresh process
    python benches/scaling.py stress --size 10M --scenarios 40   # wall time and peak RSS
    python benches/scaling.py bandwidth --size 10M [--job funding]  # copy bandwidth, floor
    python benches/scaling.py loop --size 10M --job revalue --ready pid  # for perf record -p
    python benches/scaling.py run --sizes 1M,3M,10M,30M --out benches/scaling.json
    python benches/scaling.py plot --json benches/scaling.json --png benches/scaling.png

Books are ``vamargin.synthetic.synthetic_book`` (seed 7; 215 000 accounts per 1M
positions), generated once per size into an uncompressed Arrow IPC file under
``$VAMARGIN_SCALING_DATA`` (default ``/tmp/vamargin-scaling``) so that every measuring
process starts from the same bytes and none of the generator's temporaries count towards
its peak RSS. ``100M`` is the ``10M`` book tiled ten times (account ids shifted per tile,
one contiguous column each): the generator itself would need more memory than the engine.

``time`` runs, in alternation round by round, the engine end to end (``vm.Book(...)`` +
``revalue``), the engine on a built Book, and the numpy peer (``peers.numpy_revalue``),
in one process whose engine threads are ``VAMARGIN_NUM_THREADS``; ``run`` starts one such
process per size and thread count (1 and 2) and collects their JSON lines.

``memory`` measures, in a fresh process, the peak RSS (``VmHWM``) of an end-to-end
revaluation next to the input (Arrow buffers) and output (result columns) sizes: the
issue's budget is input + 1.5 × output. ``bandwidth`` measures the machine's copy
bandwidth (numpy copy of 1 GiB, best of 5; one thread, and two threads each copying half)
and the bytes a built-book revaluation (or, with ``--job funding``, a funding settlement
of one interval) must read once and write once, and prints the engine's built-book time
as a multiple of bytes ÷ bandwidth.

Processes may be capped with ``--max-gib`` (``RLIMIT_AS``), so that a size that does not
fit fails with ``MemoryError`` instead of pushing the shared machine into the OOM killer.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PER_MILLION = 215_000
"""Accounts per million positions (the default config gives ~4.72 positions per account)."""
SIZES = {"1M": 1, "3M": 3, "10M": 10, "30M": 30, "100M": 100}
TILED = {"100M": ("10M", 10)}
DATA = Path(os.environ.get("VAMARGIN_SCALING_DATA", "/tmp/vamargin-scaling"))
TABLES = ("accounts", "holdings", "positions")


# -- process memory --------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> None:
    """Resets ``VmHWM`` to the current RSS (``clear_refs`` 5, Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def cap_memory(gib: float | None) -> None:
    if gib:
        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the books -------------------------------------------------------------------------------


def path_of(size: str, shuffled: bool) -> Path:
    return DATA / f"book-{size}{'-shuffled' if shuffled else ''}.arrow"


def _write(path: Path, tables: dict[str, pa.Table], prices: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        part = path.with_suffix(f".{name}.arrow")
        with pa.OSFile(str(part), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=table.num_rows or None)
    path.with_suffix(".prices.json").write_text(json.dumps(prices))


def _tile(book: Any, copies: int) -> dict[str, pa.Table]:
    """``copies`` copies of the book, account ids shifted per copy (still ascending)."""
    span = 10 * book.accounts.num_rows  # synthetic ids are 10·k + 3, k = 1..n
    tiled = {}
    for name in TABLES:
        table = getattr(book, name)
        columns = {}
        for column in table.column_names:
            data = table.column(column).combine_chunks()
            if column == "account_id":
                ids = data.to_numpy()
                pieces = [ids + k * span for k in range(copies)]
                columns[column] = pa.array(np.concatenate(pieces))
            else:
                columns[column] = pa.concat_arrays([data] * copies)
        tiled[name] = pa.table(columns)
    return tiled


def generate(size: str, shuffled: bool) -> Path:
    import vamargin as vm
    from vamargin.synthetic import synthetic_book

    path = path_of(size, shuffled)
    if path.with_suffix(".prices.json").exists():
        return path
    config = vm.RiskConfig.hk_default()
    if size in TILED:
        if shuffled:
            raise SystemExit("tiled sizes are sorted only")
        base, copies = TILED[size]
        book = synthetic_book(config, n_accounts=SIZES[base] * PER_MILLION, seed=7)
        tables = _tile(book, copies)
    else:
        book = synthetic_book(
            config, n_accounts=SIZES[size] * PER_MILLION, seed=7, shuffle_positions=shuffled
        )
        tables = {name: getattr(book, name) for name in TABLES}
    _write(path, tables, book.prices)
    return path


def load(size: str, shuffled: bool = False) -> tuple[tuple[pa.Table, ...], dict[str, float]]:
    """The tables, read into (anonymous) memory, and the prices."""
    path = path_of(size, shuffled)
    tables = []
    for name in TABLES:
        with pa.OSFile(str(path.with_suffix(f".{name}.arrow")), "rb") as source:
            tables.append(pa.ipc.open_file(source).read_all())
    prices = json.loads(path.with_suffix(".prices.json").read_text())
    return tuple(tables), prices


def column_bytes(table: Any, name: str) -> int:
    """Bytes of a result column (the codes of a string column)."""
    try:
        return int(table.codes(name).codes.nbytes)
    except TypeError:
        return int(table[name].nbytes)


# -- modes -----------------------------------------------------------------------------------


def _record(mode: str, args: argparse.Namespace, tables: tuple[pa.Table, ...]) -> dict[str, Any]:
    """The fields every measurement's JSON line starts with."""
    from vamargin import _core

    return {
        "mode": mode,
        "size": args.size,
        "shuffled": args.shuffled,
        "threads": _core.thread_count(),
        "positions": tables[2].num_rows,
    }


def mode_time(args: argparse.Namespace) -> dict[str, Any]:
    import vamargin as vm
    from peers import numpy_revalue, params_of

    config = vm.RiskConfig.hk_default()
    engine = vm.RiskEngine(config)
    tables, prices = load(args.size, args.shuffled)
    params = params_of(config, prices)
    built = vm.Book(*tables)
    engine.revalue(built, prices)
    cases: dict[str, Callable[[], object]] = {
        "vamargin e2e": lambda: engine.revalue(vm.Book(*tables), prices),
        "vamargin built": lambda: engine.revalue(built, prices),
        "numpy": lambda: numpy_revalue(config, *tables, prices, params),
    }
    wanted = args.cases.split(",") if args.cases else list(cases)
    if not args.peer:
        wanted = [case for case in wanted if case != "numpy"]
    cases = {name: cases[name] for name in wanted}
    load_start = loadavg()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds + 1):  # the first round is a warm-up
        for name, run in cases.items():
            gc.collect()
            start = time.perf_counter()
            result = run()
            samples[name].append(time.perf_counter() - start)
            del result
    return {
        **_record("time", args, tables),
        "accounts": tables[0].num_rows,
        "median_s": {k: statistics.median(v[1:]) for k, v in samples.items()},
        "min_s": {k: min(v[1:]) for k, v in samples.items()},
        "samples_s": samples,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "peak_rss_gib": status_kib("VmHWM") / 2**20,
    }


def mode_memory(args: argparse.Namespace) -> dict[str, Any]:
    import vamargin as vm

    config = vm.RiskConfig.hk_default()
    engine = vm.RiskEngine(config)
    baseline_kib = status_kib("VmRSS")  # interpreter, numpy, pyarrow, vamargin
    tables, prices = load(args.size, args.shuffled)
    input_bytes = sum(t.nbytes for t in tables)
    loaded_kib = status_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    book = vm.Book(*tables)
    read = time.perf_counter()
    book.bind(config)
    bound = time.perf_counter()
    result = engine.revalue(book, prices)
    end = time.perf_counter()
    wall = end - start
    del book  # as in engine.revalue(vm.Book(...), prices): the result keeps what it shares
    peak_kib = status_kib("VmHWM")
    after_kib = status_kib("VmRSS")
    shared = {"account_id"}  # shared with the Book, not written by the kernel
    all_out = new_out = 0
    for table, extra in ((result.accounts, shared), (result.positions, {*shared, "instrument"})):
        for name in table.columns:
            size = column_bytes(table, name)
            all_out += size
            new_out += 0 if name in extra else size
    gib = 2**30
    return {
        **_record("memory", args, tables),
        "wall_s": wall,
        "stages_s": {"book": read - start, "bind": bound - read, "revalue": end - bound},
        "interpreter_gib": baseline_kib / 2**20,
        "after_load_gib": loaded_kib / 2**20,
        "peak_rss_gib": peak_kib / 2**20,
        "rss_after_gib": after_kib / 2**20,
        "input_gib": input_bytes / gib,
        "output_gib": all_out / gib,
        "output_written_gib": new_out / gib,
        "budget_gib": (input_bytes + 1.5 * all_out) / gib,
        "peak_over_budget": (peak_kib * 1024) / (input_bytes + 1.5 * all_out),
        "peak_less_interpreter_over_budget": ((peak_kib - baseline_kib) * 1024)
        / (input_bytes + 1.5 * all_out),
        "loadavg": loadavg(),
    }


def mode_stress(args: argparse.Namespace) -> dict[str, Any]:
    import vamargin as vm
    from vamargin import scenarios as shipped

    config = vm.RiskConfig.hk_default()
    engine = vm.RiskEngine(config)
    sets = dict(list(shipped.standard().items())[: args.scenarios])
    baseline_kib = status_kib("VmRSS")
    tables, prices = load(args.size, args.shuffled)
    load_start = loadavg()
    start = time.perf_counter()
    book = vm.Book(*tables)
    book.bind(config)
    bound = time.perf_counter()
    table = engine.stress(book, prices, sets)
    end = time.perf_counter()
    return {
        **_record("stress", args, tables),
        "scenarios": len(table),
        "book_and_bind_s": bound - start,
        "stress_s": end - bound,
        "wall_s": end - start,
        "interpreter_gib": baseline_kib / 2**20,
        "input_gib": sum(t.nbytes for t in tables) / 2**30,
        "peak_rss_gib": status_kib("VmHWM") / 2**20,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    }


def copy_bandwidth(gib: float = 1.0, repeats: int = 5) -> dict[str, float]:
    """Bytes moved (read + written) per second by a numpy copy of ``gib`` GiB, best of
    ``repeats``: one thread, and two threads each copying half."""
    n = int(gib * 2**30) // 8
    src = np.ones(n)
    dst = np.zeros(n)  # both touched: no page faults inside the timing
    moved = 2 * src.nbytes

    def best(copy: Callable[[], None]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            times.append(time.perf_counter() - start)
        return moved / min(times)

    def two_threads() -> None:
        half = n // 2
        pieces = ((dst[:half], src[:half]), (dst[half:], src[half:]))
        workers = [threading.Thread(target=np.copyto, args=piece) for piece in pieces]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return {
        "one_thread_gbs": best(lambda: np.copyto(dst, src)) / 1e9,
        "two_threads_gbs": best(two_threads) / 1e9,
    }


FUNDING_RATES = {
    "BTC-USDT-PERP": 0.0001,
    "ETH-USDT-PERP": 0.0003,
    "BTC-USD-PERP": 0.000125,
    "ETH-USD-PERP": 0.00007,
}
"""One funding interval (``bench_operations.RATES``)."""


def mode_bandwidth(args: argparse.Namespace) -> dict[str, Any]:
    import vamargin as vm
    from vamargin import _core

    config = vm.RiskConfig.hk_default()
    engine = vm.RiskEngine(config)
    tables, prices = load(args.size, args.shuffled)
    accounts, holdings, positions = (t.num_rows for t in tables)
    if args.job == "funding":
        book = vm.Book(accounts=tables[0], positions=tables[2])

        def job() -> Any:
            return engine.funding(book, FUNDING_RATES, prices)

        # What a built-book settlement must read once: per position its instrument (u32),
        # quantity (f64) and, for a book not laid out by account, its account (u32); per
        # account its id (i64) and where its rows start (usize); and write once: per
        # position the payment (i64), per (account, settle asset) sum its account id
        # (i64), asset (u32) and amount (i64).
        sums = len(job().by_account)
        read = positions * (4 + 8 + (4 if args.shuffled else 0)) + accounts * (8 + 8)
        write = positions * 8 + sums * (8 + 4 + 8)
    elif args.job == "revalue":
        book = vm.Book(*tables)

        def job() -> Any:
            return engine.revalue(book, prices)

        job()
        has_leverage = "leverage" in tables[2].column_names
        # What a built-book revaluation must read once: per position account (u32, for
        # cross positions), instrument (u32), qty, entry price, isolated margin (f64); per
        # holding asset (u32) and amount; per account its credit limit and the two
        # groupings' offsets (usize); and write once: per position notional, uPnL, IM, MM,
        # liquidation and bankruptcy price, ADL score (f64) and tier (u8); per account 11
        # f64 figures and the status (u8).
        read = positions * (4 + 4 + 8 + 8 + 8 + (8 if has_leverage else 0))
        read += holdings * (4 + 8) + accounts * (8 + 8 + 8)
        write = positions * (7 * 8 + 1) + accounts * (11 * 8 + 1)
    else:
        raise SystemExit(f"bandwidth: no floor for --job {args.job}")
    rounds: dict[str, list[float]] = {"engine built": [], "bandwidth": []}
    bandwidths = []
    for _ in range(args.rounds):
        bandwidths.append(copy_bandwidth())
        gc.collect()
        start = time.perf_counter()
        result = job()
        rounds["engine built"].append(time.perf_counter() - start)
        del result
    best = max(max(b.values()) for b in bandwidths)
    floor = (read + write) / (best * 1e9)
    built = statistics.median(rounds["engine built"])
    return {
        "mode": "bandwidth",
        "job": args.job,
        "size": args.size,
        "shuffled": args.shuffled,
        "threads": _core.thread_count(),
        "positions": positions,
        "accounts": accounts,
        "holdings": holdings,
        "bandwidth_samples_gbs": bandwidths,
        "bandwidth_best_gbs": best,
        "read_bytes": read,
        "write_bytes": write,
        "floor_s": floor,
        "engine_built_s": built,
        "engine_built_samples_s": rounds["engine built"],
        "multiple_of_floor": built / floor,
        "loadavg": loadavg(),
    }


def mode_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the Book, then repeats the built-book ``revalue`` (or ``stress``, ``funding``) for
    ``--seconds``, for a profiler to attach to: the process id is written to
    ``--ready`` once the setup is done, one second before the loop starts."""
    import vamargin as vm
    from vamargin import scenarios as shipped

    config = vm.RiskConfig.hk_default()
    engine = vm.RiskEngine(config)
    tables, prices = load(args.size, args.shuffled)
    book = vm.Book(*tables)
    engine.revalue(book, prices)
    sets = dict(list(shipped.standard().items())[: args.scenarios])
    jobs: dict[str, Callable[[], object]] = {
        "stress": lambda: engine.stress(book, prices, sets),
        "revalue": lambda: engine.revalue(book, prices),
        "funding": lambda: engine.funding(book, FUNDING_RATES, prices),
    }
    job = jobs[args.job]
    if args.ready:
        Path(args.ready).write_text(str(os.getpid()))
    time.sleep(1.0)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        job()
        calls += 1
    elapsed = time.perf_counter() - start
    return {"mode": "loop", "job": args.job, "calls": calls, "mean_s": elapsed / calls}


def mode_run(args: argparse.Namespace) -> None:
    """One ``time`` process per size and thread count; JSON lines appended to ``--out``."""
    for size in args.sizes.split(","):
        for threads in (1, 2):
            env = dict(os.environ, VAMARGIN_NUM_THREADS=str(threads))
            command = [sys.executable, __file__, "time", "--size", size]
            command += ["--rounds", str(args.rounds)]
            if size in args.no_peer_sizes.split(","):
                command.append("--skip-peer")
            if args.max_gib:
                command += ["--max-gib", str(args.max_gib)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            if done.returncode != 0:
                line = json.dumps(
                    {"mode": "time", "size": size, "threads": threads, "error": done.stderr[-800:]}
                )
            print(line, flush=True)
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


def mode_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    everything = [json.loads(line) for line in Path(args.json).read_text().splitlines() if line]
    rows = [r for r in everything if r.get("mode") == "time" and "median_s" in r]
    timed_e2e = {r["size"] for r in rows if "vamargin e2e" in r["median_s"]}
    # Sizes timed only once end to end (the memory measurement's run): hollow markers.
    single = [
        r
        for r in everything
        if r.get("mode") == "memory" and not r["shuffled"] and r["size"] not in timed_e2e
    ]
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    styles = {
        ("vamargin e2e", 1): ("tab:blue", "o", "--"),
        ("vamargin e2e", 2): ("tab:blue", "o", "-"),
        ("vamargin built", 1): ("tab:green", "s", "--"),
        ("vamargin built", 2): ("tab:green", "s", "-"),
        ("numpy", 1): ("tab:red", "^", "-"),
    }
    for (case, threads), (color, marker, line) in styles.items():
        points = sorted(
            (r["positions"], r["median_s"][case])
            for r in rows
            if r["threads"] == threads and case in r["median_s"]
        )
        if not points:
            continue
        x, y = zip(*points, strict=True)
        label = (
            "numpy peer" if case == "numpy" else f"{case}, {threads} thread{'s' * (threads > 1)}"
        )
        ax.plot(x, y, color=color, marker=marker, linestyle=line, label=label)
    for k, r in enumerate(single):
        ax.plot(
            [r["positions"]],
            [r["wall_s"]],
            marker="o",
            markerfacecolor="none",
            color="tab:blue",
            linestyle="none",
            label=None if k else "vamargin e2e, 2 threads, fresh process (one run each)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("positions (sorted book; accounts = positions / 4.72)")
    ax.set_ylabel("median wall time, s")
    ax.set_title("RiskEngine.revalue vs numpy peer (2 vCPU, shared machine)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode",
        choices=["generate", "time", "memory", "stress", "bandwidth", "loop", "run", "plot"],
    )
    parser.add_argument("--job", choices=["revalue", "stress", "funding"], default="revalue")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--ready", default="", help="loop: file to write the pid to")
    parser.add_argument("--size", choices=sorted(SIZES), default="1M")
    parser.add_argument("--sizes", default="1M,3M,10M,30M")
    parser.add_argument("--skip-peer", action="store_true", help="time: engine cases only")
    parser.add_argument("--cases", default="", help="time: comma-separated subset of the cases")
    parser.add_argument("--no-peer-sizes", default="", help="run: sizes timed without the peer")
    parser.add_argument("--shuffled", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", type=int, default=40)
    parser.add_argument("--max-gib", type=float, default=None, help="RLIMIT_AS of the process")
    parser.add_argument("--out", default=str(HERE / "scaling.json"))
    parser.add_argument("--json", default=str(HERE / "scaling.json"))
    parser.add_argument("--png", default=str(HERE / "scaling.png"))
    args = parser.parse_args()
    args.peer = not args.skip_peer
    cap_memory(args.max_gib)
    if args.mode == "generate":
        print(generate(args.size, args.shuffled))
    elif args.mode == "run":
        mode_run(args)
    elif args.mode == "plot":
        mode_plot(args)
    else:
        measure = {
            "time": mode_time,
            "memory": mode_memory,
            "stress": mode_stress,
            "bandwidth": mode_bandwidth,
            "loop": mode_loop,
        }[args.mode]
        print(json.dumps(measure(args)), flush=True)


if __name__ == "__main__":
    main()
