"""Write a comparison's outputs and a self-contained HTML report.

:func:`write_comparison` writes ``tests.csv`` / ``tests.parquet`` (the tidy test table),
``figures/`` (PNG and SVG) and ``compare.json`` (parameters, unit counts, files) into
one folder; :func:`build_report` turns that folder into ``report.html`` with every
figure embedded as a data URI, so it opens anywhere without network access.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .compare import CompareResult
from .errors import PerturbscoreError

TOP_TRACKS = 25


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_comparison(
    result: CompareResult,
    out_dir: str | Path,
    plot_tracks: Sequence[str] = (),
    n_top: int = 3,
    xlim: tuple[float, float] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the test table, figures and ``compare.json`` into ``out_dir``.

    ECDF figures are drawn for ``plot_tracks``, or else for the ``n_top`` tracks with the
    smallest adjusted p-value.  Returns the summary written to ``compare.json``.
    """
    from . import plots

    out = Path(out_dir)
    if (out / "compare.json").exists() and not overwrite:
        raise PerturbscoreError(f"{out}/compare.json already exists; pass --overwrite.")
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    tests = result.tests
    tests.to_parquet(out / "tests.parquet", index=False)
    tests.to_csv(out / "tests.csv", index=False)
    chosen = list(plot_tracks) or list(
        tests.sort_values("p_adj_two_sided")["identifier"].drop_duplicates()[:n_top]
    )
    figures: list[dict[str, str]] = []
    ids = list(result.tracks["identifier"])
    desc = dict(zip(result.tracks["identifier"], result.tracks["description"], strict=True))
    for (agg, stat), sets in result.samples.items():
        for track in chosen:
            j = ids.index(track)
            samples = {label: arr[:, j] for label, arr in sets.items()}
            if {"matching", f"non-matching {result.summary['group_a']}"} <= samples.keys():
                # The study's figure: matching and non-matching units only.
                samples = {k: v for k, v in samples.items() if k.startswith(("matching", "non"))}
            fig = plots.ecdf_figure(
                samples,
                f"{track} ({desc[track]}): {agg}, {stat}",
                xlim=xlim,
                xlabel=f"{stat} ({agg})",
            )
            stem = figs / f"ecdf_{track}_{agg}_{stat}"
            plots.save(fig, stem)
            figures.append(
                {
                    "kind": "ecdf",
                    "png": f"figures/{stem.name}.png",
                    "title": f"ECDF of {track}, {agg}, {stat}",
                }
            )
    for design, part in tests.groupby("design", sort=False):
        for (x, y), sub in part.groupby(["x", "y"], sort=False):
            tag = f"{design}_{x}_vs_{y}".replace(" ", "-")
            kinds = (
                (
                    "overview",
                    plots.overview_figure,
                    "Overview",
                    f"{design}: {x} vs {y} (all tracks, aggregations)",
                ),
                (
                    "heatmap",
                    plots.heatmap_figure,
                    "Effect sizes",
                    f"effect sizes, {design}: {x} vs {y}",
                ),
            )
            for kind, draw, caption, title in kinds:
                plots.save(draw(sub, title), figs / f"{kind}_{tag}")
                figures.append(
                    {
                        "kind": kind,
                        "png": f"figures/{kind}_{tag}.png",
                        "title": f"{caption}, {design}: {x} vs {y}",
                    }
                )
    summary = {
        **result.summary,
        "n_tests": len(tests),
        "n_significant_two_sided_0.05": int((tests["p_adj_two_sided"] < 0.05).sum()),
        "figures": figures,
        "tables": ["tests.csv", "tests.parquet"],
    }
    _atomic_text(out / "compare.json", json.dumps(summary, indent=2, default=_plain) + "\n")
    return summary


def run_comparison(
    run_folder: str | Path,
    out_dir: str | Path,
    *,
    plot_tracks: Sequence[str] = (),
    xlim: tuple[float, float] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """:func:`~perturbscore.compare.compare_groups` then :func:`write_comparison`."""
    from .compare import compare_groups

    out = Path(out_dir)
    if (out / "compare.json").exists() and not overwrite:
        raise PerturbscoreError(f"{out}/compare.json already exists; pass --overwrite.")
    result = compare_groups(run_folder, **options)
    return write_comparison(result, out, plot_tracks=plot_tracks, xlim=xlim, overwrite=True)


def _plain(v: object) -> object:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)


def _img(folder: Path, rel: str) -> str:
    data = base64.b64encode((folder / rel).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">'


def build_report(compare_dir: str | Path, out: str | Path | None = None) -> Path:
    """Assemble ``report.html`` from a folder written by :func:`write_comparison`."""
    folder = Path(compare_dir)
    cpath = folder / "compare.json"
    if not cpath.is_file():
        raise PerturbscoreError(
            f"{folder}: no compare.json; run 'perturbscore compare ... --out {folder}' first."
        )
    summary = json.loads(cpath.read_text())
    tests = pd.read_parquet(folder / "tests.parquet")
    manifest_path = Path(summary["run"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    top = tests.sort_values("p_adj_two_sided").head(TOP_TRACKS)
    cols = [
        "identifier",
        "assay",
        "target",
        "biosample",
        "aggregation",
        "statistic",
        "design",
        "x",
        "y",
        "n_x",
        "n_y",
        "p_two_sided",
        "p_adj_two_sided",
        "rank_biserial",
        "median_difference",
        "note",
    ]
    table_html = top[cols].to_html(
        index=False, float_format=lambda v: f"{v:.3g}", classes="tests", border=0, na_rep="NA"
    )
    counts = [
        (o["group"], o["aggregation"], o["statistic"], o["rows"])
        for o in manifest.get("outputs", [])
    ]
    counts_html = "".join(
        f"<tr><td>{html.escape(str(g))}</td><td>{a}</td><td>{s}</td><td>{n}</td></tr>"
        for g, a, s, n in counts
    )
    units = summary.get("units")
    units_html = (
        (
            "<ul>"
            + "".join(f"<li>{html.escape(k.replace('_', ' '))}: {v}</li>" for k, v in units.items())
            + "</ul>"
        )
        if units
        else ""
    )
    figs_html = "".join(
        f"<figure>{_img(folder, f['png'])}<figcaption>{html.escape(f['title'])}</figcaption>"
        "</figure>"
        for f in summary["figures"]
    )
    params = {
        k: summary[k] for k in ("group_a", "group_b", "designs", "keys", "duplicates", "family")
    }
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>perturbscore report: {html.escape(summary["group_b"])} vs {
        html.escape(summary["group_a"])
    }</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
img {{ max-width: 560px; border: 1px solid #eee; }}
code {{ background: #f4f4f4; padding: 1px 4px; }}
</style></head><body>
<h1>Perturbation scores: {html.escape(summary["group_b"])} vs {html.escape(summary["group_a"])}</h1>
<p>Run <code>{html.escape(str(summary["run"]))}</code>, perturbscore
{html.escape(str(manifest.get("perturbscore_version", "?")))};
{summary["n_tests"]} tests, {summary["n_significant_two_sided_0.05"]} with BH-adjusted
two-sided p &lt; 0.05. Parameters: <code>{html.escape(json.dumps(params))}</code>.</p>
<h2>Groups and counts</h2>
<table><tr><th>group</th><th>aggregation</th><th>statistic</th><th>variants</th></tr>
{counts_html}</table>
{("<h3>Pairing units</h3>" + units_html) if units_html else ""}
<h2>Top tracks</h2>
<p>x against y: p_greater means x tends to be larger; for the paired design x - y are
the differences (B - A).</p>
{table_html}
<h2>Figures</h2>
{figs_html}
<h2>Run manifest</h2>
<pre>{
        html.escape(
            json.dumps(
                {k: manifest.get(k) for k in ("run_file", "parameters", "inputs")}, indent=1
            )[:20000]
        )
    }</pre>
</body></html>
"""
    target = Path(out) if out else folder / "report.html"
    _atomic_text(target, page)
    return target
