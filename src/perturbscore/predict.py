"""``perturbscore predict``: variants + genome -> REF/ALT predictions ``perturbscore run`` reads.

Only informative forward passes are made.  The REF prediction of a window is computed once
and written to every variant row that shares the window (the study's 55,084 rows use
14,456 TSS-centred windows); a variant outside the model's input (class 0 of
:func:`perturbscore.geometry.place`) is not run, and its ALT row is its REF row by
construction (recorded per row and counted in the manifest).

Outputs in ``OUT``, published together by one journalled commit
(:class:`perturbscore.outputs.Commit`) when everything succeeded: ``ref.npy`` and
``alt.npy`` ``(N, K, T)`` (N variants, K kept bins, T kept tracks), ``variants.csv`` (every
input column, then the ``predict_*`` window columns), the track table of the kept tracks
``targets.txt``, the run file ``predict.toml`` that scores them, and
``predict_manifest.json``.  The arrays grow in ``OUT/.perturbscore-predict`` with a durable
log of finished batches; ``--resume`` continues a run that was killed or interrupted.
"""

from __future__ import annotations

import contextlib
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
from .geometry import ENFORMER, Geometry, class_labels
from .names import check_name
from .outputs import Commit, folder_lock, recover, sweep, temp_path
from .predict_model import Predictor, load_enformer, predict_batch, recentre
from .predict_store import NpyRows, ResumeLog, batch_crc
from .targets_file import TARGET_COLUMNS
from .tracks import TrackSelection, read_targets, select_tracks
from .windows import Plan, Variants, check_against_genome, load_variants, plan_windows

log = logging.getLogger("perturbscore")

OUTPUTS = {
    "ref": "ref.npy",
    "alt": "alt.npy",
    "variants": "variants.csv",
    "targets": "targets.txt",
    "run": "predict.toml",
    "manifest": "predict_manifest.json",
}
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


@dataclass
class PredictResult:
    """Files written and the manifest's counts."""

    outputs: list[Path]
    manifest: Path
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    """One forward pass: the window's REF (``variant`` None) or one variant's ALT.

    ``ref_rows``/``alt_rows``: the output rows its prediction is written to.
    """

    window: int
    variant: int | None
    ref_rows: tuple[int, ...]
    alt_rows: tuple[int, ...]


def build_jobs(plan: Plan, ref_cache: bool, skip_out_of_field: bool) -> list[Job]:
    """The forward passes, in a fixed order (so a resumed run makes the same batches)."""
    jobs: list[Job] = []
    inf = plan.in_field
    if ref_cache:
        order = np.argsort(plan.window, kind="stable")
        cuts = np.flatnonzero(np.diff(plan.window[order])) + 1
        for rows in np.split(order, cuts):
            w = int(plan.window[rows[0]])
            rows_l = rows.tolist()
            run = [i for i in rows_l if inf[i] or not skip_out_of_field]
            skipped = tuple(i for i in rows_l if not (inf[i] or not skip_out_of_field))
            jobs.append(Job(w, None, tuple(rows_l), skipped))
            jobs += [Job(w, i, (), (i,)) for i in run]
    else:
        for i in range(plan.n_variants):
            skip = skip_out_of_field and not inf[i]
            jobs.append(Job(int(plan.window[i]), None, (i,), (i,) if skip else ()))
            if not skip:
                jobs.append(Job(int(plan.window[i]), i, (), (i,)))
    return jobs


def job_sequence(genome: Genome, plan: Plan, v: Variants, job: Job,
                 cache: dict[int, bytes]) -> bytes:
    """Bases fed to the model for ``job``: the part of the window the model reads
    (``geometry.input`` bases from offset ``geometry.input_start``), with the ALT allele
    for ALT jobs."""
    g = plan.geometry
    if job.window not in cache:
        cache.clear()  # jobs come grouped by window: one window in memory at a time
        chrom, start = plan.windows[job.window]
        first = start + g.input_start
        cache[job.window] = genome.fetch(chrom, first, first + g.input)[0]
    seq = cache[job.window]
    if job.variant is None:
        return seq
    i, length = job.variant, g.input
    off, alt = int(plan.offset[i]) - g.input_start, v.alt[i].encode("ascii")
    lo, hi = max(off, 0), min(off + len(alt), length)  # only the bases inside the window
    if hi <= lo:
        return seq
    out = bytearray(seq)
    out[lo:hi] = alt[lo - off: hi - off]
    return bytes(out)


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
    finals = {k: opts.out / name for k, name in OUTPUTS.items()}
    existing = [p for p in finals.values() if p.exists()]
    resumable = opts.resume and (opts.out / STATE_DIR / "state.json").is_file()
    if not opts.resume and (opts.out / STATE_DIR / "state.json").is_file():
        raise PerturbscoreError(
            f"{opts.out} holds the recorded batches of an interrupted --resume run; add "
            f"--resume to continue it, or remove {opts.out / STATE_DIR} to start afresh."
        )
    if existing and not opts.overwrite and not resumable:
        raise PerturbscoreError(f"{existing[0]} already exists; use --overwrite to replace it.")
    if opts.out.exists() and not opts.out.is_dir():
        raise PerturbscoreError(f"{opts.out} exists and is not a folder; choose another --out.")
    v = load_variants(opts.variants, chrom_column=opts.chrom_column, pos_column=opts.pos_column,
                      ref_column=opts.ref_column, alt_column=opts.alt_column,
                      centre_column=opts.centre_column)
    genome = Genome(opts.genome)
    try:
        return _predict(opts, v, genome, predictor, finals, resumable)
    finally:
        genome.close()


def _predict(opts: PredictOptions, v: Variants, genome: Genome, predictor: Predictor | None,
             finals: dict[str, Path], resumable: bool) -> PredictResult:
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

    created_out = not opts.out.exists()
    opts.out.mkdir(parents=True, exist_ok=True)
    state = ResumeLog(opts.out / STATE_DIR)
    part = {k: state.folder / f"{OUTPUTS[k]}.partial" for k in ("ref", "alt")}
    tmp = {k: temp_path(finals[k]) for k in OUTPUTS if k != "manifest"}
    arrays: list[NpyRows] = []
    locked = False  # whether the folder is ours: never clean up another process's state
    committing = False  # once the journal is written its temporary files are promised
    try:
        with folder_lock(opts.out):
            locked = True
            recover(opts.out)  # a commit a killed run left halfway is finished first
            sweep(opts.out)  # and dead processes' temporary files go
            done = _open_state(state, fingerprint, resumable, len(batches))
            ref = NpyRows(part["ref"], shape, opts.dtype, create=not resumable)
            arrays.append(ref)
            alt = NpyRows(part["alt"], shape, opts.dtype, create=not resumable)
            arrays.append(alt)
            _verify(done, batches, ref, alt, state)
            _compute(batches, len(done), genome, plan, v, predictor, bins, tracks, opts, ref,
                     alt, state)
            for a in arrays:
                a.close()
            arrays.clear()
            summary = _summary(plan, padded, jobs, v, opts, geo, bins, centre, len(done))
            _write_tables(v, plan, padded, chosen, tmp, opts, geo)
            manifest = {
                "perturbscore_version": __version__, "command": "predict", **summary,
                "model": predictor.describe(),
                "inputs": {k: fingerprint[k] for k in ("variants", "genome", "targets")},
                "tracks": {"count": int(tracks.size), "source_index": tracks.tolist(),
                           "identifier": chosen["identifier"].astype(str).tolist()},
                "outputs": {k: str(p) for k, p in finals.items()},
            }
            commit = Commit(opts.out)
            for k, t in tmp.items():
                if k in part:
                    if finals[k].exists() and os.path.samefile(part[k], finals[k]):
                        continue  # published by a commit a kill cut short: the same data
                    # a second name for the data: the state keeps its own until the commit
                    # is done, so a run killed while committing can still be resumed
                    _link(part[k], t)
                commit.add(t, finals[k])
            committing = True
            commit.run(finals["manifest"], json.dumps(manifest, indent=1))
            shutil.rmtree(state.folder)
    except (KeyboardInterrupt, Interrupted) as exc:
        _cleanup(arrays, {} if committing else tmp, state, opts, created_out, locked)
        raise _interrupted(exc, state, opts, len(batches)) from None
    except BaseException:
        # a commit stopped halfway is finished by the next command in the folder (recover)
        _cleanup(arrays, {} if committing else tmp, state, opts, created_out, locked)
        raise
    return PredictResult([finals[k] for k in OUTPUTS if k != "manifest"], finals["manifest"],
                         summary)


def _open_state(state: ResumeLog, fingerprint: dict[str, Any], resumable: bool,
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


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links: the state loses its copy
        os.replace(src, dst)


def _cleanup(arrays: list[NpyRows], tmp: dict[str, Path], state: ResumeLog,
             opts: PredictOptions, created_out: bool, locked: bool) -> None:
    """After a failure: our temporary files go; the state stays only for ``--resume``.

    ``locked``: whether this process held the folder; if not, another one does, and its
    state is left alone.
    """
    for a in arrays:
        with contextlib.suppress(OSError):
            a.close()
    for t in tmp.values():
        with contextlib.suppress(FileNotFoundError):
            t.unlink()
    if not opts.resume and locked:  # nothing to resume from: leave no trace
        shutil.rmtree(state.folder, ignore_errors=True)
        if created_out and opts.out.is_dir() and not any(opts.out.iterdir()):
            opts.out.rmdir()


def _interrupted(exc: BaseException, state: ResumeLog, opts: PredictOptions,
                 total: int) -> Interrupted:
    """What to tell a user whose run a signal stopped (as ``perturbscore run`` does)."""
    name = getattr(exc, "signal_name", "SIGINT")
    code = getattr(exc, "exit_code", 130)
    if opts.resume and state.log.is_file():
        with contextlib.suppress(PerturbscoreError, OSError):
            done = len(state.done())
            return Interrupted(name, code, (
                f"interrupted by {name}: {done} of {total} batches are recorded in "
                f"{state.folder}; run the same command again (with --resume) to continue."))
    return Interrupted(name, code, (
        f"interrupted by {name}: nothing was written. Start long runs with --resume so "
        "that an interrupted run can continue where it stopped."))


def _verify(done: list[int], batches: list[list[Job]], ref: NpyRows, alt: NpyRows,
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


def _compute(batches: list[list[Job]], first: int, genome: Genome, plan: Plan, v: Variants,
             predictor: Predictor, bins: np.ndarray, tracks: np.ndarray, opts: PredictOptions,
             ref: NpyRows, alt: NpyRows, state: ResumeLog) -> None:
    from tqdm import tqdm

    cache: dict[int, bytes] = {}
    # closed on the way out, interrupted or not, so the bar never prints after the message
    with tqdm(total=len(batches), initial=first, desc="predict", unit="batch",
              disable=not opts.progress, file=sys.stderr) as bar:
        for k in range(first, len(batches)):
            x = np.stack([one_hot(job_sequence(genome, plan, v, j, cache))
                          for j in batches[k]])
            y = predict_batch(predictor, x, bins, tracks, opts.reverse_complement)  # b K T
            chunks = []
            for job, row in zip(batches[k], y, strict=True):
                chunks += [ref.write(r, row) for r in job.ref_rows]
                chunks += [alt.write(r, row) for r in job.alt_rows]
            ref.sync()
            alt.sync()  # data durable before the log says so
            state.append(k, batch_crc(chunks))
            bar.update(1)
            log.debug("batch %d of %d done", k + 1, len(batches))


def _summary(plan: Plan, padded: np.ndarray, jobs: list[Job], v: Variants,
             opts: PredictOptions, geo: Geometry, bins: np.ndarray, centre: int,
             replayed: int) -> dict[str, Any]:
    strands = 2 if opts.reverse_complement else 1
    padded_windows = len({plan.window[i] for i in np.flatnonzero(padded)})
    classes = class_labels(plan.cls)
    return {
        "variants": plan.n_variants,
        "windows": len(plan.windows),
        "padded_windows": padded_windows,
        "padding": "windows past a chromosome end are filled with N (one-hot all zeros)",
        "geometry": {
            **geo.describe(), "kept_bins": bins.tolist(),
            "window_rule": (
                f"window_start = centre - {geo.centre_offset} (1-based; the centre is the "
                "variant, or --centre-column); the model is fed the bases at offsets "
                f"[{geo.input_start}, {geo.input_start + geo.input}); the centre base falls "
                f"in bin {centre} of {geo.bins}"
                + (" (Enformer: window_start = TSS - 196,608, the study's enformer_start)"
                   if geo.window == ENFORMER.window else "")),
        },
        "classes": {c: int((classes == c).sum()) for c in ("outside_input", "input_only",
                                                            "output")},
        "forward_passes": len(jobs) * strands,
        "forward_passes_naive": 2 * plan.n_variants * strands,
        "ref_cache": opts.ref_cache,
        "out_of_field": int((~plan.in_field).sum()),
        "out_of_field_skipped": int((~plan.in_field).sum()) if opts.skip_out_of_field else 0,
        "out_of_field_rule": ("class outside_input (no base in the input the model reads): "
                              "ALT row := REF row by construction"),
        "ref_mismatches_skipped": v.ref_mismatches,
        "reverse_complement": opts.reverse_complement,
        "device": opts.device, "precision": opts.precision, "dtype": opts.dtype,
        "batch_size": opts.batch_size, "resumed_batches": replayed,
    }


def _geometry_toml(geo: Geometry) -> str:
    if geo.window == ENFORMER.window and geo.name == "enformer":
        extra = "" if geo.centre_bin == ENFORMER.centre_bin else f"centre_bin = {geo.centre_bin}\n"
        return f'[geometry]\nmodel = "enformer"\n{extra}'
    return (f'[geometry]\nmodel = "custom"\nwindow = {geo.window}\ninput = {geo.input}\n'
            f"bins = {geo.bins}\nbin_size = {geo.bin_size}\ncentre_bin = {geo.centre_bin}\n")


def _write_tables(v: Variants, plan: Plan, padded: np.ndarray, chosen: Any,
                  tmp: dict[str, Path], opts: PredictOptions, geo: Geometry) -> None:
    table = v.table.copy()
    start1 = plan.start + 1  # 1-based, like the study's enformer_start
    table["predict_chrom"] = [plan.windows[w][0] for w in plan.window]
    table["predict_window_start"] = start1.astype(str)
    table["predict_window_end"] = (start1 + geo.window).astype(str)  # exclusive
    table["predict_centre"] = (start1 + geo.centre_offset).astype(str)
    table["predict_variant_pos_in_window"] = plan.offset.astype(str)  # = pos - window_start
    table["predict_class"] = class_labels(plan.cls)
    table["predict_padded_bases"] = padded.astype(str)
    table.to_csv(tmp["variants"], index=False)
    t = chosen[TARGET_COLUMNS].copy()
    t["index"] = range(len(t))  # the kept tracks are columns 0..T-1 of the arrays
    t.to_csv(tmp["targets"], sep="\t", index=False)
    # an odd number of kept bins has a middle bin; all 896 bins need the centre named
    centre_line = "" if opts.bins is not None else f"center_bin = {geo.centre_bin}\n"
    tmp["run"].write_text(
        "# Written by perturbscore predict: scores the predictions beside it.\n"
        "#   perturbscore run predict.toml --out results\n"
        f'targets = "{OUTPUTS["targets"]}"\n\n[scores]\naggregations = ["ave", "tss"]\n'
        f'statistics = ["abs_diff"]\n{centre_line}\n[output]\nformat = "parquet"\n'
        'name = "{group}_diff_{aggregation}"\nid_columns = "all"\n\n'
        f"{_geometry_toml(geo)}\n[variants]\n"
        '# 0-based offset of the variant in its window (= position - predict_window_start)\n'
        'position = "predict_variant_pos_in_window"\n\n[[groups]]\n'
        f'name = "{opts.group}"\nbatches = [\n  {{ ref = "{OUTPUTS["ref"]}", alt = '
        f'"{OUTPUTS["alt"]}", variants = "{OUTPUTS["variants"]}" }},\n]\n',
        encoding="utf-8",
    )
