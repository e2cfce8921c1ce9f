"""Write a comparison's outputs and a self-contained HTML report.

:func:`run_comparison` checks every option and input, runs the tests and writes
``tests.csv`` / ``tests.parquet`` (the tidy test table), ``figures/`` (PNG and SVG) and
``compare.json`` (parameters, unit counts, warnings, files) into a temporary folder next
to ``--out``, renamed into place at the end: a failed comparison leaves nothing.
:func:`build_report` turns that folder into ``report.html`` with every figure embedded
as a data URI, so it opens anywhere without network access.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .compare import DEFAULT_MEMORY, CompareResult
from .errors import PerturbscoreError

log = logging.getLogger("perturbscore")

TOP_TRACKS = 15
HEATMAP_TRACKS = 40
P_FLOOR = 1e-300


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _axis_label(statistic: str, aggregation: str, manifest: dict[str, Any]) -> str:
    label = statistic
    if aggregation and aggregation != "none":
        label += f" ({aggregation})"
    norm = (manifest.get("parameters") or {}).get("normalise")
    if norm == "zscore":
        label += ", z-score per track"
    return label


def _tag(*parts: object) -> str:
    return "_".join(str(p) for p in parts if p is not None and str(p) != "").replace(" ", "-")


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, lacks a parent, or holds other things."""
    if out.exists() and not out.is_dir():
        raise PerturbscoreError(
            f"--out {out} is an existing file; give a folder name for the comparison."
        )
    if not out.parent.is_dir():
        raise PerturbscoreError(
            f"--out {out}: folder {out.parent} does not exist; create it first."
        )
    if out.is_dir() and any(out.iterdir()):
        if not (out / "compare.json").is_file():
            raise PerturbscoreError(
                f"--out {out} exists and is not a comparison folder (no compare.json); "
                "choose a new or empty folder."
            )
        if not overwrite:
            raise PerturbscoreError(f"{out}/compare.json already exists; pass --overwrite.")


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
    """Check everything, :meth:`~perturbscore.compare.ComparisonPlan.execute`, write.

    ``options`` are those of :func:`~perturbscore.compare.plan_comparison`.  Every
    user error is raised before any test runs, and nothing is written then.
    """
    from .compare import plan_comparison
    from .extras import require

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
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        (tmp / "figures").mkdir(parents=True)
        summary = _write_into(result, tmp, plot_tracks, n_top, xlim, manifest or {})
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return summary


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out / "compare.json"
    if old.is_file():
        # Only what the earlier comparison wrote is removed (its compare.json lists it).
        prev = json.loads(old.read_text())
        stale = [f[k] for f in prev.get("figures", []) for k in ("png", "svg") if k in f]
        for rel in stale + list(prev.get("files", [])):
            p = out / rel
            if p.is_file():
                p.unlink()
    (out / "figures").mkdir(exist_ok=True)
    for p in sorted(tmp.rglob("*")):
        if p.is_file() and p.name != "compare.json":
            os.replace(p, out / p.relative_to(tmp))
    os.replace(tmp / "compare.json", out / "compare.json")  # last: marks it complete


def _write_into(
    result: CompareResult,
    folder: Path,
    plot_tracks: Sequence[str],
    n_top: int,
    xlim: tuple[float, float] | None,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    from . import plots

    figs = folder / "figures"
    tests = result.tests
    tests.to_parquet(folder / "tests.parquet", index=False)
    tests.to_csv(folder / "tests.csv", index=False)
    figures: list[dict[str, Any]] = []
    desc = dict(zip(result.tracks["identifier"], result.tracks["description"], strict=True))
    keys = ["design", "rank"]
    tested = tests[tests["p_two_sided"].notna()]
    chosen: dict[tuple[str, Any], list[str]] = {}
    for key, part in tests.groupby(keys, sort=False, dropna=False):
        ok = part[part["p_adj_two_sided"].notna()]
        if ok.empty:
            continue  # an empty design: warned about, nothing drawn
        chosen[(str(key[0]), _rank_of(key[1]))] = list(plot_tracks) or list(
            ok.sort_values("p_adj_two_sided", kind="stable")["identifier"].drop_duplicates()[:n_top]
        )
    union = sorted({t for v in chosen.values() for t in v})
    combos = list(tests[["aggregation", "statistic"]].drop_duplicates().itertuples(index=False))
    for agg, stat in combos:
        if not union:
            break
        samples = result.samples(agg, stat, union)
        for key, track_list in chosen.items():
            design, rank_v = key
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
    summary = {
        **result.summary,
        "n_tests": len(tests),
        "n_significant_two_sided_0.05": int((tests["p_adj_two_sided"] < 0.05).sum()),
        "warnings": list(result.warnings),
        "figures": figures,
        "files": ["tests.csv", "tests.parquet"],
    }
    _atomic_text(folder / "compare.json", json.dumps(summary, indent=2, default=_plain) + "\n")
    return summary


def _rank_of(v: object) -> int | None:
    """A group key's rank: None for pooled units (NA)."""
    return int(v) if isinstance(v, int | np.integer | float) and v == v else None


def _plain(v: object) -> object:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)


def _img(folder: Path, rel: str) -> str:
    data = base64.b64encode((folder / rel).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">'


def format_p(v: object) -> str:
    """p-values for people: ``NA``, ``< 1e-300`` (underflow included), else 3 digits."""
    if v is None or pd.isna(v):  # type: ignore[call-overload]
        return "NA"
    f = float(v)  # type: ignore[arg-type]
    return f"< {P_FLOOR:g}" if f < P_FLOOR else f"{f:.3g}"


def _kv_table(items: Sequence[tuple[str, object]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_text(v))}</td></tr>" for k, v in items
    )
    return f'<table class="kv">{rows}</table>'


def _text(v: object) -> str:
    if isinstance(v, list | tuple):
        return ", ".join(_text(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_text(x)}" for k, x in v.items())
    return "" if v is None else str(v)


def _frame_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def check_report_out(folder: Path, out: Path | None, overwrite: bool = False) -> Path:
    """The report's path; refuse a folder, a missing parent folder, or (for ``--out``) an
    existing file without ``overwrite``: it may be anything of the user's."""
    target = Path(out) if out else folder / "report.html"
    if out is not None and target.is_file() and not overwrite:
        raise PerturbscoreError(
            f"--out {target} already exists; pass --overwrite to replace it or name a new "
            "file, e.g. report.html."
        )
    if target.is_dir():
        raise PerturbscoreError(f"--out {target} is a folder; give a file name like report.html.")
    if not target.parent.is_dir():
        raise PerturbscoreError(
            f"--out {target}: folder {target.parent} does not exist; create it first."
        )
    return target


def build_report(
    compare_dir: str | Path, out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Assemble ``report.html`` from a folder written by :func:`write_comparison`.

    The default ``COMPARE_DIR/report.html`` is replaced; another existing ``out`` only
    with ``overwrite``.
    """
    folder = Path(compare_dir)
    cpath = folder / "compare.json"
    if not cpath.is_file():
        raise PerturbscoreError(
            f"{folder}: no compare.json; run 'perturbscore compare ... --out {folder}' first."
        )
    target = check_report_out(folder, Path(out) if out else None, overwrite)
    summary = json.loads(cpath.read_text())
    tests_path = folder / "tests.parquet"
    if not tests_path.is_file():
        raise PerturbscoreError(f"{tests_path} is missing; rerun 'perturbscore compare'.")
    tests = pd.read_parquet(tests_path)
    manifest_path = Path(summary["run"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    page = _page(folder, summary, tests, manifest)
    _atomic_text(target, page)
    return target


def _top_tables(tests: pd.DataFrame) -> str:
    cols = [
        "identifier",
        "assay",
        "target",
        "biosample",
        "aggregation",
        "statistic",
        "x",
        "y",
        "n_x",
        "n_y",
        "p_greater",
        "p_less",
        "p_two_sided",
        "p_adj_two_sided",
        "rank_biserial",
        "median_difference",
        "note",
    ]
    parts = []
    for key, part in tests.groupby(["design", "rank"], sort=False, dropna=False):
        design, rank = str(key[0]), _rank_of(key[1])
        where = design if rank is None else f"{design}, rank {rank}"
        ok = part[part["p_adj_two_sided"].notna()]
        if ok.empty:
            parts.append(f"<h3>{html.escape(str(where))}</h3><p>No track could be tested.</p>")
            continue
        top = ok.sort_values("p_adj_two_sided", kind="stable").head(TOP_TRACKS)
        shown = top[[c for c in cols if c in top.columns]].copy()
        if design == "paired":
            shown.insert(list(shown.columns).index("n_y") + 1, "n_zero", top["n_zero"])
        for c in ("p_greater", "p_less", "p_two_sided", "p_adj_two_sided"):
            shown[c] = shown[c].map(format_p)
        for c in ("rank_biserial", "median_difference"):
            shown[c] = shown[c].map(lambda v: "NA" if pd.isna(v) else f"{v:.3g}")
        parts.append(
            f"<h3>{html.escape(str(where))}</h3><p>The {len(top)} most significant of "
            f"{len(ok)} tests (BH-adjusted two-sided p).</p>{_frame_html(shown)}"
        )
    return "".join(parts)


def _page(
    folder: Path, summary: dict[str, Any], tests: pd.DataFrame, manifest: dict[str, Any]
) -> str:
    a, b = summary["group_a"], summary["group_b"]
    params = [
        ("group A (--a)", a),
        ("group B (--b)", b),
        ("designs", summary.get("designs")),
        ("pairing keys", summary.get("keys")),
        ("duplicates", summary.get("duplicates")),
        ("BH family", summary.get("family")),
        ("per pairing rank", "yes" if summary.get("per_rank") else "no (ranks pooled)"),
        ("tracks", summary.get("n_tracks")),
        ("tables", summary.get("tables")),
    ]
    outputs = pd.DataFrame(manifest.get("outputs", []))
    counts_html = (
        _frame_html(
            outputs[
                [
                    c
                    for c in ("group", "aggregation", "statistic", "rows", "path")
                    if c in outputs.columns
                ]
            ]
        )
        if not outputs.empty
        else "<p>The run's manifest.json was not found.</p>"
    )
    units = summary.get("units")
    units_html = ""
    if units:
        items: list[tuple[str, object]] = [
            ("pairing files", units.get("files")),
            ("units read", units.get("read")),
            ("usable units (key fields present)", units.get("usable")),
            ("matching", units.get("matching")),
            ("non-matching", units.get("non_matching")),
        ]
        items += [(f"dropped: {k}", v) for k, v in units.get("dropped", {}).items()]
        items += list(units.get("variants", {}).items())
        units_html = "<h3>Pairing units</h3>" + _kv_table(items)
        if units.get("per_rank"):
            pr = pd.DataFrame(units["per_rank"]).T.reset_index(names="rank")
            units_html += "<h4>Per rank</h4>" + _frame_html(pr)
    warn = summary.get("warnings") or []
    warn_html = (
        "<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warn) + "</ul>"
        if warn
        else ""
    )
    figs_html = "".join(
        f"<figure>{_img(folder, f['png'])}<figcaption>{html.escape(f['title'])}</figcaption>"
        "</figure>"
        for f in summary["figures"]
    )
    mparams = manifest.get("parameters") or {}
    m_items = [(k, v) for k, v in mparams.items() if not str(k).startswith("zscore_")]
    inputs = pd.DataFrame(
        [
            {
                "group": i.get("group"),
                "batch": i.get("batch"),
                "variants": (i.get("variants") or {}).get("path", i.get("path")),
                "rows": (i.get("variants") or {}).get("rows", i.get("rows")),
            }
            for i in manifest.get("inputs", [])
        ]
    )
    manifest_html = _kv_table(
        [
            ("perturbscore", manifest.get("perturbscore_version")),
            ("created", manifest.get("created")),
            ("run file", manifest.get("run_file") or manifest.get("source")),
            *m_items,
        ]
    ) + (("<h3>Inputs</h3>" + _frame_html(inputs)) if not inputs.empty else "")
    n_sig = summary["n_significant_two_sided_0.05"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>perturbscore report: {html.escape(b)} vs {html.escape(a)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }}
td, th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
table.kv th {{ font-weight: normal; color: #555; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
img {{ max-width: 560px; border: 1px solid #eee; }}
code {{ background: #f4f4f4; padding: 1px 4px; }}
div.wide {{ overflow-x: auto; max-width: 100%; }}
</style></head><body>
<h1>Perturbation scores: {html.escape(b)} vs {html.escape(a)}</h1>
<p>Run <code>{html.escape(str(summary["run"]))}</code>; {summary["n_tests"]} tests,
{n_sig} with BH-adjusted two-sided p &lt; 0.05. Tests are R's <code>wilcox.test</code>
defaults; p-values below {P_FLOOR:g} are printed as "&lt; {P_FLOOR:g}".</p>
<h2>Parameters</h2>
{_kv_table(params)}
{warn_html}
<h2>Groups and counts</h2>
{counts_html}
{units_html}
<h2>Top tracks</h2>
<p>Each test is x against y: <code>p_greater</code> means x tends to be larger. For
<em>unpaired</em> and <em>paired</em>, x is B ({html.escape(b)}) and y is A
({html.escape(a)}); the paired differences are x - y = B - A.</p>
{_top_tables(tests)}
<h2>Figures</h2>
{figs_html}
<h2>Run manifest</h2>
{manifest_html}
</body></html>
"""
