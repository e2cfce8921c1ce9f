"""Readers for chunked array stores: HDF5 (h5py) and Zarr (v2 and v3 stores).

Name a dataset inside a store with the same separator as ``.npz`` members:
``preds.h5::ref`` or ``preds.zarr::group/alt``.  The dataset must be
``(variants, bins, tracks)`` of a float dtype.  A store chunked along tracks only
(one chunk spans every variant) makes each block of rows read the whole array; the
reader warns and says how to rechunk.

These need the ``stores`` extra (``pip install 'perturbscore[stores]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import PerturbscoreError
from .npy_header import validate_layout
from .readers import NPZ_MEMBER_SEP, PredictionReader, pick_member

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
ZARR_SUFFIXES = (".zarr",)


def _split(path: str | Path) -> tuple[Path, str | None]:
    text = str(path)
    if NPZ_MEMBER_SEP in text:
        file_part, name = text.split(NPZ_MEMBER_SEP, 1)
        return Path(file_part), name
    return Path(text), None


def _chunk_warning(where: str, shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> list[str]:
    if not chunks or shape[0] <= 1:
        return []
    if chunks[0] >= shape[0] and chunks[2] < shape[2]:
        return [
            f"{where}: chunked along tracks only (chunks {tuple(chunks)} for shape "
            f"{tuple(shape)}): every block of variants reads the whole array. Rechunk along "
            "variants, e.g. chunks (1024, B, T) (h5repack -l DATASET:CHUNK=1024xBxT, or "
            "zarr/dask rechunk), for streaming reads."
        ]
    return []


class Hdf5Reader(PredictionReader):
    """Row-block reader for an HDF5 dataset (h5py reads only the chunks it needs)."""

    def __init__(self, path: str | Path) -> None:
        import h5py

        file_path, name = _split(path)
        if not file_path.is_file():
            raise PerturbscoreError(f"{file_path}: HDF5 file not found. Check the path.")
        try:
            self._file = h5py.File(file_path, "r")
        except OSError as exc:
            raise PerturbscoreError(f"{file_path}: not a readable HDF5 file ({exc}).") from exc
        try:
            datasets: list[str] = []
            self._file.visititems(
                lambda n, obj: datasets.append(n) if isinstance(obj, h5py.Dataset) else None
            )
            name = pick_member(datasets, name, file_path, "dataset", "dataset")
            if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
                raise PerturbscoreError(
                    f"{file_path}: no dataset {name!r} inside the file; it holds "
                    f"{', '.join(datasets[:8])}."
                )
            self._ds = self._file[name]
            self.path = f"{file_path}{NPZ_MEMBER_SEP}{name}"
            self.shape = validate_layout(self.path, self._ds.shape, self._ds.dtype, False)
            # h5py converts the byte order into the native buffer.
            self.dtype = np.dtype(self._ds.dtype).newbyteorder("=")
            self.warnings = _chunk_warning(self.path, self._ds.shape, self._ds.chunks)
        except BaseException:
            self._file.close()
            raise
        self._bytes = file_path.stat().st_size

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        self._check_range(start, stop)
        buf = self._buffer(stop - start, out)
        if stop > start:
            self._ds.read_direct(buf, np.s_[start:stop])
        return buf

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "bytes": self._bytes,
            "format": "hdf5",
            "chunks": list(self._ds.chunks) if self._ds.chunks else None,
        }

    def close(self) -> None:
        self._file.close()


class ZarrReader(PredictionReader):
    """Row-block reader for a Zarr array (format 2 or 3, found automatically)."""

    def __init__(self, path: str | Path) -> None:
        import zarr

        store, name = _split(path)
        if not store.exists():
            raise PerturbscoreError(f"{store}: Zarr store not found. Check the path.")
        try:
            node = zarr.open(store=str(store), mode="r")
        except Exception as exc:  # zarr raises several types for "not a store"
            raise PerturbscoreError(f"{store}: not a readable Zarr store ({exc}).") from exc
        arr: zarr.Array | None
        if name is None:
            if isinstance(node, zarr.Array):
                arr = node
            else:
                name = pick_member(
                    sorted(k for k, _ in node.arrays()), None, store, "array", "array"
                )
                first = node[name]
                arr = first if isinstance(first, zarr.Array) else None
        else:
            found: zarr.Array | zarr.Group | None = None
            if isinstance(node, zarr.Group):
                try:
                    found = node[name]
                except KeyError:
                    found = None
            arr = found if isinstance(found, zarr.Array) else None
            if arr is None:
                raise PerturbscoreError(
                    f"{store}: no array {name!r} inside the store; check the path after "
                    f"'{NPZ_MEMBER_SEP}'."
                )
        assert arr is not None
        self._arr = arr
        self.path = f"{store}{NPZ_MEMBER_SEP}{name}" if name else str(store)
        self.shape = validate_layout(self.path, arr.shape, arr.dtype, False)
        # Assigning into the native buffer converts the byte order.
        self.dtype = np.dtype(arr.dtype).newbyteorder("=")
        self.warnings = _chunk_warning(self.path, arr.shape, arr.chunks)
        self._format = arr.metadata.zarr_format

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        self._check_range(start, stop)
        buf = self._buffer(stop - start, out)
        if stop > start:
            buf[...] = self._arr[start:stop]
        return buf

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "format": f"zarr{self._format}",
            "chunks": list(self._arr.chunks),
        }
