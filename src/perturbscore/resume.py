"""Resumable runs: record finished blocks, replay them after a crash.

With ``--resume`` a run keeps ``OUT/.perturbscore-resume/``:

``state.json``
    the run's fingerprint (run file content, every input's path, size and mtime, output
    format, package version) and the rows per block;
``scores-<i>.f8``
    the float64 scores of output table ``i``, block after block (``n S``, row-major);
``blocks.jsonl``
    one line per finished block, written after its scores: where it is, how many bytes
    of each score file it ends at, and its NaN/Inf and log2fc counts.

Running the same command again replays the recorded blocks into fresh writers, in order,
then computes the rest.  The writers see exactly the calls of an uninterrupted run, so
the tables are byte-identical.  A partly written block (after the last log line) is
cut off.  State that belongs to another run file or other inputs is refused, naming
what differs; it is removed when the run succeeds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import PerturbscoreError

STATE_DIR = ".perturbscore-resume"


@dataclass
class Recorded:
    """One finished block as logged."""

    batch: int
    start: int
    stop: int
    nonfinite: list[tuple[str, int, tuple[int, int, int]]]
    bad_log2: int


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and modification time: a changed input fails the comparison."""
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


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
        self.row_bytes = n_scores * 8
        self.chunk_rows: int | None = None
        self.recorded: list[Recorded] = []
        self._offsets: list[list[int]] = []
        self._files: list[IO[bytes]] = []
        self._log: IO[str] | None = None
        if (self.dir / "state.json").is_file():
            self._load()

    def _load(self) -> None:
        state = json.loads((self.dir / "state.json").read_text())
        old = state.get("fingerprint", {})
        if old != self.fingerprint:
            differs = sorted(
                k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k)
            )
            raise PerturbscoreError(
                f"{self.dir}: resume state belongs to another run ({', '.join(differs)} "
                "differ from this run file and its inputs); remove that folder to start "
                "afresh, or run the original run file."
            )
        if state.get("outputs") != self.outputs:
            raise PerturbscoreError(f"{self.dir}: resume state lists other output tables.")
        self.chunk_rows = int(state["chunk_rows"])
        log_path = self.dir / "blocks.jsonl"
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by the crash: that block is redone
            self.recorded.append(
                Recorded(
                    rec["batch"],
                    rec["start"],
                    rec["stop"],
                    [(p, c, tuple(f)) for p, c, f in rec["nonfinite"]],
                    rec["bad_log2"],
                )
            )
            self._offsets.append(rec["offsets"])

    def start(self, chunk_rows: int) -> None:
        """Open the state for appending (creating it for a new run)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.chunk_rows is None:
            self.chunk_rows = chunk_rows
            state = {
                "fingerprint": self.fingerprint,
                "outputs": self.outputs,
                "chunk_rows": chunk_rows,
            }
            (self.dir / "state.json").write_text(json.dumps(state, indent=1))
        ends = self._offsets[-1] if self._offsets else [0] * len(self.outputs)
        for i, end in enumerate(ends):
            path = self.dir / f"scores-{i}.f8"
            fh = open(path, "r+b" if path.exists() else "w+b")  # noqa: SIM115
            fh.truncate(end)  # drop scores of a block the log never confirmed
            fh.seek(end)
            self._files.append(fh)
        # Rewrite the log with the confirmed lines only.
        lines = [
            json.dumps(
                {
                    "batch": r.batch,
                    "start": r.start,
                    "stop": r.stop,
                    "nonfinite": r.nonfinite,
                    "bad_log2": r.bad_log2,
                    "offsets": o,
                }
            )
            for r, o in zip(self.recorded, self._offsets, strict=True)
        ]
        (self.dir / "blocks.jsonl").write_text("".join(line + "\n" for line in lines))
        self._log = open(self.dir / "blocks.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def replay(self) -> Iterator[tuple[Recorded, dict[int, np.ndarray]]]:
        """Recorded blocks with their scores: output table index -> ``(n, S)`` array.

        A block has scores only for its own group's tables.
        """
        starts = [0] * len(self.outputs)
        for rec, ends in zip(self.recorded, self._offsets, strict=True):
            values = {}
            for i, fh in enumerate(self._files):
                if ends[i] > starts[i]:
                    fh.seek(starts[i])
                    raw = fh.read(ends[i] - starts[i])
                    values[i] = np.frombuffer(raw, np.float64).reshape(-1, self.row_bytes // 8)
                starts[i] = ends[i]
            yield rec, values
        for fh, end in zip(self._files, starts, strict=True):
            fh.seek(end)

    def record(self, rec: Recorded, values: dict[int, np.ndarray]) -> None:
        """Append a finished block: scores first, then the log line that confirms them."""
        assert self._log is not None
        offsets = []
        for i, fh in enumerate(self._files):
            if i in values:
                fh.write(np.ascontiguousarray(values[i], dtype=np.float64).data)
                fh.flush()
            offsets.append(fh.tell())
        self._log.write(
            json.dumps(
                {
                    "batch": rec.batch,
                    "start": rec.start,
                    "stop": rec.stop,
                    "nonfinite": rec.nonfinite,
                    "bad_log2": rec.bad_log2,
                    "offsets": offsets,
                }
            )
            + "\n"
        )
        self._log.flush()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        if self._log:
            self._log.close()

    def finish(self) -> None:
        """The run succeeded: the state is no longer needed."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
