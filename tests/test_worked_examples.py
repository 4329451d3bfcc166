"""Exact worked numbers: published exchange examples and hand-derived cases.

Each test states where its numbers come from. Hand derivations are written out so a
reviewer can redo them on paper.
"""

from __future__ import annotations

import numpy as np
import pytest

import vamargin as vm
from vamargin.config import AssetSpec, MarginTier, PerpetualSpec, Policy, RiskConfig

# Binance USDⓈ-M BTCUSDT brackets as published in 2021 (leverage-and-margin table):
# floor, maintenance margin rate, max leverage.
BINANCE_BTCUSDT_2021 = [
    (0, 0.004, 125),
    (50_000, 0.005, 100),
    (250_000, 0.01, 50),
    (1_000_000, 0.025, 20),
    (10_000_000, 0.05, 10),
    (20_000_000, 0.10, 5),
    (50_000_000, 0.125, 4),
    (100_000_000, 0.15, 3),
    (200_000_000, 0.25, 2),
    (300_000_000, 0.50, 1),
]
BINANCE_ETHUSDT_2021 = [
    (0, 0.005, 100),
    (10_000, 0.0065, 75),
    (100_000, 0.01, 50),
    (500_000, 0.02, 25),
    (1_000_000, 0.05, 10),
    (2_000_000, 0.10, 5),
    (5_000_000, 0.125, 4),
    (10_000_000, 0.15, 3),
    (20_000_000, 0.25, 2),
]


def _tiers(rows: list[tuple[float, float, float]]) -> tuple[MarginTier, ...]:
    return tuple(MarginTier(*row) for row in rows)


def test_maintenance_amount_ladder_matches_binance_published_cum() -> None:
    # Binance's bracket API (`cum`) for BTCUSDT, 2021: 0, 50, 1 300, 16 300, 266 300,
    # 1 266 300, 2 516 300, 5 016 300, 25 016 300, 100 016 300.
    assert vm.calc.maintenance_amounts(BINANCE_BTCUSDT_2021) == [
        0.0, 50.0, 1_300.0, 16_300.0, 266_300.0, 1_266_300.0, 2_516_300.0, 5_016_300.0,
        25_016_300.0, 100_016_300.0,
    ]  # fmt: skip
    # ETHUSDT: 0, 15, 365, 5 365, 35 365, 135 365, 260 365, 510 365, 2 510 365.
    assert vm.calc.maintenance_amounts(BINANCE_ETHUSDT_2021) == [
        0.0, 15.0, 365.0, 5_365.0, 35_365.0, 135_365.0, 260_365.0, 510_365.0, 2_510_365.0,
    ]  # fmt: skip


@pytest.mark.parametrize("floor", [row[0] for row in BINANCE_BTCUSDT_2021[1:]])
def test_maintenance_margin_is_continuous_at_each_floor(floor: float) -> None:
    below = vm.calc.maintenance_margin(np.nextafter(floor, 0), BINANCE_BTCUSDT_2021)
    at = vm.calc.maintenance_margin(floor, BINANCE_BTCUSDT_2021)
    assert at == pytest.approx(below, rel=1e-12, abs=1e-6)
    assert (
        vm.calc.tier_of(floor, BINANCE_BTCUSDT_2021)
        == vm.calc.tier_of(np.nextafter(floor, 0), BINANCE_BTCUSDT_2021) + 1
    )


def test_maintenance_margin_inside_a_bracket() -> None:
    # 3 000 000 notional is in bracket 4 (2.5%, cum 16 300): 75 000 − 16 300 = 58 700.
    assert vm.calc.maintenance_margin(3_000_000, BINANCE_BTCUSDT_2021) == 58_700.0


def _binance_cross_book() -> tuple[vm.RiskEngine, vm.Book, dict[str, float]]:
    config = RiskConfig(
        assets=(AssetSpec("USDT", "stablecoin", 1e-6, eligible=True),),
        perpetuals=(
            PerpetualSpec("BTCUSDT", "linear", "USDT", "USDT", 1.0, _tiers(BINANCE_BTCUSDT_2021)),
            PerpetualSpec("ETHUSDT", "linear", "USDT", "USDT", 1.0, _tiers(BINANCE_ETHUSDT_2021)),
        ),
        reporting_currency="USDT",
    )
    book = vm.Book(
        accounts={"account_id": [1], "investor_class": ["corporate_pi"]},
        holdings={"account_id": [1], "asset": ["USDT"], "amount": [1_535_443.01]},
        positions={
            "account_id": [1, 1],
            "instrument": ["BTCUSDT", "ETHUSDT"],
            "qty": [109.488, 3_683.979],
            "entry_price": [32_481.98, 1_456.84],
        },
    )
    prices = {"USDT": 1.0, "BTCUSDT": 31_967.27, "ETHUSDT": 1_335.18}
    return vm.RiskEngine(config), book, prices


def test_binance_cross_margin_example_through_revalue() -> None:
    """Binance FAQ "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts"
    (b3c689c1f50a44cabb3a84e663b81d93, 2021), one-way cross-margin example: wallet
    1 535 443.01 USDT, long 109.488 BTCUSDT @ 32 481.98 (mark 31 967.27) and long
    3 683.979 ETHUSDT @ 1 456.84 (mark 1 335.18). Published liquidation prices:
    BTCUSDT 26 316.89, ETHUSDT 1 153.26 (inputs as reproduced in freqtrade PR #5576).
    The engine derives TMM1/UPNL1 from the other position and picks each bracket at the
    liquidation price (ETH is in bracket 7 at entry, bracket 6 at liquidation)."""
    engine, book, prices = _binance_cross_book()
    result = engine.revalue(book, prices)
    liquidation = result.positions["liquidation_price"]
    assert round(liquidation[0], 2) == 26_316.89
    assert round(liquidation[1], 2) == 1_153.26
    # The other leg's figures the FAQ lists (TMM1, UPNL1), recomputed at the marks.
    maintenance = result.positions["maintenance_margin"]
    upnl = result.positions["upnl"]
    assert maintenance[0] == pytest.approx(71_200.811444, abs=1e-6)
    assert upnl[0] == pytest.approx(-56_354.56848, abs=1e-6)
    assert maintenance[1] == pytest.approx(356_512.508122, abs=1e-6)
    assert upnl[1] == pytest.approx(-448_192.88514, abs=1e-5)


def test_binance_cross_margin_example_through_the_calculator() -> None:
    """Same FAQ example with the FAQ's own rounded TMM1/UPNL1 figures."""
    btc = vm.calc.liquidation_price(
        109.488, 32_481.98, 1_535_443.01,
        tiers=BINANCE_BTCUSDT_2021, other_maintenance=356_512.508, other_upnl=-448_192.89,
    )  # fmt: skip
    eth = vm.calc.liquidation_price(
        3_683.979, 1_456.84, 1_535_443.01,
        tiers=BINANCE_ETHUSDT_2021, other_maintenance=71_200.81144, other_upnl=-56_354.57,
    )  # fmt: skip
    assert btc is not None
    assert eth is not None
    assert round(btc, 2) == 26_316.89
    assert round(eth, 2) == 1_153.26
    # With a fixed rate the calculator is the closed form of the FAQ's formula.
    fixed = vm.calc.liquidation_price(
        109.488, 32_481.98, 1_535_443.01,
        mmr=0.025, maintenance_amount=16_300, other_maintenance=356_512.508,
        other_upnl=-448_192.89,
    )  # fmt: skip
    assert fixed == pytest.approx(btc, rel=1e-12)


def test_isolated_margin_liquidation_price_from_binance_formula() -> None:
    """Binance's formula in isolated mode (TMM = UPNL = 0, WB = the isolated wallet):
    LP = (WB + cum − |q|·EP) / (|q|·mmr − |q|) with the BTC position above and an isolated
    wallet of 1 535 443.01: (1 535 443.01 + 16 300 − 3 556 387.02…) / −106.7508
    = 18 778.73 (hand-derived; the notional there, 2.06M, is in the 2.5% bracket)."""
    engine, _, prices = _binance_cross_book()
    book = vm.Book(
        accounts={"account_id": [1], "investor_class": ["corporate_pi"]},
        positions={
            "account_id": [1],
            "instrument": ["BTCUSDT"],
            "qty": [109.488],
            "entry_price": [32_481.98],
            "isolated_margin": [1_535_443.01],
        },
    )
    result = engine.revalue(book, prices)
    assert round(result.positions["liquidation_price"][0], 2) == 18_778.73
    assert result.positions["tier"][0] == 4  # at the mark: 3.5M notional, 2.5% bracket
    # Isolated positions stay out of the account figures.
    assert result.accounts["equity"][0] == 0.0
    assert result.accounts["status"][0] == "normal"
    # Bankruptcy: 1 535 443.01 + 109.488·(B − 32 481.98) = 0.
    expected = 32_481.98 - 1_535_443.01 / 109.488
    assert result.positions["bankruptcy_price"][0] == pytest.approx(expected, rel=1e-12)


def _securities_config() -> RiskConfig:
    return RiskConfig(
        assets=(
            AssetSpec("HKD", "cash", 0.01, eligible=True, borrowable=True),
            AssetSpec(
                "A",
                "security",
                0.01,
                eligible=True,
                initial_haircut=0.30,
                maintenance_haircut=0.25,
                liquidation_haircut=0.20,
            ),
            AssetSpec(
                "B",
                "security",
                0.01,
                eligible=True,
                initial_haircut=0.50,
                maintenance_haircut=0.45,
                liquidation_haircut=0.40,
            ),
        ),
        reporting_currency="HKD",
    )


def test_spec_securities_margin_example() -> None:
    """SPEC §6: cash −15 000, stock A 5 000 (30%/25%), stock B 19 500 (50%/45%)
    → equity 9 500, initial 11 250, maintenance 10 025, margin_call, call 1 750.
    Liquidation haircuts 20%/40% give 1 000 + 7 800 = 8 800 (so not liquidation)."""
    book = vm.Book(
        accounts={
            "account_id": [7],
            "investor_class": ["retail"],
            "margin_client": [True],
            "credit_approved": [True],
        },
        holdings={
            "account_id": [7, 7, 7],
            "asset": ["HKD", "A", "B"],
            "amount": [-15_000, 50, 195],
        },
    )
    result = vm.RiskEngine(_securities_config()).revalue(book, {"HKD": 1.0, "A": 100.0, "B": 100.0})
    row = result.accounts.row(0)
    assert row["equity"] == 9_500.0
    assert row["initial_requirement"] == 11_250.0
    assert row["maintenance_requirement"] == 10_025.0
    assert row["liquidation_requirement"] == 8_800.0
    assert row["status"] == "margin_call"
    assert row["call_amount"] == 1_750.0
    assert row["debit"] == 15_000.0
    assert row["collateral_value"] == 24_500.0
    assert row["ltv"] == 15_000 / 24_500
    assert row["excess"] == -1_750.0
    assert row["margin_ratio"] == 10_025 / 9_500


def _btc_loan(loan_usd: float, credit_limit: float = np.inf) -> vm.Revaluation:
    book = vm.Book(
        accounts={
            "account_id": [1],
            "investor_class": ["individual_pi"],
            "margin_client": [True],
            "credit_approved": [True],
            "credit_limit": [credit_limit],
        },
        holdings={"account_id": [1, 1], "asset": ["BTC", "USD"], "amount": [2.0, -loan_usd]},
    )
    return vm.RiskEngine().revalue(book, {"BTC": 50_000.0, "USD": 1.0})


def test_loan_at_exactly_the_sfc_60_percent_haircut_is_allowed() -> None:
    """2 BTC at 50 000 (100 000) against a 40 000 USD loan: loanable value at the 60%
    haircut floor is 40% of 100 000 = 40 000, so equity 60 000 equals the initial
    requirement 100 000 − 0.4·100 000 exactly: excess 0, status normal."""
    row = _btc_loan(40_000).accounts.row(0)
    assert row["equity"] == 60_000.0
    assert row["initial_requirement"] == 60_000.0
    assert row["excess"] == 0.0
    assert row["ltv"] == 0.4
    assert row["status"] == "normal"
    # One cent more and no further advance is allowed.
    assert _btc_loan(40_000.01).accounts.row(0)["status"] == "restricted"


@pytest.mark.parametrize(
    ("loan", "status", "call"),
    [
        (50_000.0, "restricted", 0.0),  # LTV 50%: equity 50 000 = maintenance 50 000
        (50_000.01, "margin_call", 10_000.01),  # call back to initial: 60 000 − 49 999.99
        (60_000.0, "margin_call", 20_000.0),  # LTV 60%: equity 40 000 = liquidation 40 000
        (60_000.01, "liquidation", 20_000.01),
    ],
)
def test_hk_default_btc_ltv_ladder(loan: float, status: str, call: float) -> None:
    """hk_default BTC haircuts 60/50/40% put the call at LTV 50% and forced liquidation
    at LTV 60% (maintenance 100 000 − 0.5·100 000, liquidation 100 000 − 0.6·100 000)."""
    row = _btc_loan(loan).accounts.row(0)
    assert row["status"] == status
    assert row["call_amount"] == pytest.approx(call, abs=1e-6)


def test_credit_limit_restricts_and_caps_excess() -> None:
    # LTV 20% is far inside the haircut, but the 15 000 limit is exceeded by 5 000.
    row = _btc_loan(20_000, credit_limit=15_000).accounts.row(0)
    assert row["status"] == "restricted"
    assert row["excess"] == -5_000.0
    assert row["call_amount"] == 0.0


def test_size_tiers_credit_large_blocks_less() -> None:
    """hk_default BTC bands: first 10M credited at 100%, 10M–50M at 90%. A 12M holding is
    credited 10M + 0.9·2M = 11.8M; initial requirement 12M − 0.4·11.8M = 7 280 000."""
    bands = RiskConfig.hk_default().asset("BTC").size_tiers
    assert vm.calc.tiered_value(12_000_000, bands) == 11_800_000.0
    book = vm.Book(
        accounts={"account_id": [1], "investor_class": ["institutional_pi"]},
        holdings={"account_id": [1], "asset": ["BTC"], "amount": [120.0]},
    )
    row = vm.RiskEngine().revalue(book, {"BTC": 100_000.0}).accounts.row(0)
    assert row["initial_requirement"] == pytest.approx(7_280_000.0, rel=1e-15)


def test_cross_perp_with_coin_collateral_hand_derived() -> None:
    """USDT 10 000 + 0.1 BTC (5 000, haircuts 60/50/40%) + 1 BTC long at 50 000, mark
    49 000, flat 0.5% / 50x:
      uPnL −1 000; equity 14 000; IM 980; MM 245;
      initial 3 000 + 980 = 3 980; maintenance 2 500 + 245 = 2 745; liquidation 2 245.
      Wallet for the liquidation price: 15 000 − 2 000 (BTC's liquidation requirement)
      = 13 000, so L = (13 000 − 50 000) / (0.005 − 1) = 37 185.93;
      bankruptcy at 50 000 − 15 000 = 35 000;
      ADL: pnl −2%, eff. leverage 49 000 / 14 000 = 3.5, score −0.02 / 3.5."""
    config = RiskConfig(
        assets=(
            AssetSpec("USDT", "stablecoin", 1e-6, eligible=True),
            AssetSpec(
                "BTC",
                "va",
                1e-8,
                eligible=True,
                initial_haircut=0.6,
                maintenance_haircut=0.5,
                liquidation_haircut=0.4,
            ),
        ),
        perpetuals=(
            PerpetualSpec("BTC-PERP", "linear", "BTC", "USDT", 1.0, (MarginTier(0, 0.005, 50),)),
        ),
        policy=Policy(),
    )
    book = vm.Book(
        accounts={"account_id": [1], "investor_class": ["corporate_pi"]},
        holdings={"account_id": [1, 1], "asset": ["USDT", "BTC"], "amount": [10_000, 0.1]},
        positions={
            "account_id": [1],
            "instrument": ["BTC-PERP"],
            "qty": [1.0],
            "entry_price": [50_000],
        },
    )
    result = vm.RiskEngine(config).revalue(book, {"USDT": 1, "BTC": 50_000, "BTC-PERP": 49_000})
    account = result.accounts.row(0)
    assert account["equity"] == 14_000.0
    assert account["upnl"] == -1_000.0
    assert account["initial_requirement"] == 3_980.0
    assert account["maintenance_requirement"] == 2_745.0
    assert account["liquidation_requirement"] == 2_245.0
    assert account["status"] == "normal"
    position = result.positions.row(0)
    assert position["initial_margin"] == 980.0
    assert position["maintenance_margin"] == 245.0
    assert position["liquidation_price"] == pytest.approx(37_000 / 0.995, rel=1e-12)
    assert position["bankruptcy_price"] == 35_000.0
    assert position["adl_score"] == pytest.approx(-0.02 / 3.5, rel=1e-12)


def test_inverse_pnl_and_liquidation_hand_derived() -> None:
    """Inverse BTC-USD, 100 USD contracts (BitMEX-style): long 1 000 contracts at 50 000,
    mark 40 000 → uPnL = 100 000·(1/50 000 − 1/40 000) = −0.5 BTC; notional 2.5 BTC.
    Isolated 1 BTC at 1%: L = 100 000·(0.01 + 1)/(1 + 100 000/50 000) = 33 666.67."""
    assert vm.calc.unrealized_pnl(
        1_000, 50_000, 40_000, kind="inverse", contract_size=100
    ) == pytest.approx(-0.5, rel=1e-15)
    assert vm.calc.notional(1_000, 40_000, kind="inverse", contract_size=100) == 2.5
    price = vm.calc.liquidation_price(
        1_000, 50_000, 1.0, mmr=0.01, kind="inverse", contract_size=100
    )
    assert price == pytest.approx(101_000 / 3, rel=1e-12)
    # A short on the same terms liquidates above entry: 100 000·(0.01 − 1)/(1 − 2).
    short = vm.calc.liquidation_price(
        -1_000, 50_000, 1.0, mmr=0.01, kind="inverse", contract_size=100
    )
    assert short == pytest.approx(99_000.0, rel=1e-12)


def test_chosen_leverage_only_lowers_the_bracket_maximum() -> None:
    config = RiskConfig.hk_default()
    book = vm.Book(
        accounts={"account_id": [1], "investor_class": ["corporate_pi"]},
        holdings={"account_id": [1], "asset": ["USDT"], "amount": [1e6]},
        positions={
            "account_id": [1, 1],
            "instrument": ["BTC-USDT-PERP", "ETH-USDT-PERP"],
            "qty": [1_000.0, 100.0],  # 1 BTC = 100 000; 1 ETH = 4 000
            "entry_price": [100_000.0, 4_000.0],
            "leverage": [10.0, 100.0],  # 100x exceeds ETH's 40x bracket maximum
        },
    )
    prices = {"USDT": 1.0, "BTC-USDT-PERP": 100_000.0, "ETH-USDT-PERP": 4_000.0}
    result = vm.RiskEngine(config).revalue(book, prices)
    assert list(result.positions["initial_margin"]) == [10_000.0, 100.0]
