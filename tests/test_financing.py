"""Margin financing (SPEC §2, §6, §7): margin calls and their cures, the call lifecycle
and deadlines, interest accrual, and the client disclosure sheet.

Every number asserted below is either taken from a public worked example (cited in the
test's docstring) or derived by hand, with the arithmetic written out so a reviewer can
redo it on paper. Property tests check that every cure the engine offers really cures,
and that interest is never under-charged.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zoneinfo
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vamargin as vm
from vamargin.config import AssetSpec, Policy, RiskConfig, SizeTier
from vamargin.disclosure import disclosure, disclosure_json, disclosure_markdown
from vamargin.financing import call_lifecycle

UTC = dt.UTC
HKT = dt.timezone(dt.timedelta(hours=8))  # Asia/Hong_Kong, no daylight saving


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


def _rows_of(table: Any) -> list[dict[str, Any]]:
    return [table.row(i) for i in range(len(table))]


# -- crypto lender LTV levels mapped onto haircuts -----------------------------------------

# Binance Loans, FAQ "What is Loan-To-Value (LTV)" (binance.com/en/support/faq/360040490772,
# 2020-03-13): BTC initial LTV 65%, margin call 80%, liquidation call 90%; ETH 55/75/85.
# An LTV level ℓ is a haircut h = 1 − ℓ: with a cash loan L against collateral V,
# equity V − L < h·V  ⟺  L / V > 1 − h.
BINANCE_LOANS = RiskConfig(
    assets=(
        AssetSpec("USDT", "stablecoin", 1e-6, eligible=True, borrowable=True),
        AssetSpec(
            "BTC",
            "va",
            1e-8,
            eligible=True,
            initial_haircut=0.35,
            maintenance_haircut=0.20,
            liquidation_haircut=0.10,
        ),
        AssetSpec(
            "ETH",
            "va",
            1e-8,
            eligible=True,
            initial_haircut=0.45,
            maintenance_haircut=0.25,
            liquidation_haircut=0.15,
        ),
    ),
    # Binance's levels are far looser than the SFC's 60% floor: lower the floor to map them.
    policy=Policy(va_haircut_floor=0.35),
    reporting_currency="USDT",
)
BINANCE_COLLATERAL_BTC = 0.01938571


def _binance_prices(btc: float) -> dict[str, float]:
    return {"USDT": 1.0, "BTC": btc, "ETH": 200.0}


def test_binance_loans_ltv_example_maps_onto_haircuts() -> None:
    """Binance FAQ 360040490772 (2020-03-13): 1 BTC = 7,400 USD, so 0.01938571 BTC =
    143.45 USDT; a 100 USDT loan has LTV = 100 / 143.45 = 69.71%. With the published BTC
    levels (initial 65%, call 80%, liquidation 90%) that loan is above the initial LTV but
    below the call LTV: the engine's status is ``restricted`` (no further advances).

    Hand-derived: V = 0.01938571 × 7,400 = 143.454254; equity = 43.454254;
    initial req = 0.35 V = 50.2089889 > equity; maintenance req = 0.20 V = 28.6908508 <
    equity. The call LTV of 80% is reached at BTC = 100 / (0.8 × 0.01938571) = 6,448.05 and
    the liquidation LTV of 90% at 100 / (0.9 × 0.01938571) = 5,731.60."""
    engine = vm.RiskEngine(BINANCE_LOANS)
    book = _book({1: {"USDT": -100.0, "BTC": BINANCE_COLLATERAL_BTC}})
    accounts = engine.revalue(book, _binance_prices(7_400.0)).accounts
    row = accounts.row(0)
    assert row["collateral_value"] == pytest.approx(143.454254, abs=1e-9)
    assert round(row["ltv"] * 100, 2) == 69.71
    assert row["equity"] == pytest.approx(43.454254, abs=1e-9)
    assert row["initial_requirement"] == pytest.approx(50.2089889, abs=1e-9)
    assert row["maintenance_requirement"] == pytest.approx(28.6908508, abs=1e-9)
    assert row["status"] == "restricted"
    assert row["call_amount"] == 0.0
    # A restricted account is not under a call.
    calls = engine.margin_calls(
        book, _binance_prices(7_400.0), dt.datetime(2020, 3, 12, 9, tzinfo=UTC)
    )
    assert len(calls) == 0

    call_price = 100 / (0.8 * BINANCE_COLLATERAL_BTC)
    liquidation_price = 100 / (0.9 * BINANCE_COLLATERAL_BTC)
    assert round(call_price, 2) == 6_448.05
    assert round(liquidation_price, 2) == 5_731.60
    expected = [
        (6_500.0, "restricted"),  # LTV 79.36%
        (6_400.0, "margin_call"),  # LTV 80.60%
        (5_800.0, "margin_call"),  # LTV 88.94%
        (5_700.0, "liquidation"),  # LTV 90.50%
    ]
    for price, status in expected:
        got = engine.revalue(book, _binance_prices(price)).accounts.row(0)
        assert got["status"] == status, price
        assert got["ltv"] == pytest.approx(100 / (BINANCE_COLLATERAL_BTC * price), rel=1e-12)


def test_binance_loans_top_up_restores_the_initial_ltv() -> None:
    """Binance FAQ 360040490772 "How to Prevent Liquidation": add collateral to lower the
    LTV. At BTC = 6,400 the 100 USDT loan is at LTV 80.60% (margin call). Restoring the
    initial LTV of 65% needs collateral worth 100 / 0.65 = 153.846154, i.e. a top-up of
    153.846154 − 124.068544 = 29.777610 USDT of BTC = 0.00465275 BTC — exactly the engine's
    cure C / (1 − h_init) with C = 0.35 × 124.068544 − 24.068544 = 19.355446.
    Repaying the loan instead: C = 19.355446 USDT. Selling BTC (no fee) to repay: C / h =
    55.301276 USDT of BTC, after which LTV = 44.698724 / 68.767268 = 65% again."""
    engine = vm.RiskEngine(BINANCE_LOANS)
    book = _book({1: {"USDT": -100.0, "BTC": BINANCE_COLLATERAL_BTC}})
    prices = _binance_prices(6_400.0)
    calls = engine.margin_calls(book, prices, dt.datetime(2020, 3, 12, 9, tzinfo=UTC))
    row = calls.row(0)
    value = BINANCE_COLLATERAL_BTC * 6_400.0
    assert value == pytest.approx(124.068544, abs=1e-9)
    call = 0.35 * value - (value - 100.0)
    assert row["status"] == "margin_call"
    assert row["call_amount"] == pytest.approx(call, abs=1e-12)
    assert round(row["call_amount"], 6) == 19.355446
    top_up = 100 / 0.65 - value
    assert round(top_up, 6) == 29.777610
    assert row["deposit_BTC"] == pytest.approx(top_up / 6_400.0, rel=1e-12)
    assert round(row["deposit_BTC"], 8) == 0.00465275
    assert row["deposit_USDT"] == pytest.approx(call, rel=1e-12)
    assert row["deposit_ETH"] == pytest.approx(call / 0.55 / 200.0, rel=1e-12)
    assert row["sell_BTC"] * 6_400.0 == pytest.approx(call / 0.35, rel=1e-12)
    assert math.isnan(row["sell_USDT"])
    assert math.isnan(row["sell_ETH"])

    # After the top-up the LTV is 65% and the account is no longer called.
    topped = _book({1: {"USDT": -100.0, "BTC": BINANCE_COLLATERAL_BTC + row["deposit_BTC"]}})
    after = engine.revalue(topped, prices).accounts.row(0)
    assert after["ltv"] == pytest.approx(0.65, rel=1e-12)
    assert after["equity"] == pytest.approx(after["initial_requirement"], rel=1e-12)


# -- Hong Kong securities-margin call with its cures ---------------------------------------


def _hk_broker_config(*, fee: float = 0.0, liquidation: bool = True) -> RiskConfig:
    """HKD book with stock A (IM 30%, MM 25%) and stock B (IM 50%, MM 45%); liquidation
    haircuts A 20% / B 40% (Longbridge does not publish its force-selling margin) unless
    ``liquidation`` is False (then they default to the maintenance ones)."""
    return RiskConfig(
        assets=(
            AssetSpec("HKD", "cash", 0.01, eligible=True, borrowable=True, annual_rate=0.068),
            AssetSpec(
                "A",
                "security",
                0.01,
                eligible=True,
                initial_haircut=0.30,
                maintenance_haircut=0.25,
                liquidation_haircut=0.20 if liquidation else None,
                sale_fee=fee,
            ),
            AssetSpec(
                "B",
                "security",
                0.01,
                eligible=True,
                initial_haircut=0.50,
                maintenance_haircut=0.45,
                liquidation_haircut=0.40 if liquidation else None,
                sale_fee=fee,
            ),
        ),
        reporting_currency="HKD",
    )


# 500 shares of A at HK$10 = 5,000; 1,000 shares of B fallen from HK$25 to HK$19.50 = 19,500.
HK_PRICES = {"HKD": 1.0, "A": 10.0, "B": 19.5}
HK_HOLDINGS = {"HKD": -15_000.0, "A": 500.0, "B": 1_000.0}
FRIDAY_EVENING_HKT = dt.datetime(2026, 3, 6, 18, 0, tzinfo=HKT)


def test_longbridge_margin_call_example() -> None:
    """Longbridge HK, "Margin call" (longbridge.com/hk/support/topics/marginfinancing/
    2u2kyg0), the same case as SPEC §6: cash deficit 15,000; A 5,000 (IM 30%, MM 25%);
    B 19,500 (IM 50%, MM 45%) → IM 11,250 (5,000 × 30% + 19,500 × 50%), MM 10,025
    (5,000 × 25% + 19,500 × 45%), equity 9,500, margin call 1,750. "If the client chooses
    to sell securities, the required amount to be sold is ... (IM − equity) / IM ratio":
    B: 1,750 / 0.5 = 3,500 (A: 1,750 / 0.3 = 5,833.33 > 5,000 held: not possible).
    Webull HK FAQ 1306 "How to nullify the margin call": deposit ≥ the call (1,750 HKD),
    or transfer in stock worth ≥ call / the stock's margin (loan) ratio: A 1,750 / 0.7 =
    2,500 (250 shares), B 1,750 / 0.5 = 3,500 (179.49 shares)."""
    engine = vm.RiskEngine(_hk_broker_config())
    book = _book({7: HK_HOLDINGS})
    accounts = engine.revalue(book, HK_PRICES).accounts.row(0)
    assert accounts["debit"] == 15_000.0
    assert accounts["initial_requirement"] == 11_250.0
    assert accounts["maintenance_requirement"] == 10_025.0
    assert accounts["liquidation_requirement"] == 8_800.0  # 5,000 × 20% + 19,500 × 40%
    assert accounts["equity"] == 9_500.0
    assert accounts["status"] == "margin_call"
    assert accounts["call_amount"] == 1_750.0

    calls = engine.margin_calls(book, HK_PRICES, FRIDAY_EVENING_HKT)
    row = calls.row(0)
    assert row["account_id"] == 7
    assert row["status"] == "margin_call"
    assert row["equity"] == 9_500.0
    assert row["call_amount"] == 1_750.0
    assert row["forced"] is False
    assert len(calls.forced_sales) == 0
    assert row["deposit_HKD"] == pytest.approx(1_750.0, rel=1e-15)
    assert row["deposit_A"] == pytest.approx(250.0, rel=1e-15)  # 2,500 / 10
    assert row["deposit_B"] == pytest.approx(3_500.0 / 19.5, rel=1e-15)  # 179.487…
    assert row["sell_B"] == pytest.approx(3_500.0 / 19.5, rel=1e-15)
    assert math.isnan(row["sell_A"])  # 5,833.33 of A needed, 5,000 held
    assert math.isnan(row["sell_HKD"])  # a loan cannot be sold

    # Each cure, applied alone, restores equity to exactly the initial requirement.
    cured = {
        "deposit cash": {"HKD": -15_000.0 + 1_750.0, "A": 500.0, "B": 1_000.0},
        "deposit A": {"HKD": -15_000.0, "A": 750.0, "B": 1_000.0},
        "sell B": {"HKD": -15_000.0 + 3_500.0, "A": 500.0, "B": 1_000.0 - 3_500.0 / 19.5},
    }
    for name, holdings in cured.items():
        after = engine.revalue(_book({7: holdings}), HK_PRICES).accounts.row(0)
        assert after["equity"] == pytest.approx(after["initial_requirement"], rel=1e-12), name
        assert after["status"] == "normal", name


def test_spec_example_cures_with_a_sale_fee() -> None:
    """SPEC §6/§7 example: call 1,750 → deposit 1,750 cash; deposit stock A worth
    1,750 / 0.7 = 2,500; sell B worth 1,750 / (0.5 − fee). With a 0.25% fee:
    1,750 / 0.4975 = 3,517.587940 HKD of B = 180.389125 shares at 19.50."""
    engine = vm.RiskEngine(_hk_broker_config(fee=0.0025))
    book = _book({7: HK_HOLDINGS})
    row = engine.margin_calls(book, HK_PRICES, FRIDAY_EVENING_HKT).row(0)
    assert row["deposit_HKD"] == pytest.approx(1_750.0, rel=1e-15)
    assert row["deposit_A"] * 10.0 == pytest.approx(2_500.0, rel=1e-15)
    assert row["sell_B"] * 19.5 == pytest.approx(1_750.0 / 0.4975, rel=1e-14)
    assert round(row["sell_B"] * 19.5, 6) == 3_517.587940
    assert round(row["sell_B"], 6) == 180.389125
    # Selling x = 3,517.59 of B: requirement −0.5x, proceeds x(1 − fee) repay the loan.
    x = row["sell_B"] * 19.5
    after = engine.revalue(
        _book({7: {"HKD": -15_000.0 + x * (1 - 0.0025), "A": 500.0, "B": 1_000.0 - row["sell_B"]}}),
        HK_PRICES,
    ).accounts.row(0)
    assert after["equity"] == pytest.approx(after["initial_requirement"], rel=1e-12)


def test_spec_example_in_liquidation_gets_a_forced_sale_plan() -> None:
    """SPEC §6 example with liquidation haircuts defaulting to the maintenance ones:
    equity 9,500 < liquidation requirement 10,025 → status ``liquidation``, forced. The
    plan sells the most haircut-efficient asset first: B (0.5 − 0.0025 = 0.4975) before A
    (0.3 − 0.0025 = 0.2975); B alone cures: 1,750 / 0.4975 = 3,517.587940 HKD of B, fee
    0.25% = 8.793970 HKD."""
    engine = vm.RiskEngine(_hk_broker_config(fee=0.0025, liquidation=False))
    book = _book({7: HK_HOLDINGS})
    calls = engine.margin_calls(book, HK_PRICES, FRIDAY_EVENING_HKT)
    row = calls.row(0)
    assert row["status"] == "liquidation"
    assert row["forced"] is True
    sales = calls.forced_sales
    assert len(sales) == 1
    sale = sales.row(0)
    assert sale["account_id"] == 7
    assert sale["asset"] == "B"
    assert sale["holding_row"] == 2
    assert sale["value"] == pytest.approx(1_750.0 / 0.4975, rel=1e-14)
    assert sale["units"] == pytest.approx(1_750.0 / 0.4975 / 19.5, rel=1e-14)
    assert round(sale["fee"], 6) == 8.793970


def test_call_target_maintenance_changes_the_cures() -> None:
    """Hand-derived from the SPEC §6 example with ``call_target = "maintenance"``: the call
    restores the maintenance requirement: C = 10,025 − 9,500 = 525; deposit A worth
    525 / (1 − 0.25) = 700 (70 shares); sell B worth 525 / 0.45 = 1,166.67 (no fee)."""
    base = _hk_broker_config()
    config = RiskConfig(
        assets=base.assets, policy=Policy(call_target="maintenance"), reporting_currency="HKD"
    )
    row = (
        vm.RiskEngine(config)
        .margin_calls(_book({7: HK_HOLDINGS}), HK_PRICES, FRIDAY_EVENING_HKT)
        .row(0)
    )
    assert row["call_amount"] == 525.0
    assert row["deposit_HKD"] == pytest.approx(525.0, rel=1e-15)
    assert row["deposit_A"] == pytest.approx(70.0, rel=1e-14)
    assert row["sell_B"] * 19.5 == pytest.approx(525.0 / 0.45, rel=1e-14)
    assert row["sell_A"] * 10.0 == pytest.approx(525.0 / 0.25, rel=1e-14)  # 2,100 ≤ 5,000


# -- size tiers (exchange collateral discount tiers) ----------------------------------------

# OKX multi-currency margin, "discount rate" worked example (reproduced at
# ukcamo.com/6126.html from OKX's discount-rate introduction): 11M USDT with bands
# 0–5M × 1, 5M–10M × 0.9, > 10M × 0.8 → 5M + 4.5M + 0.8M = 10.3M USD.
OKX_USDT_BANDS = [SizeTier(0, 1.0), SizeTier(5_000_000, 0.9), SizeTier(10_000_000, 0.8)]
# OKX press release "OKX Adjusts Discount Rates for BETH" (GlobeNewswire, 2024-07-18),
# tiers after: 0–2M 0.95, 2M–4M 0.85, 4M–8M 0.5, > 8M 0.
OKX_BETH_BANDS = [(0, 0.95), (2_000_000, 0.85), (4_000_000, 0.5), (8_000_000, 0.0)]


def test_okx_usdt_discount_tiers_through_tiered_value() -> None:
    """OKX discount-rate example: 11,000,000 USDT → 10,300,000 USD of margin."""
    assert vm.calc.tiered_value(11_000_000, OKX_USDT_BANDS) == 10_300_000.0
    assert vm.calc.tiered_value(5_000_000, OKX_USDT_BANDS) == 5_000_000.0
    assert vm.calc.tiered_value(7_000_000, OKX_USDT_BANDS) == 6_800_000.0


def test_okx_beth_discount_tiers_through_tiered_value() -> None:
    """OKX BETH tiers (2024-07-18), hand-derived: 3M → 2M × 0.95 + 1M × 0.85 = 2.75M;
    10M → 1.9M + 1.7M + 2.0M + 0 = 5.6M; anything above 8M adds nothing."""
    assert vm.calc.tiered_value(3_000_000, OKX_BETH_BANDS) == pytest.approx(2_750_000.0, rel=1e-15)
    assert vm.calc.tiered_value(10_000_000, OKX_BETH_BANDS) == pytest.approx(5_600_000.0, rel=1e-15)
    assert vm.calc.tiered_value(80_000_000, OKX_BETH_BANDS) == pytest.approx(5_600_000.0, rel=1e-15)


def test_okx_usdt_tiers_as_a_requirement_and_its_cures() -> None:
    """OKX example as an account: 11M USDT (haircut 0, OKX's discount tiers as size tiers)
    against a 10.5M USD loan. req = v − (1 − 0)·T(v) = 11M − 10.3M = 0.7M; equity 0.5M →
    call 0.2M. Depositing more USDT is credited at the top band's 0.8: 0.2M / 0.8 = 250,000
    USDT. Selling USDT frees 1 − 0.8 = 0.2 per unit from the top band (1M wide above 10M),
    so 0.2M / 0.2 = 1,000,000 USDT (exactly that band)."""
    config = RiskConfig(
        assets=(
            AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True),
            AssetSpec("USDT", "stablecoin", 1e-6, eligible=True, size_tiers=tuple(OKX_USDT_BANDS)),
        )
    )
    engine = vm.RiskEngine(config)
    book = _book({1: {"USD": -10_500_000.0, "USDT": 11_000_000.0}})
    prices = {"USD": 1.0, "USDT": 1.0}
    row = engine.revalue(book, prices).accounts.row(0)
    assert row["initial_requirement"] == pytest.approx(700_000.0, rel=1e-12)
    assert row["equity"] == 500_000.0
    assert row["call_amount"] == pytest.approx(200_000.0, rel=1e-12)
    call = engine.margin_calls(book, prices, FRIDAY_EVENING_HKT).row(0)
    assert call["deposit_USDT"] == pytest.approx(250_000.0, rel=1e-12)
    assert call["deposit_USD"] == pytest.approx(200_000.0, rel=1e-12)
    assert call["sell_USDT"] == pytest.approx(1_000_000.0, rel=1e-12)


def test_hk_default_btc_size_tiers_in_the_requirement() -> None:
    """hk_default BTC bands: 0–10M × 1.0, 10M–50M × 0.9, > 50M × 0.75. Hand-derived for
    600 BTC at 100,000 = 60M: T = 10M + 40M × 0.9 + 10M × 0.75 = 53.5M; initial
    requirement = 60M − (1 − 0.6) × 53.5M = 38.6M; maintenance 60M − 0.5 × 53.5M = 33.25M.
    With a 30M USD loan: equity 30M < 33.25M → call 38.6M − 30M = 8.6M. Depositing BTC
    is credited at 0.4 × 0.75 = 0.3 per unit: 8.6M / 0.3 = 28.6667M (286.667 BTC)."""
    config = RiskConfig.hk_default()
    btc = config.asset("BTC")
    assert vm.calc.tiered_value(60_000_000, btc.size_tiers) == pytest.approx(53_500_000, rel=1e-15)
    engine = vm.RiskEngine(config)
    book = _book({1: {"USD": -30_000_000.0, "BTC": 600.0}})
    prices = {"USD": 1.0, "HKD": 0.128, "USDT": 1.0, "BTC": 100_000.0, "ETH": 4_000.0}
    row = engine.revalue(book, prices).accounts.row(0)
    assert row["initial_requirement"] == pytest.approx(38_600_000.0, rel=1e-14)
    assert row["maintenance_requirement"] == pytest.approx(33_250_000.0, rel=1e-14)
    assert row["status"] == "margin_call"
    call = engine.margin_calls(book, prices, FRIDAY_EVENING_HKT).row(0)
    assert call["call_amount"] == pytest.approx(8_600_000.0, rel=1e-14)
    assert call["deposit_BTC"] == pytest.approx(8_600_000.0 / 0.3 / 100_000.0, rel=1e-12)


# -- deadlines, lifecycle -------------------------------------------------------------------

HK = RiskConfig.hk_default()
HK_MARKET = {"USD": 1.0, "HKD": 0.128, "USDT": 1.0, "BTC": 80_000.0, "ETH": 4_000.0}


def _btc_loans(loans: dict[int, float]) -> vm.Book:
    """Each account: 1 BTC and a USD loan. At BTC = 80,000: call = L − 0.4 × 80,000
    = L − 32,000 when L > 40,000 (maintenance 0.5 × 80,000); liquidation when L > 48,000."""
    return _book({a: {"USD": -loan, "BTC": 1.0} for a, loan in loans.items()})


def test_deadline_runs_in_calendar_hours_over_the_weekend_in_hong_kong_time() -> None:
    """SPEC §4/§7: VA trades 24×7, so a 24 h deadline from Friday 18:00 HKT (10:00 UTC) is
    Saturday 18:00 HKT = Saturday 10:00 UTC — not the next business day; a 72 h deadline is
    Monday 2026-03-09 18:00 HKT = 10:00 UTC. Deadlines are returned in UTC."""
    book = _btc_loans({1: 45_000.0})
    calls = vm.RiskEngine(HK).margin_calls(book, HK_MARKET, FRIDAY_EVENING_HKT)
    assert calls["deadline"].dtype == np.dtype("datetime64[us]")
    assert calls["deadline"][0] == np.datetime64("2026-03-07T10:00:00", "us")
    assert calls.row(0)["call_amount"] == 13_000.0
    three_days = RiskConfig(
        assets=HK.assets, perpetuals=HK.perpetuals, policy=Policy(call_deadline_hours=72)
    )
    calls = vm.RiskEngine(three_days).margin_calls(book, HK_MARKET, FRIDAY_EVENING_HKT)
    assert calls["deadline"][0] == np.datetime64("2026-03-09T10:00:00", "us")


def test_deadline_is_24_elapsed_hours_across_a_dst_change() -> None:
    """Hand-derived: New York moves to daylight time at 02:00 on Sunday 2026-03-08. A call
    made Saturday 12:00 EST (17:00 UTC) is due 24 elapsed hours later, Sunday 17:00 UTC =
    13:00 EDT — not 12:00 local wall-clock time."""
    as_of = dt.datetime(2026, 3, 7, 12, 0, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    calls = vm.RiskEngine(HK).margin_calls(_btc_loans({1: 45_000.0}), HK_MARKET, as_of)
    assert calls["deadline"][0] == np.datetime64("2026-03-08T17:00:00", "us")


def test_naive_as_of_is_rejected() -> None:
    """SPEC §7: deadlines are instants; a naive datetime is ambiguous → DataError."""
    engine = vm.RiskEngine(HK)
    book = _btc_loans({1: 45_000.0})
    with pytest.raises(vm.DataError, match="as_of"):
        engine.margin_calls(book, HK_MARKET, dt.datetime(2026, 3, 6, 18, 0))
    calls = engine.margin_calls(book, HK_MARKET, FRIDAY_EVENING_HKT)
    with pytest.raises(vm.DataError, match="as_of"):
        call_lifecycle(calls, calls, dt.datetime(2026, 3, 7, 18, 0))


def test_call_lifecycle_states() -> None:
    """Hand-derived at BTC = 80,000 (call = L − 32,000). Friday 18:00 HKT calls: accounts
    1–3 owe 45,000 → 13,000 each, due Saturday 10:00 UTC; account 4's call came Thursday
    (due Friday 10:00 UTC). Saturday 12:00 HKT (04:00 UTC): account 1 did nothing → open;
    account 2 repaid to 30,000 → met; account 3 repaid to 42,000 → call 10,000 → partly_met;
    account 4 still owes 45,000 and its deadline passed → expired; account 5 borrowed 44,000
    → new call 12,000 due Sunday 04:00 UTC. An open call keeps its original deadline."""
    engine = vm.RiskEngine(HK)
    friday = engine.margin_calls(
        _btc_loans({1: 45e3, 2: 45e3, 3: 45e3}), HK_MARKET, FRIDAY_EVENING_HKT
    )
    previous = pa.table(
        {
            "account_id": pa.array([*friday["account_id"].tolist(), 4], pa.int64()),
            "call_amount": [*friday["call_amount"].tolist(), 13_000.0],
            "deadline": pa.array(
                [*friday["deadline"].tolist(), dt.datetime(2026, 3, 6, 10, 0)], pa.timestamp("us")
            ),
        }
    )
    saturday = dt.datetime(2026, 3, 7, 12, 0, tzinfo=HKT)
    today = engine.margin_calls(
        _btc_loans({1: 45e3, 2: 30e3, 3: 42e3, 4: 45e3, 5: 44e3}), HK_MARKET, saturday
    )
    life = call_lifecycle(previous, today, saturday)
    got = {
        int(a): (s, o, n, d)
        for a, s, o, n, d in zip(
            life["account_id"], life["state"], life["call_amount_opened"],
            life["call_amount_now"], life["deadline"], strict=True,
        )
    }  # fmt: skip
    fri_due = np.datetime64("2026-03-07T10:00:00", "us")
    assert got == {
        1: ("open", 13_000.0, 13_000.0, fri_due),
        2: ("met", 13_000.0, 0.0, fri_due),
        3: ("partly_met", 13_000.0, 10_000.0, fri_due),
        4: ("expired", 13_000.0, 13_000.0, np.datetime64("2026-03-06T10:00:00", "us")),
        5: ("new", 12_000.0, 12_000.0, np.datetime64("2026-03-08T04:00:00", "us")),
    }
    # Past the Friday calls' deadline (Saturday 18:00 HKT), the unmet ones expire; a call
    # reaching its deadline exactly counts as expired too.
    late = call_lifecycle(friday, today, dt.datetime(2026, 3, 7, 18, 0, tzinfo=HKT))
    assert dict(zip(late["account_id"].tolist(), late["state"].tolist(), strict=True)) == {
        1: "expired", 2: "met", 3: "expired", 4: "new", 5: "new",
    }  # fmt: skip


def test_expired_call_gets_a_forced_sale_plan() -> None:
    """Hand-derived: an expired call of account 4 (L = 45,000, 1 BTC at 80,000, call
    13,000) is forced even though its status is only ``margin_call``: sell BTC worth
    13,000 / (0.6 − 0.001) = 21,702.838063 (0.271285 BTC), fee 0.1% = 21.702838."""
    engine = vm.RiskEngine(HK)
    book = _btc_loans({3: 45e3, 4: 45e3})
    calls = engine.margin_calls(book, HK_MARKET, FRIDAY_EVENING_HKT, expired=[4])
    assert calls["forced"].tolist() == [False, True]
    assert calls["status"].tolist() == ["margin_call", "margin_call"]
    sales = calls.forced_sales
    assert len(sales) == 1
    sale = sales.row(0)
    assert (sale["account_id"], sale["asset"], sale["holding_row"]) == (4, "BTC", 3)
    assert sale["value"] == pytest.approx(13_000.0 / 0.599, rel=1e-14)
    assert round(sale["value"], 6) == 21_702.838063
    assert round(sale["units"], 6) == 0.271285
    assert sale["fee"] == pytest.approx(13_000.0 / 0.599 * 0.001, rel=1e-14)


def test_bankrupt_account_can_only_be_cured_by_a_deposit() -> None:
    """Hand-derived: a 90,000 USD loan against 1 BTC at 80,000 has equity −10,000 <
    liquidation requirement 0.4 × 80,000: status ``liquidation``. Call = 0.6 × 80,000 −
    (−10,000) = 58,000: deposit 58,000 USD, or BTC worth 58,000 / 0.4 = 145,000 (1.8125 BTC).
    Selling all the BTC frees only 80,000 × (0.6 − 0.001) = 47,920 < 58,000: no sale cure;
    the forced plan sells the whole holding (1 BTC, fee 80). An unknown id in ``expired``
    is a DataError."""
    engine = vm.RiskEngine(HK)
    book = _btc_loans({1: 90e3})
    calls = engine.margin_calls(book, HK_MARKET, FRIDAY_EVENING_HKT)
    row = calls.row(0)
    assert (row["status"], row["equity"], row["forced"]) == ("liquidation", -10_000.0, True)
    assert row["call_amount"] == 58_000.0
    assert row["deposit_USD"] == pytest.approx(58_000.0, rel=1e-15)
    assert row["deposit_BTC"] == pytest.approx(1.8125, rel=1e-15)
    assert row["deposit_HKD"] == pytest.approx(58_000.0 / 0.128, rel=1e-15)
    assert all(math.isnan(row[f"sell_{a}"]) for a in ("USD", "HKD", "USDT", "BTC", "ETH"))
    assert _rows_of(calls.forced_sales) == [
        {"account_id": 1, "asset": "BTC", "holding_row": 1, "units": 1.0, "value": 80_000.0,
         "fee": pytest.approx(80.0, rel=1e-15)},
    ]  # fmt: skip
    with pytest.raises(vm.DataError, match="unknown account 99"):
        engine.margin_calls(book, HK_MARKET, FRIDAY_EVENING_HKT, expired=[99])


# -- interest -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "rate", "days", "day_count", "expected", "source"),
    [
        # The issue's example: 10,000 × 8.906% × 7 / 365 = 6,234.2 / 365 = 17.08 exactly.
        (10_000, 0.08906, 7, "ACT/365", "17.08", "issue"),
        # Same loan on ACT/360: 6,234.2 / 360 = 17.31722… → rounded up 17.32.
        (10_000, 0.08906, 7, "ACT/360", "17.32", "hand"),
        # Futu HK topic225/topic236: financing × 6.8% × days / 365, minimum HK$0.01.
        # 50,000 × 6.8% / 365 = 9.315068… → 9.32 (rounded against the account).
        (50_000, 0.068, 1, "ACT/365", "9.32", "Futu HK"),
        # 50,000 × 6.8% × 30 / 365 = 279.452054… → 279.46.
        (50_000, 0.068, 30, "ACT/365", "279.46", "Futu HK"),
        # Futu's minimum: 1 HKD for a day = 0.000186… → HK$0.01.
        (1, 0.068, 1, "ACT/365", "0.01", "Futu HK"),
        # cfm-calculator.com margin interest (MI = AB × IR × D / 360), its examples:
        # 5,000 × 7.5% × 30 / 360 = 31.25; 10,000 × 6% × 60 / 360 = 100.00.
        (5_000, 0.075, 30, "ACT/360", "31.25", "cfm-calculator"),
        (10_000, 0.06, 60, "ACT/360", "100.00", "cfm-calculator"),
        # calculatorwallah.com: 25,000 at 11% for 45 days = 343.75; daily 7.638… → 7.64.
        (25_000, 0.11, 45, "ACT/360", "343.75", "calculatorwallah"),
        (25_000, 0.11, 1, "ACT/360", "7.64", "calculatorwallah"),
        # SoFi / Frec (debit × rate / 360 daily), hk_default USD 8.25%: 100,000 for a day =
        # 22.916… → 22.92; for 30 days 687.50 exactly.
        (100_000, 0.0825, 1, "ACT/360", "22.92", "SoFi/Frec"),
        (100_000, 0.0825, 30, "ACT/360", "687.50", "SoFi/Frec"),
        # Exact on decimals where binary floats are not: 100 × 7% × 365 / 365 = 7.00
        # (0.07 read at 16 significant digits through binary floats is 0.07000000000000001,
        # which was charged 7.01 before the core read inputs as shortest decimals).
        (100, 0.07, 365, "ACT/365", "7.00", "hand"),
        (100, 0.08, 365, "ACT/365", "8.00", "hand"),
        (0, 0.068, 30, "ACT/365", "0.00", "hand"),
        (50_000, 0.068, 0, "ACT/365", "0.00", "hand"),
    ],
)
def test_interest_worked_examples(
    principal: float, rate: float, days: int, day_count: str, expected: str, source: str
) -> None:
    """Interest examples; sources in the parameter comments. Rounded up to the minor unit
    (SPEC §2: a payer pays the ceiling)."""
    got = vm.calc.interest(principal, rate, days, day_count=day_count)
    assert got == Decimal(expected), source
    assert isinstance(got, Decimal)


def test_interest_is_exact_for_every_three_decimal_rate() -> None:
    """Hand-derived: 100 × r × 365 / 365 = 100·r exactly, i.e. 1000·r cents for every rate
    r = k / 1000 (and likewise on ACT/360 for 360 days). Ceilings of exact values must not
    move: none of these may be charged a cent more. Checked through both the scalar
    calculator and the batch accrual. (Regression: a build reading rates at 16 significant
    digits through floats over-charged 33 of these rates, 0.035, 0.042, 0.069, 0.07, ….)"""
    wrong = []
    for k in range(1, 1000):
        rate = k / 1000
        for day_count, days in (("ACT/365", 365), ("ACT/360", 360)):
            got = vm.calc.interest(100, rate, days, day_count=day_count)
            if got != Decimal(k).scaleb(-1):
                wrong.append((rate, day_count, got))
    loans = _book({k: {"HKD": -100.0} for k in range(1, 1000)})
    for k in range(1, 1000):
        config = RiskConfig(
            assets=(AssetSpec("HKD", "cash", 0.01, eligible=True, borrowable=True,
                              annual_rate=k / 1000),),
            reporting_currency="HKD",
        )  # fmt: skip
        charged = vm.RiskEngine(config).accrue_interest(loans, days=365)["interest"]
        if charged[0] != 10 * k:
            wrong.append((k / 1000, "accrue", int(charged[0])))
    assert wrong == []


def test_interest_in_micro_units() -> None:
    """USDT-style minor unit 1e-6, hand-derived: 1,000 × 10% × 1 / 365 = 0.273972602…
    → 0.273973."""
    assert vm.calc.interest(1_000, 0.10, 1, minor_unit=1e-6) == Decimal("0.273973")


def test_accrue_interest_on_the_hk_default_book() -> None:
    """hk_default: HKD 6.8% ACT/365, USD 8.25% ACT/360, interest in minor units, rounded up.
    Futu HK formula: 50,000 HKD × 6.8% / 365 = 9.315… → 932 cents; 30 days → 279.452… →
    27,946 cents. USD: 100,000 × 8.25% / 360 = 22.916… → 2,292 cents; 30 days → 68,750.
    The issue's example is the 10,000 HKD loan at 8.906% for 7 days: 1,708 cents."""
    engine = vm.RiskEngine(HK)
    book = vm.Book(
        accounts={
            "account_id": [1, 2, 3],
            "investor_class": ["individual_pi"] * 3,
            "margin_client": [True, True, False],
            "credit_approved": [True, True, False],
        },
        holdings={
            "account_id": [1, 1, 2, 2, 3],
            "asset": ["HKD", "BTC", "USD", "ETH", "USD"],
            "amount": [-50_000.0, 1.0, -100_000.0, 100.0, 5_000.0],
        },
    )
    day = engine.accrue_interest(book)
    assert day["account_id"].tolist() == [1, 2]
    assert day["asset"].tolist() == ["HKD", "USD"]
    assert day["principal"].tolist() == [50_000.0, 100_000.0]
    assert day["interest"].dtype == np.int64
    assert day["interest"].tolist() == [932, 2_292]
    assert engine.accrue_interest(book, days=30)["interest"].tolist() == [27_946, 68_750]
    assert engine.accrue_interest(book, days=0)["interest"].tolist() == [0, 0]
    with pytest.raises(vm.DataError):
        engine.accrue_interest(book, days=-1)

    issue = RiskConfig(
        assets=(
            AssetSpec("HKD", "cash", 0.01, eligible=True, borrowable=True, annual_rate=0.08906),
            AssetSpec("BTC", "va", 1e-8, eligible=True, initial_haircut=0.6),
        ),
        reporting_currency="HKD",
    )
    charges = vm.RiskEngine(issue).accrue_interest(
        _book({1: {"HKD": -10_000.0, "BTC": 1.0}}), days=7
    )
    assert charges["interest"].tolist() == [1_708]


# -- disclosure -----------------------------------------------------------------------------


def test_disclosure_sheet_for_hk_default() -> None:
    """hk_default (SPEC §1/§4): BTC haircuts 60/50/40% → LTV 40% max, call at 50%, forced
    sale at 60%; ETH 65/55/45% → 35/45/55%; loans USD ACT/360 at 8.25%, HKD ACT/365 at 6.8%;
    24 calendar hours to meet a call; VA collateral only BTC and ETH at ≥ 60% haircut."""
    sheet = disclosure(HK)
    by_asset = {c["asset"]: c for c in sheet["eligible_collateral"]}
    assert {"BTC", "ETH"} <= set(by_asset)
    btc, eth = by_asset["BTC"], by_asset["ETH"]
    assert (btc["max_loan_to_value"], btc["margin_call_ltv"], btc["forced_liquidation_ltv"]) == (
        0.4, 0.5, 0.6,
    )  # fmt: skip
    assert (eth["max_loan_to_value"], eth["margin_call_ltv"], eth["forced_liquidation_ltv"]) == (
        0.35, 0.45, 0.55,
    )  # fmt: skip
    assert btc["capital_haircut"] == 1.0
    assert btc["forced_sale_fee"] == 0.001
    assert sheet["va_collateral_assets"] == ["BTC", "ETH"]
    assert sheet["va_haircut_floor"] == 0.6
    loans = {loan["currency"]: loan for loan in sheet["loans"]}
    assert set(loans) == {"USD", "HKD"}
    assert (loans["USD"]["day_count"], loans["USD"]["annual_rate"]) == ("ACT/360", 0.0825)
    assert (loans["HKD"]["day_count"], loans["HKD"]["annual_rate"]) == ("ACT/365", 0.068)
    assert sheet["margin_call"]["deadline_hours"] == 24
    assert "calendar hours" in sheet["margin_call"]["deadline_basis"]
    assert sheet["firm_limits"]["max_loans_to_capital"] == 5.0

    assert json.loads(disclosure_json(HK)) == json.loads(json.dumps(sheet))

    markdown = disclosure_markdown(HK)
    assert "| BTC | va | 60% / 50% / 40% | 40% | 50% | 60% | 0.1% |" in markdown
    assert "| ETH | va | 65% / 55% / 45% | 35% | 45% | 55% | 0.1% |" in markdown
    assert "| USD | 8.25% | ACT/360 |" in markdown
    assert "| HKD | 6.8% | ACT/365 |" in markdown
    assert "Deadline: 24 hours" in markdown


# -- properties: every cure cures ---------------------------------------------------------


@st.composite
def _called_accounts(draw: st.DrawFn) -> tuple[RiskConfig, dict[str, float], dict[str, float]]:
    """A config with USD cash (the loan, reporting currency) and 1–3 collateral assets
    (random haircut ladders, sale fees, maybe size tiers, maybe ineligible), and one account
    holding a USD loan and those assets, below its maintenance requirement."""
    n = draw(st.integers(1, 3))
    assets = [AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True)]
    prices = {"USD": 1.0}
    holdings: dict[str, float] = {}
    frac = st.floats(0.0, 0.95, allow_nan=False)
    for i in range(n):
        symbol = f"S{i}"
        h = sorted(draw(st.lists(frac, min_size=3, max_size=3)), reverse=True)
        n_bands = draw(st.integers(0, 3))
        floors = sorted(draw(st.sets(st.floats(1e3, 1e7), min_size=n_bands, max_size=n_bands)))
        factors = sorted(
            draw(st.lists(st.floats(0.05, 1.0), min_size=n_bands, max_size=n_bands)), reverse=True
        )
        bands = [SizeTier(0.0, 1.0)] + [
            SizeTier(f, k) for f, k in zip(floors, factors, strict=True)
        ]
        assets.append(
            AssetSpec(
                symbol, "security", 1e-8,
                eligible=draw(st.booleans()) if i else True,
                initial_haircut=h[0], maintenance_haircut=h[1], liquidation_haircut=h[2],
                size_tiers=tuple(bands) if n_bands else (),
                sale_fee=draw(st.sampled_from([0.0, 0.001, 0.0025, 0.01])),
            )
        )  # fmt: skip
        prices[symbol] = draw(st.floats(0.01, 50_000.0))
        holdings[symbol] = draw(st.floats(100.0, 2e7)) / prices[symbol]
    config = RiskConfig(assets=tuple(assets))
    # Equity strictly below the maintenance requirement (possibly negative).
    engine = vm.RiskEngine(config)
    probe = engine.revalue(_book({1: {**holdings, "USD": -1.0}}), prices).accounts.row(0)
    gross = sum(holdings[s] * prices[s] for s in holdings)
    maintenance = probe["maintenance_requirement"]
    equity = draw(st.floats(-0.3, 0.999)) * maintenance
    assume(maintenance > 1e-3 * gross)
    holdings["USD"] = -(gross - equity)
    return config, prices, holdings


def _revalued(
    config: RiskConfig, holdings: dict[str, float], prices: dict[str, float]
) -> dict[str, Any]:
    return vm.RiskEngine(config).revalue(_book({1: holdings}), prices).accounts.row(0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_called_accounts())
def test_every_cure_cures_and_a_smaller_one_does_not(
    case: tuple[RiskConfig, dict[str, float], dict[str, float]],
) -> None:
    """SPEC §7: each cure alone restores the call target (initial requirement): deposit
    ``deposit_X`` units of X, or sell ``sell_X`` units of X with the proceeds net of the
    sale fee repaying the USD loan. 99.9% of any cure leaves the account short."""
    config, prices, holdings = case
    engine = vm.RiskEngine(config)
    calls = engine.margin_calls(_book({1: holdings}), prices, FRIDAY_EVENING_HKT)
    assert len(calls) == 1
    row = calls.row(0)
    assume(row["call_amount"] > 0)
    gross = sum(abs(v) * prices[s] for s, v in holdings.items())
    tolerance = 1e-9 * gross

    def deposit(symbol: str, units: float) -> dict[str, float]:
        return {**holdings, symbol: holdings.get(symbol, 0.0) + units}

    def sell(symbol: str, units: float) -> dict[str, float]:
        fee = config.asset(symbol).sale_fee
        proceeds = units * prices[symbol] * (1.0 - fee)
        left = max(holdings[symbol] - units, 0.0)
        return {**holdings, symbol: left, "USD": holdings["USD"] + proceeds}

    cures = 0
    for column in calls.columns:
        if not column.startswith(("deposit_", "sell_")):
            continue
        units = row[column]
        if not math.isfinite(units):
            continue
        kind, symbol = column.split("_", 1)
        apply = deposit if kind == "deposit" else sell
        after = _revalued(config, apply(symbol, units), prices)
        assert after["equity"] >= after["initial_requirement"] - tolerance, column
        short = _revalued(config, apply(symbol, 0.999 * units), prices)
        assert short["equity"] < short["initial_requirement"], column
        cures += 1
    assert cures >= 1  # depositing USD cash always cures


# -- properties: interest is never under-charged ------------------------------------------


def _exact_minor(principal: float, rate: float, days: int, basis: int, decimals: int) -> int:
    exact = Fraction(str(principal)) * Fraction(str(rate)) * days / basis * 10**decimals
    return math.ceil(exact)


@settings(max_examples=300, deadline=None)
@given(
    cents=st.integers(0, 10**11),
    rate_bp=st.integers(0, 50_000),
    days=st.integers(0, 400),
    day_count=st.sampled_from(["ACT/365", "ACT/360"]),
)
def test_interest_is_the_exact_ceiling(cents: int, rate_bp: int, days: int, day_count: str) -> None:
    """``calc.interest`` equals ceil(principal × rate × days / basis) computed in exact
    rationals from the decimal strings (principal in whole cents, rate with ≤ 5 decimals)."""
    principal = float(Decimal(cents).scaleb(-2))
    rate = float(Decimal(rate_bp).scaleb(-5))
    basis = 365 if day_count == "ACT/365" else 360
    got = vm.calc.interest(principal, rate, days, day_count=day_count)
    assert got == Decimal(_exact_minor(principal, rate, days, basis, 2)).scaleb(-2)


@settings(max_examples=200, deadline=None)
@given(
    micros=st.integers(0, 10**13),
    rate=st.decimals(0, Decimal("0.5"), places=6),
    days=st.integers(0, 40),
)
def test_interest_in_micro_units_is_the_exact_ceiling(
    micros: int, rate: Decimal, days: int
) -> None:
    """As above with a 1e-6 minor unit and rates with up to 6 decimals."""
    principal = float(Decimal(micros).scaleb(-6))
    got = vm.calc.interest(principal, float(rate), days, minor_unit=1e-6)
    assert got == Decimal(_exact_minor(principal, float(rate), days, 365, 6)).scaleb(-6)


@settings(max_examples=60, deadline=None)
@given(
    loans=st.lists(
        st.tuples(st.sampled_from(["HKD", "USD"]), st.integers(1, 10**11)), min_size=1, max_size=30
    ),
    hkd_rate=st.decimals(0, Decimal("0.3"), places=5),
    usd_rate=st.decimals(0, Decimal("0.3"), places=5),
    days=st.integers(0, 31),
)
def test_accrual_is_the_exact_ceiling_per_loan(
    loans: list[tuple[str, int]], hkd_rate: Decimal, usd_rate: Decimal, days: int
) -> None:
    """``accrue_interest``: every loan row is charged exactly ceil(exact interest) minor
    units at its currency's rate and day count (HKD ACT/365, USD ACT/360)."""
    config = RiskConfig(
        assets=(
            AssetSpec("USD", "cash", 0.01, eligible=True, borrowable=True, day_count="ACT/360",
                      annual_rate=float(usd_rate)),
            AssetSpec("HKD", "cash", 0.01, eligible=True, borrowable=True, day_count="ACT/365",
                      annual_rate=float(hkd_rate)),
            AssetSpec("BTC", "va", 1e-8, eligible=True, initial_haircut=0.6),
        )
    )  # fmt: skip
    holdings = {
        i + 1: {asset: -float(Decimal(c).scaleb(-2)), "BTC": 1e6}
        for i, (asset, c) in enumerate(loans)
    }
    charges = vm.RiskEngine(config).accrue_interest(_book(holdings), days=days)
    assert len(charges) == len(loans)
    for (asset, cents), charged, principal in zip(
        loans, charges["interest"].tolist(), charges["principal"].tolist(), strict=True
    ):
        rate = float(usd_rate if asset == "USD" else hkd_rate)
        basis = 360 if asset == "USD" else 365
        assert principal == float(Decimal(cents).scaleb(-2))
        assert charged == _exact_minor(principal, rate, days, basis, 2)
