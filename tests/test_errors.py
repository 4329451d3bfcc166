# ruff: noqa: E501  (the case tables below keep one case per line)
"""Error paths: every bad input of SPEC §3, every validation of SPEC §4, and the calculators'.

Each test asserts the exception class and the message: data errors start with
``table.column row N`` (0-based row of the table as given), config errors with the key at
fault. Nothing is partially applied: a book that failed once still gives the same
results as a fresh one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vamargin as vm
from vamargin import calc

CFG = vm.RiskConfig.hk_default()
ENGINE = vm.RiskEngine(CFG)

PRICES: dict[str, float] = {
    "USD": 1.0,
    "HKD": 0.128,
    "USDT": 1.0,
    "BTC": 60_000.0,
    "ETH": 3_000.0,
    "BTC-USDT-PERP": 60_000.0,
    "ETH-USDT-PERP": 3_000.0,
    "BTC-USD-PERP": 60_000.0,
}
BTC_ROW = list(PRICES).index("BTC")

Columns = dict[str, Any]


# -- a small valid book --------------------------------------------------------------------


def _accounts() -> Columns:
    return {
        "account_id": np.array([10, 20, 30], dtype=np.int64),
        "investor_class": np.array(["individual_pi", "corporate_pi", "retail"]),
        "affiliate_market_maker": np.array([False, True, False]),
        "credit_limit": np.array([1e6, np.inf, 5e5]),
        "margin_client": np.array([True, True, False]),
        "credit_approved": np.array([True, False, False]),
    }


def _holdings() -> Columns:
    # account 10 borrows HKD against BTC (credit-approved margin client)
    return {
        "account_id": np.array([10, 10, 20, 30], dtype=np.int64),
        "asset": np.array(["BTC", "HKD", "USDT", "USDT"]),
        "amount": np.array([1.0, -100_000.0, 5_000.0, 1_000.0]),
    }


def _positions() -> Columns:
    # cross linear, isolated linear, cross inverse (settles in BTC)
    return {
        "account_id": np.array([20, 10, 10], dtype=np.int64),
        "instrument": np.array(["BTC-USDT-PERP", "ETH-USDT-PERP", "BTC-USD-PERP"]),
        "qty": np.array([10.0, -5.0, 3.0]),
        "entry_price": np.array([60_000.0, 3_000.0, 55_000.0]),
        "isolated_margin": np.array([np.nan, 200.0, np.nan]),
    }


TABLES = {"accounts": _accounts, "holdings": _holdings, "positions": _positions}


def _tables(**changed: Any) -> tuple[Any, Any, Any]:
    """The valid book's three tables, with whole tables replaced by keyword."""
    accounts, holdings, positions = (changed.get(name, make()) for name, make in TABLES.items())
    return accounts, holdings, positions


def _set(columns: Columns, column: str, row: int, value: Any) -> Columns:
    """A copy of ``columns`` with one cell changed (the dtype follows the new values)."""
    values = list(columns[column].tolist())
    values[row] = value
    return {**columns, column: np.array(values)}


def _replace(table: str, **columns: Any) -> Columns:
    return {**TABLES[table](), **{k: np.asarray(v) for k, v in columns.items()}}


def _drop(table: str, column: str) -> Columns:
    columns = TABLES[table]()
    del columns[column]
    return columns


def _book(accounts: Any = None, holdings: Any = None, positions: Any = None) -> vm.Book:
    return vm.Book(
        _accounts() if accounts is None else accounts,
        _holdings() if holdings is None else holdings,
        _positions() if positions is None else positions,
    )


def _revalue(
    accounts: Any = None, holdings: Any = None, positions: Any = None, prices: Any = None
) -> vm.Revaluation:
    """Builds the book and revalues it (for errors that may come from either step)."""
    return ENGINE.revalue(
        _book(accounts, holdings, positions), PRICES if prices is None else prices
    )


def _at(table: str, column: str, row: int) -> str:
    """Regex for the start of a data error naming ``table.column row N``."""
    return "^" + re.escape(f"{table}.{column} row {row}: ")


def _key(key: str, reason: str = "") -> str:
    """Regex for a config error naming ``key`` first, then ``reason`` (a regex)."""
    return "^" + re.escape(f"{key}: ") + (f".*{reason}" if reason else "")


def _assert_same(left: vm.Revaluation, right: vm.Revaluation) -> None:
    for name in ("accounts", "positions"):
        a, b = getattr(left, name), getattr(right, name)
        assert a.columns == b.columns
        for column in a.columns:
            np.testing.assert_array_equal(a[column], b[column], err_msg=f"{name}.{column}")


def test_the_valid_book_revalues() -> None:
    result = _revalue()
    assert len(result.accounts) == 3
    assert len(result.positions) == 3
    assert np.isfinite(result.accounts["equity"]).all()


def test_exception_hierarchy() -> None:
    assert issubclass(vm.MarginError, ValueError)
    for cls in (vm.ConfigError, vm.DataError, vm.EligibilityError):
        assert issubclass(cls, vm.MarginError)
    assert not issubclass(vm.EligibilityError, vm.DataError)
    assert not issubclass(vm.DataError, vm.ConfigError)


# -- §3 structure: columns present, typed, equally long ---------------------------------------


REQUIRED_COLUMNS = [
    ("accounts", "account_id"),
    ("accounts", "investor_class"),
    ("holdings", "account_id"),
    ("holdings", "asset"),
    ("holdings", "amount"),
    ("positions", "account_id"),
    ("positions", "instrument"),
    ("positions", "qty"),
    ("positions", "entry_price"),
]


@pytest.mark.parametrize(("table", "column"), REQUIRED_COLUMNS)
def test_missing_required_column(table: str, column: str) -> None:
    with pytest.raises(vm.DataError, match="^" + re.escape(f"{table}: missing column '{column}'")):
        vm.Book(*_tables(**{table: _drop(table, column)}))


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("accounts", "affiliate_market_maker"),
        ("accounts", "credit_limit"),
        ("accounts", "margin_client"),
        ("accounts", "credit_approved"),
        ("positions", "isolated_margin"),
    ],
)
def test_optional_column_may_be_absent(table: str, column: str) -> None:
    book = vm.Book(*_tables(**{table: _drop(table, column)}))
    assert book.n_accounts == 3


def test_unknown_extra_columns_are_ignored() -> None:
    accounts = {**_accounts(), "desk": np.array(["a", "b", "c"])}
    holdings = {**_holdings(), "note": np.array([1, 2, 3, 4])}
    _assert_same(_revalue(accounts, holdings), _revalue())


WRONG_TYPES = [
    ("accounts", "account_id", ["10", "20", "30"], "integer"),
    ("accounts", "account_id", [10.0, 20.0, 30.0], "integer"),
    ("accounts", "investor_class", [1, 2, 3], "string"),
    ("accounts", "affiliate_market_maker", [0, 1, 0], "boolean"),
    ("accounts", "credit_limit", ["1", "2", "3"], "numeric"),
    ("accounts", "margin_client", [1, 1, 0], "boolean"),
    ("accounts", "credit_approved", ["yes", "no", "no"], "boolean"),
    ("holdings", "account_id", ["10", "10", "20", "30"], "integer"),
    ("holdings", "asset", [1, 2, 3, 4], "string"),
    ("holdings", "asset", [b"BTC", b"HKD", b"USDT", b"USDT"], "string"),
    ("holdings", "amount", ["1", "2", "3", "4"], "numeric"),
    ("holdings", "amount", [True, False, True, True], "numeric"),
    ("positions", "account_id", [20.0, 10.0, 10.0], "integer"),
    ("positions", "instrument", [1, 2, 3], "string"),
    ("positions", "qty", ["1", "2", "3"], "numeric"),
    ("positions", "entry_price", ["1", "2", "3"], "numeric"),
    ("positions", "isolated_margin", ["a", "b", "c"], "numeric"),
    ("positions", "leverage", ["a", "b", "c"], "numeric"),
    ("positions", "funding_index", ["a", "b", "c"], "numeric"),
]


@pytest.mark.parametrize(("table", "column", "values", "expected"), WRONG_TYPES)
def test_wrong_column_type(table: str, column: str, values: list[Any], expected: str) -> None:
    bad = _replace(table, **{column: values})
    pattern = "^" + re.escape(f"{table}.{column}: must be a") + f"n? {expected} column, got "
    with pytest.raises(vm.DataError, match=pattern):
        vm.Book(*_tables(**{table: bad}))


def test_decimal_amount_is_not_numeric() -> None:
    holdings = pa.table({**_holdings(), "amount": pa.array([1, 2, 3, 4], pa.decimal128(10, 2))})
    with pytest.raises(vm.DataError, match=_key("holdings.amount") + "must be a numeric column"):
        _book(holdings=holdings)


@pytest.mark.parametrize(
    ("table", "column", "values"),
    [
        ("accounts", "investor_class", ["retail", "retail"]),
        ("accounts", "credit_limit", [1.0]),
        ("holdings", "amount", [1.0, 2.0]),
        ("holdings", "asset", ["BTC", "HKD", "USDT", "USDT", "USDT"]),
        ("positions", "qty", [1.0]),
        ("positions", "isolated_margin", [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_length_mismatch_between_dict_columns(table: str, column: str, values: list[Any]) -> None:
    bad = _replace(table, **{column: values})
    with pytest.raises(vm.DataError, match=f"^{table}: columns have different lengths .*{column}="):
        vm.Book(*_tables(**{table: bad}))


def test_two_dimensional_column_is_rejected() -> None:
    accounts = {**_accounts(), "account_id": np.array([[10, 20, 30]])}
    with pytest.raises(
        vm.DataError, match=r"^accounts.account_id: cannot read the column: .*one-dimensional"
    ):
        _book(accounts)


@pytest.mark.parametrize("table", ["accounts", "holdings", "positions"])
@pytest.mark.parametrize("value", [5, [1, 2], "accounts.parquet"])
def test_unsupported_table_object(table: str, value: Any) -> None:
    with pytest.raises(vm.DataError, match=f"^{table}: expected a pyarrow/polars/pandas table"):
        vm.Book(*_tables(**{table: value}))


def test_mixed_type_column_names_the_column() -> None:
    holdings = {**_holdings(), "asset": np.array(["BTC", "HKD", 3, "USDT"], dtype=object)}
    with pytest.raises(vm.DataError, match=r"holdings\.asset"):
        _book(holdings=holdings)


# -- §3 values: NaN / inf / null / out of range --------------------------------------------------


NON_FINITE_CELLS = [
    ("holdings", "amount", 2),
    ("positions", "qty", 1),
    ("positions", "entry_price", 2),
    ("positions", "funding_index", 1),
]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("table", "column", "row"), NON_FINITE_CELLS)
def test_non_finite_number(table: str, column: str, row: int, value: float) -> None:
    columns = TABLES[table]()
    if column not in columns:
        columns[column] = np.zeros(len(next(iter(columns.values()))))
    bad = _set(columns, column, row, value)
    with pytest.raises(vm.DataError, match=_at(table, column, row) + ".*not a finite number"):
        vm.Book(*_tables(**{table: bad}))


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("column", ["isolated_margin", "leverage"])
def test_infinite_optional_position_number(column: str, value: float) -> None:
    positions = {**_positions(), column: np.array([np.nan, 2.0, value])}
    with pytest.raises(vm.DataError, match=_at("positions", column, 2) + ".*not a finite number"):
        _book(positions=positions)


def test_nan_isolated_margin_means_cross_and_nan_leverage_means_tier_maximum() -> None:
    positions = {**_positions(), "leverage": np.array([np.nan, np.nan, np.nan])}
    _assert_same(_revalue(positions=positions), _revalue())
    cross = {**_positions(), "isolated_margin": np.array([np.nan, np.nan, np.nan])}
    assert _book(positions=cross).n_positions == 3


def _with_null(columns: Columns, column: str, row: int) -> pa.Table:
    table = pa.table(columns)
    values = table.column(column).to_pylist()
    values[row] = None
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(values, type=table.column(column).type))


NULL_CELLS = [
    ("accounts", "account_id", 1),
    ("accounts", "investor_class", 2),
    ("accounts", "affiliate_market_maker", 1),
    ("accounts", "margin_client", 0),
    ("accounts", "credit_approved", 2),
    ("holdings", "account_id", 3),
    ("holdings", "asset", 1),
    ("holdings", "amount", 2),
    ("positions", "account_id", 2),
    ("positions", "instrument", 1),
    ("positions", "qty", 0),
    ("positions", "entry_price", 1),
]


@pytest.mark.parametrize(("table", "column", "row"), NULL_CELLS)
def test_null_in_required_column(table: str, column: str, row: int) -> None:
    bad = _with_null(TABLES[table](), column, row)
    with pytest.raises(vm.DataError, match=_at(table, column, row) + "missing value"):
        vm.Book(*_tables(**{table: bad}))


def test_null_funding_index_is_rejected() -> None:
    positions = _with_null({**_positions(), "funding_index": np.zeros(3)}, "funding_index", 1)
    with pytest.raises(vm.DataError, match=_at("positions", "funding_index", 1) + "missing value"):
        _book(positions=positions)


def test_null_optional_position_columns_read_as_defaults() -> None:
    positions = _with_null(_positions(), "isolated_margin", 1)  # row 1 becomes cross
    expected = {**_positions(), "isolated_margin": np.array([np.nan, np.nan, np.nan])}
    _assert_same(_revalue(positions=positions), _revalue(positions=expected))
    leverage = _with_null({**_positions(), "leverage": np.array([5.0, 5.0, 5.0])}, "leverage", 0)
    assert _book(positions=leverage).n_positions == 3


def test_null_credit_limit_is_rejected() -> None:
    accounts = _with_null(_accounts(), "credit_limit", 1)
    with pytest.raises(vm.DataError, match=_at("accounts", "credit_limit", 1)):
        _book(accounts)


@pytest.mark.parametrize("value", [np.nan, -1.0, -np.inf], ids=["nan", "negative", "-inf"])
def test_bad_credit_limit(value: float) -> None:
    accounts = _set(_accounts(), "credit_limit", 2, value)
    with pytest.raises(vm.DataError, match=_at("accounts", "credit_limit", 2) + ".*not a limit"):
        _book(accounts)


def test_infinite_and_zero_credit_limits_are_allowed() -> None:
    accounts = {**_accounts(), "credit_limit": np.array([np.inf, 0.0, np.inf])}
    assert _book(accounts).n_accounts == 3


@pytest.mark.parametrize("name", ["professional", "Retail", "", "pi"])
def test_unknown_investor_class(name: str) -> None:
    accounts = _set(_accounts(), "investor_class", 1, name)
    with pytest.raises(vm.DataError, match=_at("accounts", "investor_class", 1) + ".*not one of"):
        _book(accounts)


@pytest.mark.parametrize(
    ("ids", "row"),
    [
        ([10, 20, 10], 2),
        ([10, 20, 20], 2),
        ([5, 5, 6], 1),
        ([-1, 0, -1], 2),
        ([2**62, 1, 2**62], 2),
    ],
)
def test_duplicate_account_id(ids: list[int], row: int) -> None:
    accounts = _replace("accounts", account_id=np.array(ids, dtype=np.int64))
    match = "^" + re.escape(f"accounts.account_id: row {row}: duplicate key {ids[row]}")
    with pytest.raises(vm.DataError, match=match):
        vm.Book(accounts)


@pytest.mark.parametrize("unknown", [0, 99, -10, 2**63 - 1])
def test_holding_of_unknown_account(unknown: int) -> None:
    holdings = _set(_holdings(), "account_id", 2, unknown)
    match = "^" + re.escape(f"holdings.account_id: row 2: unknown key {unknown}")
    with pytest.raises(vm.DataError, match=match):
        _book(holdings=holdings)


@pytest.mark.parametrize("unknown", [0, 99, -10])
def test_position_of_unknown_account(unknown: int) -> None:
    positions = _set(_positions(), "account_id", 1, unknown)
    match = "^" + re.escape(f"positions.account_id: row 1: unknown key {unknown}")
    with pytest.raises(vm.DataError, match=match):
        _book(positions=positions)


def test_account_id_out_of_int64_range() -> None:
    accounts = {**_accounts(), "account_id": np.array([2**63 + 5, 20, 30], dtype=np.uint64)}
    with pytest.raises(vm.DataError, match=_at("accounts", "account_id", 0)):
        vm.Book(accounts)


@pytest.mark.parametrize("entry_price", [0.0, -1.0, -60_000.0])
def test_entry_price_not_positive_with_nonzero_qty(entry_price: float) -> None:
    positions = _set(_positions(), "entry_price", 1, entry_price)
    match = _at("positions", "entry_price", 1) + ".*not a price > 0"
    with pytest.raises(vm.DataError, match=match):
        _book(positions=positions)


def test_entry_price_not_positive_is_accepted_for_zero_qty() -> None:
    positions = {
        "account_id": np.array([20, 20]),
        "instrument": np.array(["BTC-USDT-PERP", "ETH-USDT-PERP"]),
        "qty": np.array([0.0, 0.0]),
        "entry_price": np.array([0.0, -5.0]),
    }
    assert _book(positions=positions).n_positions == 2


@pytest.mark.parametrize("margin", [-1.0, -1e-9])
def test_negative_isolated_margin(margin: float) -> None:
    positions = _set(_positions(), "isolated_margin", 2, margin)
    with pytest.raises(vm.DataError, match=_at("positions", "isolated_margin", 2) + ".*negative"):
        _book(positions=positions)


@pytest.mark.parametrize("leverage", [0.5, 0.0, -3.0])
def test_leverage_below_one(leverage: float) -> None:
    positions = {**_positions(), "leverage": np.array([10.0, leverage, 1.0])}
    with pytest.raises(vm.DataError, match=_at("positions", "leverage", 1) + ".*below 1"):
        _book(positions=positions)


def test_position_number_rules_report_the_first_rule_broken_then_its_first_row() -> None:
    # The numeric columns are checked together in one pass, but the error is the one the
    # rules give checked one after another: qty, entry_price (finite, then > 0 where
    # qty != 0), isolated_margin, leverage, funding_index.
    positions = {
        **_positions(),
        "isolated_margin": np.array([np.nan, -1.0, np.nan]),
        "leverage": np.array([0.5, 10.0, 1.0]),
        "entry_price": np.array([60_000.0, 3_000.0, 0.0]),
    }
    with pytest.raises(vm.DataError, match=_at("positions", "entry_price", 2) + "0.0 is not"):
        _book(positions=positions)
    positions["entry_price"] = _positions()["entry_price"]
    with pytest.raises(vm.DataError, match=_at("positions", "isolated_margin", 1) + "-1.0 is"):
        _book(positions=positions)
    positions["isolated_margin"] = np.array([np.nan, 1.0, np.inf])
    with pytest.raises(vm.DataError, match=_at("positions", "isolated_margin", 2) + "inf is not"):
        _book(positions=positions)
    positions["isolated_margin"] = _positions()["isolated_margin"]
    positions["funding_index"] = np.array([0.0, np.nan, 0.0])
    with pytest.raises(vm.DataError, match=_at("positions", "leverage", 0) + "0.5 is below 1"):
        _book(positions=positions)
    positions["leverage"] = np.array([2.0, 10.0, 1.0])
    with pytest.raises(vm.DataError, match=_at("positions", "funding_index", 1)):
        _book(positions=positions)


def test_boolean_columns_read_from_sliced_and_chunked_arrow() -> None:
    # Arrow packs booleans eight to a byte; a slice starts inside a byte and a chunked
    # column has one bitmap per chunk.
    flags = [True, False, False, True, True, False, True, False, True, True, False]
    accounts = {
        "account_id": np.arange(len(flags), dtype=np.int64),
        "investor_class": np.array(["individual_pi"] * len(flags)),
    }
    sliced = pa.array([False] * 5 + flags).slice(5)
    chunked = pa.chunked_array([pa.array(flags[:3]), pa.array(flags[3:]).slice(0)])
    for column in (sliced, chunked):
        table = pa.table({**accounts, "affiliate_market_maker": column, "margin_client": column})
        book = vm.Book(table)
        np.testing.assert_array_equal(book.affiliate_market_maker, flags)
        np.testing.assert_array_equal(book.margin_client, flags)
        assert book.margin_client.dtype == np.bool_
    assert not vm.Book(pa.table(accounts)).credit_approved.any()


def test_failed_book_gives_no_object_and_leaves_inputs_alone() -> None:
    accounts = _set(_accounts(), "credit_limit", 1, -5.0)
    before = {k: v.copy() for k, v in accounts.items()}
    book = None
    with pytest.raises(vm.DataError):
        book = vm.Book(accounts, _holdings(), _positions())
    assert book is None
    for name, values in before.items():
        np.testing.assert_array_equal(accounts[name], values)


# -- §3 against the configuration (checked when the engine binds the book) -----------------------


@pytest.mark.parametrize("asset", ["DOGE", "btc", "USDC", "BTC-USDT-PERP"])
def test_unknown_asset(asset: str) -> None:
    book = _book(holdings=_set(_holdings(), "asset", 3, asset))
    match = _at("holdings", "asset", 3) + re.escape(f"unknown asset {asset!r}")
    with pytest.raises(vm.DataError, match=match):
        ENGINE.revalue(book, PRICES)


@pytest.mark.parametrize("instrument", ["XRP-USDT-PERP", "BTC", "btc-usdt-perp"])
def test_unknown_instrument(instrument: str) -> None:
    book = _book(positions=_set(_positions(), "instrument", 2, instrument))
    match = _at("positions", "instrument", 2) + re.escape(f"unknown instrument {instrument!r}")
    with pytest.raises(vm.DataError, match=match):
        ENGINE.revalue(book, PRICES)


@pytest.mark.parametrize("asset", ["BTC", "ETH", "USDT"])
def test_negative_amount_of_non_borrowable_asset(asset: str) -> None:
    # account 10 is a credit-approved margin client: the asset, not the account, is at fault
    holdings = {
        "account_id": np.array([10, 10, 20]),
        "asset": np.array(["HKD", asset, "USDT"]),
        "amount": np.array([-1_000.0, -0.5, 10.0]),
    }
    book = _book(holdings=holdings)
    match = _at("holdings", "amount", 1) + f".*{asset} is not borrowable"
    with pytest.raises(vm.DataError, match=match):
        ENGINE.revalue(book, PRICES)


def test_loan_of_account_that_is_not_a_margin_client() -> None:
    book = _book(holdings=_set(_set(_holdings(), "asset", 3, "HKD"), "amount", 3, -5_000.0))
    match = "^holdings row 3: account 30 holds a loan of 5000.0 HKD.*margin_client"
    with pytest.raises(vm.EligibilityError, match=match):
        ENGINE.revalue(book, PRICES)


def test_loan_of_margin_client_without_credit_approval() -> None:
    book = _book(holdings=_set(_set(_holdings(), "asset", 2, "USD"), "amount", 2, -50.0))
    match = "^holdings row 2: account 20 holds a loan of 50.0 USD.*credit_approved"
    with pytest.raises(vm.EligibilityError, match=match):
        ENGINE.revalue(book, PRICES)


def test_eligibility_failure_is_not_cached_as_success() -> None:
    book = _book(holdings=_set(_set(_holdings(), "asset", 3, "HKD"), "amount", 3, -5_000.0))
    for _ in range(2):
        with pytest.raises(vm.EligibilityError, match=r"^holdings row 3: account 30"):
            ENGINE.revalue(book, PRICES)


def test_duplicate_account_asset_holding() -> None:
    holdings = _set(_set(_holdings(), "account_id", 3, 10), "asset", 3, "BTC")
    book = _book(holdings=holdings)
    match = "^holdings row 3: account 10 already has a BTC holding"
    with pytest.raises(vm.DataError, match=match):
        ENGINE.revalue(book, PRICES)


def test_the_first_repeat_in_table_order_is_named() -> None:
    # Account 20 repeats BTC (rows 0 and 1) and USDT (rows 2 and 3). Its rows are checked
    # in asset order, USDT before BTC, but row 1 is the first repeat in the table.
    holdings = {
        "account_id": np.array([20, 20, 20, 20], dtype=np.int64),
        "asset": np.array(["BTC", "BTC", "USDT", "USDT"]),
        "amount": np.array([1.0, 2.0, 5.0, 6.0]),
    }
    assert CFG.asset_ids["USDT"] < CFG.asset_ids["BTC"]
    match = "^holdings row 1: account 20 already has a BTC holding"
    with pytest.raises(vm.DataError, match=match):
        ENGINE.revalue(_book(holdings=holdings), PRICES)


def test_zero_qty_is_allowed_and_ignored() -> None:
    base = _positions()
    positions = {
        "account_id": np.concatenate([base["account_id"], [20, 20]]),
        "instrument": np.concatenate([base["instrument"], ["ETH-USDT-PERP", "BTC-USD-PERP"]]),
        "qty": np.concatenate([base["qty"], [0.0, 0.0]]),
        "entry_price": np.concatenate([base["entry_price"], [0.0, 50_000.0]]),
        "isolated_margin": np.concatenate([base["isolated_margin"], [np.nan, np.nan]]),
    }
    result, reference = _revalue(positions=positions), _revalue()
    for column in result.accounts.columns:
        np.testing.assert_array_equal(result.accounts[column], reference.accounts[column])
    assert list(result.positions["notional"][3:]) == [0.0, 0.0]
    assert np.isnan(result.positions["liquidation_price"][3:]).all()
    for column in result.positions.columns:
        np.testing.assert_array_equal(result.positions[column][:3], reference.positions[column])


def test_zero_qty_inverse_row_with_zero_entry_price_is_ignored() -> None:
    positions = {
        "account_id": np.array([20, 20]),
        "instrument": np.array(["BTC-USDT-PERP", "BTC-USD-PERP"]),
        "qty": np.array([10.0, 0.0]),
        "entry_price": np.array([60_000.0, 0.0]),
    }
    result = _revalue(positions=positions)
    assert result.positions["upnl"][1] == 0.0
    assert np.isfinite(result.accounts["equity"]).all()


# -- prices -------------------------------------------------------------------------------------


BAD_PRICE_VALUES = [np.nan, np.inf, -np.inf, 0.0, -1.0]
BAD_PRICE_IDS = ["nan", "inf", "-inf", "zero", "negative"]


@pytest.mark.parametrize("symbol", ["BTC", "HKD", "BTC-USDT-PERP", "BTC-USD-PERP"])
@pytest.mark.parametrize("value", BAD_PRICE_VALUES, ids=BAD_PRICE_IDS)
def test_bad_price_in_mapping(symbol: str, value: float) -> None:
    book = _book()
    match = "^" + re.escape(f"prices[{symbol!r}]: ") + ".*not a finite price > 0"
    with pytest.raises(vm.DataError, match=match):
        ENGINE.revalue(book, {**PRICES, symbol: value})


def test_bad_price_of_an_unused_symbol_is_still_rejected() -> None:
    # a feed with a broken quote is bad input even if this book does not need that symbol
    with pytest.raises(vm.DataError, match=re.escape("prices['ETH']: ")):
        ENGINE.revalue(_book(), {**PRICES, "ETH": np.nan})


@pytest.mark.parametrize(
    "value", ["60000", None, True, [60_000.0]], ids=["str", "none", "bool", "list"]
)
def test_non_numeric_price_in_mapping(value: Any) -> None:
    with pytest.raises(vm.DataError, match=re.escape("prices['BTC']: ") + ".*not a number"):
        ENGINE.revalue(_book(), {**PRICES, "BTC": value})


def test_non_string_symbol_in_mapping() -> None:
    with pytest.raises(vm.DataError, match=re.escape("prices[1]: symbol must be a string")):
        ENGINE.revalue(_book(), {**PRICES, 1: 2.0})


def test_numpy_integer_price_in_mapping_is_accepted() -> None:
    _assert_same(ENGINE.revalue(_book(), {**PRICES, "BTC": np.int64(60_000)}), _revalue())


def _price_table(flavour: str, prices: list[Any], symbols: list[Any] | None = None) -> Any:
    columns = {"symbol": list(PRICES) if symbols is None else symbols, "price": prices}
    if flavour == "pyarrow":
        symbols = pa.array(columns["symbol"], pa.string())
        return pa.table({"symbol": symbols, "price": pa.array(prices, pa.float64())})
    if flavour == "polars":
        return pl.DataFrame(columns, schema={"symbol": pl.String, "price": pl.Float64})
    return pd.DataFrame(columns)


PRICE_TABLE_FLAVOURS = ["pyarrow", "polars", "pandas"]


@pytest.mark.parametrize("flavour", PRICE_TABLE_FLAVOURS)
def test_price_table_flavours_match_the_mapping(flavour: str) -> None:
    table = _price_table(flavour, list(PRICES.values()))
    _assert_same(ENGINE.revalue(_book(), table), _revalue())


@pytest.mark.parametrize("flavour", PRICE_TABLE_FLAVOURS)
@pytest.mark.parametrize("value", BAD_PRICE_VALUES, ids=BAD_PRICE_IDS)
def test_bad_price_in_table(flavour: str, value: float) -> None:
    prices = list(PRICES.values())
    prices[BTC_ROW] = value
    table = _price_table(flavour, prices)
    # pandas hands NaN over as null ("missing value"); the row is the same either way
    with pytest.raises(vm.DataError, match=_at("prices", "price", BTC_ROW)):
        ENGINE.revalue(_book(), table)


@pytest.mark.parametrize("column", ["symbol", "price"])
def test_price_table_missing_column(column: str) -> None:
    table = pa.table({"symbol": list(PRICES), "price": list(PRICES.values())}).drop_columns(column)
    with pytest.raises(vm.DataError, match=f"^prices: missing column '{column}'"):
        ENGINE.revalue(_book(), table)


def test_price_table_wrong_types() -> None:
    strings = pa.table({"symbol": list(PRICES), "price": [str(p) for p in PRICES.values()]})
    with pytest.raises(vm.DataError, match=_key("prices.price") + "must be a numeric column"):
        ENGINE.revalue(_book(), strings)
    numbers = pa.table({"symbol": list(range(len(PRICES))), "price": list(PRICES.values())})
    with pytest.raises(vm.DataError, match=_key("prices.symbol") + "must be a string column"):
        ENGINE.revalue(_book(), numbers)


@pytest.mark.parametrize("column", ["symbol", "price"])
def test_price_table_null(column: str) -> None:
    table = _with_null({"symbol": list(PRICES), "price": list(PRICES.values())}, column, 5)
    with pytest.raises(vm.DataError, match=_at("prices", column, 5) + "missing value"):
        ENGINE.revalue(_book(), table)


def test_price_table_duplicate_symbol() -> None:
    table = pa.table({"symbol": [*PRICES, "BTC"], "price": [*PRICES.values(), 1.0]})
    row = len(PRICES)
    with pytest.raises(vm.DataError, match=rf"^prices\.\w+ row {row}: BTC is priced twice"):
        ENGINE.revalue(_book(), table)


def test_unsupported_prices_object() -> None:
    with pytest.raises(vm.DataError, match=r"^prices: expected a pyarrow/polars/pandas table"):
        ENGINE.revalue(_book(), [60_000.0, 1.0])


def test_unknown_price_symbols_are_ignored() -> None:
    _assert_same(
        ENGINE.revalue(_book(), {**PRICES, "SOL": 150.0, "SOL-USDT-PERP": 150.0}), _revalue()
    )


def test_price_table_as_dict_of_arrays() -> None:
    table = {"symbol": np.array(list(PRICES)), "price": np.array(list(PRICES.values()))}
    _assert_same(ENGINE.revalue(_book(), table), _revalue())


def test_prices_as_series_is_read_or_rejected_cleanly() -> None:
    with contextlib.suppress(vm.DataError):
        ENGINE.revalue(_book(), pd.Series(PRICES))


MISSING_PRICES = [
    # (dropped symbol, message, first row that needs it)
    ("HKD", "missing price for asset 'HKD'", ("holdings", "asset", 1)),
    ("BTC", "missing price for asset 'BTC'", ("holdings", "asset", 0)),
    ("ETH-USDT-PERP", "missing mark price for instrument 'ETH-USDT-PERP'", ("positions", "instrument", 1)),
    ("BTC-USD-PERP", "missing mark price for instrument 'BTC-USD-PERP'", ("positions", "instrument", 2)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("symbol", "message", "row"), MISSING_PRICES, ids=[m[0] for m in MISSING_PRICES]
)
def test_missing_price(symbol: str, message: str, row: tuple[str, str, int]) -> None:
    prices = {k: v for k, v in PRICES.items() if k != symbol}
    with pytest.raises(vm.DataError, match="^" + re.escape(f"prices: {message}")):
        ENGINE.revalue(_book(), prices)


SETTLE_ONLY_BOOKS = [
    # (instrument, its settle asset): the account holds only other assets
    ("BTC-USD-PERP", "BTC"),
    ("ETH-USD-PERP", "ETH"),
    ("BTC-USDT-PERP", "USDT"),
]


def _settle_only_book(instrument: str, settle: str) -> vm.Book:
    other = "HKD" if settle != "HKD" else "USD"
    return vm.Book(
        {"account_id": [1], "investor_class": ["institutional_pi"]},
        {"account_id": [1], "asset": [other], "amount": [1_000_000.0]},
        {"account_id": [1], "instrument": [instrument], "qty": [5.0], "entry_price": [50_000.0]},
    )


@pytest.mark.parametrize(("instrument", "settle"), SETTLE_ONLY_BOOKS)
def test_missing_price_of_settle_asset_of_traded_perpetual(instrument: str, settle: str) -> None:
    book = _settle_only_book(instrument, settle)
    prices = {k: v for k, v in PRICES.items() if k != settle}
    with pytest.raises(
        vm.DataError, match=re.escape(f"prices: missing price for asset {settle!r}")
    ):
        ENGINE.revalue(book, prices)


@pytest.mark.parametrize(
    ("symbol", "message", "row"), MISSING_PRICES, ids=[m[0] for m in MISSING_PRICES]
)
def test_missing_price_names_the_row_that_needs_it(
    symbol: str, message: str, row: tuple[str, str, int]
) -> None:
    prices = {k: v for k, v in PRICES.items() if k != symbol}
    table, column, index = row
    with pytest.raises(vm.DataError, match=re.escape(f"{table}.{column} row {index}")):
        ENGINE.revalue(_book(), prices)


# -- nothing is partially applied ---------------------------------------------------------------


BAD_PRICE_SETS = {
    "nan": {**PRICES, "BTC": np.nan},
    "zero mark": {**PRICES, "BTC-USDT-PERP": 0.0},
    "missing asset": {k: v for k, v in PRICES.items() if k != "HKD"},
    "missing settle": {k: v for k, v in PRICES.items() if k != "USDT"},
    "bad table": pa.table({"symbol": ["BTC"], "price": [-1.0]}),
}


@pytest.mark.parametrize("bad", list(BAD_PRICE_SETS), ids=list(BAD_PRICE_SETS))
def test_failed_revalue_leaves_the_book_usable(bad: str) -> None:
    columns = _tables()
    snapshot = [{k: v.copy() for k, v in table.items()} for table in columns]
    book = vm.Book(*columns)
    with pytest.raises(vm.DataError):
        ENGINE.revalue(book, BAD_PRICE_SETS[bad])
    _assert_same(ENGINE.revalue(book, PRICES), ENGINE.revalue(_book(), PRICES))
    for table, before in zip(columns, snapshot, strict=True):
        for name, values in before.items():
            np.testing.assert_array_equal(table[name], values)


def test_failed_bind_to_another_config_does_not_poison_the_book() -> None:
    without_hkd = vm.RiskConfig(
        assets=tuple(a for a in CFG.assets if a.symbol != "HKD"),
        perpetuals=CFG.perpetuals,
        policy=CFG.policy,
    )
    book = _book()
    first = ENGINE.revalue(book, PRICES)
    with pytest.raises(vm.DataError, match=_at("holdings", "asset", 1) + "unknown asset 'HKD'"):
        vm.RiskEngine(without_hkd).revalue(book, PRICES)
    _assert_same(ENGINE.revalue(book, PRICES), first)
    _assert_same(first, _revalue())


def test_failed_config_leaves_the_default_profile_alone() -> None:
    with pytest.raises(vm.ConfigError):
        dataclasses.replace(CFG, policy=vm.Policy(va_haircut_floor=0.9))
    assert vm.RiskConfig.hk_default() == CFG
    _assert_same(_revalue(), vm.RiskEngine(vm.RiskConfig.hk_default()).revalue(_book(), PRICES))


# -- input flavours -------------------------------------------------------------------------------


STRING_COLUMNS = ("investor_class", "asset", "instrument", "symbol")
FLAVOURS = [
    "numpy",
    "pyarrow",
    "pyarrow_dictionary",
    "pyarrow_chunked",
    "polars",
    "polars_categorical",
    "pandas",
    "pandas_category",
]


def _as_flavour(columns: Columns, flavour: str) -> Any:
    strings = [name for name in STRING_COLUMNS if name in columns]
    if flavour == "numpy":
        return columns
    if flavour.startswith("pyarrow"):
        table = pa.table(columns)
        if flavour == "pyarrow_dictionary":
            for name in strings:
                index = table.column_names.index(name)
                table = table.set_column(index, name, pc.dictionary_encode(table.column(name)))
        elif flavour == "pyarrow_chunked":
            table = pa.concat_tables([table.slice(0, 1), table.slice(1, 1), table.slice(2)])
        return table
    if flavour.startswith("polars"):
        frame = pl.DataFrame(columns)
        if flavour == "polars_categorical":
            frame = frame.with_columns(pl.col(name).cast(pl.Categorical) for name in strings)
        return frame
    frame = pd.DataFrame(columns)
    if flavour == "pandas_category":
        for name in strings:
            frame[name] = frame[name].astype("category")
    return frame


def _flavoured(flavour: str, tables: tuple[Columns, Columns, Columns]) -> list[Any]:
    return [_as_flavour(table, flavour) for table in tables]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_input_flavour_gives_identical_results(flavour: str) -> None:
    book = vm.Book(*_flavoured(flavour, _tables()))
    _assert_same(ENGINE.revalue(book, PRICES), _revalue())


FLAVOUR_ERRORS = [
    # (id, changed table, column, row, value, exception, message after the location)
    ("unknown asset", "holdings", "asset", 3, "DOGE", vm.DataError, "unknown asset 'DOGE'"),
    ("nan amount", "holdings", "amount", 2, np.nan, vm.DataError, ""),
    ("negative BTC", "holdings", "amount", 0, -1.0, vm.DataError, ".*BTC is not borrowable"),
    ("unknown class", "accounts", "investor_class", 2, "pro", vm.DataError, "'pro' is not one"),
    ("bad credit limit", "accounts", "credit_limit", 1, -1.0, vm.DataError, ".*not a limit"),
    # NaN is "not a limit ≥ 0", or a missing value where pandas turns it into a null.
    ("nan credit limit", "accounts", "credit_limit", 2, np.nan, vm.DataError, ""),
    ("unknown instrument", "positions", "instrument", 2, "X", vm.DataError, "unknown instrument"),
    ("inf qty", "positions", "qty", 1, np.inf, vm.DataError, "inf is not a finite number"),
    ("zero entry price", "positions", "entry_price", 0, 0.0, vm.DataError, ".*not a price > 0"),
    ("negative isolated", "positions", "isolated_margin", 1, -2.0, vm.DataError, ".*negative"),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("table", "column", "row", "value", "error", "message"),
    [case[1:] for case in FLAVOUR_ERRORS],
    ids=[case[0] for case in FLAVOUR_ERRORS],
)
def test_each_input_flavour_names_the_same_row(
    flavour: str, table: str, column: str, row: int, value: Any, error: type, message: str
) -> None:
    bad = _set(TABLES[table](), column, row, value)
    tables = _flavoured(flavour, _tables(**{table: bad}))
    with pytest.raises(error, match=_at(table, column, row) + message):
        _revalue(*tables)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_input_flavour_names_the_same_row_for_keys(flavour: str) -> None:
    duplicate = _flavoured(flavour, _tables(accounts=_set(_accounts(), "account_id", 2, 10)))
    with pytest.raises(
        vm.DataError, match=re.escape("accounts.account_id: row 2: duplicate key 10")
    ):
        vm.Book(*duplicate)
    unknown = _flavoured(flavour, _tables(positions=_set(_positions(), "account_id", 1, 77)))
    with pytest.raises(
        vm.DataError, match=re.escape("positions.account_id: row 1: unknown key 77")
    ):
        vm.Book(*unknown)
    loan = _flavoured(
        flavour, _tables(holdings=_set(_set(_holdings(), "asset", 3, "HKD"), "amount", 3, -1.0))
    )
    book = vm.Book(*loan)
    with pytest.raises(vm.EligibilityError, match=r"^holdings row 3: account 30"):
        ENGINE.revalue(book, PRICES)


@pytest.mark.parametrize("flavour", ["pandas", "polars"])
def test_nulls_from_dataframes_name_the_row(flavour: str) -> None:
    if flavour == "pandas":
        holdings = pd.DataFrame(
            {
                "account_id": pd.array([10, None, 20, 30], dtype="Int64"),
                "asset": ["BTC", "HKD", "USDT", "USDT"],
                "amount": [1.0, -100_000.0, 5_000.0, 1_000.0],
            }
        )
        assets = pd.DataFrame({**_holdings(), "asset": ["BTC", "HKD", None, "USDT"]})
    else:
        holdings = pl.DataFrame({**_holdings(), "account_id": [10, None, 20, 30]})
        assets = pl.DataFrame({**_holdings(), "asset": ["BTC", "HKD", None, "USDT"]})
    with pytest.raises(vm.DataError, match=_at("holdings", "account_id", 1) + "missing value"):
        _book(holdings=holdings)
    with pytest.raises(vm.DataError, match=_at("holdings", "asset", 2) + "missing value"):
        _book(holdings=assets)


def test_rows_count_across_chunks() -> None:
    table = pa.table(_holdings())
    tail = pa.table(
        {
            "account_id": pa.array([30], pa.int64()),
            "asset": pa.array(["DOGE"]),
            "amount": pa.array([1.0]),
        }
    )
    chunked = pa.concat_tables([table.slice(0, 0), table.slice(0, 2), table.slice(2), tail])
    book = _book(holdings=chunked)
    with pytest.raises(vm.DataError, match=_at("holdings", "asset", 4) + "unknown asset 'DOGE'"):
        ENGINE.revalue(book, PRICES)
    nan_tail = tail.set_column(2, "amount", pa.array([np.nan]))
    nan_chunked = pa.concat_tables([table.slice(0, 3), nan_tail])
    with pytest.raises(vm.DataError, match=_at("holdings", "amount", 3) + "nan is not a finite"):
        _book(holdings=nan_chunked)


def test_chunks_with_different_dictionaries() -> None:
    chunks = pa.chunked_array(
        [
            pa.array(["BTC", "HKD"]).dictionary_encode(),
            pa.array(["USDT", "DOGE"]).dictionary_encode(),
        ]
    )
    holdings = pa.table({**_holdings(), "asset": chunks})
    with pytest.raises(vm.DataError, match=_at("holdings", "asset", 3) + "unknown asset 'DOGE'"):
        ENGINE.revalue(_book(holdings=holdings), PRICES)


def _unused_category_tables(flavour: str) -> Any:
    """The valid holdings whose dictionary also lists an asset no row uses."""
    holdings = _holdings()
    if flavour == "pandas_category":
        frame = pd.DataFrame(holdings)
        frame["asset"] = pd.Categorical(frame["asset"], categories=["BTC", "HKD", "USDT", "DOGE"])
        return frame
    if flavour == "pyarrow_sliced_dictionary":
        extra = pa.table({"account_id": [30], "asset": ["DOGE"], "amount": [1.0]})
        table = pa.concat_tables([pa.table(holdings), extra]).combine_chunks()
        encoded = table.set_column(1, "asset", pc.dictionary_encode(table.column("asset")))
        return encoded.slice(0, 4)
    frame = pl.DataFrame(holdings)
    return frame.with_columns(pl.col("asset").cast(pl.Enum(["BTC", "HKD", "USDT", "DOGE"])))


@pytest.mark.parametrize("flavour", ["pandas_category", "pyarrow_sliced_dictionary", "polars_enum"])
def test_unused_dictionary_entries_are_ignored(flavour: str) -> None:
    book = _book(holdings=_unused_category_tables(flavour))
    _assert_same(ENGINE.revalue(book, PRICES), _revalue())


def test_unused_investor_class_category_is_ignored() -> None:
    frame = pd.DataFrame(_accounts())
    classes = [*vm.INVESTOR_CLASSES, "pro"]
    frame["investor_class"] = pd.Categorical(frame["investor_class"], categories=classes)
    _assert_same(_revalue(frame), _revalue())


# -- §4 configuration -----------------------------------------------------------------------------


HK = resources.files("vamargin.profiles").joinpath("hk_default.toml").read_text("utf-8")
MINI = """
[[asset]]
symbol = "USDT"
class = "stablecoin"
minor_unit = 1e-6
eligible = true

[[asset]]
symbol = "BTC"
class = "va"
minor_unit = 1e-8
eligible = true
initial_haircut = 0.6
size_tiers = [{ floor = 0, factor = 1.0 }, { floor = 1_000_000, factor = 0.9 }]

[[perpetual]]
symbol = "P"
kind = "linear"
base = "BTC"
settle = "USDT"
contract_size = 0.001
funding = { interval_hours = 8 }
tiers = [{ floor = 0, mmr = 0.01, max_leverage = 20 }]
"""
DOCUMENTS = {"hk": HK, "mini": MINI}
PERP = "perpetual[BTC-USDT-PERP]"
T0 = "{ floor = 0,           mmr = 0.005, max_leverage = 50 }"
T1 = "{ floor = 250_000,     mmr = 0.010, max_leverage = 25 }"
T2 = "{ floor = 1_000_000,   mmr = 0.025, max_leverage = 20 }"
MINI_TIERS = "tiers = [{ floor = 0, mmr = 0.01, max_leverage = 20 }]"
SOL = '[[asset]]\nsymbol = "SOL"\nclass = "va"\nminor_unit = 1e-9\neligible = true\ninitial_haircut = 0.7'
EXTRA_PERP = (
    '[[perpetual]]\nsymbol = "{}"\nkind = "linear"\nbase = "BTC"\nsettle = "USDT"\n'
    "contract_size = 1\ntiers = [{{ floor = 0, mmr = 0.01, max_leverage = 20 }}]"
)
APPEND = None


def _edit(document: str, old: str | None, new: str) -> str:
    text = DOCUMENTS[document]
    if old is None:
        return f"{text}\n{new}\n"
    assert old in text, old
    return text.replace(old, new, 1)


CONFIG_ERRORS = [
    # (id, document, old text (None = append), new text, key, reason regex)
    # margin tiers
    ("tiers not starting at 0", "hk", T0, T0.replace("floor = 0,", "floor = 1,"), f"{PERP}.tiers[0].floor", "the first tier must start at 0"),
    ("floor repeated", "hk", T1, T1.replace("250_000", "0"), f"{PERP}.tiers[1].floor", "floors must be strictly increasing"),
    ("floor decreasing", "hk", T2, T2.replace("1_000_000", "100_000"), f"{PERP}.tiers[2].floor", "floors must be strictly increasing"),
    ("floor nan", "hk", T1, T1.replace("250_000", "nan"), f"{PERP}.tiers[1].floor", "must be a finite number"),
    ("mmr decreasing", "hk", T1, T1.replace("0.010", "0.004"), f"{PERP}.tiers[1].mmr", "mmr must not decrease"),
    ("mmr = 1/max_leverage", "hk", T0, T0.replace("0.005", "0.02"), f"{PERP}.tiers[0].mmr", "0.02 must be below 1/max_leverage"),
    ("mmr > 1/max_leverage", "hk", T1, T1.replace("0.010", "0.05"), f"{PERP}.tiers[1].mmr", "0.05 must be below 1/max_leverage"),
    ("mmr negative", "hk", T0, T0.replace("0.005", "-0.005"), f"{PERP}.tiers[0].mmr", r"must be in \[0, 1\)"),
    ("max_leverage below 1", "hk", T0, T0.replace("50", "0.5"), f"{PERP}.tiers[0].max_leverage", "must be"),
    ("no tiers", "mini", MINI_TIERS, "tiers = []", "perpetual[P].tiers", "at least one tier"),
    ("tiers missing", "mini", MINI_TIERS, "", "perpetual[P].tiers", "is required"),
    ("tier floor missing", "mini", "floor = 0, mmr", "mmr", "perpetual[P].tiers[0].floor", "is required"),
    ("tier max_leverage missing", "mini", ", max_leverage = 20", "", "perpetual[P].tiers[0].max_leverage", "is required"),
    ("tier mmr string", "mini", "mmr = 0.01", 'mmr = "0.01"', "perpetual[P].tiers[0].mmr", "'0.01' is not a number"),
    # haircuts
    ("initial haircut above 1", "hk", "initial_haircut = 0.60", "initial_haircut = 1.5", "asset[BTC].initial_haircut", r"1\.5 is outside \[0, 1\]"),
    ("liquidation haircut negative", "hk", "liquidation_haircut = 0.40", "liquidation_haircut = -0.1", "asset[BTC].liquidation_haircut", "is outside"),
    ("liquidation haircut nan", "hk", "liquidation_haircut = 0.40", "liquidation_haircut = nan", "asset[BTC].liquidation_haircut", "nan is outside"),
    ("initial below maintenance", "hk", "maintenance_haircut = 0.50", "maintenance_haircut = 0.70", "asset[BTC].maintenance_haircut", "haircuts must satisfy initial"),
    ("maintenance below liquidation", "hk", "liquidation_haircut = 0.40", "liquidation_haircut = 0.55", "asset[BTC].maintenance_haircut", "haircuts must satisfy initial"),
    ("capital haircut above 1", "hk", "liquidation_haircut = 0.40", "liquidation_haircut = 0.40\ncapital_haircut = 2", "asset[BTC].capital_haircut", "is outside"),
    ("haircut not a number", "hk", "initial_haircut = 0.60", "initial_haircut = true", "asset[BTC].initial_haircut", "True is not a number"),
    # VA collateral policy
    ("eligible VA outside va_assets", "hk", APPEND, SOL, "asset[SOL].eligible", r"only \['BTC', 'ETH'\] may be eligible"),
    ("va_assets without BTC", "hk", 'va_assets = ["BTC", "ETH"]', 'va_assets = ["ETH"]', "asset[BTC].eligible", "may be eligible VA collateral"),
    ("BTC haircut below floor", "hk", "initial_haircut = 0.60", "initial_haircut = 0.50", "asset[BTC].initial_haircut", r"0\.5 is below the VA haircut floor"),
    ("floor raised above BTC", "hk", "va_haircut_floor = 0.60", "va_haircut_floor = 0.70", "asset[BTC].initial_haircut", r"policy\.va_haircut_floor = 0\.7"),
    ("va_assets lists a stablecoin", "hk", 'va_assets = ["BTC", "ETH"]', 'va_assets = ["BTC", "ETH", "USDT"]', "policy.va_assets", "'USDT' is not of class 'va'"),
    ("va_assets not a list", "hk", 'va_assets = ["BTC", "ETH"]', 'va_assets = "BTC"', "policy.va_assets", "must be a list"),
    # overrides
    ("override for affiliates", "hk", APPEND, "[[override]]\naffiliate_market_maker = true\ninitial_haircut = 0.1", "override[0].affiliate_market_maker", "affiliated market maker must get exactly"),
    ("override table for affiliates", "hk", APPEND, "[override]\naffiliate_market_maker = false", "override[0].affiliate_market_maker", "affiliated market maker"),
    ("any override", "hk", APPEND, "[[override]]\naccount_id = 5\ninitial_haircut = 0.1", "override[0]", "per-account overrides are not supported"),
    # unknown keys
    ("typo intial_haircut", "hk", "initial_haircut = 0.60", "intial_haircut = 0.60", "asset[BTC].intial_haircut", "unknown key"),
    ("unknown top-level key", "mini", "[[asset]]", "reportng_currency = 'USD'\n[[asset]]", "reportng_currency", "unknown key"),
    ("unknown perpetual key", "hk", "contract_size = 0.001", "contract_size = 0.001\nleverage = 3", f"{PERP}.leverage", "unknown key"),
    ("unknown tier key", "hk", T0, T0.replace("max_leverage", "max_lev"), f"{PERP}.tiers[0].max_lev", "unknown key"),
    ("unknown funding key", "hk", "funding = { interval_hours = 8,", "funding = { interval_hour = 8,", f"{PERP}.funding.interval_hour", "unknown key"),
    ("unknown size tier key", "hk", "{ floor = 10_000_000, factor = 0.9 }", "{ floor = 10_000_000, fator = 0.9 }", "asset[BTC].size_tiers[1].fator", "unknown key"),
    ("unknown policy key", "hk", "va_haircut_floor = 0.60", "va_haircut_flor = 0.60", "policy.va_haircut_flor", "unknown key"),
    # perpetual structure
    ("unknown contract kind", "hk", 'kind = "linear"', 'kind = "quanto"', f"{PERP}.kind", "'quanto' is not one of"),
    ("settle not an asset", "hk", 'settle = "USDT"', 'settle = "USDC"', f"{PERP}.settle", "'USDC' is not a configured asset"),
    ("base not an asset", "hk", 'base = "BTC"', 'base = "XBT"', f"{PERP}.base", "'XBT' is not a configured asset"),
    ("inverse settling in non-base", "hk", 'settle = "BTC"', 'settle = "USD"', "perpetual[BTC-USD-PERP].settle", "inverse contract settles in its base"),
    ("funding interval 48h", "hk", "interval_hours = 8,", "interval_hours = 48,", f"{PERP}.funding.interval_hours", "at least daily"),
    ("funding interval 24.5h", "hk", "interval_hours = 8,", "interval_hours = 24.5,", f"{PERP}.funding.interval_hours", "at least daily"),
    ("funding interval 0", "hk", "interval_hours = 8,", "interval_hours = 0,", f"{PERP}.funding.interval_hours", "must be a finite number > 0"),
    ("funding interest nan", "hk", "interest_rate = 0.0001", "interest_rate = nan", f"{PERP}.funding.interest_rate", "must be finite"),
    ("funding clamp negative", "hk", "clamp = 0.0005", "clamp = -1", f"{PERP}.funding.clamp", "must be a finite number"),
    ("funding cap zero", "hk", "cap = 0.03", "cap = 0", f"{PERP}.funding.cap", "must be a finite number > 0"),
    ("contract_size zero", "hk", "contract_size = 0.001", "contract_size = 0", f"{PERP}.contract_size", "must be a finite number > 0"),
    ("contract_size negative", "hk", "contract_size = 0.001", "contract_size = -1", f"{PERP}.contract_size", "must be a finite number > 0"),
    ("contract_size nan", "hk", "contract_size = 0.001", "contract_size = nan", f"{PERP}.contract_size", "must be a finite number > 0"),
    ("liquidation_fee above 1", "hk", "liquidation_fee = 0.0025", "liquidation_fee = 2", f"{PERP}.liquidation_fee", "is outside"),
    ("kind missing", "mini", 'kind = "linear"\n', "", "perpetual[P].kind", "is required"),
    # assets
    ("minor_unit zero", "hk", "minor_unit = 1e-6", "minor_unit = 0", "asset[USDT].minor_unit", "must be a finite number > 0"),
    ("minor_unit negative", "hk", "minor_unit = 1e-6", "minor_unit = -0.01", "asset[USDT].minor_unit", "must be a finite number > 0"),
    ("minor_unit string", "hk", "minor_unit = 1e-6", 'minor_unit = "0.01"', "asset[USDT].minor_unit", "is not a number"),
    ("minor_unit missing", "mini", "minor_unit = 1e-6\n", "", "asset[USDT].minor_unit", "is required"),
    ("unknown asset class", "hk", 'class = "stablecoin"', 'class = "coin"', "asset[USDT].class", "'coin' is not one of"),
    ("class missing", "mini", 'class = "stablecoin"\n', "", "asset[USDT].class", "is required"),
    ("symbol missing", "mini", 'symbol = "USDT"\n', "", "asset[0].symbol", "is required"),
    ("unknown day count", "hk", 'day_count = "ACT/360"', 'day_count = "30/360"', "asset[USD].day_count", "'30/360' is not one of"),
    ("negative annual rate", "hk", "annual_rate = 0.0825", "annual_rate = -0.01", "asset[USD].annual_rate", "must be a finite number"),
    ("size tiers not starting at 0", "hk", "{ floor = 0, factor = 1.0 },\n  { floor = 10_000_000", "{ floor = 5, factor = 1.0 },\n  { floor = 10_000_000", "asset[BTC].size_tiers[0].floor", "the first band must start at 0"),
    ("size tier factor above 1", "hk", "{ floor = 10_000_000, factor = 0.9 }", "{ floor = 10_000_000, factor = 1.5 }", "asset[BTC].size_tiers[1].factor", r"must be in \[0, 1\]"),
    ("size tier factor increasing", "hk", "{ floor = 50_000_000, factor = 0.75 }", "{ floor = 50_000_000, factor = 0.95 }", "asset[BTC].size_tiers[2].factor", "must not increase"),
    ("size tier floors not increasing", "hk", "{ floor = 50_000_000, factor = 0.75 }", "{ floor = 10_000_000, factor = 0.75 }", "asset[BTC].size_tiers[2].floor", "strictly increasing"),
    # symbols
    ("duplicate asset", "hk", APPEND, '[[asset]]\nsymbol = "BTC"\nclass = "va"\nminor_unit = 1e-8', "asset[BTC]", "symbol defined twice"),
    ("duplicate perpetual", "hk", APPEND, EXTRA_PERP.format("BTC-USDT-PERP"), PERP, "symbol already used"),
    ("perpetual named like an asset", "hk", APPEND, EXTRA_PERP.format("USDT"), "perpetual[USDT]", "symbol already used"),
    ("perpetual as a table", "mini", "[[perpetual]]", "[perpetual]", "perpetual", "must be an array of tables"),
    # policy and top level
    ("bad call_target", "hk", 'call_target = "initial"', 'call_target = "equity"', "policy.call_target", "'equity' is not one of"),
    ("va_haircut_floor negative", "mini", APPEND, "[policy]\nva_haircut_floor = -0.1", "policy.va_haircut_floor", "is outside"),
    ("call deadline zero", "hk", "call_deadline_hours = 24", "call_deadline_hours = 0", "policy.call_deadline_hours", "must be a finite number > 0"),
    ("liquidation buffer negative", "hk", "liquidation_buffer = 0.02", "liquidation_buffer = -0.1", "policy.liquidation_buffer", "must be a finite number"),
    ("loans to capital zero", "hk", "max_loans_to_capital = 5.0", "max_loans_to_capital = 0", "policy.max_loans_to_capital", "must be a finite number > 0"),
    ("reporting currency not a string", "mini", "[[asset]]", "reporting_currency = 1\n[[asset]]", "reporting_currency", "must be a string"),
]  # fmt: skip


def _load(loader: str, text: str, tmp_path: Path) -> vm.RiskConfig:
    if loader == "string":
        return vm.RiskConfig.from_toml_string(text)
    path = tmp_path / "risk.toml"
    path.write_text(text, encoding="utf-8")
    return vm.RiskConfig.from_toml(path)


@pytest.mark.parametrize("loader", ["string", "file"])
@pytest.mark.parametrize("document", ["hk", "mini"])
def test_base_documents_are_valid(loader: str, document: str, tmp_path: Path) -> None:
    config = _load(loader, DOCUMENTS[document], tmp_path)
    if document == "hk":
        assert config == CFG


@pytest.mark.parametrize("loader", ["string", "file"])
@pytest.mark.parametrize(
    ("document", "old", "new", "key", "reason"),
    [case[1:] for case in CONFIG_ERRORS],
    ids=[case[0] for case in CONFIG_ERRORS],
)
def test_config_validation(
    loader: str, document: str, old: str | None, new: str, key: str, reason: str, tmp_path: Path
) -> None:
    text = _edit(document, old, new)
    with pytest.raises(vm.ConfigError, match=_key(key, reason)):
        _load(loader, text, tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "^asset: at least one asset is required"),
        ("asset = 5", r"^asset: must be an array of tables"),
        (
            "[[asset]]\nsymbol = 5\nclass = 'cash'\nminor_unit = 0.01",
            r"^asset\[0\]\.symbol: is required",
        ),
    ],
)
def test_config_structure(text: str, match: str) -> None:
    with pytest.raises(vm.ConfigError, match=match):
        vm.RiskConfig.from_toml_string(text)


@pytest.mark.parametrize("text", [HK + "\n[[asset]\n", "x = ", "[policy\n", 'a = "unterminated'])
def test_invalid_toml_text(text: str, tmp_path: Path) -> None:
    with pytest.raises(vm.ConfigError, match=r"^not valid TOML: "):
        vm.RiskConfig.from_toml_string(text)
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(vm.ConfigError, match="^" + re.escape(f"{path}: not valid TOML: ")):
        vm.RiskConfig.from_toml(path)


def test_non_utf8_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('reporting_currency = "\xa3"\n'.encode("latin-1"))
    with pytest.raises(vm.ConfigError, match=re.escape(str(path))):
        vm.RiskConfig.from_toml(path)


CONFIG_TYPE_BUGS = [
    # (id, document, old, new, key): wrong TOML type where a table/array is expected
    ("tiers = 5", "mini", MINI_TIERS, "tiers = 5", "perpetual[P].tiers"),
    ("tiers = [5]", "mini", MINI_TIERS, "tiers = [5]", "perpetual[P].tiers[0]"),
    ("funding = 8", "mini", "funding = { interval_hours = 8 }", "funding = 8", "perpetual[P].funding"),
    ("size_tiers = [5]", "mini", "size_tiers = [{", "size_tiers = [5, {", "asset[BTC].size_tiers[0]"),
    ("policy = 5", "mini", "[[asset]]", "policy = 5\n[[asset]]", "policy"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("document", "old", "new", "key"),
    [case[1:] for case in CONFIG_TYPE_BUGS],
    ids=[case[0] for case in CONFIG_TYPE_BUGS],
)
def test_config_wrong_container_type(document: str, old: str, new: str, key: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key)):
        vm.RiskConfig.from_toml_string(_edit(document, old, new))


CONFIG_SILENT_BUGS = [
    ("eligible = 'false'", "mini", "eligible = true", 'eligible = "false"', "asset[USDT].eligible"),
    ("eligible = 0", "mini", "eligible = true", "eligible = 0", "asset[USDT].eligible"),
    ("borrowable = 'no'", "mini", 'class = "stablecoin"', 'class = "stablecoin"\nborrowable = "no"', "asset[USDT].borrowable"),
    ("professional_only = 'no'", "mini", 'kind = "linear"', 'kind = "linear"\nprofessional_only = "no"', "perpetual[P].professional_only"),
    ("group = 5", "mini", "initial_haircut = 0.6", "initial_haircut = 0.6\ngroup = 5", "asset[BTC].group"),
    ("max_leverage = inf", "mini", "max_leverage = 20", "max_leverage = inf", "perpetual[P].tiers[0].max_leverage"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("document", "old", "new", "key"),
    [case[1:] for case in CONFIG_SILENT_BUGS],
    ids=[case[0] for case in CONFIG_SILENT_BUGS],
)
def test_config_wrong_scalar_type(document: str, old: str, new: str, key: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key)):
        vm.RiskConfig.from_toml_string(_edit(document, old, new))


# -- §4 configuration built in Python -------------------------------------------------------------


USDT = CFG.asset("USDT")
BTC = CFG.asset("BTC")
LINEAR = CFG.perpetual("BTC-USDT-PERP")
Tier = vm.MarginTier


def _perp(**changes: Any) -> vm.PerpetualSpec:
    return dataclasses.replace(LINEAR, **changes)


def _btc(**changes: Any) -> vm.AssetSpec:
    return dataclasses.replace(BTC, **changes)


PYTHON_CONFIG_ERRORS = [
    # (id, RiskConfig keyword arguments, key, reason)
    ("tiers not starting at 0", {"perpetuals": [_perp(tiers=(Tier(1, 0.005, 50),))]}, f"{PERP}.tiers[0].floor", "the first tier"),
    ("floors not increasing", {"perpetuals": [_perp(tiers=(Tier(0, 0.005, 50), Tier(0, 0.01, 25)))]}, f"{PERP}.tiers[1].floor", "strictly increasing"),
    ("mmr decreasing", {"perpetuals": [_perp(tiers=(Tier(0, 0.01, 50), Tier(10, 0.005, 25)))]}, f"{PERP}.tiers[1].mmr", "must not decrease"),
    ("mmr >= 1/max_leverage", {"perpetuals": [_perp(tiers=(Tier(0, 0.1, 10),))]}, f"{PERP}.tiers[0].mmr", "1/max_leverage"),
    ("max_leverage nan", {"perpetuals": [_perp(tiers=(Tier(0, 0.01, float("nan")),))]}, f"{PERP}.tiers[0].max_leverage", "must be"),
    ("no tiers", {"perpetuals": [_perp(tiers=())]}, f"{PERP}.tiers", "at least one tier"),
    ("settle not an asset", {"perpetuals": [_perp(settle="USDC")]}, f"{PERP}.settle", "'USDC' is not a configured asset"),
    ("base not an asset", {"perpetuals": [_perp(base="SOL")]}, f"{PERP}.base", "'SOL' is not a configured asset"),
    ("unknown kind", {"perpetuals": [_perp(kind="quanto")]}, f"{PERP}.kind", "'quanto' is not one of"),
    ("inverse settling in quote", {"perpetuals": [_perp(kind="inverse")]}, f"{PERP}.settle", "inverse contract"),
    ("contract_size zero", {"perpetuals": [_perp(contract_size=0.0)]}, f"{PERP}.contract_size", "must be a finite number > 0"),
    ("contract_size string", {"perpetuals": [_perp(contract_size="1")]}, f"{PERP}.contract_size", "'1' is not a number"),
    ("funding every 25h", {"perpetuals": [_perp(funding=vm.FundingSpec(interval_hours=25))]}, f"{PERP}.funding.interval_hours", "at least daily"),
    ("duplicate perpetual", {"perpetuals": [LINEAR, LINEAR]}, PERP, "symbol already used"),
    ("duplicate asset", {"assets": [USDT, BTC, USDT]}, "asset[USDT]", "symbol defined twice"),
    ("no assets", {"assets": [], "perpetuals": []}, "asset", "at least one asset"),
    ("eligible SOL", {"assets": [USDT, BTC, vm.AssetSpec("SOL", "va", 1e-9, eligible=True, initial_haircut=0.7)]}, "asset[SOL].eligible", "may be eligible VA collateral"),
    ("BTC at 0.5", {"assets": [USDT, _btc(initial_haircut=0.5, maintenance_haircut=0.5)]}, "asset[BTC].initial_haircut", "below the VA haircut floor"),
    ("haircut above 1", {"assets": [USDT, _btc(initial_haircut=1.5)]}, "asset[BTC].initial_haircut", "is outside"),
    ("haircut nan", {"assets": [USDT, _btc(liquidation_haircut=float("nan"))]}, "asset[BTC].liquidation_haircut", "nan is outside"),
    ("haircut string", {"assets": [USDT, _btc(initial_haircut="0.7")]}, "asset[BTC].initial_haircut", "'0.7' is not a number"),
    ("initial below maintenance", {"assets": [USDT, _btc(maintenance_haircut=0.7)]}, "asset[BTC].maintenance_haircut", "haircuts must satisfy"),
    ("maintenance below liquidation", {"assets": [USDT, _btc(liquidation_haircut=0.55)]}, "asset[BTC].maintenance_haircut", "haircuts must satisfy"),
    ("minor_unit zero", {"assets": [dataclasses.replace(USDT, minor_unit=0.0), BTC]}, "asset[USDT].minor_unit", "must be a finite number > 0"),
    ("unknown class", {"assets": [dataclasses.replace(USDT, asset_class="coin"), BTC]}, "asset[USDT].class", "'coin' is not one of"),
    ("size tiers not at 0", {"assets": [USDT, _btc(size_tiers=(vm.SizeTier(5, 1.0),))]}, "asset[BTC].size_tiers[0].floor", "the first band"),
    ("bad call_target", {"policy": vm.Policy(call_target="equity")}, "policy.call_target", "'equity' is not one of"),
    ("va_assets lists a stablecoin", {"policy": vm.Policy(va_assets=("BTC", "USDT"))}, "policy.va_assets", "'USDT' is not of class 'va'"),
    ("infinite call deadline", {"policy": vm.Policy(call_deadline_hours=float("inf"))}, "policy.call_deadline_hours", "must be a finite number"),
]  # fmt: skip


def _python_config(**kwargs: Any) -> vm.RiskConfig:
    arguments: dict[str, Any] = {"assets": [USDT, BTC], "perpetuals": [LINEAR], **kwargs}
    return vm.RiskConfig(**arguments)


def test_python_base_config_is_valid() -> None:
    assert _python_config().perpetual("BTC-USDT-PERP") == LINEAR


@pytest.mark.parametrize(
    ("kwargs", "key", "reason"),
    [case[1:] for case in PYTHON_CONFIG_ERRORS],
    ids=[case[0] for case in PYTHON_CONFIG_ERRORS],
)
def test_python_config_validation(kwargs: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key, reason)):
        _python_config(**kwargs)


PYTHON_CONFIG_BUGS = [
    ("tier floor string", {"perpetuals": [_perp(tiers=(Tier("0", 0.005, 50),))]}, f"{PERP}.tiers[0].floor"),
    ("eligible string", {"assets": [dataclasses.replace(USDT, eligible="no"), BTC]}, "asset[USDT].eligible"),
    ("funding rate string", {"perpetuals": [_perp(funding=vm.FundingSpec(interest_rate="x"))]}, f"{PERP}.funding.interest_rate"),
    ("va_assets as a string", {"policy": vm.Policy(va_assets="BTC ETH")}, "policy.va_assets"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [case[1:] for case in PYTHON_CONFIG_BUGS],
    ids=[case[0] for case in PYTHON_CONFIG_BUGS],
)
def test_python_config_wrong_types(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key)):
        _python_config(**kwargs)


def test_python_config_accepts_tier_mappings_and_tuples() -> None:
    """Tiers and size tiers may be given as mappings or tuples; they are normalised to the
    dataclasses, so the config equals one built from MarginTier/SizeTier objects."""
    as_objects = _python_config(
        perpetuals=[_perp(tiers=(Tier(0, 0.005, 50),))],
        assets=[USDT, _btc(size_tiers=(vm.SizeTier(0, 1.0),))],
    )
    as_mappings = _python_config(
        perpetuals=[_perp(tiers=({"floor": 0, "mmr": 0.005, "max_leverage": 50},))],
        assets=[USDT, _btc(size_tiers=({"floor": 0, "factor": 1.0},))],
    )
    as_tuples = _python_config(
        perpetuals=[_perp(tiers=((0, 0.005, 50),))], assets=[USDT, _btc(size_tiers=((0, 1.0),))]
    )
    assert as_objects == as_mappings == as_tuples


# -- scalar calculators ---------------------------------------------------------------------------


TIERS = [
    {"floor": 0, "mmr": 0.005, "max_leverage": 50},
    {"floor": 250_000, "mmr": 0.01, "max_leverage": 25},
]

BAD_TIERS = [
    ("not starting at 0", [{"floor": 5, "mmr": 0.01}], "tiers[0].floor", "the first tier must start at 0"),
    ("empty", [], "tiers", "at least one tier"),
    ("floors repeated", [(0, 0.01), (0, 0.02)], "tiers[1].floor", "strictly increasing"),
    ("floors decreasing", [(0, 0.01), (10, 0.02), (5, 0.03)], "tiers[2].floor", "strictly increasing"),
    ("floor negative", [(-1, 0.01)], "tiers[0].floor", "must be a finite number"),
    ("mmr decreasing", [(0, 0.02), (10, 0.01)], "tiers[1].mmr", "must not decrease"),
    ("mmr = 1/max_leverage", [(0, 0.1, 10)], "tiers[0].mmr", "must be below 1/max_leverage"),
    ("mmr = 1", [(0, 1.0)], "tiers[0].mmr", r"must be in \[0, 1\)"),
    ("max_leverage below 1", [vm.MarginTier(0, 0.01, 0.5)], "tiers[0].max_leverage", "must be"),
    ("mmr missing", [{"floor": 0}], "tiers[0]", "expected floor, mmr"),
    ("mmr not a number", [{"floor": 0, "mmr": "x"}], "tiers[0]", "expected floor, mmr"),
    ("tuple too short", [(0,)], "tiers[0]", "expected floor, mmr"),
    ("tuple too long", [(0, 0.01, 20, 1)], "tiers[0]", "expected floor, mmr"),
    ("not a tier", [(0, 0.01), 5], "tiers[1]", "expected floor, mmr"),
]  # fmt: skip


@pytest.mark.parametrize(
    "function",
    [
        lambda tiers: calc.maintenance_margin(1.0, tiers),
        lambda tiers: calc.maintenance_amounts(tiers),
        lambda tiers: calc.tier_of(1.0, tiers),
        lambda tiers: calc.liquidation_price(1.0, 100.0, 10.0, tiers=tiers),
    ],
    ids=["maintenance_margin", "maintenance_amounts", "tier_of", "liquidation_price"],
)
@pytest.mark.parametrize(
    ("tiers", "key", "reason"),
    [case[1:] for case in BAD_TIERS],
    ids=[case[0] for case in BAD_TIERS],
)
def test_calc_rejects_bad_tiers(function: Any, tiers: list[Any], key: str, reason: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key, reason)):
        function(tiers)


def test_calc_accepts_good_tiers() -> None:
    assert calc.maintenance_margin(1.0, [{"floor": 0, "mmr": 0.01}]) == pytest.approx(0.01)
    assert calc.maintenance_amounts(TIERS) == pytest.approx([0.0, 1_250.0])


@pytest.mark.parametrize("kwargs", [{"tiers": TIERS, "mmr": 0.01}, {}], ids=["both", "neither"])
def test_liquidation_price_needs_exactly_one_of_tiers_and_mmr(kwargs: dict[str, Any]) -> None:
    with pytest.raises(
        vm.ConfigError, match=r"^liquidation_price: give exactly one of tiers= or mmr="
    ):
        calc.liquidation_price(1.0, 100.0, 10.0, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "key", "reason"),
    [
        ({"mmr": 1.0}, "mmr", r"must be in \[0, 1\)"),
        ({"mmr": -0.1}, "mmr", r"must be in \[0, 1\)"),
        ({"mmr": 0.01, "maintenance_amount": float("nan")}, "maintenance_amount", "must be finite"),
        ({"mmr": 0.01, "kind": "quanto"}, "kind", '"quanto" is not a contract kind'),
    ],
    ids=["mmr 1", "mmr negative", "maintenance_amount nan", "bad kind"],
)
def test_liquidation_price_bad_parameters(kwargs: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key, reason)):
        calc.liquidation_price(1.0, 100.0, 10.0, **kwargs)


@pytest.mark.parametrize(
    "function",
    [
        lambda: calc.unrealized_pnl(1.0, 100.0, 110.0, kind="quanto"),
        lambda: calc.notional(1.0, 100.0, kind="Linear"),
        lambda: calc.bankruptcy_price(1.0, 100.0, 10.0, kind=""),
    ],
    ids=["unrealized_pnl", "notional", "bankruptcy_price"],
)
def test_calc_rejects_unknown_contract_kind(function: Any) -> None:
    with pytest.raises(vm.ConfigError, match=_key("kind") + ".*not a contract kind"):
        function()


@pytest.mark.parametrize(
    ("bands", "key", "reason"),
    [
        ([(5, 1.0)], "size_tiers[0].floor", "the first band must start at 0"),
        ([(0, 1.0), (0, 0.9)], "size_tiers[1].floor", "strictly increasing"),
        ([(0, 1.5)], "size_tiers[0].factor", r"must be in \[0, 1\]"),
        ([(0, 0.5), (10, 1.0)], "size_tiers[1].factor", "must not increase"),
        ([{"floor": 0}], "size_tiers[0]", "expected floor, factor"),
        ([(0, 1.0, 2.0)], "size_tiers[0]", "expected floor, factor"),
    ],
    ids=[
        "not at 0",
        "floors repeated",
        "factor above 1",
        "factor increasing",
        "missing factor",
        "triple",
    ],
)
def test_tiered_value_rejects_bad_bands(bands: list[Any], key: str, reason: str) -> None:
    with pytest.raises(vm.ConfigError, match=_key(key, reason)):
        calc.tiered_value(1.0, bands)


@pytest.mark.parametrize(
    "function",
    [
        lambda: calc.liquidation_price(1.0, 100.0, 10.0, mmr=0.01, contract_size=0.0),
        lambda: calc.bankruptcy_price(1.0, 100.0, 10.0, contract_size=-1.0),
        lambda: calc.unrealized_pnl(1.0, 100.0, 110.0, contract_size=0.0),
        lambda: calc.notional(1.0, 100.0, contract_size=-1.0),
    ],
    ids=["liquidation_price", "bankruptcy_price", "unrealized_pnl", "notional"],
)
def test_calc_rejects_non_positive_contract_size(function: Any) -> None:
    with pytest.raises(vm.ConfigError, match=_key("contract_size")):
        function()


@pytest.mark.parametrize(
    "error", [vm.MarginError, vm.ConfigError, vm.DataError, vm.EligibilityError]
)
def test_errors_pickle_as_their_own_class(error: type[vm.MarginError]) -> None:
    """Errors cross process boundaries (Dask workers, multiprocessing) as themselves."""
    import pickle

    copy = pickle.loads(pickle.dumps(error("positions.qty row 3: nan")))
    assert type(copy) is error
    assert str(copy) == "positions.qty row 3: nan"
    assert error.__module__ == "vamargin._core"
