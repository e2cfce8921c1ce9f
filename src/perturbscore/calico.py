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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .extras import require
from .manifest import build_manifest, file_facts, manifest_text
from .memory import DEFAULT_MEMORY_BYTES
from .names import check_name
from .outputs import Commit, folder_lock, recover, sweep
from .tracks import TrackSelection, read_targets, select_tracks
from .writers import FORMATS, TableWriter, check_format, open_writer

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
        f = self._file
        self.statistics = sorted(
            k for k, v in f.items() if isinstance(v, h5py.Dataset) and v.ndim == 2
        )
        missing = [k for k in METADATA if k not in f]
        if missing:
            self.close()
            raise PerturbscoreError(
                f"{self.path}: variant metadata datasets {missing} are missing; a scores file "
                f"needs {list(METADATA)}."
            )
        self.variants = pd.DataFrame({col: _text(f[key][:]) for key, col in METADATA.items()})
        lengths = {key: len(f[key]) for key in METADATA}
        if len(set(lengths.values())) != 1:
            self.close()
            raise PerturbscoreError(f"{self.path}: metadata datasets differ in length {lengths}.")

    def statistic(self, name: str) -> Any:
        """The ``(N, T)`` dataset ``name``."""
        if name not in self.statistics:
            raise PerturbscoreError(
                f"{self.path}: no statistic {name!r}; it holds {self.statistics}."
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


def _block_rows(n_tracks: int, itemsize: int, n_selected: int, budget: int) -> int:
    """Rows per block: about :data:`BLOCK_BYTES` read, and the block's copies within budget."""
    per_row = n_tracks * (itemsize + 8) + 3 * n_selected * 8  # raw, float64, selected, z
    rows = max(1, min(BLOCK_BYTES, budget // 4) // per_row)
    if per_row > budget:
        raise PerturbscoreError(
            f"memory budget {budget} bytes is too small for one row of {n_tracks} tracks "
            f"({per_row} bytes); raise --memory."
        )
    return int(rows)


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
    if out.exists() and not out.is_dir():
        raise PerturbscoreError(
            f"--out {out} is an existing file, not a folder; name a folder for the tables."
        )
    require("h5py", "reading scores files")
    table = read_targets(targets)
    tracks = select_tracks(table, selection)
    columns = tracks["index"].to_numpy(dtype=np.intp)
    names = list(tracks["identifier"])
    with contextlib.ExitStack() as stack:
        files: dict[str, CalicoScores] = {}
        for g, p in sources.items():
            files[g] = CalicoScores(p)
            stack.callback(files[g].close)
        data = {g: f.statistic(statistic) for g, f in files.items()}
        for g, ds in data.items():
            if ds.shape[1] != len(table):
                raise PerturbscoreError(
                    f"{files[g].path}: {statistic} has {ds.shape[1]} tracks, but the track table "
                    f"{targets} has {len(table)} rows; use the targets file of that model."
                )
        paths = {g: out / f"{g}_{statistic}{FORMATS[fmt]}" for g in files}
        rows = {
            g: _block_rows(ds.shape[1], np.dtype(ds.dtype).itemsize, len(names), memory_bytes)
            for g, ds in data.items()
        }
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            with folder_lock(out):
                recover(out)
                sweep(out)
                existing = [p.name for p in [*paths.values(), out / "manifest.json"] if p.exists()]
                if existing and not overwrite:
                    raise PerturbscoreError(
                        f"{out} already holds {', '.join(existing)}; pass --overwrite to replace "
                        "them or choose another --out folder."
                    )
                mean, scale = (
                    _zscore(data, columns, rows)
                    if normalise == "zscore"
                    else (
                        np.zeros(len(names)),
                        np.ones(len(names)),
                    )
                )
                _write(
                    files,
                    data,
                    columns,
                    rows,
                    paths,
                    names,
                    statistic,
                    fmt,
                    mean,
                    scale,
                    out,
                    _import_manifest(
                        files,
                        data,
                        paths,
                        statistic,
                        normalise,
                        fmt,
                        mean,
                        scale,
                        targets,
                        len(table),
                        selection,
                        tracks,
                    ),
                )
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
    return ImportResult(paths, out / "manifest.json")


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


def _write(
    files: Mapping[str, CalicoScores],
    data: Mapping[str, Any],
    columns: np.ndarray,
    rows: Mapping[str, int],
    paths: Mapping[str, Path],
    names: list[str],
    statistic: str,
    fmt: str,
    mean: np.ndarray,
    scale: np.ndarray,
    out: Path,
    manifest: dict[str, Any],
) -> None:
    """Every table to its temporary name, then one journalled commit with the manifest."""
    writers: dict[str, TableWriter] = {}
    try:
        commit = Commit(out)
        for g, ds in data.items():
            ids = files[g].variants
            w = writers[g] = open_writer(
                fmt, paths[g], names, list(ids.columns), f"{g}_{statistic}", expected_rows=len(ids)
            )
            for start, block in _blocks(ds, columns, rows[g]):
                w.write((block - mean) / scale, ids.iloc[start : start + block.shape[0]])
            w.finish()
            commit.add(w.tmp, w.path)
        commit.run(out / "manifest.json", manifest_text(manifest))
    except BaseException:
        for w in writers.values():
            w.abort()
        raise


def _import_manifest(
    files: Mapping[str, CalicoScores],
    data: Mapping[str, Any],
    paths: Mapping[str, Path],
    statistic: str,
    normalise: str,
    fmt: str,
    mean: np.ndarray,
    scale: np.ndarray,
    targets: str | Path,
    table_rows: int,
    selection: TrackSelection | None,
    tracks: pd.DataFrame,
) -> dict[str, Any]:
    return build_manifest(
        source="calico scores",
        run_file=None,
        parameters={
            "statistic": statistic,
            "normalise": normalise,
            "format": fmt,
            "zscore_mean": mean.tolist() if normalise == "zscore" else None,
            "zscore_sd": scale.tolist() if normalise == "zscore" else None,
        },
        targets={**file_facts(Path(targets)), "rows": table_rows},
        selection=(selection or TrackSelection()).describe(),
        tracks=tracks,
        inputs=[
            {
                "group": g,
                "path": str(f.path),
                "statistic": statistic,
                "shape": list(data[g].shape),
                "dtype": str(data[g].dtype),
            }
            for g, f in files.items()
        ],
        outputs=[
            {
                "group": g,
                "aggregation": "none",
                "statistic": statistic,
                "path": paths[g].name,
                "object": f"{g}_{statistic}" if fmt == "rdata" else None,
                "rows": len(files[g].variants),
                "columns": len(tracks) + len(files[g].variants.columns),
            }
            for g in files
        ],
        warnings=[],
    )
