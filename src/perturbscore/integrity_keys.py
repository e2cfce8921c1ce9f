"""Row identity for the integrity checks: ID keys, and 64-bit hashes of keys and vectors.

An ID key joins a variant row's ID columns (:func:`id_keys`); the cross-group check
compares the keys found in several groups (:func:`keys_in_several_groups`).
:func:`row_hashes` hashes each score row's exact bits (``# n K`` float64 ->
``uint64 # n``) so that the duplicate-vector check (:mod:`.integrity`) keeps a 28-byte
:data:`RECORD` per row instead of the row; :func:`string_hashes` hashes ID keys stably
(not Python's salted ``hash``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Separates ID columns in an ID key (a unit separator: never inside a table cell).
KEY_SEP = "\x1f"
#: One hashed row: vector hash, ID-key hash (0 when keys are looked up at the end),
#: batch number, 0-based row; 28 bytes.
RECORD = np.dtype([("h", "u8"), ("k", "u8"), ("b", "i4"), ("r", "i8")])
#: Columns :func:`row_hashes` reads (evenly spaced): duplicates of real score vectors
#: agree on every column, and 64 exact float64 values never agree by chance.
HASH_COLUMNS = 64
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(u: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise (uint64 arithmetic wraps, as intended)."""
    u = u ^ (u >> np.uint64(30))
    u = u * _MIX1
    u = u ^ (u >> np.uint64(27))
    u = u * _MIX2
    return u ^ (u >> np.uint64(31))


def row_hashes(scores: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact bits (``# n K`` float64 -> ``uint64 # n``).

    At most :data:`HASH_COLUMNS` evenly spaced columns are hashed (all when ``K`` is
    smaller): equal rows hash equal; rows that differ there collide with probability
    about 2**-64 per pair.  Each value's bits are folded (``u ^ u >> 29``, so that
    differences in the exponent reach the low bits), multiplied by a per-column odd
    constant and summed modulo 2**64.  ``-0.0`` and ``0.0`` are made equal first.
    """
    x = np.asarray(scores, dtype=np.float64)
    k = x.shape[1]
    if k > HASH_COLUMNS:
        x = x[:, np.linspace(0, k - 1, HASH_COLUMNS).round().astype(np.intp)]
    u = (x + 0.0).view(np.uint64)  # -0.0 + 0.0 == +0.0; a new array, safe to modify
    cols = _splitmix(np.arange(1, u.shape[1] + 1, dtype=np.uint64)) | np.uint64(1)
    u ^= u >> np.uint64(29)
    u *= cols
    return np.asarray(u.sum(axis=1, dtype=np.uint64))


def string_hashes(keys: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of ID keys (``uint64 # n``; not Python's salted ``hash``)."""
    import pandas as pd

    return np.asarray(pd.util.hash_array(np.asarray(keys, dtype=object)), np.uint64)


def colliding_runs(parts: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """All :data:`RECORD` s sorted by (hash, batch, row), and the runs of equal hashes.

    Returns the sorted records and views of its runs of two or more records that share
    a vector hash, in hash order.
    """
    allp = np.concatenate(parts)
    allp = allp[np.lexsort((allp["r"], allp["b"], allp["h"]))]
    h = allp["h"]
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    ends = np.r_[starts[1:], h.size]
    return allp, [allp[starts[si] : ends[si]] for si in np.flatnonzero(ends - starts > 1)]


def id_keys(columns: Mapping[str, Sequence[str]] | Any, names: Sequence[str]) -> list[str]:
    """One key per row from the ID columns ``names`` of a table (Columns, DataFrame or mapping).

    Text columns are joined as they are (variant tables are read as text); a column of
    anything else is written with ``str`` first.
    """
    if not len(names):
        return []
    cols = [_values(columns[c]) for c in names]
    try:
        return list(map(KEY_SEP.join, zip(*cols, strict=True)))
    except TypeError:  # a column that is not text
        return list(map(KEY_SEP.join, zip(*([str(v) for v in c] for c in cols), strict=True)))


def _values(column: Any) -> list[Any]:
    """A column's values as a list (numpy arrays and Series convert in C)."""
    return list(column.tolist()) if hasattr(column, "tolist") else list(column)


def show_key(key: str) -> str:
    """An ID key as users read it: its columns joined by spaces."""
    return key.replace(KEY_SEP, " ")


def keys_in_several_groups(keys_by_group: Mapping[str, Iterable[str]]) -> set[str]:
    """ID keys that occur in more than one group (those the cross-group check compares)."""
    seen: dict[str, str] = {}
    shared: set[str] = set()
    for group, keys in keys_by_group.items():
        for k in keys:
            first = seen.setdefault(k, group)
            if first != group:
                shared.add(k)
    return shared
