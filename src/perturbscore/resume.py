"""Resumable runs: record finished blocks durably, verify and replay them after a crash.

With ``--resume`` a run keeps ``OUT/.perturbscore-resume/``:

``state.json``
    the run's fingerprint (:func:`input_fingerprint` of every input, the settings, the
    output format, the package version), its output tables and the rows per block;
``blocks.f8``
    the float64 scores of every finished block, one after another: for each of the
    block's tables (its group's, in output order) an ``(n, S)`` row-major array;
``blocks.jsonl``
    one line per finished block: where it is, the byte range of its scores in
    ``blocks.f8`` with their CRC-32, and its NaN/Inf and log2fc counts.

Durability: scores are fsynced *before* the log lines that confirm them are written
(and those are fsynced too), in batches (:data:`SYNC_SECONDS`), so a block is logged
only once its scores are on disk.  A node that dies loses at most the unsynced tail.
On resume every logged block is checked while it is replayed: its byte range must lie
inside ``blocks.f8`` and its CRC must match; the first block that fails and every
block after it are computed again (never replayed as zeros).  The writers see exactly
the calls of an uninterrupted run, so the tables are byte-identical.

State that belongs to another run file or other inputs is refused, naming the input
and what changed; it is removed when the run succeeds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import PerturbscoreError
from .outputs import fsync_dir, write_text_atomic

log = logging.getLogger("perturbscore")

STATE_DIR = ".perturbscore-resume"
#: Scores are fsynced and their log lines written at most this many seconds apart.
SYNC_SECONDS = 0.5
#: ... or after this many blocks, whichever comes first.
SYNC_BLOCKS = 64
#: A Zarr store with more files than this is fingerprinted by its metadata and a sample
#: of chunk files (every file's size and mtime beyond that would cost minutes on 10^6).
MAX_LISTED_FILES = 200_000


@dataclass
class Recorded:
    """One finished block as logged."""

    batch: int
    start: int
    stop: int
    nonfinite: list[tuple[str, int, tuple[int, int, int]]]
    bad_log2: int
    identical: str = ""  # hex of numpy.packbits of the block's REF == ALT flags
    bad_log2_inputs: int | None = 0  # of bad_log2, from NaN/Inf inputs; None: not logged

    def identical_rows(self) -> np.ndarray:
        """The block's ``bool # n`` REF == ALT flags."""
        bits = np.frombuffer(bytes.fromhex(self.identical), np.uint8)
        return np.unpackbits(bits, count=self.stop - self.start).astype(bool)

    @staticmethod
    def pack(identical: np.ndarray) -> str:
        """Flags as the hex text the log stores."""
        return np.packbits(np.asarray(identical, bool)).tobytes().hex()


def input_fingerprint(path: Path) -> dict[str, Any]:
    """What identifies an input's content cheaply: size and mtime, or a store's files.

    A file gives its size and modification time.  A folder (a Zarr store, or the array
    folder inside one) gives the sizes and modification times of every file under it,
    folded into a digest: rewriting chunks inside a store changes neither the folder's
    size nor its mtime, but it changes its chunk files'.
    """
    st = path.stat()
    facts: dict[str, Any] = {"path": str(path.resolve())}
    if not path.is_dir():
        facts.update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
        return facts
    import hashlib  # only for a store's folder: OpenSSL's load is a few ms of every run

    digest = hashlib.sha256()
    n_files = total = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            s = p.stat()
            rel = p.relative_to(path).as_posix()
            digest.update(f"{rel}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
            n_files += 1
            total += s.st_size
            if n_files >= MAX_LISTED_FILES:
                break
    facts.update(files=n_files, bytes=total, digest=digest.hexdigest()[:32])
    return facts


#: Fingerprint entries, in people's words, for :func:`describe_change`.
_WHAT = {
    "format": "the output format",
    "nan_policy": "--nan",
    "outputs": "--out-of-field or --zarr",
    "perturbscore_version": "the perturbscore version",
}

#: Settings of the run file that a command-line option overrides, as messages name them.
_SETTING_OPTIONS = {"center_bin": "--center-bin or the run file's center_bin"}


def _said(value: Any) -> str:
    return "not set" if value is None else str(value)


def _output_change(key: str, was: Any, now: Any) -> str:
    """One option of how tables are written from the blocks (``outputs``), changed."""
    if key == "zarr":
        return f"--zarr was {'given' if was else 'not given'}, now {'given' if now else 'not'}"
    if key == "out_of_field":
        return f"--out-of-field was {_said(was)}, now {_said(now)}"
    return f"{key.replace('_', ' ')} was {_said(was)}, now {_said(now)}"


#: What the stored blocks of a resumed run do not depend on (applied when tables are
#: written), so that an interrupted run may resume with another value.
BLOCK_INDEPENDENT = ("outputs",)


def blocks_identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's fingerprint its stored blocks depend on."""
    return {k: v for k, v in fingerprint.items() if k not in BLOCK_INDEPENDENT}


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """People's words for what differs between two fingerprints."""
    notes: list[str] = []
    old_inputs = {i["path"]: i for i in old.get("inputs", [])}
    new_inputs = {i["path"]: i for i in new.get("inputs", [])}
    for path, facts in new_inputs.items():
        before = old_inputs.get(path)
        if before is None:
            notes.append(f"{path} is a new input")
        elif before != facts:
            what = [
                {"bytes": "size", "mtime_ns": "modification time", "digest": "chunk files"}.get(
                    k, k
                )
                for k in ("bytes", "mtime_ns", "files", "digest")
                if before.get(k) != facts.get(k)
            ]
            notes.append(f"{path} changed ({', '.join(dict.fromkeys(what))})")
    notes += [f"{p} is no longer an input" for p in old_inputs if p not in new_inputs]
    for key in sorted(set(old) | set(new)):
        if key == "inputs" or old.get(key) == new.get(key):
            continue
        if key == "run_file":
            notes.append(f"the run file was {old.get(key)}, now {new.get(key)}")
        elif key == "settings":
            a, b = old.get(key) or {}, new.get(key) or {}
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            # A setting an option overrides may have changed on the command line or in
            # the run file: both are named, with the values, which tell the two apart.
            notes += [
                f"{_SETTING_OPTIONS[k]} was {_said(a.get(k))}, now {_said(b.get(k))}"
                for k in keys
                if k in _SETTING_OPTIONS
            ]
            plain = [k for k in keys if k not in _SETTING_OPTIONS]
            if plain:
                notes.append(f"the run file's settings differ ({', '.join(plain)})")
        elif key == "outputs" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            a, b = old[key], new[key]
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    notes.append(_output_change(k, a.get(k), b.get(k)))
        else:
            notes.append(f"{_WHAT.get(key, key.replace('_', ' '))} differs")
    return notes


class ResumeState:
    """The state folder of one resumable run.

    Parameters
    ----------
    out_dir : Path
        The run's output folder.
    fingerprint : dict
        What identifies the run (compared with recorded state).
    outputs : sequence of str
        Output table names, in writer order.
    n_scores : int
        Score columns per table.
    """

    def __init__(
        self, out_dir: Path, fingerprint: dict[str, Any], outputs: Sequence[str], n_scores: int
    ) -> None:
        self.dir = out_dir / STATE_DIR
        self.fingerprint = fingerprint
        self.outputs = list(outputs)
        self.n_scores = n_scores
        self.chunk_rows: int | None = None
        self.recorded: list[Recorded] = []
        self._entries: list[dict[str, Any]] = []
        self._data: IO[bytes] | None = None
        self._log: IO[str] | None = None
        self._pending: list[str] = []
        self._last_sync = time.monotonic()
        self._end = 0  # bytes of blocks.f8 that belong to confirmed blocks
        if (self.dir / "state.json").is_file():
            self._load()

    def _load(self) -> None:
        try:
            state = json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PerturbscoreError(
                f"{self.dir}/state.json is unreadable ({exc}); remove {self.dir} to start afresh."
            ) from exc
        old = blocks_identity(state.get("fingerprint", {}))
        if old != blocks_identity(self.fingerprint):
            change = describe_change(old, blocks_identity(self.fingerprint))
            raise PerturbscoreError(
                f"{self.dir}: resume state belongs to another run: "
                f"{'; '.join(change) or 'fingerprints differ'}. "
                "Remove that folder to start afresh, or restore the original inputs."
            )
        if state.get("outputs") != self.outputs:
            raise PerturbscoreError(
                f"{self.dir}: resume state lists other output tables; remove that folder to "
                "start afresh."
            )
        self.chunk_rows = int(state["chunk_rows"])
        log_path = self.dir / "blocks.jsonl"
        lines = log_path.read_text(encoding="utf-8").splitlines() if log_path.exists() else []
        data = self.dir / "blocks.f8"
        size = data.stat().st_size if data.exists() else 0
        end = 0
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
                ok = rec["offset"] == end and rec["offset"] + rec["nbytes"] <= size
            except (ValueError, KeyError, TypeError):
                ok = False  # a line cut short by the crash
            if not ok:
                log.warning(
                    "resume: block %d of %d in %s is incomplete on disk; it and the blocks "
                    "after it are computed again",
                    n + 1,
                    len(lines),
                    self.dir,
                )
                break
            end += rec["nbytes"]
            self._entries.append(rec)
            self.recorded.append(
                Recorded(
                    rec["batch"],
                    rec["start"],
                    rec["stop"],
                    [(p, c, (f[0], f[1], f[2])) for p, c, f in rec["nonfinite"]],
                    rec["bad_log2"],
                    rec.get("identical", ""),
                    # Logs of earlier versions did not record it: unknown, not 0.
                    rec.get("bad_log2_inputs", None if rec["bad_log2"] else 0),
                )
            )

    def replay(self, tables: Sequence[Sequence[int]]) -> Iterator[tuple[Recorded, dict[int, Any]]]:
        """Verified recorded blocks with their scores (output index -> ``(n, S)`` array).

        ``tables[k]`` are the output indices of block ``k``'s group.  Stops at the
        first block whose bytes fail their checksum; :meth:`start` then drops it and
        what follows.
        """
        path = self.dir / "blocks.f8"
        good = 0
        if self._entries:
            with open(path, "rb") as fh:
                for rec, entry in zip(self.recorded, self._entries, strict=True):
                    fh.seek(entry["offset"])
                    raw = fh.read(entry["nbytes"])
                    if len(raw) != entry["nbytes"] or zlib.crc32(raw) != entry["crc32"]:
                        log.warning(
                            "resume: block %d (rows %d..%d) fails its checksum; computing it "
                            "and the rest again",
                            good + 1,
                            rec.start,
                            rec.stop,
                        )
                        break
                    which = tables[good] if good < len(tables) else ()
                    values = np.frombuffer(raw, np.float64).reshape(len(which), -1, self.n_scores)
                    good += 1
                    self._end = entry["offset"] + entry["nbytes"]
                    yield rec, {i: values[k] for k, i in enumerate(which)}
        self._keep(good)

    def _keep(self, n: int) -> None:
        if n < len(self._entries):
            self._entries = self._entries[:n]
            self.recorded = self.recorded[:n]

    @property
    def replayed(self) -> int:
        """Blocks that :meth:`replay` verified (valid once it finished)."""
        return len(self._entries)

    def start(self, chunk_rows: int) -> None:
        """Open the state for appending after the verified blocks (creating it if new)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.chunk_rows is None:
            self.chunk_rows = chunk_rows
            state = {
                "fingerprint": self.fingerprint,
                "outputs": self.outputs,
                "chunk_rows": chunk_rows,
            }
            write_text_atomic(self.dir / "state.json", json.dumps(state, indent=1), durable=True)
        data = self.dir / "blocks.f8"
        self._data = open(data, "r+b" if data.exists() else "w+b")  # noqa: SIM115
        self._data.truncate(self._end)  # drop unconfirmed or damaged scores
        self._data.seek(self._end)
        # The log keeps the verified lines only (rewritten whole, atomically).
        text = "".join(json.dumps(e) + "\n" for e in self._entries)
        write_text_atomic(self.dir / "blocks.jsonl", text, durable=True)
        self._log = open(self.dir / "blocks.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._last_sync = time.monotonic()

    def record(self, rec: Recorded, values: Sequence[np.ndarray]) -> None:
        """Append a finished block; its log line follows once its scores are on disk."""
        assert self._data is not None
        raw = b"".join(np.ascontiguousarray(v, dtype=np.float64).tobytes() for v in values)
        self._data.write(raw)
        entry = {
            "batch": rec.batch,
            "start": rec.start,
            "stop": rec.stop,
            "nonfinite": rec.nonfinite,
            "bad_log2": rec.bad_log2,
            "bad_log2_inputs": rec.bad_log2_inputs,
            "identical": rec.identical,
            "offset": self._end,
            "nbytes": len(raw),
            "crc32": zlib.crc32(raw),
        }
        self._end += len(raw)
        self._pending.append(json.dumps(entry))
        if len(self._pending) >= SYNC_BLOCKS or time.monotonic() - self._last_sync >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """Make the recorded scores durable, then write the log lines that confirm them."""
        if self._data is None or self._log is None or not self._pending:
            return
        self._data.flush()
        os.fsync(self._data.fileno())
        self._log.write("".join(line + "\n" for line in self._pending))
        self._log.flush()
        os.fsync(self._log.fileno())
        self._pending.clear()
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync what was recorded and close (the state stays for the next --resume)."""
        try:
            self.sync()
        finally:
            for fh in (self._data, self._log):
                if fh is not None:
                    fh.close()
            self._data = self._log = None
            fsync_dir(self.dir)

    def finish(self) -> None:
        """The run succeeded: the state is no longer needed."""
        for fh in (self._data, self._log):
            if fh is not None:
                fh.close()
        self._data = self._log = None
        shutil.rmtree(self.dir, ignore_errors=True)
