"""Result tables: named numpy columns with zero-copy exits to Arrow, polars and pandas."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    import pandas
    import polars


@dataclass(frozen=True)
class CategoryColumn:
    """A string column stored as integer codes into a short list of names (status,
    instrument): ``t[col]`` decodes it, ``to_arrow`` keeps it dictionary-encoded."""

    names: Sequence[str]
    codes: npt.NDArray[np.integer[Any]]

    def __len__(self) -> int:
        return len(self.codes)

    def decode(self) -> npt.NDArray[np.str_]:
        decoded: npt.NDArray[np.str_] = np.asarray(self.names, dtype=np.str_)[self.codes]
        return decoded

    def to_arrow(self) -> pa.DictionaryArray[Any, Any]:
        # Arrow dictionary indices are signed; reinterpret the unsigned codes in place.
        signed = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[self.codes.dtype.itemsize]
        indices = pa.array(self.codes.view(signed))
        return pa.DictionaryArray.from_arrays(indices, pa.array(list(self.names), pa.string()))


Column = npt.NDArray[Any] | CategoryColumn


class Table:
    """An ordered set of equally long columns.

    ``t["equity"]`` is a numpy array (string columns decode to ``str`` arrays);
    ``to_arrow()`` / ``to_polars()`` / ``to_pandas()`` share the numeric buffers.
    """

    def __init__(self, columns: Mapping[str, Column]) -> None:
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {lengths}")
        self._columns = dict(columns)
        self._rows = lengths.pop() if lengths else 0

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        column = self._columns[name]
        return column.decode() if isinstance(column, CategoryColumn) else column

    def codes(self, name: str) -> CategoryColumn:
        """The raw codes of a string column (no decoding)."""
        column = self._columns[name]
        if not isinstance(column, CategoryColumn):
            raise TypeError(f"{name!r} is not a string column")
        return column

    def to_arrow(self) -> pa.Table:
        arrays = [
            c.to_arrow() if isinstance(c, CategoryColumn) else pa.array(c)
            for c in self._columns.values()
        ]
        return pa.Table.from_arrays(arrays, names=self.columns)

    def to_polars(self) -> polars.DataFrame:
        import polars

        frame = polars.from_arrow(self.to_arrow(), rechunk=False)
        assert isinstance(frame, polars.DataFrame)
        return frame

    def to_pandas(self) -> pandas.DataFrame:
        import pandas

        # Built column by column (not through Arrow, whose conversion consolidates the
        # float columns into one new block) so numeric columns keep their buffers.
        data: dict[str, Any] = {
            name: pandas.Categorical.from_codes(
                c.codes.astype(np.int64), categories=cast(Any, list(c.names))
            )
            if isinstance(c, CategoryColumn)
            else c
            for name, c in self._columns.items()
        }
        return pandas.DataFrame(data, copy=False)

    def row(self, index: int) -> dict[str, Any]:
        """One row as a dict of Python scalars (for display and tests)."""
        return {name: self[name][index].item() for name in self._columns}

    def __repr__(self) -> str:
        return f"Table({self._rows} rows: {', '.join(self.columns)})"
