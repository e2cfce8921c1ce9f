"""Score-table writers: Parquet, CSV, R's RDS and RData.

Each writer writes to a hidden temporary file beside its target and only
:meth:`TableWriter.commit` renames it into place, so a failed run leaves no
partial table.  Parquet and CSV are written incrementally, one row group / block
per :meth:`TableWriter.write`; the R formats are written by pyreadr from one data
frame, so they hold their table in memory until commit (the pipeline accounts for
that in its memory plan).

A table has the selected track identifiers as float64 columns, then the ID columns
as text.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PerturbscoreError

FORMATS = {"parquet": ".parquet", "csv": ".csv", "rds": ".rds", "rdata": ".RData"}


def temp_path(path: Path) -> Path:
    """Hidden sibling of ``path`` used until commit."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


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

    def _frame(self, scores: np.ndarray, ids: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame(scores, columns=self.score_columns, copy=False)
        for col in self.id_columns:
            # object dtype of Python str: understood alike by CSV, Arrow and pyreadr.
            df[col] = ids[col].astype(object).to_numpy()
        return df

    @abc.abstractmethod
    def write(self, scores: np.ndarray, ids: pd.DataFrame) -> None:
        """Append a block: ``scores`` is ``(n, S)`` float64, ``ids`` has ``n`` rows."""

    @abc.abstractmethod
    def _finish(self) -> None:
        """Flush and close the temporary file."""

    def commit(self) -> None:
        """Finish the temporary file and rename it to the final name."""
        self._finish()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temporary file; the final name is never touched."""
        try:
            self._close_quietly()
        finally:
            self.tmp.unlink(missing_ok=True)

    def _close_quietly(self) -> None:  # noqa: B027 - only streaming writers hold handles
        """Close open handles without finishing the file."""


class ParquetTableWriter(TableWriter):
    """Incremental Parquet: one row group per block."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        fields = [pa.field(c, pa.float64()) for c in self.score_columns]
        fields += [pa.field(c, pa.string()) for c in self.id_columns]
        self.schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")

    def write(self, scores: np.ndarray, ids: pd.DataFrame) -> None:
        arrays = [pa.array(scores[:, j]) for j in range(scores.shape[1])]
        arrays += [pa.array(ids[c].astype(object).to_numpy(), pa.string()) for c in self.id_columns]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += scores.shape[0]

    def _finish(self) -> None:
        self._writer.close()

    def _close_quietly(self) -> None:
        self._writer.close()


class CsvTableWriter(TableWriter):
    """Incremental CSV with a header; floats written round-trip exact."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._fh = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        pd.DataFrame(columns=self.score_columns + self.id_columns).to_csv(self._fh, index=False)

    def write(self, scores: np.ndarray, ids: pd.DataFrame) -> None:
        self._frame(scores, ids).to_csv(self._fh, index=False, header=False)
        self.rows += scores.shape[0]

    def _finish(self) -> None:
        self._fh.close()

    def _close_quietly(self) -> None:
        self._fh.close()


class _InMemoryRWriter(TableWriter):
    """Collects blocks and writes one data.frame at commit (pyreadr cannot append)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._blocks: list[pd.DataFrame] = []

    def write(self, scores: np.ndarray, ids: pd.DataFrame) -> None:
        self._blocks.append(self._frame(np.array(scores, copy=True), ids))
        self.rows += scores.shape[0]

    def _table(self) -> pd.DataFrame:
        if not self._blocks:
            return self._frame(
                np.empty((0, len(self.score_columns))),
                pd.DataFrame({c: pd.Series([], dtype=object) for c in self.id_columns}),
            )
        df = pd.concat(self._blocks, ignore_index=True)
        self._blocks = []
        return df

    def _close_quietly(self) -> None:
        self._blocks = []


class RdsTableWriter(_InMemoryRWriter):
    """R ``readRDS()`` returns a data.frame with exactly the table's columns."""

    def _finish(self) -> None:
        import pyreadr

        pyreadr.write_rds(str(self.tmp), self._table(), compress="gzip")


class RdataTableWriter(_InMemoryRWriter):
    """R ``load()`` creates one data.frame named ``object_name``."""

    def _finish(self) -> None:
        import pyreadr

        pyreadr.write_rdata(str(self.tmp), self._table(), df_name=self.object_name, compress="gzip")


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
) -> TableWriter:
    """Open a writer of format ``fmt`` (see :data:`FORMATS`) for ``path``."""
    return WRITERS[check_format(fmt)](path, score_columns, id_columns, object_name)


def holds_in_memory(fmt: str) -> bool:
    """Whether the format keeps the whole table in memory until commit."""
    return issubclass(WRITERS[check_format(fmt)], _InMemoryRWriter)
