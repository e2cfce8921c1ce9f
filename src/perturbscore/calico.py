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

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .errors import PerturbscoreError
from .tracks import TrackSelection, read_targets, select_tracks
from .writers import FORMATS, TableWriter, check_format, open_writer, temp_path

#: Metadata datasets and the ID columns they become.
METADATA = {"snp": "rsID", "chr": "chr", "pos": "pos", "ref_allele": "REF", "alt_allele": "ALT"}
NORMALISATIONS = ("none", "zscore")
BLOCK_ROWS = 8192


def _text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class CalicoScores:
    """One scores file: its statistics and its variants (as text ID columns)."""

    def __init__(self, path: str | Path) -> None:
        import h5py

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


def _blocks(ds: Any, columns: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, ds.shape[0], BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, ds.shape[0])
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
        Output folder (tables and ``manifest.json``).
    selection : TrackSelection, optional
        Tracks to keep, in output order (default: all).
    normalise : {"none", "zscore"}
        ``zscore``: per track, subtract the mean and divide by the standard deviation
        (ddof 1) over all groups' variants together, so groups stay comparable.
    fmt : {"parquet", "csv", "rds", "rdata"}
    overwrite : bool

    Returns
    -------
    ImportResult
    """
    if normalise not in NORMALISATIONS:
        raise PerturbscoreError(f"--normalise must be one of {NORMALISATIONS}.")
    fmt = check_format(fmt)
    out = Path(out_dir)
    table = read_targets(targets)
    tracks = select_tracks(table, selection)
    columns = tracks["index"].to_numpy(dtype=np.intp)
    names = list(tracks["identifier"])
    files = {g: CalicoScores(p) for g, p in sources.items()}
    try:
        data = {g: f.statistic(statistic) for g, f in files.items()}
        for g, ds in data.items():
            if ds.shape[1] != len(table):
                raise PerturbscoreError(
                    f"{files[g].path}: {statistic} has {ds.shape[1]} tracks, but the track table "
                    f"{targets} has {len(table)} rows; use the targets file of that model."
                )
        paths = {g: out / f"{g}_{statistic}{FORMATS[fmt]}" for g in files}
        existing = [str(p) for p in [*paths.values(), out / "manifest.json"] if p.exists()]
        if existing and not overwrite:
            raise PerturbscoreError(f"output already exists: {existing[:4]}; pass --overwrite.")
        mean, scale = np.zeros(len(names)), np.ones(len(names))
        if normalise == "zscore":
            # Per-block means and squared deviations combined (Chan et al.): stable where
            # sums of squares would cancel.
            n, m2 = 0, np.zeros(len(names))
            for ds in data.values():
                for _, block in _blocks(ds, columns):
                    nb = block.shape[0]
                    mb = block.mean(axis=0)
                    delta = mb - mean
                    mean = mean + delta * nb / (n + nb)
                    m2 += ((block - mb) ** 2).sum(axis=0) + delta**2 * n * nb / (n + nb)
                    n += nb
            scale = np.sqrt(m2 / max(n - 1, 1))
            scale[scale == 0] = 1.0  # a constant track stays 0 rather than NaN
        out.mkdir(parents=True, exist_ok=True)
        writers: dict[str, TableWriter] = {}
        try:
            for g, ds in data.items():
                ids = files[g].variants
                w = open_writer(
                    fmt,
                    paths[g],
                    names,
                    list(ids.columns),
                    f"{g}_{statistic}",
                    expected_rows=len(ids),
                )
                writers[g] = w
                for start, block in _blocks(ds, columns):
                    w.write((block - mean) / scale, ids.iloc[start : start + block.shape[0]])
            for w in writers.values():
                w.commit()
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        manifest = {
            "perturbscore_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": "calico scores",
            "parameters": {
                "statistic": statistic,
                "normalise": normalise,
                "format": fmt,
                "zscore_mean": mean.tolist() if normalise == "zscore" else None,
                "zscore_sd": scale.tolist() if normalise == "zscore" else None,
            },
            "targets": {"path": str(targets), "rows": len(table)},
            "tracks": {
                "selection": (selection or TrackSelection()).describe(),
                "count": len(tracks),
                "selected": tracks[["index", "identifier", "description"]].to_dict("records"),
            },
            "inputs": [
                {
                    "group": g,
                    "path": str(f.path),
                    "statistic": statistic,
                    "shape": list(data[g].shape),
                    "dtype": str(data[g].dtype),
                }
                for g, f in files.items()
            ],
            "outputs": [
                {
                    "group": g,
                    "aggregation": "none",
                    "statistic": statistic,
                    "path": paths[g].name,
                    "rows": len(files[g].variants),
                }
                for g in files
            ],
            "warnings": [],
        }
        mpath = out / "manifest.json"
        tmp = temp_path(mpath)
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        os.replace(tmp, mpath)
        return ImportResult(paths, mpath)
    finally:
        for f in files.values():
            f.close()
