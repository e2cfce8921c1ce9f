"""Tables of named columns without pandas: the run path's track and variant tables.

A run reads a track table and its variant tables, keeps some of their columns and
writes them beside the scores.  Holding them in pandas cost every run pandas' import
(0.3 s, half of a run at a tenth of the study's size) for nothing that numpy cannot
do: :class:`Columns` is an ordered set of equal-length 1-D numpy arrays (``# n``
each; text as object arrays of ``str``), with the few operations the run path needs.
The public functions that return tables (:func:`perturbscore.read_targets`,
:func:`perturbscore.select_tracks`, :func:`perturbscore.read_variants`) still return
pandas DataFrames, converted at the boundary by :meth:`Columns.to_frame`.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Text values :meth:`Columns.nbytes` measures per column.
SIZE_SAMPLE = 2048


def _column(values: Any) -> np.ndarray:
    """One column as a 1-D numpy array (kept as it is); anything else as an object array."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values
    arr = np.empty(len(values), dtype=object)
    arr[:] = values if isinstance(values, list) else list(values)
    return arr


def _object_bytes(sample: list[Any], n: int) -> int:
    """Bytes of a column's ``n`` objects, from an evenly spaced ``sample`` of them."""
    times = Counter(map(id, sample))
    once = sum(sys.getsizeof(x) for x in sample if times[id(x)] == 1)
    again = sum(sys.getsizeof(x) for x in {id(x): x for x in sample if times[id(x)] > 1}.values())
    return once * n // len(sample) + again


class Columns:
    """Named 1-D columns of equal length (``# n`` each), in order.

    Parameters
    ----------
    data : mapping of str to sequence
        Column name -> values; 1-D numpy arrays are kept as they are (not copied),
        anything else becomes an object array.
    rows : int, optional
        The number of rows; needed only when there is no column.
    attrs : mapping, optional
        Facts about the table for messages (``header``: every column of the file).
    """

    __slots__ = ("_data", "_rows", "attrs")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        rows: int | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self._data = {str(k): _column(v) for k, v in (data or {}).items()}
        lengths = {len(v) for v in self._data.values()}
        if len(lengths) > 1 or (rows is not None and lengths and lengths != {rows}):
            raise ValueError(f"columns of unequal length: {sorted(lengths)} (rows {rows})")
        self._rows = lengths.pop() if lengths else int(rows or 0)
        self.attrs: dict[str, Any] = dict(attrs or {})

    # ------------------------------------------------------------------ reading

    @property
    def columns(self) -> list[str]:
        return list(self._data)

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name]

    def row(self, i: int) -> list[Any]:
        """Row ``i``'s values, in column order (Python objects)."""
        return [v[i].item() if isinstance(v[i], np.generic) else v[i] for v in self._data.values()]

    def records(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Each row as a dict of Python values (``names``: those columns, in that order)."""
        cols = {n: self._data[n].tolist() for n in (self.columns if names is None else names)}
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]

    def nbytes(self, sizes: dict[int, int] | None = None) -> int:
        """Bytes the table holds: its arrays and their text values' objects.

        Text is measured on at most :data:`SIZE_SAMPLE` evenly spaced values per column
        (a memory plan needs the size, not to the byte; measuring every value of a
        study's tables took 10 ms).  An object met more than once in the sample (a
        one-letter allele, which CPython shares; a class label) is held once and counted
        once; one met once stands for as many values as the sample's step.  ``sizes``:
        bytes of the arrays measured already, by ``id`` (tables sharing columns, as the
        batches of one variant table do, count them once); an array in it counts 0 here,
        and the arrays measured here are added to it.
        """
        total = 0
        for v in self._data.values():
            if sizes is not None and id(v) in sizes:
                continue
            size = int(v.nbytes)
            if v.dtype == object and len(v):
                step = max(1, len(v) // SIZE_SAMPLE)
                size += _object_bytes(v[::step].tolist(), len(v))
            if sizes is not None:
                sizes[id(v)] = size
            total += size
        return total

    # ------------------------------------------------------------------ new tables

    def pick(self, names: Iterable[str]) -> Columns:
        """These columns, in this order (the arrays are shared, not copied)."""
        return Columns({n: self._data[n] for n in names}, self._rows, self.attrs)

    def rows(self, which: slice | np.ndarray) -> Columns:
        """The rows a slice, a boolean mask or an array of positions selects."""
        if isinstance(which, slice):
            n = len(range(*which.indices(self._rows)))
        else:
            which = np.asarray(which)
            n = int(which.sum()) if which.dtype == bool else len(which)
        return Columns({k: v[which] for k, v in self._data.items()}, n, self.attrs)

    def with_column(self, name: str, values: Any) -> Columns:
        """A copy with the column ``name`` added (or replaced) at the end."""
        data = dict(self._data)
        data[name] = values
        return Columns(data, self._rows, self.attrs)

    @classmethod
    def concat(cls, parts: Sequence[Columns], names: Sequence[str]) -> Columns:
        """The rows of ``parts`` one after another, columns ``names`` of each."""
        rows = sum(len(p) for p in parts)
        if not parts:
            return cls({n: np.empty(0, dtype=object) for n in names}, 0)
        return cls({n: np.concatenate([p[n] for p in parts]) for n in names}, rows)

    # ------------------------------------------------------------------ pandas

    @classmethod
    def from_frame(cls, frame: Any) -> Columns:
        """A pandas DataFrame's columns (text as Python strings, missing values as None)."""
        data = {}
        for name in frame.columns:
            col = frame[name]
            if col.dtype.kind in "biuf":
                data[str(name)] = col.to_numpy()
            else:
                data[str(name)] = col.astype(object).where(col.notna(), None).to_numpy(object)
        return cls(data, len(frame), dict(getattr(frame, "attrs", {})))

    def to_frame(self) -> Any:
        """The table as a pandas DataFrame (text columns in pandas' text dtype)."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                n: pd.Series(v, dtype=str if v.dtype == object else v.dtype)
                for n, v in self._data.items()
            },
            columns=self.columns,
            index=pd.RangeIndex(self._rows),
        )
        frame.attrs.update(self.attrs)
        return frame


def as_columns(table: Any) -> Columns:
    """``table`` as :class:`Columns` (a DataFrame is converted; Columns pass through)."""
    return table if isinstance(table, Columns) else Columns.from_frame(table)
