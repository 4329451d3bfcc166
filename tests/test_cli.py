"""The installed ``vamargin`` console script over book files.

Each command runs as a subprocess on small Parquet and CSV books written here; its output
file must equal what the engine computes in-process on the same tables, exactly. User
errors must end with exit status 2 and one line on stderr naming the file, the column and
the row, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

import vamargin as vm
from vamargin import scenarios
from vamargin.cli import Stages
from vamargin.files import read_table, write_table
from vamargin.synthetic import synthetic_book

ENGINE = vm.RiskEngine()
SCRIPT = shutil.which("vamargin", path=str(Path(sys.executable).parent))
RATES = {"BTC-USDT-PERP": 0.0001, "ETH-USDT-PERP": -0.00025, "BTC-USD-PERP": 0.0003,
         "ETH-USD-PERP": 0.00005}  # fmt: skip


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None, "the vamargin console script is not installed in this venv"
    return subprocess.run(
        [SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    completed = run(*args)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    return completed


def fails(*args: str | Path) -> str:
    """Runs a command that must fail with a user error; returns its error line."""
    completed = run(*args)
    assert completed.returncode == 2, (completed.stdout, completed.stderr)
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    # Progress lines of the stages that ran (a failed one says so), then one error line.
    assert all(line.startswith("[") for line in lines[:-1]), completed.stderr
    assert lines[-1].startswith("vamargin: "), completed.stderr
    return lines[-1]


def read_back(path: Path) -> pa.Table:
    if path.suffix == ".csv":
        return pa_csv.read_csv(path)
    return pq.read_table(path)


def assert_same(written: pa.Table, expected: vm.Table, *, exact_types: bool = True) -> None:
    """Every column of ``expected`` equals the file's, exactly (strings as strings); a
    CSV read back infers its types (a float column of whole numbers comes back as int64),
    so only the values are compared then."""
    assert written.column_names == expected.columns
    assert written.num_rows == len(expected)
    for name in expected.columns:
        want = expected[name]
        got = written.column(name).to_numpy(zero_copy_only=False)
        if want.dtype.kind in "US":
            assert [str(v) for v in got] == want.tolist(), name
        elif want.dtype.kind == "M":
            assert np.array_equal(got.astype("datetime64[us]"), want.astype("datetime64[us]"))
        else:
            assert np.array_equal(got, want, equal_nan=True), name
            if exact_types:
                assert got.dtype == want.dtype, name


# -- books on disk ------------------------------------------------------------------------


class BookFiles:
    """A synthetic book written once as Parquet and once as CSV."""

    def __init__(self, root: Path, fmt: str) -> None:
        synthetic = synthetic_book(n_accounts=300, seed=11)
        ext = {"parquet": ".parquet", "csv": ".csv"}[fmt]
        self.root = root
        self.ext = ext
        self.accounts = root / f"accounts{ext}"
        self.holdings = root / f"holdings{ext}"
        self.positions = root / f"positions{ext}"
        self.prices = root / f"prices{ext}"
        self.rates = root / f"rates{ext}"
        write_table(synthetic.accounts, self.accounts)
        write_table(synthetic.holdings, self.holdings)
        write_table(synthetic.positions, self.positions)
        write_table(
            pa.table({"symbol": list(synthetic.prices), "price": list(synthetic.prices.values())}),
            self.prices,
        )
        write_table(pa.table({"instrument": list(RATES), "rate": list(RATES.values())}), self.rates)
        # The engine's view of the same files: what the command must reproduce.
        self.book = vm.Book(
            read_table(self.accounts, "accounts"),
            read_table(self.holdings, "holdings"),
            read_table(self.positions, "positions"),
        )
        self.price_map = synthetic.prices

    def args(self) -> list[str | Path]:
        return ["--accounts", self.accounts, "--holdings", self.holdings,
                "--positions", self.positions, "--prices", self.prices]  # fmt: skip


@pytest.fixture(scope="module", params=["parquet", "csv"])
def files(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> BookFiles:
    return BookFiles(tmp_path_factory.mktemp(request.param), request.param)


# -- commands -------------------------------------------------------------------------------


def test_revalue_writes_the_engines_figures_exactly(files: BookFiles) -> None:
    out = files.root / f"accounts_out{files.ext}"
    positions_out = files.root / f"positions_out{files.ext}"
    completed = ok("revalue", *files.args(), "--out", out, "--positions-out", positions_out)
    expected = ENGINE.revalue(files.book, files.price_map)
    exact = files.ext != ".csv"
    assert_same(read_back(out), expected.accounts, exact_types=exact)
    assert_same(read_back(positions_out), expected.positions, exact_types=exact)
    counts = dict(zip(*np.unique(expected.accounts["status"], return_counts=True), strict=True))
    for status, count in counts.items():
        assert f"  {status:<13} {count:>9,}" in completed.stdout
    assert "300 accounts" in completed.stdout
    assert "[3/4] revalue" in completed.stderr


def test_funding_writes_per_account_postings_exactly(files: BookFiles) -> None:
    out = files.root / f"funding{files.ext}"
    completed = ok("funding", *files.args(), "--rates", files.rates, "--out", out)
    expected = ENGINE.funding(files.book, RATES, files.price_map)
    assert_same(read_back(out), expected.by_account, exact_types=files.ext != ".csv")
    assert "ledger balance: 0" in completed.stdout
    for row in range(len(expected.by_instrument)):
        entry = expected.by_instrument.row(row)
        assert f"{entry['received']:>13,} {entry['paid']:>13,}" in completed.stdout


def test_stress_with_capital_equals_one_engine_call(files: BookFiles) -> None:
    out = files.root / f"stress{files.ext}"
    equity_out = files.root / f"equity{files.ext}"
    capital = 2_000_000.0
    completed = ok("stress", *files.args(), "--capital", str(capital), "--out", out,
                   "--equity-out", equity_out, "--worst", "7")  # fmt: skip
    standard = scenarios.standard()
    expected = ENGINE.stress(files.book, files.price_map, standard, excess_liquid_capital=capital)
    exact = files.ext != ".csv"
    assert_same(read_back(out), expected, exact_types=exact)
    assert len(expected) == len(standard)
    equity = ENGINE.stress_equity(files.book, files.price_map, standard, worst=7)
    assert_same(read_back(equity_out), equity, exact_types=exact)
    worst = int(np.argmax(expected["uncovered_loss"]))
    assert f"worst: {expected['scenario'][worst]}" in completed.stdout
    assert f"Stress: {len(standard)} scenarios" in completed.stdout
    assert f"stress ({len(standard)} scenarios)" in completed.stderr


def test_stress_reads_shipped_sets_and_scenario_files(files: BookFiles, tmp_path: Path) -> None:
    out = tmp_path / "smf.csv"
    ok("stress", *files.args(), "--scenarios", "smf", "--out", out)
    smf = ENGINE.stress(files.book, files.price_map, scenarios.smf_falls())
    assert_same(read_back(out), smf, exact_types=False)
    toml = tmp_path / "mine.toml"
    toml.write_text('["BTC crash"]\nBTC = -0.4\n\n["ETH pump"]\nETH = 0.25\nBTC = 0.05\n')
    long = tmp_path / "mine.csv"
    long.write_text(
        "scenario,asset,move\nBTC crash,BTC,-0.4\nETH pump,ETH,0.25\nETH pump,BTC,0.05\n"
    )
    mine = {"BTC crash": {"BTC": -0.4}, "ETH pump": {"ETH": 0.25, "BTC": 0.05}}
    expected = ENGINE.stress(files.book, files.price_map, mine)
    for source in (toml, long):
        out = tmp_path / f"from_{source.suffix[1:]}.parquet"
        completed = ok("stress", *files.args(), "--scenarios", source, "--out", out)
        assert_same(read_back(out), expected)
        assert "capital_shortfall" not in read_back(out).column_names
        assert "BTC crash" in completed.stdout


def test_calls_as_of_utc(files: BookFiles) -> None:
    out = files.root / "calls.parquet"
    sales = files.root / f"sales{files.ext}"
    completed = ok("calls", *files.args(), "--as-of", "2026-11-21T08:00", "--out", out,
                   "--sales-out", sales)  # fmt: skip
    as_of = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.UTC)
    expected = ENGINE.margin_calls(files.book, files.price_map, as_of)
    assert len(expected) > 0
    assert_same(read_back(out), expected)
    assert_same(read_back(sales), expected.forced_sales, exact_types=files.ext != ".csv")
    assert "2026-11-22T08:00:00 UTC" in completed.stdout  # 24 calendar hours later
    # An offset is honoured: 16:00 in Hong Kong is 08:00 UTC.
    again = files.root / "calls_hk.parquet"
    ok("calls", *files.args(), "--as-of", "2026-11-21T16:00+08:00", "--out", again)
    assert_same(read_back(again), expected)


def test_demo_runs_every_stage_and_the_stress() -> None:
    completed = ok("demo", "--accounts", "2000")
    out = completed.stdout
    assert "vamargin demo — 2,000 accounts" in out
    assert "ledger balance: 0" in out
    assert "Liquidation queue:" in out
    n = len(scenarios.standard())
    assert f"Stress: {n} scenarios" in out
    assert "SMF 50% fall" in out
    assert "capital shortfall in" in out
    assert f"[6/6] stress ({n} scenarios)" in completed.stderr


# -- a hand-made CSV book -------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def hand_book(tmp_path: Path) -> dict[str, Path]:
    """The README's book: account 1 borrows 400,000 HKD against 2 BTC; account 2 trades
    perpetuals on 25,000 USDT (one cross, one isolated position)."""
    return {
        "accounts": write(tmp_path / "accounts.csv",
                          "account_id,investor_class,margin_client,credit_approved\n"
                          "1,individual_pi,true,true\n2,corporate_pi,False,0\n"),
        "holdings": write(tmp_path / "holdings.csv",
                          "account_id,asset,amount\n1,BTC,2\n1,HKD,-400000\n2,USDT,25000\n"),
        "positions": write(tmp_path / "positions.csv",
                           "account_id,instrument,qty,entry_price,isolated_margin\n"
                           "2,BTC-USDT-PERP,500,95000,\n2,ETH-USD-PERP,-3000,3500,1.5\n"),
        "prices": write(tmp_path / "prices.csv",
                        "symbol,price\nBTC,96400\nHKD,0.1285\nUSDT,1\nETH,3380\n"
                        "BTC-USDT-PERP,96450\nETH-USD-PERP,3379\n"),
    }  # fmt: skip


def book_args(paths: dict[str, Path], **replace: Path | None) -> list[str | Path]:
    merged: dict[str, Path | None] = {**paths, **replace}
    args: list[str | Path] = []
    for name, path in merged.items():
        if path is not None:
            args += [f"--{name}", path]
    return args


def test_hand_made_csv_book_has_hand_checked_figures(
    hand_book: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    ok("revalue", *book_args(hand_book), "--out", out)
    accounts = read_back(out).to_pydict()
    # 2 BTC at 96,400 less a loan of 400,000 HKD at 0.1285 USD.
    assert accounts["equity"][0] == 2 * 96_400 - 51_400
    assert accounts["debit"][0] == 51_400
    assert accounts["collateral_value"][0] == 192_800
    assert accounts["ltv"][0] == 51_400 / 192_800
    assert accounts["status"] == ["normal", "normal"]
    # The cross BTC-USDT position (500 × 0.001 BTC, bought at 95,000, marked 96,450).
    positions = tmp_path / "positions_out.parquet"
    ok("revalue", *book_args(hand_book), "--positions-out", positions)
    upnl = read_back(positions).column("upnl").to_pylist()
    assert upnl[0] == pytest.approx(500 * 0.001 * (96_450 - 95_000), rel=1e-12)
    # The empty isolated_margin cell is a missing value: a cross position.
    assert read_table(hand_book["positions"], "positions")["isolated_margin"][0].as_py() is None


def test_tables_a_book_does_not_have_may_be_omitted(
    hand_book: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cash_only.parquet"
    accounts = write(tmp_path / "solo.csv", "account_id,investor_class\n7,retail\n")
    ok("revalue", "--accounts", accounts, "--prices", hand_book["prices"], "--out", out)
    assert read_back(out).column("equity").to_pylist() == [0.0]
    out = tmp_path / "no_positions.parquet"
    ok("revalue", *book_args(hand_book, positions=None), "--out", out)
    assert read_back(out).column("equity").to_pylist() == [2 * 96_400 - 51_400, 25_000]


# -- errors ---------------------------------------------------------------------------------


def test_missing_file(hand_book: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.parquet"
    line = fails("revalue", *book_args(hand_book, holdings=missing))
    assert line == f"vamargin: FileError: {missing}: no such file"


def test_unknown_extension(hand_book: dict[str, Path], tmp_path: Path) -> None:
    odd = write(tmp_path / "prices.xlsx", "symbol,price\n")
    line = fails("revalue", *book_args(hand_book, prices=odd))
    assert line.startswith(f"vamargin: FileError: {odd}: cannot tell the prices file's format")


def test_missing_column_names_file_and_column(hand_book: dict[str, Path], tmp_path: Path) -> None:
    holdings = write(tmp_path / "h.csv", "account_id,asset,qty\n1,BTC,2\n")
    line = fails("revalue", *book_args(hand_book, holdings=holdings))
    assert line.startswith(f"vamargin: DataError: {holdings}: holdings: missing column 'amount'")


def test_unparsable_csv_value_names_file_column_and_row(
    hand_book: dict[str, Path], tmp_path: Path
) -> None:
    holdings = write(tmp_path / "h.csv",
                     "account_id,asset,amount\n1,BTC,2\n1,HKD,-400000\n2,USDT,25k\n")  # fmt: skip
    line = fails("revalue", *book_args(hand_book, holdings=holdings))
    assert line == f"vamargin: FileError: {holdings}: holdings.amount row 2: '25k' is not a number"
    accounts = write(tmp_path / "a.csv",
                     "account_id,investor_class,margin_client\n1,retail,yes\n")  # fmt: skip
    line = fails("revalue", *book_args(hand_book, accounts=accounts))
    assert line.endswith(f"{accounts}: accounts.margin_client row 0: 'yes' is not true or false")


def test_engine_value_error_is_prefixed_with_its_file(
    hand_book: dict[str, Path], tmp_path: Path
) -> None:
    positions = tmp_path / "p.parquet"
    table = read_table(hand_book["positions"], "positions")
    write_table(table.set_column(3, "entry_price", pa.array([95_000.0, -1.0])), positions)
    line = fails("revalue", *book_args(hand_book, positions=positions))
    assert line == (
        f"vamargin: DataError: {positions}: positions.entry_price row 1: -1.0 is not a price > 0"
    )
    # A missing cell (an empty CSV field) is a missing value at its row.
    holdings = write(tmp_path / "h.csv", "account_id,asset,amount\n1,BTC,2\n1,HKD,\n")
    line = fails("revalue", *book_args(hand_book, holdings=holdings))
    assert line == f"vamargin: DataError: {holdings}: holdings.amount row 1: missing value"


def test_prices_errors_name_the_prices_file(hand_book: dict[str, Path], tmp_path: Path) -> None:
    prices = write(tmp_path / "px.csv", "symbol,price\nBTC,96400\nHKD,0.1285\nUSDT,-1\n")
    line = fails("revalue", *book_args(hand_book, prices=prices))
    assert line.startswith(f"vamargin: DataError: {prices}: prices.price row 2: -1.0 is not")
    line = fails("funding", *book_args(hand_book), "--rates",
                 write(tmp_path / "r.csv", "instrument,rate\nBTC-USDT-PERP,0.0001\n"))  # fmt: skip
    assert line.startswith(f"vamargin: DataError: {tmp_path / 'r.csv'}: rates: missing")
    assert "ETH-USD-PERP" in line


def test_unknown_scenario_set(hand_book: dict[str, Path]) -> None:
    line = fails("stress", *book_args(hand_book), "--scenarios", "crash")
    assert line.startswith("vamargin: DataError: scenarios: 'crash' is neither a shipped set")
    for name in scenarios.SETS:
        assert name in line


def test_bad_scenario_file_names_file_and_row(hand_book: dict[str, Path], tmp_path: Path) -> None:
    bad = write(tmp_path / "s.csv", "scenario,asset,move\nA,BTC,-0.2\nA,ETH,lots\n")
    line = fails("stress", *book_args(hand_book), "--scenarios", bad)
    assert line == f"vamargin: DataError: {bad}: move row 1: 'lots' is not a number"


def test_missing_config_and_bad_as_of(hand_book: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "risk.toml"
    line = fails("revalue", *book_args(hand_book), "--config", config)
    assert line == f"vamargin: FileError: {config}: no such file"
    line = fails("calls", *book_args(hand_book), "--as-of", "tomorrow")
    assert line.startswith("vamargin: DataError: --as-of: 'tomorrow' is not an ISO date-time")


def test_config_error_names_the_config_file(hand_book: dict[str, Path], tmp_path: Path) -> None:
    config = write(tmp_path / "risk.toml", 'reporting_currency = 5\n[[asset]]\nsymbol = "USD"\n')
    line = fails("revalue", *book_args(hand_book), "--config", config)
    assert line.startswith(f"vamargin: ConfigError: {config}: ")


def test_help_lists_every_command() -> None:
    completed = ok("--help")
    for command in ("demo", "revalue", "funding", "stress", "calls", "report"):
        assert command in completed.stdout


def test_readme_command_line_block_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    assert SCRIPT is not None
    env = {**os.environ, "PATH": f"{Path(SCRIPT).parent}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    for name in ("figures.parquet", "position_figures.csv", "funding.csv", "stress.csv",
                 "worst.csv", "calls.parquet", "sales.csv", "risk.html"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    # The example's broker is short of capital in its worst scenarios, and breaches 5×.
    stress = pa_csv.read_csv(tmp_path / "stress.csv")
    assert max(stress.column("capital_shortfall").to_pylist()) > 0
    assert "max_loans_to_capital" in (tmp_path / "risk.html").read_text("utf-8")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_stage_progress_bar_only_on_a_terminal(terminal: bool) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    stages = Stages(total=2, stream=stream)
    with stages.stage("stress (4 scenarios)") as progress:
        for done in range(1, 5):
            progress(done, 4)
    with pytest.raises(vm.DataError), stages.stage("write"):
        raise vm.DataError("boom")
    text = stream.getvalue()
    assert ("[############------------] 2/4" in text) is terminal
    assert text.endswith(" failed\n")
    last = text.replace("\x1b[K", "").rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert last == "[2/2] write ... failed"
    finished = text.split("\n")[0].split("\r")[-1].replace("\x1b[K", "")
    assert re.fullmatch(r"\[1/2\] stress \(4 scenarios\) \.\.\. \d+\.\d{3} s", finished)
