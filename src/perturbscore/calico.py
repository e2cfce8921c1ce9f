"""Already-reduced scores from Calico-style scores files (basenji/borzoi ``sad.h5``).

Such a file is HDF5 with per-variant statistics, each a ``(N, T)`` dataset (``SAD``,
``logSAD``, ...; often float16), and variant metadata datasets ``snp``, ``chr``,
``pos``, ``ref_allele`` and ``alt_allele`` (bytes).  :func:`import_scores` re-selects
tracks from one statistic of one file per group, optionally z-scores every track over
all groups' variants together, and writes the same tables and ``manifest.json`` as
``perturbscore run`` (aggregation ``none``), so ``perturbscore compare`` and ``report``
work on them unchanged.  Needs the ``stores`` extra (h5py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .extras import require
from .manifest import build_manifest, file_facts, manifest_text
from .memory import DEFAULT_MEMORY_BYTES, byte_count
from .names import check_name
from .outputs import Commit, check_out_folder, output_folder
from .outputs_earlier import refuse_existing_outputs, stale_outputs
from .tracks import TrackSelection, read_targets, select_tracks
from .writers import (
    FORMATS,
    TableWriter,
    check_format,
    holds_in_memory,
    open_writer,
    row_group_rows,
    writer_bytes,
)

#: Metadata datasets and the ID columns they become.
METADATA = {"snp": "rsID", "chr": "chr", "pos": "pos", "ref_allele": "REF", "alt_allele": "ALT"}
NORMALISATIONS = ("none", "zscore")


def _text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class CalicoScores:
    """One scores file: its statistics and its variants (as text ID columns)."""

    def __init__(self, path: str | Path) -> None:
        h5py = require("h5py", "reading scores files")

        self.path = Path(path)
        if not self.path.is_file():
            raise PerturbscoreError(f"{self.path}: scores file not found. Check the path.")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise PerturbscoreError(f"{self.path}: not a readable HDF5 file ({exc}).") from exc
        try:
            self._read_metadata(h5py)
        except BaseException:
            self.close()  # a file that fails here leaves no open handle
            raise

    def _read_metadata(self, h5py: Any) -> None:
        f = self._file
        self.statistics = sorted(
            k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2
        )
        missing = [k for k in METADATA if k not in f]
        if missing:
            raise PerturbscoreError(
                f"{self.path}: variant metadata datasets {', '.join(missing)} are missing; a "
                f"scores file needs {', '.join(METADATA)}."
            )
        lengths = {key: len(f[key]) for key in METADATA}
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{k} {n}" for k, n in lengths.items())
            raise PerturbscoreError(
                f"{self.path}: metadata datasets differ in length ({detail}); every dataset "
                "needs one entry per variant."
            )
        self.variants = pd.DataFrame({col: _text(f[key][:]) for key, col in METADATA.items()})

    def statistic(self, name: str) -> Any:
        """The ``(N, T)`` dataset ``name``."""
        if name not in self.statistics:
            raise PerturbscoreError(
                f"{self.path}: no statistic {name!r}; it holds {', '.join(self.statistics)}."
            )
        ds = self._file[name]
        if ds.shape[0] != len(self.variants):
            raise PerturbscoreError(
                f"{self.path}: {name} has {ds.shape[0]} rows but {len(self.variants)} variants."
            )
        if np.dtype(ds.dtype).kind != "f":
            raise PerturbscoreError(f"{self.path}: {name} has dtype {ds.dtype}, not float.")
        return ds

    def close(self) -> None:
        self._file.close()


@dataclass
class ImportResult:
    """What :func:`import_scores` wrote."""

    tables: dict[str, Path]
    manifest: Path


#: Bytes of one block as read (every track of the file, float64 after conversion): the
#: block size comes from this and the memory budget, never a fixed row count.
BLOCK_BYTES = 8 * 2**20


def _held_bytes(fmt: str, n_selected: int, n_ids: int, group_rows: Mapping[str, int]) -> int:
    """What the open table writer holds besides the blocks: groups are written one after
    another (each writer is finished before the next opens), so the largest group's."""
    most = max(group_rows.values(), default=0)
    if holds_in_memory(fmt):
        return most * n_selected * 8  # R formats: the whole table of scores until commit
    # A Parquet writer buffers one row group: never more rows than the table has.
    group = max(1, min(row_group_rows(n_selected), most))
    return writer_bytes(fmt, n_selected, n_ids, most, group)


def _block_rows(
    n_tracks: int, itemsize: int, n_selected: int, budget: int, resident: int = 0
) -> int:
    """Rows per block: about :data:`BLOCK_BYTES` read, and every copy within ``budget``.

    ``resident``: bytes held whatever the block size (the variants' ID tables, the
    writer's buffers).  Each block row costs its read (``T itemsize``), its float64
    conversion (``T 8``), the selected tracks and their z-scores (``3 S 8``).

    Raises
    ------
    PerturbscoreError
        Not even one row fits beside ``resident``, with the budget that would.
    """
    per_row = n_tracks * (itemsize + 8) + 3 * n_selected * 8  # raw, float64, selected, z
    need = resident + per_row
    if need > budget:
        raise PerturbscoreError(
            f"memory budget {byte_count(budget)} is too small: import-scores needs at least "
            f"{need:,} bytes ({resident:,} resident plus {per_row:,} per block row of "
            f"{n_tracks:,} tracks); raise --memory to {-(-need // 2**20)}MiB or more."
        )
    return int(max(1, min(BLOCK_BYTES, budget - resident) // per_row))


def _blocks(ds: Any, columns: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of the selected tracks (``n S`` float64) of an ``(N, T)`` statistic."""
    for start in range(0, ds.shape[0], rows):
        stop = min(start + rows, ds.shape[0])
        yield start, np.asarray(ds[start:stop], dtype=np.float64)[:, columns]


def import_scores(
    sources: Mapping[str, str | Path],
    statistic: str,
    targets: str | Path,
    out_dir: str | Path,
    selection: TrackSelection | None = None,
    normalise: str = "none",
    fmt: str = "parquet",
    overwrite: bool = False,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> ImportResult:
    """Write ``{group}_{statistic}`` tables from scores files, one file per group.

    Parameters
    ----------
    sources : mapping
        Group name -> scores file.
    statistic : str
        Dataset to read (e.g. ``SAD``).
    targets : path
        Track table of the model; its rows must match the statistic's columns.
    out_dir : path
        Output folder (tables and ``manifest.json``, published together or not at all).
    selection : TrackSelection, optional
        Tracks to keep, in output order (default: all).
    normalise : {"none", "zscore"}
        ``zscore``: per track, subtract the mean and divide by the standard deviation
        (ddof 1) over all groups' variants together, so groups stay comparable.
    fmt : {"parquet", "csv", "rds", "rdata"}
    overwrite : bool
    memory_bytes : int
        Budget for blocks and writer buffers, in bytes.

    Returns
    -------
    ImportResult
    """
    if normalise not in NORMALISATIONS:
        raise PerturbscoreError(
            f"--normalise must be one of {', '.join(NORMALISATIONS)}, not {normalise!r}."
        )
    for g in sources:
        check_name(g, "group name", "import-scores")
    fmt = check_format(fmt)
    out = Path(out_dir)
    check_out_folder(out)
    require("h5py", "reading scores files")
    table = read_targets(targets)
    tracks = select_tracks(table, selection)
    with contextlib.ExitStack() as stack:
        files: dict[str, CalicoScores] = {}
        for g, p in sources.items():
            files[g] = CalicoScores(p)  # closes itself if it fails
            stack.callback(files[g].close)
        job = _Job(
            files,
            statistic,
            fmt,
            normalise,
            tracks,
            Path(targets),
            len(table),
            selection,
            out,
            memory_bytes,
        )
        with output_folder(out):
            refuse_existing_outputs(
                out, job.planned(), overwrite, "calico scores", "perturbscore import-scores"
            )
            if normalise == "zscore":
                job.mean, job.scale = _zscore(job.data, job.columns, job.rows)
            stale = stale_outputs(out, "calico scores", job.planned()) if overwrite else []
            _write(job, stale)
    return ImportResult(job.paths, out / "manifest.json")


class _Job:
    """One import, validated: its files, statistic datasets, tracks and outputs."""

    def __init__(
        self,
        files: dict[str, CalicoScores],
        statistic: str,
        fmt: str,
        normalise: str,
        tracks: pd.DataFrame,
        targets: Path,
        table_rows: int,
        selection: TrackSelection | None,
        out: Path,
        memory_bytes: int,
    ) -> None:
        self.files, self.statistic, self.fmt, self.normalise = files, statistic, fmt, normalise
        self.tracks, self.targets, self.table_rows = tracks, targets, table_rows
        self.selection, self.out = selection, out
        self.columns = tracks["index"].to_numpy(dtype=np.intp)
        self.names = list(tracks["identifier"])
        self.data = {g: f.statistic(statistic) for g, f in files.items()}
        for g, ds in self.data.items():
            if ds.shape[1] != table_rows:
                raise PerturbscoreError(
                    f"{files[g].path}: {statistic} has {ds.shape[1]} tracks, but the track table "
                    f"{targets} has {table_rows} rows; use the targets file of that model."
                )
        self.paths = {g: out / f"{g}_{statistic}{FORMATS[fmt]}" for g in files}
        # Planned here, before the output folder is touched: a budget too small is refused
        # up front, as run and normalise refuse theirs.
        ids = [f.variants for f in files.values()]
        resident = sum(int(v.memory_usage(deep=True).sum()) for v in ids) + _held_bytes(
            fmt, len(self.names), len(METADATA), {g: len(f.variants) for g, f in files.items()}
        )
        self.rows = {
            g: _block_rows(
                ds.shape[1], np.dtype(ds.dtype).itemsize, len(self.names), memory_bytes, resident
            )
            for g, ds in self.data.items()
        }
        self.mean, self.scale = np.zeros(len(self.names)), np.ones(len(self.names))

    def planned(self) -> list[Path]:
        return [*self.paths.values(), self.out / "manifest.json"]


def _zscore(
    data: Mapping[str, Any], columns: np.ndarray, rows: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-track mean and standard deviation (ddof 1) over every group's variants."""
    # Per-block means and squared deviations combined (Chan et al.): stable where sums
    # of squares would cancel.
    mean = np.zeros(len(columns))
    n, m2 = 0, np.zeros(len(columns))
    for g, ds in data.items():
        for _, block in _blocks(ds, columns, rows[g]):
            nb = block.shape[0]
            mb = block.mean(axis=0)
            delta = mb - mean
            mean = mean + delta * nb / (n + nb)
            m2 += ((block - mb) ** 2).sum(axis=0) + delta**2 * n * nb / (n + nb)
            n += nb
    scale = np.sqrt(m2 / max(n - 1, 1))
    scale[scale == 0] = 1.0  # a constant track stays 0 rather than NaN
    return mean, scale


def _write(job: _Job, stale: Sequence[Path] = ()) -> None:
    """Every table to its temporary name, then one journalled commit with the manifest
    (which also removes ``stale``: an earlier import's tables not written again)."""
    writers: dict[str, TableWriter] = {}
    try:
        commit = Commit(job.out)
        for path in stale:
            commit.remove(path)
        for g, ds in job.data.items():
            ids = job.files[g].variants
            w = writers[g] = open_writer(
                job.fmt,
                job.paths[g],
                job.names,
                list(ids.columns),
                f"{g}_{job.statistic}",
                expected_rows=len(ids),
            )
            for start, block in _blocks(ds, job.columns, job.rows[g]):
                w.write((block - job.mean) / job.scale, ids.iloc[start : start + block.shape[0]])
            w.finish()
            commit.add(w.tmp, w.path)
        commit.run(job.out / "manifest.json", manifest_text(_import_manifest(job)))
    except BaseException:
        for w in writers.values():
            w.abort()
        raise


def _import_manifest(job: _Job) -> dict[str, Any]:
    zscore = job.normalise == "zscore"
    return build_manifest(
        source="calico scores",
        run_file=None,
        parameters={
            "statistic": job.statistic,
            "normalise": job.normalise,
            "format": job.fmt,
            "zscore_mean": job.mean.tolist() if zscore else None,
            "zscore_sd": job.scale.tolist() if zscore else None,
        },
        targets={**file_facts(job.targets), "rows": job.table_rows},
        selection=(job.selection or TrackSelection()).describe(),
        tracks=job.tracks,
        inputs=[
            {
                "group": g,
                "path": str(f.path),
                "statistic": job.statistic,
                "shape": list(job.data[g].shape),
                "dtype": str(job.data[g].dtype),
            }
            for g, f in job.files.items()
        ],
        outputs=[
            {
                "group": g,
                "aggregation": "none",
                "statistic": job.statistic,
                "path": job.paths[g].name,
                "object": f"{g}_{job.statistic}" if job.fmt == "rdata" else None,
                "rows": len(f.variants),
                "columns": len(job.tracks) + len(f.variants.columns),
            }
            for g, f in job.files.items()
        ],
        warnings=[],
    )
