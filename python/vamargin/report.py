"""The risk report: one self-contained HTML page (SPEC §11).

The page holds, for one book at one set of prices:

1. key figures and accounts by status;
2. the margin-ratio distribution (histogram, stacked by status);
3. the stress test: the curve of uncovered loss and liquidations against a common move of
   the virtual assets (the ``grid`` set), and the table of every scenario;
4. collateral concentration by asset, by asset group and by client group (the accounts
   table's optional ``client_group``; otherwise each account is its own group), with
   loans by client group against ``policy.max_client_share``;
5. the head of the liquidation queue;
6. the funding of one interval per instrument;
7. the firm controls (``engine.firm_report``) with every breach highlighted.

Plots are drawn with matplotlib's Agg renderer and embedded as base64 PNG ``<img>``
tags; the page loads nothing else and runs no script, so it can be mailed or archived as
one file. ``render(engine, book, prices, capital=…)`` returns the page; ``gather`` and
``to_html`` split the computation from the rendering (the command line times each
stage).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vamargin import scenarios as scenario_sets
from vamargin.book import Book
from vamargin.config import RiskConfig
from vamargin.engine import STATUSES, Revaluation, RiskEngine
from vamargin.firm import FirmReport, share
from vamargin.funding import FundingSettlement, interest_rates
from vamargin.liquidation import LiquidationQueue
from vamargin.market import Prices, read_prices
from vamargin.tables import Table

Stage = Callable[[str], AbstractContextManager[Any]]
"""``stage(name)``: a context manager around each step (progress display)."""

STATUS_COLOURS: dict[str, str] = {
    "normal": "#4c9a6a",
    "restricted": "#e0b43c",
    "margin_call": "#e07b39",
    "liquidation": "#c0392b",
}
QUEUE_ROWS = 20
GROUP_ROWS = 10
RATIO_CAP = 2.0
"""Margin ratios at or above this (and accounts with equity ≤ 0) share the last bar."""


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows."""

    config: RiskConfig
    source: str
    generated: dt.datetime
    n_accounts: int
    n_holdings: int
    n_positions: int
    revaluation: Revaluation
    stress: Table
    curve: Table
    """Rows of the grid scenarios: ``shock`` plus the stress columns."""
    capital: float
    queue: LiquidationQueue
    funding: FundingSettlement | None
    rates: dict[str, float]
    rates_given: bool
    firm: FirmReport
    has_client_group: bool
    by_client: Table
    """Client groups, largest collateral first: group, accounts, collateral_value,
    collateral_share, debit, loan_share."""


@contextmanager
def _no_stage(name: str) -> Iterator[None]:
    yield


def _client_groups(book: Book, result: Revaluation) -> Table:
    """Collateral value and loans per client group (each account its own group when the
    book has no ``client_group``), largest collateral first."""
    collateral = result.accounts["collateral_value"]
    debit = result.accounts["debit"]
    if book.client_group is None:
        names = np.asarray([str(a) for a in book.account_id], dtype=np.str_)
        codes: npt.NDArray[np.integer[Any]] = np.arange(book.n_accounts)
    else:
        names = np.asarray(book.client_group.names, dtype=np.str_)
        codes = book.client_group.codes
    n = len(names)
    value = np.bincount(codes, weights=collateral, minlength=n)
    loans = np.bincount(codes, weights=debit, minlength=n)
    members = np.bincount(codes, minlength=n).astype(np.int64)
    order = np.lexsort((np.arange(n), -value))
    order = order[value[order] > 0]
    return Table(
        {
            "group": names[order],
            "accounts": members[order],
            "collateral_value": value[order],
            "collateral_share": share(value[order], float(collateral.sum())),
            "debit": loans[order],
            "loan_share": share(loans[order], float(debit.sum())),
        }
    )


def _curve(
    engine: RiskEngine,
    book: Book,
    prices: Mapping[str, float],
    stress: Table,
    capital: float,
    progress: Callable[[int, int], None] | None,
) -> Table:
    """The grid rows of ``stress`` with their shock, running the grid (over the
    configuration's virtual assets) when the scenario set has none of it."""
    shocks = scenario_sets.grid_shocks()
    names = list(stress["scenario"])
    rows = [i for i, name in enumerate(names) if name in shocks]
    if rows:
        source = stress
        picked = np.asarray(rows, dtype=np.int64)
    else:
        config = engine.config
        assets = [a for a in config.policy.va_assets if a in config.asset_ids]
        source = engine.stress(
            book,
            prices,
            scenario_sets.grid(assets),
            excess_liquid_capital=capital,
            progress=progress,
        )
        picked = np.arange(len(source), dtype=np.int64)
    shock = np.asarray([shocks[str(source["scenario"][i])] for i in picked], dtype=np.float64)
    order = picked[np.argsort(shock, kind="stable")]
    columns: dict[str, npt.NDArray[Any]] = {"shock": np.sort(shock, kind="stable")}
    for name in source.columns:
        columns[name] = source[name][order]
    return Table(columns)


def gather(
    engine: RiskEngine,
    book: Book,
    prices: Prices,
    *,
    capital: float,
    scenarios: Any = "standard",
    rates: Mapping[str, float] | None = None,
    source: str = "book",
    stage: Stage | None = None,
) -> ReportData:
    """Runs everything the report shows. ``capital``: the firm's capital (firm report)
    and its excess liquid capital (stressed shortfall); ``scenarios``: a scenario set, file
    or shipped set name; ``rates``: funding rates per instrument (default: each
    perpetual's interest rate, the rate at a zero premium); ``stage(name)`` wraps each
    step (the command line's progress display)."""
    step: Stage = _no_stage if stage is None else stage
    parsed = read_prices(prices)
    scenario_set = scenario_sets.read_scenarios(scenarios)
    config = engine.config
    with step("revalue"):
        result = engine.revalue(book, parsed)
    with step(f"stress ({len(scenario_set)} scenarios)") as progress:
        stress = engine.stress(
            book,
            parsed,
            scenario_set,
            excess_liquid_capital=capital,
            progress=progress if callable(progress) else None,
        )
        curve = _curve(
            engine, book, parsed, stress, capital, progress if callable(progress) else None
        )
    with step("liquidation queue"):
        queue = engine.liquidation_queue(book, parsed)
    with step("funding"):
        rates_given = rates is not None
        used_rates = dict(rates) if rates is not None else interest_rates(config)
        funding = engine.funding(book, used_rates, parsed) if book.n_positions else None
    with step("firm controls"):
        firm = engine.firm_report(book, parsed, capital=capital)
        by_client = _client_groups(book, result)
    return ReportData(
        config=config,
        source=source,
        generated=dt.datetime.now(dt.UTC).replace(microsecond=0),
        n_accounts=book.n_accounts,
        n_holdings=book.n_holdings,
        n_positions=book.n_positions,
        revaluation=result,
        stress=stress,
        curve=curve,
        capital=float(capital),
        queue=queue,
        funding=funding,
        rates=used_rates,
        rates_given=rates_given,
        firm=firm,
        has_client_group=book.client_group is not None,
        by_client=by_client,
    )


def render(
    engine: RiskEngine,
    book: Book,
    prices: Prices,
    *,
    capital: float,
    scenarios: Any = "standard",
    rates: Mapping[str, float] | None = None,
    source: str = "book",
) -> str:
    """The report page for ``book`` at ``prices`` (see the module docstring)."""
    data = gather(
        engine, book, prices, capital=capital, scenarios=scenarios, rates=rates, source=source
    )
    return to_html(data)


# -- numbers ----------------------------------------------------------------------------------


def _amount(value: float) -> str:
    """A reporting-currency amount, in millions from one million up."""
    if not math.isfinite(value):
        return "—"
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.1f} M"
    return f"{value:,.0f}"


def _pct(value: float, digits: int = 1) -> str:
    return "—" if not math.isfinite(value) else f"{value:.{digits}%}"


def _count(value: int | np.integer[Any]) -> str:
    return f"{int(value):,}"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


# -- plots ------------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, facecolor="white")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols)
    return figure, axes


def _money_axis(axis: Any, largest: float, ccy: str) -> str:
    """Formats ``axis`` in millions or billions of ``ccy`` (by the largest value shown)
    with a few round ticks; returns the unit for the axis label."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    divisor, unit = (1e9, "billions") if largest >= 5e9 else (1e6, "millions")
    if largest < 5e6:
        divisor, unit = 1.0, ""
    axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / divisor:,.{_digits(v / divisor)}f}"))
    return f"{unit} of {ccy}" if unit else ccy


def _digits(value: float) -> int:
    """Decimals for a tick label: none for whole numbers, one below ten."""
    return 0 if float(value).is_integer() or abs(value) >= 10 else 1


def _percent_axis(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))


def plot_margin_ratio(data: ReportData) -> str:
    """Histogram of ``margin_ratio`` over accounts with a maintenance requirement,
    stacked by status, log-scaled counts; the last bar gathers ratios ≥ ``RATIO_CAP``
    and accounts with equity ≤ 0."""
    accounts = data.revaluation.accounts
    ratio = accounts["margin_ratio"]
    has_requirement = accounts["maintenance_requirement"] > 0
    status = accounts.codes("status").codes
    width = 0.05
    edges = np.arange(0.0, RATIO_CAP + width / 2, width)
    figure, ax = _figure(9.0, 3.8)
    bottom = np.zeros(len(edges))  # the regular bins plus the overflow bar
    for code, name in enumerate(STATUSES):
        mask = has_requirement & (status == code)
        values = ratio[mask]
        over = int(np.count_nonzero(values >= RATIO_CAP))
        counts, _ = np.histogram(values[values < RATIO_CAP], bins=edges)
        heights = np.append(counts, over).astype(np.float64)
        lefts = np.append(edges[:-1], RATIO_CAP + width)
        ax.bar(
            lefts,
            heights,
            width=width,
            bottom=bottom,
            align="edge",
            color=STATUS_COLOURS[name],
            edgecolor="white",
            linewidth=0.4,
            label=f"{name} ({int(mask.sum()):,})",
        )
        bottom += heights
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(0, max(10.0, float(bottom.max()) * 2.5))
    ax.axvline(1.0, color="#333333", linestyle="--", linewidth=1)
    ax.text(
        1.01,
        0.97,
        "equity = maintenance",
        transform=ax.get_xaxis_transform(),
        va="top",
        fontsize=8,
        color="#333333",
    )
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    ax.set_xticks([*ticks, RATIO_CAP + 1.5 * width])
    ax.set_xticklabels([*(f"{t:g}" for t in ticks), f"≥{RATIO_CAP:g}\nor equity ≤ 0"])
    ax.set_xlim(0, RATIO_CAP + 2 * width + 0.02)
    ax.set_xlabel("margin ratio = maintenance requirement / equity")
    ax.set_ylabel("accounts (log scale)")
    ax.set_title(
        f"Margin-ratio distribution — {int(has_requirement.sum()):,} accounts with a "
        "maintenance requirement"
    )
    ax.legend(loc="upper right", fontsize=8, title="status", title_fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def plot_stress_curve(data: ReportData) -> str:
    """Uncovered loss (left axis, millions) and liquidations (right axis) against the
    common move of the virtual assets."""
    from matplotlib.ticker import FuncFormatter

    curve = data.curve
    ccy = data.config.reporting_currency
    shock = curve["shock"] * 100
    figure, ax = _figure(9.0, 4.4)
    ax.plot(
        shock,
        curve["uncovered_loss"],
        color="#c0392b",
        marker="o",
        markersize=3,
        linewidth=2,
        label="uncovered loss",
    )
    ax.plot(
        shock,
        curve["broker_loss"],
        color="#8e44ad",
        linestyle="--",
        linewidth=1.2,
        label="of which broker loss (margin loans)",
    )
    ax.plot(
        shock,
        curve["insurance_draw"],
        color="#d35400",
        linestyle=":",
        linewidth=1.5,
        label="of which insurance-fund draw (perpetuals)",
    )
    top = float(np.max(curve["uncovered_loss"])) if len(curve) else 0.0
    if data.capital <= max(top * 1.5, 1.0):
        ax.axhline(data.capital, color="#555555", linewidth=1, linestyle="-.")
        ax.text(
            shock[0] if len(shock) else -90,
            data.capital,
            " excess liquid capital",
            va="bottom",
            fontsize=8,
            color="#555555",
        )
    unit = _money_axis(ax.yaxis, max(top, data.capital if data.capital <= top * 1.5 else 0), ccy)
    ax.set_ylabel(f"loss ({unit})")
    ax.set_xlabel("common move of the virtual assets")
    ax.set_xticks(np.arange(-90, 91, 15))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+.0f}%" if v else "0"))
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    right.plot(
        shock,
        curve["liquidation"],
        color="#2c3e50",
        marker="s",
        markersize=3,
        linewidth=1.2,
        label="accounts in liquidation",
    )
    right.plot(
        shock,
        curve["isolated_liquidations"],
        color="#7f8c8d",
        marker="^",
        markersize=3,
        linewidth=1,
        label="isolated positions in liquidation",
    )
    right.set_ylabel("liquidations (count)")
    right.set_ylim(bottom=0)
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.axvline(0, color="#999999", linewidth=0.8)
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    figure.legend(
        handles[0] + more[0],
        handles[1] + more[1],
        loc="outside lower center",
        fontsize=8,
        frameon=False,
        ncol=3,
    )
    ax.set_title("Stress curve: every virtual asset moved together")
    ax.grid(alpha=0.3)
    return _png(figure)


def plot_collateral(data: ReportData) -> str:
    """Collateral value by asset and by asset group (bars, with each one's share)."""
    firm = data.firm
    ccy = data.config.reporting_currency
    figure, (left, right) = _figure(9.0, 3.2, ncols=2)
    for ax, labels, values, shares, title in (
        (
            left,
            firm.collateral_by_asset["asset"],
            firm.collateral_by_asset["value"],
            firm.collateral_by_asset["share"],
            "by asset",
        ),
        (
            right,
            firm.by_group["group"],
            firm.by_group["value"],
            firm.by_group["share"],
            "by asset group (assets that move together)",
        ),
    ):
        order = np.argsort(values, kind="stable")
        positions = np.arange(len(order))
        ax.barh(positions, values[order], color="#2f6690")
        ax.set_yticks(positions, [str(labels[i]) for i in order])
        for y, i in zip(positions, order, strict=True):
            ax.text(values[i], y, f" {shares[i]:.1%}", va="center", fontsize=8)
        largest = max(float(values.max()) if len(values) else 1.0, 1.0)
        ax.set_xlim(0, largest * 1.22)
        ax.set_xlabel(f"collateral value ({_money_axis(ax.xaxis, largest, ccy)})")
        ax.set_title(f"Collateral {title}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return _png(figure)


def plot_client_groups(data: ReportData) -> str:
    """The largest client groups' shares of all collateral and of all loans, the latter
    against ``policy.max_client_share`` (bars over the limit in red)."""
    groups = data.by_client
    limit = data.config.policy.max_client_share * 100
    figure, (left, right) = _figure(9.0, 3.8, ncols=2)
    by_value = np.arange(min(GROUP_ROWS, len(groups)))[::-1]
    by_loans = np.argsort(-groups["debit"], kind="stable")[:GROUP_ROWS]
    by_loans = by_loans[groups["debit"][by_loans] > 0][::-1]
    panels = (
        (left, by_value, groups["collateral_share"] * 100, "collateral", None),
        (right, by_loans, groups["loan_share"] * 100, "margin loans", limit),
    )
    for ax, rows, shares, what, cap in panels:
        values = shares[rows]
        colours = ["#c0392b" if cap is not None and v > cap else "#2f6690" for v in values]
        positions = np.arange(len(rows))
        ax.barh(positions, values, color=colours)
        ax.set_yticks(positions, [str(g) for g in groups["group"][rows]])
        for y, v in zip(positions, values, strict=True):
            ax.text(v, y, f" {v:.2f}%", va="center", fontsize=7)
        largest = float(values.max()) if len(values) else 0.0
        if cap is not None:
            ax.axvline(
                cap,
                color="#c0392b",
                linestyle="--",
                linewidth=1,
                label=f"limit: max_client_share {cap:g}%",
            )
            ax.legend(loc="lower right", fontsize=8, frameon=True)
            largest = max(largest, cap)
        ax.set_xlim(0, max(largest, 1e-3) * 1.25)
        _percent_axis(ax.xaxis)
        ax.set_xlabel(f"share of all {what}")
        ax.set_ylabel("client group")
        ax.set_title(f"Largest client groups by {what}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return _png(figure)


# -- HTML -------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1040px; margin: 24px auto; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 18px; border-bottom: 2px solid #2f6690; padding-bottom: 4px;
     margin-top: 32px; }
p.meta, p.note { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #ddd; }
th { background: #eef3f7; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.breach td { background: #fbe3e1; color: #8b1a10; font-weight: 600; }
tr.warn td { background: #fdf1e6; }
td:first-child { white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { border: 1px solid #d0dbe5; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card .v { font-size: 18px; font-weight: 600; }
.card .k { font-size: 12px; color: #555; }
.card.bad { border-color: #c0392b; background: #fbe3e1; }
img { max-width: 100%; display: block; margin: 8px 0; }
.scroll { max-height: 460px; overflow-y: auto; display: inline-block; }
"""


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Sequence[bool] | None = None,
    classes: Sequence[str] | None = None,
) -> str:
    numeric = numeric or [False] * len(headers)
    parts = ["<table><thead><tr>"]
    parts += [f"<th>{_esc(h)}</th>" for h in headers]
    parts.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        parts.append(f"<tr{cls}>")
        for value, is_number in zip(row, numeric, strict=True):
            parts.append(
                f'<td class="n">{_esc(value)}</td>' if is_number else f"<td>{_esc(value)}</td>"
            )
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _image(png: str, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{png}">'


def _card(key: str, value: str, *, bad: bool = False) -> str:
    cls = "card bad" if bad else "card"
    return (
        f'<div class="{cls}"><div class="v">{_esc(value)}</div>'
        f'<div class="k">{_esc(key)}</div></div>'
    )


def _overview(data: ReportData) -> str:
    accounts = data.revaluation.accounts
    ccy = data.config.reporting_currency
    equity = accounts["equity"]
    counts = np.bincount(accounts.codes("status").codes, minlength=len(STATUSES))
    firm = data.firm
    cards = [
        _card("accounts", _count(data.n_accounts)),
        _card("perpetual positions", _count(data.n_positions)),
        _card(f"equity ({ccy})", _amount(float(equity.sum()))),
        _card(f"margin loans ({ccy})", _amount(float(accounts["debit"].sum()))),
        _card(f"collateral ({ccy})", _amount(float(accounts["collateral_value"].sum()))),
        _card(f"calls outstanding ({ccy})", _amount(float(accounts["call_amount"].sum()))),
        _card(
            f"negative equity ({ccy})",
            _amount(float(-equity[equity < 0].sum())),
            bad=bool((equity < 0).any()),
        ),
        _card("firm-control breaches", _count(len(firm.breaches)), bad=firm.breached),
    ]
    rows = [
        (name, _count(count), _pct(count / max(data.n_accounts, 1), 2))
        for name, count in zip(STATUSES, counts, strict=True)
    ]
    classes = [
        "breach" if name == "liquidation" and c > 0 else ""
        for name, c in zip(STATUSES, counts, strict=True)
    ]
    return (
        f'<div class="cards">{"".join(cards)}</div>'
        + "<h3>Accounts by status</h3>"
        + _table(
            ["status", "accounts", "share"], rows, numeric=[False, True, True], classes=classes
        )
    )


def _stress_section(data: ReportData) -> str:
    table = data.stress
    ccy = data.config.reporting_currency
    has_capital = "capital_shortfall" in table
    headers = [
        "scenario",
        "normal",
        "restricted",
        "margin call",
        "liquidation",
        "isolated liq.",
        f"calls ({ccy})",
        f"uncovered loss ({ccy})",
        f"insurance draw ({ccy})",
        f"broker loss ({ccy})",
    ]
    if has_capital:
        headers.append(f"capital shortfall ({ccy})")
    rows: list[list[object]] = []
    classes: list[str] = []
    for i in range(len(table)):
        row: list[object] = [
            table["scenario"][i],
            _count(table["normal"][i]),
            _count(table["restricted"][i]),
            _count(table["margin_call"][i]),
            _count(table["liquidation"][i]),
            _count(table["isolated_liquidations"][i]),
            _amount(float(table["call_amount"][i])),
            _amount(float(table["uncovered_loss"][i])),
            _amount(float(table["insurance_draw"][i])),
            _amount(float(table["broker_loss"][i])),
        ]
        short = float(table["capital_shortfall"][i]) if has_capital else 0.0
        if has_capital:
            row.append(_amount(short))
        rows.append(row)
        classes.append("breach" if short > 0 else "")
    curve = data.curve
    worst = int(np.argmax(table["uncovered_loss"])) if len(table) else 0
    text = (
        f"<p class='note'>Each scenario moves prices by relative amounts (perpetual marks "
        f"move with their base) and revalues the whole book. Uncovered loss = Σ max(0, −equity) "
        f"at the stressed prices, before liquidation fees and auto-deleveraging: the "
        f"insurance-fund draw (perpetual accounts and isolated positions) plus the broker's "
        f"loss on margin loans. Capital shortfall = max(0, broker loss − excess liquid "
        f"capital of {_amount(data.capital)} {ccy}); rows with a shortfall are highlighted. "
        f"Worst scenario: <b>{_esc(table['scenario'][worst])}</b>, uncovered loss "
        f"{_amount(float(table['uncovered_loss'][worst]))} {ccy}.</p>"
        if len(table)
        else ""
    )
    curve_note = (
        f"<p class='note'>The curve runs the {len(curve)} grid scenarios "
        f"({curve['shock'][0]:+.0%} … {curve['shock'][-1]:+.0%}).</p>"
        if len(curve)
        else ""
    )
    numeric = [False] + [True] * (len(headers) - 1)
    return (
        _image(plot_stress_curve(data), "stress curve")
        + curve_note
        + text
        + '<div class="scroll">'
        + _table(headers, rows, numeric=numeric, classes=classes)
        + "</div>"
    )


def _concentration_section(data: ReportData) -> str:
    firm = data.firm
    ccy = data.config.reporting_currency
    policy = data.config.policy
    limit = policy.max_collateral_share
    assets = firm.collateral_by_asset
    asset_rows = [
        (assets["asset"][i], _amount(float(assets["value"][i])), _pct(float(assets["share"][i])))
        for i in range(len(assets))
    ]
    asset_classes = [
        "breach" if limit is not None and float(assets["share"][i]) > limit else ""
        for i in range(len(assets))
    ]
    groups = data.by_client
    n = min(GROUP_ROWS, len(groups))
    group_rows = [
        (
            groups["group"][i],
            _count(groups["accounts"][i]),
            _amount(float(groups["collateral_value"][i])),
            _pct(float(groups["collateral_share"][i]), 2),
            _amount(float(groups["debit"][i])),
            _pct(float(groups["loan_share"][i]), 2),
        )
        for i in range(n)
    ]
    group_classes = [
        "breach" if float(groups["loan_share"][i]) > policy.max_client_share else ""
        for i in range(n)
    ]
    grouping = (
        "the accounts table's <code>client_group</code>"
        if data.has_client_group
        else "the book has no <code>client_group</code> column, so each account is its own"
    )
    limit_text = "no per-asset limit set" if limit is None else f"per-asset limit {limit:.0%}"
    return (
        _image(plot_collateral(data), "collateral by asset and by asset group")
        + f"<p class='note'>Virtual assets make up {_pct(firm.va_share)} of all collateral "
        f"({limit_text}).</p>"
        + _table(
            ["asset", f"value ({ccy})", "share"],
            asset_rows,
            numeric=[False, True, True],
            classes=asset_classes,
        )
        + _image(plot_client_groups(data), "collateral and loans by client group")
        + f"<p class='note'>Client groups: {grouping}. Loan shares above "
        f"<code>max_client_share</code> ({policy.max_client_share:.0%}) are highlighted.</p>"
        + _table(
            [
                "client group",
                "accounts",
                f"collateral ({ccy})",
                "share of collateral",
                f"loans ({ccy})",
                "share of loans",
            ],
            group_rows,
            numeric=[False, True, True, True, True, True],
            classes=group_classes,
        )
    )


def _queue_section(data: ReportData) -> str:
    queue = data.queue
    ccy = data.config.reporting_currency
    n = min(QUEUE_ROWS, len(queue))
    rows = [
        (
            _count(queue["rank"][i]),
            queue["account_id"][i],
            queue["scope"][i],
            queue["instrument"][i] if queue["scope"][i] == "isolated" else "",
            f"{queue['health'][i]:.3f}",
            _amount(float(queue["deficit"][i])),
            "yes" if queue["bankrupt"][i] else "",
            _amount(float(queue["close_value"][i])),
            f"{queue['fees'][i]:,.2f}",
            "full" if queue["full_close"][i] else "partial",
            _count(queue["plan_steps"][i]),
        )
        for i in range(n)
    ]
    classes = ["warn" if queue["bankrupt"][i] else "" for i in range(n)]
    bankrupt = int(queue["bankrupt"].sum())
    isolated = int((queue["scope"] == "isolated").sum())
    return (
        f"<p class='note'>{_count(len(queue))} entries ({_count(isolated)} isolated "
        f"positions, {_count(bankrupt)} bankrupt: shaded), ordered by health (equity / "
        f"liquidation requirement; margin balance / maintenance margin for an isolated "
        f"position) ascending, then deficit. Deficits, close values and fees in the reporting "
        f"currency ({ccy}); the first {n} are shown.</p>"
        + _table(
            [
                "rank",
                "account",
                "scope",
                "instrument",
                "health",
                f"deficit ({ccy})",
                "bankrupt",
                f"close value ({ccy})",
                f"fees ({ccy})",
                "close",
                "plan steps",
            ],
            rows,
            numeric=[True, True, False, False, True, True, False, True, True, False, True],
            classes=classes,
        )
    )


def _funding_section(data: ReportData) -> str:
    funding = data.funding
    if funding is None:
        return "<p class='note'>The book has no perpetual positions.</p>"
    table = funding.by_instrument
    rows = []
    for i in range(len(table)):
        r = table.row(i)
        unit = float(r["minor_unit"])
        decimals = max(0, round(-math.log10(unit)))
        rate = data.rates.get(r["instrument"], math.nan)

        def major(minor: int, *, unit: float = unit, decimals: int = decimals) -> str:
            return f"{minor * unit:,.{decimals}f}"

        rows.append(
            (
                r["instrument"],
                _pct(rate, 4),
                r["settle"],
                major(r["received"]),
                major(r["paid"]),
                major(r["house"]),
                major(r["dust"]),
            )
        )
    balance = sum(funding.ledger()["amount"].tolist())
    origin = (
        "the rates given"
        if data.rates_given
        else "each perpetual's interest rate (the rate at a zero premium; no rates were given)"
    )
    return (
        f"<p class='note'>One funding interval at {origin}; a positive rate means longs pay "
        f"shorts. Amounts in the settle asset: received and paid by accounts, the house's "
        f"posting for the open-interest imbalance and the rounding dust. Every amount is "
        f"settled in integer minor units; the ledger balances to {balance}.</p>"
        + _table(
            ["instrument", "rate", "settle asset", "received", "paid", "house", "dust"],
            rows,
            numeric=[False, True, False, True, True, True, True],
        )
    )


def _rule_number(rule: str, value: float) -> str:
    """A rule's value or limit: a multiple for loans / capital, a share otherwise."""
    return f"{value:.2f}×" if rule == "max_loans_to_capital" else _pct(value, 2)


def _firm_section(data: ReportData) -> str:
    firm = data.firm
    policy = data.config.policy
    ccy = data.config.reporting_currency
    controls: list[tuple[str, str, str, str, bool]] = []
    controls.append(
        (
            "loans / capital",
            "firm",
            f"{firm.loans_to_capital:.2f}×",
            f"{policy.max_loans_to_capital:g}×",
            firm.loans_to_capital > policy.max_loans_to_capital,
        )
    )
    largest = firm.top_groups
    if len(largest):
        value = float(largest["share_of_loans"][0])
        controls.append(
            (
                "largest client group's share of loans",
                str(largest["group"][0]),
                _pct(value, 2),
                _pct(policy.max_client_share, 0),
                value > policy.max_client_share,
            )
        )
    assets = firm.collateral_by_asset
    if policy.max_collateral_share is not None and len(assets):
        top = int(np.argmax(assets["share"]))
        value = float(assets["share"][top])
        controls.append(
            (
                "largest asset's share of collateral",
                str(assets["asset"][top]),
                _pct(value),
                _pct(policy.max_collateral_share, 0),
                value > policy.max_collateral_share,
            )
        )
    control_rows = [(c[0], c[1], c[2], c[3], "BREACH" if c[4] else "ok") for c in controls]
    control_classes = ["breach" if c[4] else "ok" for c in controls]
    breaches = firm.breaches
    breach_rows = [
        (
            breaches["rule"][i],
            breaches["subject"][i],
            _rule_number(str(breaches["rule"][i]), float(breaches["value"][i])),
            _rule_number(str(breaches["rule"][i]), float(breaches["limit"][i])),
        )
        for i in range(len(breaches))
    ]
    breach_table = (
        _table(
            ["rule", "subject", "value", "limit"],
            breach_rows,
            numeric=[False, False, True, True],
            classes=["breach"] * len(breach_rows),
        )
        if breach_rows
        else "<p class='note'>No rule is breached.</p>"
    )
    clients = firm.top_clients
    client_rows = [
        (
            clients["account_id"][i],
            _amount(float(clients["debit"][i])),
            _amount(float(clients["collateral_value"][i])),
            _pct(float(clients["ltv"][i])),
            _pct(float(clients["share_of_loans"][i]), 2),
        )
        for i in range(len(clients))
    ]
    client_classes = [
        "breach" if float(clients["share_of_loans"][i]) > policy.max_client_share else ""
        for i in range(len(clients))
    ]
    cards = [
        _card(f"capital ({ccy})", _amount(firm.capital)),
        _card(f"margin loans ({ccy})", _amount(firm.total_loans)),
        _card(
            "loans / capital",
            f"{firm.loans_to_capital:.2f}×",
            bad=firm.loans_to_capital > policy.max_loans_to_capital,
        ),
        _card(
            f"loans not covered by capital-recognised collateral ({ccy})",
            _amount(firm.capital_uncovered),
        ),
        _card("virtual assets' share of collateral", _pct(firm.va_share)),
    ]
    return (
        f'<div class="cards">{"".join(cards)}</div>'
        + "<h3>Controls</h3>"
        + _table(
            ["control", "subject", "value", "limit", "state"],
            control_rows,
            numeric=[False, False, True, True, False],
            classes=control_classes,
        )
        + f"<h3>Breaches ({len(breaches)})</h3>"
        + breach_table
        + "<h3>Largest borrowers</h3>"
        + _table(
            ["account", f"loan ({ccy})", f"collateral ({ccy})", "LTV", "share of loans"],
            client_rows,
            numeric=[True, True, True, True, True],
            classes=client_classes,
        )
        + "<p class='note'>The capital view counts each asset at (1 − capital haircut); "
        "virtual assets count for nothing in the broker's liquid capital by default.</p>"
    )


SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("margin-ratio", "Margin-ratio distribution"),
    ("stress", "Stress test"),
    ("concentration", "Collateral concentration"),
    ("liquidation-queue", "Liquidation queue"),
    ("funding", "Funding"),
    ("firm-controls", "Firm controls"),
)
"""Section ids and titles, in page order."""


def to_html(data: ReportData) -> str:
    """The page for ``data``: one HTML document with its plots embedded."""
    config = data.config
    accounts = data.revaluation.accounts
    with_requirement = int((accounts["maintenance_requirement"] > 0).sum())
    bodies = {
        "overview": _overview(data),
        "margin-ratio": _image(plot_margin_ratio(data), "margin-ratio histogram")
        + f"<p class='note'>{_count(with_requirement)} of {_count(data.n_accounts)} accounts "
        "have a maintenance requirement. Margin ratio = maintenance requirement / equity: "
        "above 1 an account is in margin call or liquidation. Counts on a log scale.</p>",
        "stress": _stress_section(data),
        "concentration": _concentration_section(data),
        "liquidation-queue": _queue_section(data),
        "funding": _funding_section(data),
        "firm-controls": _firm_section(data),
    }
    nav = " · ".join(f'<a href="#{key}">{_esc(title)}</a>' for key, title in SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{_esc(title)}</h2>{bodies[key]}</section>'
        for key, title in SECTIONS
    )
    meta = (
        f"{_esc(data.source)} — {_count(data.n_accounts)} accounts, "
        f"{_count(data.n_holdings)} holdings, {_count(data.n_positions)} positions. "
        f"Amounts in {_esc(config.reporting_currency)} unless stated; M = millions. "
        f"Generated {data.generated.isoformat()}."
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<title>vamargin risk report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>vamargin risk report</h1>"
        f"<p class='meta'>{meta}</p><p class='meta'>{nav}</p>"
        f"{sections}</body></html>\n"
    )


def summary(data: ReportData) -> str:
    """A few lines for the terminal: what the page says first."""
    ccy = data.config.reporting_currency
    accounts = data.revaluation.accounts
    counts = np.bincount(accounts.codes("status").codes, minlength=len(STATUSES))
    stress = data.stress
    worst = int(np.argmax(stress["uncovered_loss"])) if len(stress) else 0
    firm = data.firm
    lines = [
        "",
        f"vamargin report — {data.n_accounts:,} accounts, {data.n_positions:,} positions",
        "  status: " + ", ".join(f"{n} {c:,}" for n, c in zip(STATUSES, counts, strict=True)),
        f"  liquidation queue: {len(data.queue):,} entries, "
        f"{int(data.queue['bankrupt'].sum()):,} bankrupt",
    ]
    if len(stress):
        lines.append(
            f"  stress: {len(stress)} scenarios; worst {stress['scenario'][worst]} "
            f"(uncovered loss {_amount(float(stress['uncovered_loss'][worst]))} {ccy})"
        )
    lines.append(
        f"  firm: loans / capital {firm.loans_to_capital:.2f}×, {len(firm.breaches)} breaches"
        + (
            ": "
            + ", ".join(
                f"{r} ({s})"
                for r, s in zip(firm.breaches["rule"], firm.breaches["subject"], strict=True)
            )
            if firm.breached
            else ""
        )
    )
    return "\n".join(lines)
