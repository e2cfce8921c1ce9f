"""``perturbscore predict``: variants + genome -> REF/ALT predictions ``perturbscore run`` reads.

Only informative forward passes are made.  The REF prediction of a window is computed once
and written to every variant row that shares the window (the study's 55,084 rows use
14,456 TSS-centred windows); a variant outside the model's input (class 0 of
:func:`perturbscore.geometry.place`) is not run, and its ALT row is its REF row by
construction (recorded per row and counted in the manifest).

Outputs in ``OUT``, published together by one journalled commit
(:class:`perturbscore.outputs.Commit`) when everything succeeded: ``ref.npy`` and
``alt.npy`` ``(N, K, T)`` (N variants, K kept bins, T kept tracks), or with
``format="zarr"`` one store ``predictions.zarr`` holding both
(:mod:`perturbscore.predict_output`), ``variants.csv`` (every input column, then the
``predict_*`` window columns), the track table of the kept tracks ``targets.txt``, the run
file ``predict.toml`` that scores them, and ``predict_manifest.json``.  The arrays grow in
``OUT/.perturbscore-predict`` with a durable log of finished batches; ``--resume``
continues a run that was killed or interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import Interrupted, PerturbscoreError
from .genome import Genome, one_hot
from .geometry import Geometry
from .messages import overwrite_hint
from .names import check_name
from .outputs import Commit, output_folder, temp_path
from .predict_jobs import Job, build_jobs, job_sequence
from .predict_model import Predictor, load_enformer, predict_batch, recentre
from .predict_output import (
    OUTPUTS,
    ZARR_OUTPUTS,
    check_zarr_options,
    chunk_rows,
    output_names,
    summarise,
    write_tables,
    write_zarr,
)
from .predict_store import (
    NpyRows,
    ResumeLog,
    batch_crc,
    cleanup,
    interrupted,
    open_state,
    verify,
)
from .tracks import TrackSelection, read_targets, select_tracks
from .windows import Plan, Variants, check_against_genome, load_variants, plan_windows

# Job, build_jobs and job_sequence live in predict_jobs and are re-exported here
__all__ = ["OUTPUTS", "STATE_DIR", "ZARR_OUTPUTS", "Job", "PredictOptions", "PredictResult",
           "build_jobs", "job_sequence", "run_predict"]

log = logging.getLogger("perturbscore")

STATE_DIR = ".perturbscore-predict"


@dataclass
class PredictOptions:
    """Everything ``perturbscore predict`` needs; see the CLI help for each option."""

    variants: Path
    genome: Path
    model: str
    targets: Path
    out: Path
    selection: TrackSelection | None = None
    head: str = "human"
    bins: int | None = 3  # central bins kept (odd); None keeps all
    centre_bin: int | None = None
    input_length: int | None = None
    centre_column: str | None = None
    chrom_column: str | None = None
    pos_column: str | None = None
    ref_column: str | None = None
    alt_column: str | None = None
    device: str = "cpu"
    batch_size: int = 4
    precision: str = "float32"
    dtype: str = "float32"
    reverse_complement: bool = False
    ref_cache: bool = True
    skip_out_of_field: bool = True
    skip_ref_mismatch: bool = False
    resume: bool = False
    overwrite: bool = False
    group: str = "predicted"
    progress: bool = True
    format: str = "npy"  # npy: ref.npy + alt.npy; zarr: predictions.zarr::ref/alt
    zarr_chunk_rows: int | None = None  # variants per Zarr chunk; None: about 8 MiB


@dataclass
class PredictResult:
    """Files written and the manifest's counts."""

    outputs: list[Path]
    manifest: Path
    summary: dict[str, Any] = field(default_factory=dict)


def _file_id(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _kept_bins(opts: PredictOptions, n_bins: int, centre: int) -> tuple[np.ndarray, int]:
    if opts.bins is None:
        return np.arange(n_bins), centre
    k = opts.bins
    if k < 1 or k % 2 == 0 or centre - k // 2 < 0 or centre + k // 2 >= n_bins:
        raise PerturbscoreError(
            f"--bins {k}: keep an odd number of central bins that fits in the model's "
            f"{n_bins} bins around bin {centre}, or 'all'."
        )
    return np.arange(centre - k // 2, centre + k // 2 + 1), centre


def run_predict(opts: PredictOptions, predictor: Predictor | None = None) -> PredictResult:
    """Predict REF and ALT for every variant of ``opts.variants``; write ``opts.out``.

    Every check (columns, alleles, genome, REF, tracks, model, options, existing outputs)
    runs before anything is written.  ``predictor`` replaces the Enformer loaded from
    ``opts.model`` (tests drive the engine with probe models).

    Raises
    ------
    PerturbscoreError
        A user error, before anything is written.
    Interrupted
        SIGINT or SIGTERM: the partial outputs are removed (the recorded batches stay
        with ``--resume``) and the message says how to continue.
    """
    check_name(opts.group, "group name", "--group")
    if opts.batch_size < 1:
        raise PerturbscoreError(f"--batch-size {opts.batch_size} must be at least 1.")
    if opts.dtype not in ("float16", "float32"):
        raise PerturbscoreError(f"--dtype {opts.dtype!r}: use float16 or float32.")
    check_zarr_options(opts.format, opts.zarr_chunk_rows)
    finals = {k: opts.out / name for k, name in output_names(opts.format).items()}
    existing = [p for p in finals.values() if p.exists()]
    resumable = opts.resume and (opts.out / STATE_DIR / "state.json").is_file()
    if not opts.resume and (opts.out / STATE_DIR / "state.json").is_file():
        raise PerturbscoreError(
            f"{opts.out} holds the recorded batches of an interrupted --resume run; add "
            f"--resume to continue it, or remove {opts.out / STATE_DIR} to start afresh."
        )
    if existing and not opts.overwrite and not resumable:
        raise PerturbscoreError(
            f"{existing[0]} already exists; {overwrite_hint('PredictOptions(overwrite=True)')} "
            "to replace it."
        )
    if opts.out.exists() and not opts.out.is_dir():
        raise PerturbscoreError(f"{opts.out} exists and is not a folder; choose another --out.")
    v = load_variants(opts.variants, chrom_column=opts.chrom_column, pos_column=opts.pos_column,
                      ref_column=opts.ref_column, alt_column=opts.alt_column,
                      centre_column=opts.centre_column)
    genome = Genome(opts.genome)
    try:
        work = _prepare(opts, v, genome, predictor)
        return _predict(opts, work, genome, finals, resumable)
    finally:
        genome.close()


@dataclass
class Work:
    """What :func:`_prepare` checked and planned: everything the run writes comes from it."""

    v: Variants
    predictor: Predictor
    chosen: Any  # the kept rows of the track table
    geo: Geometry
    bins: np.ndarray
    centre: int
    tracks: np.ndarray
    plan: Plan
    padded: np.ndarray
    shape: tuple[int, int, int]  # N K T
    fingerprint: dict[str, Any]
    jobs: list[Job]
    batches: list[list[Job]]


def _prepare(opts: PredictOptions, v: Variants, genome: Genome,
             predictor: Predictor | None) -> Work:
    """Every check that needs the genome, the tracks or the model; the plan. Writes nothing."""
    v = check_against_genome(v, genome, opts.skip_ref_mismatch)
    if v.table.empty:
        raise PerturbscoreError(f"{opts.variants}: no variant is left after skipping REF "
                                "mismatches; check the genome build.")
    targets = read_targets(opts.targets)
    chosen = select_tracks(targets, opts.selection)
    if predictor is None:
        predictor = load_enformer(opts.model, opts.head, opts.device, opts.precision,
                                  opts.input_length, opts.centre_bin)
    if len(targets) != predictor.n_tracks:
        raise PerturbscoreError(
            f"{opts.targets}: {len(targets)} tracks, but the model's {opts.head!r} head has "
            f"{predictor.n_tracks}; give the model's own track table."
        )
    geo = recentre(predictor.geometry, opts.centre_bin)
    bins, centre = _kept_bins(opts, geo.bins, geo.centre_bin)
    tracks = chosen["index"].astype(int).to_numpy()
    ref_len = np.array([len(r) for r in v.ref])
    plan = plan_windows(v.chrom, v.pos0, ref_len, v.centre0, geo)
    lengths = np.array([genome.lengths[c] for c in v.chrom], dtype=np.int64)
    first = plan.input_start
    padded = np.maximum(0, -first) + np.maximum(0, first + geo.input - lengths)
    shape = (plan.n_variants, int(bins.size), int(tracks.size))
    # the output format is left out: the partial files are the same for npy and zarr
    fingerprint = {
        "variants": _file_id(opts.variants), "genome": _file_id(opts.genome),
        "targets": _file_id(opts.targets), "model": predictor.describe(),
        "tracks": tracks.tolist(), "bins": bins.tolist(), "shape": list(shape),
        "geometry": geo.describe(), "batch_size": opts.batch_size,
        "dtype": opts.dtype, "reverse_complement": opts.reverse_complement,
        "ref_cache": opts.ref_cache, "skip_out_of_field": opts.skip_out_of_field,
        "skip_ref_mismatch": opts.skip_ref_mismatch, "columns": v.columns,
    }
    jobs = build_jobs(plan, opts.ref_cache, opts.skip_out_of_field)
    batches = [jobs[i: i + opts.batch_size] for i in range(0, len(jobs), opts.batch_size)]
    return Work(v, predictor, chosen, geo, bins, centre, tracks, plan, padded, shape,
                fingerprint, jobs, batches)


def _predict(opts: PredictOptions, w: Work, genome: Genome, finals: dict[str, Path],
             resumable: bool) -> PredictResult:
    """Compute (or resume) every batch into the partial files, then publish the outputs."""
    created_out = not opts.out.exists()
    state = ResumeLog(opts.out / STATE_DIR)
    part = {k: state.folder / f"{OUTPUTS[k]}.partial" for k in ("ref", "alt")}
    tmp = {k: temp_path(finals[k]) for k in finals if k != "manifest"}
    arrays: list[NpyRows] = []
    locked = False  # whether the folder is ours: never clean up another process's state
    committing = False  # once the journal is written its temporary files are promised
    try:
        # Created, locked, a commit a killed run left halfway finished, dead processes'
        # temporaries swept: the start every writing command shares.
        with output_folder(opts.out):
            locked = True
            done = open_state(state, w.fingerprint, resumable, len(w.batches))
            ref = NpyRows(part["ref"], w.shape, opts.dtype, create=not resumable)
            arrays.append(ref)
            alt = NpyRows(part["alt"], w.shape, opts.dtype, create=not resumable)
            arrays.append(alt)
            verify(done, w.batches, ref, alt, state)
            _compute(w, len(done), genome, opts, ref, alt, state)
            for a in arrays:
                a.close()
            arrays.clear()
            summary = summarise(w.plan, w.padded, w.jobs, w.v, opts, w.geo, w.bins, w.centre,
                                len(done))
            write_tables(w.v, w.plan, w.padded, w.chosen, tmp, w.geo, all_bins=opts.bins is None,
                         group=opts.group, fmt=opts.format)
            commit = _stage_arrays(opts, w, part, tmp, finals)
            committing = True
            commit.run(finals["manifest"], json.dumps(_manifest(opts, w, summary, finals),
                                                      indent=1))
            shutil.rmtree(state.folder)
    except (KeyboardInterrupt, Interrupted) as exc:
        cleanup(arrays, {} if committing else tmp, state, opts.resume or not locked,
                opts.out if created_out else None)
        raise interrupted(exc, state, opts.resume, len(w.batches)) from None
    except BaseException:
        # a commit stopped halfway is finished by the next command in the folder (recover)
        cleanup(arrays, {} if committing else tmp, state, opts.resume or not locked,
                opts.out if created_out else None)
        raise
    return PredictResult([finals[k] for k in finals if k != "manifest"], finals["manifest"],
                         summary)


def _stage_arrays(opts: PredictOptions, w: Work, part: dict[str, Path], tmp: dict[str, Path],
                  finals: dict[str, Path]) -> Commit:
    """Put the finished arrays under their temporary names; the commit that publishes all."""
    if opts.format == "zarr":
        rows = chunk_rows(w.shape, opts.dtype, opts.zarr_chunk_rows)
        write_zarr(part, tmp["predictions"], w.shape, opts.dtype, rows,
                   {"perturbscore_version": __version__, "layout": "N B T",
                    "kept_bins": w.bins.tolist(), "source_tracks": w.tracks.tolist()})
    commit = Commit(opts.out)
    for k, t in tmp.items():
        if k in part:
            if finals[k].exists() and os.path.samefile(part[k], finals[k]):
                continue  # published by a commit a kill cut short: the same data
            # a second name for the data: the state keeps its own until the commit
            # is done, so a run killed while committing can still be resumed
            _link(part[k], t)
        commit.add(t, finals[k])
    return commit


def _manifest(opts: PredictOptions, w: Work, summary: dict[str, Any],
              finals: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "perturbscore_version": __version__, "command": "predict", **summary,
        "model": w.predictor.describe(),
        "inputs": {k: w.fingerprint[k] for k in ("variants", "genome", "targets")},
        "tracks": {"count": int(w.tracks.size), "source_index": w.tracks.tolist(),
                   "identifier": w.chosen["identifier"].astype(str).tolist()},
        "format": opts.format,
        "outputs": {k: str(p) for k, p in finals.items()},
    }
    if opts.format == "zarr":
        out["zarr_chunk_rows"] = chunk_rows(w.shape, opts.dtype, opts.zarr_chunk_rows)
    return out


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links: the state loses its copy
        os.replace(src, dst)


def _compute(w: Work, first: int, genome: Genome, opts: PredictOptions, ref: NpyRows,
             alt: NpyRows, state: ResumeLog) -> None:
    from tqdm import tqdm

    cache: dict[int, bytes] = {}
    # closed on the way out, interrupted or not, so the bar never prints after the message
    with tqdm(total=len(w.batches), initial=first, desc="predict", unit="batch",
              disable=not opts.progress, file=sys.stderr) as bar:
        for k in range(first, len(w.batches)):
            x = np.stack([one_hot(job_sequence(genome, w.plan, w.v, j, cache))
                          for j in w.batches[k]])
            y = predict_batch(w.predictor, x, w.bins, w.tracks,
                              opts.reverse_complement)  # b K T
            chunks = []
            for job, row in zip(w.batches[k], y, strict=True):
                chunks += [ref.write(r, row) for r in job.ref_rows]
                chunks += [alt.write(r, row) for r in job.alt_rows]
            ref.sync()
            alt.sync()  # data durable before the log says so
            state.append(k, batch_crc(chunks))
            bar.update(1)
            log.debug("batch %d of %d done", k + 1, len(w.batches))
