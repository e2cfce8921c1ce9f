"""Write a comparison's outputs: the tidy test table, figures and ``compare.json``.

:func:`run_comparison` checks every option and input, runs the tests and writes
``tests.csv`` / ``tests.parquet`` (the tidy test table), ``figures/`` (PNG and SVG) and
``compare.json`` (parameters, unit counts, warnings, files) into a temporary folder in
``--out``, published by the journalled commit every command shares
(:class:`.outputs.Commit`, ``compare.json`` last): a failed or killed comparison
leaves nothing but leftovers the next command sweeps, and ``--overwrite`` replaces an
earlier comparison all at once.
Figures take samples as ``# n T`` (values, tracks); :mod:`.report` turns the folder
into one HTML page.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .compare_tests import DEFAULT_MEMORY, CompareResult, by_significance, rank_of
from .errors import PerturbscoreError
from .messages import listing, overwrite_hint
from .outputs import (
    Commit,
    finish_commit,
    is_own_leftover,
    output_folder,
    temp_path,
    write_text_atomic,
)
from .outputs_earlier import compare_listing, stale_outputs, unlisted_outputs
from .report import is_own_report

log = logging.getLogger("perturbscore")

HEATMAP_TRACKS = 40


def _axis_label(statistic: str, aggregation: str, manifest: dict[str, Any]) -> str:
    label = statistic
    if aggregation and aggregation != "none":
        label += f" ({aggregation})"
    norm = (manifest.get("parameters") or {}).get("normalise")
    if norm == "zscore":
        label += ", z-score per track"
    return label


def _file_part(value: object) -> str:
    """One part of a figure's file name, by the rule run and normalise name their tables
    by: ``:`` dropped from an aggregation (``window:1`` -> ``window1``, as
    :attr:`.scoring.Aggregation.label`), and anything else outside the characters of
    :func:`.names.is_safe_name` (letters, digits, ``_``, ``-``; spaces of sample labels
    such as ``non-matching stab``) written as ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", str(value).replace(":", ""))


def _tag(*parts: object) -> str:
    return "_".join(_file_part(p) for p in parts if p is not None and str(p) != "")


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file or holds other things (missing folders are
    created, as by run and normalise, and removed again if the comparison fails).

    A commit a killed comparison left halfway there is finished first, so that what the
    folder holds is judged as the journal left it.
    """
    if out.exists() and not out.is_dir():
        raise PerturbscoreError(
            f"--out {out} is an existing file; give a folder name for the comparison."
        )
    finish_commit(out)  # a killed comparison's commit: judge the folder as it promised
    if out.is_dir() and any(not is_own_leftover(p) for p in out.iterdir()):
        if not (out / "compare.json").is_file():
            raise PerturbscoreError(
                f"--out {out} exists and is not a comparison folder (no compare.json); "
                "choose a new or empty folder."
            )
        if not overwrite:
            raise PerturbscoreError(
                f"{out}/compare.json already exists; {overwrite_hint()} to replace it, or "
                "choose another --out folder."
            )
        compare_listing(out)  # what --overwrite would remove must be known first
        # A file of the user's where the comparison writes (its figures folder, its
        # tables) is refused now, before any test runs, not at the commit.
        figures = out / "figures"
        mine = sorted(p for p in figures.rglob("*") if not p.is_dir()) if figures.is_dir() else []
        _refuse_others(out, [*(out / n for n in ("tests.csv", "tests.parquet")), *mine])


def run_comparison(
    run_folder: str | Path,
    out_dir: str | Path,
    *,
    plot_tracks: Sequence[str] = (),
    xlim: tuple[float, float] | None = None,
    overwrite: bool = False,
    n_top: int = 3,
    memory: int = DEFAULT_MEMORY,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Check everything, :meth:`~perturbscore.compare_design.ComparisonPlan.execute`, write.

    ``options`` are those of :func:`~perturbscore.compare_plan.plan_comparison`.  Every
    user error is raised before any test runs, and nothing is written then.
    """
    from .compare_plan import plan_comparison, refuse_repeats
    from .extras import require

    refuse_repeats(plot_tracks, "--plot-track", "track")  # a library caller's too

    require("scipy", "perturbscore compare")
    require("matplotlib", "perturbscore compare (figures)")
    out = Path(out_dir)
    check_out_folder(out, overwrite)
    if xlim is not None and not (np.isfinite(xlim).all() and xlim[0] < xlim[1]):
        raise PerturbscoreError(
            f"--xlim {xlim[0]:g} {xlim[1]:g}: give the lower limit first, e.g. --xlim 0 1."
        )
    plan = plan_comparison(run_folder, **options)
    unknown = [t for t in plot_tracks if t not in set(plan.ids)]
    if unknown:
        raise PerturbscoreError(
            f"--plot-track: {', '.join(unknown[:5])} not among the compared tracks "
            f"(see {plan.run.folder / 'manifest.json'}, or --track)."
        )
    result = plan.execute(memory=memory, progress=progress)
    return write_comparison(
        result,
        out,
        plot_tracks=plot_tracks,
        n_top=n_top,
        xlim=xlim,
        overwrite=True,
        manifest=plan.run.manifest,
    )


def write_comparison(
    result: CompareResult,
    out_dir: str | Path,
    plot_tracks: Sequence[str] = (),
    n_top: int = 3,
    xlim: tuple[float, float] | None = None,
    overwrite: bool = False,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the test table, figures and ``compare.json``; all or nothing.

    ECDF figures are drawn, per design, for ``plot_tracks`` or else the ``n_top`` tracks
    of that design with the smallest adjusted p-value.  A design that tested nothing
    draws nothing (its warning is in ``compare.json`` and the report).
    """
    out = Path(out_dir)
    check_out_folder(out, overwrite)
    with output_folder(out):
        staged = temp_path(out / "compare")  # .compare.perturbscore-{pid}.partial: swept if we die
        try:
            (staged / "figures").mkdir(parents=True)
            summary = _write_into(result, staged, plot_tracks, n_top, xlim, manifest or {})
            _commit(staged, out)
        finally:
            if staged.exists():
                shutil.rmtree(staged)
    return summary


def _commit(staged: Path, out: Path) -> None:
    """Publish ``staged`` into ``out``, replacing an earlier comparison there.

    Only what the earlier comparison wrote is removed (its ``compare.json`` lists it), and
    its default report page, which would describe tests that are gone.
    """
    commit = Commit(out)
    old = out / "compare.json"
    files = [p for p in sorted(staged.rglob("*")) if p.is_file() and p.name != "compare.json"]
    planned = [out / p.relative_to(staged) for p in files]
    _refuse_others(out, planned)
    if old.is_file():
        # (compare.json itself goes first, as every commit's manifest does.)
        for p in stale_outputs(out, "compare", planned):
            if p.is_file():  # compare writes files only: a listed folder is not its own
                commit.remove(p)
        page = out / "report.html"
        if page.is_file() and is_own_report(page):
            commit.remove(page)
            log.warning(
                "%s described the earlier comparison and was removed; run 'perturbscore "
                "report %s' for this one.",
                page,
                out,
            )
    for p in files:
        commit.add(p, out / p.relative_to(staged))
    commit.run(old, (staged / "compare.json").read_text(encoding="utf-8"))


def _refuse_others(out: Path, planned: list[Path]) -> None:
    """Refuse a file among ``planned`` that the earlier comparison did not write (a
    figure of the user's under the name of one drawn now): its compare.json does not
    list it.  Checked before any test (everything in ``figures/``) and at the commit."""
    others, _ = unlisted_outputs(out, planned, "compare")
    if others:
        raise PerturbscoreError(
            f"{out} holds {listing(others, 4)}, which the earlier comparison there did not "
            "write (its compare.json does not list them); --overwrite replaces only its "
            "files: move those away or choose another --out folder."
        )


def _chosen_tracks(
    tests: pd.DataFrame, plot_tracks: Sequence[str], n_top: int
) -> dict[tuple[str, int | None], list[str]]:
    """ECDF tracks per (design, rank): ``plot_tracks``, else the ``n_top`` most significant
    (:func:`.compare_tests.by_significance`: adjusted p, then raw p)."""
    chosen: dict[tuple[str, int | None], list[str]] = {}
    for key, part in tests.groupby(["design", "rank"], sort=False, dropna=False):
        ok = part[part["p_adj_two_sided"].notna()]
        if ok.empty:
            continue  # an empty design: warned about, nothing drawn
        chosen[(str(key[0]), rank_of(key[1]))] = list(plot_tracks) or list(
            by_significance(ok)["identifier"].drop_duplicates()[:n_top]
        )
    return chosen


def _ecdf_figures(
    result: CompareResult,
    figs: Path,
    chosen: dict[tuple[str, int | None], list[str]],
    xlim: tuple[float, float] | None,
    manifest: dict[str, Any],
) -> list[dict[str, Any]]:
    """Draw the ECDFs of the chosen tracks for every table; their ``compare.json`` entries."""
    from . import plots

    tests = result.tests
    figures: list[dict[str, Any]] = []
    desc = dict(zip(result.tracks["identifier"], result.tracks["description"], strict=True))
    union = sorted({t for v in chosen.values() for t in v})
    combos = list(tests[["aggregation", "statistic"]].drop_duplicates().itertuples(index=False))
    for agg, stat in combos:
        if not union:
            break
        samples = result.samples(agg, stat, union)
        for (design, rank_v), track_list in chosen.items():
            sets = samples.get((design, rank_v), {})
            for track in track_list:
                j = union.index(track)
                cut = {label: arr[:, j] for label, arr in sets.items()}
                where = design if rank_v is None else f"{design}, rank {rank_v}"
                try:
                    fig = plots.ecdf_figure(
                        cut,
                        f"{track} ({desc[track]})\n{where}: {agg}, {stat}",
                        xlim=xlim,
                        xlabel=_axis_label(stat, agg, manifest),
                    )
                except ValueError:
                    log.warning("no values to draw for %s, %s (%s, %s)", track, where, agg, stat)
                    continue
                stem = figs / f"ecdf_{_tag(design, rank_v and f'rank{rank_v}', track, agg, stat)}"
                plots.save(fig, stem)
                figures.append(
                    {
                        "kind": "ecdf",
                        "design": design,
                        "png": f"figures/{stem.name}.png",
                        "svg": f"figures/{stem.name}.svg",
                        "title": f"ECDF of {track}, {where}, {agg}, {stat}",
                    }
                )
    return figures


def _summary_figures(tests: pd.DataFrame, figs: Path) -> list[dict[str, Any]]:
    """Overview and effect-size heatmap per (design, x, y) of the tested rows."""
    from . import plots

    figures: list[dict[str, Any]] = []
    tested = tests[tests["p_two_sided"].notna()]
    for gkey, sub in tested.groupby(["design", "x", "y"], sort=False):
        design, x, y = (str(v) for v in gkey)
        tag = _tag(design, x, "vs", y)
        for kind, caption in (("overview", "Overview"), ("heatmap", "Effect sizes")):
            title = f"{design}: {x} vs {y}"
            fig = (
                plots.overview_figure(sub, title + " (all tracks and tables)")
                if kind == "overview"
                else plots.heatmap_figure(sub, title, max_tracks=HEATMAP_TRACKS)
            )
            plots.save(fig, figs / f"{kind}_{tag}")
            figures.append(
                {
                    "kind": kind,
                    "design": design,
                    "png": f"figures/{kind}_{tag}.png",
                    "svg": f"figures/{kind}_{tag}.svg",
                    "title": f"{caption}, {design}: {x} vs {y}",
                }
            )
    return figures


def _write_into(
    result: CompareResult,
    folder: Path,
    plot_tracks: Sequence[str],
    n_top: int,
    xlim: tuple[float, float] | None,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Write tables, figures and ``compare.json`` into ``folder``; returns the summary."""
    figs = folder / "figures"
    tests = result.tests
    tests.to_parquet(folder / "tests.parquet", index=False)
    tests.to_csv(folder / "tests.csv", index=False)
    chosen = _chosen_tracks(tests, plot_tracks, n_top)
    figures = _ecdf_figures(result, figs, chosen, xlim, manifest)
    figures += _summary_figures(tests, figs)
    summary = {
        **result.summary,
        "n_tests": len(tests),
        "n_significant_two_sided_0.05": int((tests["p_adj_two_sided"] < 0.05).sum()),
        "warnings": list(result.warnings),
        "figures": figures,
        "files": ["tests.csv", "tests.parquet"],
    }
    write_text_atomic(folder / "compare.json", json.dumps(summary, indent=2, default=_plain) + "\n")
    return summary


def _plain(v: object) -> object:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)
