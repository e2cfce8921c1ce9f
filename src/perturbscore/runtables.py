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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .names import check_name
from .outputs import refuse_unfinished_commit

MANIFEST = "manifest.json"
_READERS = {".parquet": "parquet", ".csv": "csv", ".rds": "r", ".rdata": "r"}
_KINDS = {
    "parquet": "a readable Parquet table",
    "csv": "a readable CSV table",
    "r": "a readable R data file",
}

#: The fix for a table that cannot be read: it was damaged or edited after the run.
RERUN = (
    "the file was damaged or changed after it was written: rerun the command that wrote "
    "the folder (perturbscore run, normalise or import-scores) into a new --out folder"
)


@contextmanager
def table_errors(path: Path, fix: str = RERUN) -> Iterator[None]:
    """Turn what the readers (pandas, pyarrow, pyreadr) raise on a damaged or edited
    table into one :class:`PerturbscoreError` sentence naming ``path`` and ``fix``.

    One wrapper for every command that reads a run's tables (normalise, compare), so
    that the same damage gives the same message.
    """
    try:
        yield
    except (PerturbscoreError, MemoryError):
        raise
    except Exception as exc:  # pandas, pyarrow and pyreadr raise their own types
        import pandas.errors

        if isinstance(exc, pandas.errors.EmptyDataError):
            raise PerturbscoreError(f"{path} is empty, not even a header line; {fix}.") from None
        kind = _KINDS.get(_READERS.get(path.suffix.lower(), ""), "a readable table")
        # The reader's own words, cut to their first sentence: the message stays one.
        text = str(exc).strip()
        detail = text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__
        raise PerturbscoreError(f"{path}: not {kind} ({detail}); {fix}.") from None


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
    #: Rows of the largest Parquet row group (what pyarrow decodes at once), once known.
    group_rows: int = 0

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
    refuse_unfinished_commit(run_dir)
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
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        t.group_rows = max(groups, default=0)
        return list(meta.schema.to_arrow_schema().names)
    if t.kind == "csv":
        with table_errors(t.path):
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


def _text(values: pd.Series) -> list[str | None]:
    """An ID column as text, missing values as None."""
    return [v if isinstance(v, str) else None if pd.isna(v) else str(v) for v in values]


Block = tuple[np.ndarray, pd.DataFrame | None]


def blocks(
    t: Table, tracks: Sequence[str], rows: int, read_rows: int = 0, ids: bool = True
) -> Iterator[Block]:
    """The table in blocks of at most ``rows`` rows: scores ``# n S`` float64 and the ID
    columns as text (None unless ``ids``).

    The file is read ``max(rows, read_rows)`` rows at a time.  A table without rows
    gives one empty block (its ID columns are still needed).  Sets ``t.id_columns``.
    """
    seen = 0
    for columns, scores, text in _frames(t, tracks, max(rows, read_rows), ids):
        if t.id_columns is None:
            t.id_columns = check_columns(t, columns, tracks)
        frame = pd.DataFrame(text, columns=t.id_columns) if ids else None
        if frame is not None and not len(frame.columns):
            frame.index = pd.RangeIndex(len(scores))  # no ID columns: still one row per row
        n = scores.shape[0]
        for start in range(0, n, rows):
            yield (
                scores[start : start + rows],
                None if frame is None else frame.iloc[start : start + rows],
            )
        seen += n
    if seen != t.rows:
        raise PerturbscoreError(
            f"{t.path} has {seen} rows but the manifest says {t.rows}; the run folder was "
            "changed after the run: run it again."
        )
    if not seen:
        yield (
            np.empty((0, len(tracks))),
            (pd.DataFrame({c: [] for c in t.id_columns or []}, dtype=object) if ids else None),
        )


def _frames(
    t: Table, tracks: Sequence[str], rows: int, ids: bool
) -> Iterator[tuple[list[str], np.ndarray, dict[str, Any]]]:
    """``(column names, scores # n S float64, {ID column: text})`` per piece read; the
    text is a list or an object array of str, missing values None."""
    if t.kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(t.path)
        names = list(pf.schema_arrow.names)
        check_columns(t, names, tracks)
        id_cols = [c for c in names if c not in set(tracks)] if ids else []
        for batch in pf.iter_batches(batch_size=rows, columns=[*tracks, *id_cols]):
            # Track-major, so each column is one contiguous copy and the block (its
            # transpose) is column-major, as the quantile search and the writers read it.
            scores = np.empty((len(tracks), batch.num_rows))
            for j, c in enumerate(tracks):  # nulls become NaN
                scores[j] = batch.column(c).to_numpy(zero_copy_only=False)
            text = {
                c: batch.column(c).cast(pa.string()).to_numpy(zero_copy_only=False) for c in id_cols
            }
            yield names, scores.T, text
        return
    if t.kind == "csv":
        with table_errors(t.path):
            head = pd.read_csv(t.path, nrows=0).columns
        scores_set = set(tracks)
        frames: Iterator[pd.DataFrame] = pd.read_csv(
            t.path,
            dtype={c: ("float64" if c in scores_set else "str") for c in head},
            keep_default_na=False,
            na_values={c: ["", "NA", "NaN", "nan"] for c in scores_set & set(head)},
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
        frames = iter([next(iter(objects.values())).reset_index(drop=True)])
    for frame in frames:
        names = [str(c) for c in frame.columns]
        id_cols = check_columns(t, names, tracks)
        text = {c: _text(frame[c]) for c in id_cols if ids}
        yield names, frame[list(tracks)].to_numpy(dtype=np.float64), text


def not_a_comparison(folder: Path) -> str:
    """What ``report`` says of a folder without compare.json: for a run folder (the usual
    mistake), the compare command, with the run's groups, that makes one to report on."""
    try:
        _, tables, _ = read_run(folder)
    except PerturbscoreError:
        return (
            f"{folder}: no compare.json; give the --out folder of 'perturbscore compare' "
            "(the folder that holds compare.json)."
        )
    groups = list(dict.fromkeys(t.group for t in tables))
    a, b = [*groups, *["GROUP_A", "GROUP_B"][len(groups) :]][:2]
    return (
        f"{folder} is a run folder (it holds {MANIFEST}, no compare.json); compare its "
        f"groups into a new folder first: perturbscore compare {folder} --a {a} --b {b} "
        f"--out {folder}-compare, then perturbscore report {folder}-compare."
    )
