"""Score-table writers: Parquet, CSV, R's RDS and RData.

Each writer writes to a hidden temporary file beside its target and only
:meth:`TableWriter.commit` renames it into place, so a failed run leaves no
partial table.  Parquet and CSV are written incrementally (Parquet buffers up to
:data:`ROW_GROUP_BYTES` of scores per row group); R files are column-major, so the
R formats hold their table in memory until commit (the pipeline accounts for that in
its memory plan) and are then serialised by :mod:`perturbscore.rserialize`,
uncompressed (``load()`` and ``readRDS()`` read such files as they are).

A table has the selected track identifiers as float64 columns, then the ID columns
as text.
"""

from __future__ import annotations

import abc
import csv
import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

from . import rserialize
from .constants import OUTPUT_FORMATS
from .errors import PerturbscoreError
from .frame import Columns, as_columns
from .outputs import temp_path
from .rserialize import SharedText

FORMATS = OUTPUT_FORMATS


def arrow_text(column: pd.Series | np.ndarray, arrow_type: pa.DataType | None = None) -> Any:
    """An ID column as an Arrow string array (missing values null), converted in C.

    Parquet row groups take it as it is.  ``arrow_type``: ``pa.large_string()`` unless
    given.

    An empty column gives an empty array of that type whatever its pandas dtype: pyarrow
    converts an empty non-text column (``pd.DataFrame({c: []})`` is float64) into a
    chunked array mixing ``string`` and ``large_string`` chunks, which cannot be joined.
    """
    import pyarrow as pa

    typ = arrow_type or pa.large_string()
    if len(column) == 0:
        return pa.array([], type=typ)
    return pa.array(column, type=typ, from_pandas=True)


class TableWriter(abc.ABC):
    """Writes one score table; ``write`` blocks in row order, then ``commit`` or ``abort``.

    Parameters
    ----------
    path : Path
        Final file name.
    score_columns : sequence of str
        Names of the float64 score columns (track identifiers), in order.
    id_columns : sequence of str
        Names of the text columns that follow them.
    object_name : str
        Object name inside an RData file (ignored by other formats).
    """

    def __init__(
        self,
        path: Path,
        score_columns: Sequence[str],
        id_columns: Sequence[str],
        object_name: str = "scores",
    ) -> None:
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.score_columns = list(score_columns)
        self.id_columns = list(id_columns)
        self.object_name = object_name
        self.rows = 0
        self._finished = False

    @abc.abstractmethod
    def write(self, scores: np.ndarray, ids: Columns | pd.DataFrame) -> None:
        """Append a block: ``scores`` is ``(n, S)`` float64, ``ids`` has ``n`` rows.

        ``ids``: :class:`~perturbscore.frame.Columns` (what a run passes) or a DataFrame.
        """

    @abc.abstractmethod
    def _finish(self) -> None:
        """Flush and close the temporary file."""

    def finish(self) -> None:
        """Write the rest and close the temporary file (``tmp``); the final name is untouched.

        A run finishes every table before it publishes any (see
        :class:`perturbscore.outputs.Commit`).
        """
        if not self._finished:
            self._finish()
            self._finished = True

    def commit(self) -> None:
        """Finish the temporary file and rename it to the final name."""
        self.finish()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temporary file; the final name is never touched."""
        try:
            if not self._finished:
                self._close_quietly()
        finally:
            self.tmp.unlink(missing_ok=True)

    def _close_quietly(self) -> None:  # noqa: B027 - only streaming writers hold handles
        """Close open handles without finishing the file."""


#: Parquet row groups hold about this many bytes of scores ...
ROW_GROUP_BYTES = 4 * 2**20
#: ... but at least this many rows (wide tables: thousands of tracks), since every row
#: group costs metadata for each of its columns: 100-row groups of 5,313 columns made
#: the footer (held in memory until the file is closed) grow to gigabytes.
MIN_ROW_GROUP_ROWS = 1024
#: ... and at most this many rows.
ROW_GROUP_ROWS = 65536


def row_group_rows(n_scores: int) -> int:
    """Rows per Parquet row group for a table of ``n_scores`` score columns."""
    by_bytes = ROW_GROUP_BYTES // max(1, n_scores * 8)
    return int(min(ROW_GROUP_ROWS, max(MIN_ROW_GROUP_ROWS, by_bytes)))


class ParquetTableWriter(TableWriter):
    """Incremental Parquet; small blocks are buffered into row groups of useful size."""

    def __init__(self, *args: object, group_rows: int | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        import pyarrow as pa

        fields = [pa.field(c, pa.float64()) for c in self.score_columns]
        fields += [pa.field(c, pa.string()) for c in self.id_columns]
        self.schema = pa.schema(fields)
        # Imported here: pyarrow.parquet (and the filesystems and ssl it loads) costs
        # ~20 ms that a run writing R or CSV tables does not need.
        import pyarrow.parquet as pq

        # Dictionary encoding and column statistics only pay for the text ID columns;
        # for thousands of float score columns they only grow the footer.
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self.tmp,
            self.schema,
            compression="snappy",
            use_dictionary=self.id_columns,
            write_statistics=self.id_columns,
        )
        self._group_rows = group_rows or row_group_rows(len(self.score_columns))
        # One row group's scores, column-major (``# S rows``): blocks are transposed into
        # it as they come, so Arrow wraps each column without a copy, and no further
        # copy of the row group is made (wide tables hold thousands of columns).
        self._buffer = np.empty((len(self.score_columns), self._group_rows))
        self._ids: list[Columns] = []
        self._filled = 0

    def write(self, scores: np.ndarray, ids: Columns | pd.DataFrame) -> None:
        ids = as_columns(ids).pick(self.id_columns)
        n, start = scores.shape[0], 0
        self.rows += n
        while start < n:
            take = min(n - start, self._group_rows - self._filled)
            self._buffer[:, self._filled : self._filled + take] = scores[start : start + take].T
            self._ids.append(ids.rows(slice(start, start + take)))
            self._filled += take
            start += take
            if self._filled == self._group_rows:
                self._flush()

    def _flush(self) -> None:
        """Write the buffered rows as one row group (exactly ``_group_rows`` but the last).

        Row groups always hold the same number of rows, so the file's bytes do not
        depend on the block size the rows arrived in.
        """
        if not self._filled:
            return
        import pyarrow as pa

        n = self._filled
        ids = Columns.concat(self._ids, self.id_columns)
        arrays = [pa.array(col[:n]) for col in self._buffer]
        arrays += [arrow_text(ids[c], pa.string()) for c in self.id_columns]
        assert self._writer is not None, "row group written after the file was closed"
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self._ids, self._filled = [], 0

    def _finish(self) -> None:
        self._flush()
        self._close_quietly()

    def _close_quietly(self) -> None:
        if self._writer is not None:
            self._writer.close()
        # A closed ParquetWriter still holds every row group's metadata (about 1 KB per
        # column chunk: hundreds of MB for wide tables) until it is dropped.
        self._writer = None
        self._buffer = np.empty((0, 0))


class CsvTableWriter(TableWriter):
    """Incremental CSV with a header; floats written round-trip exact, NaN as empty.

    Written with the csv module: floats as ``repr`` writes them, text quoted only where
    needed (a separator, a quote or a line break in it), missing values empty.  These
    are the bytes ``pandas.DataFrame.to_csv`` writes (tested against it), in about 60%
    of its time and without pandas.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._fh = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._fh, lineterminator="\n")
        self._csv.writerow(self.score_columns + self.id_columns)

    def write(self, scores: np.ndarray, ids: Columns | pd.DataFrame) -> None:
        ids = as_columns(ids)
        missing = np.isnan(scores)
        if missing.any():
            cells = scores.astype(object)
            cells[missing] = ""
            rows = cells.tolist()
        else:
            rows = scores.tolist()
        text = [ids[c].tolist() for c in self.id_columns]
        tails = list(zip(*text, strict=True)) if text else [()] * len(rows)
        self._csv.writerows([r + list(t) for r, t in zip(rows, tails, strict=True)])
        self.rows += scores.shape[0]

    def _finish(self) -> None:
        self._fh.close()

    def _close_quietly(self) -> None:
        self._fh.close()


class _InMemoryRWriter(TableWriter):
    """Collects the table and serialises one data.frame at commit (R files are column-major).

    Scores fill one preallocated ``(S, rows)`` big-endian float64 array: the table exists
    once in memory, already in the column-major byte order R files store.
    """

    def __init__(self, *args: Any, expected_rows: int, shared: SharedText | None = None) -> None:
        super().__init__(*args)
        self._scores = np.empty((len(self.score_columns), expected_rows), dtype=">f8")
        self._ids: list[Columns] = []
        self._shared = shared

    def write(self, scores: np.ndarray, ids: Columns | pd.DataFrame) -> None:
        n = scores.shape[0]
        if self.rows + n > self._scores.shape[1]:
            raise ValueError(
                f"{self.path}: {self.rows + n} rows written, {self._scores.shape[1]} expected"
            )
        self._scores[:, self.rows : self.rows + n] = scores.T
        self._ids.append(as_columns(ids))  # columns are picked once, at commit
        self.rows += n

    def _columns(self) -> list[tuple[str, Any]]:
        scores = self._scores[:, : self.rows]
        cols: list[tuple[str, Any]] = [(n, scores[j]) for j, n in enumerate(self.score_columns)]

        def text(c: str) -> list[Any]:
            # A group whose batches have no rows gets no block: its table is empty, with
            # the same columns (character ID columns in R) as any other.
            return Columns.concat(self._ids, [c])[c].tolist()  # text; None is NA

        shared = self._shared or SharedText()
        return cols + [(c, shared.vector(c, self.rows, partial(text, c))) for c in self.id_columns]

    def _close_quietly(self) -> None:
        self._scores = np.empty((len(self.score_columns), 0), dtype=">f8")
        self._ids = []


class RdsTableWriter(_InMemoryRWriter):
    """R ``readRDS()`` returns a data.frame with exactly the table's columns."""

    def _finish(self) -> None:
        with open(self.tmp, "wb") as fh:
            rserialize.write_rds(fh, self._columns())
        self._close_quietly()  # the table is on disk: free it for the groups still running


class RdataTableWriter(_InMemoryRWriter):
    """R ``load()`` creates one data.frame named ``object_name``."""

    def _finish(self) -> None:
        with open(self.tmp, "wb") as fh:
            rserialize.write_rdata(fh, self.object_name, self._columns())
        self._close_quietly()  # the table is on disk: free it for the groups still running


WRITERS: dict[str, type[TableWriter]] = {
    "parquet": ParquetTableWriter,
    "csv": CsvTableWriter,
    "rds": RdsTableWriter,
    "rdata": RdataTableWriter,
}


def check_format(fmt: str) -> str:
    """Validate an output format name."""
    f = fmt.lower()
    if f not in WRITERS:
        raise PerturbscoreError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}.")
    return f


def open_writer(
    fmt: str,
    path: Path,
    score_columns: Sequence[str],
    id_columns: Sequence[str],
    object_name: str,
    expected_rows: int,
    group_rows: int | None = None,
    shared: SharedText | None = None,
) -> TableWriter:
    """Open a writer of format ``fmt`` (see :data:`FORMATS`) for ``path``.

    ``expected_rows``, the rows the table will get, lets in-memory formats allocate it
    once; ``group_rows`` sets Parquet's rows per row group (default :func:`row_group_rows`);
    R formats serialise ID columns once per ``shared`` (tables given the same ID rows).
    """
    cls = WRITERS[check_format(fmt)]
    if issubclass(cls, _InMemoryRWriter):
        return cls(
            path, score_columns, id_columns, object_name, expected_rows=expected_rows, shared=shared
        )
    if cls is ParquetTableWriter:
        return ParquetTableWriter(
            path, score_columns, id_columns, object_name, group_rows=group_rows
        )
    return cls(path, score_columns, id_columns, object_name)


#: Bytes of footer metadata pyarrow's ``ParquetWriter`` holds per column chunk (one
#: column of one row group) until the file is closed: 0.8-1.1 KB measured with pyarrow
#: 20, whatever the rows per group, compression, statistics or dictionaries.
FOOTER_BYTES_PER_CHUNK = 1100


def table_group_rows(n_scores: int, rows: int) -> int:
    """Rows per row group for a Parquet table of ``rows`` rows: the fewest bytes held.

    A writer holds one row group of scores and Arrow's encoded pages of it (about
    ``2 x 8 g S`` bytes, column-major) and the footer of every row group written so far
    (``FOOTER_BYTES_PER_CHUNK S rows / g``); ``g = sqrt(FOOTER_BYTES_PER_CHUNK rows / 16)``
    minimises their sum, which then grows with the square root of the table's rows
    (5,313 columns of 35,077 rows: about 270 MB per table instead of 600 MB with
    394-row groups).  At least :func:`row_group_rows` (narrow tables: 4 MiB groups), at
    most :data:`ROW_GROUP_ROWS`.  Independent of block size and budget, so the file's
    bytes are too.
    """
    best = math.isqrt(max(1, FOOTER_BYTES_PER_CHUNK * rows // 16))
    return int(max(1, min(ROW_GROUP_ROWS, max(row_group_rows(n_scores), best))))


def footer_bytes(n_columns: int, rows: int, group_rows: int) -> int:
    """Footer metadata a Parquet writer holds for a table of ``rows`` rows until closed."""
    return -(-max(rows, 1) // group_rows) * n_columns * FOOTER_BYTES_PER_CHUNK


def writer_bytes(fmt: str, n_scores: int, n_ids: int, rows: int, group_rows: int) -> int:
    """Most bytes one streaming writer of ``fmt`` holds for a table of ``rows`` rows.

    Parquet: one row group of scores and Arrow's encoded pages of it, and the footer
    metadata of all row groups (see :func:`table_group_rows`).  Other formats hold
    nothing that grows (R formats' in-memory tables are counted by the plan).
    """
    if check_format(fmt) != "parquet":
        return 0
    return 2 * group_rows * n_scores * 8 + footer_bytes(n_scores + n_ids, rows, group_rows)


def holds_in_memory(fmt: str) -> bool:
    """Whether the format keeps the whole table in memory until commit."""
    return issubclass(WRITERS[check_format(fmt)], _InMemoryRWriter)
