"""The central job: stream REF/ALT batches into perturbation-score tables.

:func:`run` validates everything it relies on before reading a single prediction
(files, shapes, dtypes, track table, selection, variant row counts, output names),
then makes one pass over the predictions in row blocks sized from a memory budget,
writing every (group, aggregation, statistic) table as it goes.  Tables are written
to temporary files and renamed only when the whole run succeeded, followed by
``manifest.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import __version__
from .errors import PerturbscoreError
from .memory import DEFAULT_MEMORY_BYTES, MemoryPlan, plan_memory
from .readers import PredictionReader, open_predictions
from .resume import Recorded, ResumeState, file_fingerprint
from .runfile import Group, RunConfig, load_run_file
from .scoring import Aggregation, nonfinite_positions, parse_aggregation, score_block
from .streaming import ordered_map
from .tracks import read_targets, select_tracks
from .variants import duplicate_report, id_columns_of, read_variants
from .writers import (
    FORMATS,
    TableWriter,
    buffer_bytes,
    check_format,
    holds_in_memory,
    open_writer,
    temp_path,
)

if TYPE_CHECKING:
    from .cube import CubeWriter

log = logging.getLogger("perturbscore")

NAN_POLICIES = ("error", "propagate")
ENGINES = ("local", "dask")
#: Test hook: fail after this many newly computed blocks (exercises --resume).
FAIL_AFTER_ENV = "PERTURBSCORE_FAIL_AFTER_BLOCKS"
MANIFEST = "manifest.json"


@dataclass
class RunOptions:
    """How to execute a run (what to compute lives in :class:`RunConfig`).

    Attributes
    ----------
    memory_bytes : int
        Budget for the streaming working set and in-memory tables, in bytes.
    chunk_rows : int, optional
        Force a block size (rows); default: the largest the budget allows.
    overwrite : bool
        Replace existing output tables.
    nan_policy : {"error", "propagate"}
        NaN/Inf in the selected predictions: fail (after counting them all), or pass them on.
    format : str, optional
        Override the run file's output format.
    progress : bool
        Show a progress bar on stderr (only when stderr is a terminal).
    threads : int, optional
        Threads: one scores and writes, the others read blocks ahead (default: every
        core; 1 reads in the calling thread).
    resume : bool
        Record finished blocks in ``OUT/.perturbscore-resume`` and, if a run with the same
        run file and inputs died, continue it (see :mod:`perturbscore.resume`).
    zarr : bool
        Also write each group's score cube to ``{group}_scores.zarr`` (:mod:`.cube`).
    engine : {"local", "dask"}
        Where to compute (:mod:`perturbscore.dask_engine` for Dask).
    scheduler : str, optional
        Dask scheduler address; default: a local cluster sized to the machine.
    workers : int, optional
        Workers of that local cluster (default: one per core).
    """

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    chunk_rows: int | None = None
    overwrite: bool = False
    nan_policy: str = "error"
    format: str | None = None
    progress: bool = True
    threads: int | None = None
    resume: bool = False
    zarr: bool = False
    engine: str = "local"
    scheduler: str | None = None
    workers: int | None = None


@dataclass
class OutputTable:
    """One planned output table."""

    group: str
    aggregation: Aggregation
    statistic: str
    path: Path
    object_name: str
    rows: int = 0


@dataclass
class RunResult:
    """What a run wrote."""

    outputs: list[OutputTable]
    manifest: Path
    chunk_rows: int
    warnings: list[str] = field(default_factory=list)
    #: Seconds per phase: "prepare" (inputs read and checked), then the engine's own
    #: ("stream"/"commit" locally; "cluster"/"compute" on Dask).
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _BatchInput:
    group: str
    number: int
    ref: PredictionReader
    alt: PredictionReader
    variants_path: Path
    ids: pd.DataFrame
    format: str | None = None  # as named in the run file (None: from the file names)


def _file_facts(path: Path) -> dict[str, Any]:
    return {"path": str(path), "bytes": path.stat().st_size}


def _open_batches(
    config: RunConfig, n_tracks: int, stack: contextlib.ExitStack
) -> tuple[list[_BatchInput], list[str], list[str]]:
    """Open and cross-check every batch; returns batches, ID columns, warnings."""
    batches: list[_BatchInput] = []
    warnings: list[str] = []
    id_cols: list[str] | None = None
    n_bins: int | None = None
    first_bins_path = ""
    for group in config.groups:
        for number, batch in enumerate(group.batches, start=1):
            ref = stack.enter_context(open_predictions(batch.ref, batch.format))
            alt = stack.enter_context(open_predictions(batch.alt, batch.format))
            warnings += [*ref.warnings, *alt.warnings]
            if ref.shape != alt.shape:
                raise PerturbscoreError(
                    f"group {group.name} batch {number}: REF {ref.path} has shape {ref.shape} "
                    f"but ALT {alt.path} has shape {alt.shape}; they must be predictions for the "
                    "same variants, bins and tracks."
                )
            if ref.shape[2] != n_tracks:
                raise PerturbscoreError(
                    f"{ref.path}: {ref.shape[2]} tracks, but the track table {config.targets} has "
                    f"{n_tracks} rows; use the targets file of the model that made the predictions."
                )
            if n_bins is None:
                n_bins, first_bins_path = ref.shape[1], ref.path
            elif ref.shape[1] != n_bins:
                raise PerturbscoreError(
                    f"{ref.path}: {ref.shape[1]} bins, but {first_bins_path} has {n_bins}; all "
                    "batches of a run must share the bins axis."
                )
            wanted = None if isinstance(config.id_columns, str) else list(config.id_columns)
            ids = read_variants(batch.variants, wanted)
            if len(ids) != ref.n_rows:
                raise PerturbscoreError(
                    f"{batch.variants}: {len(ids)} variant rows, but {ref.path} has {ref.n_rows} "
                    "prediction rows; the table must have one row per prediction row, in order."
                )
            cols = id_columns_of(ids, config.id_columns, str(batch.variants))
            if id_cols is None:
                id_cols = cols
            elif cols != id_cols:
                raise PerturbscoreError(
                    f"{batch.variants}: ID columns {cols} differ from the first batch's {id_cols}; "
                    "tables of a run share their columns. Name id_columns explicitly."
                )
            warnings += duplicate_report(ids, cols, str(batch.variants))
            batches.append(
                _BatchInput(
                    group.name, number, ref, alt, batch.variants, ids[cols].copy(), batch.format
                )
            )
    assert id_cols is not None  # config always has a batch
    return batches, id_cols, warnings


def _plan_outputs(
    config: RunConfig,
    aggs: list[Aggregation],
    fmt: str,
    out_dir: Path,
    overwrite: bool,
    cubes: bool = False,
) -> list[OutputTable]:
    outputs: list[OutputTable] = []
    for group in config.groups:
        for agg in aggs:
            for stat in config.statistics:
                stem = config.table_name(group.name, agg.label, stat)
                outputs.append(
                    OutputTable(
                        group.name,
                        agg,
                        stat,
                        out_dir / (stem + FORMATS[fmt]),
                        config.object_name(group.name, agg.label, stat),
                    )
                )
    names = [o.path.name for o in outputs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise PerturbscoreError(
            f"output name template {config.name!r} gives the same file to several tables "
            f"({clash[:3]}); include {{group}}, {{aggregation}} and {{statistic}} as needed."
        )
    if not overwrite:
        planned = [o.path for o in outputs] + [out_dir / MANIFEST]
        if cubes:
            planned += [out_dir / cube_name(g.name) for g in config.groups]
        existing = [str(p) for p in planned if p.exists()]
        if existing:
            raise PerturbscoreError(
                f"output already exists: {existing[:4]}; pass --overwrite to replace it or "
                "choose another --out folder."
            )
    return outputs


def cube_name(group: str) -> str:
    """File name of a group's Zarr score cube."""
    return f"{group}_scores.zarr"


def _rows_per_group(batches: list[_BatchInput]) -> dict[str, int]:
    """Prediction rows of each group: the row count of each of its tables."""
    rows: dict[str, int] = {}
    for b in batches:
        rows[b.group] = rows.get(b.group, 0) + b.ref.n_rows
    return rows


def _blocks(n_rows: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_rows, chunk):
        yield start, min(start + chunk, n_rows)


@dataclass
class _Block:
    """Selected REF/ALT values of rows ``[start, stop)`` of one batch (``n B S``)."""

    batch: _BatchInput
    start: int
    stop: int
    ref: np.ndarray
    alt: np.ndarray
    nonfinite: list[tuple[str, int, tuple[int, int, int]]]


def _block_reader(
    columns: np.ndarray | None,
) -> Callable[[tuple[_BatchInput, int, int]], _Block]:
    """A function reading, selecting and NaN-checking one block; safe on several threads."""
    local = threading.local()  # one scratch buffer per thread and slot (REF, ALT)

    def read(task: tuple[_BatchInput, int, int]) -> _Block:
        b, start, stop = task
        scratch: dict[int, np.ndarray] = local.__dict__.setdefault("scratch", {})
        sel = []
        bad: list[tuple[str, int, tuple[int, int, int]]] = []
        for slot, reader in enumerate((b.ref, b.alt)):
            if slot not in scratch or scratch[slot].dtype != reader.dtype:
                scratch[slot] = np.empty((reader.scratch_rows(), *reader.shape[1:]), reader.dtype)
            block = reader.read_selected(start, stop, columns, scratch[slot])
            count, first = nonfinite_positions(block)
            if count:
                assert first is not None
                bad.append((reader.path, count, first))
            sel.append(block)
        return _Block(b, start, stop, sel[0], sel[1], bad)

    return read


def _fingerprint(
    config: RunConfig, opts: RunOptions, fmt: str, batches: list[_BatchInput]
) -> dict[str, Any]:
    """What a resumed run must share with the recorded one (see :mod:`.resume`)."""
    settings = json.loads(json.dumps(asdict(replace(config, source=None)), default=str))
    files = [Path(config.targets)]
    if config.tracks.shortlist:
        files.append(Path(config.tracks.shortlist))
    for b in batches:
        files += [Path(r.path.split("::")[0]) for r in (b.ref, b.alt)] + [b.variants_path]
    return {
        "run_file": str(config.source.resolve()) if config.source else None,
        "settings": settings,
        "inputs": [file_fingerprint(f) for f in files],
        "format": fmt,
        "nan_policy": opts.nan_policy,
        "perturbscore_version": __version__,
    }


def _threads(requested: int | None) -> tuple[int, int]:
    """Reader threads and blocks read ahead for ``--threads`` (None: every core)."""
    threads = requested or os.cpu_count() or 1
    if threads < 1:
        raise PerturbscoreError(f"--threads must be at least 1, not {threads}.")
    # One thread scores and writes; the others read ahead. One thread: no helpers.
    workers = threads - 1
    return workers, (workers + 1 if workers else 0)


def run(config: RunConfig, out_dir: str | Path, options: RunOptions | None = None) -> RunResult:
    """Score every group of ``config`` and write its tables under ``out_dir``.

    Parameters
    ----------
    config : RunConfig
        Groups, batches, track selection, scores and output naming.
    out_dir : str or Path
        Output folder; created if missing (and removed again if the run fails and it
        is still empty).
    options : RunOptions, optional

    Returns
    -------
    RunResult

    Raises
    ------
    PerturbscoreError
        Any input problem (nothing is written), NaN/Inf under ``nan_policy="error"``.
    """
    opts = options or RunOptions()
    if opts.nan_policy not in NAN_POLICIES:
        raise PerturbscoreError(f"--nan must be one of {NAN_POLICIES}, not {opts.nan_policy!r}.")
    fmt = check_format(opts.format or config.format)
    out = Path(out_dir)
    if opts.engine not in ENGINES:
        raise PerturbscoreError(f"--engine must be one of {ENGINES}, not {opts.engine!r}.")
    if opts.engine == "dask":
        if fmt != "parquet":
            raise PerturbscoreError(
                f"the Dask engine writes partitioned Parquet datasets, not {fmt}; use "
                "--format parquet (or the local engine)."
            )
        if opts.resume:
            raise PerturbscoreError("--resume belongs to the local engine; Dask retries tasks.")

    t0 = time.perf_counter()
    table = read_targets(config.targets)
    tracks = select_tracks(table, config.tracks)
    track_idx = tracks["index"].to_numpy(dtype=np.intp)
    columns = None if np.array_equal(track_idx, np.arange(len(table))) else track_idx
    track_names = list(tracks["identifier"])
    log.info("%d of %d tracks selected from %s", len(tracks), len(table), config.targets)

    with contextlib.ExitStack() as stack:
        batches, id_cols, warnings = _open_batches(config, len(table), stack)
        clash = sorted(set(id_cols) & set(track_names))
        if clash:
            raise PerturbscoreError(
                f"ID columns {clash} have the same names as selected tracks; "
                "choose other id_columns."
            )
        n_bins = batches[0].ref.shape[1]
        aggs = [parse_aggregation(a, n_bins, config.center_bin) for a in config.aggregations]
        if len({a.spec for a in aggs}) != len(aggs):
            raise PerturbscoreError(f"aggregations repeat: {list(config.aggregations)}.")
        outputs = _plan_outputs(config, aggs, fmt, out, opts.overwrite, cubes=opts.zarr)
        rows_per_group = _rows_per_group(batches)
        state = None
        if opts.resume:
            state = ResumeState(
                out,
                _fingerprint(config, opts, fmt, batches),
                [o.path.name for o in outputs],
                len(tracks),
            )
            if state.chunk_rows is not None:
                log.info("resuming: %d blocks already done", len(state.recorded))
        plan = plan_memory(
            budget=opts.memory_bytes,
            n_bins=n_bins,
            n_tracks=len(table),
            n_selected=len(tracks),
            itemsize=max(b.ref.dtype.itemsize for b in batches),
            n_aggregations=len(aggs),
            n_outputs_per_group=len(aggs) * len(config.statistics),
            in_memory_rows=sum(rows_per_group.values()) if holds_in_memory(fmt) else 0,
            resident_bytes=sum(int(b.ids.memory_usage(deep=True).sum()) for b in batches),
            # A resumed run keeps the block size its recorded blocks were made with.
            chunk_rows=state.chunk_rows if state and state.chunk_rows else opts.chunk_rows,
            max_rows=max(b.ref.n_rows for b in batches),
            blocks_in_flight=2 + _threads(opts.threads)[1],
            writer_buffer_bytes=len(outputs) * buffer_bytes(fmt),
            # Dask: one chunk is one task and one Parquet part; make them budget-sized.
            cache_sized=opts.engine == "local",
            fmt=fmt,
        )
        log.info("%s", plan.describe())
        prepared = time.perf_counter() - t0
        log.debug("inputs read and checked in %.3f s", prepared)
        if opts.engine == "dask":
            from .dask_engine import run_dask

            execute = run_dask
        else:
            execute = partial(_stream, state=state)
        result = execute(
            Prepared(
                config, opts, out, batches, outputs, tracks, columns, id_cols, aggs, plan, warnings
            )
        )
        result.timings = {"prepare": prepared, **result.timings}
        _write_manifest(
            config,
            opts,
            fmt,
            out,
            batches,
            outputs,
            tracks,
            aggs,
            plan,
            result,
            table_rows=len(table),
        )
        return result


@dataclass
class Prepared:
    """A validated run, ready for an engine: everything :func:`run` checked and planned."""

    config: RunConfig
    opts: RunOptions
    out: Path
    batches: list[_BatchInput]
    outputs: list[OutputTable]
    tracks: pd.DataFrame  # selected rows of the track table, in output order
    columns: np.ndarray | None  # their track numbers (None: every track, in order)
    id_cols: list[str]
    aggs: list[Aggregation]
    plan: MemoryPlan
    warnings: list[str]


def _stream(prep: Prepared, state: ResumeState | None = None) -> RunResult:
    """The local engine: stream blocks through the writers (see the module docstring)."""
    config, opts, out, tracks, aggs = prep.config, prep.opts, prep.out, prep.tracks, prep.aggs
    outputs, warnings, columns = prep.outputs, prep.warnings, prep.columns
    batches, id_cols, plan = prep.batches, prep.id_cols, prep.plan
    rows_per_group = _rows_per_group(batches)
    created_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    track_names = list(tracks["identifier"])
    writers: dict[tuple[str, str, str], TableWriter] = {}
    cubes: dict[str, CubeWriter] = {}
    by_key = {(o.group, o.aggregation.spec, o.statistic): o for o in outputs}
    chunk = plan.chunk_rows
    nonfinite: dict[str, tuple[int, str]] = {}
    bad_log2 = 0
    committed: list[Path] = []
    try:
        for key, o in by_key.items():
            writers[key] = open_writer(
                fmt_of(o.path),
                o.path,
                track_names,
                id_cols,
                o.object_name,
                expected_rows=rows_per_group[o.group],
            )
        total = sum(b.ref.n_rows for b in batches)
        t_stream = time.perf_counter()
        order = list(by_key)  # output tables in writer order (the resume files' order)
        position = {id(b): n for n, b in enumerate(batches)}

        def note_nonfinite(found: list[tuple[str, int, tuple[int, int, int]]], start: int) -> None:
            for source, count, first in found:
                prev = nonfinite.get(source)
                where = (
                    prev[1]
                    if prev
                    else (
                        f"row {start + first[0]}, bin {first[1]}, track "
                        f"{tracks['index'].iloc[first[2]]} ({track_names[first[2]]})"
                    )
                )
                nonfinite[source] = ((prev[0] if prev else 0) + count, where)

        if opts.zarr:
            from .cube import CubeWriter

            for g in config.groups:
                ids = pd.concat([b.ids for b in batches if b.group == g.name], ignore_index=True)
                cubes[g.name] = CubeWriter(
                    out / cube_name(g.name),
                    ids,
                    tracks,
                    [a.spec for a in aggs],
                    list(config.statistics),
                    chunk,
                )
        group_row = {}  # first row of each batch within its group's tables
        for name, rows in _rows_per_group(batches).items():
            first = 0
            for b in (b for b in batches if b.group == name):
                group_row[id(b)], first = first, first + b.ref.n_rows
            assert first == rows

        def emit(
            b: _BatchInput, start: int, stop: int, values: dict[tuple[str, str, str], np.ndarray]
        ) -> None:
            """Hand one block's scores to the table writers (and the group's cube)."""
            ids = b.ids.iloc[start:stop]
            for key, v in values.items():
                writers[key].write(v, ids)
            if b.group in cubes:
                cubes[b.group].write(
                    group_row[id(b)] + start, {(k[1], k[2]): v for k, v in values.items()}
                )

        tasks = [(b, start, stop) for b in batches for start, stop in _blocks(b.ref.n_rows, chunk)]
        fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0"))
        with tqdm(
            total=total,
            unit="variant",
            file=sys.stderr,
            desc="scoring",
            disable=None if opts.progress else True,
            leave=False,
        ) as bar:
            replayed = 0  # recorded blocks are a prefix of tasks
            if state is not None:
                state.start(chunk)
                for rec, recorded in state.replay():
                    b = batches[rec.batch]
                    if replayed >= len(tasks) or tasks[replayed] != (b, rec.start, rec.stop):
                        raise PerturbscoreError(
                            f"{state.dir}: recorded blocks do not follow this run's blocks; "
                            "remove that folder and run again."
                        )
                    replayed += 1
                    emit(b, rec.start, rec.stop, {order[n]: v for n, v in recorded.items()})
                    note_nonfinite(rec.nonfinite, rec.start)
                    bad_log2 += rec.bad_log2
                    bar.update(rec.stop - rec.start)
            done = 0
            workers, ahead = _threads(opts.threads)
            if any(r.sequential for b in batches for r in (b.ref, b.alt)):
                # A deflated archive member is one stream: one reader thread keeps its
                # blocks in row order (several would restart decompression per block).
                workers = min(workers, 1)
            for blk in ordered_map(_block_reader(columns), tasks[replayed:], workers, ahead):
                note_nonfinite(blk.nonfinite, blk.start)
                scores = score_block(blk.ref, blk.alt, aggs, config.statistics, config.pseudocount)
                grp = blk.batch.group
                emit(
                    blk.batch,
                    blk.start,
                    blk.stop,
                    {(grp, a, st): v for (a, st), v in scores.items()},
                )
                block_bad = sum(
                    int((~np.isfinite(v)).sum()) for (_, st), v in scores.items() if st == "log2fc"
                )
                bad_log2 += block_bad
                if state is not None:
                    state.record(
                        Recorded(
                            position[id(blk.batch)], blk.start, blk.stop, blk.nonfinite, block_bad
                        ),
                        {order.index((blk.batch.group, a, st)): v for (a, st), v in scores.items()},
                    )
                bar.update(blk.stop - blk.start)
                done += 1
                if fail_after and done >= fail_after:
                    raise RuntimeError(
                        f"{FAIL_AFTER_ENV}={fail_after}: failing as asked (test hook)"
                    )
        if nonfinite:
            detail = "; ".join(f"{p}: {c} values, first at {w}" for p, (c, w) in nonfinite.items())
            if opts.nan_policy == "error":
                raise PerturbscoreError(
                    f"NaN or Inf in the selected predictions: {detail}. Fix the predictions, or "
                    "pass --nan propagate to carry them into the scores."
                )
            warnings.append(f"NaN/Inf passed through (--nan propagate): {detail}")
        if bad_log2:
            warnings.append(
                f"log2fc: {bad_log2} scores are NaN or infinite because agg + pseudocount "
                f"<= 0 (pseudocount {config.pseudocount})"
            )
        t_commit = time.perf_counter()
        log.debug("scores streamed in %.3f s", t_commit - t_stream)
        for key, w in writers.items():
            by_key[key].rows = w.rows
            w.commit()
            committed.append(w.path)
        for cube in cubes.values():
            cube.commit()
            committed.append(cube.path)
        log.debug("tables committed in %.3f s", time.perf_counter() - t_commit)
        if state is not None:
            state.finish()
    except BaseException:
        if state is not None:
            state.close()  # kept: the next --resume continues from it
        for w in writers.values():
            w.abort()
        for cube in cubes.values():
            cube.abort()
        for path in committed:
            # All or nothing: tables committed before a later commit failed go too.
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if created_dir:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    for note in warnings:
        log.warning("%s", note)
    return RunResult(
        outputs,
        out / MANIFEST,
        chunk,
        warnings,
        {"stream": t_commit - t_stream, "commit": time.perf_counter() - t_commit},
    )


def run_path(
    run_file: str | Path,
    out_dir: str | Path,
    options: RunOptions | None = None,
    center_bin: int | None = None,
) -> RunResult:
    """Load a TOML run file and :func:`run` it; ``center_bin`` overrides the file's."""
    config = load_run_file(run_file)
    if center_bin is not None:
        config = replace(config, center_bin=center_bin)
    return run(config, out_dir, options)


def fmt_of(path: Path) -> str:
    """Output format from a table's file extension."""
    return {ext: name for name, ext in FORMATS.items()}[path.suffix]


def _write_manifest(
    config: RunConfig,
    opts: RunOptions,
    fmt: str,
    out: Path,
    batches: list[_BatchInput],
    outputs: list[OutputTable],
    tracks: pd.DataFrame,
    aggs: list[Aggregation],
    plan: MemoryPlan,
    result: RunResult,
    table_rows: int,
) -> None:
    manifest = {
        "perturbscore_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_file": str(config.source) if config.source else None,
        "parameters": {
            "aggregations": [
                {"spec": a.spec, "bins": [a.start, a.stop], "reduce": "mean" if a.mean else "sum"}
                for a in aggs
            ],
            "statistics": list(config.statistics),
            "center_bin": config.center_bin,
            "pseudocount": config.pseudocount,
            "nan_policy": opts.nan_policy,
            "format": fmt,
            "id_columns": config.id_columns
            if isinstance(config.id_columns, str)
            else list(config.id_columns),
            "memory_budget_bytes": plan.budget,
            "chunk_rows": plan.chunk_rows,
            "estimated_peak_bytes": plan.estimated_bytes,
        },
        "targets": {**_file_facts(Path(config.targets)), "rows": table_rows},
        "tracks": {
            "selection": config.tracks.describe(),
            "count": len(tracks),
            "selected": tracks[["index", "identifier", "description"]].to_dict("records"),
        },
        "inputs": [
            {
                "group": b.group,
                "batch": b.number,
                "ref": b.ref.describe(),
                "alt": b.alt.describe(),
                "variants": {**_file_facts(b.variants_path), "rows": len(b.ids)},
            }
            for b in batches
        ],
        "outputs": [
            {
                "group": o.group,
                "aggregation": o.aggregation.spec,
                "statistic": o.statistic,
                "path": o.path.name,
                "object": o.object_name if fmt == "rdata" else None,
                "rows": o.rows,
                "columns": len(tracks) + len(batches[0].ids.columns),
            }
            for o in outputs
        ],
        "zarr_cubes": [cube_name(g.name) for g in config.groups] if opts.zarr else [],
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "warnings": result.warnings,
    }
    path = out / MANIFEST
    tmp = temp_path(path)
    tmp.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


__all__ = ["RunOptions", "RunResult", "OutputTable", "run", "run_path", "Group"]
