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
(:attr:`PredictionReader.sequential`).  ZIP64 archives (over 4 GiB) work.

New formats (HDF5, Zarr) implement the same small interface and register a
format in :func:`open_predictions`; scoring code only sees :class:`PredictionReader`
(HDF5 and Zarr live in :mod:`perturbscore.stores`).
"""

from __future__ import annotations

import abc
import logging
import os
import struct
import threading
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from .errors import PerturbscoreError

log = logging.getLogger("perturbscore")

#: Floating dtypes accepted for predictions.
ALLOWED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

#: Size of the scratch buffer rows are read through: small enough to stay in cache.
SCRATCH_BYTES = 4 * 2**20

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

        Whole rows are read through ``scratch`` (``scratch_rows()`` rows, reused) and the
        selected tracks copied out while they are still in the CPU cache; reading
        through a small buffer is about twice as fast as memory-mapping the file, whose
        page faults cost more than the copy.  ``columns=None`` keeps every track.
        """
        self._check_range(start, stop)
        n_bins, n_tracks = self.shape[1], self.shape[2]
        if columns is None:
            return self.read_rows(start, stop)  # a new array of every track
        out = np.empty((stop - start, n_bins, len(columns)), self.dtype)
        step = self.scratch_rows()
        if scratch is None:
            scratch = np.empty((step, n_bins, n_tracks), self.dtype)
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


def pick_member(
    names: Sequence[str], name: str | None, where: object, kind: str, placeholder: str
) -> str:
    """The member ``name``, or the only one in ``names`` when none is named."""
    if name is not None:
        return name
    if len(names) != 1:
        raise PerturbscoreError(
            f"{where}: holds {len(names)} {kind}s ({_list_names(list(names), 8)}); name one as "
            f"'{where}{NPZ_MEMBER_SEP}<{placeholder}>'."
        )
    return names[0]


def _parse_npy_header(fp: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """Read the ``.npy`` magic and header from ``fp``; return shape, dtype, fortran_order."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            # Version 3.0 differs only in allowing a UTF-8 header; numpy exposes no
            # public reader for it.
            shape, fortran, dtype = np.lib.format._read_array_header(fp, version)  # type: ignore[attr-defined]
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise PerturbscoreError(
            f"{where}: not a valid .npy array ({exc}). Save predictions with numpy.save()."
        ) from exc
    return tuple(shape), np.dtype(dtype), bool(fortran)


def _validate_layout(
    where: str, shape: tuple[int, ...], dtype: np.dtype[Any], fortran: bool
) -> tuple[int, int, int]:
    if dtype not in ALLOWED_DTYPES:
        raise PerturbscoreError(
            f"{where}: dtype {dtype} is not a float16/float32/float64 prediction array. "
            "Convert it with arr.astype('float32') before saving."
        )
    if len(shape) != 3:
        raise PerturbscoreError(
            f"{where}: shape {shape} has {len(shape)} axes; predictions must be "
            "(variants, bins, tracks). Add a bins axis with arr[:, None, :] if you saved one bin."
        )
    if fortran:
        raise PerturbscoreError(
            f"{where}: array is stored in Fortran order, which cannot be streamed by rows. "
            "Re-save it with numpy.save(path, numpy.ascontiguousarray(arr))."
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


class _PositionalReader(PredictionReader):
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
        return buf

    def close(self) -> None:
        self._fp.close()


class NpyReader(_PositionalReader):
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
            shape, dtype, fortran = _parse_npy_header(self._fp, self.path)
            self.shape = _validate_layout(self.path, shape, dtype, fortran)
            self.dtype = dtype
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


# --- zip archives (.zip of .npy files, and .npz) ------------------------------------

#: Local file header: signature, then fixed fields; name and extra lengths at 26..30.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"

#: Compressed bytes read per positional read of a deflated member.
INFLATE_INPUT_BYTES = 256 * 2**10
#: Most bytes one ``zlib`` call may produce (bounds the temporary it returns).
INFLATE_OUTPUT_BYTES = 4 * 2**20
#: zlib's own state: the 32 KiB window plus tables, rounded up.
INFLATE_STATE_BYTES = 64 * 2**10

_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflated",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
    9: "deflate64",
    93: "zstd",
}


@dataclass(frozen=True)
class ArchiveMember:
    """Where one ``.npy`` member lies inside a zip archive (sizes from its directory)."""

    archive: Path
    name: str  # full name inside the archive, e.g. "raw_scores/final_ref.npy"
    label: str  # what messages call it: "archive.zip::name"
    kind: str  # "zip" or "npz"
    method: int  # zipfile.ZIP_STORED or zipfile.ZIP_DEFLATED
    data_offset: int  # first byte of the member's (compressed) data in the archive
    compress_size: int
    file_size: int
    crc: int

    @property
    def method_name(self) -> str:
        return _METHODS.get(self.method, f"method {self.method}")


def _list_names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _pick_archive_member(
    archive: Path, keys: dict[str, str], member: str | None, kind: str
) -> str:
    """The full member name for what the user wrote (``keys``: user-facing key -> name).

    An exact key wins; otherwise a key whose last path part equals ``member`` (a file in
    a folder inside the archive), if exactly one does.
    """
    placeholder = "<member>.npy" if kind == "zip" else "<member>"
    listing = _list_names(sorted(keys)) if keys else "no .npy arrays"
    if member is None:
        if len(keys) == 1:
            return next(iter(keys.values()))
        raise PerturbscoreError(
            f"{archive}: holds {len(keys)} .npy arrays ({listing}); name one as "
            f"'{archive}{NPZ_MEMBER_SEP}{placeholder}'."
        )
    if member in keys:
        return keys[member]
    by_base = [k for k in keys if PurePosixPath(k).name == member]
    if len(by_base) == 1:
        return keys[by_base[0]]
    if len(by_base) > 1:
        raise PerturbscoreError(
            f"{archive}{NPZ_MEMBER_SEP}{member}: {len(by_base)} members of the archive are "
            f"named {member} ({_list_names(sorted(by_base))}); name one with its folder, e.g. "
            f"'{archive}{NPZ_MEMBER_SEP}{sorted(by_base)[0]}'."
        )
    raise PerturbscoreError(
        f"{archive}{NPZ_MEMBER_SEP}{member}: no array named {member} in the archive; it holds "
        f"{listing}."
    )


def locate_member(archive: str | Path, member: str | None, kind: str) -> ArchiveMember:
    """Find ``member`` in a zip archive and check that its bytes are all there.

    Parameters
    ----------
    archive : str or Path
        A ``.zip`` of ``.npy`` files (``kind="zip"``; members named with ``.npy``) or an
        ``.npz`` (``kind="npz"``; members named without it, as ``numpy.load`` does).
    member : str, optional
        Member name, its base name when it sits in a folder and no other member shares
        it, or None when the archive holds one array.
    kind : {"zip", "npz"}

    Raises
    ------
    PerturbscoreError
        Missing file; no zip central directory (a truncated download); unknown,
        ambiguous, encrypted or unsupported-compression member; member data running
        past the central directory or the end of the file (a member cut short).
    """
    p = Path(archive)
    label = f"{p}{NPZ_MEMBER_SEP}{member}" if member else str(p)
    if not p.is_file():
        raise PerturbscoreError(f"{label}: prediction file not found. Check the path.")
    size = p.stat().st_size
    try:
        with zipfile.ZipFile(p) as zf:
            every = zf.infolist()
            # Where the central directory starts: member data must end before it.
            start_dir = int(getattr(zf, "start_dir", size))
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as exc:
        raise PerturbscoreError(
            f"{label}: {p} ({size} bytes) is not a complete zip archive ({exc}): its table "
            "of contents, the central directory at the end of the file, is missing or "
            "damaged, as after a truncated download. Download the archive again."
        ) from exc
    npy = {i.filename: i for i in every if i.filename.endswith(".npy") and not i.is_dir()}
    keys = {(n if kind == "zip" else n[: -len(".npy")]): n for n in npy}
    name = _pick_archive_member(p, keys, member, kind)
    info = npy[name]
    key = name if kind == "zip" else name[: -len(".npy")]
    label = f"{p}{NPZ_MEMBER_SEP}{key}"
    if info.flag_bits & 0x1:
        raise PerturbscoreError(
            f"{label}: the member is encrypted; unpack it with its password and re-create "
            "the archive without one."
        )
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise PerturbscoreError(
            f"{label}: the member is compressed with "
            f"{_METHODS.get(info.compress_type, f'method {info.compress_type}')}, which cannot "
            "be streamed; re-create the archive stored (zip -0) or deflated (zip)."
        )
    with open(p, "rb") as fp:
        header = os.pread(fp.fileno(), _LOCAL_HEADER.size, info.header_offset)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise PerturbscoreError(
            f"{label}: the archive is damaged: no member header at byte {info.header_offset} "
            "where its table of contents says the member starts. Download the archive again."
        )
    fields = _LOCAL_HEADER.unpack(header)
    flags, method, local_crc = fields[3], fields[4], fields[7]
    # Without a data descriptor (flag bit 3) the local header repeats the CRC-32: the
    # two copies disagreeing means one was damaged, which is cheaper to catch now than
    # after streaming the member.
    if method != info.compress_type or (not flags & 0x8 and local_crc != info.CRC):
        raise PerturbscoreError(
            f"{label}: the archive is damaged: the member's own header (method {method}, "
            f"CRC-32 {local_crc:08x}) disagrees with its table of contents (method "
            f"{info.compress_type}, CRC-32 {info.CRC:08x}). Download the archive again."
        )
    # The local header's extra field (ZIP64 sizes, timestamps) may differ in length
    # from the central directory's, so the data offset must come from it.
    name_len, extra_len = fields[-2], fields[-1]
    data_offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    data_end = data_offset + info.compress_size
    # The member's data must end before whatever follows it: the next member's header,
    # the central directory, or the end of the file.
    bounds = [(size, "the end of the file")]
    if start_dir > info.header_offset:
        bounds.append((start_dir, "the archive's table of contents"))
    after = [i.header_offset for i in every if i.header_offset > info.header_offset]
    if after:
        bounds.append((min(after), "the next member"))
    limit, where = min(bounds)
    if data_end > limit:
        raise PerturbscoreError(
            f"{label}: the member is cut short: the archive says it holds "
            f"{info.compress_size} bytes from byte {data_offset}, but {where} comes after "
            f"{max(0, limit - data_offset)} of them. Download the archive again."
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise PerturbscoreError(
            f"{label}: the archive is damaged: a stored member of {info.file_size} bytes "
            f"takes {info.compress_size} bytes in the archive. Download the archive again."
        )
    return ArchiveMember(
        archive=p,
        name=name,
        label=label,
        kind=kind,
        method=info.compress_type,
        data_offset=data_offset,
        compress_size=info.compress_size,
        file_size=info.file_size,
        crc=info.CRC,
    )


def _check_member_size(
    m: ArchiveMember, header_len: int, shape: tuple[int, int, int], dtype: np.dtype[Any]
) -> None:
    expected = header_len + shape[0] * shape[1] * shape[2] * dtype.itemsize
    if m.file_size != expected:
        kind = "cut short" if m.file_size < expected else "longer than its header says"
        raise PerturbscoreError(
            f"{m.label}: the .npy inside the archive is {kind}: it holds {m.file_size} bytes, "
            f"expected {expected} for shape {shape} {dtype}. Re-create the archive from "
            "complete files."
        )


class StoredMemberReader(_PositionalReader):
    """A stored (uncompressed) ``.npy`` member of a zip or ``.npz``, read in place.

    The member's bytes are the ``.npy`` file itself, so rows are read at their offset
    in the archive exactly as :class:`NpyReader` reads a file: thread-safe, no copy.
    Stored members carry a CRC-32 that is not checked (that would read every byte
    twice); their sizes are.
    """

    def __init__(self, member: ArchiveMember) -> None:
        self.member = member
        self.path = member.label
        self._fp = open(member.archive, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._fp.seek(member.data_offset)
            shape, dtype, fortran = _parse_npy_header(self._fp, self.path)
            self.shape = _validate_layout(self.path, shape, dtype, fortran)
            self.dtype = dtype
            self._offset = self._fp.tell()
            _check_member_size(member, self._offset - member.data_offset, self.shape, dtype)
        except BaseException:
            self._fp.close()
            raise

    def describe(self) -> dict[str, Any]:
        return _describe_member(super().describe(), self.member)


def _describe_member(base: dict[str, Any], m: ArchiveMember) -> dict[str, Any]:
    return {
        **base,
        "bytes": m.compress_size,
        "format": m.kind,
        "member": m.name if m.kind == "zip" else m.name[: -len(".npy")],
        "compression": m.method_name,
    }


class _InflateStream:
    """The uncompressed bytes of a deflated member, produced in order (not thread-safe).

    Compressed bytes are read with positional reads, so the stream owns no file
    position; the CRC-32 of everything produced is kept and checked at the end.
    """

    def __init__(self, fd: int, member: ArchiveMember) -> None:
        self._fd = fd
        self.member = member
        self.reset()

    def reset(self) -> None:
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as in zip
        self._tail = b""  # compressed input zlib has not consumed yet
        self._read = 0  # compressed bytes read so far
        self.pos = 0  # uncompressed bytes produced so far
        self.crc = 0

    def _damaged(self, what: str) -> PerturbscoreError:
        return PerturbscoreError(
            f"{self.member.label}: the member is damaged: {what}. Download the archive again."
        )

    def advance(self, n: int, view: memoryview | None = None) -> None:
        """Produce the next ``n`` bytes into ``view`` (or drop them when None)."""
        m = self.member
        if self.pos + n > m.file_size:
            raise self._damaged(f"asked for bytes past its end ({m.file_size} bytes)")
        got = 0
        while got < n:
            data = self._tail
            if not data and self._read < m.compress_size:
                want = min(INFLATE_INPUT_BYTES, m.compress_size - self._read)
                data = os.pread(self._fd, want, m.data_offset + self._read)
                if len(data) != want:
                    raise self._damaged(
                        f"the archive ended {want - len(data)} bytes into a read of its data"
                    )
                self._read += want
            try:
                chunk = self._inflate.decompress(data, min(n - got, INFLATE_OUTPUT_BYTES))
            except zlib.error as exc:
                raise self._damaged(
                    f"its compressed data is invalid near uncompressed byte {self.pos} ({exc})"
                ) from exc
            self._tail = self._inflate.unconsumed_tail
            if chunk:
                if view is not None:
                    view[got : got + len(chunk)] = chunk
                self.crc = zlib.crc32(chunk, self.crc)
                got += len(chunk)
                self.pos += len(chunk)
            elif not self._tail and (self._inflate.eof or self._read >= m.compress_size):
                raise self._damaged(
                    f"its compressed data ends after {self.pos} of {m.file_size} bytes"
                )
        if self.pos == m.file_size and self.crc != m.crc:
            raise self._damaged(
                f"its CRC-32 is {self.crc:08x} but the archive records {m.crc:08x}"
            )

    def read(self, n: int = -1) -> bytes:
        """File-like ``read`` (for parsing the ``.npy`` header)."""
        n = self.member.file_size - self.pos if n < 0 else min(n, self.member.file_size - self.pos)
        buf = bytearray(n)
        self.advance(n, memoryview(buf))
        return bytes(buf)


class DeflatedMemberReader(PredictionReader):
    """A deflated ``.npy`` member of a zip or ``.npz``, decompressed as one stream.

    Sequential (:attr:`sequential` is True): blocks must be requested in increasing
    row order from one thread at a time.  Asking for later rows decompresses and drops
    the rows between; asking for earlier rows than the stream's position restarts
    decompression from the member's first byte (correct, but it costs a re-read: it is
    logged at debug level and counted in :attr:`restarts`).  The CRC-32 is checked
    when the last row has been produced.
    """

    sequential = True

    def __init__(self, member: ArchiveMember) -> None:
        self.member = member
        self.path = member.label
        self._fp = open(member.archive, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._stream = _InflateStream(self._fp.fileno(), member)
            shape, dtype, fortran = _parse_npy_header(self._stream, self.path)  # type: ignore[arg-type]
            self.shape = _validate_layout(self.path, shape, dtype, fortran)
            self.dtype = dtype
            self._offset = self._stream.pos
            _check_member_size(member, self._offset, self.shape, dtype)
        except BaseException:
            self._fp.close()
            raise
        self._lock = threading.Lock()  # one decompression stream: one reader at a time
        self.restarts = 0  # times decompression restarted from the member's first byte

    @property
    def scratch_nbytes(self) -> int:
        """The scratch buffer plus this reader's decompression buffers and zlib state."""
        return (
            super().scratch_nbytes
            + INFLATE_INPUT_BYTES
            + INFLATE_OUTPUT_BYTES
            + INFLATE_STATE_BYTES
        )

    def read_rows(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        self._check_range(start, stop)
        buf = self._buffer(stop - start, out)
        target = self._offset + start * self.row_nbytes
        with self._lock:
            s = self._stream
            if target < s.pos:
                self.restarts += 1
                log.debug(
                    "%s: rows from %d asked after row %d: decompression restarts from the "
                    "beginning (read deflated members in row order, on one thread)",
                    self.path,
                    start,
                    (s.pos - self._offset) // self.row_nbytes,
                )
                s.reset()
            while s.pos < target:  # skip forward without keeping the rows
                s.advance(min(target - s.pos, INFLATE_OUTPUT_BYTES))
            s.advance(buf.nbytes, buf.data.cast("B"))
        return buf

    def describe(self) -> dict[str, Any]:
        return _describe_member(super().describe(), self.member)

    def close(self) -> None:
        self._fp.close()


def open_member(archive: str | Path, member: str | None, kind: str) -> PredictionReader:
    """A reader for one ``.npy`` member of a zip (``kind="zip"``) or ``.npz``.

    Stored members are read in place (:class:`StoredMemberReader`, thread-safe);
    deflated ones are streamed (:class:`DeflatedMemberReader`, sequential).
    """
    m = locate_member(archive, member, kind)
    if m.method == zipfile.ZIP_STORED:
        return StoredMemberReader(m)
    return DeflatedMemberReader(m)


def NpzMemberReader(path: str | Path, member: str | None = None) -> PredictionReader:  # noqa: N802
    """One array of an ``.npz`` (kept name; see :func:`open_member`)."""
    return open_member(path, member, "npz")


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
        file, damaged archive (see :func:`locate_member`).
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
        raise PerturbscoreError(
            f"{text}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}."
        )
    if fmt in ("hdf5", "zarr"):
        return _store_reader(fmt, text)
    if fmt in ("npz", "zip"):
        member = text.split(NPZ_MEMBER_SEP, 1)[1] if NPZ_MEMBER_SEP in text else None
        return open_member(file_part, member or None, fmt)
    return NpyReader(text)
