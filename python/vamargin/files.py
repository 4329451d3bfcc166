"""Reading input tables from files and writing result tables, for the command line.

Formats follow the file's extension: ``.parquet`` / ``.pq`` (Parquet), ``.csv`` (CSV with
a header row), ``.arrow`` / ``.feather`` / ``.ipc`` (Arrow IPC file or stream). Outputs
are written as Parquet, CSV or Arrow IPC by the same rule.

Columns the engine knows (``accounts.account_id``, ``holdings.amount``, …) are read with
their type: in a CSV every known column is parsed by this module rather than by type
inference, so a bad cell fails with the file, the column and the 0-based data row (the
header is not counted: row 0 is the file's second line), and an empty cell is a missing
value (``NaN`` for the optional ``isolated_margin``, ``leverage`` and ``credit_limit``
columns is written as an empty cell or ``nan``). A Parquet or Arrow column stored as
strings where numbers are expected is parsed the same way. Every other check (missing
columns, NaN, unknown accounts, …) is the engine's, whose ``DataError`` names the table,
column and row; :func:`locate` prefixes such a message with the file it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.feather as pa_feather
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from vamargin.errors import DataError
from vamargin.tables import Table

Format = Literal["parquet", "csv", "arrow"]

FORMATS: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}

_STRING = pa.string()
_INT = pa.int64()
_FLOAT = pa.float64()
_BOOL = pa.bool_()

SCHEMAS: dict[str, dict[str, pa.DataType]] = {
    "accounts": {
        "account_id": _INT,
        "investor_class": _STRING,
        "affiliate_market_maker": _BOOL,
        "credit_limit": _FLOAT,
        "margin_client": _BOOL,
        "credit_approved": _BOOL,
        "client_group": _STRING,
    },
    "holdings": {"account_id": _INT, "asset": _STRING, "amount": _FLOAT},
    "positions": {
        "account_id": _INT,
        "instrument": _STRING,
        "qty": _FLOAT,
        "entry_price": _FLOAT,
        "isolated_margin": _FLOAT,
        "leverage": _FLOAT,
        "funding_index": _FLOAT,
    },
    "prices": {"symbol": _STRING, "price": _FLOAT},
    "rates": {"instrument": _STRING, "rate": _FLOAT},
    "index": {"instrument": _STRING, "index": _FLOAT},
}
"""The column types of each input table the engine reads (other columns pass through)."""

_WHAT = {"int64": "an integer", "double": "a number", "bool": "true or false"}


class FileError(DataError):
    """A file that cannot be read as the table it should hold; the message starts with
    the file's path."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


def file_format(path: str | Path, *, role: str = "file") -> Format:
    """The format of ``path`` from its extension (``FileError`` if unknown)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        found = repr(suffix) if suffix else "no extension"
        raise FileError(path, f"cannot tell the {role}'s format from {found} (use {known})")
    return FORMATS[suffix]


def read_table(path: str | Path, table: str) -> pa.Table:
    """Reads ``path`` as the input table ``table`` (``accounts``, ``holdings``,
    ``positions``, ``prices``, ``rates``, or any other name for a table with no known
    columns), with the known columns typed; see the module docstring."""
    fmt = file_format(path, role=f"{table} file")
    source = Path(path)
    if not source.is_file():
        raise FileError(path, "no such file" if not source.exists() else "not a file")
    schema = SCHEMAS.get(table, {})
    try:
        if fmt == "csv":
            data = _read_csv(source, schema)
        elif fmt == "parquet":
            data = pq.read_table(source)
        else:
            data = _read_arrow(source)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise FileError(path, f"cannot read as {fmt}: {_one_line(error)}") from None
    except OSError as error:
        raise FileError(path, f"cannot read: {error.strerror or _one_line(error)}") from None
    return _typed(data, table, schema, path)


def _read_csv(path: Path, schema: Mapping[str, pa.DataType]) -> pa.Table:
    # Known columns come in as text (empty cell = null) and are parsed by ``_typed``,
    # which reports the first bad cell's row; other columns are inferred.
    convert = pa_csv.ConvertOptions(
        column_types={name: _STRING for name in schema},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    return pa_csv.read_csv(path, convert_options=convert)


def _read_arrow(path: Path) -> pa.Table:
    try:
        return pa_feather.read_table(path)
    except pa.ArrowInvalid:
        with pa.OSFile(str(path), "rb") as handle, pa_ipc.open_stream(handle) as reader:
            return reader.read_all()


def _typed(
    data: pa.Table, table: str, schema: Mapping[str, pa.DataType], path: str | Path
) -> pa.Table:
    for name, target in schema.items():
        if name not in data.column_names:
            continue
        column = data.column(name)
        value_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        is_text = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
        if target == _STRING or not is_text:
            continue  # typed by the file; the engine checks the type
        if pa.types.is_dictionary(column.type):
            column = column.cast(_STRING)
        parsed = _parse(column, target, table, name, path)
        data = data.set_column(data.column_names.index(name), name, parsed)
    return data


def _parse(
    column: pa.ChunkedArray[Any], target: pa.DataType, table: str, name: str, path: str | Path
) -> pa.ChunkedArray[Any]:
    text = pc.utf8_trim_whitespace(column)
    if target == _BOOL:
        text = pc.utf8_lower(text)
    try:
        return cast("pa.ChunkedArray[Any]", pc.cast(text, target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    flat = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    row = _first_unparsable(flat, target)
    value = flat[row].as_py()
    what = _WHAT.get(str(target), str(target))
    raise FileError(path, f"{table}.{name} row {row}: {value!r} is not {what}")


def _first_unparsable(values: pa.Array[Any], target: pa.DataType) -> int:
    """Row of the first value that does not cast to ``target`` (bisection: O(log n)
    casts), given that the whole array does not."""
    lo, hi = 0, len(values)  # the first bad row is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(values.slice(lo, mid - lo), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
        else:
            lo = mid
    return lo


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def read_tables(paths: Mapping[str, str | Path | None]) -> dict[str, pa.Table | None]:
    """``{table: path or None}`` → ``{table: pyarrow table or None}``."""
    return {table: None if p is None else read_table(p, table) for table, p in paths.items()}


# -- writing --------------------------------------------------------------------------------


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns decoded to strings (CSV cannot hold dictionaries)."""
    fields = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def write_table(table: Table | pa.Table, path: str | Path) -> Path:
    """Writes a result table to ``path`` as Parquet, CSV or Arrow IPC (by extension).
    CSV floats are written in their shortest round-trip form, so they read back exactly."""
    target = Path(path)
    fmt = file_format(target, role="output")
    data = table.to_arrow() if isinstance(table, Table) else table
    try:
        if fmt == "parquet":
            pq.write_table(data, target)
        elif fmt == "csv":
            pa_csv.write_csv(_plain(data), target)
        else:
            pa_feather.write_feather(data, str(target), compression="uncompressed")
    except OSError as error:
        raise FileError(path, f"cannot write: {error.strerror or _one_line(error)}") from None
    return target


# -- error messages ---------------------------------------------------------------------------

_LEADING_TABLE = re.compile(r"^([a-z_]+)(?=[.:\[ ])")


def locate(message: str, files: Mapping[str, str | Path | None]) -> str:
    """Prefixes an engine error message that starts with a table name (``holdings.amount
    row 3: …``, ``prices: missing …``) with the path of the file that table came from."""
    match = _LEADING_TABLE.match(message)
    if match is None:
        return message
    path = files.get(match.group(1))
    return message if path is None else f"{path}: {message}"
