"""Streaming ``.npy`` outputs and the resume log of ``perturbscore predict``.

Each array is preallocated at its final size (the ``.npy`` header, then the file extended
to its full length) and filled row by row with positional writes, so memory stays at one
batch whatever the number of variants and rows may be written in any order.  After every
batch the data are fsynced *before* the batch's line (its index and a CRC-32 of the bytes
it wrote) is appended to the log and fsynced; a resumed run re-reads and checks every
logged batch, then continues after the last one.  A line cut short by a crash is ignored.
The helpers at the end open, verify and clean up that state for :mod:`perturbscore.predict`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import Interrupted, PerturbscoreError

log = logging.getLogger("perturbscore")


class NpyRows:
    """A preallocated ``(N, B, T)`` ``.npy`` file written by rows.

    Parameters
    ----------
    path : Path
        File to create (``create=True``) or reopen for resuming.
    shape : tuple of int
        ``(N, B, T)``.  # N B T
    dtype : str
        ``float16`` or ``float32``.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: str, create: bool):
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(shape[1] * shape[2] * self.dtype.itemsize)
        header = _npy_header(shape, self.dtype)
        self.offset = len(header)
        size = self.offset + shape[0] * self.row_bytes
        if create:
            with open(path, "wb") as fh:
                fh.write(header)
                fh.truncate(size)
        elif not path.is_file() or path.stat().st_size != size:
            raise PerturbscoreError(
                f"{path}: the partial output of the interrupted run is missing or has the "
                "wrong size; run again without --resume."
            )
        self.fd = os.open(path, os.O_RDWR)

    def write(self, row: int, value: np.ndarray) -> bytes:
        """Write one ``(B, T)`` row; returns the bytes written (for the batch CRC)."""
        data = np.ascontiguousarray(value, dtype=self.dtype).tobytes()
        os.pwrite(self.fd, data, self.offset + row * self.row_bytes)
        return data

    def read(self, row: int) -> bytes:
        """The bytes of one row as stored."""
        return os.pread(self.fd, self.row_bytes, self.offset + row * self.row_bytes)

    def sync(self) -> None:
        """Make every write so far durable."""
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)}
    )
    return buf.getvalue()


class ResumeLog:
    """The state folder of one predict run: its fingerprint and the log of finished batches."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.state = folder / "state.json"
        self.log = folder / "batches.log"

    def start(self, fingerprint: dict[str, Any]) -> None:
        """Begin a fresh run: write the fingerprint, empty the log."""
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_synced(self.state, json.dumps(fingerprint, sort_keys=True, indent=1).encode())
        _write_synced(self.log, b"")

    def check(self, fingerprint: dict[str, Any]) -> None:
        """Refuse to resume a run whose inputs or options differ, naming what differs."""
        try:
            old = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PerturbscoreError(
                f"{self.state}: the resume state cannot be read ({exc}); run again without "
                "--resume."
            ) from exc
        new = json.loads(json.dumps(fingerprint))
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differ:
            raise PerturbscoreError(
                f"{self.folder}: the interrupted run had other inputs or options "
                f"({', '.join(differ)}); repeat its command, or run without --resume to "
                "start again."
            )

    def done(self) -> list[int]:
        """CRC of each logged batch, in order (a torn last line is dropped)."""
        text = self.log.read_bytes().decode("ascii", errors="replace")
        crcs: list[int] = []
        for n, line in enumerate(text.split("\n")[:-1]):  # the last piece has no newline
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != n:
                raise PerturbscoreError(
                    f"{self.log}: line {n + 1} is not a batch record; run again without "
                    "--resume."
                )
            crcs.append(int(parts[1], 16))
        return crcs

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` complete lines (drops a torn tail before appending)."""
        lines = self.log.read_bytes().split(b"\n")[:n]
        _write_synced(self.log, b"".join(line + b"\n" for line in lines))

    def append(self, index: int, crc: int) -> None:
        """Record batch ``index`` as finished (call after its data are synced)."""
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{index} {crc:08x}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def batch_crc(chunks: Sequence[bytes]) -> int:
    """CRC-32 of the bytes a batch wrote, in write order."""
    crc = 0
    for c in chunks:
        crc = zlib.crc32(c, crc)
    return crc


# --- the run's state around a failure ----------------------------------------------------
def open_state(state: ResumeLog, fingerprint: dict[str, Any], resumable: bool,
               n_batches: int) -> list[int]:
    """The CRCs of the batches a resumed run already logged (empty for a fresh run)."""
    if not resumable:
        if state.folder.exists():
            shutil.rmtree(state.folder)  # our own state from an earlier run
        state.start(fingerprint)
        return []
    state.check(fingerprint)
    done = state.done()
    if len(done) > n_batches:
        raise PerturbscoreError(f"{state.log}: more batches logged than the run has; "
                                "run again without --resume.")
    state.truncate(len(done))
    return done


class RowJob(Protocol):
    """The rows one forward pass wrote (:class:`perturbscore.predict.Job`)."""

    ref_rows: tuple[int, ...]
    alt_rows: tuple[int, ...]


def verify(done: list[int], batches: Sequence[Sequence[RowJob]], ref: NpyRows, alt: NpyRows,
           state: ResumeLog) -> None:
    """Re-read every logged batch and check its CRC before trusting it."""
    for k, crc in enumerate(done):
        chunks = [a.read(r) for job in batches[k]
                  for a, rows in ((ref, job.ref_rows), (alt, job.alt_rows)) for r in rows]
        if batch_crc(chunks) != crc:
            raise PerturbscoreError(
                f"{state.folder}: batch {k} of the interrupted run does not match its log "
                "(the partial files were changed); run again without --resume."
            )
    if done:
        log.info("resuming after %d of %d batches (verified)", len(done), len(batches))


def cleanup(arrays: list[NpyRows], tmp: dict[str, Path], state: ResumeLog, keep_state: bool,
            created: Path | None) -> None:
    """After a failure: our temporary files and folders go; the state stays if asked.

    ``keep_state``: with ``--resume``, or when another process holds the folder (then
    its state is not ours to remove).  ``created``: the output folder this run created,
    removed again when nothing is left in it (only when the state goes too).
    """
    for a in arrays:
        with contextlib.suppress(OSError):
            a.close()
    for t in tmp.values():
        if t.is_dir() and not t.is_symlink():  # a Zarr store being built
            shutil.rmtree(t, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                t.unlink()
    if not keep_state:  # nothing to resume from: leave no trace
        shutil.rmtree(state.folder, ignore_errors=True)
        if created is not None and created.is_dir() and not any(created.iterdir()):
            created.rmdir()


def interrupted(exc: BaseException, state: ResumeLog, resume: bool, total: int) -> Interrupted:
    """What to tell a user whose run a signal stopped (as ``perturbscore run`` does)."""
    name = getattr(exc, "signal_name", "SIGINT")
    code = getattr(exc, "exit_code", 130)
    if resume and state.log.is_file():
        with contextlib.suppress(PerturbscoreError, OSError):
            done = len(state.done())
            return Interrupted(name, code, (
                f"interrupted by {name}: {done} of {total} batches are recorded in "
                f"{state.folder}; run the same command again (with --resume) to continue."))
    return Interrupted(name, code, (
        f"interrupted by {name}: nothing was written. Start long runs with --resume so "
        "that an interrupted run can continue where it stopped."))
