# Type stubs of the Rust extension vamargin._core (checked against the binary by stubtest).
from typing import Any, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "STATUS_NAMES",
    "AccountIndex",
    "ConfigError",
    "CoreBook",
    "DataError",
    "EligibilityError",
    "EngineParams",
    "Grouping",
    "MarginError",
    "__version__",
    "accrue_interest",
    "adl_queue",
    "adl_score",
    "bankruptcy_price",
    "bind_holdings",
    "bind_positions",
    "close_size",
    "collateral_figures",
    "column_pool_clear",
    "column_pool_held",
    "first_broken_rule",
    "first_repeated_key",
    "funding_house",
    "funding_rate",
    "interest",
    "liquidate",
    "liquidation_price",
    "liquidation_queue",
    "maintenance_amounts",
    "maintenance_margin",
    "margin_calls",
    "note_fork_in_child",
    "notional",
    "order_impact",
    "premium",
    "revalue",
    "settle_funding",
    "stress",
    "stressed_equity",
    "thread_count",
    "tier_of",
    "tiered_value",
    "unrealized_pnl",
]
__version__: str
STATUS_NAMES: list[str]

class MarginError(ValueError): ...
class ConfigError(MarginError): ...
class DataError(MarginError): ...
class EligibilityError(MarginError): ...

_F64 = npt.NDArray[np.float64]
_U32 = npt.NDArray[np.uint32]
_I64 = npt.NDArray[np.int64]
_I32 = npt.NDArray[np.int32]
_Bools = npt.NDArray[np.bool_]
_Tier = tuple[float, float, float]

@final
class EngineParams:
    def __new__(
        cls,
        assets: list[tuple[str, float, float, float, bool, list[tuple[float, float]], float]],
        perpetuals: list[tuple[str, str, float, int, list[_Tier], float]],
        call_target: str,
        liquidation_buffer: float,
    ) -> EngineParams: ...
    @property
    def n_assets(self) -> int: ...
    @property
    def n_perpetuals(self) -> int: ...

@final
class AccountIndex:
    def __new__(cls, ids: _I64) -> AccountIndex: ...
    def __len__(self) -> int: ...
    def get(self, account_id: int) -> int | None: ...
    def lookup(self, ids: _I64, context: str) -> _U32: ...

@final
class Grouping:
    def __new__(
        cls, account_rows: _U32, n_accounts: int, context: str, keys: _U32 | None = None
    ) -> Grouping: ...
    @property
    def is_sorted(self) -> bool: ...
    @property
    def n_accounts(self) -> int: ...

@final
class CoreBook:
    def __new__(
        cls,
        account_id: _I64,
        credit_limit: _F64,
        holding_account: _U32,
        holding_asset: _U32,
        holding_amount: _F64,
        holding_groups: Grouping,
        position_account: _U32,
        position_instrument: _U32,
        qty: _F64,
        entry_price: _F64,
        isolated_margin: _F64 | None,
        leverage: _F64 | None,
        position_groups: Grouping,
    ) -> CoreBook: ...

def revalue(
    params: EngineParams, book: CoreBook, asset_prices: _F64, marks: _F64
) -> dict[str, dict[str, npt.NDArray[Any]]]: ...
def stress(
    params: EngineParams,
    book: CoreBook,
    asset_prices: npt.NDArray[np.float64],
    marks: npt.NDArray[np.float64],
    keep_min_equity: bool = False,
) -> dict[str, npt.NDArray[Any]]: ...
def stressed_equity(
    params: EngineParams,
    book: CoreBook,
    asset_prices: npt.NDArray[np.float64],
    marks: npt.NDArray[np.float64],
    accounts: npt.NDArray[np.uint32],
) -> npt.NDArray[np.float64]: ...
def liquidation_queue(
    params: EngineParams, book: CoreBook, asset_prices: _F64, marks: _F64
) -> dict[str, dict[str, npt.NDArray[Any]]]: ...
def adl_queue(
    params: EngineParams, book: CoreBook, asset_prices: _F64, marks: _F64
) -> dict[str, npt.NDArray[Any]]: ...
def order_impact(
    params: EngineParams,
    book: CoreBook,
    asset_prices: _F64,
    marks: _F64,
    account: int,
    instrument: int,
    qty: float,
    price: float,
    leverage: float,
) -> tuple[int, bool, float, float, float, float, int, float, float, float, float]: ...
def liquidate(
    params: EngineParams,
    book: CoreBook,
    asset_prices: _F64,
    marks: _F64,
    fund: list[int],
    decimals: list[int],
    reporting_asset: int | None,
) -> dict[str, Any]: ...
def margin_calls(
    params: EngineParams,
    book: CoreBook,
    asset_prices: _F64,
    marks: _F64,
    past_deadline: npt.NDArray[np.bool_] | None = None,
) -> dict[str, npt.NDArray[Any]]: ...
def accrue_interest(
    amounts: _F64,
    assets: _U32,
    annual_rates: list[float],
    day_counts: list[str],
    decimals: list[int],
    days: int,
) -> npt.NDArray[np.int64]: ...
def collateral_figures(
    params: EngineParams, book: CoreBook, asset_prices: _F64, weights: _F64, top: int
) -> dict[str, Any]: ...
def interest(
    principal: float, annual_rate: float, days: int, day_count: str, decimals: int
) -> int: ...
def close_size(shortage: float, price: float, margin_rate: float, fee: float) -> float: ...
def first_repeated_key(keys: _U32, groups: Grouping, qty: _F64 | None = None) -> int | None: ...
def first_broken_rule(
    rules: list[tuple[_F64, str, float, _F64 | None]],
) -> tuple[int, int] | None: ...
def bind_positions(
    codes: _I32, lut: _U32, qty: _F64, isolated_margin: _F64 | None, n_instruments: int
) -> tuple[_U32, _U32, _Bools, int | None]: ...
def bind_holdings(
    codes: _I32,
    lut: _U32,
    amount: _F64,
    account: _U32,
    borrowable: _Bools,
    may_borrow: _Bools,
) -> tuple[_U32, _Bools, int | None, int | None, int | None]: ...
def settle_funding(
    params: EngineParams,
    position_instrument: _U32,
    qty: _F64,
    settle_decimals: list[int],
    *,
    rates: _F64 | None = None,
    marks: _F64 | None = None,
    index_now: _F64 | None = None,
    position_index: _F64 | None = None,
    by_account: tuple[Grouping, _I64, _U32] | None = None,
) -> dict[str, Any]: ...
def funding_house(
    params: EngineParams,
    open_interest: list[int],
    settle_decimals: list[int],
    *,
    rates: _F64 | None = None,
    marks: _F64 | None = None,
    index: bool = False,
) -> list[int]: ...
def funding_rate(
    premiums: list[float], interest_rate: float, clamp: float, cap: float
) -> float: ...
def premium(impact_bid: float, impact_ask: float, index_price: float) -> float: ...
def maintenance_amounts(tiers: list[_Tier]) -> list[float]: ...
def maintenance_margin(notional: float, tiers: list[_Tier]) -> float: ...
def tier_of(notional: float, tiers: list[_Tier]) -> int: ...
def unrealized_pnl(
    kind: str, contract_size: float, qty: float, entry_price: float, mark_price: float
) -> float: ...
def notional(kind: str, contract_size: float, qty: float, price: float) -> float: ...
def liquidation_price(
    kind: str,
    contract_size: float,
    qty: float,
    entry_price: float,
    balance: float,
    tiers: list[_Tier] | None,
    mmr: float,
    maintenance_amount: float,
) -> float | None: ...
def bankruptcy_price(
    kind: str, contract_size: float, qty: float, entry_price: float, balance: float
) -> float | None: ...
def tiered_value(value: float, size_tiers: list[tuple[float, float]]) -> float: ...
def adl_score(upnl: float, entry_value: float, notional: float, margin_balance: float) -> float: ...
def thread_count() -> int: ...
def note_fork_in_child() -> None: ...
def column_pool_held() -> tuple[int, int]: ...
def column_pool_clear() -> int: ...
