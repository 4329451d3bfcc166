"""Scale-out (SPEC §11): the engine's kernels over a Dask cluster, on a Parquet book
partitioned by account.

**Layout.** ``write_dataset`` splits a book into ``N`` partitions by *contiguous ranges of
account_id* and writes one directory per table, one Parquet file per partition::

    path/_vamargin.json                 manifest (written last: a dataset without it is
                                        incomplete): boundaries, rows per file, format
    path/accounts/part-00000.parquet    partition 0's accounts, holdings and positions
    path/holdings/part-00000.parquet
    path/positions/part-00000.parquet
    path/accounts/part-00001.parquet …

Partition ``k`` holds the accounts with ``boundaries[k-1] ≤ account_id < boundaries[k]``
and every holding and position of those accounts, so each partition is a self-contained
``vm.Book``: an account's sums never cross a partition. Ranges (not a hash) keep an
account's partition a binary search away (``BookDataset.partition_of``), keep each file
sorted the way a database dump by primary key is, and let the boundaries be chosen so
that partitions carry similar work (accounts + holdings + positions rows). Within a
file rows keep their order in the input, and each row carries its row number in the
input table in an extra ``_row`` column (``ROW_COLUMN``; the Book ignores it).
Per-table directories can be read whole by any Parquet reader
(``pyarrow.dataset.dataset(path + "/positions")``).

**Running.** ``DaskRiskEngine(config, client=...)`` mirrors ``RiskEngine``: ``revalue``,
``funding``, ``liquidation_queue``, ``adl_queue`` and ``stress`` run one task per
partition; each task reads only its own three files, builds the partition's Book and
calls the same ``RiskEngine`` method on it. What comes back to the driver is the per-
partition results (tables), queue pieces already in queue order, and exact integer
funding totals — never the book. Without a client, Dask's default scheduler runs the
tasks (a ``distributed.Client`` made default, else local threads).

**Order of results** (``order=``):

- ``"partition"`` (default): rows of partition 0, then 1, …, each in file order; row
  numbers (``position_row``, plan ``row``) count in that concatenation;
- ``"original"``: rows and row numbers as in the tables given to ``write_dataset``
  (needs the ``_row`` column), so every result equals ``RiskEngine``'s on the original
  book bitwise.

**Identity with the single-machine engine.** Revaluation, funding payments and queues
are computed per account, so they are bitwise the local engine's. The liquidation queue
and the ADL queues are global orders: each worker returns its piece sorted by the
kernel's comparator and the driver merges the pieces (a stable sort of the runs on the
same total-order keys) and re-ranks (ADL: rank and quintile bucket per instrument and
side). Funding ``received`` / ``paid`` are sums of integers; ``house`` depends on the
*global* net open interest, so each worker returns its exact open interest per instrument
(``FundingSettlement.open_interest``: a Python integer in 1e-9 contracts, or Σ units ×
index move for the cumulative index) and the driver has the kernel settle the summed
total (``vamargin.funding.house_postings``); ``dust`` is then
``−(received + paid + house)`` as in the kernel. Stress counts are summed exactly; stress
amounts are float sums over partitions instead of one sweep, so they may differ from the
local engine's in the last bits (relative 1e-12 is far more than enough).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vamargin import _core
from vamargin._columns import to_arrow_table
from vamargin.book import Book
from vamargin.config import RiskConfig
from vamargin.engine import Revaluation, RiskEngine
from vamargin.errors import ConfigError, DataError, EligibilityError, MarginError
from vamargin.funding import FundingSettlement, category, house_postings, read_per_instrument
from vamargin.liquidation import LiquidationQueue
from vamargin.market import Prices, read_prices
from vamargin.scenarios import ScenarioSet, read_scenarios
from vamargin.stress import stress_table
from vamargin.tables import CategoryColumn, Column, Table

__all__ = [
    "MANIFEST",
    "ROW_COLUMN",
    "TABLES",
    "BookDataset",
    "DaskRiskEngine",
    "open_dataset",
    "write_dataset",
]

MANIFEST = "_vamargin.json"
"""The manifest file at the dataset's root."""
ROW_COLUMN = "_row"
"""Each row's number in the table given to ``write_dataset``."""
TABLES: tuple[str, ...] = ("accounts", "holdings", "positions")
FORMAT = "vamargin-book"
VERSION = 1
DEFAULT_ROWS_PER_PARTITION = 2_000_000
"""Without ``partitions=``: about this many rows (all three tables) per partition."""

Order = Literal["partition", "original"]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
T = TypeVar("T")


# -- the dataset on disk ------------------------------------------------------------------


def _location(path: str | os.PathLike[str]) -> str:
    """A URI as given, a local path made absolute (workers may run elsewhere)."""
    text = os.fspath(path)
    return text if "://" in text else os.path.abspath(text)


def _filesystem(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """A local path, or a URI pyarrow understands (``s3://…``, ``gs://…``, ``hdfs://…``):
    the storage every worker must see."""
    text = _location(path)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), text


def _file(root: str, table: str, partition: int) -> str:
    return f"{root}/{table}/part-{partition:05d}.parquet"


@dataclass(frozen=True)
class BookDataset:
    """A partitioned book on disk (see the module docstring); cheap to pickle: it holds
    the manifest, not the data. Open one with ``open_dataset``."""

    path: str
    boundaries: tuple[int, ...]
    """``len == n_partitions − 1``: partition ``k`` starts at ``boundaries[k-1]``."""
    rows: tuple[tuple[int, int, int], ...]
    """Per partition: rows of accounts, holdings, positions."""
    has_row_index: bool

    @property
    def n_partitions(self) -> int:
        return len(self.rows)

    @property
    def n_accounts(self) -> int:
        return sum(r[0] for r in self.rows)

    @property
    def n_holdings(self) -> int:
        return sum(r[1] for r in self.rows)

    @property
    def n_positions(self) -> int:
        return sum(r[2] for r in self.rows)

    def partition_of(self, account_id: int) -> int:
        """The partition that holds ``account_id`` (if it exists at all)."""
        return int(np.searchsorted(np.asarray(self.boundaries, np.int64), account_id, "right"))

    def offsets(self, table: str) -> I64:
        """Row offset of each partition in the partition-order concatenation of ``table``."""
        counts = np.array([r[TABLES.index(table)] for r in self.rows], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def read_table(self, table: str, partition: int) -> pa.Table:
        """One partition's file of ``table`` (only that file is read)."""
        filesystem, root = _filesystem(self.path)
        return pq.read_table(_file(root, table, partition), filesystem=filesystem)

    def partition(self, index: int) -> Book:
        """Partition ``index`` as a Book."""
        return self._load(index, "partition").book

    def _load(self, index: int, order: Order) -> _Partition:
        tables = [self.read_table(name, index) for name in TABLES]
        book = Book(*tables)
        if order == "original":
            if not self.has_row_index:
                raise DataError(
                    f"{self.path}: order='original' needs the {ROW_COLUMN!r} column "
                    "(datasets written by write_dataset have it)"
                )
            rows = [_row_column(t) for t in tables]
        else:
            rows = [
                self.offsets(name)[index] + np.arange(t.num_rows, dtype=np.int64)
                for name, t in zip(TABLES, tables, strict=True)
            ]
        return _Partition(book, rows[0], rows[1], rows[2])

    def __repr__(self) -> str:
        return (
            f"BookDataset({self.path!r}: {self.n_partitions} partitions, {self.n_accounts} "
            f"accounts, {self.n_holdings} holdings, {self.n_positions} positions)"
        )


@dataclass(frozen=True)
class _Partition:
    """A partition's Book and, per table, each row's number in the chosen order."""

    book: Book
    account_rows: I64
    holding_rows: I64
    position_rows: I64


def _row_column(table: pa.Table) -> I64:
    rows: I64 = np.asarray(table.column(ROW_COLUMN).to_numpy(zero_copy_only=False), dtype=np.int64)
    return rows


def write_dataset(
    accounts: Any,
    holdings: Any,
    positions: Any,
    path: str | os.PathLike[str],
    *,
    partitions: int | None = None,
    boundaries: Sequence[int] | None = None,
    overwrite: bool = False,
) -> BookDataset:
    """Writes a book as a dataset partitioned by ranges of ``account_id`` (module docstring).

    The tables are those ``vm.Book`` accepts (``holdings`` / ``positions`` may be
    ``None``); they are checked as ``vm.Book`` checks them before anything is written.
    ``partitions`` (default: one per ``DEFAULT_ROWS_PER_PARTITION`` rows) sets how many
    ranges; their boundaries are chosen so that each holds about the same number of rows
    (accounts + holdings + positions). Or give ``boundaries`` yourself: the account ids
    where partitions 1, 2, … start (non-decreasing; equal ones make empty partitions).
    An existing dataset at ``path`` is replaced only with ``overwrite=True``.
    """
    book = Book(accounts, holdings, positions)  # the structural checks, with input rows
    tables = [
        to_arrow_table(accounts, "accounts"),
        to_arrow_table(_empty_holdings() if holdings is None else holdings, "holdings"),
        to_arrow_table(_empty_positions() if positions is None else positions, "positions"),
    ]
    for name, table in zip(TABLES, tables, strict=True):
        if ROW_COLUMN in table.column_names:
            raise DataError(f"{name}: column {ROW_COLUMN!r} is reserved for the row index")
    owners = [book.account_id, book.holding_account_id, book.position_account_id]
    cuts = _boundaries(book, partitions, boundaries)
    part_of = [np.searchsorted(cuts, ids, side="right") for ids in owners]
    n = len(cuts) + 1

    filesystem, root = _filesystem(path)
    _prepare_root(filesystem, root, overwrite)
    for name in TABLES:
        filesystem.create_dir(f"{root}/{name}", recursive=True)

    def write(job: tuple[int, int]) -> int:
        t, k = job
        rows = np.flatnonzero(part_of[t] == k)
        piece = tables[t].take(rows).append_column(ROW_COLUMN, pa.array(rows))
        pq.write_table(piece, _file(root, TABLES[t], k), filesystem=filesystem)
        return len(rows)

    jobs = [(t, k) for k in range(n) for t in range(len(TABLES))]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        counts = list(pool.map(write, jobs))
    rows = tuple((counts[3 * k], counts[3 * k + 1], counts[3 * k + 2]) for k in range(n))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "partitioning": "account_id ranges",
        "boundaries": [int(b) for b in cuts],
        "tables": list(TABLES),
        "row_index": ROW_COLUMN,
        "partitions": [dict(zip(TABLES, r, strict=True)) for r in rows],
    }
    with filesystem.open_output_stream(f"{root}/{MANIFEST}") as out:
        out.write(json.dumps(manifest, indent=1).encode("utf-8"))
    return BookDataset(_location(path), tuple(int(b) for b in cuts), rows, True)


def open_dataset(path: str | os.PathLike[str]) -> BookDataset:
    """Opens a dataset lazily: reads the manifest only."""
    filesystem, root = _filesystem(path)
    try:
        with filesystem.open_input_stream(f"{root}/{MANIFEST}") as source:
            manifest = json.loads(source.read().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"{os.fspath(path)}: no {MANIFEST} (not a complete dataset)") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(
            f"{os.fspath(path)}/{MANIFEST}: not a {FORMAT} dataset of version {VERSION}"
        )
    rows = tuple(
        (int(p["accounts"]), int(p["holdings"]), int(p["positions"]))
        for p in manifest["partitions"]
    )
    cuts = tuple(int(b) for b in manifest["boundaries"])
    if len(cuts) != len(rows) - 1:
        raise DataError(f"{os.fspath(path)}/{MANIFEST}: boundaries do not match partitions")
    return BookDataset(_location(path), cuts, rows, manifest.get("row_index") == ROW_COLUMN)


def _empty_holdings() -> dict[str, Any]:
    return {
        "account_id": np.zeros(0, np.int64),
        "asset": np.zeros(0, np.str_),
        "amount": np.zeros(0),
    }


def _empty_positions() -> dict[str, Any]:
    return {
        "account_id": np.zeros(0, np.int64),
        "instrument": np.zeros(0, np.str_),
        "qty": np.zeros(0),
        "entry_price": np.zeros(0),
    }


def _boundaries(book: Book, partitions: int | None, given: Sequence[int] | None) -> I64:
    if given is not None:
        if partitions is not None and partitions != len(given) + 1:
            raise DataError(
                f"partitions={partitions} but {len(given)} boundaries make {len(given) + 1}"
            )
        chosen = np.asarray(given, dtype=np.int64)
        if chosen.ndim != 1 or (np.diff(chosen) < 0).any():
            raise DataError("boundaries: must be a non-decreasing list of account ids")
        return chosen
    weight = (
        1
        + np.bincount(book.holding_account, minlength=book.n_accounts)
        + np.bincount(book.position_account, minlength=book.n_accounts)
    )
    if partitions is None:
        partitions = max(1, math.ceil(int(weight.sum()) / DEFAULT_ROWS_PER_PARTITION))
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise DataError(f"partitions: {partitions!r} is not a whole number ≥ 1")
    order = np.argsort(book.account_id, kind="stable")
    ids = book.account_id[order]
    cumulative = np.cumsum(weight[order])
    total = int(cumulative[-1]) if len(cumulative) else 0
    # Partition k starts at the first account whose rows reach k/N of all rows.
    targets = np.arange(1, partitions) * total / partitions
    starts = np.searchsorted(cumulative, targets, side="right")
    last = ids[-1] + 1 if len(ids) else 0
    cuts: I64 = np.where(starts < len(ids), ids[np.minimum(starts, len(ids) - 1)], last)
    return cuts.astype(np.int64)


def _prepare_root(filesystem: pafs.FileSystem, root: str, overwrite: bool) -> None:
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        filesystem.create_dir(root, recursive=True)
        return
    if info.type != pafs.FileType.Directory:
        raise FileExistsError(f"{root}: exists and is not a directory")
    entries = filesystem.get_file_info(pafs.FileSelector(root))
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{root}: not empty (overwrite=True replaces a dataset there)")
    ours = {MANIFEST, *TABLES}
    strangers = [e.base_name for e in entries if e.base_name not in ours]
    if strangers:
        raise FileExistsError(f"{root}: holds files that are not a dataset's: {strangers[:5]}")
    for entry in entries:  # the manifest first: a half-deleted dataset is incomplete
        if entry.base_name == MANIFEST:
            filesystem.delete_file(entry.path)
    for entry in entries:
        if entry.type == pafs.FileType.Directory:
            filesystem.delete_dir(entry.path)


# -- shipping the configuration ------------------------------------------------------------


@dataclass(frozen=True)
class _Shipment:
    """A configuration as bytes (its kernel parameters are not picklable), rebuilt once
    per worker process."""

    fields: bytes
    token: str


_ENGINES: dict[str, RiskEngine] = {}
_ENGINES_LOCK = threading.Lock()


def _ship(config: RiskConfig) -> _Shipment:
    fields = pickle.dumps(
        (config.assets, config.perpetuals, config.policy, config.reporting_currency)
    )
    return _Shipment(fields, hashlib.sha256(fields).hexdigest())


def _engine(shipment: _Shipment) -> RiskEngine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(shipment.token)
        if engine is None:
            if len(_ENGINES) >= 8:
                _ENGINES.clear()
            engine = RiskEngine(RiskConfig(*pickle.loads(shipment.fields)))
            _ENGINES[shipment.token] = engine
        return engine


_ERRORS: dict[str, type[MarginError]] = {
    error.__name__: error for error in (MarginError, ConfigError, DataError, EligibilityError)
}


def _in_partition(index: int, work: Callable[[], T]) -> T:
    """Runs ``work``; an error names the partition (row numbers in it are the file's)."""
    try:
        return work()
    except MarginError as error:
        # The vamargin error classes pickle, so the driver re-raises the worker's own.
        kind = _ERRORS.get(type(error).__name__, MarginError)
        raise kind(f"partition {index}: {error}") from None


# -- exact funding totals ------------------------------------------------------------------

# -- per-partition tasks -------------------------------------------------------------------


@dataclass(frozen=True)
class _FundingPiece:
    payments: I64
    position_rows: I64
    by_account: Table
    by_account_rows: I64
    instruments: list[int]
    received: list[int]
    paid: list[int]
    open_interest: dict[str, int]


@dataclass(frozen=True)
class _AdlPiece:
    queue: Table
    isolated: npt.NDArray[np.bool_]


def _revalue_task(
    shipment: _Shipment, dataset: BookDataset, index: int, order: Order, prices: dict[str, float]
) -> tuple[Revaluation, I64, I64]:
    def work() -> tuple[Revaluation, I64, I64]:
        part = dataset._load(index, order)
        result = _engine(shipment).revalue(part.book, prices)
        return result, part.account_rows, part.position_rows

    return _in_partition(index, work)


def _funding_task(
    shipment: _Shipment,
    dataset: BookDataset,
    index: int,
    order: Order,
    rates: dict[str, float] | None,
    prices: dict[str, float] | None,
    index_now: dict[str, float] | None,
) -> _FundingPiece:
    def work() -> _FundingPiece:
        engine = _engine(shipment)
        part = dataset._load(index, order)
        book = part.book
        settlement = engine.funding(book, rates, prices, index=index_now)
        by_instrument = settlement.by_instrument
        instruments = by_instrument.codes("instrument").codes.astype(np.int64).tolist()
        ids = settlement.by_account["account_id"]
        sorter = np.argsort(book.account_id, kind="stable")
        local = sorter[np.searchsorted(book.account_id[sorter], ids)]
        return _FundingPiece(
            payments=settlement.payments,
            position_rows=part.position_rows,
            by_account=settlement.by_account,
            by_account_rows=part.account_rows[local],
            instruments=instruments,
            received=by_instrument["received"].tolist(),
            paid=by_instrument["paid"].tolist(),
            open_interest=settlement.open_interest,
        )

    return _in_partition(index, work)


def _queue_task(
    shipment: _Shipment, dataset: BookDataset, index: int, order: Order, prices: dict[str, float]
) -> LiquidationQueue:
    def work() -> LiquidationQueue:
        part = dataset._load(index, order)
        queue = _engine(shipment).liquidation_queue(part.book, prices)
        position_row = queue["position_row"]
        isolated = position_row >= 0
        mapped = np.full(len(position_row), -1, dtype=np.int64)
        mapped[isolated] = part.position_rows[position_row[isolated]]
        plan = queue.plan
        local = plan["row"]
        is_holding = plan.codes("kind").codes == 1
        rows = np.empty(len(local), dtype=np.int64)
        rows[is_holding] = part.holding_rows[local[is_holding]]
        rows[~is_holding] = part.position_rows[local[~is_holding]]
        return LiquidationQueue(
            _replace(queue, "position_row", mapped), Table(_replace(plan, "row", rows))
        )

    return _in_partition(index, work)


def _adl_task(
    shipment: _Shipment, dataset: BookDataset, index: int, order: Order, prices: dict[str, float]
) -> _AdlPiece:
    def work() -> _AdlPiece:
        part = dataset._load(index, order)
        queue = _engine(shipment).adl_queue(part.book, prices)
        local = queue["position_row"]
        margin = part.book.isolated_margin
        isolated = (
            np.zeros(len(local), dtype=np.bool_) if margin is None else ~np.isnan(margin[local])
        )
        mapped = part.position_rows[local] if len(local) else local
        return _AdlPiece(Table(_replace(queue, "position_row", mapped)), isolated)

    return _in_partition(index, work)


def _stress_task(
    shipment: _Shipment,
    dataset: BookDataset,
    index: int,
    prices: dict[str, float],
    scenarios: ScenarioSet,
) -> Table:
    def work() -> Table:
        book = dataset._load(index, "partition").book
        return _engine(shipment).stress(book, prices, scenarios)

    return _in_partition(index, work)


# -- merging on the driver -----------------------------------------------------------------


def _column(table: Table, name: str) -> Column:
    try:
        return table.codes(name)
    except TypeError:
        return table[name]


def _replace(table: Table, name: str, values: npt.NDArray[Any]) -> dict[str, Column]:
    return {c: values if c == name else _column(table, c) for c in table.columns}


def _concat(tables: Sequence[Table]) -> dict[str, Column]:
    """Columns of equally shaped tables, one after the other (codes of string columns)."""
    out: dict[str, Column] = {}
    for name in tables[0].columns:
        first = _column(tables[0], name)
        if isinstance(first, CategoryColumn):
            codes = [t.codes(name).codes for t in tables]
            out[name] = CategoryColumn(first.names, np.concatenate(codes))
        else:
            out[name] = np.concatenate([t[name] for t in tables])
    return out


def _take(columns: Mapping[str, Column], index: npt.NDArray[np.int64]) -> dict[str, Column]:
    return {
        name: CategoryColumn(c.names, c.codes[index]) if isinstance(c, CategoryColumn) else c[index]
        for name, c in columns.items()
    }


def _inverse(rows: I64, n: int, what: str) -> I64:
    """The gather index that puts rows numbered ``rows`` at those positions."""
    if len(rows) != n or (n and (rows.min() < 0 or rows.max() >= n)):
        raise DataError(f"{what}: row index does not cover 0..{n - 1}")
    inverse = np.full(n, -1, dtype=np.int64)
    inverse[rows] = np.arange(n, dtype=np.int64)
    if n and (inverse < 0).any():
        raise DataError(f"{what}: row index repeats a row")
    return inverse


def _total_order(values: F64) -> I64:
    """Integers that sort like ``f64::total_cmp`` (−0.0 before +0.0, NaNs at the ends)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    key: I64 = bits ^ ((bits >> np.int64(63)) & np.int64(0x7FFF_FFFF_FFFF_FFFF))
    return key


def _merge(pieces: Sequence[Sequence[npt.NDArray[Any]]], what: str) -> I64:
    """Merges runs that are each sorted by the lexicographic ``keys`` (most significant
    first) into one order over their concatenation. Each run's order is checked first: a
    run out of order means these keys no longer mirror the kernel's comparator."""
    for p, keys in enumerate(pieces):
        if len(keys[0]) > 1 and not _ascending(keys):
            raise RuntimeError(f"{what}: partition {p}'s piece is not in queue order")
    columns = [np.concatenate([keys[k] for keys in pieces]) for k in range(len(pieces[0]))]
    order: I64 = np.lexsort(columns[::-1]).astype(np.int64)
    return order


def _ascending(keys: Sequence[npt.NDArray[Any]]) -> bool:
    """Strictly ascending in lexicographic order of ``keys`` (unique keys)."""
    decided = np.zeros(len(keys[0]) - 1, dtype=np.bool_)
    for column in keys:
        before, after = column[:-1], column[1:]
        if ((before > after) & ~decided).any():
            return False
        decided |= before < after
    return bool(decided.all())


# -- the engine ----------------------------------------------------------------------------


class DaskRiskEngine:
    """``RiskEngine`` over a ``BookDataset`` on a Dask cluster (see the module docstring).

    ``client`` is a ``distributed.Client``; without one, Dask's default scheduler runs the
    tasks. Results have the local engine's types and columns.
    """

    def __init__(self, config: RiskConfig | None = None, *, client: Any = None) -> None:
        self.config = RiskConfig.hk_default() if config is None else config
        self.client = client
        self._shipment = _ship(self.config)

    def _run(self, task: Callable[..., T], dataset: BookDataset, *args: Any) -> list[T]:
        from dask.base import compute
        from dask.delayed import delayed

        tasks = [
            delayed(task, pure=True)(self._shipment, dataset, index, *args)
            for index in range(dataset.n_partitions)
        ]
        scheduler = self.client if self.client is not None else None
        results: tuple[T, ...] = compute(*tasks, scheduler=scheduler)
        return list(results)

    def revalue(
        self, dataset: BookDataset, prices: Prices, *, order: Order = "partition"
    ) -> Revaluation:
        """``RiskEngine.revalue`` per partition, concatenated in ``order``."""
        pieces = self._run(_revalue_task, dataset, _order(order), read_prices(prices))
        accounts = _concat([p[0].accounts for p in pieces])
        positions = _concat([p[0].positions for p in pieces])
        account_rows = np.concatenate([p[1] for p in pieces])
        position_rows = np.concatenate([p[2] for p in pieces])
        if order == "original":
            accounts = _take(accounts, _inverse(account_rows, dataset.n_accounts, "accounts"))
            positions = _take(positions, _inverse(position_rows, dataset.n_positions, "positions"))
        return Revaluation(accounts=Table(accounts), positions=Table(positions))

    def funding(
        self,
        dataset: BookDataset,
        rates: Any = None,
        prices: Prices | None = None,
        *,
        index: Any = None,
        order: Order = "partition",
    ) -> FundingSettlement:
        """``RiskEngine.funding`` per partition; per instrument, ``received`` and ``paid``
        are summed, ``house`` is settled on the global open interest by the kernel and
        ``dust`` balances the postings, exactly as in one settlement of the whole book."""
        config = self.config
        if index is None:
            if rates is None or prices is None:
                raise DataError(
                    "funding: give rates and prices (one interval), or index= (cumulative)"
                )
            parsed_rates: dict[str, float] | None = read_per_instrument(rates, "rates", "rate")
            parsed_prices: dict[str, float] | None = read_prices(prices)
            parsed_index = None
        else:
            parsed_rates = parsed_prices = None
            parsed_index = read_per_instrument(index, "index", "index")
        pieces = self._run(
            _funding_task, dataset, _order(order), parsed_rates, parsed_prices, parsed_index
        )
        n_instruments = len(config.perpetuals)
        received = [0] * n_instruments
        paid = [0] * n_instruments
        symbols = [p.symbol for p in config.perpetuals]
        open_interest: dict[str, int] = {}
        used = np.zeros(n_instruments, dtype=np.bool_)
        for piece in pieces:
            for i, r, p in zip(piece.instruments, piece.received, piece.paid, strict=True):
                used[i] = True
                received[i] += r
                paid[i] += p
            for symbol, total in piece.open_interest.items():
                open_interest[symbol] = open_interest.get(symbol, 0) + total
        ids = np.flatnonzero(used)
        totals = {int(i): open_interest[symbols[i]] for i in ids}
        by_symbol = house_postings(
            config,
            {symbols[i]: total for i, total in totals.items()},
            rates=parsed_rates,
            marks=parsed_prices,
        )
        house = {i: by_symbol[symbols[i]] for i in totals}
        dust: dict[int, int] = {}
        for i in totals:
            for what, value in (("received", received[i]), ("paid", paid[i])):
                if not -(2**63) <= value < 2**63:
                    raise DataError(f"funding: {what} of {symbols[i]} is beyond int64")
            dust[i] = -(received[i] + paid[i] + house[i])
            if not 0 <= dust[i] < 2**63:
                raise DataError(
                    f"funding: dust of {symbols[i]} {dust[i]} (postings do not balance)"
                )

        payments = np.concatenate([p.payments for p in pieces])
        position_rows = np.concatenate([p.position_rows for p in pieces])
        by_account = _concat([p.by_account for p in pieces])
        account_rows = np.concatenate([p.by_account_rows for p in pieces])
        if order == "original":
            payments = payments[_inverse(position_rows, dataset.n_positions, "positions")]
            assets = by_account["asset"]
            assert isinstance(assets, CategoryColumn)
            by_account = _take(by_account, np.lexsort((assets.codes, account_rows)))
        asset_names = [a.symbol for a in config.assets]
        settle_of = np.array([config.asset_ids[p.settle] for p in config.perpetuals], np.uint32)
        by_instrument = Table(
            {
                "instrument": category(symbols, ids),
                "settle": category(asset_names, settle_of[ids]),
                "minor_unit": np.array([config.assets[settle_of[i]].minor_unit for i in ids]),
                "received": np.array([received[i] for i in ids], dtype=np.int64),
                "paid": np.array([paid[i] for i in ids], dtype=np.int64),
                "house": np.array([house[int(i)] for i in ids], dtype=np.int64),
                "dust": np.array([dust[int(i)] for i in ids], dtype=np.int64),
            }
        )
        return FundingSettlement(
            payments=payments,
            by_account=Table(by_account),
            by_instrument=by_instrument,
            dust={symbols[i]: dust[i] for i in totals},
            house={symbols[i]: house[i] for i in totals},
            open_interest={symbols[i]: totals[i] for i in totals},
        )

    def liquidation_queue(
        self, dataset: BookDataset, prices: Prices, *, order: Order = "partition"
    ) -> LiquidationQueue:
        """The global liquidation queue: each partition's queue (with its plans) merged by
        health ascending, deficit descending, account id, then the account's cross book
        before its isolated positions by instrument, and ranked 1…n."""
        pieces = self._run(_queue_task, dataset, _order(order), read_prices(prices))
        keys = [
            (
                _total_order(q["health"]),
                ~_total_order(q["deficit"]),
                q["account_id"],
                q.codes("instrument").codes.astype(np.int64),  # 0 = account, then id + 1
            )
            for q in pieces
        ]
        merged = _merge(keys, "liquidation queue")
        entries = _concat(pieces)
        steps = np.concatenate([q["plan_steps"] for q in pieces]).astype(np.int64)
        plan = _concat([q.plan for q in pieces])
        starts = np.cumsum(steps) - steps
        lengths = steps[merged]
        first = np.cumsum(lengths) - lengths
        step_index = np.repeat(starts[merged] - first, lengths) + np.arange(
            int(lengths.sum()), dtype=np.int64
        )
        entries = _take(entries, merged)
        rank = np.arange(1, len(merged) + 1, dtype=np.int64)
        entries["rank"] = rank
        plan = _take(plan, step_index)
        plan["rank"] = np.repeat(rank, lengths)
        return LiquidationQueue(entries, Table(plan))

    def adl_queue(
        self, dataset: BookDataset, prices: Prices, *, order: Order = "partition"
    ) -> Table:
        """The global ADL queues: per instrument and side (longs first), each partition's
        positions merged by score descending, account id, cross before isolated; ranks
        and quintile buckets recomputed over the whole queue."""
        pieces = self._run(_adl_task, dataset, _order(order), read_prices(prices))
        keys = [
            (
                p.queue.codes("instrument").codes.astype(np.int64),
                -p.queue.codes("side").codes.astype(np.int64),  # long (1) first
                ~_total_order(p.queue["score"]),
                p.queue["account_id"],
                p.isolated.astype(np.int64),
            )
            for p in pieces
        ]
        merged = _merge(keys, "ADL queue")
        columns = _take(_concat([p.queue for p in pieces]), merged)
        instrument = columns["instrument"]
        side = columns["side"]
        assert isinstance(instrument, CategoryColumn)
        assert isinstance(side, CategoryColumn)
        queue_key = instrument.codes.astype(np.int64) * 2 + side.codes
        n = len(queue_key)
        starts = np.flatnonzero(np.concatenate([[True], queue_key[1:] != queue_key[:-1]]))
        if n == 0:
            starts = starts[:0]
        sizes = np.diff(np.append(starts, n))
        rank0 = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
        size = np.repeat(sizes, sizes)
        columns["rank"] = rank0 + 1
        columns["bucket"] = (5 - (5 * rank0) // np.maximum(size, 1)).astype(np.uint8)
        return Table(columns)

    def stress(
        self,
        dataset: BookDataset,
        prices: Prices,
        scenarios: Any,
        *,
        excess_liquid_capital: float | None = None,
    ) -> Table:
        """``RiskEngine.stress`` per partition, totalled per scenario: the counts exactly;
        the amounts as float sums of the partitions' totals, which add the same account
        figures as the local sweep in another grouping, so they agree with it to rounding
        (relative 1e-12), not bitwise. ``capital_shortfall`` is taken on the summed
        broker loss, as the local engine takes it on its total."""
        if excess_liquid_capital is not None and not (
            isinstance(excess_liquid_capital, int | float) and np.isfinite(excess_liquid_capital)
        ):
            raise DataError(f"excess_liquid_capital: {excess_liquid_capital!r} is not a number")
        parsed = read_scenarios(scenarios)  # files and shipped sets are read here, once
        pieces = self._run(_stress_task, dataset, read_prices(prices), parsed)
        names = list(parsed)
        statuses = list(_core.STATUS_NAMES)

        def total(column: str) -> npt.NDArray[Any]:
            summed: npt.NDArray[Any] = np.sum([p[column] for p in pieces], axis=0)
            return summed

        raw = {
            "accounts_by_status": np.stack([total(s) for s in statuses], axis=1),
            "isolated_liquidations": total("isolated_liquidations"),
            "call_amount": total("call_amount"),
            "insurance_draw": total("insurance_draw"),
            "broker_loss": total("broker_loss"),
        }
        return stress_table(names, raw, excess_liquid_capital)


def _order(order: str) -> Order:
    if order not in ("partition", "original"):
        raise DataError(f"order: {order!r} is not 'partition' or 'original'")
    return order  # type: ignore[return-value]
