"""Readers for prediction arrays shaped ``(variants, bins, tracks)`` (axes ``N B T``).

A reader validates its file when it is opened (format, dtype, shape, size) and
afterwards hands out row blocks with :meth:`PredictionReader.read_rows`.  It never
loads the whole array: ``.npy`` files are read with positional reads at the row offset
through a small reusable buffer (faster than a memory map, whose page faults cost more
than the copy, and resident memory stays bounded).

Zip archives of ``.npy`` files (``archive.zip::member.npy``) and ``.npz`` files
(``file.npz::member``) are read without unpacking them: a stored (uncompressed)
member *is* a ``.npy`` file at some offset of the archive and is read in place the
same way; a deflated member is decompressed as one stream, in row order
(:attr:`PredictionReader.sequential`).  ZIP64 archives (over 4 GiB) work
(see :mod:`perturbscore.archives`).

New formats (HDF5, Zarr) implement the same small interface and register a
format in :func:`open_predictions`; scoring code only sees :class:`PredictionReader`
(HDF5 and Zarr live in :mod:`perturbscore.stores`).
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import memory
from .errors import PerturbscoreError
from .npy_header import native_dtype, parse_npy_header, validate_layout

log = logging.getLogger("perturbscore")

#: Size of the scratch buffer rows are read through: small enough to stay in cache
#: (defined with the memory plan that counts it).
SCRATCH_BYTES = memory.SCRATCH_BYTES

#: Separator between an archive (or store) path and the member inside it:
#: ``preds.npz::ref``, ``raw_scores.zip::final_ref.npy``, ``preds.h5::ref``.
NPZ_MEMBER_SEP = "::"


class PredictionReader(abc.ABC):
    """A read-only ``(N, B, T)`` float array read in row blocks.

    Attributes
    ----------
    path : str
        What the user named (file, or ``file::member``), used in messages.
    shape : tuple[int, int, int]
        ``(N, B, T)``: variants, bins, tracks.
    dtype : numpy.dtype
        float16, float32 or float64.
    sequential : bool
        False (the default): any thread may read any rows at any time (``.npy``,
        stored archive members, HDF5, Zarr).  True: the reader is one stream (a
        deflated zip or ``.npz`` member) and must be read in increasing row order by
        ONE thread; a block that starts before the stream's position is still read
        correctly, but decompression restarts from the beginning (logged at debug
        level), so a run that reads such a reader out of order costs ``N**2``.
    warnings : sequence of str
        Problems worth a user's attention that do not stop a run (e.g. poor chunking).
    restarts : int
        Times a sequential reader restarted its stream because rows were asked out of
        order (always 0 for the others); a test of an engine's read order.
    """

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    warnings: Sequence[str] = ()
    sequential: bool = False
    restarts: int = 0
    #: The file's bytes are in the other byte order (``>f4`` on a little-endian CPU):
    #: ``dtype`` is the native one and each block is byte-swapped in place once read.
    _swap: bool = False

    @property
    def n_rows(self) -> int:
        """Number of variants ``N``."""
        return self.shape[0]

    @property
    def row_nbytes(self) -> int:
        """Bytes of one variant row, ``B * T * itemsize``."""
        return self.shape[1] * self.shape[2] * self.dtype.itemsize

    @abc.abstractmethod
    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Return rows ``[start, stop)`` as an ``(stop - start, B, T)`` array.

        Parameters
        ----------
        start, stop : int
            Row range, ``0 <= start <= stop <= N``.
        out : numpy.ndarray, optional
            C-contiguous buffer of this reader's dtype with at least ``stop - start``
            rows; the result is a view into it, so one buffer serves every block.
        """

    def scratch_rows(self) -> int:
        """Rows of the scratch buffer :meth:`read_selected` reads through."""
        return max(1, SCRATCH_BYTES // self.row_nbytes)

    @property
    def scratch_nbytes(self) -> int:
        """Bytes one reading thread needs besides its output: the scratch buffer.

        Readers holding buffers of their own (a deflated member's decompression
        buffers) add them, so a memory plan can count ``scratch_nbytes`` per thread.
        """
        return self.scratch_rows() * self.row_nbytes

    def read_selected(
        self,
        start: int,
        stop: int,
        columns: np.ndarray | None,
        scratch: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rows ``[start, stop)`` of the tracks ``columns`` as a new ``(n, B, S)`` array.

        Whole rows are read through ``scratch`` and the selected tracks copied out while
        they are still in the CPU cache; reading through a small buffer is about twice as
        fast as memory-mapping the file, whose page faults cost more than the copy.
        ``scratch`` (reused, ``(k, B, T)`` of this reader's dtype, ``k >= 1``) may hold
        fewer rows than the block: the block is then read ``k`` rows at a time (a memory
        plan shrinks scratch buffers under a tight budget, independently of the block
        size).  Without it, a buffer of ``scratch_rows()`` rows is made.
        ``columns=None`` keeps every track.
        """
        self._check_range(start, stop)
        n_bins, n_tracks = self.shape[1], self.shape[2]
        if columns is None:
            return self.read_rows(start, stop)  # a new array of every track
        out = np.empty((stop - start, n_bins, len(columns)), self.dtype)
        if scratch is None:
            scratch = np.empty((self.scratch_rows(), n_bins, n_tracks), self.dtype)
        # The buffer given, not scratch_rows(), sets the step: the memory plan sized it.
        step = scratch.shape[0]
        if step < 1:
            raise ValueError(f"scratch buffer {scratch.shape} holds no row")
        for s in range(start, stop, step):
            e = min(s + step, stop)
            rows = self.read_rows(s, e, scratch)
            # Indices were validated against the track table; 'clip' skips buffering.
            np.take(rows, columns, axis=2, out=out[s - start : e - start], mode="clip")
        return out

    def describe(self) -> dict[str, Any]:
        """Facts recorded in the run manifest."""
        return {"path": self.path, "shape": list(self.shape), "dtype": str(self.dtype)}

    def close(self) -> None:  # noqa: B027 - optional hook, most readers hold nothing
        """Release file handles."""

    def __enter__(self) -> PredictionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _buffer(self, n: int, out: np.ndarray | None) -> np.ndarray:
        """A C-contiguous ``(n, B, T)`` view of ``out`` (or a new array)."""
        shape = (n, self.shape[1], self.shape[2])
        if out is None:
            return np.empty(shape, dtype=self.dtype)
        if out.dtype != self.dtype or out.shape[1:] != shape[1:] or out.shape[0] < n:
            raise ValueError(f"buffer {out.shape} {out.dtype} does not fit {shape} {self.dtype}")
        view = out[:n]
        if not view.flags.c_contiguous:
            raise ValueError("read buffer must be C-contiguous")
        return view

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows [{start}, {stop}) outside 0..{self.n_rows} of {self.path}")


def list_names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def pick_member(
    names: Sequence[str], name: str | None, where: object, kind: str, placeholder: str
) -> str:
    """The member ``name``, or the only one in ``names`` when none is named."""
    if name is not None:
        return name
    if len(names) != 1:
        raise PerturbscoreError(
            f"{where}: holds {len(names)} {kind}s ({list_names(list(names), 8)}); name one as "
            f"'{where}{NPZ_MEMBER_SEP}<{placeholder}>'."
        )
    return names[0]


def prediction_file(path: str | Path) -> Path:
    """The file (or Zarr folder) a prediction path names: ``a.zip::member`` -> ``a.zip``."""
    return Path(str(path).split(NPZ_MEMBER_SEP, 1)[0])


def missing_prediction_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files among ``paths`` (REF and ALT of every batch) that do not exist, once each."""
    files = dict.fromkeys(prediction_file(p) for p in paths)
    return [f for f in files if not f.exists()]


class PositionalReader(PredictionReader):
    """Rows of a C-order array that starts at byte ``self._offset`` of ``self._fp``.

    Rows are read with positional reads (``os.preadv``) straight into the caller's
    buffer: no shared file position, so any number of threads may read blocks of one
    file at once, and no copy.  ``.npy`` files and stored (uncompressed) archive
    members differ only in where the array starts.
    """

    _fp: IO[bytes]
    _offset: int  # byte offset of row 0 in the file

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        self._check_range(start, stop)
        buf = self._buffer(stop - start, out)
        view = buf.data.cast("B")
        want, got = buf.nbytes, 0
        offset = self._offset + start * self.row_nbytes
        while got < want:
            n = os.preadv(self._fp.fileno(), [view[got:]], offset + got)
            if n <= 0:
                break
            got += n
        if got != want:
            raise PerturbscoreError(
                f"{self.path}: short read at rows {start}..{stop} ({got} of {want} bytes); "
                "the file changed while it was read."
            )
        if self._swap:
            buf.byteswap(inplace=True)
        return buf

    def close(self) -> None:
        self._fp.close()


class NpyReader(PositionalReader):
    """Buffered row reader for a ``.npy`` file.

    The header is parsed once; the file size must equal header plus ``N*B*T*itemsize``
    bytes, so truncated downloads fail here rather than mid-run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        p = Path(path)
        if not p.is_file():
            raise PerturbscoreError(f"{self.path}: prediction file not found. Check the path.")
        self._fp = open(p, "rb")  # noqa: SIM115 - kept open for streaming, closed in close()
        try:
            shape, dtype, fortran = parse_npy_header(self._fp, self.path)
            self.shape = validate_layout(self.path, shape, dtype, fortran)
            self.dtype, self._swap = native_dtype(dtype)
            self._offset = self._fp.tell()
            expected = self._offset + self.n_rows * self.row_nbytes
            actual = p.stat().st_size
            if actual != expected:
                kind = "truncated" if actual < expected else "longer than its header says"
                raise PerturbscoreError(
                    f"{self.path}: file is {kind}: {actual} bytes, expected {expected} for "
                    f"shape {self.shape} {self.dtype}. Re-copy or re-generate the file."
                )
        except BaseException:
            self._fp.close()
            raise
        self.nbytes = actual

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bytes": self.nbytes, "format": "npy"}


#: Format names accepted by ``open_predictions(..., fmt=...)`` and run files' ``format``.
FORMATS = ("npy", "npz", "zip", "hdf5", "zarr")


def _store_reader(fmt: str, path: str) -> PredictionReader:
    try:
        from . import stores
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PerturbscoreError(
            f"{path}: reading {fmt} needs h5py/zarr: pip install 'perturbscore[stores]'."
        ) from exc
    return stores.Hdf5Reader(path) if fmt == "hdf5" else stores.ZarrReader(path)


def open_predictions(path: str | Path, fmt: str | None = None) -> PredictionReader:
    """Open a prediction array for row-block reading.

    Parameters
    ----------
    path : str or Path
        ``x.npy``; ``x.npz`` (an archive with one array) or ``x.npz::member``;
        ``x.zip::member.npy`` (a zip of ``.npy`` files; a member in a folder may be
        named by its base name when that is unique); ``x.h5::dataset`` (HDF5);
        ``x.zarr::array`` (Zarr v2 or v3 store).
    fmt : {"npy", "npz", "zip", "hdf5", "zarr"}, optional
        The format, when the file name does not tell it.

    Returns
    -------
    PredictionReader
        Validated reader; its ``shape`` is ``(N, B, T)``.

    Raises
    ------
    PerturbscoreError
        Missing file, member or dataset, unknown format, wrong dtype/shape, truncated
        file, damaged archive (see :func:`.archive_members.locate_member`).
    """
    text = str(path)
    file_part = text.split(NPZ_MEMBER_SEP, 1)[0]
    if fmt is None:
        suffix = Path(file_part).suffix.lower()
        fmt = {
            ".npy": "npy",
            ".npz": "npz",
            ".zip": "zip",
            ".h5": "hdf5",
            ".hdf5": "hdf5",
            ".hdf": "hdf5",
            ".zarr": "zarr",
        }.get(suffix)
        if fmt is None:
            raise PerturbscoreError(
                f"{text}: unknown prediction format {suffix!r}; use .npy, .npz "
                "(x.npz::member), .zip (x.zip::member.npy), .h5 (x.h5::dataset) or .zarr "
                "(x.zarr::array), or name the format."
            )
    if fmt not in FORMATS:
        raise PerturbscoreError(f"{text}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if fmt in ("hdf5", "zarr"):
        return _store_reader(fmt, text)
    if fmt in ("npz", "zip"):
        from .archives import open_member  # archives imports this module

        member = text.split(NPZ_MEMBER_SEP, 1)[1] if NPZ_MEMBER_SEP in text else None
        return open_member(file_part, member or None, fmt)
    return NpyReader(text)
