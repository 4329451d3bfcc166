"""A synthetic Hong Kong book of realistic shape, for the demo, benchmarks and tests.

The mix follows what a licensed platform with a margin-financing arm would hold:

- investor classes: 3% institutional, 17% corporate, 60% individual professional
  investors, 20% retail; a handful of affiliated market makers among the institutions;
- about a third of accounts are margin clients (nine in ten credit-approved) borrowing
  HKD or USD against BTC/ETH at loan-to-values spread around 30%, with a tail past the
  call (50%) and liquidation (60%) levels;
- professional investors trade the config's perpetuals, each (instrument, margin mode)
  at most once per account, about one position in six isolated; cross accounts post
  USDT (linear) or coin (inverse) margin at leverages spread around 4x with a tail of
  over-levered accounts; entry prices scatter around the mark so PnL has both signs.

Everything is drawn from one seeded generator, so a seed always gives the same book.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from vamargin.book import INVESTOR_CLASSES
from vamargin.config import RiskConfig

DEFAULT_PRICES: dict[str, float] = {
    "USD": 1.0,
    "HKD": 0.1285,
    "USDT": 1.0,
    "BTC": 96_400.0,
    "ETH": 3_380.0,
    "BTC-USDT-PERP": 96_450.0,
    "ETH-USDT-PERP": 3_381.5,
    "BTC-USD-PERP": 96_430.0,
    "ETH-USD-PERP": 3_379.0,
}


@dataclass(frozen=True)
class SyntheticBook:
    accounts: pa.Table
    holdings: pa.Table
    positions: pa.Table
    prices: dict[str, float]


def _dictionary(codes: npt.NDArray[Any], names: list[str]) -> pa.DictionaryArray[Any, Any]:
    indices = cast(Any, pa.array(codes.astype(np.int32)))
    return pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string()))


def _table(columns: dict[str, Any]) -> pa.Table:
    arrays = [c if isinstance(c, pa.Array) else pa.array(c) for c in columns.values()]
    return pa.Table.from_arrays(cast(Any, arrays), names=list(columns))


def synthetic_book(
    config: RiskConfig | None = None,
    *,
    n_accounts: int = 200_000,
    seed: int = 7,
    prices: dict[str, float] | None = None,
    shuffle_positions: bool = False,
) -> SyntheticBook:
    """A book of ``n_accounts`` accounts and about ``5·n_accounts`` positions (with the
    default config's four perpetuals; more instruments give more positions per account).

    ``prices`` must price every asset and perpetual of ``config`` (defaults cover the
    shipped HK profile). ``shuffle_positions`` scatters position rows across accounts.
    """
    config = RiskConfig.hk_default() if config is None else config
    prices = DEFAULT_PRICES if prices is None else prices
    rng = np.random.default_rng(seed)
    account_id = np.arange(1, n_accounts + 1, dtype=np.int64) * 10 + 3

    # -- accounts -----------------------------------------------------------------------
    investor_class = rng.choice(4, size=n_accounts, p=[0.03, 0.17, 0.60, 0.20]).astype(np.int32)
    affiliate = (investor_class == 0) & (rng.random(n_accounts) < 0.03)
    margin_client = rng.random(n_accounts) < 0.33
    credit_approved = margin_client & (rng.random(n_accounts) < 0.9)

    # -- margin financing: coins against an HKD or USD loan -----------------------------
    borrowers = np.flatnonzero(credit_approved)
    coin_value = rng.lognormal(np.log(150_000.0), 1.0, size=len(borrowers))
    ltv = np.clip(rng.normal(0.30, 0.12, size=len(borrowers)), 0.0, 0.9)
    coin = rng.choice(np.array(["BTC", "ETH"]), size=len(borrowers), p=[0.7, 0.3])
    loan_ccy = rng.choice(np.array(["HKD", "USD"]), size=len(borrowers), p=[0.7, 0.3])
    coin_price = np.where(coin == "BTC", prices["BTC"], prices["ETH"])
    ccy_price = np.where(loan_ccy == "HKD", prices["HKD"], prices["USD"])
    loan_value = coin_value * ltv
    credit_limit = np.full(n_accounts, np.inf)
    credit_limit[borrowers] = np.round(loan_value * rng.uniform(0.95, 2.0, len(borrowers)), -3)

    # -- perpetuals: PI accounts, each (instrument, mode) at most once -------------------
    n_perps = len(config.perpetuals)
    traders = np.flatnonzero(investor_class < 3)
    slots = 2 * n_perps  # (instrument, cross|isolated)
    per_trader = np.minimum(rng.poisson(5.2, size=len(traders)) + 1, slots)
    # Pick distinct slots per trader: rank random keys, keep the first k.
    keys = rng.random((len(traders), slots))
    keys[:, 1::2] += 0.35  # isolated slots are picked less often
    ranked = np.argsort(keys, axis=1)
    keep = np.arange(slots)[None, :] < per_trader[:, None]
    trader_row = np.repeat(np.arange(len(traders)), per_trader)
    slot = ranked[keep]
    instrument = (slot // 2).astype(np.int32)
    isolated = (slot % 2) == 1
    n_positions = len(slot)
    owner = traders[trader_row]

    kinds = np.array([p.kind == "inverse" for p in config.perpetuals])
    sizes = np.array([p.contract_size for p in config.perpetuals])
    marks = np.array([prices[p.symbol] for p in config.perpetuals])
    inverse = kinds[instrument]
    notional_usd = rng.lognormal(np.log(12_000.0), 1.3, size=n_positions)
    notional_usd = np.minimum(notional_usd, 40_000_000.0)
    side = np.where(rng.random(n_positions) < 0.55, 1.0, -1.0)
    mark = marks[instrument]
    contracts = np.where(
        inverse, notional_usd / sizes[instrument], notional_usd / (sizes[instrument] * mark)
    )
    qty: npt.NDArray[np.float64] = side * np.maximum(np.round(contracts), 1.0)
    entry = np.round(mark * (1.0 + rng.normal(0.0, 0.035, size=n_positions)), 1)
    chosen_leverage = rng.choice(np.array([2.0, 3.0, 5.0, 10.0, 20.0]), size=n_positions)
    settle_value = np.where(
        inverse, np.abs(qty) * sizes[instrument], np.abs(qty) * sizes[instrument] * mark
    )
    # Isolated margin in settle currency: USDT for linear, coin for inverse.
    base_price = np.array([prices[p.base] for p in config.perpetuals])[instrument]
    isolated_margin = np.where(
        isolated,
        np.where(
            inverse, settle_value / chosen_leverage / base_price, settle_value / chosen_leverage
        ),
        np.nan,
    )

    # Cross margin: USDT for the linear book, coin for the inverse one, sized by leverage.
    account_leverage = rng.lognormal(np.log(4.0), 0.8, size=n_accounts)
    cross = ~isolated
    linear_cross = np.bincount(
        owner[cross & ~inverse], weights=settle_value[cross & ~inverse], minlength=n_accounts
    )
    usdt = linear_cross / account_leverage

    # -- holdings table -------------------------------------------------------------------
    h_account: list[npt.NDArray[Any]] = [account_id[borrowers], account_id[borrowers]]
    h_asset: list[npt.NDArray[Any]] = [coin, loan_ccy]
    h_amount: list[npt.NDArray[Any]] = [coin_value / coin_price, -loan_value / ccy_price]
    has_usdt = usdt > 0
    h_account.append(account_id[has_usdt])
    h_asset.append(np.full(int(has_usdt.sum()), "USDT"))
    h_amount.append(np.round(usdt[has_usdt], 2))
    for base in ("BTC", "ETH"):
        takes = np.array([p.base == base and p.kind == "inverse" for p in config.perpetuals])
        mask = cross & takes[instrument]
        coin_notional = np.bincount(owner[mask], weights=notional_usd[mask], minlength=n_accounts)
        coin_margin = coin_notional / account_leverage / prices[base]
        # Borrowers already hold a coin row; top it up there instead of adding a second.
        holder = coin_margin > 0
        same_coin = np.zeros(n_accounts, dtype=bool)
        same_coin[borrowers[coin == base]] = True
        top_up = holder & same_coin
        if top_up.any():
            position_in_first = np.searchsorted(account_id[borrowers], account_id[top_up])
            h_amount[0][position_in_first] += coin_margin[top_up]
        fresh = holder & ~same_coin
        h_account.append(account_id[fresh])
        h_asset.append(np.full(int(fresh.sum()), base))
        h_amount.append(coin_margin[fresh])
    # Retail and everyone else without perps keeps some cash.
    idle = np.flatnonzero(~np.isin(np.arange(n_accounts), owner) & ~credit_approved)
    h_account.append(account_id[idle])
    h_asset.append(np.full(len(idle), "HKD"))
    h_amount.append(np.round(rng.lognormal(np.log(50_000.0), 1.0, size=len(idle)), 2))

    holdings_account = np.concatenate(h_account)
    holdings_asset = np.concatenate(h_asset)
    config_order = np.array([config.asset_ids[symbol] for symbol in holdings_asset])
    # Rows in (account, asset) order, as a database dump by primary key would give them.
    order = np.lexsort((config_order, holdings_account))
    asset_names = [a.symbol for a in config.assets]
    asset_codes = np.searchsorted(np.array(sorted(asset_names)), holdings_asset)
    sorted_names = sorted(asset_names)

    # (account, instrument, margin mode) order; slot = 2·instrument + isolated.
    positions_order = np.lexsort((slot, owner))
    if shuffle_positions:
        positions_order = rng.permutation(n_positions)

    accounts = _table(
        {
            "account_id": account_id,
            "investor_class": _dictionary(investor_class, list(INVESTOR_CLASSES)),
            "affiliate_market_maker": affiliate,
            "credit_limit": credit_limit,
            "margin_client": margin_client,
            "credit_approved": credit_approved,
        }
    )
    holdings = _table(
        {
            "account_id": holdings_account[order],
            "asset": _dictionary(asset_codes[order], sorted_names),
            "amount": np.concatenate(h_amount)[order],
        }
    )
    positions = _table(
        {
            "account_id": account_id[owner][positions_order],
            "instrument": _dictionary(
                instrument[positions_order], [p.symbol for p in config.perpetuals]
            ),
            "qty": qty[positions_order],
            "entry_price": entry[positions_order],
            "isolated_margin": isolated_margin[positions_order],
        }
    )
    return SyntheticBook(
        accounts=accounts, holdings=holdings, positions=positions, prices=dict(prices)
    )
