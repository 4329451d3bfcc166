"""The ``vamargin`` command line.

- ``vamargin demo`` builds the embedded synthetic Hong Kong book (seeded, so every run
  values the same book), revalues it, settles one funding interval, runs the liquidation
  queue and the standard stress scenarios, and prints a one-screen summary of each;
- ``revalue``, ``funding``, ``stress``, ``calls`` and ``report`` run on a book given as
  files: ``--accounts`` (required), ``--holdings`` and ``--positions`` (omit a table the
  book does not have) and ``--prices`` (``symbol, price``), each Parquet, CSV or Arrow IPC
  by extension (see ``vamargin.files``); results go to ``--out`` (Parquet, CSV or Arrow
  by extension) and a summary to stdout.

Progress goes to stderr (numbered stages with their wall time; a bar on a terminal for
multi-step work). User errors — a missing or unreadable file, a missing column, a bad
value, an unknown scenario set, a bad configuration — end with one line on stderr naming
the file, the column and the row, and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from vamargin import _core, scenarios
from vamargin.book import Book
from vamargin.config import RiskConfig
from vamargin.engine import STATUSES, Revaluation, RiskEngine
from vamargin.errors import ConfigError, DataError, MarginError
from vamargin.files import FileError, file_format, locate, read_table, write_table
from vamargin.firm import largest_positive
from vamargin.funding import FundingSettlement, interest_rates, read_per_instrument
from vamargin.market import read_prices
from vamargin.synthetic import synthetic_book
from vamargin.tables import Table

Progress = Callable[[int, int], None]
"""``progress(done, total)``: reports how far a multi-step stage has got."""


class Stages:
    """Numbered progress lines on stderr, each closed with its wall time. A stage made
    of steps gets a progress callback; on a terminal it draws a bar while it runs."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[Progress]:
        self.done += 1
        head = f"[{self.done}/{self.total}] {name} ..."
        self.stream.write(head)
        self.stream.flush()
        interactive = self.stream.isatty()
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if not interactive or total <= 0:
                return
            width = 24
            filled = round(width * done / total)
            bar = "#" * filled + "-" * (width - filled)
            elapsed = time.perf_counter() - start
            self.stream.write(f"\r{head} [{bar}] {done}/{total} {elapsed:.1f} s\x1b[K")
            self.stream.flush()

        try:
            yield progress
        except BaseException:
            # The error's own line follows on stderr; close this one first.
            self.stream.write(f"\r{head}\x1b[K failed\n" if interactive else " failed\n")
            self.stream.flush()
            raise
        elapsed = time.perf_counter() - start
        self.seconds[name] = elapsed
        if interactive:
            self.stream.write(f"\r{head}\x1b[K")
        self.stream.write(f" {elapsed:.3f} s\n")
        self.stream.flush()


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _millions(value: float) -> str:
    return f"{value / 1e6:,.1f}"


# -- summaries --------------------------------------------------------------------------------


def _summary(
    title: str, book: Book, result: Revaluation, stages: Stages, config: RiskConfig, top: int
) -> str:
    accounts = result.accounts
    positions = result.positions
    status = accounts.codes("status").codes
    counts = np.bincount(status, minlength=len(STATUSES))
    ccy = config.reporting_currency
    lines = [
        "",
        f"{title} — {book.n_accounts:,} accounts, {book.n_holdings:,} holdings, "
        f"{book.n_positions:,} positions ({_core.thread_count()} threads)",
        "",
        "Status          accounts   share",
    ]
    for name, count in zip(STATUSES, counts, strict=True):
        lines.append(f"  {name:<13} {count:>9,}  {count / max(book.n_accounts, 1):6.2%}")
    equity = accounts["equity"]
    lines += [
        "",
        f"Equity            {_money(float(equity.sum())):>20} {ccy}",
        f"Margin loans      {_money(float(accounts['debit'].sum())):>20} {ccy}",
        f"Collateral        {_money(float(accounts['collateral_value'].sum())):>20} {ccy}",
        f"Calls outstanding {_money(float(accounts['call_amount'].sum())):>20} {ccy}",
        f"Negative equity   {_money(float(-equity[equity < 0].sum())):>20} {ccy}",
        f"Perpetuals        {book.n_positions:>20,} positions, "
        f"{int(np.isnan(positions['liquidation_price']).sum()):,} with no liquidation price",
    ]
    deficit = accounts["maintenance_requirement"] - equity
    worst = largest_positive(deficit, top)
    if len(worst):
        lines += ["", f"Biggest deficits against maintenance ({ccy})"]
        lines.append("  account_id        equity   maintenance       deficit  status")
        for row in worst:
            lines.append(
                f"  {accounts['account_id'][row]:>10} {equity[row]:>13,.0f} "
                f"{accounts['maintenance_requirement'][row]:>13,.0f} {deficit[row]:>13,.0f}  "
                f"{STATUSES[status[row]]}"
            )
    revalue_seconds = stages.seconds["revalue"]
    lines += [
        "",
        "Timing",
        *(f"  {name:<22} {seconds:8.3f} s" for name, seconds in stages.seconds.items()),
        f"  revaluation throughput {book.n_positions / max(revalue_seconds, 1e-9):>12,.0f} "
        "positions/s",
    ]
    return "\n".join(lines)


DEMO_INSURANCE_FUND = {"USDT": 2_000_000.0, "BTC": 20.0, "ETH": 300.0, "USD": 500_000.0}
"""The demo platform's insurance fund (major units per asset)."""

DEMO_CAPITAL = 1_000_000_000.0
"""The demo broker's capital and excess liquid capital (reporting currency): the firm
report's denominator and the stress test's buffer against the broker's losses."""


def _funding_summary(settlement: FundingSettlement, rates: Mapping[str, float]) -> str:
    lines = ["", "Funding (one interval; minor units of the settle asset)"]
    lines.append("  instrument         rate      received          paid     house   dust")
    table = settlement.by_instrument
    for row in range(len(table)):
        r = table.row(row)
        rate = rates.get(r["instrument"], math.nan)
        lines.append(
            f"  {r['instrument']:<15} {rate:>8.4%} {r['received']:>13,} "
            f"{r['paid']:>13,} {r['house']:>9,} {r['dust']:>6,}"
        )
    balance = sum(settlement.ledger()["amount"].tolist())
    lines.append(f"  ledger balance: {balance} (every posting sums to zero)")
    return "\n".join(lines)


def _liquidation_summary(engine: RiskEngine, book: Book, prices: dict[str, float]) -> str:
    run = engine.liquidate(book, prices, insurance_fund=DEMO_INSURANCE_FUND)
    queue = run.queue
    lines = [
        "",
        f"Liquidation queue: {len(queue):,} entries "
        f"({int((queue['scope'] == 'isolated').sum()):,} isolated positions), "
        f"{int(queue['bankrupt'].sum()):,} bankrupt, "
        f"{int(queue['full_close'].sum()):,} full closes",
        "  rank  account_id     scope        health       deficit  bankrupt",
    ]
    for row in range(min(5, len(queue))):
        r = queue.row(row)
        lines.append(
            f"  {r['rank']:>4} {r['account_id']:>11} {r['scope']:>9} {r['health']:>13.3f} "
            f"{r['deficit']:>13,.0f}  {r['bankrupt']}"
        )
    lines.append("  insurance fund (minor units)  before → after")
    for asset, before in run.fund_before.items():
        if before or run.fund_after[asset]:
            lines.append(f"    {asset:<6} {before:>22,} → {run.fund_after[asset]:,}")
    lines.append(
        f"  auto-deleveraging fills: {len(run.deleverage):,}; ledger balances: "
        f"{sorted(set(run.totals_by_asset().values()))} per asset"
    )
    return "\n".join(lines)


STRESS_ROWS = 20
"""Scenarios listed in a stress summary (the rest are in the output file)."""


def _stress_rows(table: Table, rows: int) -> npt.NDArray[np.int64]:
    """Which scenarios a summary lists, in set order: all of them when they fit; else
    every scenario outside the grid and grid points evenly spaced along it (a coarse
    curve); else, for a set without a grid, the worst by uncovered loss."""
    n = len(table)
    if n <= rows:
        return np.arange(n, dtype=np.int64)
    shocks = scenarios.grid_shocks()
    on_grid = np.array([name in shocks for name in table["scenario"]], dtype=np.bool_)
    named = np.flatnonzero(~on_grid)
    grid_rows = np.flatnonzero(on_grid)
    slots = rows - len(named)
    if len(grid_rows) and slots >= 3:
        step = math.ceil(len(grid_rows) / slots)
        return np.sort(np.concatenate([named, grid_rows[::step]])).astype(np.int64)
    liquidations = table["liquidation"] + table["isolated_liquidations"]
    order = np.lexsort((np.arange(n), -liquidations, -table["uncovered_loss"]))
    return np.sort(order[:rows]).astype(np.int64)


def _stress_summary(
    table: Table, ccy: str, *, rows: int = STRESS_ROWS, rest: str = "in the output file (--out)"
) -> str:
    n = len(table)
    uncovered = table["uncovered_loss"]
    liquidations = table["liquidation"] + table["isolated_liquidations"]
    shown = _stress_rows(table, rows)
    has_capital = "capital_shortfall" in table
    lines = [
        "",
        f"Stress: {n} scenarios (amounts in millions of {ccy}; liquidations: accounts "
        "+ isolated positions)",
        "  scenario                   normal  restricted    call  liquid.  isolated"
        "     calls  uncovered  insurance  broker" + ("  shortfall" if has_capital else ""),
    ]
    names = table["scenario"]
    for row in shown:
        line = (
            f"  {names[row]:<24} {table['normal'][row]:>8,} {table['restricted'][row]:>11,} "
            f"{table['margin_call'][row]:>7,} {table['liquidation'][row]:>8,} "
            f"{table['isolated_liquidations'][row]:>9,} "
            f"{_millions(float(table['call_amount'][row])):>9} "
            f"{_millions(float(uncovered[row])):>10} "
            f"{_millions(float(table['insurance_draw'][row])):>10} "
            f"{_millions(float(table['broker_loss'][row])):>7}"
        )
        if has_capital:
            line += f" {_millions(float(table['capital_shortfall'][row])):>10}"
        lines.append(line)
    if n > len(shown):
        lines.append(f"  … {n - len(shown)} more scenarios {rest}")
    worst = int(np.lexsort((np.arange(n), -liquidations, -uncovered))[0])
    lines.append(
        f"  worst: {names[worst]} — uncovered loss {_money(float(uncovered[worst]))} {ccy}, "
        f"{int(liquidations[worst]):,} liquidations"
    )
    if has_capital:
        short = table["capital_shortfall"]
        breaching = int((short > 0).sum())
        lines.append(
            f"  capital shortfall in {breaching} of {n} scenarios"
            + (f" (largest {_money(float(short.max()))} {ccy})" if breaching else "")
        )
    return "\n".join(lines)


def _calls_summary(calls: Table, forced_steps: int, as_of: dt.datetime, ccy: str, top: int) -> str:
    status = calls["status"]
    amounts = calls["call_amount"]
    deadline = str(calls["deadline"][0].astype("datetime64[s]")) + " UTC" if len(calls) else "none"
    lines = [
        "",
        f"Margin calls as of {as_of.isoformat()} — {len(calls):,} accounts called "
        f"({int((status == 'margin_call').sum()):,} margin_call, "
        f"{int((status == 'liquidation').sum()):,} liquidation), deadline {deadline}",
        f"  total call amount {_money(float(amounts.sum())):>20} {ccy}",
        f"  forced sales      {int(calls['forced'].sum()):>20,} accounts, "
        f"{forced_steps:,} sale steps",
    ]
    order = np.argsort(-amounts, kind="stable")[:top]
    if len(order):
        lines += ["", f"Largest calls ({ccy})", "  account_id        equity   call_amount  status"]
        for row in order:
            lines.append(
                f"  {calls['account_id'][row]:>10} {calls['equity'][row]:>13,.0f} "
                f"{amounts[row]:>13,.0f}  {status[row]}"
            )
    return "\n".join(lines)


# -- inputs -----------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> RiskConfig:
    if not args.config:
        return RiskConfig.hk_default()
    path = Path(args.config)
    if not path.is_file():
        raise FileError(path, "no such file" if not path.exists() else "not a file")
    try:
        return RiskConfig.from_toml(path)
    except ConfigError as error:
        message = str(error)
        if message.startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {message}") from None


@dataclass(frozen=True)
class Inputs:
    book: Book
    prices: dict[str, float]


def _read_book(args: argparse.Namespace, stages: Stages) -> Inputs:
    with stages.stage("read files"):
        tables = {
            name: read_table(path, name)
            for name in ("accounts", "holdings", "positions", "prices")
            if (path := getattr(args, name)) is not None
        }
        prices = read_prices(tables["prices"])
    with stages.stage("validate book"):
        book = Book(tables["accounts"], tables.get("holdings"), tables.get("positions"))
    return Inputs(book, prices)


def _write(table: Table | pa.Table, path: str | None, what: str) -> str:
    if path is None:
        return ""
    write_table(table, path)
    return f"\nWrote {what} to {path}"


def _outputs(*paths: str | None) -> None:
    """Checks the output formats before any work is done."""
    for path in paths:
        if path is not None:
            file_format(path, role="output")


def _utc(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"--as-of: {text!r} is not an ISO date-time (2026-11-21T08:00)") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive amount")
    return value


def _scenario_set(source: str) -> dict[str, dict[str, float]]:
    return scenarios.load(source)


# -- commands ---------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    config = _config(args)
    stages = Stages(total=6 + (args.save is not None))
    with stages.stage("generate synthetic book"):
        synthetic = synthetic_book(config, n_accounts=args.accounts, seed=args.seed)
    saved = ""
    if args.save is not None:
        with stages.stage(f"save the book to {args.save}"):
            saved = _save_book(synthetic, interest_rates(config), Path(args.save))
    with stages.stage("validate book"):
        book = Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    engine = RiskEngine(config)
    prices = synthetic.prices
    with stages.stage("revalue"):
        result = engine.revalue(book, prices)
    with stages.stage("settle funding"):
        rates = interest_rates(config)
        funding = engine.funding(book, rates, prices)
    with stages.stage("liquidate"):
        liquidation = _liquidation_summary(engine, book, prices)
    standard = scenarios.standard()
    with stages.stage(f"stress ({len(standard)} scenarios)") as progress:
        stress = engine.stress(
            book, prices, standard, excess_liquid_capital=DEMO_CAPITAL, progress=progress
        )
    print(_summary("vamargin demo", book, result, stages, config, args.top))
    print(_funding_summary(funding, rates))
    print(liquidation)
    print(_stress_summary(stress, config.reporting_currency, rest="(vamargin stress --out)"))
    print(saved, end="")
    return 0


def _save_book(synthetic: Any, rates: Mapping[str, float], folder: Path) -> str:
    """Writes the synthetic book as the files the other commands read."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FileError(folder, f"cannot create the folder: {error.strerror or error}") from None
    tables = {
        "accounts.parquet": synthetic.accounts,
        "holdings.parquet": synthetic.holdings,
        "positions.parquet": synthetic.positions,
        "prices.csv": pa.table(
            {"symbol": list(synthetic.prices), "price": list(synthetic.prices.values())}
        ),
        "rates.csv": pa.table({"instrument": list(rates), "rate": list(rates.values())}),
    }
    for name, table in tables.items():
        write_table(table, folder / name)
    return f"\nWrote the book to {folder}/: {', '.join(tables)}\n"


def _revalue(args: argparse.Namespace) -> int:
    _outputs(args.out, args.positions_out)
    config = _config(args)
    stages = Stages(total=3 + (args.out is not None or args.positions_out is not None))
    inputs = _read_book(args, stages)
    engine = RiskEngine(config)
    with stages.stage("revalue"):
        result = engine.revalue(inputs.book, inputs.prices)
    notes = ""
    if args.out or args.positions_out:
        with stages.stage("write"):
            notes += _write(result.accounts, args.out, "account figures")
            notes += _write(result.positions, args.positions_out, "position figures")
    print(_summary("vamargin revalue", inputs.book, result, stages, config, args.top) + notes)
    return 0


def _funding(args: argparse.Namespace) -> int:
    _outputs(args.out)
    config = _config(args)
    stages = Stages(total=3 + (args.out is not None))
    inputs = _read_book(args, stages)
    engine = RiskEngine(config)
    with stages.stage("settle funding"):
        rates_table = read_table(args.rates, "rates")
        rates = read_per_instrument(rates_table, "rates", "rate")
        settlement = engine.funding(inputs.book, rates_table, inputs.prices)
    notes = ""
    if args.out:
        with stages.stage("write"):
            notes = _write(settlement.by_account, args.out, "per-account funding")
    accounts = settlement.by_account
    head = (
        f"\nvamargin funding — {inputs.book.n_positions:,} positions, "
        f"{len(accounts):,} account postings"
    )
    print(head + _funding_summary(settlement, rates) + notes)
    return 0


def _stress(args: argparse.Namespace) -> int:
    _outputs(args.out, args.equity_out)
    config = _config(args)
    scenario_set = _scenario_set(args.scenarios)
    extra = args.out is not None or args.equity_out is not None
    stages = Stages(total=3 + (args.equity_out is not None) + extra)
    inputs = _read_book(args, stages)
    engine = RiskEngine(config)
    with stages.stage(f"stress ({len(scenario_set)} scenarios)") as progress:
        table = engine.stress(
            inputs.book,
            inputs.prices,
            scenario_set,
            excess_liquid_capital=args.capital,
            progress=progress,
        )
    equity = None
    if args.equity_out is not None:
        with stages.stage(f"equity of the {args.worst} worst accounts"):
            equity = engine.stress_equity(
                inputs.book, inputs.prices, scenario_set, worst=args.worst
            )
    notes = ""
    if extra:
        with stages.stage("write"):
            notes += _write(table, args.out, "stress results")
            if equity is not None:
                notes += _write(equity, args.equity_out, "worst accounts' stressed equity")
    book = inputs.book
    head = (
        f"\nvamargin stress — {book.n_accounts:,} accounts, {book.n_positions:,} positions, "
        f"scenarios: {args.scenarios}"
        + ("" if args.capital is None else f", excess liquid capital {_money(args.capital)}")
    )
    print(head + _stress_summary(table, config.reporting_currency) + notes)
    return 0


def _calls(args: argparse.Namespace) -> int:
    _outputs(args.out, args.sales_out)
    config = _config(args)
    as_of = _utc(args.as_of)
    extra = args.out is not None or args.sales_out is not None
    stages = Stages(total=3 + extra)
    inputs = _read_book(args, stages)
    engine = RiskEngine(config)
    with stages.stage("margin calls"):
        calls = engine.margin_calls(inputs.book, inputs.prices, as_of)
    notes = ""
    if extra:
        with stages.stage("write"):
            notes += _write(calls, args.out, "margin calls")
            notes += _write(calls.forced_sales, args.sales_out, "forced-sale plans")
    summary = _calls_summary(
        calls, len(calls.forced_sales), as_of, config.reporting_currency, args.top
    )
    print(summary + notes)
    return 0


def _report(args: argparse.Namespace) -> int:
    from vamargin import report

    config = _config(args)
    demo = args.accounts is None
    if demo and (args.holdings or args.positions or args.prices):
        raise DataError("--holdings, --positions and --prices need --accounts")
    if not demo and args.prices is None:
        raise DataError("--prices is needed with --accounts")
    if not demo and args.capital is None:
        raise DataError("--capital (the firm's capital) is needed with --accounts")
    scenario_set = _scenario_set(args.scenarios)
    stages = Stages(total=9)
    if demo:
        with stages.stage("generate synthetic book"):
            synthetic = synthetic_book(config, n_accounts=args.demo_accounts, seed=args.seed)
        with stages.stage("validate book"):
            book = Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
        prices = synthetic.prices
        source = f"embedded synthetic HK book (seed {args.seed})"
    else:
        inputs = _read_book(args, stages)
        book, prices = inputs.book, inputs.prices
        source = str(args.accounts)
    capital = DEMO_CAPITAL if args.capital is None else args.capital
    rates = (
        read_per_instrument(read_table(args.rates, "rates"), "rates", "rate")
        if args.rates
        else None
    )
    engine = RiskEngine(config)
    data = report.gather(
        engine,
        book,
        prices,
        capital=capital,
        scenarios=scenario_set,
        rates=rates,
        source=source,
        stage=stages.stage,
    )
    with stages.stage("render"):
        page = report.to_html(data)
    with stages.stage("write"):
        out = Path(args.out)
        try:
            out.write_text(page, encoding="utf-8")
        except OSError as error:
            raise FileError(out, f"cannot write: {error.strerror or error}") from None
    print(report.summary(data))
    print(f"\nWrote the risk report ({len(page) / 1e6:.1f} MB, self-contained HTML) to {out}")
    return 0


# -- parser -----------------------------------------------------------------------------------

BOOK_FILES = ("accounts", "holdings", "positions", "prices", "rates")


def _book_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--config", help="risk configuration TOML (default: embedded HK profile)")
    files = parser.add_argument_group("book files (Parquet .parquet/.pq, CSV .csv, Arrow .arrow)")
    files.add_argument("--accounts", required=required, help="accounts table")
    files.add_argument("--holdings", help="holdings table (omit if the book has none)")
    files.add_argument("--positions", help="perpetual positions table (omit if none)")
    files.add_argument("--prices", required=required, help="prices table: symbol, price")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vamargin",
        description="Margin and risk engine for HK virtual-asset businesses.",
        epilog="Files are Parquet, CSV or Arrow IPC by extension. Run 'vamargin demo' to see "
        "everything on the embedded synthetic book.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="revalue, fund, liquidate and stress the embedded synthetic HK book",
    )
    demo.add_argument(
        "--accounts", type=int, default=220_000, help="accounts (≈4.7 positions each)"
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of the synthetic book")
    demo.add_argument("--top", type=int, default=10, help="deficits to list")
    demo.add_argument("--config", help="risk configuration TOML (default: embedded HK profile)")
    demo.add_argument(
        "--save",
        metavar="DIR",
        help="also write the book as files for the other commands: accounts, holdings and "
        "positions (.parquet), prices and funding rates (.csv)",
    )
    demo.set_defaults(run=_demo, files=False)

    revalue = commands.add_parser("revalue", help="value every account and position")
    _book_arguments(revalue)
    revalue.add_argument("--out", help="account figures (.parquet, .csv or .arrow)")
    revalue.add_argument("--positions-out", help="position figures (.parquet, .csv or .arrow)")
    revalue.add_argument("--top", type=int, default=10, help="deficits to list")
    revalue.set_defaults(run=_revalue, files=True)

    funding = commands.add_parser("funding", help="settle one funding interval")
    _book_arguments(funding)
    funding.add_argument("--rates", required=True, help="funding rates table: instrument, rate")
    funding.add_argument(
        "--out", help="per-account funding: account_id, asset, amount (int64 minor units)"
    )
    funding.set_defaults(run=_funding, files=True)

    stress = commands.add_parser("stress", help="revalue the book under price scenarios")
    _book_arguments(stress)
    stress.add_argument(
        "--scenarios",
        default="standard",
        help="a scenario file (.toml, or .csv with scenario, asset, move) or a shipped set: "
        + ", ".join(scenarios.SETS)
        + " (default: standard)",
    )
    stress.add_argument(
        "--capital",
        type=_positive,
        help="excess liquid capital (reporting currency), for the broker's stressed shortfall",
    )
    stress.add_argument("--out", help="one row per scenario (.parquet, .csv or .arrow)")
    stress.add_argument("--equity-out", help="stressed equity of the worst accounts")
    stress.add_argument("--worst", type=int, default=20, help="accounts in --equity-out")
    stress.set_defaults(run=_stress, files=True)

    calls = commands.add_parser("calls", help="margin calls with deadlines and cures")
    _book_arguments(calls)
    calls.add_argument(
        "--as-of",
        help="ISO date-time of the run, UTC unless it has an offset (default: now)",
    )
    calls.add_argument("--out", help="margin calls (.parquet, .csv or .arrow)")
    calls.add_argument("--sales-out", help="forced-sale plan steps")
    calls.add_argument("--top", type=int, default=10, help="largest calls to list")
    calls.set_defaults(run=_calls, files=True)

    report = commands.add_parser(
        "report",
        help="a self-contained HTML risk report (the synthetic book without --accounts)",
    )
    _book_arguments(report, required=False)
    report.add_argument(
        "--capital",
        type=_positive,
        help="the firm's capital, also its excess liquid capital for the stress "
        f"(reporting currency; default for the synthetic book: {DEMO_CAPITAL:,.0f})",
    )
    report.add_argument(
        "--scenarios",
        default="standard",
        help="scenario file or shipped set (default: standard; the grid is always run)",
    )
    report.add_argument(
        "--rates",
        help="funding rates table: instrument, rate (default: each perpetual's interest rate)",
    )
    report.add_argument("--out", default="risk.html", help="HTML file (default: risk.html)")
    report.add_argument(
        "--demo-accounts", type=int, default=220_000, help="accounts of the synthetic book"
    )
    report.add_argument("--seed", type=int, default=7, help="seed of the synthetic book")
    report.set_defaults(run=_report, files=True)
    return parser


def _located(error: MarginError, args: argparse.Namespace) -> str:
    message = " ".join(str(error).split())
    if isinstance(error, FileError) or not getattr(args, "files", False):
        return message
    paths: dict[str, Any] = {name: getattr(args, name, None) for name in BOOK_FILES}
    return locate(message, paths)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except MarginError as error:
        print(f"vamargin: {type(error).__name__}: {_located(error, args)}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"vamargin: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
