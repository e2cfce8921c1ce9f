"""Write R data frames as ``.rds`` (``readRDS``) and ``.RData`` (``load``) files.

Only what score tables need: a ``data.frame`` of double and character columns,
serialised in R's XDR binary format, version 3 (R >= 3.5 reads it), uncompressed
(R reads uncompressed files as they are).  Numeric columns are written in bulk as
big-endian float64, which is why this exists: pyreadr converts every cell in Python,
which dominated the run time of whole studies.  Files are checked in the test suite
with pyreadr (librdata, an independent reader) and, where installed, with R itself.

Layout (R Internals, "Serialization formats")::

    [RDX3\\n]                       RData only: magic, then a pairlist name = object
    X\\n  3  R_VERSION  3.5.0  5 "UTF-8"
    VECSXP (object, attributes)  n_columns  column...  attributes pairlist
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

_NILVALUE = 254
_SYMSXP, _LISTSXP, _CHARSXP, _INTSXP, _REALSXP, _STRSXP, _VECSXP = 1, 2, 9, 13, 14, 16, 19
_IS_OBJECT, _HAS_ATTR, _HAS_TAG = 1 << 8, 1 << 9, 1 << 10
_UTF8, _ASCII = 1 << 3, 1 << 6  # CHARSXP encoding "levels"
_NA_INTEGER = -(2**31)
_WRITER_VERSION = (4 << 16) | (2 << 8) | 0  # written as R 4.2.0
_MIN_READER = (3 << 16) | (5 << 8) | 0  # 3.5.0: format version 3


def _int(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def _charsxp(text: str | None) -> bytes:
    if text is None:
        return _int(_CHARSXP, -1)  # NA_character_
    raw = text.encode("utf-8")
    level = _ASCII if raw.isascii() else _UTF8
    return _int(_CHARSXP | (level << 12), len(raw)) + raw


def _utf8_parts(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTF-8 bytes, byte lengths and NA flags of a character vector's items.

    An Arrow string array (what pandas holds ID columns in) gives them from its buffers
    without touching each item in Python; any other sequence of ``str | None`` (what a
    run holds) is encoded in one piece when it is ASCII with no NA, else item by item.
    """
    if hasattr(values, "buffers") or hasattr(values, "combine_chunks"):  # pyarrow (Chunked)Array
        import pyarrow as pa
        import pyarrow.compute as pc

        arr: Any = values
        if isinstance(values, pa.ChunkedArray):
            # Chunks may differ in offset width (string beside large_string): one type
            # first, since combine_chunks refuses a mix.
            arr = pa.concat_arrays(
                [c.cast(pa.large_string()) for c in values.chunks]
                or [pa.array([], pa.large_string())]
            )
        is_na = (
            arr.is_null().to_numpy(zero_copy_only=False)
            if arr.null_count
            else np.zeros(len(arr), bool)
        )
        arr = pc.fill_null(arr, "") if arr.null_count else arr
        wide = pa.types.is_large_string(arr.type)
        buffers = arr.buffers()
        offsets = np.frombuffer(
            buffers[1],
            dtype=np.int64 if wide else np.int32,
            count=len(arr) + 1,
            offset=arr.offset * (8 if wide else 4),
        ).astype(np.int64)
        data = (
            np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
        )
        return data[offsets[0] : offsets[-1]], np.diff(offsets), is_na
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    n = len(items)
    has_na = None in items
    if not has_na:
        text = "".join(items)
        if text.isascii():  # ID columns usually are: one encode, lengths in characters
            lengths = np.fromiter(map(len, items), dtype=np.int64, count=n)
            return np.frombuffer(text.encode("ascii"), dtype=np.uint8), lengths, np.zeros(n, bool)
    encoded = [b"" if v is None else v.encode("utf-8") for v in items]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    is_na = np.array([v is None for v in items], dtype=bool) if has_na else np.zeros(n, bool)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), lengths, is_na


def _strsxp(values: Iterable[str | None] | Any) -> bytes:
    """A character vector; built with numpy because ID columns are long.

    Each string is an 8-byte head (``CHARSXP`` with its encoding level, then its byte
    length, or -1 for NA) followed by its bytes.  The text is placed with one boolean
    mask (every byte that is not a head) rather than an index per byte: 2x faster on
    the study's ID columns, the same bytes.
    """
    text, lengths, is_na = _utf8_parts(values)
    n = lengths.size
    ends = np.cumsum(lengths)
    level = np.full(n, _ASCII, dtype=np.int32)
    high = text >= 0x80
    if high.any():  # a string is ASCII when none of its bytes has the high bit set
        seen = np.concatenate([[0], np.cumsum(high)])
        level[seen[ends] != seen[ends - lengths]] = _UTF8
    heads = np.empty((n, 2), dtype=">i4")
    heads[:, 0] = _CHARSXP | (level << 12)
    heads[:, 1] = lengths
    if is_na.any():
        heads[is_na] = (_CHARSXP, -1)
    # String i's head starts after i heads and the bytes of the strings before it.
    head_at = ((ends - lengths + 8 * np.arange(n))[:, None] + np.arange(8)).ravel()
    is_text = np.ones(8 * n + text.size, dtype=bool)
    is_text[head_at] = False
    out = np.empty(is_text.size, dtype=np.uint8)
    out[is_text] = text
    out[head_at] = heads.view(np.uint8).ravel()
    return _int(_STRSXP, n) + out.tobytes()


@dataclass(frozen=True)
class CharacterVector:
    """A character column already serialised (:func:`character_vector`): ``n`` strings."""

    n: int
    data: bytes

    def __len__(self) -> int:
        return self.n


def character_vector(values: Iterable[str | None] | Any) -> CharacterVector:
    """Serialise a character column once, for several tables that hold the same column."""
    data = _strsxp(values)
    return CharacterVector(struct.unpack(">i", data[4:8])[0], data)


class SharedText:
    """ID columns serialised once for the tables of one group (R formats).

    A group's tables (one per aggregation and statistic) get the same rows in the same
    order, so their character columns are the same bytes: the first table to finish
    serialises them and the others reuse them (a third of the time spent finishing the
    study's R tables).  Kept per column name and row count.
    """

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, int], CharacterVector] = {}

    def vector(self, name: str, rows: int, values: Callable[[], Any]) -> CharacterVector:
        """The serialised column ``name`` of ``rows`` rows; ``values()`` gives its text."""
        key = (name, rows)
        if key not in self._vectors:
            self._vectors[key] = character_vector(values())
        return self._vectors[key]

    def clear(self) -> None:
        """Drop the serialised columns (every table of the group is written)."""
        self._vectors.clear()


def _symbol(name: str) -> bytes:
    return _int(_SYMSXP) + _charsxp(name)


def _write_realsxp(fh: BinaryIO, values: np.ndarray) -> None:
    # No copy when the caller already holds contiguous big-endian float64.
    data = np.ascontiguousarray(values, dtype=">f8")
    fh.write(_int(_REALSXP, data.shape[0]))
    fh.write(data.data)


def _attributes(pairs: Sequence[tuple[str, bytes]]) -> bytes:
    """A tagged pairlist of already-serialised values, ended by NILVALUE."""
    out = [_int(_LISTSXP | _HAS_TAG) + _symbol(tag) + value for tag, value in pairs]
    return b"".join(out) + _int(_NILVALUE)


def _header() -> bytes:
    return b"X\n" + _int(3, _WRITER_VERSION, _MIN_READER) + _int(5) + b"UTF-8"


def _write_data_frame(fh: BinaryIO, columns: Sequence[tuple[str, Any]]) -> None:
    """Serialise a data.frame: float arrays become numeric; sequences of ``str | None``,
    Arrow string arrays and :class:`CharacterVector` become character."""
    n_rows = len(columns[0][1]) if columns else 0
    fh.write(_int(_VECSXP | _IS_OBJECT | _HAS_ATTR, len(columns)))
    for name, values in columns:
        if len(values) != n_rows:
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {n_rows}")
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            _write_realsxp(fh, values)
        elif isinstance(values, CharacterVector):
            fh.write(values.data)
        else:
            fh.write(_strsxp(values))
    fh.write(
        _attributes(
            [
                ("names", _strsxp([name for name, _ in columns])),
                ("class", _strsxp(["data.frame"])),
                # Compact row names 1..n: c(NA_integer_, -n).
                ("row.names", _int(_INTSXP, 2, _NA_INTEGER, -n_rows)),
            ]
        )
    )


def write_rds(fh: BinaryIO, columns: Sequence[tuple[str, Any]]) -> None:
    """Write a data.frame that ``readRDS()`` returns with exactly these columns."""
    fh.write(_header())
    _write_data_frame(fh, columns)


def write_rdata(
    fh: BinaryIO,
    object_name: str,
    columns: Sequence[tuple[str, Any]],
) -> None:
    """Write an RData file whose ``load()`` creates the data.frame ``object_name``."""
    fh.write(b"RDX3\n" + _header())
    fh.write(_int(_LISTSXP | _HAS_TAG) + _symbol(object_name))
    _write_data_frame(fh, columns)
    fh.write(_int(_NILVALUE))
