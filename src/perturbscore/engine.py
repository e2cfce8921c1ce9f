"""The ordered consumer every engine shares, and the local engine's map.

:func:`execute` takes a :class:`~perturbscore.plan.Prepared` run and a *mapper* (a
function that runs :func:`~perturbscore.spans.score_span` over a list of spans and
yields the results in span order) and does everything else in one place: replaying
recorded blocks of a resumed run, writing every table and cube block by block,
recording blocks for ``--resume``, NaN/Inf and log2fc findings, finishing the tables
under temporary names, and publishing them with the manifest in one journalled commit
(:class:`perturbscore.outputs.Commit`).  The local engine's mapper reads on threads
(:func:`local_mapper`); the Dask engine's submits futures
(:func:`perturbscore.dask_engine.dask_mapper`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .errors import Interrupted, PerturbscoreError
from .geometry import apply_out_of_field
from .integrity import IntegrityChecker
from .integrity_keys import keys_in_several_groups
from .manifest import manifest_text, run_manifest
from .outputs import Commit
from .plan import MANIFEST, OutputTable, Prepared, cube_name
from .resume import Recorded, ResumeState
from .spans import SpanResult, is_sequential, score_span, spans
from .streaming import ordered_map, prefetch
from .writers import TableWriter, open_writer

if TYPE_CHECKING:
    from .cube import CubeWriter

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
    """

    outputs: list[OutputTable]
    manifest: Path
    chunk_rows: int
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    integrity: dict[str, Any] = field(default_factory=dict)


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


def variant_where(prep: Prepared, batch: int, row: int) -> str:
    """A variant for people: its ID values and its 1-based line in the variant table."""
    b = prep.batches[batch]
    ids = " ".join(str(v) for v in b.ids.iloc[row].tolist())
    line = row + 2 if b.variants_path.suffix.lower() != ".parquet" else row + 1
    kind = "line" if b.variants_path.suffix.lower() != ".parquet" else "row"
    return f"variant {ids} ({kind} {line} of {b.variants_path})"


class Findings:
    """NaN/Inf, log2fc and integrity findings, the same from live and replayed blocks."""

    def __init__(
        self, prep: Prepared, rtol: float = 1e-5, atol: float = 1e-6, max_examples: int = 10
    ) -> None:
        self.prep = prep
        self.nonfinite: dict[str, tuple[int, str]] = {}
        self.bad_log2 = 0
        keys = {(b.group, b.number): b.keys for b in prep.batches}
        by_group: dict[str, list[str]] = {}
        for b in prep.batches:
            by_group.setdefault(b.group, []).extend(b.keys)
        first = prep.outputs[0]
        self.table = (first.aggregation.spec, first.statistic)  # the one the checks read
        self.checker = IntegrityChecker(
            shared_keys=keys_in_several_groups(by_group) if len(by_group) > 1 else None,
            key_of=lambda g, n, r: keys[(g, n)][r],
            scores_of=f"{self.table[0]}/{self.table[1]}",
            rtol=rtol,
            atol=atol,
            max_examples=max_examples,
        )
        self.slots = [self.checker.slots(b.keys) for b in prep.batches]

    def block(self, batch: int, start: int, identical: Any, scores: dict[Any, Any]) -> None:
        """Integrity checks of one block (raw scores, before the out-of-field policy)."""
        b = self.prep.batches[batch]
        stop = start + len(identical)
        self.checker.update(
            b.group,
            b.number,
            start,
            identical,
            None if b.classes is None else b.classes[start:stop],
            scores[(b.group, *self.table)],
            b.keys[start:stop],
            table=str(b.variants_path),
            slots=self.slots[batch][start:stop],
        )

    def integrity(self, warnings: list[str]) -> dict[str, Any]:
        """The checks' result for the manifest; a warning when rows were flagged."""
        result = self.checker.finish()
        if not result["clean"]:
            counts = ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in result["findings"].items() if v
            )
            warnings.append(
                f"integrity checks flagged rows ({counts}): predictions may be attached to the "
                f"wrong variants or positions are wrong; 'perturbscore check {self.prep.out}' "
                "lists the first offenders"
            )
        return result

    def add(self, batch: int, found: list[tuple[str, int, tuple[int, int, int]]], bad: int) -> None:
        for source, count, (row, b, col) in found:
            prev = self.nonfinite.get(source)
            tracks = self.prep.tracks
            where = (
                prev[1]
                if prev
                else (
                    f"{variant_where(self.prep, batch, row)}, bin {b}, track "
                    f"{tracks['index'].iloc[col]} ({tracks['identifier'].iloc[col]})"
                )
            )
            self.nonfinite[source] = ((prev[0] if prev else 0) + count, where)
        self.bad_log2 += bad

    def conclude(self, warnings: list[str]) -> None:
        prep = self.prep
        if self.nonfinite:
            detail = "; ".join(
                f"{p}: {c} values, first at {w}" for p, (c, w) in self.nonfinite.items()
            )
            if prep.opts.nan_policy == "error":
                raise PerturbscoreError(
                    f"NaN or Inf in the selected predictions: {detail}. Fix the predictions, or "
                    "pass --nan propagate to carry them into the scores."
                )
            warnings.append(f"NaN/Inf passed through (--nan propagate): {detail}")
        if self.bad_log2:
            warnings.append(
                f"log2fc: {self.bad_log2} scores are NaN or infinite because agg + pseudocount "
                f"<= 0 (pseudocount {prep.config.pseudocount})"
            )


class _Sink:
    """Every table writer and Zarr cube of a run: blocks go in, temporaries come out."""

    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        rows = prep.rows_per_group()
        self.by_key = {(o.group, o.aggregation.spec, o.statistic): o for o in prep.outputs}
        self.order = list(self.by_key)  # output tables in writer order (the resume log's)
        self.group_tables = {
            g.name: [n for n, k in enumerate(self.order) if k[0] == g.name]
            for g in prep.config.groups
        }
        self.writers: dict[tuple[str, str, str], TableWriter] = {}
        self.cubes: dict[str, CubeWriter] = {}
        self.policy = prep.opts.out_of_field
        self.keep = [b.keep(self.policy) for b in prep.batches]  # rows written, per batch
        self.next_row = {g.name: 0 for g in prep.config.groups}  # blocks arrive in order
        self.rows = rows
        try:
            self._open(rows)
        except BaseException:
            self.abort()  # what was opened before the failure
            raise

    def _open(self, rows: dict[str, int]) -> None:
        prep = self.prep
        for key, o in self.by_key.items():
            self.writers[key] = open_writer(
                prep.fmt,
                o.path,
                prep.track_names,
                prep.id_cols,
                o.object_name,
                expected_rows=rows[o.group],
                group_rows=prep.group_rows,
            )
        if prep.opts.zarr:
            import pandas as pd

            from .cube import CubeWriter

            for g in prep.config.groups:
                mine = [
                    b.ids if k is None else b.ids[k]
                    for b, k in zip(prep.batches, self.keep, strict=True)
                    if b.group == g.name
                ]
                self.cubes[g.name] = CubeWriter(
                    prep.out / cube_name(g.name),
                    pd.concat(mine, ignore_index=True),
                    prep.tracks,
                    [a.spec for a in prep.aggs],
                    list(prep.config.output_statistics),
                    prep.plan.chunk_rows,
                )

    def emit(self, batch: int, start: int, stop: int, values: dict[Any, Any]) -> None:
        """One block's scores, ``(group, aggregation, statistic) -> (n, S)``.

        The ``--out-of-field`` policy applies here, so live and replayed blocks (which
        hold the raw scores) are written alike.
        """
        b = self.prep.batches[batch]
        ids = b.ids.iloc[start:stop]
        if b.classes is not None and self.policy == "na":
            cls = b.classes[start:stop]
            values = {k: apply_out_of_field("na", v, cls)[0] for k, v in values.items()}
        keep = self.keep[batch]
        if keep is not None and not keep[start:stop].all():
            sel = keep[start:stop]
            values = {k: v[sel] for k, v in values.items()}
            ids = ids[sel]
        for key, v in values.items():
            self.writers[key].write(v, ids)
        if b.group in self.cubes and len(ids):
            self.cubes[b.group].write(
                self.next_row[b.group], {(k[1], k[2]): v for k, v in values.items()}
            )
        self.next_row[b.group] += len(ids)
        if self.next_row[b.group] == self.rows[b.group]:
            # The group's last row: finish its tables now (temporary names still), so a
            # wide Parquet footer or an R table is not held while later groups stream.
            for key, w in self.writers.items():
                if key[0] == b.group:
                    w.finish()

    def finish(self, commit: Commit) -> None:
        """Finish every table under its temporary name and hand the renames to ``commit``."""
        for key, w in self.writers.items():
            self.by_key[key].rows = w.rows
            w.finish()
            commit.add(w.tmp, w.path)
        for cube in self.cubes.values():
            commit.add(cube.tmp, cube.path)

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        for cube in self.cubes.values():
            cube.abort()


def _replay(
    prep: Prepared,
    sink: _Sink,
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
        findings.add(rec.batch, rec.nonfinite, rec.bad_log2)
        bar.update(rec.stop - rec.start)
        done += 1
    if done:
        log.info("resuming: %d of %d blocks replayed from %s", done, len(tasks), state.dir)
    return done


def execute(
    prep: Prepared,
    mapper: Mapper,
    state: ResumeState | None = None,
    timings: dict[str, float] | None = None,
) -> RunResult:
    """Score every span through ``mapper`` and publish the run's outputs (module docstring)."""
    out, chunk = prep.out, prep.plan.chunk_rows
    warnings, timings = list(prep.warnings), dict(timings or {})
    findings = Findings(prep)
    tasks = spans(prep.span_plan, chunk)
    sink: _Sink | None = None
    done = 0
    try:
        sink = _Sink(prep)
        t_stream = time.perf_counter()
        with tqdm(
            total=sum(b.n_rows for b in prep.batches),
            unit="variant",
            file=sys.stderr,
            desc="scoring",
            disable=None if prep.opts.progress else True,
            leave=False,
        ) as bar:
            if state is not None:
                done = _replay(prep, sink, state, tasks, findings, bar)
                state.start(chunk)
            for res in mapper(tasks[done:]):
                grp = prep.batches[res.batch].group
                values = {(grp, a, st): v for (a, st), v in res.scores.items()}
                findings.block(res.batch, res.start, res.identical, values)
                sink.emit(res.batch, res.start, res.stop, values)
                findings.add(res.batch, res.nonfinite, res.bad_log2)
                if state is not None:
                    rec = Recorded(
                        res.batch,
                        res.start,
                        res.stop,
                        res.nonfinite,
                        res.bad_log2,
                        Recorded.pack(res.identical),
                    )
                    state.record(rec, [values[sink.order[n]] for n in sink.group_tables[grp]])
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
        findings.conclude(warnings)
        integrity = findings.integrity(warnings)
        t_commit = time.perf_counter()
        timings["stream"] = t_commit - t_stream
        commit = Commit(out, prep.fingerprint)
        sink.finish(commit)  # may fail: nothing is public yet
        files = [o.path for o in prep.outputs] + [c.path for c in sink.cubes.values()]
        result = RunResult(
            prep.outputs,
            out / MANIFEST,
            chunk,
            warnings,
            timings,
            [*files, out / MANIFEST],
            integrity,
        )
        timings["commit"] = time.perf_counter() - t_commit
        commit.run(out / MANIFEST, manifest_text(run_manifest(prep, result)))
        if state is not None:
            state.finish()
    except (KeyboardInterrupt, Interrupted) as exc:
        _cleanup(state, sink)
        raise _interrupted(exc, state, done, len(tasks)) from None
    except BaseException:
        _cleanup(state, sink)
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


def _cleanup(state: ResumeState | None, sink: _Sink | None) -> None:
    if state is not None:
        state.close()  # kept: the next --resume continues from it
    if sink is not None:
        sink.abort()
