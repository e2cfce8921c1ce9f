"""A finished run's tables, read block-wise through its ``manifest.json``.

A run folder (``perturbscore run``, ``import-scores``) lists its tables in
``manifest.json`` (``outputs[]``: group, aggregation, statistic, path, rows) and its
selected tracks (``tracks.selected``); every table has those tracks' identifiers as
float score columns and other (ID) columns, read as text.  :func:`read_run` checks the
manifest and that every table exists; :func:`blocks` streams one table: Parquet by
record batches (pyarrow), CSV in chunks of rows (pandas), RDS and RData whole (pyreadr
has no partial reads), then cut into blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .names import check_name

MANIFEST = "manifest.json"
_READERS = {".parquet": "parquet", ".csv": "csv", ".rds": "r", ".rdata": "r"}


@dataclass(eq=False)  # identity: one object per table
class Table:
    """One input table of the run."""

    group: str
    aggregation: str
    statistic: str
    path: Path
    rows: int
    #: Non-track columns, in table order (known after validation, or the first read).
    id_columns: list[str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.aggregation, self.statistic)

    @property
    def kind(self) -> str:
        return _READERS[self.path.suffix.lower()]


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[Table], list[str]]:
    """The run's manifest, its tables and the selected track identifiers, checked."""
    mpath = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise PerturbscoreError(f"{run_dir}: run folder not found; give the --out folder of a run.")
    if not mpath.is_file():
        raise PerturbscoreError(
            f"{run_dir}: no {MANIFEST}; give the --out folder of 'perturbscore run' or "
            "'perturbscore import-scores'."
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        tracks = [str(t["identifier"]) for t in manifest["tracks"]["selected"]]
        outputs = list(manifest["outputs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PerturbscoreError(f"{mpath}: not a perturbscore manifest ({exc}).") from exc
    tables: list[Table] = []
    for o in outputs:
        try:
            group, agg, stat, path, rows = (
                o[k] for k in ("group", "aggregation", "statistic", "path", "rows")
            )
        except (KeyError, TypeError) as exc:
            raise PerturbscoreError(
                f"{mpath}: an output lacks {exc}; not a perturbscore manifest."
            ) from None
        check_name(group, "group name", str(mpath))
        t = Table(str(group), str(agg), str(stat), run_dir / str(path), int(rows))
        if not t.path.is_file():
            raise PerturbscoreError(f"{t.path}: listed in {mpath} but missing.")
        if t.path.suffix.lower() not in _READERS:
            raise PerturbscoreError(
                f"{t.path}: unknown table format {t.path.suffix!r}; Parquet, CSV, RDS and "
                "RData tables can be read."
            )
        if any(u.group == t.group and u.key == t.key for u in tables):
            raise PerturbscoreError(
                f"{mpath}: two tables for group {t.group}, {t.aggregation}/{t.statistic}."
            )
        tables.append(t)
    if not tables:
        raise PerturbscoreError(f"{mpath}: the run lists no tables.")
    return manifest, tables, tracks


def table_columns(t: Table) -> list[str] | None:
    """Column names of a table without reading its rows (None for R files)."""
    if t.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(t.path).metadata
        except (OSError, ValueError) as exc:
            raise PerturbscoreError(f"{t.path}: not a readable Parquet file ({exc}).") from exc
        if meta.num_rows != t.rows:
            raise PerturbscoreError(
                f"{t.path} has {meta.num_rows} rows but the manifest says {t.rows}; the run "
                "folder was changed after the run: run it again."
            )
        return list(meta.schema.to_arrow_schema().names)
    if t.kind == "csv":
        return list(pd.read_csv(t.path, nrows=0).columns)
    return None


def check_columns(t: Table, columns: Sequence[str], tracks: Sequence[str]) -> list[str]:
    """The ID columns (every non-track column), after checking every track is there."""
    have = set(columns)
    missing = [c for c in tracks if c not in have]
    if missing:
        raise PerturbscoreError(
            f"{t.path} lacks {len(missing)} of the run's selected tracks (e.g. {missing[0]}); "
            "the table does not belong to this manifest."
        )
    wanted = set(tracks)
    return [c for c in columns if c not in wanted]


def _text(values: pd.Series) -> pd.Series:
    """An ID column as text, missing values as None."""
    s = values.astype(object)
    s = s.map(lambda v: v if isinstance(v, str) else str(v), na_action="ignore")
    return s.where(s.notna(), None)


def blocks(t: Table, tracks: Sequence[str], rows: int) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """The table in blocks of at most ``rows`` rows: scores ``# n S`` float64, ID columns.

    A table without rows gives one empty block (its ID columns are still needed).
    Sets ``t.id_columns``.
    """
    seen = 0
    empty: tuple[np.ndarray, pd.DataFrame] | None = None
    for frame in _frames(t, tracks, rows):
        if t.id_columns is None:
            t.id_columns = check_columns(t, list(frame.columns), tracks)
        scores = frame[list(tracks)].to_numpy(dtype=np.float64)
        ids = pd.DataFrame({c: _text(frame[c]) for c in t.id_columns})
        if not len(frame):
            empty = (scores, ids)
        for start in range(0, len(frame), rows):
            yield scores[start : start + rows], ids.iloc[start : start + rows]
        seen += len(frame)
    if seen != t.rows:
        raise PerturbscoreError(
            f"{t.path} has {seen} rows but the manifest says {t.rows}; the run folder was "
            "changed after the run: run it again."
        )
    if not seen:
        cols = t.id_columns or []
        yield empty or (np.empty((0, len(tracks))), pd.DataFrame({c: [] for c in cols}))


def _frames(t: Table, tracks: Sequence[str], rows: int) -> Iterator[pd.DataFrame]:
    if t.kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(t.path).iter_batches(batch_size=rows):
            yield batch.to_pandas()
    elif t.kind == "csv":
        head = pd.read_csv(t.path, nrows=0).columns
        scores = set(tracks)
        dtypes = {c: ("float64" if c in scores else "str") for c in head}
        yield from pd.read_csv(
            t.path,
            dtype=dtypes,
            keep_default_na=False,
            na_values={c: ["", "NA", "NaN", "nan"] for c in scores & set(head)},
            chunksize=rows,
        )
    else:
        import pyreadr

        try:
            objects = pyreadr.read_r(str(t.path))
        except Exception as exc:  # pyreadr raises its own types for bad files
            raise PerturbscoreError(f"{t.path}: not a readable R data file ({exc}).") from exc
        if len(objects) != 1:
            raise PerturbscoreError(f"{t.path}: holds {len(objects)} objects, not one table.")
        yield next(iter(objects.values())).reset_index(drop=True)
