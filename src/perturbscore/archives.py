"""Prediction arrays inside zip archives: ``archive.zip::member.npy`` and ``file.npz::member``.

Archives are read without unpacking them: a stored (uncompressed) member *is* a
``.npy`` file at some offset of the archive and is read in place the same way as a
``.npy`` file; a deflated member is decompressed as one stream, in row order
(:attr:`~perturbscore.readers.PredictionReader.sequential`).  ZIP64 archives (over
4 GiB) work.  :func:`perturbscore.readers.open_predictions` opens these through
:func:`open_member`; finding a member and checking its extent is
:func:`.archive_members.locate_member`.
"""

from __future__ import annotations

import os
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .archive_members import ArchiveMember, locate_member
from .errors import PerturbscoreError
from .npy_header import native_dtype, parse_npy_header, validate_layout
from .readers import PositionalReader, PredictionReader, log

#: Compressed bytes read per positional read of a deflated member.
INFLATE_INPUT_BYTES = 256 * 2**10
#: Most bytes one ``zlib`` call may produce (bounds the temporary it returns).
INFLATE_OUTPUT_BYTES = 4 * 2**20
#: zlib's own state: the 32 KiB window plus tables, rounded up.
INFLATE_STATE_BYTES = 64 * 2**10


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


class StoredMemberReader(PositionalReader):
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
            shape, dtype, fortran = parse_npy_header(self._fp, self.path)
            self.shape = validate_layout(self.path, shape, dtype, fortran)
            self.dtype, self._swap = native_dtype(dtype)
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
            raise self._damaged(f"its CRC-32 is {self.crc:08x} but the archive records {m.crc:08x}")

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
            shape, dtype, fortran = parse_npy_header(self._stream, self.path)  # type: ignore[arg-type]
            self.shape = validate_layout(self.path, shape, dtype, fortran)
            self.dtype, self._swap = native_dtype(dtype)
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
        if self._swap:
            buf.byteswap(inplace=True)
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
