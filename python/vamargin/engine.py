"""RiskEngine: runs the Rust kernels over a validated book and shapes the results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vamargin import _core
from vamargin.book import Book, BoundBook
from vamargin.config import RiskConfig
from vamargin.errors import DataError
from vamargin.financing import MarginCalls, units, utc_instant
from vamargin.firm import FirmReport, largest_positive, share
from vamargin.funding import FundingSettlement, category, read_per_instrument
from vamargin.liquidation import LiquidationQueue
from vamargin.loss_allocation import LiquidationRun, liquidation_run
from vamargin.market import Prices, read_prices, resolve_market
from vamargin.pretrade import OrderDecision, PreTrade
from vamargin.scenarios import ScenarioPrices, read_scenarios, scenario_prices
from vamargin.stress import stress_table
from vamargin.tables import CategoryColumn, Column, Table

STATUSES: tuple[str, ...] = tuple(_core.STATUS_NAMES)
PROGRESS_SLICES = 20
"""Slices a stress run with a progress callback is cut into."""
"""Account statuses, best first: normal, restricted, margin_call, liquidation."""

ACCOUNT_COLUMNS: tuple[str, ...] = (
    "account_id", "equity", "collateral_value", "debit", "upnl", "initial_requirement",
    "maintenance_requirement", "liquidation_requirement", "excess", "margin_ratio", "ltv",
    "status", "call_amount",
)  # fmt: skip
POSITION_COLUMNS: tuple[str, ...] = (
    "account_id", "instrument", "notional", "upnl", "initial_margin", "maintenance_margin",
    "tier", "liquidation_price", "bankruptcy_price", "adl_score",
)  # fmt: skip


@dataclass(frozen=True)
class Revaluation:
    """Account figures (reporting currency, one row per account, in the accounts table's
    order) and position figures (settle currency, one row per position row, in order).

    ``liquidation_price`` / ``bankruptcy_price`` are NaN where no positive price exists;
    ``adl_score`` is NaN for empty positions and those with no positive margin balance.
    """

    accounts: Table
    positions: Table


class RiskEngine:
    """The margin and risk engine for one configuration."""

    def __init__(self, config: RiskConfig | None = None) -> None:
        self.config = RiskConfig.hk_default() if config is None else config
        self._pretrade: tuple[Book, dict[str, float], PreTrade] | None = None

    def revalue(self, book: Book, prices: Prices) -> Revaluation:
        """Values every account and position at ``prices`` in one Rust pass (SPEC §5–§6)."""
        config = self.config
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        raw = _core.revalue(config.engine_params, bound.core, market.asset_prices, market.marks)
        account_figures = raw["accounts"]
        accounts: dict[str, Column] = {"account_id": book.account_id}
        for name in ACCOUNT_COLUMNS[1:]:
            figure = account_figures[name]
            accounts[name] = CategoryColumn(STATUSES, figure) if name == "status" else figure
        instruments = tuple(p.symbol for p in config.perpetuals)
        positions: dict[str, Column] = {
            "account_id": book.position_account_id,
            "instrument": CategoryColumn(instruments, bound.position_instrument),
        }
        positions.update({name: raw["positions"][name] for name in POSITION_COLUMNS[2:]})
        return Revaluation(accounts=Table(accounts), positions=Table(positions))

    def stress(
        self,
        book: Book,
        prices: Prices,
        scenarios: Any,
        *,
        excess_liquid_capital: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Table:
        """Revalues the book under each scenario and totals it, one row per scenario
        (SPEC §9; columns in ``vamargin.stress``). ``scenarios`` is ``{name: {asset:
        move}}``, a long table ``scenario, asset, move``, a scenario file or a shipped set
        name (``vamargin.scenarios``). Each scenario is one account sweep in Rust over the
        book as bound: nothing is re-validated or copied.

        ``progress(done, total)``, when given, is called as scenarios complete (the set
        runs in up to 20 slices; a scenario's row does not depend on the slicing)."""
        if excess_liquid_capital is not None and not (
            isinstance(excess_liquid_capital, int | float) and np.isfinite(excess_liquid_capital)
        ):
            raise DataError(f"excess_liquid_capital: {excess_liquid_capital!r} is not a number")
        bound, moved = self._scenarios(book, prices, scenarios)
        params = self.config.engine_params
        total = len(moved.names)
        step = total if progress is None else max(1, -(-total // PROGRESS_SLICES))
        pieces = []
        for start in range(0, total, step):
            stop = min(start + step, total)
            prices_now, marks_now = moved.asset_prices[start:stop], moved.marks[start:stop]
            pieces.append(_core.stress(params, bound.core, prices_now, marks_now))
            if progress is not None:
                progress(stop, total)
        raw = {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
        return stress_table(moved.names, raw, excess_liquid_capital)

    def stress_equity(
        self, book: Book, prices: Prices, scenarios: Any, *, worst: int = 20
    ) -> Table:
        """The equity of the ``worst`` accounts under every scenario: ``account_id``,
        ``min_equity`` (lowest over the scenarios; rows ordered by it, then account id),
        then one column per scenario (reporting currency)."""
        if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
            raise DataError(f"worst: {worst!r} must be an integer ≥ 0")
        bound, moved = self._scenarios(book, prices, scenarios)
        params = self.config.engine_params
        raw = _core.stress(params, bound.core, moved.asset_prices, moved.marks, True)
        lowest = raw["min_equity"]
        rows = np.lexsort((book.account_id, lowest))[:worst].astype(np.uint32)
        equity = _core.stressed_equity(params, bound.core, moved.asset_prices, moved.marks, rows)
        columns: dict[str, Column] = {
            "account_id": book.account_id[rows],
            "min_equity": lowest[rows],
        }
        columns.update({name: equity[s] for s, name in enumerate(moved.names)})
        return Table(columns)

    def _scenarios(
        self, book: Book, prices: Prices, scenarios: Any
    ) -> tuple[BoundBook, ScenarioPrices]:
        config = self.config
        parsed = read_scenarios(scenarios)
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        return bound, scenario_prices(config, parsed, market.asset_prices, market.marks)

    def funding(
        self,
        book: Book,
        rates: Any = None,
        prices: Prices | None = None,
        *,
        index: Any = None,
    ) -> FundingSettlement:
        """Settles funding in integer minor units of each position's settle asset (SPEC §5).

        One interval: ``rates`` (``{instrument: rate}`` or a table ``instrument, rate``)
        at the marks in ``prices``; a positive rate means longs pay shorts. Or, for a book
        whose positions carry ``funding_index``, ``index={instrument: current cumulative
        index}``: each position pays the index move since its last settlement
        (linear index in quote per base, advanced by ``mark × rate``; inverse in coin per
        quote, advanced by ``rate / mark``; see ``calc.advance_funding_index``).
        """
        config = self.config
        bound = book.bind(config)
        symbols = [p.symbol for p in config.perpetuals]

        def per_instrument(values: dict[str, float], what: str) -> npt.NDArray[np.float64]:
            out = np.zeros(len(symbols))
            for i, symbol in enumerate(symbols):
                if symbol in values:
                    out[i] = values[symbol]
                elif bound.instruments_used[i]:
                    raise DataError(
                        f"{what}: missing {symbol!r} "
                        f"(needed by {book.where_used(bound, instrument=i)})"
                    )
            return out

        settle_decimals = [asset.minor_decimals for asset in config.assets]
        if index is None:
            if rates is None or prices is None:
                raise DataError(
                    "funding: give rates and prices (one interval), or index= (cumulative)"
                )
            rate_by_id = per_instrument(read_per_instrument(rates, "rates", "rate"), "rates")
            marks = per_instrument(read_prices(prices), "prices")
            unused = ~bound.instruments_used
            marks[unused] = 1.0  # never read: no position of these instruments moves money
            raw = _core.settle_funding(
                config.engine_params,
                bound.position_instrument,
                book.qty,
                settle_decimals,
                rates=rate_by_id,
                marks=marks,
                by_account=(bound.position_groups, book.account_id, book.position_account),
            )
        else:
            if book.funding_index is None:
                raise DataError(
                    "positions: missing column 'funding_index' (needed to settle against index=)"
                )
            index_now = per_instrument(read_per_instrument(index, "index", "index"), "index")
            raw = _core.settle_funding(
                config.engine_params,
                bound.position_instrument,
                book.qty,
                settle_decimals,
                index_now=index_now,
                position_index=book.funding_index,
                by_account=(bound.position_groups, book.account_id, book.position_account),
            )
        return self._funding_settlement(book, bound, raw)

    def _funding_settlement(
        self, book: Book, bound: BoundBook, raw: dict[str, Any]
    ) -> FundingSettlement:
        config = self.config
        asset_names = [a.symbol for a in config.assets]
        settle_of = np.array([config.asset_ids[p.settle] for p in config.perpetuals], np.uint32)
        payments = raw["payments"]
        # Each account's payments, summed per settle asset by the kernel.
        account_ids, asset_ids, amounts = raw["by_account"]
        by_account = Table(
            {
                "account_id": account_ids,
                "asset": category(asset_names, asset_ids),
                "amount": amounts,
            }
        )
        used = np.flatnonzero(bound.instruments_used)
        by_instrument = Table(
            {
                "instrument": category([p.symbol for p in config.perpetuals], used),
                "settle": category(asset_names, settle_of[used]),
                "minor_unit": np.array([config.assets[settle_of[i]].minor_unit for i in used]),
                "received": raw["received"][used],
                "paid": raw["paid"][used],
                "house": raw["house"][used],
                "dust": raw["dust"][used],
            }
        )
        symbols = [config.perpetuals[i].symbol for i in used]
        return FundingSettlement(
            payments=payments,
            by_account=by_account,
            by_instrument=by_instrument,
            dust={s: int(d) for s, d in zip(symbols, raw["dust"][used], strict=True)},
            house={s: int(h) for s, h in zip(symbols, raw["house"][used], strict=True)},
            open_interest={s: raw["open_interest"][i] for s, i in zip(symbols, used, strict=True)},
        )

    def liquidation_queue(self, book: Book, prices: Prices) -> LiquidationQueue:
        """Accounts in ``liquidation`` and isolated positions below maintenance, in queue
        order, with a close plan each (SPEC §8); see ``vamargin.liquidation``."""
        config = self.config
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        raw = _core.liquidation_queue(
            config.engine_params, bound.core, market.asset_prices, market.marks
        )
        return self._queue_table(book, bound, raw)

    def _queue_table(
        self, book: Book, bound: BoundBook, raw: dict[str, dict[str, Any]]
    ) -> LiquidationQueue:
        config = self.config
        entries, steps = raw["entries"], raw["steps"]
        n = len(entries["account"])
        rank = np.arange(1, n + 1, dtype=np.int64)
        position_row = entries["position_row"]
        isolated = position_row >= 0
        instruments = ["", *(p.symbol for p in config.perpetuals)]
        instrument_code = np.zeros(n, dtype=np.uint32)
        instrument_code[isolated] = bound.position_instrument[position_row[isolated]] + 1
        step_entry = np.repeat(np.arange(n), entries["n_steps"].astype(np.int64))
        kinds = steps["kind"]
        rows = steps["row"]
        is_holding = kinds == 1
        symbols = [p.symbol for p in config.perpetuals] + [a.symbol for a in config.assets]
        symbol_code = np.where(
            is_holding,
            len(config.perpetuals) + bound.holding_asset[np.where(is_holding, rows, 0)]
            if book.n_holdings
            else 0,
            bound.position_instrument[np.where(is_holding, 0, rows)] if book.n_positions else 0,
        )
        plan = Table(
            {
                "rank": rank[step_entry],
                "account_id": book.account_id[entries["account"][step_entry]],
                "kind": category(["position", "holding"], kinds),
                "row": rows.astype(np.int64),
                "symbol": category(symbols, np.asarray(symbol_code, dtype=np.uint32)),
                "fraction": steps["fraction"],
                "quantity": steps["quantity"],
                "value": steps["value"],
                "fee": steps["fee"],
            }
        )
        return LiquidationQueue(
            {
                "rank": rank,
                "account_id": book.account_id[entries["account"]],
                "scope": category(["account", "isolated"], isolated.astype(np.uint32)),
                "instrument": category(instruments, instrument_code),
                "position_row": position_row,
                "health": entries["health"],
                "deficit": entries["deficit"],
                "bankrupt": entries["bankrupt"],
                "insurance_draw": entries["insurance_draw"],
                "close_value": entries["close_value"],
                "fees": entries["fees"],
                "full_close": entries["full_close"],
                "plan_steps": entries["n_steps"].astype(np.int64),
            },
            plan,
        )

    def adl_queue(self, book: Book, prices: Prices) -> Table:
        """Auto-deleveraging queues (SPEC §8): per instrument and side, positions by
        ``score`` (PnL% × effective leverage if profitable, PnL% / effective leverage if
        not), highest first, so profitable positions come first; ``rank`` 1 is
        deleveraged first; ``bucket`` 5 is the first fifth of the queue … 1 the last.
        Positions with no positive margin balance have no score and are not queued."""
        config = self.config
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        raw = _core.adl_queue(config.engine_params, bound.core, market.asset_prices, market.marks)
        rows = raw["row"]
        return Table(
            {
                "instrument": category([p.symbol for p in config.perpetuals], raw["instrument"]),
                "side": category(["short", "long"], (raw["side"] > 0).astype(np.uint32)),
                "rank": raw["rank"].astype(np.int64) + 1,
                "account_id": book.position_account_id[rows],
                "position_row": rows.astype(np.int64),
                "score": raw["score"],
                "bucket": raw["bucket"],
            }
        )

    def pretrade(self, book: Book, prices: Prices) -> PreTrade:
        """A pre-trade checker for ``book`` at ``prices``: validates once, then
        ``.check(account_id, instrument, qty, price)`` costs microseconds."""
        config = self.config
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        return PreTrade(config, book, bound, market)

    def check_order(
        self,
        book: Book,
        prices: Prices,
        account_id: int,
        instrument: str,
        qty: float,
        price: float,
        *,
        leverage: float | None = None,
    ) -> OrderDecision:
        """Pre-trade check of one order (see ``vamargin.pretrade``). Reuses the checker of
        the previous call while the book and the prices are the same."""
        snapshot = dict(prices) if isinstance(prices, Mapping) else None
        cached = self._pretrade
        if (
            cached is not None
            and cached[0] is book
            and snapshot is not None
            and cached[1] == snapshot
        ):
            checker = cached[2]
        else:
            checker = self.pretrade(book, prices)
            self._pretrade = (book, snapshot, checker) if snapshot is not None else None
        return checker.check(account_id, instrument, qty, price, leverage=leverage)

    def liquidate(
        self, book: Book, prices: Prices, *, insurance_fund: Mapping[str, float] | None = None
    ) -> LiquidationRun:
        """Executes the liquidation queue at the marks (SPEC §8): fees to the insurance
        fund, bankruptcies paid by the fund, the rest deleveraged against the ADL queue at
        the bankruptcy price; every movement an integer posting (see
        ``vamargin.loss_allocation``). ``insurance_fund`` is ``{asset: balance}``."""
        config = self.config
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        decimals = [asset.minor_decimals for asset in config.assets]
        fund_before = [0] * len(config.assets)
        for symbol, balance in (insurance_fund or {}).items():
            if symbol not in config.asset_ids:
                raise DataError(f"insurance_fund[{symbol!r}]: unknown asset")
            if not (np.isfinite(balance) and balance >= 0):
                raise DataError(f"insurance_fund[{symbol!r}]: {balance} is not a balance ≥ 0")
            asset_id = config.asset_ids[symbol]
            fund_before[asset_id] = round(balance * 10 ** decimals[asset_id])
        raw = _core.liquidate(
            config.engine_params,
            bound.core,
            market.asset_prices,
            market.marks,
            fund_before,
            decimals,
            config.asset_ids.get(config.reporting_currency),
        )
        queue = self._queue_table(book, bound, raw["queue"])
        return liquidation_run(config, book, bound, queue, raw, fund_before)

    def margin_calls(
        self,
        book: Book,
        prices: Prices,
        as_of: dt.datetime,
        *,
        expired: Sequence[int] = (),
    ) -> MarginCalls:
        """Every account below maintenance with its call, deadline and cures, and a
        forced-sale plan for accounts in ``liquidation`` or whose call ``expired`` (account
        ids); see ``vamargin.financing``."""
        config = self.config
        now = utc_instant(as_of)
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        past = np.zeros(book.n_accounts, dtype=np.bool_)
        for account_id in expired:
            past[book.account_row(account_id)] = True
        raw = _core.margin_calls(
            config.engine_params, bound.core, market.asset_prices, market.marks, past
        )
        rows = raw["account"].astype(np.int64)
        n_assets = len(config.assets)
        deposit = raw["deposit"].reshape(len(rows), n_assets)
        sell = raw["sell"].reshape(len(rows), n_assets)
        hours = np.timedelta64(round(config.policy.call_deadline_hours * 3_600_000_000), "us")
        columns: dict[str, Column] = {
            "account_id": book.account_id[rows],
            "status": CategoryColumn(STATUSES, raw["status"]),
            "equity": raw["equity"],
            "call_amount": raw["call_amount"],
            "deadline": np.full(len(rows), now + hours, dtype="datetime64[us]"),
            "forced": raw["forced"],
        }
        for i, asset in enumerate(config.assets):
            if asset.eligible:
                columns[f"deposit_{asset.symbol}"] = units(deposit[:, i], market.asset_prices[i])
        for i, asset in enumerate(config.assets):
            columns[f"sell_{asset.symbol}"] = units(sell[:, i], market.asset_prices[i])
        sale_rows = raw["sale_row"].astype(np.int64)
        sale_asset = bound.holding_asset[sale_rows]
        forced_sales = Table(
            {
                "account_id": book.account_id[rows[raw["sale_call"]]],
                "asset": category([a.symbol for a in config.assets], sale_asset),
                "holding_row": sale_rows,
                "units": units(raw["sale_value"], market.asset_prices[sale_asset]),
                "value": raw["sale_value"],
                "fee": raw["sale_fee"],
            }
        )
        return MarginCalls(columns, forced_sales)

    def accrue_interest(self, book: Book, *, days: int = 1) -> Table:
        """Interest owed on every margin loan (negative holding) for ``days`` actual days:
        one row per loan — ``account_id``, ``asset``, ``principal``, ``interest`` (int64
        minor units of the loan's asset, rounded up: never under-charged) — at each
        asset's ``annual_rate`` and ``day_count`` (ACT/365 HKD, ACT/360 USD)."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise DataError(f"days: {days!r} is not a whole number of days ≥ 0")
        config = self.config
        bound = book.bind(config)
        charges = _core.accrue_interest(
            book.holding_amount,
            bound.holding_asset,
            [a.annual_rate for a in config.assets],
            [a.day_count for a in config.assets],
            [a.minor_decimals for a in config.assets],
            days,
        )
        loans = np.flatnonzero(book.holding_amount < 0)
        return Table(
            {
                "account_id": book.holding_account_id[loans],
                "asset": category([a.symbol for a in config.assets], bound.holding_asset[loans]),
                "principal": -book.holding_amount[loans],
                "interest": charges[loans],
            }
        )

    def firm_report(
        self, book: Book, prices: Prices, *, capital: float, top: int = 10
    ) -> FirmReport:
        """Firm-wide controls beside the client view (see ``vamargin.firm``); ``capital``
        is the firm's capital in the reporting currency."""
        if not (np.isfinite(capital) and capital > 0):
            raise DataError(f"capital: {capital!r} is not a positive amount")
        config = self.config
        policy = config.policy
        bound = book.bind(config)
        market = resolve_market(config, book, bound, prices)
        weights = np.array([1.0 - a.effective_capital_haircut for a in config.assets])
        prices_filled = np.nan_to_num(market.asset_prices, nan=0.0)
        # Holdings alone: a firm report revalues no position.
        figures = _core.collateral_figures(
            config.engine_params, bound.core, prices_filled, weights, max(top, 0)
        )
        debit, by_asset = figures["debit"], figures["by_asset"]
        total_loans = float(figures["total_debit"])
        order = figures["top_debits"].astype(np.intp)
        top_clients = Table(
            {
                "account_id": book.account_id[order],
                "debit": debit[order],
                "collateral_value": figures["collateral"][order],
                "ltv": figures["ltv"][order],
                "share_of_loans": share(debit[order], total_loans),
            }
        )
        top_groups = self._top_groups(book, debit, total_loans, top, order)
        held = np.flatnonzero(by_asset > 0)
        total_collateral = float(by_asset.sum())
        symbols = [a.symbol for a in config.assets]
        collateral_by_asset = Table(
            {
                "asset": category(symbols, held),
                "value": by_asset[held],
                "share": share(by_asset[held], total_collateral),
            }
        )
        groups = sorted({config.assets[i].group or config.assets[i].symbol for i in held})
        group_value = np.array(
            [
                sum(by_asset[i] for i in held if (config.assets[i].group or symbols[i]) == g)
                for g in groups
            ]
        )
        by_group = Table(
            {
                "group": np.asarray(groups, dtype=np.str_),
                "value": group_value.astype(np.float64),
                "share": share(group_value.astype(np.float64), total_collateral),
            }
        )
        va_value = sum(by_asset[i] for i in held if config.assets[i].asset_class == "va")
        uncovered = float(figures["uncovered"])
        rules: list[tuple[str, str, float, float]] = []
        loans_to_capital = total_loans / capital
        if loans_to_capital > policy.max_loans_to_capital:
            rules.append(
                ("max_loans_to_capital", "firm", loans_to_capital, policy.max_loans_to_capital)
            )
        for row in range(len(top_groups)):
            group_share = float(top_groups["share_of_loans"][row])
            if group_share > policy.max_client_share:
                group = str(top_groups["group"][row])
                rules.append(("max_client_share", group, group_share, policy.max_client_share))
        if policy.max_collateral_share is not None:
            for row in range(len(collateral_by_asset)):
                asset_share = float(collateral_by_asset["share"][row])
                if asset_share > policy.max_collateral_share:
                    asset = str(collateral_by_asset["asset"][row])
                    rules.append(
                        ("max_collateral_share", asset, asset_share, policy.max_collateral_share)
                    )
        breaches = Table(
            {
                "rule": np.asarray([r[0] for r in rules], dtype=np.str_),
                "subject": np.asarray([r[1] for r in rules], dtype=np.str_),
                "value": np.asarray([r[2] for r in rules], dtype=np.float64),
                "limit": np.asarray([r[3] for r in rules], dtype=np.float64),
            }
        )
        return FirmReport(
            capital=float(capital),
            total_loans=total_loans,
            loans_to_capital=loans_to_capital,
            top_clients=top_clients,
            top_groups=top_groups,
            collateral_by_asset=collateral_by_asset,
            by_group=by_group,
            va_share=va_value / total_collateral if total_collateral > 0 else 0.0,
            capital_uncovered=uncovered,
            breaches=breaches,
        )

    @staticmethod
    def _top_groups(
        book: Book,
        debit: npt.NDArray[np.float64],
        total: float,
        top: int,
        top_clients: npt.NDArray[np.intp],
    ) -> Table:
        """Loans by related-client group (``client_group``; otherwise each account is its
        own group, named by its id, and the groups are ``top_clients``, the rows of the
        ``top`` largest debits), largest first."""
        if book.client_group is None:
            names = np.asarray([str(a) for a in book.account_id[top_clients]], dtype=np.str_)
            return Table(
                {
                    "group": names,
                    "accounts": np.ones(len(top_clients), dtype=np.int64),
                    "debit": debit[top_clients],
                    "share_of_loans": share(debit[top_clients], total),
                }
            )
        groups = book.client_group
        n_groups = len(groups.names)
        loans = np.bincount(groups.codes, weights=debit, minlength=n_groups)
        members = np.bincount(groups.codes, minlength=n_groups)
        order = largest_positive(loans, top)
        return Table(
            {
                "group": np.asarray(groups.names, dtype=np.str_)[order],
                "accounts": members[order].astype(np.int64),
                "debit": loans[order],
                "share_of_loans": share(loans[order], total),
            }
        )
