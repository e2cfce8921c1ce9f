"""The central job: stream REF/ALT batches into perturbation-score tables.

:func:`run` ties the pieces together: :func:`perturbscore.plan.prepare` validates
everything before a prediction is read; in the output folder (locked for the run)
leftovers of dead processes are swept and a commit a killed run left halfway is
finished (:mod:`perturbscore.outputs`); then an engine's mapper scores the spans
(:mod:`perturbscore.spans`) and :func:`perturbscore.engine.execute` writes and
publishes every table in one journalled commit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .constants import ENGINES, NAN_POLICIES
from .engine import RunResult, execute, local_mapper
from .errors import PerturbscoreError
from .messages import overwrite_hint
from .options import RunOptions
from .outputs import output_folder
from .plan import MANIFEST, OutputTable, Prepared, check_existing, cube_name, prepare
from .resume import STATE_DIR, ResumeState, describe_change
from .runfile import Group, RunConfig, load_run_file

log = logging.getLogger("perturbscore")


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
    perturbscore.errors.Interrupted
        SIGINT/SIGTERM (the CLI turns SIGTERM into it): cleanup ran; with ``resume`` the
        finished blocks are kept for the next run.
    """
    opts = options or RunOptions()
    t0 = time.perf_counter()
    prep = prepare(config, out_dir, opts)
    out = prep.out
    with output_folder(out) as journal:
        if journal is not None:
            _drop_finished_state(out, journal)
        if journal is not None and opts.resume and journal.get("fingerprint") == prep.fingerprint:
            log.info("the interrupted run had finished its tables; its commit is now complete")
            return _finished(prep)
        if opts.resume and _already_complete(prep):
            # A requeued job repeating its command: nothing to do, and not an error.
            log.info("%s holds this run's finished tables already; nothing to resume", out)
            return replace(_finished(prep), written=False)
        if opts.resume and not opts.overwrite:
            _refuse_another_finished_run(prep)
        check_existing(prep)
        state = _resume_state(prep)
        if state is not None and state.chunk_rows not in (None, prep.plan.chunk_rows):
            if opts.chunk_rows not in (None, state.chunk_rows):
                log.warning(
                    "--chunk-rows %d ignored: the recorded run used %d rows per block, "
                    "which a resumed run keeps",
                    opts.chunk_rows,
                    state.chunk_rows,
                )
            prep = prepare(config, out_dir, replace(opts, chunk_rows=state.chunk_rows))
        timings = {"prepare": time.perf_counter() - t0}
        if opts.engine == "dask":
            from .dask_engine import dask_mapper

            with dask_mapper(prep, timings) as mapper:
                return execute(prep, mapper, state, timings)
        try:
            return execute(prep, local_mapper(prep), state, timings)
        finally:
            from .spans import close_readers

            close_readers()


def _cube_paths(prep: Prepared) -> list[Path]:
    """The run's Zarr score cubes (with ``--zarr``), one per group."""
    return [prep.out / cube_name(g.name) for g in prep.config.groups] if prep.opts.zarr else []


def _recorded_fingerprint(prep: Prepared) -> dict[str, Any] | None:
    """The fingerprint of the finished run in ``prep.out`` (its manifest's), or None: no
    manifest, none recorded, or resume state left (an interrupted run, whose own state
    is checked against this one)."""
    if (prep.out / STATE_DIR).exists():
        return None
    try:
        manifest = json.loads((prep.out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    recorded = manifest.get("fingerprint") if isinstance(manifest, dict) else None
    return recorded if isinstance(recorded, dict) else None


def _already_complete(prep: Prepared) -> bool:
    """Whether ``prep.out`` holds this very run, finished: its manifest records the same
    fingerprint (inputs and options), every table is there, and no resume state is left."""
    recorded = _recorded_fingerprint(prep)
    return (
        recorded is not None
        and recorded == json.loads(json.dumps(prep.fingerprint))
        and all(o.path.exists() for o in prep.outputs)
        and all(c.exists() for c in _cube_paths(prep))
    )


def _refuse_another_finished_run(prep: Prepared) -> None:
    """``--resume`` into the folder of a finished run whose inputs or options differ:
    nothing to resume, and saying what changed beats a bare "already holds"."""
    recorded = _recorded_fingerprint(prep)
    if recorded is None:
        return
    changes = describe_change(recorded, json.loads(json.dumps(prep.fingerprint)))
    if changes:
        raise PerturbscoreError(
            f"{prep.out} holds a finished run with other inputs or options "
            f"({'; '.join(changes)}), so there is nothing to resume; "
            f"{overwrite_hint('RunOptions(overwrite=True)')} to replace it, or choose another "
            "--out folder."
        )


def _drop_finished_state(out: Path, journal: dict[str, object]) -> None:
    """Resume state of the run whose commit was just finished is no longer needed."""
    state = out / STATE_DIR / "state.json"
    with contextlib.suppress(OSError, ValueError):
        if json.loads(state.read_text(encoding="utf-8")).get("fingerprint") == journal.get(
            "fingerprint"
        ):
            shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def _resume_state(prep: Prepared) -> ResumeState | None:
    state_dir = prep.out / STATE_DIR
    if not prep.opts.resume:
        if state_dir.exists():
            raise PerturbscoreError(
                f"{prep.out} holds the recorded blocks of an interrupted --resume run; add "
                f"--resume to continue it, or remove {state_dir} to start afresh."
            )
        return None
    return ResumeState(
        prep.out,
        prep.fingerprint,
        [o.path.name for o in prep.outputs],
        len(prep.tracks),
    )


def _finished(prep: Prepared) -> RunResult:
    """The result of a run whose commit :func:`perturbscore.outputs.recover` completed."""
    manifest = json.loads((prep.out / MANIFEST).read_text(encoding="utf-8"))
    rows = {o["path"]: o["rows"] for o in manifest.get("outputs", [])}
    for o in prep.outputs:
        o.rows = int(rows.get(o.path.name, 0))
    cubes = _cube_paths(prep)
    return RunResult(
        prep.outputs,
        prep.out / MANIFEST,
        int(manifest.get("parameters", {}).get("chunk_rows", prep.plan.chunk_rows)),
        list(manifest.get("warnings", [])),
        {},
        [o.path for o in prep.outputs] + cubes + [prep.out / MANIFEST],
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


__all__ = [
    "ENGINES",
    "NAN_POLICIES",
    "RunOptions",
    "RunResult",
    "OutputTable",
    "run",
    "run_path",
    "Group",
]
