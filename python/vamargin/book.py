"""The Book: accounts, holdings and perpetual positions as validated columns (SPEC §3).

Validation happens in two steps, both before anything is computed:

1. ``Book(...)`` checks structure: columns present and typed, no NaN/inf, unique
   ``account_id``, every holding and position owned by a known account, known investor
   classes, positive entry prices, leverage ≥ 1, isolated margin ≥ 0.
2. ``Book.bind(config)`` (done by the engine, once per config) checks the book against the
   configuration: known assets and instruments, negative amounts only of ``borrowable``
   assets, loans only for credit-approved margin clients (``EligibilityError``), one
   holding row per (account, asset).

Row numbers in errors are 0-based positions in the table as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from vamargin import _core
from vamargin._columns import (
    F64,
    I64,
    U32,
    AtLeast,
    Bools,
    Codes,
    Finite,
    TableReader,
    first_true,
)
from vamargin.config import RiskConfig
from vamargin.errors import DataError, EligibilityError

INVESTOR_CLASSES: tuple[str, ...] = ("institutional_pi", "corporate_pi", "individual_pi", "retail")
"""Investor classes, in code order (``Book.investor_class`` holds these codes)."""

PROFESSIONAL_CLASSES: frozenset[str] = frozenset(INVESTOR_CLASSES[:3])

_NAMES = pa.dictionary(pa.int32(), pa.string())
_EMPTY_HOLDINGS = pa.table(
    {
        "account_id": pa.array([], pa.int64()),
        "asset": pa.array([], _NAMES),
        "amount": pa.array([], pa.float64()),
    }
)
"""The table a ``Book`` reads when it is given no holdings (built once: a job that reads
two tables would otherwise convert an empty one on every ``Book``)."""
_EMPTY_POSITIONS = pa.table(
    {
        "account_id": pa.array([], pa.int64()),
        "instrument": pa.array([], _NAMES),
        "qty": pa.array([], pa.float64()),
        "entry_price": pa.array([], pa.float64()),
    }
)


@dataclass(frozen=True)
class BoundBook:
    """A book's string columns resolved against one configuration."""

    config: RiskConfig
    holding_asset: U32
    position_instrument: U32
    holding_groups: _core.Grouping
    position_groups: _core.Grouping
    core: _core.CoreBook
    """Handles on the columns, for the kernels."""
    assets_used: Bools
    """Per config asset: held, or the settle asset of a held perpetual."""
    instruments_used: Bools


class Book:
    """Accounts, holdings and positions; see the module docstring for what is checked."""

    def __init__(self, accounts: Any, holdings: Any = None, positions: Any = None) -> None:
        self._read_accounts(TableReader(accounts, "accounts"))
        self._read_holdings(
            TableReader(_EMPTY_HOLDINGS if holdings is None else holdings, "holdings")
        )
        self._read_positions(
            TableReader(_EMPTY_POSITIONS if positions is None else positions, "positions")
        )
        self._bound: BoundBook | None = None

    # -- reading ------------------------------------------------------------------------

    def _read_accounts(self, table: TableReader) -> None:
        self.account_id: I64 = table.int64("account_id")
        classes = table.strings("investor_class")
        lut = np.array([_class_code(n) for n in classes.names] or [0], dtype=np.int16)
        if (row := _first_unknown(lut, classes)) is not None:
            name = classes.names[classes.codes[row]]
            raise table.fail(
                "investor_class", row, f"{name!r} is not one of {list(INVESTOR_CLASSES)}"
            )
        # Codes per row are only needed by pre-trade checks: mapped on first use.
        self._investor_classes = classes
        self._investor_class_lut = np.maximum(lut, 0).astype(np.uint8)
        self.affiliate_market_maker: Bools = table.boolean("affiliate_market_maker", default=False)
        self.credit_limit: F64 = table.float64("credit_limit", default=np.inf, finite=False)
        table.require(
            AtLeast(
                "credit_limit",
                self.credit_limit,
                0.0,
                "is not a limit ≥ 0 (inf = none)",
                allow_nan=False,
            )
        )
        self.margin_client: Bools = table.boolean("margin_client", default=False)
        self.credit_approved: Bools = table.boolean("credit_approved", default=False)
        # Related clients (a family, a corporate group) for concentration limits; optional.
        self.client_group: Codes | None = (
            table.strings("client_group") if table.has("client_group") else None
        )
        self._index = _core.AccountIndex(self.account_id)

    def _read_holdings(self, table: TableReader) -> None:
        self.holding_account_id: I64 = table.int64("account_id")
        self.holding_account: U32 = self._index.lookup(
            self.holding_account_id, "holdings.account_id"
        )
        self.holding_asset: Codes = table.strings("asset")
        self.holding_amount: F64 = table.float64("amount")

    def _read_positions(self, table: TableReader) -> None:
        self.position_account_id: I64 = table.int64("account_id")
        self.position_account: U32 = self._index.lookup(
            self.position_account_id, "positions.account_id"
        )
        self.position_instrument: Codes = table.strings("instrument")
        # The numeric columns are read unchecked, then checked together in one pass
        # (rules in the order the errors are raised).
        self.qty: F64 = table.float64("qty", finite=False)
        self.entry_price: F64 = table.float64("entry_price", finite=False)
        rules: list[Finite | AtLeast] = [
            Finite("qty", self.qty),
            Finite("entry_price", self.entry_price),
            AtLeast(
                "entry_price",
                self.entry_price,
                0.0,
                "is not a price > 0",
                strict=True,
                where_nonzero=self.qty,
            ),
        ]
        self.isolated_margin: F64 | None = None
        if table.has("isolated_margin"):
            margin = table.float64("isolated_margin", nulls_as_nan=True, finite=False)
            rules += [
                Finite("isolated_margin", margin, allow_nan=True),
                AtLeast("isolated_margin", margin, 0.0, "is negative"),
            ]
            self.isolated_margin = margin
        self.leverage: F64 | None = None
        if table.has("leverage"):
            leverage = table.float64("leverage", nulls_as_nan=True, finite=False)
            rules += [
                Finite("leverage", leverage, allow_nan=True),
                AtLeast("leverage", leverage, 1.0, "is below 1"),
            ]
            self.leverage = leverage
        self.funding_index: F64 | None = None
        if table.has("funding_index"):
            self.funding_index = table.float64("funding_index", finite=False)
            rules.append(Finite("funding_index", self.funding_index))
        table.require(*rules)

    # -- shape ----------------------------------------------------------------------------

    @cached_property
    def investor_class(self) -> npt.NDArray[np.uint8]:
        """Investor class code per account (an index into ``INVESTOR_CLASSES``)."""
        return self._investor_class_lut[self._investor_classes.codes]

    def account_row(self, account_id: int) -> int:
        """The row of ``account_id`` in the accounts table (``DataError`` if unknown)."""
        row = self._index.get(int(account_id))
        if row is None:
            raise DataError(f"accounts.account_id: unknown account {account_id}")
        return row

    @property
    def n_accounts(self) -> int:
        return len(self.account_id)

    @property
    def n_holdings(self) -> int:
        return len(self.holding_amount)

    @property
    def n_positions(self) -> int:
        return len(self.qty)

    def __repr__(self) -> str:
        return (
            f"Book({self.n_accounts} accounts, {self.n_holdings} holdings, "
            f"{self.n_positions} positions)"
        )

    # -- binding to a configuration ----------------------------------------------------

    def bind(self, config: RiskConfig) -> BoundBook:
        """Resolves assets and instruments against ``config`` and checks eligibility;
        cached for the last config used."""
        if self._bound is not None and self._bound.config is config:
            return self._bound
        # One pass per table in Rust resolves the names and finds the first row each
        # check rejects; the errors are raised here, in a fixed order.
        borrowable = np.array([a.borrowable for a in config.assets], dtype=np.bool_)
        holding_asset, assets_used, unknown_asset, unborrowable, unapproved = _core.bind_holdings(
            self.holding_asset.codes,
            _lookup_table(self.holding_asset, config.asset_ids),
            self.holding_amount,
            self.holding_account,
            borrowable,
            self.margin_client & self.credit_approved,
        )
        position_instrument, position_key, instruments_used, unknown_instrument = (
            _core.bind_positions(
                self.position_instrument.codes,
                _lookup_table(self.position_instrument, config.perpetual_ids),
                self.qty,
                self.isolated_margin,
                len(config.perpetuals),
            )
        )
        if unknown_asset is not None:
            raise _unknown(self.holding_asset, unknown_asset, config.asset_ids, "holdings.asset")
        if unknown_instrument is not None:
            raise _unknown(
                self.position_instrument,
                unknown_instrument,
                config.perpetual_ids,
                "positions.instrument",
            )
        self._check_loans(config, holding_asset, unborrowable, unapproved)
        # Each account's rows in key order (asset; instrument and margin mode), so its sums
        # do not depend on how the input rows were ordered.
        holding_groups = _core.Grouping(
            self.holding_account, self.n_accounts, "holdings.account_id", holding_asset
        )
        self._check_unique_holdings(config, holding_asset, holding_groups)
        position_groups = _core.Grouping(
            self.position_account, self.n_accounts, "positions.account_id", position_key
        )
        self._check_unique_positions(config, position_instrument, position_key, position_groups)
        # Empty positions are ignored, so they need no prices; a held perpetual needs its
        # settle asset's price.
        for perp_id in np.flatnonzero(instruments_used):
            assets_used[config.asset_ids[config.perpetuals[perp_id].settle]] = True
        core = _core.CoreBook(
            self.account_id,
            self.credit_limit,
            self.holding_account,
            holding_asset,
            self.holding_amount,
            holding_groups,
            self.position_account,
            position_instrument,
            self.qty,
            self.entry_price,
            self.isolated_margin,
            self.leverage,
            position_groups,
        )
        self._bound = BoundBook(
            config=config,
            holding_asset=holding_asset,
            position_instrument=position_instrument,
            holding_groups=holding_groups,
            position_groups=position_groups,
            core=core,
            assets_used=assets_used,
            instruments_used=instruments_used,
        )
        return self._bound

    def _check_loans(
        self,
        config: RiskConfig,
        holding_asset: U32,
        unborrowable: int | None,
        unapproved: int | None,
    ) -> None:
        if (row := unborrowable) is not None:
            symbol = config.assets[holding_asset[row]].symbol
            raise DataError(
                f"holdings.amount row {row}: {self.holding_amount[row]} {symbol} is negative, "
                f"but {symbol} is not borrowable"
            )
        if (row := unapproved) is not None:
            account = self.holding_account_id[row]
            symbol = config.assets[holding_asset[row]].symbol
            raise EligibilityError(
                f"holdings row {row}: account {account} holds a loan of "
                f"{-self.holding_amount[row]} {symbol} but is not a credit-approved margin "
                "client (accounts.margin_client and accounts.credit_approved)"
            )

    def _check_unique_positions(
        self,
        config: RiskConfig,
        position_instrument: U32,
        position_key: U32,
        groups: _core.Grouping,
    ) -> None:
        if groups.is_sorted:
            # Rows already in (account, key) order with keys strictly increasing within
            # each account (what "sorted" means for a grouping): nothing repeats.
            return
        row = _core.first_repeated_key(position_key, groups, self.qty)
        if row is not None:
            mode = (
                "cross"
                if self.isolated_margin is None or np.isnan(self.isolated_margin[row])
                else "isolated"
            )
            raise DataError(
                f"positions row {row}: account {self.position_account_id[row]} already has a "
                f"{mode} {config.perpetuals[position_instrument[row]].symbol} position (one "
                "row per account, instrument and margin mode)"
            )

    def where_used(
        self, bound: BoundBook, *, asset: int | None = None, instrument: int | None = None
    ) -> str:
        """``table.column row N`` of the first row that needs a price for ``asset`` (held,
        or the settle asset of a held perpetual) or ``instrument``."""
        config = bound.config
        if instrument is not None:
            live = (bound.position_instrument == instrument) & (self.qty != 0)
            return f"positions.instrument row {first_true(live)}"
        if (row := first_true(bound.holding_asset == asset)) is not None:
            return f"holdings.asset row {row}"
        settles = np.array([config.asset_ids[p.settle] == asset for p in config.perpetuals])
        live = settles[bound.position_instrument] & (self.qty != 0)
        return f"positions.instrument row {first_true(live)} (settle asset)"

    def _check_unique_holdings(
        self, config: RiskConfig, holding_asset: U32, groups: _core.Grouping
    ) -> None:
        if groups.is_sorted:
            return  # keys strictly increase within each account (see above)
        if (row := _core.first_repeated_key(holding_asset, groups)) is not None:
            raise DataError(
                f"holdings row {row}: account {self.holding_account_id[row]} already has a "
                f"{config.assets[holding_asset[row]].symbol} holding (one row per account "
                "and asset)"
            )


def _class_code(name: str) -> int:
    return INVESTOR_CLASSES.index(name) if name in INVESTOR_CLASSES else -1


def _first_unknown(lut: npt.NDArray[np.integer[Any]], codes: Codes) -> int | None:
    """First row whose name maps to -1 in ``lut``; names no row uses (unused dictionary
    or category entries) do not count."""
    if not (lut < 0).any():
        return None
    return first_true(lut[codes.codes] < 0)


_UNKNOWN = np.uint32(0xFFFF_FFFF)
"""What `_lookup_table` maps a name that is not configured to."""


def _lookup_table(codes: Codes, ids: dict[str, int]) -> U32:
    """Code → config id (``_UNKNOWN`` for names not configured)."""
    return np.array([ids.get(name, _UNKNOWN) for name in codes.names], dtype=np.uint32)


def _unknown(codes: Codes, row: int, ids: dict[str, int], where: str) -> DataError:
    name = codes.names[codes.codes[row]]
    what = where.split(".")[1]
    return DataError(f"{where} row {row}: unknown {what} {name!r} (configured: {sorted(ids)})")
