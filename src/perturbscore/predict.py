"""``perturbscore predict``: variants + genome -> REF/ALT predictions ``perturbscore run`` reads.

Only informative forward passes are made.  The REF prediction of a window is computed once
and written to every variant row that shares the window (the study's 55,084 rows use
14,456 TSS-centred windows); a variant outside the model's input is not run, and its ALT
row is its REF row by construction (recorded per row and counted in the manifest).

Outputs in ``OUT`` (all renamed into place only when everything succeeded):
``ref.npy`` and ``alt.npy`` ``(N, K, T)`` (N variants, K kept bins, T kept tracks),
``variants.csv`` (every input column, then the ``predict_*`` window columns), the track
table of the kept tracks ``targets.txt``, the run file ``predict.toml`` that scores them,
and ``predict_manifest.json``.  ``--resume`` continues a run that was killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import PerturbscoreError
from .genome import Genome, one_hot
from .names import check_name
from .predict_model import Predictor, load_enformer, predict_batch
from .predict_store import NpyRows, ResumeLog, batch_crc
from .tracks import TARGET_COLUMNS, TrackSelection, read_targets, select_tracks
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
#: Test hook: the index of a batch after which to announce "batch K logged" on stderr and
#: wait, so that a test can kill the process from outside at a known point.  Not for users.
PAUSE_ENV = "PERTURBSCORE_TEST_PAUSE_AFTER_BATCH"


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
    """Bases fed to the model for ``job``: the window, with the ALT allele for ALT jobs."""
    if job.window not in cache:
        cache.clear()  # jobs come grouped by window: one window in memory at a time
        chrom, start = plan.windows[job.window]
        cache[job.window] = genome.fetch(chrom, start, start + plan.geometry.input_length)[0]
    seq = cache[job.window]
    if job.variant is None:
        return seq
    i, length = job.variant, plan.geometry.input_length
    off, alt = int(plan.offset[i]), v.alt[job.variant].encode("ascii")
    lo, hi = max(off, 0), min(off + len(alt), length)  # only the bases inside the window
    if hi <= lo:
        return seq
    out = bytearray(seq)
    out[lo:hi] = alt[lo - off: hi - off]
    return bytes(out)


def _file_id(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _kept_bins(opts: PredictOptions, n_bins: int, default_centre: int) -> tuple[np.ndarray, int]:
    centre = default_centre if opts.centre_bin is None else opts.centre_bin
    if not 0 <= centre < n_bins:
        raise PerturbscoreError(
            f"--center-bin {centre} is outside the model's {n_bins} bins (0..{n_bins - 1})."
        )
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
    """
    check_name(opts.group, "group name", "--group")
    if opts.batch_size < 1:
        raise PerturbscoreError(f"--batch-size {opts.batch_size} must be at least 1.")
    if opts.dtype not in ("float16", "float32"):
        raise PerturbscoreError(f"--dtype {opts.dtype!r}: use float16 or float32.")
    finals = {k: opts.out / name for k, name in OUTPUTS.items()}
    existing = [p for p in finals.values() if p.exists()]
    resumable = opts.resume and (opts.out / STATE_DIR / "state.json").is_file()
    if existing and not opts.overwrite and not resumable:
        raise PerturbscoreError(f"{existing[0]} already exists; use --overwrite to replace it.")
    if opts.out.exists() and not opts.out.is_dir():
        raise PerturbscoreError(f"{opts.out} exists and is not a folder; choose another --out.")
    v = load_variants(opts.variants, chrom_column=opts.chrom_column, pos_column=opts.pos_column,
                      ref_column=opts.ref_column, alt_column=opts.alt_column,
                      centre_column=opts.centre_column)
    genome = Genome(opts.genome)
    v = check_against_genome(v, genome, opts.skip_ref_mismatch)
    if v.table.empty:
        raise PerturbscoreError(f"{opts.variants}: no variant is left after skipping REF "
                                "mismatches; check the genome build.")
    targets = read_targets(opts.targets)
    chosen = select_tracks(targets, opts.selection)
    if predictor is None:
        predictor = load_enformer(opts.model, opts.head, opts.device, opts.precision,
                                  opts.input_length)
    if len(targets) != predictor.n_tracks:
        raise PerturbscoreError(
            f"{opts.targets}: {len(targets)} tracks, but the model's {opts.head!r} head has "
            f"{predictor.n_tracks}; give the model's own track table."
        )
    geo = predictor.geometry
    bins, centre = _kept_bins(opts, geo.n_bins, geo.centre_bin)
    tracks = chosen["index"].astype(int).to_numpy()
    ref_len = np.array([len(r) for r in v.ref])
    plan = plan_windows(v.chrom, v.pos0, ref_len, v.centre0, geo)
    lengths = np.array([genome.lengths[c] for c in v.chrom], dtype=np.int64)
    padded = np.maximum(0, -plan.start) + np.maximum(0, plan.start + geo.input_length - lengths)

    shape = (plan.n_variants, int(bins.size), int(tracks.size))
    fingerprint = {
        "variants": _file_id(opts.variants), "genome": _file_id(opts.genome),
        "targets": _file_id(opts.targets), "model": predictor.describe(),
        "tracks": tracks.tolist(), "bins": bins.tolist(), "shape": list(shape),
        "input_length": geo.input_length, "batch_size": opts.batch_size,
        "dtype": opts.dtype, "reverse_complement": opts.reverse_complement,
        "ref_cache": opts.ref_cache, "skip_out_of_field": opts.skip_out_of_field,
        "skip_ref_mismatch": opts.skip_ref_mismatch, "columns": v.columns,
    }
    jobs = build_jobs(plan, opts.ref_cache, opts.skip_out_of_field)
    batches = [jobs[i: i + opts.batch_size] for i in range(0, len(jobs), opts.batch_size)]

    created_out = not opts.out.exists()
    opts.out.mkdir(parents=True, exist_ok=True)
    state = ResumeLog(opts.out / STATE_DIR)
    tmp = {k: state.folder / f"{name}.partial" for k, name in OUTPUTS.items()}
    done: list[int] = []
    try:
        if resumable:
            state.check(fingerprint)
            done = state.done()
            if len(done) > len(batches):
                raise PerturbscoreError(f"{state.log}: more batches logged than the run has; "
                                        "run again without --resume.")
            state.truncate(len(done))
        else:
            if state.folder.exists():
                shutil.rmtree(state.folder)  # our own state from an earlier run
            state.start(fingerprint)
        ref = NpyRows(tmp["ref"], shape, opts.dtype, create=not resumable)
        alt = NpyRows(tmp["alt"], shape, opts.dtype, create=not resumable)
        _verify(done, batches, ref, alt, state)
        _compute(batches, len(done), genome, plan, v, predictor, bins, tracks, opts, ref, alt,
                 state)
        ref.close()
        alt.close()
        summary = _summary(plan, padded, jobs, v, opts, geo, bins, centre, len(done))
        _write_tables(v, plan, padded, chosen, tmp, opts, centre)
        manifest = {
            "perturbscore_version": __version__, "command": "predict", **summary,
            "model": predictor.describe(),
            "inputs": {k: fingerprint[k] for k in ("variants", "genome", "targets")},
            "tracks": {"count": int(tracks.size), "source_index": tracks.tolist(),
                       "identifier": chosen["identifier"].astype(str).tolist()},
            "outputs": {k: str(p) for k, p in finals.items()},
        }
        tmp["manifest"].write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for k in OUTPUTS:
            os.replace(tmp[k], finals[k])
        shutil.rmtree(state.folder)
    except BaseException:
        if not opts.resume:  # nothing to resume from: leave no trace
            shutil.rmtree(state.folder, ignore_errors=True)
            if created_out and not any(opts.out.iterdir()):
                opts.out.rmdir()
        raise
    finally:
        genome.close()
    return PredictResult([finals[k] for k in OUTPUTS if k != "manifest"], finals["manifest"],
                         summary)


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

    pause_at = int(os.environ.get(PAUSE_ENV, "-1") or -1)
    cache: dict[int, bytes] = {}
    bar = tqdm(total=len(batches), initial=first, desc="predict", unit="batch",
               disable=not opts.progress, file=sys.stderr)
    for k in range(first, len(batches)):
        x = np.stack([one_hot(job_sequence(genome, plan, v, j, cache)) for j in batches[k]])
        y = predict_batch(predictor, x, bins, tracks, opts.reverse_complement)  # b K T
        chunks = []
        for job, row in zip(batches[k], y, strict=True):
            chunks += [ref.write(r, row) for r in job.ref_rows]
            chunks += [alt.write(r, row) for r in job.alt_rows]
        ref.sync()
        alt.sync()  # data durable before the log says so
        state.append(k, batch_crc(chunks))
        bar.update(1)
        if k == pause_at:
            sys.stderr.write(f"perturbscore-test: batch {k} logged\n")
            sys.stderr.flush()
            time.sleep(300)
    bar.close()


def _summary(plan: Plan, padded: np.ndarray, jobs: list[Job], v: Variants,
             opts: PredictOptions, geo: Any, bins: np.ndarray, centre: int,
             replayed: int) -> dict[str, Any]:
    strands = 2 if opts.reverse_complement else 1
    padded_windows = len({plan.window[i] for i in np.flatnonzero(padded)})
    return {
        "variants": plan.n_variants,
        "windows": len(plan.windows),
        "padded_windows": padded_windows,
        "padding": "windows past a chromosome end are filled with N (one-hot all zeros)",
        "geometry": {"input_length": geo.input_length, "bin_size": geo.bin_size,
                     "n_bins": geo.n_bins, "centre_bin": centre, "kept_bins": bins.tolist(),
                     "convention": (
                         "window [c - L/2, c + L/2) around the 0-based centre base c (the "
                         "variant, or --centre-column, 1-based in the table); the centre base "
                         f"falls in bin {geo.centre_bin} of {geo.n_bins}")},
        "forward_passes": len(jobs) * strands,
        "forward_passes_naive": 2 * plan.n_variants * strands,
        "ref_cache": opts.ref_cache,
        "out_of_field": int((~plan.in_field).sum()),
        "out_of_field_skipped": int((~plan.in_field).sum()) if opts.skip_out_of_field else 0,
        "out_of_field_rule": "ALT row := REF row by construction (no base in the input)",
        "ref_mismatches_skipped": v.ref_mismatches,
        "reverse_complement": opts.reverse_complement,
        "device": opts.device, "precision": opts.precision, "dtype": opts.dtype,
        "batch_size": opts.batch_size, "resumed_batches": replayed,
    }


def _write_tables(v: Variants, plan: Plan, padded: np.ndarray, chosen: Any,
                  tmp: dict[str, Path], opts: PredictOptions, centre: int) -> None:
    table = v.table.copy()
    table["predict_chrom"] = [plan.windows[w][0] for w in plan.window]
    table["predict_window_start"] = plan.start.astype(str)  # 0-based, inclusive
    table["predict_window_end"] = (plan.start + plan.geometry.input_length).astype(str)
    table["predict_centre"] = (plan.start + plan.geometry.input_length // 2 + 1).astype(str)
    table["predict_variant_pos_in_window"] = plan.offset.astype(str)  # 0-based offset
    table["predict_in_field"] = np.where(plan.in_field, "true", "false")
    table["predict_padded_bases"] = padded.astype(str)
    table.to_csv(tmp["variants"], index=False)
    t = chosen[TARGET_COLUMNS].copy()
    t["index"] = range(len(t))  # the kept tracks are columns 0..T-1 of the arrays
    t.to_csv(tmp["targets"], sep="\t", index=False)
    # an odd number of kept bins has a middle bin; all 896 bins need the centre named
    centre_line = "" if opts.bins is not None else f"center_bin = {centre}\n"
    tmp["run"].write_text(
        "# Written by perturbscore predict: scores the predictions beside it.\n"
        "#   perturbscore run predict.toml --out results\n"
        f'targets = "{OUTPUTS["targets"]}"\n\n[scores]\naggregations = ["ave", "tss"]\n'
        f'statistics = ["abs_diff"]\n{centre_line}\n[output]\nformat = "parquet"\n'
        'name = "{group}_diff_{aggregation}"\nid_columns = "all"\n\n[[groups]]\n'
        f'name = "{opts.group}"\nbatches = [\n  {{ ref = "{OUTPUTS["ref"]}", alt = '
        f'"{OUTPUTS["alt"]}", variants = "{OUTPUTS["variants"]}" }},\n]\n',
        encoding="utf-8",
    )
