"""Zarr output of the score cube ``(variant, track, aggregation, statistic)``.

One store per group, ``{group}_scores.zarr``, opened with ``xarray.open_zarr``:
the data variable ``scores`` has dimensions ``variant, track, aggregation,
statistic``; coordinates are the variant ID columns (along ``variant``), the track
``identifier`` (the ``track`` index) with ``track_index``, ``assay``, ``target`` and
``biosample``, and the aggregation and statistic names.

Both engines build the same :func:`cube_dataset`: the local engine creates the store
from it lazily (metadata and coordinates only) and then writes each block of scores
into its row region; the Dask engine writes it with its dask-backed scores.
Needs the ``stores`` and ``dask`` extras.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .outputs import temp_path

DIMS = ("variant", "track", "aggregation", "statistic")
#: Zarr format 2: its text arrays have a settled specification that every Zarr and
#: xarray version reads (format 3 has none for fixed-length strings yet).
ZARR_FORMAT = 2


def cube_dataset(
    scores: Any,
    ids: pd.DataFrame,
    tracks: pd.DataFrame,
    aggregations: Sequence[str],
    statistics: Sequence[str],
) -> Any:
    """An ``xarray.Dataset`` holding ``scores`` (numpy or dask, ``N S A St``) and metadata."""
    import xarray as xr

    coords: dict[str, Any] = {
        "variant": np.arange(len(ids)),
        "track": tracks["identifier"].to_numpy(dtype=str),
        "track_index": ("track", tracks["index"].to_numpy(dtype=np.int64)),
        "aggregation": list(aggregations),
        "statistic": list(statistics),
    }
    for col in ("assay", "target", "biosample"):
        if col in tracks:
            coords[col] = ("track", tracks[col].to_numpy(dtype=str))
    for col in ids.columns:
        coords[str(col)] = ("variant", ids[col].astype(str).to_numpy(dtype=str))
    return xr.Dataset({"scores": (DIMS, scores)}, coords=coords)


class CubeWriter:
    """Writes one group's cube block by block (local engine); temp store until commit."""

    def __init__(
        self,
        path: Path,
        ids: pd.DataFrame,
        tracks: pd.DataFrame,
        aggregations: Sequence[str],
        statistics: Sequence[str],
        chunk_rows: int,
    ) -> None:
        import dask.array as da
        import zarr

        self.path = path
        self.tmp = temp_path(path)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.keys = [(a, s) for a in aggregations for s in statistics]
        shape = (len(ids), len(tracks), len(aggregations), len(statistics))
        lazy = da.full(shape, np.nan, chunks=(max(1, chunk_rows), *shape[1:]))
        # compute=False writes metadata and coordinates; scores are written by region.
        cube_dataset(lazy, ids, tracks, aggregations, statistics).to_zarr(
            self.tmp, mode="w", compute=False, zarr_format=ZARR_FORMAT
        )
        self._scores = zarr.open_array(str(self.tmp / "scores"), mode="r+")
        self.shape = shape

    def write(self, row: int, values: dict[tuple[str, str], np.ndarray]) -> None:
        """Rows ``[row, row + n)`` of the group: ``(aggregation, statistic) -> (n, S)``."""
        n = next(iter(values.values())).shape[0]
        block = np.empty((n, self.shape[1], self.shape[2], self.shape[3]))
        n_stats = self.shape[3]
        for k, key in enumerate(self.keys):
            block[:, :, k // n_stats, k % n_stats] = values[key]
        self._scores[row : row + n] = block

    def commit(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
