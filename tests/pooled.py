"""Set-up shared by the column-pool tests (``test_engine``, ``test_funding``)."""

from __future__ import annotations

import vamargin as vm
from vamargin import _core
from vamargin.synthetic import SyntheticBook, synthetic_book


def bound_in_empty_pool(n_accounts: int, seed: int) -> tuple[SyntheticBook, vm.Book, vm.RiskEngine]:
    """A synthetic book of ``n_accounts`` (a count no other test uses), bound to a default
    engine's config, then the column pool emptied: binding frees a column of grouping
    keys to it, and earlier tests may have left columns there."""
    synthetic = synthetic_book(n_accounts=n_accounts, seed=seed)
    book = vm.Book(synthetic.accounts, synthetic.holdings, synthetic.positions)
    engine = vm.RiskEngine()
    book.bind(engine.config)
    _core.column_pool_clear()
    return synthetic, book, engine
