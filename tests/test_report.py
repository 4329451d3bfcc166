"""The HTML risk report: one self-contained file with every section and picture, the
engine's numbers in it, and every breached firm control highlighted."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import vamargin as vm
from vamargin import report, scenarios
from vamargin.files import read_table, write_table
from vamargin.synthetic import synthetic_book

SCRIPT = shutil.which("vamargin", path=str(Path(sys.executable).parent))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CAPITAL = 1_000_000.0
"""Small enough that the book's loans breach the 5× loans-to-capital limit."""
PICTURES = 4  # margin ratio, stress curve, collateral by asset, client groups


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300)


class Files:
    """A 400-account synthetic book whose accounts belong to a few large families (two
    thirds of the accounts) or to no group, written as Parquet."""

    def __init__(self, root: Path) -> None:
        synthetic = synthetic_book(n_accounts=400, seed=5)
        n = synthetic.accounts.num_rows
        groups = [f"family {i % 5}" if i % 3 else f"client {i}" for i in range(n)]
        accounts = synthetic.accounts.append_column("client_group", pa.array(groups))
        self.paths = {
            "accounts": root / "accounts.parquet",
            "holdings": root / "holdings.parquet",
            "positions": root / "positions.arrow",
            "prices": root / "prices.csv",
        }
        write_table(accounts, self.paths["accounts"])
        write_table(synthetic.holdings, self.paths["holdings"])
        write_table(synthetic.positions, self.paths["positions"])
        prices = pa.table(
            {"symbol": list(synthetic.prices), "price": list(synthetic.prices.values())}
        )
        write_table(prices, self.paths["prices"])
        self.book = vm.Book(
            read_table(self.paths["accounts"], "accounts"),
            read_table(self.paths["holdings"], "holdings"),
            read_table(self.paths["positions"], "positions"),
        )
        self.prices = synthetic.prices

    def args(self) -> list[str | Path]:
        return [item for name, path in self.paths.items() for item in (f"--{name}", path)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(files: Files, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("page") / "risk.html"
    completed = run("report", *files.args(), "--capital", str(CAPITAL), "--out", out)
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "Wrote the risk report" in completed.stdout
    assert "[9/9] write" in completed.stderr
    return out.read_text("utf-8")


def images(html: str) -> list[bytes]:
    pattern = r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"'
    return [base64.b64decode(data) for data in re.findall(pattern, html)]


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def test_page_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    lowered = page.lower()
    for needle in ("<script", "<link", "http://", "https://", "url(", "@import", "<iframe"):
        assert needle not in lowered, needle
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs
    assert all(h.startswith("#") for h in hrefs)


def test_every_picture_is_a_real_png(page: str) -> None:
    pngs = images(page)
    assert len(pngs) == PICTURES
    for png in pngs:
        width, height = png_size(png)
        assert width >= 600
        assert height >= 250
        assert len(png) > 15_000  # a drawn plot, not an empty canvas
    assert len(set(pngs)) == PICTURES
    for alt in ("margin-ratio histogram", "stress curve", "collateral by asset",
                "collateral and loans by client group"):  # fmt: skip
        assert f'alt="{alt}' in page


def test_every_section_is_there(page: str) -> None:
    for key, title in report.SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in page
        assert f'href="#{key}"' in page


def test_page_shows_the_engines_numbers(files: Files, page: str) -> None:
    engine = vm.RiskEngine()
    firm = engine.firm_report(files.book, files.prices, capital=CAPITAL)
    assert f"{firm.loans_to_capital:.2f}×" in page
    standard = scenarios.standard()
    stress = engine.stress(files.book, files.prices, standard, excess_liquid_capital=CAPITAL)
    for name in standard:
        assert f"<td>{name}</td>" in page
    worst = int(np.argmax(stress["uncovered_loss"]))
    assert f"Worst scenario: <b>{stress['scenario'][worst]}</b>" in page
    queue = engine.liquidation_queue(files.book, files.prices)
    assert len(queue) > 0
    assert f"{len(queue):,} entries" in page
    first = f'<td class="n">1</td><td class="n">{queue["account_id"][0]}</td>'
    assert first in page
    revaluation = engine.revalue(files.book, files.prices)
    counts = dict(zip(*np.unique(revaluation.accounts["status"], return_counts=True), strict=True))
    for status, count in counts.items():
        assert f'<td>{status}</td><td class="n">{count:,}</td>' in page
    assert "ledger balances to 0" in page


def test_breaches_are_highlighted(files: Files, page: str) -> None:
    firm = vm.RiskEngine().firm_report(files.book, files.prices, capital=CAPITAL)
    assert firm.breached
    rules = set(firm.breaches["rule"])
    assert "max_loans_to_capital" in rules
    assert "max_client_share" in rules
    breach_rows = re.findall(r'<tr class="breach">(.*?)</tr>', page)
    for rule, subject in zip(firm.breaches["rule"], firm.breaches["subject"], strict=True):
        assert any(f"<td>{rule}</td><td>{subject}</td>" in row for row in breach_rows)
    controls = [row for row in breach_rows if "BREACH" in row]
    assert any("loans / capital" in row for row in controls)
    assert f"Breaches ({len(firm.breaches)})" in page
    # Stress scenarios whose broker loss exceeds the excess liquid capital.
    stress = vm.RiskEngine().stress(
        files.book, files.prices, "standard", excess_liquid_capital=CAPITAL
    )
    short = stress["capital_shortfall"] > 0
    assert short.any()
    for name, is_short in zip(stress["scenario"], short, strict=True):
        assert (f'<tr class="breach"><td>{name}</td>' in page) == bool(is_short), name
    assert '<div class="card bad"><div class="v">' + f"{len(firm.breaches)}" in page


def test_report_without_files_uses_the_synthetic_book(tmp_path: Path) -> None:
    out = tmp_path / "demo.html"
    completed = run("report", "--demo-accounts", "1500", "--scenarios", "smf", "--out", out)
    assert completed.returncode == 0, completed.stderr
    html = out.read_text("utf-8")
    assert "embedded synthetic HK book" in html
    assert "1,500 accounts" in html
    # The grid runs for the stress curve even when the set has none of it.
    assert len(images(html)) == PICTURES
    assert f"The curve runs the {len(scenarios.grid_shocks())} grid scenarios" in html


def test_report_needs_capital_for_a_book(files: Files, tmp_path: Path) -> None:
    completed = run("report", *files.args(), "--out", tmp_path / "x.html")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == (
        "vamargin: DataError: --capital (the firm's capital) is needed with --accounts"
    )
    assert not (tmp_path / "x.html").exists()


def test_render_in_process_for_a_book_without_positions() -> None:
    book = vm.Book(
        accounts={"account_id": [1, 2], "investor_class": ["individual_pi", "retail"],
                  "margin_client": [True, False], "credit_approved": [True, False]},
        holdings={"account_id": [1, 1, 2], "asset": ["BTC", "HKD", "HKD"],
                  "amount": [2.0, -400_000.0, 10_000.0]},
    )  # fmt: skip
    prices = {"BTC": 96_400.0, "HKD": 0.1285}
    html = report.render(vm.RiskEngine(), book, prices, capital=50_000.0, scenarios="smf")
    assert len(images(html)) == PICTURES
    assert "The book has no perpetual positions." in html
    # Loans of 51,400 USD on capital of 50,000: within 5×; one client holds every loan.
    assert "1.03×" in html
    assert re.search(r'<tr class="breach"><td>max_client_share</td><td>1</td>', html)
