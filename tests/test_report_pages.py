"""The report page and the figures: the user's report.html, the order of "most
significant", and heat map labels that stay readable."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .compare_tiny import tiny_run


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("small"), {"a": 0, "b": 0}, n=40, fmt="parquet")


def test_report_keeps_a_users_own_report_html(small_run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "cmp"
    assert cli("-q", "compare", small_run, "--a", "a", "--b", "b", "--out", out).returncode == 0
    mine = "<html><body>My own notes</body></html>\n"
    page = out / "report.html"
    page.write_text(mine)
    r = cli("report", out)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("perturbscore: error: ")
    assert f"{page} already exists and is not a report perturbscore wrote" in r.stderr
    assert "never replaced" in r.stderr and r.stdout == ""
    assert page.read_text() == mine
    assert not list(out.glob(".report*"))
    # --overwrite does not replace it either: only a page perturbscore wrote is replaced.
    r = cli("report", out, "--overwrite")
    assert r.returncode == 2 and "is not a report perturbscore wrote" in r.stderr
    assert page.read_text() == mine
    page.unlink()
    r = cli("report", out)
    assert r.returncode == 0 and r.stdout.strip() == str(page)
    assert '<meta name="generator" content="perturbscore report">' in page.read_text()
    # Its own page is replaced with --overwrite, and only with it.
    page.write_text(page.read_text().replace("</body>", "<p>stale</p></body>"))
    r = cli("report", out)
    assert r.returncode == 2 and "pass --overwrite to replace it" in r.stderr
    assert "stale" in page.read_text()
    r = cli("report", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "stale" not in page.read_text()


def _tied_tests() -> pd.DataFrame:
    """Four tracks whose BH-adjusted p all tie at 1; their raw p differ, and the smallest
    raw p belongs to the last track in track order."""
    raw = [0.9, 0.5, 0.7, 0.02]
    return pd.DataFrame(
        {
            "identifier": [f"T{i}" for i in range(4)],
            "index": range(4),
            "assay": "DNASE",
            "target": "",
            "biosample": "GM12878",
            "aggregation": "ave",
            "statistic": "abs_diff",
            "design": "unpaired",
            "rank": pd.array([None] * 4, dtype="Int64"),
            "x": "b",
            "y": "a",
            "n_x": 10,
            "n_y": 10,
            "n_zero": pd.array([None] * 4, dtype="Int64"),
            "p_greater": raw,
            "p_less": raw,
            "p_two_sided": raw,
            "p_adj_two_sided": [1.0] * 4,
            "rank_biserial": [0.1, 0.2, -0.1, 0.4],
            "median_difference": 0.0,
            "note": "",
        }
    )


def test_ties_of_adjusted_p_are_broken_by_raw_p() -> None:
    from perturbscore import plots
    from perturbscore.compare_outputs import _chosen_tracks
    from perturbscore.report import _top_tables

    tests = _tied_tests()
    want = ["T3", "T1", "T2", "T0"]  # by raw p, by hand
    html = _top_tables(tests)
    assert re.findall(r"<td>(T\d)</td>", html) == want
    assert _chosen_tracks(tests, (), 3) == {("unpaired", None): want[:3]}
    fig = plots.heatmap_figure(tests, "x")
    rows = [t.get_text().split()[0] for t in fig.axes[0].get_yticklabels()]
    assert rows == want
    # The same order whatever order the tests come in.
    assert re.findall(r"<td>(T\d)</td>", _top_tables(tests.iloc[::-1])) == want


def test_demo_report_lists_the_smallest_p_first(tmp_path: Path, cli) -> None:
    """The trial's case: on the demo's paired rank 1 every adjusted p ties; the test with
    the smallest raw p must head the table and get an ECDF."""
    from perturbscore.demo import run_demo

    run_demo(tmp_path / "demo", progress=False)
    out = tmp_path / "cmp"
    r = cli("-q", "compare", tmp_path / "demo" / "results", "--a", "stab", "--b", "top",
            "--design", "paired", "--pairing", tmp_path / "demo" / "pairing", "--per-rank",
            "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(out / "tests.csv")
    part = t[(t["design"] == "paired") & (t["rank"] == 1)].dropna(subset=["p_adj_two_sided"])
    tied = part[part["p_adj_two_sided"] == part["p_adj_two_sided"].min()]
    best = tied.loc[tied["p_two_sided"].idxmin()]
    assert len(tied) > 1
    figures = {p.name for p in (out / "figures").glob("ecdf_paired_rank1_*.png")}
    assert any(f"_{best['identifier']}_" in f for f in figures), figures
    assert cli("-q", "report", out).returncode == 0
    page = (out / "report.html").read_text()
    section = page.split("<h3>paired, rank 1</h3>")[1].split("<h3>")[0]
    first = re.search(r"<tr><td>([^<]+)</td>", section)
    assert first is not None and first.group(1) == best["identifier"]


@pytest.mark.parametrize(
    ("stats", "aggs"),
    [
        # The README's demo-norm compare: 4 columns of long names beside long track labels.
        (["abs_diff_quantile", "abs_diff_robust_z"], ["ave", "tss"]),
        (["abs_diff_quantile", "abs_diff_robust_z", "log2fc_quantile", "diff"],
         ["ave", "tss", "window:12"]),  # fmt: skip
    ],
)
def test_heatmap_column_labels_do_not_overlap(stats: list[str], aggs: list[str]) -> None:
    from perturbscore import plots

    rows = []
    for i in range(5):
        for s in stats:
            for agg in aggs:
                rows.append(
                    {"identifier": f"SYNTH00{i:02d}", "assay": "CAGE",
                     "target": "", "biosample": "B lymphoblastoid cell line: GM12878 ENCODE",
                     "aggregation": agg, "statistic": s,
                     "rank": None, "rank_biserial": (i - 2) / 5,
                     "p_two_sided": 0.01 * (i + 1), "p_adj_two_sided": 0.05}  # fmt: skip
                )
    t = pd.DataFrame(rows).astype({"rank": "Int64"})
    fig = plots.heatmap_figure(t, "unpaired: top vs stab")
    fig.canvas.draw()
    ax = fig.axes[0]
    boxes = [lab.get_window_extent() for lab in ax.get_xticklabels()]
    assert len(boxes) == len(stats) * len(aggs)
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 < right.x0, (left, right)  # side by side, not into each other
    fig_box = fig.bbox
    assert all(b.x0 >= fig_box.x0 and b.x1 <= fig_box.x1 for b in boxes)
    for lab in ax.get_yticklabels():  # the track labels stay inside the figure too
        assert lab.get_window_extent().x0 >= fig_box.x0
    # Not an empty plot: coloured cells.
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    assert ((rgb.max(axis=2) - rgb.min(axis=2)) > 60).mean() > 0.01
    plots.plt.close(fig)


def test_wrap_name() -> None:
    from perturbscore.plots import wrap_name

    assert wrap_name("abs_diff_quantile") == "abs_diff_\nquantile"
    assert wrap_name("abs_diff") == "abs_diff"
    assert wrap_name("SAD") == "SAD"
    assert wrap_name("averyveryverylongname_x") == "averyveryverylongname_\nx"
