"""The Dask path (``vamargin.dask``) against the single-machine engine.

One book — a shuffled synthetic HK book plus hand-made edge cases — is written as a
dataset of five account ranges: three of the synthetic book, one range with no account
at all (an empty partition) and one of margin-loan accounts with no position. Three
identical hand-made accounts sit in three different partitions, so the merged queues
must break their ties (equal health and deficit, equal ADL scores) by account id exactly
as the kernel does. A real two-process ``LocalCluster`` runs every task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vamargin as vm
from vamargin import scenarios as shipped_sets
from vamargin.dask import (
    MANIFEST,
    ROW_COLUMN,
    BookDataset,
    DaskRiskEngine,
    open_dataset,
    write_dataset,
)
from vamargin.synthetic import DEFAULT_PRICES, synthetic_book

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

CONFIG = vm.RiskConfig.hk_default()
ENGINE = vm.RiskEngine(CONFIG)
BOUNDARIES = [10_000, 20_000, 40_000, 1_000_000]  # partition 3 is empty, 4 has no positions
TIED = [15, 10_005, 20_005]  # identical accounts in partitions 0, 1 and 2
PRICES = dict(DEFAULT_PRICES)
STRESSED = {  # BTC −12%, ETH −18%: more liquidations, bankruptcies and losing positions
    **PRICES,
    "BTC": PRICES["BTC"] * 0.88,
    "ETH": PRICES["ETH"] * 0.82,
    "BTC-USDT-PERP": PRICES["BTC-USDT-PERP"] * 0.88,
    "BTC-USD-PERP": PRICES["BTC-USD-PERP"] * 0.88,
    "ETH-USDT-PERP": PRICES["ETH-USDT-PERP"] * 0.82,
    "ETH-USD-PERP": PRICES["ETH-USD-PERP"] * 0.82,
}
RATES = [
    {"BTC-USDT-PERP": 0.0001, "ETH-USDT-PERP": -0.00037, "BTC-USD-PERP": 0.000123,
     "ETH-USD-PERP": 0.0},
    {"BTC-USDT-PERP": -0.0299, "ETH-USDT-PERP": 0.0173, "BTC-USD-PERP": -0.0011,
     "ETH-USD-PERP": 0.00031},
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    tables: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
    book: vm.Book
    dataset: BookDataset


def _columns(table: Any) -> dict[str, Any]:
    return {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}


def _hand_made() -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, list[Any]]]:
    accounts: dict[str, list[Any]] = {
        "account_id": [], "investor_class": [], "affiliate_market_maker": [],
        "credit_limit": [], "margin_client": [], "credit_approved": [],
    }  # fmt: skip
    holdings: dict[str, list[Any]] = {"account_id": [], "asset": [], "amount": []}
    positions: dict[str, list[Any]] = {
        "account_id": [], "instrument": [], "qty": [], "entry_price": [],
        "isolated_margin": [],
    }  # fmt: skip

    def account(account_id: int, *, borrower: bool = False) -> None:
        accounts["account_id"].append(account_id)
        accounts["investor_class"].append("individual_pi")
        accounts["affiliate_market_maker"].append(False)
        accounts["credit_limit"].append(np.inf)
        accounts["margin_client"].append(borrower)
        accounts["credit_approved"].append(borrower)

    def holding(account_id: int, asset: str, amount: float) -> None:
        for name, value in zip(holdings, (account_id, asset, amount), strict=True):
            holdings[name].append(value)

    def position(account_id: int, instrument: str, qty: float, entry: float, iso: float) -> None:
        row = (account_id, instrument, qty, entry, iso)
        for name, value in zip(positions, row, strict=True):
            positions[name].append(value)

    for account_id in TIED:
        # Cross: 2 BTC long from 110 000 on 1 000 USDT (bankrupt); isolated ETH long below
        # its maintenance margin; isolated BTC inverse short in profit.
        account(account_id)
        holding(account_id, "USDT", 1_000.0)
        position(account_id, "BTC-USDT-PERP", 2_000.0, 110_000.0, np.nan)
        position(account_id, "ETH-USDT-PERP", 1_000.0, 3_500.0, 40.0)
        position(account_id, "BTC-USD-PERP", -500.0, 100_000.0, 0.1)
        position(account_id, "ETH-USD-PERP", 0.0, 3_000.0, np.nan)  # empty: ignored
    # Margin loans against BTC at loan-to-values 20% … 95%: no perpetuals at all.
    for k, ltv in enumerate(np.linspace(0.20, 0.95, 16)):
        account_id = 1_000_003 + 10 * k
        account(account_id, borrower=True)
        holding(account_id, "BTC", 1.0)
        holding(account_id, "HKD", -round(ltv * PRICES["BTC"] / PRICES["HKD"], 2))
    return accounts, holdings, positions


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def engine(client: Any) -> DaskRiskEngine:
    return DaskRiskEngine(CONFIG, client=client)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    synthetic = synthetic_book(CONFIG, n_accounts=3_000, seed=11, shuffle_positions=True)
    rng = np.random.default_rng(5)
    tables = []
    for generated, extra in zip(
        (synthetic.accounts, synthetic.holdings, synthetic.positions), _hand_made(), strict=True
    ):
        columns = _columns(generated)
        joined = {n: np.concatenate([columns[n], np.asarray(extra[n])]) for n in columns}
        order = rng.permutation(len(joined["account_id"]))  # any row order
        tables.append({n: c[order] for n, c in joined.items()})
    accounts, holdings, positions = tables
    # Cumulative funding index at each position's last settlement: a few past values per
    # instrument (linear in USDT per BTC/ETH, inverse in coin per USD).
    inverse = np.isin(positions["instrument"], ["BTC-USD-PERP", "ETH-USD-PERP"])
    linear_index = np.round(rng.uniform(-40.0, 40.0, 7), 6)
    inverse_index = np.round(rng.uniform(-4e-7, 4e-7, 7), 15)
    positions["funding_index"] = np.where(
        inverse, rng.choice(inverse_index, len(inverse)), rng.choice(linear_index, len(inverse))
    )
    path = tmp_path_factory.mktemp("book") / "dataset"
    dataset = write_dataset(accounts, holdings, positions, path, boundaries=BOUNDARIES)
    return Case((accounts, holdings, positions), vm.Book(accounts, holdings, positions), dataset)


def assert_same(mine: vm.Table, local: vm.Table) -> None:
    """Same columns, dtypes and values, floats bit for bit."""
    assert mine.columns == local.columns
    assert len(mine) == len(local)
    for name in local.columns:
        a, b = mine[name], local[name]
        assert a.dtype == b.dtype, name
        if a.dtype.kind == "f":
            assert np.array_equal(a.view(np.int64), b.view(np.int64)), name
        else:
            assert np.array_equal(a, b), name


# -- the dataset ---------------------------------------------------------------------------


def test_writer_splits_by_account_ranges_keeping_each_account_whole(case: Case) -> None:
    dataset = open_dataset(case.dataset.path)
    assert dataset == case.dataset
    assert dataset.n_partitions == len(BOUNDARIES) + 1
    manifest = json.loads((Path(dataset.path) / MANIFEST).read_text())
    assert manifest["boundaries"] == BOUNDARIES
    accounts, holdings, positions = case.tables
    assert (dataset.n_accounts, dataset.n_holdings, dataset.n_positions) == (
        len(accounts["account_id"]), len(holdings["account_id"]), len(positions["account_id"])
    )  # fmt: skip
    assert dataset.rows[3] == (0, 0, 0)  # no account in [40 000, 1 000 000)
    assert dataset.rows[4][0] == 16
    assert dataset.rows[4][2] == 0
    edges = [-(2**63), *BOUNDARIES, 2**63 - 1]
    for k in range(dataset.n_partitions):
        book = dataset.partition(k)
        assert ((book.account_id >= edges[k]) & (book.account_id < edges[k + 1])).all()
        assert {dataset.partition_of(int(a)) for a in book.account_id} <= {k}
        rows = dataset.read_table("positions", k).column(ROW_COLUMN).to_numpy()
        assert np.array_equal(book.qty, positions["qty"][rows])  # rows keep their numbers
        assert (np.diff(rows) > 0).all()  # and their order within the partition


def test_reader_reads_only_the_partition_it_is_asked_for(case: Case, tmp_path: Path) -> None:
    accounts, holdings, positions = case.tables
    write_dataset(accounts, holdings, positions, tmp_path / "d", partitions=3)
    (tmp_path / "d" / "positions" / "part-00001.parquet").unlink()
    reopened = open_dataset(tmp_path / "d")  # the manifest only
    assert reopened.partition(0).n_accounts + reopened.partition(2).n_accounts > 0
    with pytest.raises(FileNotFoundError):
        reopened.partition(1)


def test_writer_balances_rows_and_refuses_to_overwrite(case: Case, tmp_path: Path) -> None:
    accounts, holdings, positions = case.tables
    dataset = write_dataset(accounts, holdings, positions, tmp_path / "d", partitions=4)
    weights = [sum(r) for r in dataset.rows]
    assert max(weights) - min(weights) <= 40  # within a few accounts' rows
    with pytest.raises(FileExistsError):
        write_dataset(accounts, holdings, positions, tmp_path / "d", partitions=2)
    again = write_dataset(
        accounts, holdings, positions, tmp_path / "d", partitions=2, overwrite=True
    )
    assert open_dataset(tmp_path / "d").n_partitions == again.n_partitions == 2
    assert not (tmp_path / "d" / "accounts" / "part-00002.parquet").exists()
    bad = dict(holdings, account_id=holdings["account_id"] + 1)
    with pytest.raises(vm.DataError, match=r"holdings\.account_id"):  # checked as a Book is
        write_dataset(accounts, bad, positions, tmp_path / "e")


# -- revaluation and funding ---------------------------------------------------------------


@pytest.mark.parametrize("prices", [PRICES, STRESSED], ids=["marks", "stressed"])
def test_revalue_equals_the_local_engine_bitwise(
    engine: DaskRiskEngine, case: Case, prices: dict[str, float]
) -> None:
    local = ENGINE.revalue(case.book, prices)
    original = engine.revalue(case.dataset, prices, order="original")
    assert_same(original.accounts, local.accounts)
    assert_same(original.positions, local.positions)
    # Partition order: partition by partition, each in file order.
    by_partition = engine.revalue(case.dataset, prices)
    rows = np.concatenate(
        [case.dataset.read_table("accounts", k).column(ROW_COLUMN).to_numpy()
         for k in range(case.dataset.n_partitions)]
    )  # fmt: skip
    columns = ["account_id", "equity", "status"]
    assert_same(
        vm.Table({c: by_partition.accounts[c] for c in columns}),
        vm.Table({c: local.accounts[c][rows] for c in columns}),
    )


def _assert_same_funding(mine: Any, local: Any) -> None:
    assert np.array_equal(mine.payments, local.payments)
    assert mine.payments.dtype == local.payments.dtype == np.int64
    assert_same(mine.by_account, local.by_account)
    assert_same(mine.by_instrument, local.by_instrument)
    assert mine.house == local.house
    assert mine.dust == local.dust
    ledger = mine.ledger()
    assert int(ledger["amount"].sum()) == 0


@pytest.mark.parametrize("rates", RATES, ids=["small", "large"])
def test_funding_equals_the_local_engine_exactly(
    engine: DaskRiskEngine, case: Case, rates: dict[str, float]
) -> None:
    local = ENGINE.funding(case.book, rates, PRICES)
    mine = engine.funding(case.dataset, rates, PRICES, order="original")
    _assert_same_funding(mine, local)
    assert any(local.house.values())
    assert any(local.dust.values())
    in_partitions = engine.funding(case.dataset, rates, PRICES)
    assert in_partitions.house == local.house
    assert in_partitions.dust == local.dust
    assert np.array_equal(np.sort(in_partitions.payments), np.sort(local.payments))


def test_funding_against_the_index_equals_the_local_engine_exactly(
    engine: DaskRiskEngine, case: Case
) -> None:
    index = {"BTC-USDT-PERP": 51.123456, "ETH-USDT-PERP": -3.25,
             "BTC-USD-PERP": 4.1e-7, "ETH-USD-PERP": -1.234567e-7}  # fmt: skip
    local = ENGINE.funding(case.book, index=index)
    _assert_same_funding(engine.funding(case.dataset, index=index, order="original"), local)


def test_house_of_an_open_interest_beyond_int64_units(tmp_path: Path) -> None:
    """9.2e18 units of 1e-9 contract is the most one position can carry: the house of a
    larger total is settled from several exact pieces."""
    ids = np.array([3, 10_003, 20_003, 30_003], dtype=np.int64)
    accounts = {"account_id": ids, "investor_class": ["institutional_pi"] * 4}
    positions = {
        "account_id": ids,
        "instrument": ["BTC-USDT-PERP", "BTC-USDT-PERP", "BTC-USDT-PERP", "BTC-USD-PERP"],
        "qty": [5_000_000_000.123, 4_999_999_999.5, -1.000000001, 7_000_000_000.25],
        "entry_price": [96_000.0] * 4,
        "funding_index": [1.5, -2.000001, 0.25, 3.3e-7],
    }
    book = vm.Book(accounts, None, positions)
    dataset = write_dataset(accounts, None, positions, tmp_path / "d", partitions=4)
    assert dataset.n_partitions == 4
    engine = DaskRiskEngine(CONFIG)  # Dask's default scheduler
    rates = {"BTC-USDT-PERP": 0.000731, "BTC-USD-PERP": -0.000913}
    _assert_same_funding(
        engine.funding(dataset, rates, PRICES), ENGINE.funding(book, rates, PRICES)
    )
    index = {"BTC-USDT-PERP": 7.000003, "BTC-USD-PERP": -1.1e-6}
    _assert_same_funding(engine.funding(dataset, index=index), ENGINE.funding(book, index=index))


# -- queues --------------------------------------------------------------------------------


@pytest.mark.parametrize("prices", [PRICES, STRESSED], ids=["marks", "stressed"])
def test_liquidation_queue_equals_the_local_engine(
    engine: DaskRiskEngine, case: Case, prices: dict[str, float]
) -> None:
    local = ENGINE.liquidation_queue(case.book, prices)
    mine = engine.liquidation_queue(case.dataset, prices, order="original")
    assert_same(mine, local)
    assert_same(mine.plan, local.plan)
    # The tied accounts are queued one after another, by account id.
    tied = np.flatnonzero(np.isin(mine["account_id"], TIED) & (mine["scope"] == "account"))
    assert list(mine["account_id"][tied]) == TIED
    assert np.array_equal(np.diff(tied), [1, 1])
    assert len(set(mine["health"][tied].tolist())) == 1
    # Partition order: row numbers point into the partition-order positions table.
    queue = engine.liquidation_queue(case.dataset, prices)
    positions = engine.revalue(case.dataset, prices).positions
    isolated = queue["position_row"] >= 0
    assert isolated.any()
    rows = queue["position_row"][isolated]
    assert np.array_equal(positions["account_id"][rows], queue["account_id"][isolated])
    assert np.array_equal(positions["instrument"][rows], queue["instrument"][isolated])


@pytest.mark.parametrize("prices", [PRICES, STRESSED], ids=["marks", "stressed"])
def test_adl_queue_equals_the_local_engine(
    engine: DaskRiskEngine, case: Case, prices: dict[str, float]
) -> None:
    local = ENGINE.adl_queue(case.book, prices)
    mine = engine.adl_queue(case.dataset, prices, order="original")
    assert_same(mine, local)
    # The tied short BTC inverse positions: equal scores, consecutive ranks by account id.
    tied = np.flatnonzero(
        np.isin(mine["account_id"], TIED) & (mine["instrument"] == "BTC-USD-PERP")
    )
    assert list(mine["account_id"][tied]) == TIED
    assert len(set(mine["score"][tied].tolist())) == 1
    assert np.array_equal(np.diff(mine["rank"][tied]), [1, 1])
    assert set(mine["bucket"].tolist()) == {1, 2, 3, 4, 5}


# -- stress --------------------------------------------------------------------------------


def test_stress_counts_exactly_and_amounts_to_rounding(engine: DaskRiskEngine, case: Case) -> None:
    scenarios = {**shipped_sets.smf_falls(), **shipped_sets.weekend_gap(), "flat": {}}
    local = ENGINE.stress(case.book, PRICES, scenarios, excess_liquid_capital=1e5)
    mine = engine.stress(case.dataset, PRICES, scenarios, excess_liquid_capital=1e5)
    assert mine.columns == local.columns
    assert list(mine["scenario"]) == list(scenarios)
    for name in ("normal", "restricted", "margin_call", "liquidation", "isolated_liquidations"):
        assert mine[name].dtype == np.int64
        assert np.array_equal(mine[name], local[name]), name
    assert local["liquidation"].min() > 0
    assert local["broker_loss"].max() > 0
    for name in ("call_amount", "uncovered_loss", "insurance_draw", "broker_loss",
                 "capital_shortfall"):  # fmt: skip
        np.testing.assert_allclose(mine[name], local[name], rtol=1e-12, atol=1e-9, err_msg=name)


# -- without a cluster, errors, the decimal reading ------------------------------------------


def test_local_threads_give_the_same_results(case: Case) -> None:
    """No client: Dask's default scheduler, here its thread pool (the module's cluster
    client is the default while it lives, so threads are asked for explicitly)."""
    engine = DaskRiskEngine(CONFIG)
    with dask.config.set(scheduler="threads"):
        queue = engine.adl_queue(case.dataset, STRESSED, order="original")
        funding = engine.funding(case.dataset, RATES[1], STRESSED, order="original")
    assert_same(queue, ENGINE.adl_queue(case.book, STRESSED))
    _assert_same_funding(funding, ENGINE.funding(case.book, RATES[1], STRESSED))


def test_errors_name_the_partition(engine: DaskRiskEngine, case: Case) -> None:
    prices = {k: v for k, v in PRICES.items() if k != "HKD"}
    with pytest.raises(vm.DataError, match=r"^partition [0-4]: prices: missing price .*'HKD'"):
        engine.revalue(case.dataset, prices)
    with pytest.raises(vm.DataError, match="order"):
        engine.revalue(case.dataset, PRICES, order="sorted")  # type: ignore[arg-type]
