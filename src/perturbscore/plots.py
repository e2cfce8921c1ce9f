"""Figures of a comparison (matplotlib, Agg backend; PNG and SVG with text kept as text).

* :func:`ecdf_figure`: the study's figure, ECDFs of the samples one design tested;
* :func:`overview_figure`: -log10 adjusted p against effect size, coloured by assay;
* :func:`heatmap_figure`: effect sizes, tracks x (statistic, aggregation[, rank]), for
  one test; never averages over anything (each cell is one test).

Every function draws only what it is given; callers skip designs that tested nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; never opens a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# SVG text stays text (editable in Inkscape/Illustrator), not glyph outlines.
matplotlib.rcParams["svg.fonttype"] = "none"

ASSAY_COLOURS = {"DNASE": "#1b9e77", "ATAC": "#66a61e", "CHIP": "#7570b3", "CAGE": "#d95f02"}
#: Adjusted p-values below this are drawn at it (and marked as clipped).
P_FLOOR = 1e-300


def ecdf_figure(
    samples: Mapping[str, np.ndarray],
    title: str,
    xlim: tuple[float, float] | None = None,
    xlabel: str = "perturbation score",
) -> Figure:
    """Overlaid empirical CDFs, one line per labelled sample (NaN ignored).

    Raises ``ValueError`` when no sample has a value: an empty figure is never drawn.
    """
    drawn = {k: np.sort(v[~np.isnan(v)]) for k, v in samples.items()}
    drawn = {k: v for k, v in drawn.items() if v.size}
    if not drawn:
        raise ValueError("no values to draw")
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for label, v in drawn.items():
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=f"{label} (n={v.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cumulative fraction")
    ax.set_title(title, fontsize=9)
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def overview_figure(tests: pd.DataFrame, title: str) -> Figure:
    """-log10(adjusted two-sided p) against rank-biserial effect size, by assay.

    p-values below :data:`P_FLOOR` (including those that underflow to 0) are drawn at
    300 with an upward triangle, and the legend says so.
    """
    t = tests[tests["p_adj_two_sided"].notna()]
    if t.empty:
        raise ValueError("no tested track to draw")
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    p = t["p_adj_two_sided"].to_numpy(dtype=float)
    clipped = p < P_FLOOR
    y = -np.log10(np.maximum(p, P_FLOOR))
    x = t["rank_biserial"].to_numpy(dtype=float)
    assay = t["assay"].astype(str).str.upper().to_numpy()
    known = np.isin(assay, list(ASSAY_COLOURS))
    for name, colour in [*ASSAY_COLOURS.items(), ("other", "grey")]:
        m = (assay == name) if name != "other" else ~known
        labelled = False
        for clip, marker in ((False, "o"), (True, "^")):
            sel = m & (clipped == clip)
            if sel.any():
                ax.scatter(
                    x[sel],
                    y[sel],
                    s=16 if clip else 14,
                    alpha=0.8,
                    c=colour,
                    marker=marker,
                    label=None if labelled else name,
                )
                labelled = True
    if clipped.any():
        ax.scatter([], [], marker="^", c="black", label=f"p < {P_FLOOR:g} (drawn at 300)")
    ax.axhline(-np.log10(0.05), color="black", lw=0.8, ls="--", label="adj. p = 0.05")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("rank-biserial correlation (x vs y)")
    ax.set_ylabel("-log10 adjusted p (two-sided)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _label(row: pd.Series) -> str:
    what = " ".join(str(row[c]) for c in ("assay", "target", "biosample") if str(row[c]))
    return f"{row['identifier']}  {what}"[:60]


def wrap_name(name: str, width: int = 10) -> str:
    """``name`` on lines of about ``width`` characters, broken after ``_`` where it can:
    ``abs_diff_quantile`` -> ``abs_diff_`` / ``quantile``; a word longer than ``width``
    keeps its line."""
    lines: list[str] = []
    for word in [w + "_" for w in name.split("_")[:-1]] + [name.split("_")[-1]]:
        if lines and len(lines[-1]) + len(word) <= width:
            lines[-1] += word
        else:
            lines.append(word)
    return "\n".join(line for line in lines if line)


#: Inches per character of the heat map's 7-point tick labels (a little over the average
#: width of DejaVu Sans, so that the layout errs on the roomy side).
_INCH_PER_CHAR = 0.062


def heatmap_figure(tests: pd.DataFrame, title: str, max_tracks: int = 40) -> Figure:
    """Rank-biserial effect sizes of the most significant tracks of one test.

    Rows are tracks (identifier, assay, target, biosample), most significant first (a
    track's best test, in :func:`.compare_tests.by_significance` order, as the report's
    tables); columns every (statistic, aggregation[, rank]) of ``tests``: one cell is one
    test, so nothing is averaged; a duplicate cell raises ``ValueError``.  Column labels
    are wrapped at ``_`` and the columns sized to their longest line, so long statistic
    names (``abs_diff_quantile``) never run into each other.
    """
    from .compare_tests import by_significance

    t = tests[tests["p_two_sided"].notna()].copy()
    if t.empty:
        raise ValueError("no tested track to draw")
    has_rank = t["rank"].notna().any()
    t["column"] = t["statistic"].map(wrap_name) + "\n" + t["aggregation"]
    if has_rank:
        t["column"] = t["column"] + "\nrank " + t["rank"].astype(str)
    if t.duplicated(["identifier", "column"]).any():
        raise ValueError("several tests per cell; give one test (design, x, y)")
    wide = t.pivot(index="identifier", columns="column", values="rank_biserial")
    best = by_significance(t)["identifier"].drop_duplicates()
    keep = list(best[:max_tracks])
    wide = wide.loc[keep]
    meta = t.drop_duplicates("identifier").set_index("identifier")
    labels = [_label(pd.Series({"identifier": i, **meta.loc[i].to_dict()})) for i in keep]
    n_all = t["identifier"].nunique()
    longest = max(len(line) for c in wide.columns for line in str(c).split("\n"))
    column_in = max(0.55, _INCH_PER_CHAR * longest + 0.2)
    label_in = _INCH_PER_CHAR * max(len(x) for x in labels) + 0.3
    fig, ax = plt.subplots(
        figsize=(label_in + column_in * wide.shape[1] + 1.6, 1.8 + 0.24 * len(wide)),
        dpi=110,
        layout="constrained",
    )
    vals = wide.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    lim = lim or 1.0
    im = ax.imshow(vals, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(wide.shape[1]), list(wide.columns), fontsize=7)
    ax.set_yticks(range(len(wide)), labels, fontsize=7)
    shown = (
        f"the {len(keep)} most significant of {n_all} tracks"
        if n_all > len(keep)
        else (f"all {n_all} tracks")
    )
    ax.set_title(f"{title}\n{shown}, by smallest adjusted p (then raw p)", fontsize=9)
    fig.colorbar(im, ax=ax, label="rank-biserial")
    return fig


def save(fig: Figure, stem: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` / ``stem.svg`` and close the figure."""
    paths = []
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        fig.savefig(p)
        paths.append(p)
    plt.close(fig)
    return paths
