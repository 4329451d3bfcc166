"""The ``vamargin`` command line.

``vamargin demo`` builds the embedded synthetic Hong Kong book (seeded, so every run
values the same book), revalues it and prints a one-screen summary. User errors end with a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

import numpy as np

from vamargin import _core, calc
from vamargin.book import Book
from vamargin.config import RiskConfig
from vamargin.engine import STATUSES, Revaluation, RiskEngine
from vamargin.errors import MarginError
from vamargin.synthetic import synthetic_book


class Stages:
    """Numbered progress lines on stderr, each closed with its wall time."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.done += 1
        self.stream.write(f"[{self.done}/{self.total}] {name} ...")
        self.stream.flush()
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = elapsed
        self.stream.write(f" {elapsed:.3f} s\n")
        self.stream.flush()


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _summary(book: Book, result: Revaluation, stages: Stages, config: RiskConfig, top: int) -> str:
    accounts = result.accounts
    positions = result.positions
    status = accounts.codes("status").codes
    counts = np.bincount(status, minlength=len(STATUSES))
    ccy = config.reporting_currency
    lines = [
        "",
        f"vamargin demo — {book.n_accounts:,} accounts, {book.n_holdings:,} holdings, "
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
    worst = np.argsort(-deficit, kind="stable")[:top]
    worst = worst[deficit[worst] > 0]
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
        f"  revaluation throughput {book.n_positions / revalue_seconds:>12,.0f} positions/s",
    ]
    return "\n".join(lines)


DEMO_INSURANCE_FUND = {"USDT": 2_000_000.0, "BTC": 20.0, "ETH": 300.0, "USD": 500_000.0}
"""The demo platform's insurance fund (major units per asset)."""


def _funding_summary(engine: RiskEngine, book: Book, prices: dict[str, float]) -> tuple[str, int]:
    """One interval of funding at each perpetual's rate from a flat premium (the rate is
    then the interest rate per interval), settled in minor units."""
    config = engine.config
    rates = {
        p.symbol: calc.funding_rate(
            [0.0], interest_rate=p.funding.interest_rate, clamp=p.funding.clamp, cap=p.funding.cap
        )
        for p in config.perpetuals
    }
    settlement = engine.funding(book, rates, prices)
    lines = ["", "Funding (one interval; minor units of the settle asset)"]
    lines.append("  instrument         rate      received          paid     house   dust")
    table = settlement.by_instrument
    for row in range(len(table)):
        r = table.row(row)
        lines.append(
            f"  {r['instrument']:<15} {rates[r['instrument']]:>8.4%} {r['received']:>13,} "
            f"{r['paid']:>13,} {r['house']:>9,} {r['dust']:>6,}"
        )
    balance = sum(settlement.ledger()["amount"].tolist())
    lines.append(f"  ledger balance: {balance} (every posting sums to zero)")
    return "\n".join(lines), len(settlement.payments)


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


def _demo(args: argparse.Namespace) -> int:
    config = RiskConfig.from_toml(args.config) if args.config else RiskConfig.hk_default()
    stages = Stages(total=5)
    with stages.stage("generate synthetic book"):
        synthetic = synthetic_book(config, n_accounts=args.accounts, seed=args.seed)
    with stages.stage("validate book"):
        book = Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    engine = RiskEngine(config)
    with stages.stage("revalue"):
        result = engine.revalue(book, synthetic.prices)
    with stages.stage("settle funding"):
        funding, _ = _funding_summary(engine, book, synthetic.prices)
    with stages.stage("liquidate"):
        liquidation = _liquidation_summary(engine, book, synthetic.prices)
    print(_summary(book, result, stages, config, args.top))
    print(funding)
    print(liquidation)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vamargin", description="Margin and risk engine for HK virtual-asset businesses."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="revalue the embedded synthetic HK book")
    demo.add_argument(
        "--accounts", type=int, default=220_000, help="accounts (≈4.7 positions each)"
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of the synthetic book")
    demo.add_argument("--top", type=int, default=10, help="deficits to list")
    demo.add_argument("--config", help="risk configuration TOML (default: embedded HK profile)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except MarginError as error:
        print(f"vamargin: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"vamargin: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
