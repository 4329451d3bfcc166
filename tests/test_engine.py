"""Engine-level behaviour: result tables, zero-copy exits, thread-count determinism, the
affiliate flag, and the demo command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import vamargin as vm
from pooled import bound_in_empty_pool
from vamargin import _core
from vamargin.engine import ACCOUNT_COLUMNS, POSITION_COLUMNS
from vamargin.synthetic import synthetic_book


@pytest.fixture(scope="module")
def small_book() -> tuple[vm.Book, dict[str, float], vm.Revaluation]:
    synthetic = synthetic_book(n_accounts=3_000, seed=11, shuffle_positions=True)
    book = vm.Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    return book, synthetic.prices, vm.RiskEngine().revalue(book, synthetic.prices)


def test_result_tables_have_exactly_the_contract_columns(small_book) -> None:  # type: ignore[no-untyped-def]
    book, _, result = small_book
    assert result.accounts.columns == list(ACCOUNT_COLUMNS)
    assert result.positions.columns == list(POSITION_COLUMNS)
    assert ACCOUNT_COLUMNS == (
        "account_id", "equity", "collateral_value", "debit", "upnl", "initial_requirement",
        "maintenance_requirement", "liquidation_requirement", "excess", "margin_ratio", "ltv",
        "status", "call_amount",
    )  # fmt: skip
    assert POSITION_COLUMNS == (
        "account_id", "instrument", "notional", "upnl", "initial_margin", "maintenance_margin",
        "tier", "liquidation_price", "bankruptcy_price", "adl_score",
    )  # fmt: skip
    assert len(result.accounts) == book.n_accounts
    assert len(result.positions) == book.n_positions
    assert set(np.unique(result.accounts["status"])) <= set(vm.STATUSES)
    # Rows line up with the inputs: account ids in input order, position rows too.
    np.testing.assert_array_equal(result.accounts["account_id"], book.account_id)
    np.testing.assert_array_equal(result.positions["account_id"], book.position_account_id)


def test_numeric_columns_leave_without_a_copy(small_book) -> None:  # type: ignore[no-untyped-def]
    _, _, result = small_book
    equity = result.accounts["equity"]
    assert result.accounts["equity"] is equity  # same array each access
    arrow = result.accounts.to_arrow()
    assert arrow.column("equity").chunk(0).buffers()[1].address == equity.ctypes.data
    polars_equity = result.accounts.to_polars()["equity"].to_numpy()
    assert np.shares_memory(polars_equity, equity)
    notional = result.positions["notional"]
    pandas_notional = result.positions.to_pandas()["notional"].to_numpy()
    assert np.shares_memory(pandas_notional, notional)


def test_string_columns_are_dictionary_encoded_in_arrow(small_book) -> None:  # type: ignore[no-untyped-def]
    _, _, result = small_book
    status = result.accounts.to_arrow().column("status")
    assert pa.types.is_dictionary(status.type)
    assert status.chunk(0).dictionary.to_pylist() == list(vm.STATUSES)
    assert result.accounts.to_pandas()["status"].tolist() == result.accounts["status"].tolist()
    instrument = result.positions.to_polars()["instrument"].cast(str).to_list()
    assert instrument == result.positions["instrument"].tolist()


def test_affiliate_flag_changes_no_number(small_book) -> None:  # type: ignore[no-untyped-def]
    book, prices, result = small_book
    flipped = book.affiliate_market_maker.copy()
    flipped[:] = ~flipped
    synthetic = synthetic_book(n_accounts=3_000, seed=11, shuffle_positions=True)
    accounts = synthetic.accounts.set_column(
        synthetic.accounts.schema.get_field_index("affiliate_market_maker"),
        "affiliate_market_maker",
        pa.array(flipped),
    )
    other = vm.RiskEngine().revalue(
        vm.Book(accounts, synthetic.holdings, synthetic.positions), prices
    )
    for table, twin in ((result.accounts, other.accounts), (result.positions, other.positions)):
        for column in table.columns:
            np.testing.assert_array_equal(table[column], twin[column])


_DUMP = """
import sys, numpy as np, vamargin as vm
from vamargin import _core
from vamargin.synthetic import synthetic_book
s = synthetic_book(n_accounts=40_000, seed=5, shuffle_positions=True)
r = vm.RiskEngine().revalue(vm.Book(s.accounts, s.holdings, s.positions), s.prices)
arrays = {f"a_{c}": r.accounts[c] for c in r.accounts.columns if c != "status"}
arrays.update({f"p_{c}": r.positions[c] for c in r.positions.columns if c != "instrument"})
arrays["threads"] = np.array([_core.thread_count()])
np.savez(sys.argv[1], **arrays)
"""


def test_results_are_bitwise_identical_for_one_and_two_threads(tmp_path: Path) -> None:
    dumps = {}
    for threads in ("1", "2"):
        out = tmp_path / f"threads{threads}.npz"
        env = {**os.environ, "VAMARGIN_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", _DUMP, str(out)], check=True, env=env)
        dumps[threads] = np.load(out)
    assert int(dumps["1"]["threads"][0]) == 1
    assert int(dumps["2"]["threads"][0]) == 2
    for name in dumps["1"].files:
        if name == "threads":
            continue
        assert dumps["1"][name].tobytes() == dumps["2"][name].tobytes(), name


def _f64_columns(result: vm.Revaluation) -> dict[str, np.ndarray]:
    columns = {f"accounts.{c}": result.accounts[c] for c in ACCOUNT_COLUMNS[1:]}
    columns.update({f"positions.{c}": result.positions[c] for c in POSITION_COLUMNS[2:]})
    return {name: c for name, c in columns.items() if c.dtype == np.float64}


def test_freed_result_columns_are_reused_and_live_ones_never_are() -> None:
    # Account columns are 78 KB, over the pool's 64 KiB minimum.
    synthetic, book, engine = bound_in_empty_pool(n_accounts=9_973, seed=3)
    moved = {name: price * 0.9 for name, price in synthetic.prices.items()}
    first = engine.revalue(book, synthetic.prices)
    kept = {name: column.copy() for name, column in _f64_columns(first).items()}
    second = engine.revalue(book, moved)
    # A live result is never handed out: the first is untouched by the second.
    for name, column in _f64_columns(first).items():
        assert column.tobytes() == kept[name].tobytes(), name
        assert not np.shares_memory(column, _f64_columns(second)[name]), name
    # Both results are alive, so the pool has nothing (the Book's own columns are alive
    # too); freeing the second result hands its 18 f64 columns to it (its status and
    # tier codes are under the pool's minimum at this size).
    assert _core.column_pool_held() == (0, 0)
    freed = {column.ctypes.data for column in _f64_columns(second).values()}
    size = sum(column.nbytes for column in _f64_columns(second).values())
    assert len(freed) == 18
    del second
    assert _core.column_pool_held() == (18, size)
    third = engine.revalue(book, synthetic.prices)
    # The third takes them, uncleared, and writes every element.
    assert _core.column_pool_held() == (0, 0)
    assert {column.ctypes.data for column in _f64_columns(third).values()} == freed
    for name, column in _f64_columns(third).items():
        assert column.tobytes() == kept[name].tobytes(), name


def _book_columns(book: vm.Book, config: vm.RiskConfig) -> dict[str, int]:
    """Addresses of a Book's u32 columns bound to ``config``: account rows, config ids."""
    bound = book.bind(config)
    columns = {
        "position_account": book.position_account,
        "holding_account": book.holding_account,
        "position_instrument": bound.position_instrument,
        "holding_asset": bound.holding_asset,
    }
    return {name: column.ctypes.data for name, column in columns.items()}


def test_a_freed_books_columns_serve_the_next_book_of_its_shape() -> None:
    # Two books of different shapes, built in alternation: each one's columns survive the
    # other's requests (a request of another shape does not empty the pool).
    engine = vm.RiskEngine()
    books = {n: synthetic_book(n_accounts=n, seed=5) for n in (9_931, 8_887)}

    def built(n: int) -> vm.Book:
        s = books[n]
        book = vm.Book(s.accounts, s.holdings, s.positions)
        book.bind(engine.config)
        return book

    _core.column_pool_clear()
    first = {n: _book_columns(built(n), engine.config) for n in books}  # each Book freed at once
    # Per book: its four columns, the grouping keys binding freed, and its two
    # groupings' offsets: fourteen in all.
    assert _core.column_pool_held()[0] == 14
    for n in books:
        # Each book takes its seven columns from the pool (three of its positions'
        # length, two of its holdings', two offsets) and binding hands the keys back.
        held = _core.column_pool_held()[0]
        again = built(n)
        assert _core.column_pool_held()[0] == held - 6
        columns = _book_columns(again, engine.config)
        holdings = ("holding_account", "holding_asset")
        assert {columns[c] for c in holdings} == {first[n][c] for c in holdings}, n
        # The book's values, though its columns came from the pool uncleared.
        fresh = vm.Book(books[n].accounts, books[n].holdings, books[n].positions)
        assert np.array_equal(again.position_account, fresh.position_account)
        assert np.array_equal(again.holding_account, fresh.holding_account)
        del again, fresh
    freed = _core.column_pool_clear()
    assert freed > 0
    assert _core.column_pool_held() == (0, 0)


_THREADS = """
import datetime as dt, os, threading, vamargin as vm
from vamargin.synthetic import synthetic_book
def threads():
    tasks = os.listdir("/proc/self/task")
    return {t: open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks}
config = vm.RiskConfig.hk_default()
engine = vm.RiskEngine(config)
def every_kernel():
    for shuffle in (False, True):  # sorted and unsorted groupings
        s = synthetic_book(n_accounts=40_000, seed=5, shuffle_positions=shuffle)
        before = threads()
        book = vm.Book(s.accounts, s.holdings, s.positions)
        engine.revalue(book, s.prices)
        engine.funding(book, {p.symbol: 1e-4 for p in config.perpetuals}, s.prices)
        engine.liquidation_queue(book, s.prices)
        engine.adl_queue(book, s.prices)
        engine.margin_calls(book, s.prices, dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC))
        engine.accrue_interest(book)
        engine.firm_report(book, s.prices, capital=1e9)
        engine.stress(book, s.prices, "smf")
        engine.stress_equity(book, s.prices, "smf")
        new = {t: name for t, name in threads().items() if t not in before}
        print(sorted(new.values()), flush=True)
every_kernel()  # on the main thread: its own pool
worker = threading.Thread(target=every_kernel)  # another thread: the shared pool
worker.start()
worker.join()
"""


@pytest.mark.parametrize(
    ("threads", "started"),
    [
        # The main thread is its pool's only thread: none starts. The shared pool's one
        # thread starts with another thread's first kernel.
        ("1", ["[]", "['vamargin-0']"]),
        # The main thread is thread 0 of its pool, whose thread 1 starts with the first
        # kernel; the shared pool's two threads start with another thread's.
        ("2", ["['vamargin-1']", "['vamargin-0', 'vamargin-1']"]),
    ],
)
def test_every_kernel_runs_on_the_configured_threads(threads: str, started: list[str]) -> None:
    # Work handed to rayon outside the vamargin pools would start rayon's global pool, a
    # thread per core whatever VAMARGIN_NUM_THREADS says (on the main thread, now a
    # thread of its own pool, it would run there: the run on another thread shows it).
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc")
    env = {**os.environ, "VAMARGIN_NUM_THREADS": threads}
    out = subprocess.run(
        [sys.executable, "-c", _THREADS],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.splitlines()
    # Nothing starts after each thread's first book.
    assert out == [started[0], "[]", started[1], "[]"]


def test_grouping_detects_unsorted_positions(small_book) -> None:  # type: ignore[no-untyped-def]
    book, _, _ = small_book
    bound = book.bind(vm.RiskConfig.hk_default())
    assert not bound.position_groups.is_sorted
    assert bound.holding_groups.is_sorted


def test_demo_runs_the_default_book_and_reports_statuses() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "vamargin.cli", "demo", "--accounts", "20000"],
        check=True,
        capture_output=True,
        text=True,
    )
    out = completed.stdout
    assert "20,000 accounts" in out
    for status in vm.STATUSES:
        assert status in out
    assert "positions/s" in out
    assert "[3/6] revalue" in completed.stderr
    assert "ledger balance: 0" in out
    assert "ledger balances: [0] per asset" in out
    counts = [int(line.split()[1].replace(",", "")) for line in out.splitlines()
              if line.strip().split(" ")[0] in vm.STATUSES]  # fmt: skip
    assert sum(counts) == 20_000


def test_demo_config_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[asset]]\nsymbol = "BTC"\nclass = "va"\nminor_unit = 1e-8\n'
                   "eligible = true\ninitial_haircut = 0.5\n")  # fmt: skip
    completed = subprocess.run(
        [sys.executable, "-m", "vamargin.cli", "demo", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "asset[BTC].initial_haircut" in completed.stderr
