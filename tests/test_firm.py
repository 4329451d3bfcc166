"""Firm-wide controls of the margin-financing book (SPEC §1, §7 "firm controls"):
loans to capital against the 5× SMF benchmark, client and collateral concentration, and
the capital view (VA collateral counted at a 100% haircut in the broker's own capital).

Hand-derived numbers are worked out in each docstring; the property test checks that the
firm totals are the sums of the account figures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vamargin as vm
from vamargin.config import AssetSpec, Policy, RiskConfig
from vamargin.firm import largest_positive

HK = RiskConfig.hk_default()
PRICES = {"USD": 1.0, "HKD": 0.128, "USDT": 1.0, "BTC": 100_000.0, "ETH": 4_000.0}
HKD_50K_USD = 50_000 / 0.128  # 390,625 HKD = 50,000 USD at 0.128


def _book(holdings: dict[int, dict[str, float]]) -> vm.Book:
    """Credit-approved margin clients, one per key, holding ``{asset: amount}``."""
    ids = sorted(holdings)
    rows = [(a, asset, amount) for a in ids for asset, amount in holdings[a].items()]
    return vm.Book(
        accounts={
            "account_id": ids,
            "investor_class": ["individual_pi"] * len(ids),
            "margin_client": [True] * len(ids),
            "credit_approved": [True] * len(ids),
        },
        holdings={
            "account_id": [r[0] for r in rows],
            "asset": [r[1] for r in rows],
            "amount": [r[2] for r in rows],
        },
    )


def _with_policy(policy: Policy) -> RiskConfig:
    return RiskConfig(assets=HK.assets, perpetuals=HK.perpetuals, policy=policy)


def _rows(table: Any) -> list[dict[str, Any]]:
    return [table.row(i) for i in range(len(table))]


def test_capital_view_beside_the_client_view() -> None:
    """SPEC §1/§7: for its own capital the broker counts VA collateral at a 100% haircut;
    cash and stablecoins at their initial haircut (0 here). Hand-derived, hk_default at
    BTC 100,000, ETH 4,000, HKD 0.128:

    - account 1: USD loan 40,000 against 1 BTC (100,000) → capital-recognised 0 →
      uncovered 40,000 (client view: LTV 40%, well covered);
    - account 2: USD loan 40,000 against 390,625 HKD (50,000) → recognised 50,000 →
      uncovered 0;
    - account 3: HKD loan 390,625 (50,000) against 30,000 USDT and 10 ETH (40,000) →
      recognised 30,000 → uncovered 20,000.

    capital_uncovered = 40,000 + 0 + 20,000 = 60,000; total loans 130,000; with capital
    100,000 loans/capital = 1.3. Collateral: BTC 100,000, ETH 40,000, HKD 50,000, USDT
    30,000 (total 220,000); group VA = 140,000, va_share = 140/220 = 0.636364. Each
    client holds > 10% of the loans (40/130, 40/130, 50/130): three max_client_share
    breaches, largest first."""
    book = _book(
        {
            1: {"USD": -40_000.0, "BTC": 1.0},
            2: {"USD": -40_000.0, "HKD": HKD_50K_USD},
            3: {"HKD": -HKD_50K_USD, "USDT": 30_000.0, "ETH": 10.0},
        }
    )
    report = vm.RiskEngine(HK).firm_report(book, PRICES, capital=100_000.0)
    assert report.capital == 100_000.0
    assert report.total_loans == pytest.approx(130_000.0, rel=1e-15)
    assert report.loans_to_capital == pytest.approx(1.3, rel=1e-15)
    assert report.capital_uncovered == pytest.approx(60_000.0, rel=1e-15)
    assert report.va_share == pytest.approx(140 / 220, rel=1e-15)

    collateral = {r["asset"]: (r["value"], r["share"]) for r in _rows(report.collateral_by_asset)}
    assert collateral == {
        "HKD": pytest.approx((50_000.0, 50 / 220), rel=1e-15),
        "USDT": pytest.approx((30_000.0, 30 / 220), rel=1e-15),
        "BTC": pytest.approx((100_000.0, 100 / 220), rel=1e-15),
        "ETH": pytest.approx((40_000.0, 40 / 220), rel=1e-15),
    }
    groups = {r["group"]: (r["value"], r["share"]) for r in _rows(report.by_group)}
    assert groups == {
        "VA": pytest.approx((140_000.0, 140 / 220), rel=1e-15),
        "HKD": pytest.approx((50_000.0, 50 / 220), rel=1e-15),
        "stablecoin": pytest.approx((30_000.0, 30 / 220), rel=1e-15),
    }

    top = report.top_clients
    assert top["account_id"].tolist() == [3, 1, 2]
    assert top["debit"] == pytest.approx([50_000.0, 40_000.0, 40_000.0], rel=1e-15)
    assert top["collateral_value"] == pytest.approx([70_000.0, 100_000.0, 50_000.0], rel=1e-15)
    assert top["ltv"] == pytest.approx([5 / 7, 0.4, 0.8], rel=1e-15)
    assert top["share_of_loans"] == pytest.approx([5 / 13, 4 / 13, 4 / 13], rel=1e-15)

    assert report.breached
    breaches = report.breaches
    assert breaches["rule"].tolist() == ["max_client_share"] * 3
    assert breaches["subject"].tolist() == ["3", "1", "2"]
    assert breaches["value"] == pytest.approx([5 / 13, 4 / 13, 4 / 13], rel=1e-15)
    assert breaches["limit"].tolist() == [0.1, 0.1, 0.1]


def test_loans_to_capital_above_the_5x_benchmark_is_a_breach() -> None:
    """SPEC §1: the SMF benchmark caps total margin loans at 5× capital. Four clients owe
    130,000 USD each (against 4 BTC = 400,000, LTV 32.5%): total 520,000. With capital
    100,000 the ratio is 5.2 > 5 → one breach row (max_loans_to_capital, firm, 5.2, 5.0).
    With capital 104,000 it is exactly 5.0: at the limit, not above it — no breach.
    (Client shares are 25% each; the client limit is raised to 30% to isolate the rule.)"""
    engine = vm.RiskEngine(_with_policy(Policy(max_client_share=0.30)))
    book = _book({a: {"USD": -130_000.0, "BTC": 4.0} for a in (1, 2, 3, 4)})
    report = engine.firm_report(book, PRICES, capital=100_000.0)
    assert report.total_loans == 520_000.0
    assert report.loans_to_capital == pytest.approx(5.2, rel=1e-15)
    assert report.breached
    assert _rows(report.breaches) == [
        {
            "rule": "max_loans_to_capital",
            "subject": "firm",
            "value": pytest.approx(5.2),
            "limit": 5.0,
        }
    ]
    at_limit = engine.firm_report(book, PRICES, capital=104_000.0)
    assert at_limit.loans_to_capital == 5.0
    assert not at_limit.breached
    assert len(at_limit.breaches) == 0
    # All VA collateral: none of it counts for capital, every loan is uncovered.
    assert report.capital_uncovered == 520_000.0
    assert report.va_share == 1.0


def test_single_client_concentration_breach() -> None:
    """Hand-derived, hk_default (max_client_share 10%): client 7 owes 30,000 and ten
    others 7,000 each; total 100,000. Client 7's share is 30% > 10% → one breach
    (max_client_share, "7", 0.30, 0.10); the others hold 7% each. ``top=10`` lists the ten
    largest (client 7, then the tied 7,000s in account order); ``top=3`` three."""
    loans = {7: 30_000.0} | {a: 7_000.0 for a in (1, 2, 3, 4, 5, 6, 8, 9, 10, 11)}
    book = _book({a: {"USD": -loan, "BTC": 1.0} for a, loan in loans.items()})
    engine = vm.RiskEngine(HK)
    report = engine.firm_report(book, PRICES, capital=1_000_000.0)
    assert report.total_loans == 100_000.0
    assert report.loans_to_capital == pytest.approx(0.1, rel=1e-15)
    assert _rows(report.breaches) == [
        {"rule": "max_client_share", "subject": "7", "value": pytest.approx(0.3), "limit": 0.1}
    ]
    top = report.top_clients
    assert top["account_id"].tolist() == [7, 1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert top["share_of_loans"] == pytest.approx([0.3] + [0.07] * 9, rel=1e-12)
    three = engine.firm_report(book, PRICES, capital=1_000_000.0, top=3).top_clients
    assert three["account_id"].tolist() == [7, 1, 2]


def test_collateral_concentration_breach_per_asset() -> None:
    """Hand-derived with ``max_collateral_share = 0.5``: collateral 1 BTC = 100,000,
    25 ETH × 4,000 = 100,000 and 50,000 USDT — total 250,000, no asset above 40%: no
    breach. Adding a second BTC makes BTC 200,000 of
    350,000 = 57.1% > 50% → breach (max_collateral_share, BTC, 4/7, 0.5); the VA group is
    300,000 / 350,000 = 6/7 of all collateral (reported, not limited)."""
    config = _with_policy(Policy(max_client_share=1.0, max_collateral_share=0.5))
    engine = vm.RiskEngine(config)
    base = {1: {"USD": -10_000.0, "BTC": 1.0}, 2: {"USD": -10_000.0, "ETH": 25.0, "USDT": 50_000.0}}
    report = engine.firm_report(_book(base), PRICES, capital=1_000_000.0)
    assert not report.breached
    more = {**base, 3: {"USD": -10_000.0, "BTC": 1.0}}
    report = engine.firm_report(_book(more), PRICES, capital=1_000_000.0)
    assert _rows(report.breaches) == [
        {
            "rule": "max_collateral_share",
            "subject": "BTC",
            "value": pytest.approx(4 / 7),
            "limit": 0.5,
        }
    ]
    groups = {r["group"]: r["share"] for r in _rows(report.by_group)}
    assert groups == {"VA": pytest.approx(6 / 7), "stablecoin": pytest.approx(1 / 7)}
    assert report.va_share == pytest.approx(6 / 7, rel=1e-15)


def test_ineligible_collateral_counts_for_nothing_in_the_capital_view() -> None:
    """SPEC §6: an ineligible asset takes h = 1 (equity only, no collateral credit); SPEC
    §7: the capital haircut defaults to 1.0 for VA "and the initial haircut otherwise" —
    which for an ineligible asset is 1. Hand-derived: a 1,000 USD loan against 5,000 of an
    ineligible security: client view collateral 0, LTV inf; capital view uncovered 1,000."""
    config = RiskConfig(
        assets=(
            AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True, annual_rate=0.08),
            AssetSpec("XYZ", "security", 0.01),
        )
    )
    book = _book({1: {"USD": -1_000.0, "XYZ": 50.0}})
    prices = {"USD": 1.0, "XYZ": 100.0}
    engine = vm.RiskEngine(config)
    client = engine.revalue(book, prices).accounts.row(0)
    assert client["collateral_value"] == 0.0
    assert client["initial_requirement"] == 5_000.0  # h = 1: no credit
    report = engine.firm_report(book, prices, capital=1_000_000.0)
    assert report.capital_uncovered == 1_000.0


@pytest.mark.parametrize("capital", [0.0, -1.0, float("nan"), float("inf")])
def test_capital_must_be_a_positive_amount(capital: float) -> None:
    book = _book({1: {"USD": -1_000.0, "BTC": 1.0}})
    with pytest.raises(vm.DataError, match="capital"):
        vm.RiskEngine(HK).firm_report(book, PRICES, capital=capital)


def test_book_without_loans() -> None:
    """No loans: total 0, ratio 0, no top clients, nothing uncovered, no breach."""
    book = _book({1: {"BTC": 1.0}, 2: {"USDT": 5_000.0}})
    report = vm.RiskEngine(HK).firm_report(book, PRICES, capital=1.0)
    assert (report.total_loans, report.loans_to_capital, report.capital_uncovered) == (0, 0, 0)
    assert len(report.top_clients) == 0
    assert not report.breached
    assert report.va_share == pytest.approx(100_000 / 105_000, rel=1e-15)


# -- property: firm totals are sums of account figures ------------------------------------

_LOANABLE = ("USD", "HKD")
_COLLATERAL = ("USD", "HKD", "USDT", "BTC", "ETH")


@st.composite
def _books(draw: st.DrawFn) -> tuple[vm.Book, dict[int, dict[str, float]], dict[str, float]]:
    n = draw(st.integers(1, 25))
    holdings: dict[int, dict[str, float]] = {}
    approved: list[bool] = []
    for a in range(n):
        is_client = draw(st.booleans())
        approved.append(is_client)
        assets = draw(st.lists(st.sampled_from(_COLLATERAL), max_size=4, unique=True))
        mine: dict[str, float] = {}
        for asset in assets:
            amount = draw(st.floats(0.0, 1e6 if asset in ("USD", "HKD", "USDT") else 500.0))
            if asset in _LOANABLE and is_client and draw(st.booleans()):
                amount = -amount
            mine[asset] = amount
        holdings[a + 100] = mine
    prices = {
        "USD": 1.0,
        "HKD": draw(st.floats(0.1, 0.2)),
        "USDT": draw(st.floats(0.95, 1.05)),
        "BTC": draw(st.floats(1_000.0, 500_000.0)),
        "ETH": draw(st.floats(100.0, 20_000.0)),
    }
    ids = sorted(holdings)
    rows = [(a, s, v) for a in ids for s, v in holdings[a].items()]
    book = vm.Book(
        accounts={
            "account_id": ids,
            "investor_class": ["corporate_pi"] * n,
            "margin_client": approved,
            "credit_approved": approved,
        },
        holdings={
            "account_id": np.asarray([r[0] for r in rows], dtype=np.int64),
            "asset": np.asarray([r[1] for r in rows], dtype=np.str_),
            "amount": np.asarray([r[2] for r in rows], dtype=np.float64),
        },
    )
    return book, holdings, prices


@settings(max_examples=120, deadline=None)
@given(_books(), st.floats(1e3, 1e9))
def test_firm_totals_are_sums_of_account_figures(
    case: tuple[vm.Book, dict[int, dict[str, float]], dict[str, float]], capital: float
) -> None:
    """total_loans = Σ revalue debit; collateral_by_asset = Σ positive holding values per
    asset (assets with none are absent); by_group and va_share agree with it;
    capital_uncovered = Σ_accounts max(0, debit − Σ v·(1 − capital_haircut)); top clients
    are the largest debits with share = debit / total; loans_to_capital = total / capital."""
    book, holdings, prices = case
    engine = vm.RiskEngine(HK)
    report = engine.firm_report(book, prices, capital=capital)
    accounts = engine.revalue(book, prices).accounts
    debit = dict(zip(accounts["account_id"].tolist(), accounts["debit"].tolist(), strict=True))
    total = sum(debit.values())
    assert report.total_loans == pytest.approx(total, rel=1e-12, abs=1e-9)
    assert report.loans_to_capital == pytest.approx(total / capital, rel=1e-12, abs=1e-18)

    by_asset: dict[str, float] = defaultdict(float)
    uncovered = 0.0
    for account, mine in holdings.items():
        recognised = 0.0
        for asset, amount in mine.items():
            value = amount * prices[asset]
            if value > 0:
                by_asset[asset] += value
                recognised += value * (1.0 - HK.asset(asset).effective_capital_haircut)
        uncovered += max(0.0, debit[account] - recognised)
    got = {r["asset"]: r["value"] for r in _rows(report.collateral_by_asset)}
    assert set(got) == set(by_asset)
    for asset, value in by_asset.items():
        assert got[asset] == pytest.approx(value, rel=1e-12)
    whole = sum(by_asset.values())
    if whole > 0:
        assert float(np.sum(report.collateral_by_asset["share"])) == pytest.approx(1.0, rel=1e-12)
        va = by_asset.get("BTC", 0.0) + by_asset.get("ETH", 0.0)
        assert report.va_share == pytest.approx(va / whole, rel=1e-12, abs=1e-15)
        groups = {r["group"]: r["value"] for r in _rows(report.by_group)}
        assert sum(groups.values()) == pytest.approx(whole, rel=1e-12)
        if va > 0:
            assert groups["VA"] == pytest.approx(va, rel=1e-12)
    else:
        assert report.va_share == 0.0
    assert report.capital_uncovered == pytest.approx(uncovered, rel=1e-12, abs=1e-6)

    top = report.top_clients
    expected_order = sorted((a for a in debit if debit[a] > 0), key=lambda a: -debit[a])[:10]
    assert sorted(top["debit"].tolist(), reverse=True) == top["debit"].tolist()
    assert top["debit"].tolist() == [debit[a] for a in expected_order]
    # The client view's figures, bitwise: the report sums each account's holdings in the
    # account pass's order.
    client_view = {
        int(a): (c, ltv)
        for a, c, ltv in zip(
            accounts["account_id"].tolist(),
            accounts["collateral_value"].tolist(),
            accounts["ltv"].tolist(),
            strict=True,
        )
    }
    for row in _rows(top):
        assert row["share_of_loans"] == pytest.approx(row["debit"] / total, rel=1e-12)
        assert (row["collateral_value"], row["ltv"]) == client_view[int(row["account_id"])]
    limit_rows = [r for r in _rows(report.breaches) if r["rule"] == "max_loans_to_capital"]
    assert len(limit_rows) == (1 if total / capital > HK.policy.max_loans_to_capital else 0)


def test_related_clients_are_concentrated_by_client_group() -> None:
    """Two Wong family accounts borrow 100 000 and 200 000 HKD (at 0.1285: 12 850 and
    25 700 USD) and Chan 50 000 HKD (6 425): the family holds 38 550 / 44 975 = 6/7 of
    all loans, Chan 1/7; both exceed the 10% single-client limit as groups."""
    book = vm.Book(
        accounts={
            "account_id": [1, 2, 3],
            "investor_class": ["retail"] * 3,
            "margin_client": [True] * 3,
            "credit_approved": [True] * 3,
            "client_group": ["Wong family", "Wong family", "Chan"],
        },
        holdings={
            "account_id": [1, 1, 2, 2, 3, 3],
            "asset": ["BTC", "HKD"] * 3,
            "amount": [1.0, -100_000.0, 1.0, -200_000.0, 1.0, -50_000.0],
        },
    )
    report = vm.RiskEngine().firm_report(book, {"BTC": 100_000.0, "HKD": 0.1285}, capital=1e5)
    groups = report.top_groups
    assert groups["group"].tolist() == ["Wong family", "Chan"]
    assert groups["accounts"].tolist() == [2, 1]
    assert groups["debit"].tolist() == pytest.approx([38_550.0, 6_425.0], rel=1e-12)
    assert groups["share_of_loans"].tolist() == pytest.approx([6 / 7, 1 / 7], rel=1e-12)
    assert report.breaches["subject"].tolist() == ["Wong family", "Chan"]
    # Without the column every account is its own group, named by its id.
    plain = vm.Book(
        accounts={k: v for k, v in book_accounts().items() if k != "client_group"},
        holdings={"account_id": [1, 1], "asset": ["BTC", "HKD"], "amount": [1.0, -100_000.0]},
    )
    alone = vm.RiskEngine().firm_report(plain, {"BTC": 100_000.0, "HKD": 0.1285}, capital=1e5)
    assert alone.top_groups["group"].tolist() == ["1"]


def book_accounts() -> dict[str, list[object]]:
    return {
        "account_id": [1, 2, 3],
        "investor_class": ["retail"] * 3,
        "margin_client": [True] * 3,
        "credit_approved": [True] * 3,
        "client_group": ["Wong family", "Wong family", "Chan"],
    }


@given(
    st.lists(
        st.sampled_from([0.0, -1.0, 2.5, 7.0, float("nan")]) | st.floats(-10.0, 10.0),
        max_size=60,
    ),
    st.integers(0, 12),
)
def test_largest_positive_is_the_stable_sort_without_its_cost(
    values: list[float], top: int
) -> None:
    # Ties, zeros, negatives and NaN drawn often: the cut of the partition lands on ties.
    array = np.array(values, dtype=np.float64)
    expected = np.argsort(-array, kind="stable")[:top]
    expected = expected[array[expected] > 0]
    np.testing.assert_array_equal(largest_positive(array, top), expected)


def test_largest_positive_keeps_the_first_rows_of_a_tie_at_the_cut() -> None:
    values = np.array([1.0, 5.0, 3.0, 5.0, 3.0, 3.0, 0.0, 3.0])
    np.testing.assert_array_equal(largest_positive(values, 4), [1, 3, 2, 4])
    np.testing.assert_array_equal(largest_positive(values, 10), [1, 3, 2, 4, 5, 7, 0])
