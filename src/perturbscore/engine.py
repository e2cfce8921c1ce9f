"""The ordered consumer every engine shares, and the local engine's map.

:func:`execute` takes a :class:`~perturbscore.plan.Prepared` run and a *mapper* (a
function that runs :func:`~perturbscore.spans.score_span` over a list of spans and
yields the results in span order) and does everything else in one place: replaying
recorded blocks of a resumed run, writing every table and cube block by block,
recording blocks for ``--resume``, NaN/Inf and log2fc findings
(:class:`perturbscore.findings.Findings`), finishing the tables under temporary names
(:class:`perturbscore.sink.Sink`), and publishing them with the manifest in one
journalled commit (:class:`perturbscore.outputs.Commit`).  The local engine's mapper
reads on threads (:func:`local_mapper`); the Dask engine's submits futures
(:func:`perturbscore.dask_engine.dask_mapper`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import WRITE_ERRNOS, Interrupted, PerturbscoreError, full_disk
from .findings import Findings
from .manifest import manifest_text, run_manifest
from .outputs import JOURNAL, Commit, temp_path
from .outputs_earlier import stale_outputs
from .plan import MANIFEST, OutputTable, Prepared
from .resume import Recorded, ResumeState
from .sink import Sink
from .spans import SpanResult, is_sequential, score_span, spans
from .streaming import ordered_map, prefetch

log = logging.getLogger("perturbscore")

Span = tuple[int, int, int]
#: Runs score_span over spans (batch, start, stop) and yields results in span order.
Mapper = Callable[[list[Span]], Iterable[SpanResult]]


@dataclass
class RunResult:
    """What a run wrote.

    Attributes
    ----------
    outputs : list of OutputTable
    manifest : Path
    chunk_rows : int
        Rows per block.
    warnings : list of str
    timings : dict
        Seconds per phase: ``prepare``, then the engine's (``cluster`` on Dask),
        ``stream`` and ``commit``.
    files : list of Path
        Every file and folder published: tables, Zarr cubes, the manifest.
    integrity : dict
        Result of the integrity checks (:meth:`perturbscore.integrity.IntegrityChecker.finish`).
    written : bool
        False when ``--resume`` found this very run finished: nothing was written.
    """

    outputs: list[OutputTable]
    manifest: Path
    chunk_rows: int
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    integrity: dict[str, Any] = field(default_factory=dict)
    written: bool = True


def local_mapper(prep: Prepared) -> Mapper:
    """The local engine: score spans here, reading ahead on ``prep.reader_threads`` threads.

    Inputs that must be read in row order (compressed archive members) are read by one
    background thread in order instead of a pool.
    """
    plan, workers = prep.span_plan, prep.reader_threads

    def one(task: Span) -> SpanResult:
        return score_span(plan, *task)

    def mapper(tasks: list[Span]) -> Iterator[SpanResult]:
        if workers <= 0:
            return map(one, tasks)
        if is_sequential(plan):
            return prefetch(map(one, tasks), depth=1)
        # One more task than threads: the next block is read while the consumer writes.
        return ordered_map(one, tasks, workers, ahead=workers + 1)

    return mapper


def _replay(
    prep: Prepared,
    sink: Sink,
    state: ResumeState,
    tasks: list[Span],
    findings: Findings,
    bar: Any,
) -> int:
    """Feed a resumed run's verified blocks to the sink; returns how many."""
    expected = [sink.group_tables[prep.batches[t[0]].group] for t in tasks]
    done = 0
    for rec, recorded in state.replay(expected):
        if done >= len(tasks) or tasks[done] != (rec.batch, rec.start, rec.stop):
            raise PerturbscoreError(
                f"{state.dir}: recorded blocks do not follow this run's blocks; remove that "
                "folder and run again."
            )
        values = {sink.order[n]: v for n, v in recorded.items()}
        findings.block(rec.batch, rec.start, rec.identical_rows(), values)
        sink.emit(rec.batch, rec.start, rec.stop, values)
        findings.add(rec.batch, rec.nonfinite, rec.bad_log2, rec.bad_log2_inputs)
        bar.update(rec.stop - rec.start)
        done += 1
    if done:
        log.info("resuming: %d of %d blocks replayed from %s", done, len(tasks), state.dir)
    return done


def _live(
    prep: Prepared, sink: Sink, findings: Findings, state: ResumeState | None, res: SpanResult
) -> str:
    """One scored block: checked, written, recorded for ``--resume``; returns its group."""
    grp = prep.batches[res.batch].group
    values = {(grp, a, st): v for (a, st), v in res.scores.items()}
    findings.block(res.batch, res.start, res.identical, values)
    sink.emit(res.batch, res.start, res.stop, values)
    findings.add(res.batch, res.nonfinite, res.bad_log2, res.bad_log2_inputs)
    if state is not None:
        rec = Recorded(
            res.batch,
            res.start,
            res.stop,
            res.nonfinite,
            res.bad_log2,
            Recorded.pack(res.identical),
            res.bad_log2_inputs,
        )
        state.record(rec, [values[sink.order[n]] for n in sink.group_tables[grp]])
    return grp


def _publish(
    prep: Prepared,
    sink: Sink,
    findings: Findings,
    warnings: list[str],
    timings: dict[str, float],
    t_stream: float,
) -> RunResult:
    """Conclude the findings, finish every table and publish them with the manifest."""
    out = prep.out
    findings.conclude(warnings)
    integrity = findings.integrity(warnings)
    t_commit = time.perf_counter()
    timings["stream"] = t_commit - t_stream
    commit = Commit(out, prep.fingerprint)
    sink.finish(commit)  # may fail: nothing is public yet
    files = [o.path for o in prep.outputs] + [c.path for c in sink.cubes.values()]
    if prep.opts.overwrite:
        for stale in stale_outputs(out, "run", [*files, out / MANIFEST]):
            commit.remove(stale)
    result = RunResult(
        prep.outputs,
        out / MANIFEST,
        prep.plan.chunk_rows,
        warnings,
        timings,
        [*files, out / MANIFEST],
        integrity,
    )
    timings["commit"] = time.perf_counter() - t_commit
    commit.run(out / MANIFEST, manifest_text(run_manifest(prep, result)))
    return result


class _NoBar:
    """The progress bar when none is shown: tqdm is then not imported (30 ms, most of it
    its version lookup through importlib.metadata)."""

    def update(self, n: int) -> None:
        """Nothing to draw."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _progress_bar(prep: Prepared) -> Any:
    """The scoring bar on stderr (on a terminal only: ``disable=None``), or a :class:`_NoBar`."""
    if not prep.opts.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=sum(b.n_rows for b in prep.batches),
        unit="variant",
        file=sys.stderr,
        desc="scoring",
        disable=None,
        leave=False,
    )


def execute(
    prep: Prepared,
    mapper: Mapper,
    state: ResumeState | None = None,
    timings: dict[str, float] | None = None,
) -> RunResult:
    """Score every span through ``mapper`` and publish the run's outputs (module docstring)."""
    chunk = prep.plan.chunk_rows
    warnings, timings = list(prep.warnings), dict(timings or {})
    findings = Findings(prep)
    tasks = spans(prep.span_plan, chunk)
    sink: Sink | None = None
    done = 0
    try:
        sink = Sink(prep)
        t_stream = time.perf_counter()
        with _progress_bar(prep) as bar:
            if state is not None:
                done = _replay(prep, sink, state, tasks, findings, bar)
                state.start(chunk)
            for res in mapper(tasks[done:]):
                grp = _live(prep, sink, findings, state, res)
                bar.update(res.stop - res.start)
                done += 1
                log.debug(
                    "block %d of %d done (%s rows %d..%d)",
                    done,
                    len(tasks),
                    grp,
                    res.start,
                    res.stop,
                )
        result = _publish(prep, sink, findings, warnings, timings, t_stream)
        if state is not None:
            state.finish()
    except (KeyboardInterrupt, Interrupted) as exc:
        _cleanup(prep, state, sink)
        raise _interrupted(exc, state, done, len(tasks)) from None
    except OSError as exc:
        committing = (prep.out / JOURNAL).is_file()  # the commit's journal: ours, written
        _cleanup(prep, state, sink)
        if exc.errno in WRITE_ERRNOS:
            raise PerturbscoreError(write_failure(exc, prep.out, state, committing)) from exc
        raise
    except BaseException:
        _cleanup(prep, state, sink)
        raise
    for note in warnings:
        log.warning("%s", note)
    return result


def _interrupted(
    exc: BaseException, state: ResumeState | None, done: int, total: int
) -> Interrupted:
    """What to tell a user whose run a signal stopped."""
    name = getattr(exc, "signal_name", "SIGINT")
    code = getattr(exc, "exit_code", 130)
    if state is not None:
        advice = (
            f"{done} of {total} blocks are recorded in {state.dir}; run the same command again "
            "to continue."
        )
    else:
        advice = (
            "nothing was written. Start long runs with --resume so that an interrupted run "
            "can continue where it stopped."
        )
    return Interrupted(name, code, f"interrupted by {name}: {advice}")


def write_failure(
    exc: OSError, out: Path, state: ResumeState | None, committing: bool = False
) -> str:
    """One sentence for a write that the file system of ``out`` refused (:data:`WRITE_ERRNOS`).

    Says what happened there, what the run left (no partial table; with ``--resume`` the
    finished blocks; ``committing``: a journalled commit, which the next command in the
    folder finishes) and how to go on.
    """
    if committing:
        fix = "make it writable again" if exc.errno == errno.EROFS else "make room there"
        return (
            f"cannot write into {out} while publishing the finished tables (the file system "
            f"said: {exc.strerror or exc}); {fix} and run the same command again "
            "(with --resume) to finish publishing them."
        )
    if exc.errno == errno.EROFS:
        return (
            f"cannot write into {out}: it is on a read-only file system; no partial table "
            "is left: choose another --out folder."
        )
    full = full_disk(exc)
    if state is not None:
        return (
            f"cannot write into {out}: its {full}; no partial table is left, and the "
            f"finished blocks are kept in {state.dir}: free space there and run the same "
            "command again to continue (or choose another --out folder to start afresh)."
        )
    return (
        f"cannot write into {out}: its {full}; no partial table is left: free space there "
        "or choose another --out folder, then run the command again."
    )


def _cleanup(prep: Prepared, state: ResumeState | None, sink: Sink | None) -> None:
    """After a failure: drop every temporary table, keep the resume state.

    Each step runs even when one before it fails (on a full disk closing a file fails
    too), so no ``.partial`` table is left beside a resume state.  A commit whose journal
    is written keeps its temporaries: the next command in the folder finishes it.
    """
    try:
        if sink is not None and not (prep.out / JOURNAL).is_file():
            sink.abort()
        for name in (JOURNAL, MANIFEST):  # what Commit.run was writing, if it failed there
            with contextlib.suppress(OSError):
                temp_path(prep.out / name).unlink(missing_ok=True)
    finally:
        if state is not None:
            try:
                state.close()  # kept: the next --resume continues from it
            except OSError as exc:
                # Blocks not confirmed in its log are computed again; the error that
                # stopped the run is the one to report.
                log.debug("closing the resume state in %s failed: %s", state.dir, exc)
