"""A finished run's score tables as ``perturbscore compare`` reads them.

Which of their rows are variants outside the model's input is
:mod:`.compare_out_of_field`'s.

:func:`load_run` finds a run's tables through its ``manifest.json`` (a table may be a
file or, from the Dask engine, a folder of Parquet part files) and its selected
tracks.  A :class:`ScoreSet` is one group's table for one (aggregation, statistic):
Parquet tables are read a block of track columns at a time, CSV and R tables whole,
once per table.  Scores come back track-major, ``# T N`` (tracks, variants), because
every test sorts one track's values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .outputs import refuse_unfinished_commit
from .runtables import RERUN, table_errors
from .targets_file import split_description


@dataclass
class ScoreSet:
    """One group's score table for one (aggregation, statistic)."""

    group: str
    aggregation: str
    statistic: str
    path: Path
    rows: int | None = None
    #: ``bool # N``: rows left out of every test (``--out-of-field exclude``), read as NaN.
    exclude: np.ndarray | None = None
    _cache: pd.DataFrame | None = None
    _files: list[Any] | None = None

    @property
    def columnar(self) -> bool:
        """Whether columns can be read on their own (Parquet file or dataset folder)."""
        return self.path.suffix.lower() == ".parquet"

    def _parquet_files(self) -> list[Any]:
        """Open Parquet files (one, or the Dask engine's part files), footers read once."""
        if self._files is None:
            import pyarrow.parquet as pq

            if self.path.is_dir():
                # The Dask engine's partitioned dataset: part files in name order = row order.
                parts = sorted(p for p in self.path.glob("*.parquet") if p.is_file())
            else:
                parts = [self.path]
            files = []
            for part in parts:
                with table_errors(part):
                    files.append(pq.ParquetFile(str(part)))
            self._files = files
        return self._files

    def _read_parquet(self, columns: Sequence[str]) -> Any:
        import pyarrow as pa

        files = self._parquet_files()
        with table_errors(self.path):  # a damaged column chunk shows only when read
            tables = [f.read(columns=list(columns)) for f in files]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _check_rows(self, rows: int) -> None:
        """The table must have the rows the run's manifest recorded for it."""
        if self.rows is not None and rows != self.rows:
            raise PerturbscoreError(
                f"{self.path} has {rows} row{'' if rows == 1 else 's'} but the run's "
                f"manifest.json says {self.rows}; "
                f"{RERUN}."
            )

    def check(self, tracks: Sequence[str], keep: bool = False) -> None:
        """Refuse a table that cannot be read or lacks one of ``tracks``, before any test.

        Parquet: the footers (column names, row count); CSV: the header line; R files,
        which have no partial reads: the whole table, kept for the tests if ``keep`` (the
        pairing lookups read it anyway), else let go so that only one table pair is held
        at a time.
        """
        if self.columnar:
            names = self.column_names(tracks)
            rows = sum(f.metadata.num_rows for f in self._parquet_files())
            self._check_rows(rows)
        elif self.path.suffix.lower() == ".csv":
            names = self.column_names(tracks)
        else:
            if not _r_signature(self.path):  # a foreign file: no need to read it all
                raise PerturbscoreError(
                    f"{self.path}: not a readable R data file (no R serialization header); {RERUN}."
                )
            self._full(tracks)  # checks the tracks and the row count
            if not keep:
                self.release()
            return
        _check_tracks(self.path, names, tracks)

    def verify(self, tracks: Sequence[str]) -> None:
        """:meth:`check`, and for a CSV table its row count too (the table is read whole,
        then let go): what ``perturbscore check RUN_DIR`` asks of every table."""
        if self.path.suffix.lower() == ".csv":
            try:
                self._full(tracks)  # the header's tracks and the manifest's row count
            finally:
                self.release()
            return
        self.check(tracks)
        self.release()

    def read(self, columns: Sequence[str], score_columns: Sequence[str]) -> pd.DataFrame:
        """These columns of the table (Parquet: only these are read)."""
        if self.columnar:
            return self._read_parquet(columns).to_pandas()
        return self._full(score_columns)[list(columns)]

    def read_scores(self, columns: Sequence[str], score_columns: Sequence[str]) -> np.ndarray:
        """``(len(columns), rows)`` float64 scores, track-major (``# T N``), NaN if missing.

        Track-major because every test sorts one track's values: each row is then
        contiguous, and a Parquet column is copied in without a strided write.
        """
        if self.columnar:
            table = self._read_parquet(columns)
            out = np.empty((len(columns), table.num_rows))
            for j, c in enumerate(columns):
                out[j] = table.column(c).to_numpy(zero_copy_only=False)
        else:
            # A copy of our own: pandas hands out read-only views (copy-on-write), and
            # excluded rows are overwritten below.
            out = self.read(columns, score_columns).to_numpy(dtype=float).T.copy(order="C")
        if self.exclude is not None:
            out[:, self.exclude] = np.nan  # missing values drop out of a track's test
        return out

    def column_names(self, score_columns: Sequence[str]) -> list[str]:
        """The table's column names (Parquet: from the schema, nothing else read)."""
        if self.columnar:
            return list(self._parquet_files()[0].schema_arrow.names)
        if self.path.suffix.lower() == ".csv":
            with table_errors(self.path):
                return list(pd.read_csv(self.path, nrows=0).columns)
        return list(self._full(score_columns).columns)

    def _full(self, score_columns: Sequence[str]) -> pd.DataFrame:
        if self._cache is None:
            with table_errors(self.path):
                frame = read_score_table(self.path, score_columns)
            _check_tracks(self.path, [str(c) for c in frame.columns], score_columns)
            self._check_rows(len(frame))
            self._cache = frame
        return self._cache

    def release(self) -> None:
        self._cache = None
        self._files = None


@dataclass
class RunTables:
    """The tables and track metadata of a finished run."""

    folder: Path
    manifest: dict[str, Any]
    tracks: pd.DataFrame  # identifier, index, description, assay, target, biosample
    sets: list[ScoreSet] = field(default_factory=list)

    def groups(self) -> list[str]:
        return sorted({s.group for s in self.sets})

    def get(self, group: str, aggregation: str, statistic: str) -> ScoreSet:
        for s in self.sets:
            if (s.group, s.aggregation, s.statistic) == (group, aggregation, statistic):
                return s
        raise KeyError((group, aggregation, statistic))


def _check_tracks(path: Path, names: Sequence[str], tracks: Sequence[str]) -> None:
    """Every one of the run's ``tracks`` must be a column of the table at ``path``."""
    have = set(names)
    missing = [t for t in tracks if t not in have]
    if missing:
        raise PerturbscoreError(
            f"{path} lacks {len(missing)} of the run's selected tracks (e.g. {missing[0]}); "
            f"{RERUN}."
        )


def _r_signature(path: Path) -> bool:
    """Whether ``path`` starts like an R data file (RData ``RDX2``/``RDX3``, RDS ``X``,
    ``A`` or ``B``), inside gzip, bzip2 or xz compression if any; reads a few bytes."""
    import bz2
    import gzip
    import lzma

    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
        opener: Any = open
        if head[:2] == b"\x1f\x8b":
            opener = gzip.open
        elif head[:3] == b"BZh":
            opener = bz2.open
        elif head[:6] == b"\xfd7zXZ\x00":
            opener = lzma.open
        with opener(path, "rb") as fh:
            start = fh.read(5)
    except (OSError, EOFError, lzma.LZMAError):
        return False
    if path.suffix.lower() == ".rdata":
        return start[:3] in (b"RDX", b"RDA", b"RDB")
    return start[:2] in (b"X\n", b"A\n", b"B\n")


def read_score_table(path: Path, score_columns: Sequence[str]) -> pd.DataFrame:
    """Read a table written by ``perturbscore run`` (Parquet, CSV, RDS or RData).

    ``score_columns`` (the run's track identifiers) are read as float, the rest as text.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        head = pd.read_csv(path, nrows=0).columns
        scores = set(score_columns)
        dtypes = {c: ("float64" if c in scores else "str") for c in head}
        return pd.read_csv(
            path,
            dtype=dtypes,
            keep_default_na=False,
            na_values={c: ["", "NaN", "nan", "NA"] for c in scores},
        )
    if suffix in {".rds", ".rdata"}:
        import pyreadr

        objs = pyreadr.read_r(str(path))
        return next(iter(objs.values())).reset_index(drop=True)
    raise PerturbscoreError(f"{path}: unknown score table format {suffix!r}.")


def load_run(folder: str | Path) -> RunTables:
    """Find a run's tables and selected tracks through its ``manifest.json``.

    Track metadata (``assay``, ``target``, ``biosample``) comes from the manifest's
    selected-track records when it has them, else from splitting the description.
    A table may be a file or (Dask engine) a folder of Parquet part files.
    """
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if folder.is_file():
        hint = (
            f"{folder.parent}, the folder that holds it"
            if folder.name == "manifest.json"
            else "the --out folder of 'perturbscore run' (or of import-scores, normalise), "
            "not a file in it or the run file"
        )
        raise PerturbscoreError(f"{folder} is a file, not a run folder; give {hint}.")
    if not folder.is_dir():
        raise PerturbscoreError(
            f"{folder}: run folder not found; give the --out folder of 'perturbscore run' "
            "(or of import-scores, normalise)."
        )
    refuse_unfinished_commit(folder)
    if not mpath.is_file():
        raise PerturbscoreError(
            f"{folder}: no manifest.json; give the --out folder of 'perturbscore run'."
        )
    try:
        manifest = json.loads(mpath.read_text())
        sel = pd.DataFrame(manifest["tracks"]["selected"])
        outputs = manifest["outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PerturbscoreError(
            f"{mpath}: not a manifest written by 'perturbscore run' ({exc}); rerun the run."
        ) from exc
    split = [split_description(str(d)) for d in sel["description"]]
    for i, col in enumerate(("assay", "target", "biosample")):
        if col not in sel.columns:
            sel[col] = [s[i] for s in split]
        else:
            sel[col] = sel[col].fillna("").astype(str)
    sel["identifier"] = sel["identifier"].astype(str)
    run = RunTables(folder, manifest, sel)
    for o in outputs:
        path = folder / o["path"]
        ok = path.is_file() or (
            path.is_dir() and path.suffix.lower() == ".parquet" and any(path.glob("*.parquet"))
        )
        if not ok:
            raise PerturbscoreError(
                f"{path}: listed in {mpath} but missing (or a folder without Parquet parts); "
                "rerun 'perturbscore run' into this folder."
            )
        run.sets.append(ScoreSet(o["group"], o["aggregation"], o["statistic"], path, o.get("rows")))
    return run
