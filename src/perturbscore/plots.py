"""Figures of a comparison (matplotlib, Agg backend; PNG and SVG).

* :func:`ecdf_figure`: the study's figure, ECDFs of the groups' scores on one track;
* :func:`overview_figure`: -log10 adjusted p against effect size, coloured by assay;
* :func:`heatmap_figure`: effect sizes, tracks x aggregations, for one design.
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

ASSAY_COLOURS = {"DNASE": "#1b9e77", "ATAC": "#66a61e", "CHIP": "#7570b3", "CAGE": "#d95f02"}


def ecdf_figure(
    samples: Mapping[str, np.ndarray],
    title: str,
    xlim: tuple[float, float] | None = None,
    xlabel: str = "perturbation score",
) -> Figure:
    """Overlaid empirical CDFs, one line per labelled sample (NaN ignored)."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for label, values in samples.items():
        v = np.sort(values[~np.isnan(values)])
        if v.size == 0:
            continue
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=f"{label} (n={v.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cumulative fraction")
    ax.set_title(title, fontsize=10)
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def overview_figure(tests: pd.DataFrame, title: str) -> Figure:
    """-log10(adjusted two-sided p) against rank-biserial effect size, by assay."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    with np.errstate(divide="ignore"):
        y = -np.log10(tests["p_adj_two_sided"].clip(lower=1e-300))
    for assay, colour in ASSAY_COLOURS.items():
        m = (tests["assay"] == assay).to_numpy()
        if m.any():
            ax.scatter(tests["rank_biserial"][m], y[m], s=14, alpha=0.8, c=colour, label=assay)
    other = ~tests["assay"].isin(list(ASSAY_COLOURS)).to_numpy()
    if other.any():
        ax.scatter(tests["rank_biserial"][other], y[other], s=14, c="grey", label="other")
    ax.axhline(-np.log10(0.05), color="black", lw=0.8, ls="--", label="adj. p = 0.05")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("rank-biserial correlation (x vs y)")
    ax.set_ylabel("-log10 adjusted p (two-sided)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap_figure(tests: pd.DataFrame, title: str, max_tracks: int = 40) -> Figure:
    """Effect sizes of the most significant tracks (rows) across aggregations (columns)."""
    wide = tests.pivot_table(index="identifier", columns="aggregation", values="rank_biserial")
    best = tests.groupby("identifier")["p_two_sided"].min().sort_values()
    keep = [t for t in best.index[:max_tracks] if t in wide.index]
    wide = wide.loc[keep]
    fig, ax = plt.subplots(figsize=(3 + 0.8 * wide.shape[1], 1.5 + 0.22 * len(wide)), dpi=110)
    lim = float(np.nanmax(np.abs(wide.to_numpy()))) if wide.size else 1.0
    im = ax.imshow(wide.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(wide.shape[1]), list(wide.columns))
    ax.set_yticks(range(len(wide)), list(wide.index), fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="rank-biserial")
    fig.tight_layout()
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
