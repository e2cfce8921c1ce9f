"""``perturbscore normalise``: a finished run's tables as background-normalised tables.

:func:`normalise_run` reads the tables a run (``perturbscore run`` or
``import-scores``) lists in its ``manifest.json`` and writes, for each table and each
normalised statistic (:data:`perturbscore.normalise.NORMALISED`), a table of the same
rows and ID columns whose scores are that statistic against a background
(:mod:`perturbscore.normalise`): ``quantile`` (mid-rank, ``[0, 1]``, or ``[-1, 1]``
for signed statistics) or ``robust_z``.  The background is another group of the same
run (its table of the same aggregation and statistic, streamed into a sketch) or a
saved background file.  The output folder is run-shaped: ``compare`` and ``report``
read it as they read a run.

Names
    Output statistic ``{statistic}_{normalised}`` (``abs_diff_quantile``), table
    ``{group}_{statistic}_{normalised}_{aggregation}`` plus the format's extension,
    ``:`` dropped from the aggregation (``window:3`` -> ``window3``); the aggregation
    ``none`` of ``import-scores`` tables is left out (``top_SAD_quantile.parquet``).
Background rows
    Left out of a background built from a group, and counted in the manifest: rows
    of class ``outside_input`` when the run wrote a class column (``geometry.
    class_column`` in its manifest), rows whose scores are exactly 0 on every selected
    track (REF and ALT identical: a variant outside the model's input, which measures
    nothing), and rows with a NaN or infinite score.  Such rows are still normalised in
    the output tables like any other (NaN stays NaN); a run's out-of-field zeros kept
    by its ``--out-of-field keep`` are named in one warning
    (:func:`kept_out_of_field_warning`), since they get values as if measured.
Statistics perturbscore does not compute (``SAD`` of a scores file)
    are treated as signed: ``sign(x) * q(|x|)`` among the background's ``|b|``, the
    same as the unsigned quantile for non-negative scores except that 0 stays 0.
Runs with ``[normalise]``
    (:mod:`perturbscore.normalise_inrun`) list their normalised tables too; only their
    raw tables are normalised here.
Reading
    :mod:`perturbscore.runtables`: Parquet by record batches, CSV in chunks of rows;
    RDS and RData files are read whole (pyreadr has no partial reads), then in blocks.
    Blocks are read and normalised on a second thread while the first writes.
Checks and block sizing
    :mod:`perturbscore.normalise_job`: everything is checked before any work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import normalise as nz
from .errors import PerturbscoreError
from .geometry import CLASS_LABELS, OUTSIDE_INPUT
from .manifest import build_manifest, manifest_text
from .memory import DEFAULT_MEMORY_BYTES
from .normalise import NORMALISED, Background
from .normalise_files import run_basis, save_backgrounds
from .normalise_job import NormaliseJob, check_save, checked_blocks
from .normalise_sketch import BackgroundBuilder
from .outputs import Commit, output_folder, sweep, temp_path
from .runtables import MANIFEST, Table
from .streaming import prefetch
from .writers import (
    TableWriter,
    open_writer,
)

log = logging.getLogger("perturbscore")

EXCLUSION_RULE = (
    "background rows left out: class outside_input in the run's class column (when it has "
    "one), every selected score exactly 0 (REF == ALT, e.g. a variant outside the model's "
    "input), or any score NaN or infinite"
)
OUTSIDE = CLASS_LABELS[OUTSIDE_INPUT]


@dataclass
class NormaliseResult:
    """What :func:`normalise_run` wrote."""

    tables: list[Path]
    manifest: Path
    background_file: Path | None
    backgrounds: dict[tuple[str, str], Background]
    excluded: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    block_rows: int = 0


def _builder(tracks: Sequence[str], aggregation: str, statistic: str) -> BackgroundBuilder:
    # A statistic perturbscore does not compute (SAD of a scores file) is built as a
    # signed one (see the module docstring) and renamed when finished.
    return BackgroundBuilder(tracks, aggregation, statistic if statistic in nz.SIGNED else "diff")


def _kept_rows(
    t: Table,
    tracks: Sequence[str],
    rows: int,
    read_rows: int,
    class_column: str | None,
    counts: dict[str, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks of ``t`` (``# n S``) with the rows a background keeps (``bool # n``),
    counting those left out in ``counts`` (see the module docstring)."""
    use_class = class_column is not None and class_column in (t.id_columns or [class_column])
    for scores, ids in checked_blocks(t, tracks, rows, read_rows, ids=use_class):
        out = np.zeros(len(scores), bool)
        if use_class and ids is not None and class_column in ids.columns:
            out = (ids[class_column] == OUTSIDE).to_numpy()
        zeros = (scores == 0).all(axis=1) & ~out
        bad = ~np.isfinite(scores).all(axis=1) & ~out
        if counts is not None:
            for k, m in (("outside_input", out), ("all_zero", zeros), ("non_finite", bad)):
                counts[k] += int(m.sum())
        yield scores, ~(out | zeros | bad)


def build_background(
    t: Table,
    tracks: Sequence[str],
    rows: int,
    read_rows: int = 0,
    class_column: str | None = None,
    basis: dict[str, Any] | None = None,
) -> tuple[Background, dict[str, int]]:
    """Stream table ``t`` into a background; rows left out as the module docstring says.

    ``class_column``: the ID column with each row's receptive-field class (a run with
    ``class_column`` in its ``[output]``); its ``outside_input`` rows are left out.
    ``basis``: what the values depend on (:func:`perturbscore.normalise_files.basis`),
    recorded in the background.
    """
    b = _builder(tracks, t.aggregation, t.statistic)
    counts = {"outside_input": 0, "all_zero": 0, "non_finite": 0}
    for scores, keep in _kept_rows(t, tracks, rows, read_rows, class_column, counts):
        b.update(scores, keep)

    def again() -> Iterator[np.ndarray]:  # the same rows once more, for exact median/MAD
        return (s[k] for s, k in _kept_rows(t, tracks, rows, read_rows, class_column))

    if not b.n:
        raise PerturbscoreError(
            f"{t.path}: no row is inside the model's field with finite, not all-zero scores, "
            "so it cannot serve as a background; choose another --background group."
        )
    bg = b.finish(again)
    bg = dataclasses.replace(bg, statistic=t.statistic, basis=basis)
    return bg, {"rows": t.rows, "used": bg.n, **counts}


def normalise_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    background: str | None = None,
    background_file: str | Path | None = None,
    statistics: Sequence[str] = NORMALISED,
    fmt: str | None = None,
    save_background: str | Path | None = None,
    overwrite: bool = False,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    block_rows: int | None = None,
) -> NormaliseResult:
    """Write background-normalised copies of a run's tables (see the module docstring).

    Everything is checked before any work; then the backgrounds are built, and the
    tables written under temporary names and published with ``manifest.json`` in one
    journalled commit (all or nothing).

    Parameters
    ----------
    run_dir : path
        Folder with ``manifest.json`` (``perturbscore run`` or ``import-scores``).
    out_dir : path
        Output folder (created if missing; must not be ``run_dir``).
    background : str, optional
        Group of the run whose tables are the background (exactly one of this and
        ``background_file``).  Its own tables are normalised too.
    background_file : path, optional
        A background file (``.npz``) saved earlier with ``save_background``.
    statistics : sequence of {"quantile", "robust_z"}
    fmt : {"parquet", "csv", "rds", "rdata"}, optional
        Output format (default: the run's).
    save_background : path, optional
        Also write the background built from ``background`` to this ``.npz`` file.
    overwrite : bool
        Replace existing output tables and an existing ``save_background`` file.
    memory_bytes : int
        Budget for blocks, writer buffers and the background sketch, in bytes.
    block_rows : int, optional
        Rows per block (default: the most the budget allows); never changes a result.

    Returns
    -------
    NormaliseResult
    """
    started = time.perf_counter()
    job = NormaliseJob.check(
        Path(run_dir),
        Path(out_dir),
        background,
        background_file,
        statistics,
        fmt,
        save_background,
        overwrite,
        memory_bytes,
        block_rows,
    )
    job.timings["validate"] = time.perf_counter() - started
    _build_backgrounds(job)
    job.timings["background"] = time.perf_counter() - started - job.timings["validate"]
    _check_spread(job)
    _out_of_field(job)
    with output_folder(job.out):
        job.refuse_existing(overwrite)  # again: the folder may have changed meanwhile
        if job.saved is not None:  # and so may the file a background replaces
            check_save(job.saved, job.background, overwrite, job.run, job.out)
        _write(job, started)
    return NormaliseResult(
        [p for _, _, p in job.plan],
        job.out / MANIFEST,
        job.saved,
        job.backgrounds,
        job.excluded,
        job.rows,
    )


def _build_backgrounds(job: NormaliseJob) -> None:
    """Build each background from its group's table, counting the rows left out.

    The warnings wait until every background is built: reading the group's tables is
    their check (:meth:`NormaliseJob.check_tables`), and a damaged one is named alone.
    """
    parameters = job.manifest.get("parameters") or {}
    for k, t in job.sources.items():
        job.backgrounds[k], job.excluded[k] = build_background(
            t, job.tracks, job.rows, job.read_rows, job.class_column, run_basis(parameters, *k)
        )
    for note in job.warnings:  # the checks' (a background file that records no basis)
        log.warning("%s", note)
    for k, t in job.sources.items():
        ex = job.excluded[k]
        if ex["used"] < t.rows:
            log.warning(
                "background %s %s/%s: %d of %d rows left out (%d outside the model's input, "
                "%d all exactly 0, %d not finite)",
                job.background,
                k[0],
                k[1],
                t.rows - ex["used"],
                t.rows,
                ex["outside_input"],
                ex["all_zero"],
                ex["non_finite"],
            )


def _check_spread(job: NormaliseJob) -> None:
    """Warn (stderr and manifest) where a robust_z would divide by rounding."""
    if "robust_z" not in job.stats:
        return
    source = job.background or (job.background_file.name if job.background_file else "")
    for (agg, stat), bg in job.backgrounds.items():
        note = nz.unresolved_mad(bg, f"background {source} {agg}/{stat}")
        if note:
            log.warning("%s", note)
            job.warnings.append(note)


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def kept_out_of_field_warning(manifest: dict[str, Any], groups: Sequence[str]) -> str | None:
    """The warning for a run's out-of-field zeros normalised as if measured, or None.

    A run with ``--out-of-field keep`` (the default) wrote the variants outside the
    model's input as exact zeros ('not measured'); they are left out of a background
    built here, but every table's own rows are normalised, so they get a quantile and
    robust_z like a measured score (a robust_z below 0, a low quantile).  Counted per
    group from the run's manifest, as ``compare`` counts them
    (:func:`perturbscore.compare_tables.out_of_field_rows`).
    """
    from .compare_tables import CLASS_COLUMN_SETTING, out_of_field_rows

    counts = out_of_field_rows(manifest, groups)
    if not counts:
        return None
    geo = manifest.get("geometry") or {}
    per_group = (geo.get("classes") or {}).get("per_group") or {}
    parts = []
    for g, n in counts.items():
        total = sum(v for v in (per_group.get(g) or {}).values() if isinstance(v, int))
        share = f" ({100 * n / total:.1f}%)" if total else ""
        parts.append(f"{g} {n:,} of {_rows(total)}{share}" if total else f"{g} {_rows(n)}")
    fix = (
        "run compare --out-of-field exclude on this folder to leave them out (its class "
        "column is kept here), or rerun 'perturbscore run' with --out-of-field na (NaN, which "
        "stays NaN here)"
        if geo.get("class_column")
        else "rerun 'perturbscore run' with --out-of-field na (NaN, which stays NaN here), "
        f"or with {CLASS_COLUMN_SETTING} so that compare --out-of-field exclude can leave "
        "them out"
    )
    return (
        f"out-of-field zeros normalised: {' and '.join(parts)} are variants outside the "
        "model's input, scored exactly 0 ('not measured') by the run's --out-of-field keep; "
        "they are left out of the background but get a quantile and robust_z like measured "
        f"scores (a robust_z below 0, a low quantile); {fix}"
    )


def _out_of_field(job: NormaliseJob) -> None:
    """Warn once (stderr and manifest) about the run's kept out-of-field zeros."""
    groups = list(dict.fromkeys(t.group for t in job.tables))
    note = kept_out_of_field_warning(job.manifest, groups)
    if note:
        log.warning("%s", note)
        job.warnings.append(note)


def _normalised(
    job: NormaliseJob, t: Table, bg: Background
) -> Iterator[tuple[list[np.ndarray], pd.DataFrame]]:
    """Each block of ``t`` as its normalised statistics (in ``job.stats`` order) and IDs."""
    for scores, ids in checked_blocks(t, job.tracks, job.rows, job.read_rows):
        assert ids is not None
        yield [nz.normalise(s, scores, bg) for s in job.stats], ids


def _write_table(
    job: NormaliseJob, t: Table, commit: Commit, writers: list[TableWriter], finished: list[Path]
) -> None:
    """Write table ``t``'s normalised tables under temporary names, handed to ``commit``.

    ``writers`` holds the writers still open (to abort on failure), ``finished`` the
    temporaries already complete.
    """
    opened: list[TableWriter] = []
    # Blocks are read and normalised on a background thread while this one writes the
    # previous block (pyarrow and numpy release the GIL).
    feed = prefetch(_normalised(job, t, job.backgrounds[t.key]), depth=1)
    try:
        for values, ids in feed:
            if not opened:  # an R table's ID columns are known once it is read
                for p in (p for u, _, p in job.plan if u is t):  # in job.stats order
                    w = open_writer(
                        job.fmt,
                        p,
                        job.tracks,
                        list(ids.columns),
                        p.stem,
                        expected_rows=t.rows,
                        group_rows=job.group_rows,
                    )
                    writers.append(w)
                    opened.append(w)
            for w, v in zip(opened, values, strict=True):
                w.write(v, ids)
    finally:
        feed.close()  # type: ignore[attr-defined]  # stops and joins the reading thread
    for w in opened:
        w.finish()
        commit.add(w.tmp, w.path)
        # Drop finished writers: an R writer holds its whole table until released.
        writers.remove(w)
        finished.append(w.tmp)


def _write(job: NormaliseJob, started: float) -> None:
    """Every table to its temporary name, then one journalled commit with the manifest."""
    writers: list[TableWriter] = []
    finished: list[Path] = []
    staged = temp_path(job.saved) if job.saved is not None else None
    try:
        commit = Commit(job.out)
        for t in job.tables:
            _write_table(job, t, commit, writers, finished)
        job.timings["normalise"] = time.perf_counter() - started - sum(job.timings.values())
        if staged is not None and job.saved is not None:
            # save_backgrounds writes atomically but never replaces a file: stage it in a
            # temporary folder and rename it into place after the commit.
            sweep(job.saved.parent, job.saved.name)  # what a killed save left there
            staged.mkdir()
            save_backgrounds(staged / job.saved.name, job.backgrounds.values())
        commit.run(job.out / MANIFEST, manifest_text(_manifest(job)))
        if staged is not None and job.saved is not None:
            os.replace(staged / job.saved.name, job.saved)
    except BaseException:
        for w in writers:
            w.abort()
        for tmp in finished:
            tmp.unlink(missing_ok=True)  # renamed already if the commit got that far
        raise
    finally:
        if staged is not None and staged.exists():
            for f in staged.iterdir():
                f.unlink()
            staged.rmdir()


def _manifest(job: NormaliseJob) -> dict[str, Any]:
    """The output's manifest: a run's schema, outputs with their normalised statistic."""
    entries = [
        {**b.describe(), "background_rows": job.excluded.get(k)} for k, b in job.backgrounds.items()
    ]
    parameters = {
        "normalised": job.stats,
        "run": str(job.run),
        "background": {
            "source": "group" if job.background else "file",
            "group": job.background,
            "file": str(job.background_file) if job.background_file else None,
            "saved_to": str(job.saved) if job.saved else None,
            "rule": EXCLUSION_RULE if job.background else None,
            "entries": entries,
        },
        "quantile": "mid-rank (ties count half); signed statistics: sign(x) * q(|x|) among |b|",
        "robust_z": "(x - median) / (mad_scale * MAD)",
        "mad_scale": nz.MAD_SCALE,
        "max_rank_error": max(b.max_rank_error for b in job.backgrounds.values()),
        "format": job.fmt,
        "memory_budget_bytes": job.memory_bytes,
        "chunk_rows": job.rows,
        "run_parameters": job.manifest.get("parameters", {}),
    }
    outputs = [
        {
            "group": t.group,
            "aggregation": t.aggregation,
            "statistic": f"{t.statistic}_{s}",
            "normalised": s,
            "raw_statistic": t.statistic,
            "path": p.name,
            "object": p.stem if job.fmt == "rdata" else None,
            "rows": t.rows,
            "columns": len(job.tracks) + len(t.id_columns or []),
        }
        for t, s, p in job.plan
    ]
    inputs = [
        {
            "group": t.group,
            "aggregation": t.aggregation,
            "statistic": t.statistic,
            "path": str(t.path),
            "rows": t.rows,
        }
        for t in job.tables
    ]
    tracks = job.manifest["tracks"]
    return build_manifest(
        source="normalise",
        run_file=None,
        parameters=parameters,
        targets=job.manifest.get("targets", {}),
        selection=tracks.get("selection", {}),
        tracks=pd.DataFrame(tracks["selected"]),
        inputs=inputs,
        outputs=outputs,
        warnings=[*job.manifest.get("warnings", []), *job.warnings],
        timings=job.timings,
        extra={"geometry": job.manifest.get("geometry")},  # same rows, same classes
    )
