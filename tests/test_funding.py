"""Funding (SPEC §2, §5): the rate formula, settlement in integer minor units rounded
against the account, the house and dust postings, index-based settlement, and the
zero-sum ledger.

Every number below is either a published exchange example (source in the docstring) or
derived by hand in the docstring; the exact expected values were re-checked with
``fractions.Fraction`` before being written down. Conventions (``rust/vamargin-core/src/
funding.rs``, ``money.rs``): a payment is credited to the account and floored, so a payer
pays the ceiling and a receiver gets the floor; ``house`` is the platform's funding on the
opposite of the net open interest, floored against the house; ``dust = −(Σ payments +
house) ≥ 0``.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import vamargin as vm
from pooled import bound_in_empty_pool
from vamargin import _core
from vamargin.config import AssetSpec, MarginTier, PerpetualSpec
from vamargin.funding import house_postings
from vamargin.synthetic import synthetic_book

FLAT = (MarginTier(0, 0.005, 100),)


def _config() -> vm.RiskConfig:
    """USDT (1e-6), BTC (1e-8), a cents asset USD (0.01) and an 8-decimal stablecoin
    USDT8 for CoinEx's 8-decimal example; linear and inverse contracts of several sizes."""
    return vm.RiskConfig(
        assets=(
            AssetSpec("USDT", "stablecoin", 1e-6, eligible=True),
            AssetSpec("BTC", "va", 1e-8),
            AssetSpec("ETH", "va", 1e-8),
            AssetSpec("USD", "cash", 0.01),
            AssetSpec("USDT8", "stablecoin", 1e-8),
        ),
        perpetuals=(
            PerpetualSpec("BTCUSDT", "linear", "BTC", "USDT", 0.001, FLAT),  # 0.001 BTC
            PerpetualSpec("BTCUSDT1", "linear", "BTC", "USDT", 1.0, FLAT),  # Binance: 1 BTC
            PerpetualSpec("ETHUSD", "linear", "ETH", "USD", 0.01, FLAT),  # cents
            PerpetualSpec("XBTUSD", "inverse", "BTC", "BTC", 1.0, FLAT),  # BitMEX: 1 USD
            PerpetualSpec("BTCUSD", "inverse", "BTC", "BTC", 100.0, FLAT),  # 100 USD
            PerpetualSpec("ETHUSD_INV", "inverse", "ETH", "ETH", 10.0, FLAT),
            PerpetualSpec("CETUSDT", "linear", "USDT8", "USDT8", 1.0, FLAT),
        ),
        reporting_currency="USD",
    )


CONFIG = _config()
ENGINE = vm.RiskEngine(CONFIG)
SETTLE_DECIMALS = {
    p.symbol: CONFIG.asset(p.settle).minor_decimals for p in CONFIG.perpetuals
}  # fmt: skip


def _book(
    rows: list[tuple[int, str, float]], *, funding_index: list[float] | None = None
) -> vm.Book:
    """A book of ``(account_id, instrument, qty)`` rows; entry prices do not matter to
    funding."""
    ids = sorted({a for a, _, _ in rows})
    positions: dict[str, Any] = {
        "account_id": [a for a, _, _ in rows],
        "instrument": [i for _, i, _ in rows],
        "qty": [q for _, _, q in rows],
        "entry_price": [1.0] * len(rows),
    }
    if funding_index is not None:
        positions["funding_index"] = funding_index
    return vm.Book(
        accounts={"account_id": ids, "investor_class": ["corporate_pi"] * len(ids)},
        positions=positions,
    )


def _assert_balanced(settlement: Any) -> None:
    """Σ payments + dust + house = 0 per instrument, dust ≥ 0, and the ledger sums to 0
    per asset (and per instrument through by_instrument)."""
    table = settlement.by_instrument
    for row in range(len(table)):
        entry = table.row(row)
        assert entry["received"] + entry["paid"] + entry["house"] + entry["dust"] == 0
        assert entry["dust"] >= 0
        assert entry["received"] >= 0 >= entry["paid"]
    ledger = settlement.ledger()
    for asset in set(ledger["asset"]):
        assert int(ledger["amount"][ledger["asset"] == asset].sum()) == 0


# -- 1. the rate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("premiums", "expected"),
    [
        # |I − P| ≤ 0.05%: the rate is the interest rate itself.
        ([0.0002], Fraction("0.0001")),
        ([0.0], Fraction("0.0001")),
        ([-0.0003], Fraction("0.0001")),
        # P = 0.07%: I − P = −0.06% clamps to −0.05% → 0.07% − 0.05% = 0.02%.
        ([0.0007], Fraction("0.0002")),
        # P = 0.10%: → 0.10% − 0.05% = 0.05%.
        ([0.0010], Fraction("0.0005")),
        # P = −0.20%: I − P = 0.21% clamps to +0.05% → −0.15%.
        ([-0.0020], Fraction("-0.0015")),
        # Mean of the interval's samples: (0.01% + 0.03% + 0.08%) / 3 = 0.04% → 0.01%.
        ([0.0001, 0.0003, 0.0008], Fraction("0.0001")),
        # Mean (0.10% + 0.14%) / 2 = 0.12% → 0.12% − 0.05% = 0.07%.
        ([0.0010, 0.0014], Fraction("0.0007")),
    ],
)
def test_funding_rate_binance_formula(premiums: list[float], expected: Fraction) -> None:
    """Binance / Gate.io / Bitget published formula (gate.io/futures/introduction/
    funding-rate-history; web3.bitget.com/en/academy/funding-cost-calculation):
    F = P + clamp(I − P, −0.05%, +0.05%), interest I = 0.01% per 8 h interval
    (Binance: "0.03% daily, 0.01% per funding interval"). Cases hand-derived."""
    rate = vm.calc.funding_rate(premiums, interest_rate=0.0001, clamp=0.0005)
    assert rate == pytest.approx(float(expected), abs=1e-15)


def test_funding_rate_cap_and_no_samples() -> None:
    """SPEC §5: the clamped rate is then limited to ±cap (hk_default cap 3%): P = 50%
    gives 49.95% before the cap, 3% after; P = −50% gives −3%. No samples: p̄ = 0, so
    the rate is the interest rate."""
    assert vm.calc.funding_rate([0.5], cap=0.03) == 0.03
    assert vm.calc.funding_rate([-0.5], cap=0.03) == -0.03
    assert vm.calc.funding_rate([0.5]) == pytest.approx(0.4995, abs=1e-15)
    assert vm.calc.funding_rate([]) == pytest.approx(0.0001, abs=1e-18)
    # Zero clamp: the rate is the premium itself.
    assert vm.calc.funding_rate([0.0123], clamp=0.0) == pytest.approx(0.0123, abs=1e-18)


@pytest.mark.parametrize(
    ("bid", "ask", "index", "expected"),
    [
        (101.0, 102.0, 100.0, 0.01),  # impact bid 1% above the index
        (98.0, 99.0, 100.0, -0.01),  # impact ask 1% below
        (99.0, 101.0, 100.0, 0.0),  # index inside the spread
        (50_025.0, 50_040.0, 50_000.0, 0.0005),  # 25 / 50 000
    ],
)
def test_premium_index_sample(bid: float, ask: float, index: float, expected: float) -> None:
    """Premium Index = [max(0, Impact Bid − Index) − max(0, Index − Impact Ask)] / Index
    (Gate.io's published formula, SPEC §5); cases hand-derived."""
    assert vm.calc.premium(bid, ask, index) == pytest.approx(expected, abs=1e-15)


# -- 2. published fee examples ------------------------------------------------------------


def test_binance_style_fee_is_position_value_times_rate() -> None:
    """Binance ("Funding Amount = Nominal Value of Positions × Funding Rate",
    docs.traderwagon.com/faq/futures-trading-introduction/funding-fee) and Bybit
    ("Funding fee = Position value × Funding rate"): a 20 000 USD position at 0.01% pays
    2 USD per interval, 6 USD over a day's three intervals (worked example at
    askai.glarity.app "How is the funding rate calculated on Binance").
    Here 0.4 BTC (BTCUSDT1, 1 BTC contracts) at mark 50 000 = 20 000 USDT:
    2 USDT = 2 000 000 µUSDT per interval, long pays, short receives."""
    book = _book([(1, "BTCUSDT1", 0.4), (2, "BTCUSDT1", -0.4)])
    day = np.zeros(2, dtype=np.int64)
    for _ in range(3):
        settlement = ENGINE.funding(book, {"BTCUSDT1": 0.0001}, {"BTCUSDT1": 50_000.0})
        assert settlement.payments.tolist() == [-2_000_000, 2_000_000]
        assert settlement.house == {"BTCUSDT1": 0}
        assert settlement.dust == {"BTCUSDT1": 0}
        day += settlement.payments
    assert day.tolist() == [-6_000_000, 6_000_000]  # 6 USDT a day


def test_coinex_published_funding_value_is_the_receivers_floor() -> None:
    """CoinEx API v2 docs (docs.coinex.com/api/v2/futures/position/http/
    list-position-funding-history), example response: long CETUSDT open_interest
    129 384.12 at settle_price 0.0642 with funding_rate 0.0003 → funding_value
    2.49193815. Exactly: 129 384.12 × 0.0642 × 0.0003 = 2.4919381512 USDT. In 1e-8 units
    the long pays the ceiling 249 193 816, the short receives the floor 249 193 815 (the
    published 8-decimal figure); the 0.88 + 0.12 fractions given up are 1 unit of dust."""
    exact = Fraction("129384.12") * Fraction("0.0642") * Fraction("0.0003")
    assert exact == Fraction("2.4919381512")
    book = _book([(1, "CETUSDT", 129_384.12), (2, "CETUSDT", -129_384.12)])
    settlement = ENGINE.funding(book, {"CETUSDT": 0.0003}, {"CETUSDT": 0.0642})
    assert settlement.payments.tolist() == [-249_193_816, 249_193_815]
    assert settlement.house == {"CETUSDT": 0}
    assert settlement.dust == {"CETUSDT": 1}
    _assert_balanced(settlement)


def test_bitmex_inverse_funding_in_xbt() -> None:
    """BitMEX Perpetual Contracts Guide Examples (bitmex.com/app/
    perpetualContractsGuideExamples): long 15 000 XBTUSD (1 USD each) at 750 USD, funding
    rate (1.00% − 0.25%) / 3 = 0.25%: "Funding Amount = Mark Value × Funding Rate = 20 XBT
    × 0.25% = 0.05 XBT", paid by the long to the short. In satoshis: 5 000 000. The same
    page's PnL on closing at 800: 15 000 × 1 × (1/750 − 1/800) = 1.25 XBT."""
    assert (Fraction("0.01") - Fraction("0.0025")) / 3 == Fraction("0.0025")
    book = _book([(1, "XBTUSD", 15_000.0), (2, "XBTUSD", -15_000.0)])
    settlement = ENGINE.funding(book, {"XBTUSD": 0.0025}, {"XBTUSD": 750.0})
    assert settlement.payments.tolist() == [-5_000_000, 5_000_000]
    assert (settlement.house, settlement.dust) == ({"XBTUSD": 0}, {"XBTUSD": 0})
    pnl = vm.calc.unrealized_pnl(15_000, 750.0, 800.0, kind="inverse", contract_size=1.0)
    assert pnl == pytest.approx(1.25, rel=1e-14)
    # Value of the position at the mark (Bitget: "face value × contracts / mark").
    assert vm.calc.notional(15_000, 750.0, kind="inverse", contract_size=1.0) == 20.0


def test_inverse_funding_rounds_a_division_against_each_side() -> None:
    """Hand-derived: BTCUSD (100 USD contracts), mark 30 000, rate 0.01%: one contract
    moves 100 × 0.0001 / 30 000 BTC = 33.33… sat. Long 10 pays ⌈333.33⌉ = 334, short 7
    receives ⌊233.33⌋ = 233, short 3 receives ⌊100⌋ = 100; balanced book, so house 0 and
    dust 334 − 333 = 1."""
    book = _book([(1, "BTCUSD", 10.0), (2, "BTCUSD", -7.0), (3, "BTCUSD", -3.0)])
    settlement = ENGINE.funding(book, {"BTCUSD": 0.0001}, {"BTCUSD": 30_000.0})
    assert settlement.payments.tolist() == [-334, 233, 100]
    assert (settlement.house, settlement.dust) == ({"BTCUSD": 0}, {"BTCUSD": 1})
    _assert_balanced(settlement)


# -- 3. hand-derived rounding, house and dust ------------------------------------------------


def test_negative_rate_shorts_pay_ceiling_longs_receive_floor_house_takes_net() -> None:
    """Hand-derived. BTCUSDT (0.001 BTC contracts), mark 64 321.7, rate −0.0137%: one
    contract moves 0.001 × 64 321.7 × 0.000137 = 0.0088120729 USDT = 8 812.0729 µUSDT,
    from shorts to longs.

    - long 2.5 receives ⌊22 030.18225⌋ = 22 030;
    - short 4 pays ⌈35 248.2916⌉ = 35 249;
    - short 1.25 pays ⌈11 015.091125⌉ = 11 016.

    Net open interest 2.5 − 5.25 = −2.75: the house stands long 2.75 and receives
    ⌊24 233.200475⌋ = 24 233. Σ payments = −24 235, so dust = 24 235 − 24 233 = 2."""
    unit = Fraction("0.001") * Fraction("64321.7") * Fraction("0.000137") * 10**6
    assert unit == Fraction("8812.0729")
    assert [math.floor(q * unit) for q in (Fraction("2.5"), -4, Fraction("-1.25"))] == [
        22_030, -35_249, -11_016,
    ]  # fmt: skip
    assert math.floor(Fraction("2.75") * unit) == 24_233
    book = _book([(1, "BTCUSDT", 2.5), (2, "BTCUSDT", -4.0), (3, "BTCUSDT", -1.25)])
    settlement = ENGINE.funding(book, {"BTCUSDT": -0.000137}, {"BTCUSDT": 64_321.7})
    assert settlement.payments.tolist() == [22_030, -35_249, -11_016]
    assert settlement.house == {"BTCUSDT": 24_233}
    assert settlement.dust == {"BTCUSDT": 2}
    entry = settlement.by_instrument.row(0)
    assert entry == {
        "instrument": "BTCUSDT", "settle": "USDT", "minor_unit": 1e-6, "received": 22_030,
        "paid": -46_265, "house": 24_233, "dust": 2,
    }  # fmt: skip
    _assert_balanced(settlement)


def test_positive_rate_net_long_house_pays_and_rounding_goes_against_it() -> None:
    """Hand-derived. ETHUSD (0.01 ETH contracts, settled in USD cents), mark 3 333.33,
    rate 0.0123%: one contract moves 0.01 × 3 333.33 × 0.000123 × 100 = 0.409999590 ¢.

    - long 7 pays ⌈2.86999713⌉ = 3 ¢; long 5 pays ⌈2.0499979⌉ = 3 ¢;
    - short 2 receives ⌊0.81999918⌋ = 0 ¢.

    Net open interest +10: the house stands short 10 and *receives* ⌊4.0999959⌋ = 4 ¢
    (the longs' excess over the shorts is paid to the house, not manufactured).
    Σ payments = −6 ¢, so dust = 6 − 4 = 2 ¢."""
    unit = Fraction("0.01") * Fraction("3333.33") * Fraction("0.000123") * 100
    assert unit == Fraction("0.40999959")
    book = _book([(1, "ETHUSD", 7.0), (2, "ETHUSD", 5.0), (3, "ETHUSD", -2.0)])
    settlement = ENGINE.funding(book, {"ETHUSD": 0.000123}, {"ETHUSD": 3_333.33})
    assert settlement.payments.tolist() == [-3, -3, 0]
    assert settlement.house == {"ETHUSD": 4}
    assert settlement.dust == {"ETHUSD": 2}
    # A zero payment is not listed among the account sums.
    assert sorted(settlement.by_account["account_id"].tolist()) == [1, 2]
    _assert_balanced(settlement)


def test_net_short_book_house_pays_the_net_longs_funding() -> None:
    """Hand-derived. BTCUSDT1 (1 BTC contracts) mark 40 000, rate 0.01%: 4 USDT per BTC.
    Long 1 pays 4 000 000 µ, short 3 receives 12 000 000 µ: the house stands long 2 and
    pays 8 000 000 µ (house = −8 000 000), dust 0."""
    book = _book([(1, "BTCUSDT1", 1.0), (2, "BTCUSDT1", -3.0)])
    settlement = ENGINE.funding(book, {"BTCUSDT1": 0.0001}, {"BTCUSDT1": 40_000.0})
    assert settlement.payments.tolist() == [-4_000_000, 12_000_000]
    assert settlement.house == {"BTCUSDT1": -8_000_000}
    assert settlement.dust == {"BTCUSDT1": 0}
    _assert_balanced(settlement)


def test_ledger_sums_to_zero_per_asset_across_instruments() -> None:
    """One settlement across USDT, BTC and cents-settled contracts, accounts holding
    several: by_account is the sum of each account's rows per settle asset (hand-summed
    from the per-row payments), and the ledger (accounts + house + dust per instrument)
    sums to 0 in every asset."""
    rows = [
        (1, "BTCUSDT", 2.5), (1, "BTCUSDT1", 1.0), (1, "XBTUSD", 15_000.0),
        (2, "BTCUSDT", -4.0), (2, "BTCUSDT1", -3.0), (2, "BTCUSD", 10.0),
        (3, "BTCUSDT", -1.25), (3, "XBTUSD", -15_000.0), (3, "BTCUSD", -7.0),
        (4, "ETHUSD", 7.0), (4, "BTCUSDT", 0.0),
    ]  # fmt: skip
    rates = {"BTCUSDT": -0.000137, "BTCUSDT1": 0.0001, "XBTUSD": 0.0025, "BTCUSD": 0.0001,
             "ETHUSD": 0.000123}  # fmt: skip
    marks = {"BTCUSDT": 64_321.7, "BTCUSDT1": 40_000.0, "XBTUSD": 750.0, "BTCUSD": 30_000.0,
             "ETHUSD": 3_333.33}  # fmt: skip
    settlement = ENGINE.funding(_book(rows), rates, marks)
    assert settlement.payments.tolist() == [
        22_030, -4_000_000, -5_000_000, -35_249, 12_000_000, -334, -11_016, 5_000_000,
        233, -3, 0,
    ]  # fmt: skip
    by_account = {
        (int(a), str(s)): int(v)
        for a, s, v in zip(
            settlement.by_account["account_id"],
            settlement.by_account["asset"],
            settlement.by_account["amount"],
            strict=True,
        )
    }
    assert by_account == {
        (1, "USDT"): 22_030 - 4_000_000, (1, "BTC"): -5_000_000,
        (2, "USDT"): -35_249 + 12_000_000, (2, "BTC"): -334,
        (3, "USDT"): -11_016, (3, "BTC"): 5_000_000 + 233,
        (4, "USD"): -3,
    }  # fmt: skip
    # Only instruments with open positions are listed; the zero-qty row moves nothing.
    assert set(settlement.dust) == {"BTCUSDT", "BTCUSDT1", "XBTUSD", "BTCUSD", "ETHUSD"}
    assert settlement.house == {"BTCUSDT": 24_233, "BTCUSDT1": -8_000_000, "XBTUSD": 0,
                                "BTCUSD": 100, "ETHUSD": 2}  # fmt: skip
    # BTCUSD: long 10 pays 334, short 7 receives 233, the house (short 3) receives
    # ⌊3 × 33.33…⌋ = 100: dust 1. ETHUSD: long 7 alone pays ⌈2.86999713⌉ = 3 ¢, the
    # house (short 7) receives ⌊2.86999713⌋ = 2 ¢: dust 1.
    assert settlement.dust == {"BTCUSDT": 2, "BTCUSDT1": 0, "XBTUSD": 0, "BTCUSD": 1,
                               "ETHUSD": 1}  # fmt: skip
    _assert_balanced(settlement)
    ledger = settlement.ledger()
    assert len(ledger) == len(settlement.by_account) + 2 * 5
    assert set(ledger["account"]) >= {"platform:funding-house", "platform:funding-dust"}


# -- 4. the cumulative index ----------------------------------------------------------------

# Three intervals, each settling to whole minor units (no rounding anywhere):
# linear BTCUSDT index (quote per base) advances by P·F: 5, 13, −14.4;
# inverse BTCUSD index (coin per quote) advances by F/P: 2e-9, 5e-9, −2e-8.
INTERVALS = [
    ({"BTCUSDT": 0.0001, "BTCUSD": 0.0001}, {"BTCUSDT": 50_000.0, "BTCUSD": 50_000.0}),
    ({"BTCUSDT": 0.00025, "BTCUSD": 0.0002}, {"BTCUSDT": 52_000.0, "BTCUSD": 40_000.0}),
    ({"BTCUSDT": -0.0003, "BTCUSD": -0.0005}, {"BTCUSDT": 48_000.0, "BTCUSD": 25_000.0}),
]


def _index_path() -> dict[str, list[float]]:
    path = {"BTCUSDT": [0.0], "BTCUSD": [0.0]}
    for rates, marks in INTERVALS:
        for symbol, kind in (("BTCUSDT", "linear"), ("BTCUSD", "inverse")):
            path[symbol].append(
                vm.calc.advance_funding_index(
                    path[symbol][-1], marks[symbol], rates[symbol], kind=kind
                )
            )
    return path


def test_advance_funding_index_linear_and_inverse() -> None:
    """SPEC §5 `I ← I + P·F` (linear, quote per base) and, per the engine docstring,
    `I ← I + F/P` for inverse (coin per quote). Hand-derived path: linear 0 → 5 → 18 →
    3.6; inverse 0 → 2e-9 → 7e-9 → −1.3e-8."""
    path = _index_path()
    assert path["BTCUSDT"] == pytest.approx([0.0, 5.0, 18.0, 3.6], abs=1e-12)
    assert path["BTCUSD"] == pytest.approx([0.0, 2e-9, 7e-9, -1.3e-8], abs=1e-24)


def test_index_settlement_equals_the_sum_of_interval_settlements() -> None:
    """Hand-derived, no rounding anywhere: positions settled lazily against the index
    pay exactly the sum of their per-interval payments.

    BTCUSDT (0.001 BTC): 10 contracts = 0.01 BTC pay 0.01 × 5 = 0.05, 0.13, then receive
    0.144 USDT: −50 000 − 130 000 + 144 000 = −36 000 µ = −0.01 × 3.6 (the index move).
    BTCUSD (100 USD): 10 contracts = 1 000 USD pay 200, 500 sat, then receive 2 000 sat:
    +1 300 = −1 000 × (−1.3e-8) BTC. Positions opened after the first interval carry
    ``funding_index = I₁`` and pay only the last two intervals."""
    path = _index_path()
    rows = [
        (1, "BTCUSDT", 10.0), (2, "BTCUSDT", -7.0), (3, "BTCUSDT", -3.0),
        (1, "BTCUSD", 10.0), (2, "BTCUSD", -4.0), (3, "BTCUSD", -6.0),
    ]  # fmt: skip
    interval_total = np.zeros(len(rows), dtype=np.int64)
    for rates, marks in INTERVALS:
        interval_total += ENGINE.funding(_book(rows), rates, marks).payments
    assert interval_total.tolist() == [-36_000, 25_200, 10_800, 1_300, -520, -780]
    now = {"BTCUSDT": path["BTCUSDT"][-1], "BTCUSD": path["BTCUSD"][-1]}
    lazy = ENGINE.funding(_book(rows, funding_index=[0.0] * len(rows)), index=now)
    assert lazy.payments.tolist() == interval_total.tolist()
    assert lazy.house == {"BTCUSDT": 0, "BTCUSD": 0}
    assert lazy.dust == {"BTCUSDT": 0, "BTCUSD": 0}

    # Late joiners: a second set of accounts whose positions opened after interval 1,
    # and a net open interest so the house posts too.
    late_rows = [*rows, (4, "BTCUSDT", 5.0), (4, "BTCUSD", -20.0)]
    start = [0.0] * len(rows) + [path["BTCUSDT"][1], path["BTCUSD"][1]]
    lazy = ENGINE.funding(_book(late_rows, funding_index=start), index=now)
    # 5 contracts = 0.005 BTC: −0.005 × (3.6 − 5) = +0.007 USDT = 7 000 µ;
    # 20 contracts = 2 000 USD short: +2 000 × (−1.3e-8 − 2e-9) = −3e-5 BTC = −3 000 sat.
    assert lazy.payments.tolist()[-2:] == [7_000, -3_000]
    later = np.zeros(2, dtype=np.int64)
    late_only = [(4, "BTCUSDT", 5.0), (4, "BTCUSD", -20.0)]
    for rates, marks in INTERVALS[1:]:
        later += ENGINE.funding(_book(late_only), rates, marks).payments
    assert later.tolist() == [7_000, -3_000]
    # The house holds the opposite of the net index-weighted open interest.
    assert lazy.house == {"BTCUSDT": -7_000, "BTCUSD": 3_000}
    assert lazy.dust == {"BTCUSDT": 0, "BTCUSD": 0}
    _assert_balanced(lazy)


def test_index_settlement_rounds_against_the_account() -> None:
    """Hand-derived: BTCUSDT (0.001 BTC) index moved 9.64505 since the last settlement
    (= 96 450.5 × 0.01%): long 1 owes 0.00964505 USDT = 9 645.05 µ → pays 9 646; short 1
    receives 9 645; balanced, house 0, dust 1."""
    book = _book([(1, "BTCUSDT", 1.0), (2, "BTCUSDT", -1.0)], funding_index=[1.0, 1.0])
    settlement = ENGINE.funding(book, index={"BTCUSDT": 10.64505})
    assert settlement.payments.tolist() == [-9_646, 9_645]
    assert (settlement.house, settlement.dust) == ({"BTCUSDT": 0}, {"BTCUSDT": 1})


def test_index_values_are_read_as_the_decimals_written() -> None:
    """A long of 1 BTC (BTCUSDT1) whose index moved from 0 to 8 272.267459 owes exactly
    8 272.267459 USDT = 8 272 267 459 µ (an integer: no rounding is due); the short
    receives the same. Likewise 71 872.243454 (read as …453999992: the short would get
    1 µ less) and inverse 0.517400876 BTC per USD on 1 USD (51 740 087.6 sat: pay
    51 740 088, receive 51 740 087)."""
    for index, owed in (("8272.267459", 8_272_267_459), ("71872.243454", 71_872_243_454)):
        book = _book([(1, "BTCUSDT1", 1.0), (2, "BTCUSDT1", -1.0)], funding_index=[0.0, 0.0])
        settlement = ENGINE.funding(book, index={"BTCUSDT1": float(index)})
        assert Fraction(index) * 10**6 == owed
        assert settlement.payments.tolist() == [-owed, owed]
        assert settlement.dust == {"BTCUSDT1": 0}


def test_index_settlement_needs_the_funding_index_column() -> None:
    with pytest.raises(vm.DataError, match="funding_index"):
        ENGINE.funding(_book([(1, "BTCUSDT", 1.0)]), index={"BTCUSDT": 1.0})
    with pytest.raises(vm.DataError, match="missing 'BTCUSDT'"):
        ENGINE.funding(_book([(1, "BTCUSDT", 1.0)]), {"XBTUSD": 0.0001}, {"BTCUSDT": 1.0})


# -- 5. overflow is an error, never a wrap --------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "rates", "marks", "message"),
    [
        # 1e9 BTC × 1e9 × 3% × 1e6 = 3e22 µ: one payment beyond i64.
        ([(1, "BTCUSDT1", 1e9), (2, "BTCUSDT1", -1e9)], {"BTCUSDT1": 0.03},
         {"BTCUSDT1": 1e9}, "amount in minor units overflows"),
        # 1e12 contracts is 1e21 units of 1e-9 contract: the quantity cannot be read.
        ([(1, "BTCUSDT1", 1e12), (2, "BTCUSDT1", -1e12)], {"BTCUSDT1": 0.03},
         {"BTCUSDT1": 1e6}, "quantity overflows"),
        # Two receivers of 5e18 µ each: the instrument's total received overflows.
        ([(1, "BTCUSDT1", -5e9), (2, "BTCUSDT1", -5e9), (3, "BTCUSDT1", 5e9),
          (4, "BTCUSDT1", 5e9)], {"BTCUSDT1": 0.01}, {"BTCUSDT1": 1e5},
         "funding received overflows"),
    ],
)  # fmt: skip
def test_int64_overflow_raises_a_data_error(
    rows: list[tuple[int, str, float]],
    rates: dict[str, float],
    marks: dict[str, float],
    message: str,
) -> None:
    """Money never wraps: an amount beyond int64 is a ``vm.DataError`` (a
    ``vm.MarginError``) naming what overflowed."""
    with pytest.raises(vm.DataError, match=message):
        ENGINE.funding(_book(rows), rates, marks)


def test_account_total_overflow_raises() -> None:
    """One account short 5e9 of each of two 1-unit USDT contracts A and B at 100 000 and
    1%: it receives 5e18 µ on each (each fits int64), 1e19 in all (does not)."""
    config = vm.RiskConfig(
        assets=(AssetSpec("USDT", "stablecoin", 1e-6),),
        perpetuals=(
            PerpetualSpec("A", "linear", "USDT", "USDT", 1.0, FLAT),
            PerpetualSpec("B", "linear", "USDT", "USDT", 1.0, FLAT),
        ),
        reporting_currency="USDT",
    )
    rows = [(1, "A", -5e9), (1, "B", -5e9), (2, "A", 5e9), (2, "B", 5e9)]
    with pytest.raises(vm.DataError, match="account's total overflows"):
        vm.RiskEngine(config).funding(_book(rows), {"A": 0.01, "B": 0.01}, {"A": 1e5, "B": 1e5})


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["BTCUSDT1", "CETUSDT", "XBTUSD"]),
    st.integers(1, 9 * 10**9),
    st.integers(1, 10**9),
    st.integers(1, 300),
)
def test_large_amounts_are_exact_or_raise_never_wrap(
    instrument: str, qty: int, mark: int, rate_bp: int
) -> None:
    """Near the int64 limit (9.22e18 minor units): a long/short pair of ``qty`` contracts
    either settles close to the exact amount, with the right signs, or raises
    ``vm.DataError`` — and it raises only when the amount really does not fit."""
    rate = Fraction(rate_bp, 10_000)
    exact = exact_credit(instrument, Fraction(qty), str(float(rate)), str(mark))
    limit = 2**63
    book = _book([(1, instrument, float(qty)), (2, instrument, -float(qty))])
    try:
        settlement = ENGINE.funding(book, {instrument: float(rate)}, {instrument: float(mark)})
    except vm.DataError:
        assert abs(exact) >= limit - 2
        return
    assert abs(exact) < limit
    long, short = settlement.payments.tolist()
    assert long == math.floor(exact)
    assert short == math.floor(-exact)
    assert long < 0 <= short  # the long pays, the short receives (maybe 0)


# -- 6. properties: exact entitlement, direction, conservation ------------------------------

LINEAR = ["BTCUSDT", "BTCUSDT1", "ETHUSD", "CETUSDT"]
INVERSE = ["XBTUSD", "BTCUSD", "ETHUSD_INV"]


def decimals(max_abs: int, max_places: int, *, positive: bool = False) -> st.SearchStrategy[str]:
    """Decimal strings n·10^-k with k ≤ ``max_places`` and |value| ≤ ``max_abs`` (≤ 15
    significant digits, so the engine reads every one exactly)."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        k = draw(st.integers(0, max_places))
        bound = max_abs * 10**k
        n = draw(st.integers(1 if positive else -bound, bound))
        return str(Decimal(n).scaleb(-k))

    return build()


@st.composite
def funding_books(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(1, 5),
                st.sampled_from(LINEAR + INVERSE),
                decimals(10**5, 9),  # up to 1e5 contracts, read at 1e-9
            ),
            min_size=1,
            max_size=12,
            unique_by=lambda row: (row[0], row[1]),  # one row per account and instrument
        )
    )
    instruments = {i for _, i, _ in rows}
    rates = {  # within ±3%, to 1e-10
        i: str(Decimal(draw(st.integers(-300_000_000, 300_000_000))).scaleb(-10))
        for i in instruments
    }
    marks = {
        i: draw(decimals(10**6, 2, positive=True).filter(lambda s: Decimal(s) >= 1))
        for i in instruments
    }
    return {"rows": rows, "rates": rates, "marks": marks}


def exact_credit(instrument: str, qty: Fraction, rate: str, mark: str) -> Fraction:
    """What a holder of ``qty`` is owed, in minor units, computed exactly from the
    decimal strings: −q·cs·P·F (linear) or −q·cs·F/P (inverse), × 10^decimals."""
    spec = CONFIG.perpetual(instrument)
    scale = Fraction(10) ** SETTLE_DECIMALS[instrument]
    size = Fraction(str(spec.contract_size))
    if spec.kind == "linear":
        return -qty * size * Fraction(mark) * Fraction(rate) * scale
    return -qty * size * Fraction(rate) / Fraction(mark) * scale


def _settle(case: dict[str, Any]) -> Any:
    rows, rates, marks = case["rows"], case["rates"], case["marks"]
    return ENGINE.funding(
        _book([(a, i, float(q)) for a, i, q in rows]),
        {i: float(r) for i, r in rates.items()},
        {i: float(m) for i, m in marks.items()},
    )


def _exact_credits(case: dict[str, Any]) -> tuple[list[Fraction], dict[str, Fraction]]:
    """Exact credit of every row, and of the house per instrument with open positions."""
    rows, rates, marks = case["rows"], case["rates"], case["marks"]
    credits = [exact_credit(i, Fraction(q), rates[i], marks[i]) for _, i, q in rows]
    house = {}
    for instrument in {i for _, i, q in rows if Fraction(q) != 0}:
        net = sum((Fraction(q) for _, i, q in rows if i == instrument), Fraction(0))
        house[instrument] = exact_credit(instrument, -net, rates[instrument], marks[instrument])
    return credits, house


# A rate of 0.0040034% on 1 BTC at 100 000 owes exactly 4.0034 USDT (an integer number of
# µUSDT): a rate that f64 scaling by a power of ten misreads (regression).
MISREAD_RATE = {
    "rows": [(1, "BTCUSDT1", "1"), (2, "BTCUSDT1", "-1")],
    "rates": {"BTCUSDT1": "0.000040034"},
    "marks": {"BTCUSDT1": "100000"},
}


@settings(max_examples=250, deadline=None)
@given(funding_books())
def test_payments_round_against_the_account_and_postings_balance(case: dict[str, Any]) -> None:
    """Random books (decimal inputs, linear and inverse, µUSDT, cents and satoshis).
    Every row: payment ≤ exact credit ≤ payment + 1, i.e. rounding never favours the
    account (no receiver gets more than owed, no payer pays less) and costs at most one
    minor unit; the same for the house; dust = −(Σ + house) ≥ 0; ledger balances."""
    settlement = _settle(case)
    credits, house = _exact_credits(case)
    for credit, payment in zip(credits, settlement.payments.tolist(), strict=True):
        assert payment <= credit < payment + 1, (credit, payment)
    for instrument, credit in house.items():
        posted = settlement.house[instrument]
        assert posted <= credit < posted + 1, (instrument, credit, posted)
        paid = sum(
            p for (_, i, _), p in zip(case["rows"], settlement.payments.tolist(), strict=True)
            if i == instrument
        )  # fmt: skip
        dust = settlement.dust[instrument]
        assert dust == -(paid + posted)
        n_rows = sum(1 for _, i, q in case["rows"] if i == instrument and Fraction(q) != 0)
        assert 0 <= dust <= n_rows + 1
    _assert_balanced(settlement)


@settings(max_examples=250, deadline=None)
@example(MISREAD_RATE)
@example(  # 0.06% once read as 5.999999999999999e-4: 1 537 µUSDT short on 9.2e18
    {
        "rows": [(1, "BTCUSDT1", "4575397139"), (2, "BTCUSDT1", "-4575397139")],
        "rates": {"BTCUSDT1": "0.0006"},
        "marks": {"BTCUSDT1": "3359624"},
    }
)
@given(funding_books())
def test_payments_are_the_floor_of_the_exact_entitlement(case: dict[str, Any]) -> None:
    """The exact contract (SPEC §2, money.rs): every payment and the house are the floor
    of the exact credit computed from the decimal inputs — rounding costs strictly less
    than one minor unit, and nothing when the amount is a whole number of units."""
    settlement = _settle(case)
    credits, house = _exact_credits(case)
    assert settlement.payments.tolist() == [math.floor(c) for c in credits]
    assert settlement.house == {i: math.floor(c) for i, c in house.items()}


@settings(max_examples=150, deadline=None)
@given(funding_books(), st.randoms(use_true_random=False))
def test_by_account_sums_the_payments_in_any_row_order(
    case: dict[str, Any], rng: random.Random
) -> None:
    """``by_account`` is each account's payments summed per settle asset, keeping the
    non-zero sums in account then asset order, computed here from the payments in plain
    Python. The same book with its rows laid out by account (the engine's one-pass walk)
    and shuffled (settle, then sum) gives the same rows and the same postings."""
    rows = list(case["rows"])
    rng.shuffle(rows)
    by_account = sorted(rows, key=lambda row: row[0])
    results = [_settle({**case, "rows": order}) for order in (rows, by_account)]
    for order, settlement in zip((rows, by_account), results, strict=True):
        expected: dict[tuple[int, str], int] = {}
        for (account, instrument, _), payment in zip(
            order, settlement.payments.tolist(), strict=True
        ):
            key = (account, CONFIG.perpetual(instrument).settle)
            expected[key] = expected.get(key, 0) + payment
        asset_order = {a.symbol: i for i, a in enumerate(CONFIG.assets)}
        want = sorted(
            ((a, s, v) for (a, s), v in expected.items() if v != 0),
            key=lambda entry: (entry[0], asset_order[entry[1]]),
        )
        table = settlement.by_account
        columns = (table["account_id"].tolist(), list(table["asset"]), table["amount"].tolist())
        got = list(zip(*columns, strict=True))
        assert got == want
    shuffled, laid_out = results
    assert shuffled.house == laid_out.house
    assert shuffled.dust == laid_out.dust
    payment_of = {
        (a, i): p for (a, i, _), p in zip(by_account, laid_out.payments.tolist(), strict=True)
    }
    assert shuffled.payments.tolist() == [payment_of[(a, i)] for a, i, _ in rows]


def test_whole_unit_amounts_are_not_rounded() -> None:
    """Hand-derived: 1 BTC (BTCUSDT1) × 100 000 × 0.0040034% = 4.0034 USDT exactly =
    4 003 400 µUSDT. Nothing to round: the long pays 4 003 400, the short receives
    4 003 400, dust 0. Same with 0.82674% (826 740 000 µ) and inverse BTCUSD: 100
    contracts × 100 USD × 0.82674% / 100 000 = 82 674 sat."""
    assert Fraction("0.000040034") * 100_000 * 10**6 == 4_003_400
    book = _book([(1, "BTCUSDT1", 1.0), (2, "BTCUSDT1", -1.0)])
    settlement = ENGINE.funding(book, {"BTCUSDT1": 0.000040034}, {"BTCUSDT1": 100_000.0})
    assert settlement.payments.tolist() == [-4_003_400, 4_003_400]
    assert settlement.dust == {"BTCUSDT1": 0}
    settlement = ENGINE.funding(book, {"BTCUSDT1": 0.0082674}, {"BTCUSDT1": 100_000.0})
    assert settlement.payments.tolist() == [-826_740_000, 826_740_000]
    inverse = _book([(1, "BTCUSD", 100.0), (2, "BTCUSD", -100.0)])
    settlement = ENGINE.funding(inverse, {"BTCUSD": 0.0082674}, {"BTCUSD": 100_000.0})
    assert settlement.payments.tolist() == [-82_674, 82_674]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 6),
            st.sampled_from(["BTCUSDT", "BTCUSD"]),
            decimals(10**4, 9),
            st.integers(-(10**15), 10**15),
        ),
        min_size=1,
        max_size=10,
        unique_by=lambda row: (row[0], row[1]),
    ),
    st.integers(-(10**15), 10**15),
    st.integers(-(10**15), 10**15),
)
def test_index_payments_are_the_floor_of_the_exact_index_move(
    rows: list[tuple[int, str, str, int]], linear_now: int, inverse_now: int
) -> None:
    """Index settlement: payment = ⌊−q·cs·(I_now − I_pos)⌋ in minor units, exactly, with
    conservation. Indexes are n·1e-12 (linear) / n·1e-18 (inverse) with |n| ≤ 1e15,
    the range the generator draws from (larger ones: see the decimal-reading test above)."""
    scale = {"BTCUSDT": Fraction(1, 10**12), "BTCUSD": Fraction(1, 10**18)}
    now_units = {"BTCUSDT": linear_now, "BTCUSD": inverse_now}
    book = _book(
        [(a, i, float(q)) for a, i, q, _ in rows],
        funding_index=[float(n * scale[i]) for _, i, _, n in rows],
    )
    settlement = ENGINE.funding(
        book, index={i: float(now_units[i] * scale[i]) for i in ("BTCUSDT", "BTCUSD")}
    )
    for (_, instrument, qty, then), payment in zip(rows, settlement.payments.tolist(), strict=True):
        spec = CONFIG.perpetual(instrument)
        move = (now_units[instrument] - then) * scale[instrument]
        exact = (
            -Fraction(qty) * Fraction(str(spec.contract_size)) * move
            * 10 ** SETTLE_DECIMALS[instrument]
        )  # fmt: skip
        assert payment == math.floor(exact), (instrument, qty, move, payment)
    _assert_balanced(settlement)


@settings(max_examples=150, deadline=None)
@given(funding_books(), st.data())
def test_house_of_summed_parts_is_the_whole_books_house(
    case: dict[str, Any], data: st.DataObject
) -> None:
    """A book cut into parts (as a partitioned book is): each part's exact open interest,
    summed, gives the whole book's, and ``house_postings`` of the sum is the house of one
    settlement of the whole book, for one interval and for the index basis."""
    rows, rates, marks = case["rows"], case["rates"], case["marks"]
    whole_rows = [(a, i, float(q)) for a, i, q in rows]
    parts = data.draw(st.lists(st.integers(0, 2), min_size=len(rows), max_size=len(rows)))
    rate_of = {i: float(r) for i, r in rates.items()}
    mark_of = {i: float(m) for i, m in marks.items()}
    # Index moves up to ±1e3 per contract (linear): with quantities up to 1e5 the
    # payments stay inside 64-bit minor units (overflow has its own test).
    index_of = data.draw(
        st.lists(st.integers(-(10**9), 10**9), min_size=len(rows), max_size=len(rows))
    )
    kind = {p.symbol: p.kind for p in CONFIG.perpetuals}
    index_now = {s: 1.25 if k == "linear" else 3e-7 for s, k in kind.items()}
    for basis in ("interval", "index"):

        def settle(chosen: list[int], basis: str = basis) -> Any:
            book_rows = [whole_rows[k] for k in chosen]
            if basis == "interval":
                return ENGINE.funding(_book(book_rows), rate_of, mark_of)
            scale = {"linear": 1e-6, "inverse": 1e-15}
            book = _book(
                book_rows,
                funding_index=[index_of[k] * scale[kind[whole_rows[k][1]]] for k in chosen],
            )
            return ENGINE.funding(book, index=index_now)

        whole = settle(list(range(len(rows))))
        summed: dict[str, int] = {}
        for part in range(3):
            chosen = [k for k, p in enumerate(parts) if p == part]
            if not chosen:
                continue
            for symbol, total in settle(chosen).open_interest.items():
                summed[symbol] = summed.get(symbol, 0) + total
        live = {s: t for s, t in summed.items() if s in whole.house}
        assert live == whole.open_interest
        if basis == "interval":
            house = house_postings(CONFIG, live, rates=rate_of, marks=mark_of)
        else:
            house = house_postings(CONFIG, live)
        assert house == whole.house


def test_house_postings_checks_its_arguments() -> None:
    with pytest.raises(vm.DataError, match="unknown instruments"):
        house_postings(CONFIG, {"NOPE": 1})
    with pytest.raises(vm.DataError, match="give rates and marks, or neither"):
        house_postings(CONFIG, {"BTCUSDT": 1}, rates={"BTCUSDT": 0.0001})
    with pytest.raises(vm.DataError, match="marks: missing 'BTCUSDT'"):
        house_postings(CONFIG, {"BTCUSDT": 10**9}, rates={"BTCUSDT": 0.0001}, marks={})
    # Net one contract long (1 BTC, BTCUSDT1) at 100 000 and 0.01%: the house holds the
    # short and receives 10 USDT; the same net in 0.001 BTC contracts (BTCUSDT) 0.01 USDT.
    rates, marks = {"BTCUSDT1": 0.0001, "BTCUSDT": 0.0001}, {"BTCUSDT1": 1e5, "BTCUSDT": 1e5}
    assert house_postings(
        CONFIG, {"BTCUSDT1": 10**9, "BTCUSDT": 10**9}, rates=rates, marks=marks
    ) == {"BTCUSDT1": 10_000_000, "BTCUSDT": 10_000}


def test_freed_payments_are_reused_and_live_ones_never_are() -> None:
    # The payments column (~380 KB) is over the pool's 64 KiB minimum; it shares the pool
    # with the revaluation's f64 columns. So are the three columns of the sums by account
    # (ids, asset codes, amounts; ~16 000 sums).
    synthetic, book, engine = bound_in_empty_pool(n_accounts=9_967, seed=4)
    rates = {p.symbol: 0.0001 for p in engine.config.perpetuals}
    first = engine.funding(book, rates, synthetic.prices)
    kept = first.payments.copy()
    second = engine.funding(book, {s: -3 * r for s, r in rates.items()}, synthetic.prices)
    assert first.payments.tobytes() == kept.tobytes()
    assert not np.shares_memory(first.payments, second.payments)
    assert (second.payments != 0).any()
    assert _core.column_pool_held() == (0, 0)
    freed, size = second.payments.ctypes.data, second.payments.nbytes
    by_account = second.by_account
    sums = [by_account["account_id"], by_account.codes("asset").codes, by_account["amount"]]
    assert min(c.nbytes for c in sums) >= 64 * 1024
    size += sum(c.nbytes for c in sums)
    del second, by_account, sums
    assert _core.column_pool_held() == (4, size)
    third = engine.funding(book, rates, synthetic.prices)
    assert _core.column_pool_held() == (0, 0)
    # The third settlement takes the second's column, uncleared, and writes every row
    # (the core's tests cover empty positions, which this book has none of).
    assert third.payments.ctypes.data == freed
    assert third.payments.tobytes() == kept.tobytes()


def test_by_account_needs_one_id_per_account_and_an_account_per_position() -> None:
    config = vm.RiskConfig.hk_default()
    synthetic = synthetic_book(config, n_accounts=50, seed=2)
    book = vm.Book(synthetic.accounts, positions=synthetic.positions)
    bound = book.bind(config)
    n = len(config.perpetuals)

    def settle(account_id: npt.NDArray[np.int64], position_account: npt.NDArray[np.uint32]) -> None:
        _core.settle_funding(
            config.engine_params,
            bound.position_instrument,
            book.qty,
            [a.minor_decimals for a in config.assets],
            rates=np.zeros(n),
            marks=np.ones(n),
            by_account=(bound.position_groups, account_id, position_account),
        )

    with pytest.raises(vm.DataError, match="funding: 49 account ids for a grouping of 50"):
        settle(book.account_id[:-1], book.position_account)
    with pytest.raises(vm.DataError, match=f"funding: {book.n_positions - 1} position acc"):
        settle(book.account_id, book.position_account[1:])
