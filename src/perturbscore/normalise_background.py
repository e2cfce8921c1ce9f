"""A ``normalise`` job's backgrounds: built from a group of the run, and what they warn.

:func:`build_background` streams one table of the background group into a
:class:`~perturbscore.normalise_sketch.BackgroundBuilder`, leaving out the rows
:data:`EXCLUSION_RULE` names (counted for the manifest); :func:`build_backgrounds`
builds every one of a job.  :func:`warn_about_backgrounds` says where ``robust_z`` would
divide by rounding and where a run's kept out-of-field zeros get values as if measured
(:func:`kept_out_of_field_warning`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import normalise as nz
from .errors import PerturbscoreError
from .geometry import CLASS_LABELS, OUTSIDE_INPUT
from .normalise import Background
from .normalise_files import run_basis
from .normalise_job import NormaliseJob, checked_blocks
from .normalise_sketch import BackgroundBuilder
from .runtables import Table

log = logging.getLogger("perturbscore")

EXCLUSION_RULE = (
    "background rows left out: class outside_input in the run's class column (when it has "
    "one), every selected score exactly 0 (REF == ALT, e.g. a variant outside the model's "
    "input), or any score NaN or infinite"
)
OUTSIDE = CLASS_LABELS[OUTSIDE_INPUT]


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


def build_backgrounds(job: NormaliseJob) -> None:
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


def kept_out_of_field_warning(manifest: dict[str, Any], groups: Sequence[str]) -> str | None:
    """The warning for a run's out-of-field zeros normalised as if measured, or None.

    A run with ``--out-of-field keep`` (the default) wrote the variants outside the
    model's input as exact zeros ('not measured'); they are left out of a background
    built here, but every table's own rows are normalised, so they get a quantile and
    robust_z like a measured score (a robust_z below 0, a low quantile).  Counted per
    group from the run's manifest, as ``compare`` counts them
    (:func:`perturbscore.compare_out_of_field.out_of_field_rows`).
    """
    from .compare_out_of_field import (
        CLASS_COLUMN_SETTING,
        out_of_field_rows,
        out_of_field_shares,
    )

    counts = out_of_field_rows(manifest, groups)
    if not counts:
        return None
    geo = manifest.get("geometry") or {}
    fix = (
        "run compare --out-of-field exclude on this folder to leave them out (its class "
        "column is kept here), or rerun 'perturbscore run' with --out-of-field na (NaN, which "
        "stays NaN here)"
        if geo.get("class_column")
        else "rerun 'perturbscore run' with --out-of-field na (NaN, which stays NaN here), "
        f"or with {CLASS_COLUMN_SETTING} so that compare --out-of-field exclude can leave "
        "them out"
    )
    shares = out_of_field_shares(manifest, list(counts), counts)
    return (
        f"out-of-field zeros normalised: {shares} are variants outside the "
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


def warn_about_backgrounds(job: NormaliseJob) -> None:
    """Every warning about a job's backgrounds, once all are built (stderr and manifest)."""
    _check_spread(job)
    _out_of_field(job)
