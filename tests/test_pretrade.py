"""Pre-trade checks (SPEC §1.2 "collect margin before accepting an order", §10
``check_order``; reasons and their order in ``vamargin/pretrade.py``).

Every figure is hand-derived in the docstrings on the shipped Hong Kong profile
(``RiskConfig.hk_default()``): BTC-USDT-PERP has 0.001 BTC contracts, brackets 0.5% / 50×
below 250 000 USDT and 1% / 25× from 250 000 (maintenance amount 1 250); BTC-USD-PERP has
100 USD contracts, 0.5% / 50× below 5 BTC; BTC collateral haircuts 60 / 50 / 40%.
"""

from __future__ import annotations

import math

import pytest

import vamargin as vm
from vamargin.config import AssetSpec, MarginTier, PerpetualSpec

ENGINE = vm.RiskEngine(vm.RiskConfig.hk_default())
PRICES = {
    "USD": 1.0, "USDT": 1.0, "HKD": 0.128, "BTC": 50_000.0, "ETH": 2_500.0,
    "BTC-USDT-PERP": 50_000.0, "ETH-USDT-PERP": 2_500.0, "BTC-USD-PERP": 50_000.0,
    "ETH-USD-PERP": 2_500.0,
}  # fmt: skip
BTC_PERP = "BTC-USDT-PERP"


def _book(affiliate: bool = False) -> vm.Book:
    """Accounts (all positions cross, entries at or near the marks):

    1. corporate PI: 10 000 USDT, long 1 000 BTC-USDT-PERP (1 BTC) @ 50 000 → equity
       10 000, IM 1 000, MM 250: normal;
    2. retail: 10 000 USDT, long 500 @ 50 000: normal;
    3. individual PI: 500 USDT, long 1 000 @ 50 000 → equity 500 < IM 1 000, ≥ MM 250:
       restricted;
    4. individual PI margin client: 1 BTC (50 000) against a 27 500 USD loan, long 1 000
       @ 50 000 → equity 22 500; maintenance 25 000 + 250 = 25 250, liquidation 20 000 +
       250 = 20 250: margin_call;
    5. as 4 with a 30 000 loan → equity 20 000 < 20 250: liquidation;
    6. individual PI margin client, 1 BTC against a 10 000 USD loan with a 5 000 credit
       limit → equity 40 000 ≥ initial 30 000, but over its credit limit: restricted;
    7. institutional PI: 1 BTC, long 100 BTC-USD-PERP @ 40 000 (10 000 USD face).
    """
    ids = [1, 2, 3, 4, 5, 6, 7]
    return vm.Book(
        accounts={
            "account_id": ids,
            "investor_class": ["corporate_pi", "retail", "individual_pi", "individual_pi",
                               "individual_pi", "individual_pi", "institutional_pi"],
            "margin_client": [False, False, False, True, True, True, False],
            "credit_approved": [False, False, False, True, True, True, False],
            "credit_limit": [math.inf] * 5 + [5_000.0, math.inf],
            "affiliate_market_maker": [affiliate] * 7,
        },
        holdings={
            "account_id": [1, 2, 3, 4, 4, 5, 5, 6, 6, 7],
            "asset": ["USDT", "USDT", "USDT", "BTC", "USD", "BTC", "USD", "BTC", "USD", "BTC"],
            "amount": [10_000.0, 10_000.0, 500.0, 1.0, -27_500.0, 1.0, -30_000.0, 1.0,
                       -10_000.0, 1.0],
        },
        positions={
            "account_id": [1, 2, 3, 4, 5, 7],
            "instrument": [BTC_PERP] * 5 + ["BTC-USD-PERP"],
            "qty": [1_000.0, 500.0, 1_000.0, 1_000.0, 1_000.0, 100.0],
            "entry_price": [50_000.0] * 5 + [40_000.0],
        },
    )  # fmt: skip


BOOK = _book()


def test_statuses_of_the_fixture_accounts() -> None:
    """The statuses the docstring of ``_book`` derives."""
    accounts = ENGINE.revalue(BOOK, PRICES).accounts
    assert accounts["status"].tolist() == [
        "normal", "normal", "restricted", "margin_call", "liquidation", "restricted", "normal",
    ]  # fmt: skip
    assert accounts["equity"].tolist()[:6] == [10_000.0, 10_000.0, 500.0, 22_500.0, 20_000.0,
                                               40_000.0]  # fmt: skip


# -- accepted orders ---------------------------------------------------------------------------


def test_ok_adds_with_arithmetic_average_entry() -> None:
    """Account 1 buys 1 000 more at 52 000 (linear: arithmetic average): entry
    (1 000 × 50 000 + 1 000 × 52 000) / 2 000 = 51 000; at the mark 50 000 the uPnL is
    2 × (50 000 − 51 000) = −2 000, equity 8 000; notional 100 000 in bracket 1: IM
    100 000 / 50 = 2 000, MM 500 → ok (excess 6 000)."""
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 1_000.0, 52_000.0)
    assert (decision.accepted, decision.reason) == (True, "ok")
    assert decision.status_before == "normal"
    assert (decision.qty_before, decision.qty_after) == (1_000.0, 2_000.0)
    assert decision.entry_after == 51_000.0
    assert decision.equity_after == 8_000.0
    assert decision.initial_requirement_after == pytest.approx(2_000.0, rel=1e-15)
    assert decision.maintenance_requirement_after == pytest.approx(500.0, rel=1e-15)
    assert (decision.tier_after, decision.max_leverage) == (1, 50.0)
    assert decision.excess_after == pytest.approx(6_000.0, rel=1e-15)


def test_ok_exactly_at_the_initial_requirement() -> None:
    """Account 1 buys 4 000 at 50 000: 5 BTC = 250 000, on bracket 2's floor (1%, 25×):
    IM 250 000 / 25 = 10 000 = equity → accepted (the check is equity < initial);
    MM = 2 500 − 1 250 = 1 250."""
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 4_000.0, 50_000.0)
    assert (decision.reason, decision.tier_after, decision.max_leverage) == ("ok", 2, 25.0)
    assert decision.equity_after == 10_000.0
    assert decision.initial_requirement_after == 10_000.0
    assert decision.maintenance_requirement_after == 1_250.0


def test_ok_flip_realises_the_closed_part() -> None:
    """Account 1 sells 3 000 at 51 000: closes its long 1 000 (realising 1 × (51 000 −
    50 000) = +1 000) and opens a short 2 000 @ 51 000, worth +2 000 at the mark 50 000:
    equity 13 000; IM 100 000 / 50 = 2 000 → ok; a flip is not a reducing order."""
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, -3_000.0, 51_000.0)
    assert decision.reason == "ok"
    assert (decision.qty_after, decision.entry_after) == (-2_000.0, 51_000.0)
    assert decision.equity_after == 13_000.0
    assert decision.initial_requirement_after == pytest.approx(2_000.0, rel=1e-15)


def test_ok_inverse_adds_with_harmonic_average_entry() -> None:
    """Account 7 (1 BTC collateral) buys 100 BTC-USD-PERP at 60 000 onto 100 @ 40 000
    (inverse: harmonic average): entry 200 / (100/40 000 + 100/60 000) = 48 000.
    At the mark 50 000: uPnL 20 000 USD × (1/48 000 − 1/50 000) = 1/60 BTC = 833.33 USD,
    equity 50 000 + 833.33 = 50 833.33. Initial: BTC 60% × 50 000 = 30 000, plus the
    perp's 0.4 BTC notional / 50 = 0.008 BTC = 400 → 30 400; maintenance 25 000 + 0.5% ×
    0.4 BTC (100 USD) = 25 100 → ok."""
    decision = ENGINE.check_order(BOOK, PRICES, 7, "BTC-USD-PERP", 100.0, 60_000.0)
    assert decision.reason == "ok"
    assert decision.qty_after == 200.0
    assert decision.entry_after == pytest.approx(48_000.0, rel=1e-14)
    assert decision.equity_after == pytest.approx(50_000 + 50_000 / 60, rel=1e-12)
    assert decision.initial_requirement_after == pytest.approx(30_400.0, rel=1e-12)
    assert decision.maintenance_requirement_after == pytest.approx(25_100.0, rel=1e-12)
    assert decision.tier_after == 1


def test_inverse_short_averages_harmonically_too() -> None:
    """Short side: account 7 sells 300 at 60 000 from long 100 @ 40 000 is a flip; a fresh
    short is averaged harmonically: sell 100 @ 40 000 then check selling 100 @ 60 000 on
    a book holding short 100 @ 40 000: entry −200 / (−100/40 000 − 100/60 000) = 48 000."""
    book = vm.Book(
        accounts={"account_id": [7], "investor_class": ["institutional_pi"]},
        holdings={"account_id": [7], "asset": ["BTC"], "amount": [1.0]},
        positions={"account_id": [7], "instrument": ["BTC-USD-PERP"], "qty": [-100.0],
                   "entry_price": [40_000.0]},
    )  # fmt: skip
    decision = ENGINE.check_order(book, PRICES, 7, "BTC-USD-PERP", -100.0, 60_000.0)
    assert decision.qty_after == -200.0
    assert decision.entry_after == pytest.approx(48_000.0, rel=1e-14)
    flip = ENGINE.check_order(BOOK, PRICES, 7, "BTC-USD-PERP", -300.0, 60_000.0)
    assert (flip.reason, flip.qty_after, flip.entry_after) == ("ok", -200.0, 60_000.0)


@pytest.mark.parametrize(
    ("account", "qty", "price", "status", "qty_after", "equity_after"),
    [
        # Corporate PI sells half at 51 000: realises +500, keeps the 50 000 entry.
        (1, -500.0, 51_000.0, "normal", 500.0, 10_500.0),
        # Retail on a professional-only contract: reducing is still allowed.
        (2, -100.0, 50_000.0, "normal", 400.0, 10_000.0),
        # Restricted, margin-call and liquidation accounts may always reduce.
        (3, -100.0, 50_000.0, "restricted", 900.0, 500.0),
        (4, -500.0, 50_000.0, "margin_call", 500.0, 22_500.0),
        (5, -1_000.0, 49_000.0, "liquidation", 0.0, 19_000.0),
    ],
)
def test_reducing_is_always_accepted(
    account: int, qty: float, price: float, status: str, qty_after: float,
    equity_after: float,
) -> None:  # fmt: skip
    """pretrade.py rule 1: an order that only reduces a position is accepted whatever the
    investor class or status. Account 5 closing all at 49 000 realises −1 000: equity
    19 000 (hand-derived per row)."""
    decision = ENGINE.check_order(BOOK, PRICES, account, BTC_PERP, qty, price)
    assert (decision.accepted, decision.reason) == (True, "reducing")
    assert decision.status_before == status
    assert decision.qty_after == qty_after
    assert decision.entry_after == 50_000.0
    assert decision.equity_after == equity_after


# -- rejected orders ---------------------------------------------------------------------------


def test_not_professional_investor() -> None:
    """SFC: perpetuals for professional investors only. Retail account 2 (normal, ample
    margin) may not add to its professional-only position."""
    decision = ENGINE.check_order(BOOK, PRICES, 2, BTC_PERP, 100.0, 50_000.0)
    assert (decision.accepted, decision.reason) == (False, "not_professional_investor")
    assert "professional investors only" in decision.message


def test_retail_may_trade_a_contract_not_reserved_for_professionals() -> None:
    """A contract with ``professional_only = false`` goes on to the margin checks: retail
    with 1 000 USDT buying 1 BTC at 50 000 (1× bracket: IM 50 000 / 50 = 1 000) → ok."""
    config = vm.RiskConfig(
        assets=(AssetSpec("USDT", "stablecoin", 1e-6, eligible=True), AssetSpec("BTC", "va", 1e-8)),
        perpetuals=(
            PerpetualSpec(
                "OPEN",
                "linear",
                "BTC",
                "USDT",
                1.0,
                (MarginTier(0, 0.005, 50),),
                professional_only=False,
            ),
        ),
        reporting_currency="USDT",
    )
    book = vm.Book(
        accounts={"account_id": [2], "investor_class": ["retail"]},
        holdings={"account_id": [2], "asset": ["USDT"], "amount": [1_000.0]},
    )
    decision = vm.RiskEngine(config).check_order(book, {"USDT": 1.0, "OPEN": 50_000.0}, 2,
                                                 "OPEN", 1.0, 50_000.0)  # fmt: skip
    assert decision.reason == "ok"
    assert decision.initial_requirement_after == 1_000.0


@pytest.mark.parametrize(
    ("account", "reason"),
    [
        (3, "account_restricted"),  # below its initial requirement
        (6, "account_restricted"),  # over its credit limit (SFC: no further advances)
        (4, "account_margin_call"),
        (5, "account_liquidation"),
    ],
)
def test_no_new_risk_below_initial_or_under_a_call(account: int, reason: str) -> None:
    """pretrade.py rule 3 (SFC: no further advances while a call is outstanding): an
    order adding risk is rejected for a restricted, margin-call or liquidation account,
    however small it is."""
    decision = ENGINE.check_order(BOOK, PRICES, account, BTC_PERP, 1.0, 50_000.0)
    assert (decision.accepted, decision.reason) == (False, reason)
    assert decision.status_before == reason.removeprefix("account_")


def test_professional_check_comes_before_status() -> None:
    """Order of the checks: a retail account that is also restricted is told it is not a
    professional investor (retail: 500 USDT, long 1 000 @ 50 000 → MM 250 ≤ equity 500 <
    IM 1 000)."""
    book = vm.Book(
        accounts={"account_id": [2], "investor_class": ["retail"]},
        holdings={"account_id": [2], "asset": ["USDT"], "amount": [500.0]},
        positions={"account_id": [2], "instrument": [BTC_PERP], "qty": [1_000.0],
                   "entry_price": [50_000.0]},
    )  # fmt: skip
    decision = ENGINE.check_order(book, PRICES, 2, BTC_PERP, 1.0, 50_000.0)
    assert (decision.status_before, decision.reason) == ("restricted", "not_professional_investor")


def test_leverage_above_the_bracket_maximum() -> None:
    """Account 1: buying 100 at 50 000 with leverage 60 lands in bracket 1 (max 50×) →
    rejected. Buying 4 000 with leverage 30 lands in bracket 2 (5 BTC = 250 000, max 25×)
    → rejected although 30× is allowed in bracket 1. With leverage 20 it is allowed, but
    IM 250 000 / 20 = 12 500 > equity 10 000 → insufficient_margin."""
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 100.0, 50_000.0, leverage=60)
    assert (decision.reason, decision.tier_after, decision.max_leverage) == (
        "leverage_above_tier_maximum", 1, 50.0,
    )  # fmt: skip
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 4_000.0, 50_000.0, leverage=30)
    assert (decision.reason, decision.tier_after, decision.max_leverage) == (
        "leverage_above_tier_maximum", 2, 25.0,
    )  # fmt: skip
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 4_000.0, 50_000.0, leverage=20)
    assert decision.reason == "insufficient_margin"
    assert decision.initial_requirement_after == 12_500.0
    # A chosen leverage at or below the bracket's maximum sets the IM: 100 000 / 10.
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 1_000.0, 50_000.0, leverage=10)
    assert (decision.reason, decision.initial_requirement_after) == ("ok", 10_000.0)


def test_insufficient_margin() -> None:
    """Account 1 buys 5 000 at 50 000: 6 BTC = 300 000 in bracket 2 (1%, 25×): IM
    300 000 / 25 = 12 000 > equity 10 000 → rejected; MM 3 000 − 1 250 = 1 750.
    Account 7 (1 BTC, equity ≈ 50 000) buys 100 000 BTC-USD-PERP (10M USD): 100 100
    contracts = 200.2 BTC at 50 000, bracket 4 (100–500 BTC, 10×): IM 20.02 BTC =
    1 001 000 USD, plus 30 000 for the BTC collateral."""
    decision = ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 5_000.0, 50_000.0)
    assert (decision.accepted, decision.reason) == (False, "insufficient_margin")
    assert decision.equity_after == 10_000.0
    assert decision.initial_requirement_after == 12_000.0
    assert decision.maintenance_requirement_after == 1_750.0
    assert (decision.tier_after, decision.max_leverage) == (2, 25.0)
    assert decision.excess_after == -2_000.0
    assert "12,000.00" in decision.message
    decision = ENGINE.check_order(BOOK, PRICES, 7, "BTC-USD-PERP", 100_000.0, 50_000.0)
    assert decision.reason == "insufficient_margin"
    assert decision.tier_after == 4
    assert decision.initial_requirement_after == pytest.approx(1_031_000.0, rel=1e-12)


# -- API -----------------------------------------------------------------------------------


def test_unknown_account_or_instrument_is_a_data_error() -> None:
    with pytest.raises(vm.DataError, match="unknown account 999"):
        ENGINE.check_order(BOOK, PRICES, 999, BTC_PERP, 1.0, 50_000.0)
    with pytest.raises(vm.DataError, match="unknown instrument 'DOGE-PERP'"):
        ENGINE.check_order(BOOK, PRICES, 1, "DOGE-PERP", 1.0, 50_000.0)
    with pytest.raises(vm.DataError, match=r"order\.qty"):
        ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 0.0, 50_000.0)
    with pytest.raises(vm.DataError, match=r"order\.price"):
        ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 1.0, -1.0)
    with pytest.raises(vm.DataError, match=r"order\.leverage"):
        ENGINE.check_order(BOOK, PRICES, 1, BTC_PERP, 1.0, 50_000.0, leverage=0.5)
    assert issubclass(vm.DataError, ValueError)


def test_affiliate_flag_is_not_read() -> None:
    """SPEC §1.3: flagging every account as an affiliated market maker changes no
    decision and no figure."""
    flagged = _book(affiliate=True)
    orders = [(1, BTC_PERP, 1_000.0, 52_000.0), (1, BTC_PERP, 5_000.0, 50_000.0),
              (3, BTC_PERP, 1.0, 50_000.0), (4, BTC_PERP, -500.0, 50_000.0),
              (7, "BTC-USD-PERP", 100.0, 60_000.0)]  # fmt: skip
    for order in orders:
        assert ENGINE.check_order(flagged, PRICES, *order) == ENGINE.check_order(
            BOOK, PRICES, *order
        )


def test_checker_agrees_with_check_order() -> None:
    """``engine.pretrade(book, prices).check(...)`` (validate once, then microseconds per
    order) gives the same decisions as ``check_order``."""
    checker = ENGINE.pretrade(BOOK, PRICES)
    for account in (1, 2, 3, 4, 5, 6):
        for qty in (1.0, -1.0, 5_000.0):
            assert checker.check(account, BTC_PERP, qty, 50_000.0) == ENGINE.check_order(
                BOOK, PRICES, account, BTC_PERP, qty, 50_000.0
            )
