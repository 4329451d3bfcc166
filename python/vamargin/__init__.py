"""vamargin: margin and risk engine for Hong Kong licensed virtual-asset brokers (margin
financing against BTC and ETH) and trading platforms (perpetuals for professional
investors). The hot paths run in Rust (``vamargin._core``); this package holds the domain
model, configuration and tools.

    import vamargin as vm
    engine = vm.RiskEngine(vm.RiskConfig.hk_default())
    result = engine.revalue(vm.Book(accounts=..., holdings=..., positions=...), prices)
"""

from vamargin import calc
from vamargin._core import __version__
from vamargin.book import INVESTOR_CLASSES, Book
from vamargin.config import (
    AssetSpec,
    FundingSpec,
    MarginTier,
    PerpetualSpec,
    Policy,
    RiskConfig,
    SizeTier,
)
from vamargin.engine import STATUSES, Revaluation, RiskEngine
from vamargin.errors import ConfigError, DataError, EligibilityError, MarginError
from vamargin.tables import Table

__all__ = [
    "INVESTOR_CLASSES",
    "STATUSES",
    "AssetSpec",
    "Book",
    "ConfigError",
    "DataError",
    "EligibilityError",
    "FundingSpec",
    "MarginError",
    "MarginTier",
    "PerpetualSpec",
    "Policy",
    "Revaluation",
    "RiskConfig",
    "RiskEngine",
    "SizeTier",
    "Table",
    "__version__",
    "calc",
]
