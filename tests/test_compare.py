"""Group comparisons end to end: real pairing tables, synthetic scores, figures, report."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.compare import compare_groups
from perturbscore.compare_pairing import read_pairing
from perturbscore.errors import PerturbscoreError

from .compare_data import make_real_shaped_run


@pytest.fixture(scope="module")
def real_run(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_shaped_run(shared, tmp_path_factory.mktemp("real"))


def test_pairing_table_shape(shared: Path) -> None:
    units = read_pairing(
        [shared / "fine_mapping" / "chr22_all_pp_max.csv"], "STAB", "TOP", ["GENE", "rsID"]
    ).units
    raw = pd.read_csv(
        shared / "fine_mapping" / "chr22_all_pp_max.csv", dtype=str, keep_default_na=False
    )
    usable = sum(((raw[f"STAB_{k}"] != "NA") & (raw[f"TOP_{k}"] != "NA")).sum() for k in (1, 2, 3))
    assert len(units) == usable
    first = units.iloc[0]
    assert first["unit"] == raw["GENE"].iloc[0] + ":1"
    assert first["a_GENE"] == raw["GENE"].iloc[0].split("_", 1)[1]  # chrN_ prefix dropped
    assert first["a_rsID"] == raw["STAB_1"].iloc[0]
    pos, ref, alt = raw["STAB_1_VAR_HG19"].iloc[0].split(":")
    assert (first["a_REF"], first["a_ALT"]) == (ref, alt)
    same = (raw["STAB_1"] == raw["TOP_1"]) & (raw["STAB_1"] != "NA")
    assert units[units["rank"] == 1]["matching"].sum() == same.sum()


def test_end_to_end_join_split_and_counts(real_run: Path, shared: Path) -> None:
    res = compare_groups(
        real_run,
        "stab",
        "top",
        designs=["unpaired", "paired", "matching"],
        pairing=[shared / "fine_mapping"],
    )
    units = read_pairing([shared / "fine_mapping"], "STAB", "TOP").units
    # Independent oracle: join by (GENE, rsID, ALT) with pandas merges.
    stab = pd.read_parquet(real_run / "stab_abs_diff_tss.parquet")
    top = pd.read_parquet(real_run / "top_abs_diff_tss.parquet")
    keys = ["GENE", "rsID", "ALT"]
    nm = units[~units["matching"]]
    a = nm.merge(stab, left_on=["a_" + k for k in keys], right_on=keys, how="left")
    b = nm.merge(top, left_on=["b_" + k for k in keys], right_on=keys, how="left")
    d = (b["SYNTH0001"] - a["SYNTH0001"]).to_numpy()
    from scipy import stats

    want = stats.wilcoxon(d[np.isfinite(d)], method="asymptotic", correction=True)
    row = res.tests.query(
        "design == 'paired' and aggregation == 'tss' and identifier == 'SYNTH0001'"
    ).iloc[0]
    both = res.summary["units"]["variants"]["non-matching units with both variants scored"]
    assert row["n_x"] == row["n_y"] == np.isfinite(d).sum() == both
    assert row["n_zero"] == 0
    assert row["p_two_sided"] == pytest.approx(want.pvalue, rel=1e-9)
    assert row["x"] == "top" and row["y"] == "stab"
    assert row["median_difference"] == pytest.approx(np.nanmedian(d))
    # Matching units: one score per unit, from either side.
    m = units[units["matching"]].merge(
        stab, left_on=["a_" + k for k in keys], right_on=keys, how="left"
    )
    mrow = res.tests.query(
        "design == 'matching' and aggregation == 'tss' and "
        "identifier == 'SYNTH0001' and y == 'non-matching stab'"
    ).iloc[0]
    assert mrow["n_x"] >= m["SYNTH0001"].notna().sum()
    assert mrow["n_y"] == a["SYNTH0001"].notna().sum()
    # Unpaired uses every row of both groups.
    urow = res.tests.query(
        "design == 'unpaired' and aggregation == 'ave' and identifier == 'SYNTH0002'"
    ).iloc[0]
    assert (urow["n_x"], urow["n_y"]) == (35077, 20007)
    ua = pd.read_parquet(real_run / "stab_abs_diff_ave.parquet")["SYNTH0002"].to_numpy()
    ub = pd.read_parquet(real_run / "top_abs_diff_ave.parquet")["SYNTH0002"].to_numpy()
    mw = stats.mannwhitneyu(ub, ua, alternative="less", method="asymptotic", use_continuity=True)
    assert urow["p_less"] == pytest.approx(mw.pvalue, rel=1e-9)
    assert pd.isna(urow["n_zero"])
    # The injected shift on track 1 is found; BH adjusted over all 32 tests.
    assert len(res.tests) == 4 * 2 * 4
    sig = res.tests[res.tests["p_adj_two_sided"] < 1e-6]
    assert set(sig["identifier"]) == {"SYNTH0001"}
    assert (res.tests["p_adj_two_sided"] >= res.tests["p_two_sided"]).all()


def test_bh_families(real_run: Path) -> None:
    every = compare_groups(real_run, "stab", "top").tests
    per_table = compare_groups(real_run, "stab", "top", family="table").tests
    assert len(every) == 8
    part = every[every["aggregation"] == "tss"]
    from perturbscore.stats import p_adjust_bh

    np.testing.assert_allclose(
        per_table.loc[part.index, "p_adj_less"], p_adjust_bh(part["p_less"].to_numpy())
    )


def test_duplicates_need_a_rule(real_run: Path, shared: Path) -> None:
    with pytest.raises(PerturbscoreError, match=r"match several score rows.*--duplicates"):
        compare_groups(
            real_run,
            "stab",
            "top",
            designs=["paired"],
            keys=["GENE", "rsID"],
            pairing=[shared / "fine_mapping" / "chr1_all_pp_max.csv"],
        )
    first = compare_groups(
        real_run,
        "stab",
        "top",
        designs=["paired"],
        keys=["GENE", "rsID"],
        duplicates="first",
        pairing=[shared / "fine_mapping"],
    )
    mean = compare_groups(
        real_run,
        "stab",
        "top",
        designs=["paired"],
        keys=["GENE", "rsID"],
        duplicates="mean",
        pairing=[shared / "fine_mapping"],
    )
    assert not np.array_equal(first.tests["test_statistic"], mean.tests["test_statistic"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(group_b="nope"), "group nope is not in the run"),
        (dict(tracks=["SYNTH0009"]), r"--track: SYNTH0009 not among the run's tracks \(did you"),
        (dict(designs=["paired"]), "need --pairing tables"),
        (
            dict(designs=["paired"], keys=["GENE", "Variant"], pairing="PAIR"),
            "the fine-mapping pairing table gives no value for --keys Variant: this shape "
            "gives only GENE, rsID, REF and ALT",
        ),
        (
            dict(designs=["paired"], keys=["GENE", "VAR"], pairing="PAIR"),
            r"pairing key\(s\) VAR are not columns of the score table",
        ),
        (
            dict(designs=["paired"], pairing="PAIR", b_prefix="TOPX"),
            r"pairing column\(s\) TOPX_1 missing",
        ),
        (dict(group_b="stab"), "--a and --b are both stab"),
        (dict(group_b="to.p"), "group name 'to.p' is not allowed"),
        (dict(per_rank=True), "--per-rank needs the paired or matching design"),
    ],
)
def test_bad_compare_inputs(real_run: Path, shared: Path, kwargs: dict, message: str) -> None:
    if kwargs.get("pairing") == "PAIR":
        kwargs["pairing"] = [shared / "fine_mapping" / "chr22_all_pp_max.csv"]
    args = {"group_a": "stab", "group_b": "top", **kwargs}
    with pytest.raises(PerturbscoreError, match=message):
        compare_groups(real_run, **args)


def test_too_few_values_give_na_with_reason(tmp_path: Path, shared: Path) -> None:
    pair = tmp_path / "pairs.csv"
    stab = pd.read_csv(shared / "stab_snps_new_strand_final_variants.csv", dtype=str).iloc[0]
    top = pd.read_csv(shared / "top_snps_new_strand_final_variants.csv", dtype=str).iloc[0]
    pd.DataFrame(
        [
            {
                "unit": "u1",
                "a_GENE": stab["GENE"],
                "a_rsID": stab["rsID"],
                "a_ALT": stab["ALT"],
                "b_GENE": top["GENE"],
                "b_rsID": top["rsID"],
                "b_ALT": top["ALT"],
            }
        ]
    ).to_csv(pair, index=False)
    run = make_real_shaped_run(shared, tmp_path / "r")
    res = compare_groups(run, "stab", "top", designs=["paired"], pairing=[pair])
    assert res.tests["p_two_sided"].isna().all()
    assert (res.tests["note"] == "fewer than 2 usable non-zero differences (1)").all()


def test_pairing_variants_none_found_is_an_error(real_run: Path, tmp_path: Path, cli) -> None:
    """Pairing tables whose variants are in none of the score tables (wrong keys, wrong
    study): exit 2 naming --keys, not an empty comparison that exits 0."""
    pair = tmp_path / "pairs.csv"
    pd.DataFrame(
        [{"unit": "u1", "a_GENE": "ENSG0", "a_rsID": "rs0", "a_ALT": "A",
          "b_GENE": "ENSG1", "b_rsID": "rs1", "b_ALT": "C"}]  # fmt: skip
    ).to_csv(pair, index=False)
    out = tmp_path / "cmp"
    r = cli("compare", real_run, "--a", "stab", "--b", "top", "--design", "paired",
            "--pairing", pair, "--out", out)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "none of the 1 pairing units has a variant in the score tables" in r.stderr
    assert "check --keys" in r.stderr and not out.exists()


def test_figures_and_report_render(real_run: Path, shared: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "cmp"
    r = cli(
        "compare",
        real_run,
        "--a",
        "stab",
        "--b",
        "top",
        "--design",
        "unpaired",
        "--design",
        "matching",
        "--pairing",
        shared / "fine_mapping",
        "--plot-track",
        "SYNTH0001",
        "--xlim",
        0,
        2,
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    # stdout lists every file written: tables, compare.json and each figure.
    listed = r.stdout.split()
    assert listed[:3] == [str(out / n) for n in ("tests.csv", "tests.parquet", "compare.json")]
    assert sorted(listed) == sorted(str(p) for p in out.rglob("*") if p.is_file())
    tests = pd.read_csv(out / "tests.csv")
    assert len(tests) == 2 * 4 * 3
    from PIL import Image

    png = out / "figures" / "ecdf_matching_SYNTH0001_tss_abs_diff.png"
    img = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert img.shape[0] > 300 and img.shape[1] > 400
    # An empty plot is almost all white; three ECDF lines and axes are not.
    assert (img < 200).mean() > 0.01
    svg = (out / "figures" / "ecdf_matching_SYNTH0001_tss_abs_diff.svg").read_text()
    # Text kept as text (svg.fonttype none), editable in Inkscape: <text> elements.
    assert "<text" in svg and "non-matching top" in svg
    # The unpaired design's ECDF shows the two groups, not the matching samples.
    usvg = (out / "figures" / "ecdf_unpaired_SYNTH0001_tss_abs_diff.svg").read_text()
    assert "top (n=35077)" in usvg and "matching" not in usvg
    for kind in ("overview", "heatmap"):
        rgb = np.asarray(
            Image.open(
                out / "figures" / f"{kind}_matching_matching_vs_non-matching-top.png"
            ).convert("RGB"),
            dtype=float,
        )
        # Coloured points or cells, not a blank rectangle.
        assert ((rgb.max(axis=2) - rgb.min(axis=2)) > 60).mean() > 0.0002, kind
    r = cli("report", out)
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "http" not in page.split("<body>")[1][:0]
    assert "SYNTH0001" in page and "Pairing units" in page
    assert 'src="http' not in page and 'href="http' not in page  # self-contained
    again = cli("compare", real_run, "--a", "stab", "--b", "top", "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_report_renders_in_chromium(real_run: Path, shared: Path, tmp_path: Path) -> None:
    from PIL import Image

    if shutil.which("chromium") is None:
        if os.environ.get("PERTURBSCORE_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium is required here (.ci/run installs it) but is missing")
        pytest.skip("Chromium is not installed")
    from perturbscore.compare_outputs import run_comparison
    from perturbscore.report import build_report

    run_comparison(
        real_run,
        tmp_path / "cmp",
        group_a="stab",
        group_b="top",
        designs=["matching"],
        pairing=[shared / "fine_mapping"],
    )
    page = build_report(tmp_path / "cmp")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert img.shape[:2] == (2400, 1200)
    # Rendered text, tables and coloured ECDF lines: far from a blank page.
    assert (img.mean(axis=2) < 128).mean() > 0.005
    colourful = (img.max(axis=2) - img.min(axis=2)) > 80
    assert colourful.mean() > 0.0005


@pytest.mark.parametrize("fmt", ["rds", "csv"])
def test_other_table_formats_compare_alike(
    real_run: Path, shared: Path, tmp_path: Path, fmt: str
) -> None:
    other = make_real_shaped_run(shared, tmp_path / fmt, fmt=fmt)
    a = compare_groups(real_run, "stab", "top").tests
    b = compare_groups(other, "stab", "top").tests
    pd.testing.assert_frame_equal(a, b)


# --- Issue 8 ---------------------------------------------------------------------------


def _oracle_ranks(shared: Path) -> dict[int, tuple[int, int]]:
    """Usable and matching units per rank, from the raw tables with plain pandas."""
    raw = pd.concat(
        [
            pd.read_csv(f, dtype=str, keep_default_na=False)
            for f in sorted((shared / "fine_mapping").glob("*.csv"))
        ]
    )
    out = {}
    for k in (1, 2, 3):
        s, t = raw[f"STAB_{k}"], raw[f"TOP_{k}"]
        ok = ~s.isin(["NA", ""]) & ~t.isin(["NA", ""])
        out[k] = (int(ok.sum()), int((ok & (s == t)).sum()))
    return out


def test_only_key_fields_decide_units(shared: Path) -> None:
    want = _oracle_ranks(shared)
    assert want[2][1] == 8197  # the study's count of matching units in potential set 2
    p = read_pairing([shared / "fine_mapping"], "STAB", "TOP", ["GENE", "rsID"])
    got = p.units.groupby("rank")["matching"].agg(["size", "sum"])
    assert {k: (int(r["size"]), int(r["sum"])) for k, r in got.iterrows()} == want
    unit = p.units.set_index("unit").loc["chr19_ENSG00000077312.2:2"]
    assert unit["matching"] and unit["a_VAR"] == "::"  # kept although VAR_HG19 is "::"
    # With ALT among the keys the unit has no allele: dropped, and the reason counted.
    d = read_pairing([shared / "fine_mapping"], "STAB", "TOP")
    assert "chr19_ENSG00000077312.2:2" not in set(d.units["unit"])
    assert d.dropped["ALT missing (NA or empty) on A's side"] == 1
    assert sum(d.dropped.values()) + len(d.units) == 3 * sum(
        len(pd.read_csv(f, usecols=["GENE"])) for f in (shared / "fine_mapping").glob("*.csv")
    )


def test_per_rank_tests_and_families(real_run: Path, shared: Path) -> None:
    from scipy import stats

    res = compare_groups(
        real_run,
        "stab",
        "top",
        designs=["paired", "matching"],
        pairing=[shared / "fine_mapping"],
        keys=["GENE", "rsID", "ALT"],
        per_rank=True,
        family="rank",
        memory=3 * 2**20,  # several blocks of tracks: results must not depend on it
    )
    t = res.tests
    assert set(t["rank"]) == {1, 2, 3} and len(t) == 3 * 3 * 4 * 2
    units = read_pairing([shared / "fine_mapping"], "STAB", "TOP").units
    stab = pd.read_parquet(real_run / "stab_abs_diff_tss.parquet")
    top = pd.read_parquet(real_run / "top_abs_diff_tss.parquet")
    keys = ["GENE", "rsID", "ALT"]
    nm = units[~units["matching"] & (units["rank"] == 2)]
    a = nm.merge(stab, left_on=["a_" + k for k in keys], right_on=keys, how="left")
    b = nm.merge(top, left_on=["b_" + k for k in keys], right_on=keys, how="left")
    d = (b["SYNTH0003"] - a["SYNTH0003"]).to_numpy()
    d = d[np.isfinite(d)]
    row = t.query(
        "design == 'paired' and rank == 2 and aggregation == 'tss' and identifier == 'SYNTH0003'"
    ).iloc[0]
    assert row["n_x"] == len(d)
    want = stats.wilcoxon(d, method="asymptotic", correction=True, alternative="greater")
    assert row["p_greater"] == pytest.approx(want.pvalue, rel=1e-9)
    # BH per (design, aggregation, statistic, rank), with an oracle written here.
    part = t[(t["design"] == "paired") & (t["rank"] == 2) & (t["aggregation"] == "tss")]
    p = part["p_two_sided"].to_numpy()
    order = np.argsort(p)
    adj = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1]
    want_adj = np.empty_like(p)
    want_adj[order] = np.minimum(adj, 1)
    np.testing.assert_allclose(part["p_adj_two_sided"], want_adj, rtol=1e-12)
    # Pooled ranks give the same as per rank on the units of all ranks.
    pooled = compare_groups(
        real_run, "stab", "top", designs=["paired"], pairing=[shared / "fine_mapping"]
    ).tests
    assert pooled["rank"].isna().all()


def test_parquet_dataset_folders_are_read(real_run: Path, tmp_path: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    run = tmp_path / "dask_like"
    shutil.copytree(real_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    for o in manifest["outputs"]:
        table = pq.read_table(run / o["path"])
        (run / o["path"]).unlink()
        folder = run / o["path"]  # OUT/<table>.parquet/part.000000.parquet ...
        folder.mkdir()
        step = 7001  # a prime: parts of uneven size
        for i, start in enumerate(range(0, table.num_rows, step)):
            pq.write_table(table.slice(start, step), folder / f"part.{i:06d}.parquet")
        assert isinstance(table, pa.Table)
    a = compare_groups(real_run, "stab", "top").tests
    b = compare_groups(run, "stab", "top").tests
    pd.testing.assert_frame_equal(a, b)


def test_column_meanings(tmp_path: Path, shared: Path, real_run: Path) -> None:
    res = compare_groups(
        real_run, "stab", "top", designs=["paired", "unpaired"], pairing=[shared / "fine_mapping"]
    ).tests
    paired = res[res["design"] == "paired"]
    assert (paired["n_x"] == paired["n_y"]).all() and paired["n_zero"].notna().all()
    assert res.loc[res["design"] == "unpaired", "n_zero"].isna().all()
    # A test that could not be run is not "exact".
    pair = tmp_path / "pairs.csv"
    stab = pd.read_csv(shared / "stab_snps_new_strand_final_variants.csv", dtype=str).iloc[:2]
    top = pd.read_csv(shared / "top_snps_new_strand_final_variants.csv", dtype=str).iloc[:2]
    pd.DataFrame(
        {
            "unit": ["u1", "u2"],
            "a_GENE": stab["GENE"],
            "a_rsID": stab["rsID"],
            "a_ALT": stab["ALT"],
            "b_GENE": [top["GENE"].iloc[0], "nope"],
            "b_rsID": [top["rsID"].iloc[0], "nope"],
            "b_ALT": [top["ALT"].iloc[0], "A"],
        }
    ).to_csv(pair, index=False)
    out = compare_groups(real_run, "stab", "top", designs=["paired"], pairing=[pair])
    assert not out.tests["exact"].any() and out.tests["p_two_sided"].isna().all()
    v = out.summary["units"]["variants"]
    assert v["non-matching top variants without a score row"] == 1


def test_heatmap_never_averages_statistics() -> None:
    from perturbscore import plots

    t = pd.DataFrame(
        {
            "identifier": ["T1", "T1"],
            "assay": "CHIP",
            "target": "H3K27ac",
            "biosample": "GM12878",
            "aggregation": "tss",
            "statistic": ["abs_diff", "diff"],
            "rank": pd.array([None, None], dtype="Int64"),
            "rank_biserial": [0.0476, -0.1348],
            "p_two_sided": [0.01, 0.02],
        }
    )
    fig = plots.heatmap_figure(t, "x")
    cells = np.asarray(fig.axes[0].images[0].get_array(), dtype=float)
    np.testing.assert_allclose(sorted(cells.ravel()), [-0.1348, 0.0476])
    assert "CHIP H3K27ac GM12878" in fig.axes[0].get_yticklabels()[0].get_text()
    with pytest.raises(ValueError, match="several tests per cell"):
        plots.heatmap_figure(pd.concat([t, t]), "x")


def test_tiny_p_values_are_printed_not_zero() -> None:
    from perturbscore.report import format_p

    assert format_p(0.0) == "< 1e-300" and format_p(1e-310) == "< 1e-300"
    assert format_p(0.01234) == "0.0123" and format_p(float("nan")) == "NA"


def test_empty_design_draws_nothing(tmp_path: Path, shared: Path, cli) -> None:
    from perturbscore.demo import run_demo

    run_demo(tmp_path / "demo", progress=False)
    out = tmp_path / "cmp"
    r = cli(
        "compare", tmp_path / "demo" / "results", "--a", "stab", "--b", "top",
        "--design", "unpaired", "--design", "matching",
        "--pairing", shared / "fine_mapping", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "design matching: no track could be tested" in r.stderr
    assert "none of the 67,931 pairing units has a variant" in r.stderr  # a warning here
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs and not [f for f in figs if "matching" in f]
    assert any(f.startswith("ecdf_unpaired") for f in figs)
    r = cli("report", out)
    assert "no track could be tested" in (out / "report.html").read_text()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from perturbscore.demo import run_demo

    folder = tmp_path_factory.mktemp("demo")
    run_demo(folder, progress=False)
    return folder


def test_demo_pairing_tries_every_design(demo_run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "cmp"
    r = cli(
        "-q", "compare", demo_run / "results", "--a", "stab", "--b", "top",
        "--design", "unpaired", "--design", "paired", "--design", "matching",
        "--pairing", demo_run / "pairing", "--per-rank", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(out / "tests.csv")
    assert t.groupby(["design", "rank"], dropna=False)["p_two_sided"].count().min() > 0
    assert not list(out.parent.glob(".cmp.*partial"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plot-track", "NOPE"], "--plot-track: NOPE not among"),
        (["--design", "paired", "--pairing", "EMPTY"], "has no .csv, .tsv or .txt table"),
        (["--design", "paired", "--pairing", "TOML"], "must be .csv, .tsv or .txt"),
        (["--b", "stab"], "--a and --b are both stab"),
        (["--xlim", "1", "0"], "--xlim 1 0: give the lower limit first"),
        (["--b", "to.p"], "group name 'to.p' is not allowed"),
        (["--memory", "lots"], "memory size 'lots' not understood"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    demo_run: Path, tmp_path: Path, cli, args: list[str], message: str
) -> None:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "x.toml").write_text("a = 1\n")
    args = [
        {"EMPTY": str(tmp_path / "EMPTY"), "TOML": str(tmp_path / "x.toml")}.get(a, a) for a in args
    ]
    out = tmp_path / "cmp"
    base = ["compare", demo_run / "results", "--a", "stab", "--b", "top", "--out", out]
    if "--b" in args:
        base = base[:4] + base[6:]
    r = cli(*base, *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and message in r.stderr, r.stderr
    assert r.stderr.startswith("perturbscore: error: ")
    assert not out.exists() and not list(tmp_path.glob(".cmp*"))


def test_bad_output_paths_exit_2(demo_run: Path, tmp_path: Path, cli) -> None:
    f = tmp_path / "file.csv"
    f.write_text("mine\n")
    r = cli("compare", demo_run / "results", "--a", "stab", "--b", "top", "--out", f)
    assert r.returncode == 2 and "is an existing file" in r.stderr
    assert f.read_text() == "mine\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    r = cli("compare", demo_run / "results", "--a", "stab", "--b", "top", "--out", other)
    assert r.returncode == 2 and "not a comparison folder" in r.stderr
    out = tmp_path / "cmp"
    assert cli("-q", "compare", demo_run / "results", "--a", "stab", "--b", "top",
               "--out", out).returncode == 0  # fmt: skip
    r = cli("report", out, "--out", tmp_path / "missing" / "r.html")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = cli("report", out, "--out", other)
    assert r.returncode == 2 and "is a folder" in r.stderr
    # --overwrite replaces what the earlier comparison wrote, and only that: its
    # report.html (which would describe tests that are gone) goes, with a warning; a
    # page of the user's own under that name stays.
    (out / "mine.txt").write_text("mine\n")
    assert cli("-q", "report", out).returncode == 0
    r = cli("compare", demo_run / "results", "--a", "stab", "--b", "top",
            "--track", "SYNTH0000", "--out", out, "--overwrite")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (out / "mine.txt").read_text() == "mine\n"
    assert not (out / "report.html").exists()
    assert "report.html described the earlier comparison" in r.stderr
    (out / "report.html").write_text("<html>my notes</html>\n")
    r = cli("-q", "compare", demo_run / "results", "--a", "stab", "--b", "top",
            "--track", "SYNTH0000", "--out", out, "--overwrite")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").read_text() == "<html>my notes</html>\n"
    assert {p.name.split("_")[2] for p in (out / "figures").glob("ecdf_*")} == {"SYNTH0000"}
    # A figure of the user's under the name of one drawn now, which the earlier
    # comparison did not write (its compare.json does not list it), is not replaced.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    mine = out / "figures" / "ecdf_unpaired_SYNTH0004_ave_abs_diff.png"
    mine.write_bytes(b"my own figure")
    r = cli("compare", demo_run / "results", "--a", "stab", "--b", "top",
            "--track", "SYNTH0004", "--out", out, "--overwrite")  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # refused before any test ran
    assert "figures/ecdf_unpaired_SYNTH0004_ave_abs_diff.png, which the earlier comparison" in (
        r.stderr
    )
    assert mine.read_bytes() == b"my own figure"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p != mine} == before


def test_missing_extra_gives_the_install_line(demo_run: Path, tmp_path: Path) -> None:
    import sys

    code = (
        "import sys; sys.modules['scipy'] = None; sys.modules['matplotlib'] = None\n"
        "from perturbscore.cli import main\n"
        f"sys.argv = ['perturbscore', 'compare', {str(demo_run / 'results')!r}, '--a', 'stab',"
        f" '--b', 'top', '--out', {str(tmp_path / 'cmp')!r}]\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pip install 'perturbscore[compare]'" in r.stderr
    assert not (tmp_path / "cmp").exists()


def test_axis_labels_and_clipped_points() -> None:
    from perturbscore import plots
    from perturbscore.compare_outputs import _axis_label

    assert _axis_label("SAD", "none", {"parameters": {"normalise": "zscore"}}) == (
        "SAD, z-score per track"
    )
    assert _axis_label("abs_diff", "tss", {}) == "abs_diff (tss)"
    t = pd.DataFrame(
        {
            "assay": ["CHIP", "DNASE"],
            "rank_biserial": [0.9, 0.1],
            "p_adj_two_sided": [0.0, 0.5],  # 0: underflow, drawn at 300 and marked
        }
    )
    fig = plots.overview_figure(t, "x")
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert "p < 1e-300 (drawn at 300)" in legend and "CHIP" in legend
    with pytest.raises(ValueError):
        plots.overview_figure(t.assign(p_adj_two_sided=np.nan), "x")


def test_track_metadata_from_the_manifest(real_run: Path, tmp_path: Path) -> None:
    import json

    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    m = json.loads((run / "manifest.json").read_text())
    for rec in m["tracks"]["selected"]:
        rec.update(assay="ASSAYX", target="TGT", biosample="CELL")
    (run / "manifest.json").write_text(json.dumps(m))
    t = compare_groups(run, "stab", "top").tests
    assert set(t["assay"]) == {"ASSAYX"} and set(t["biosample"]) == {"CELL"}


def test_block_size_never_changes_a_result(real_run: Path, shared: Path) -> None:
    from perturbscore.compare_tests import _COPIES_PER_VALUE, block_columns

    kw = dict(designs=["unpaired", "paired"], pairing=[shared / "fine_mapping"])
    rows = 35077 + 20007
    per_column = rows * 8 * _COPIES_PER_VALUE
    runs = [
        compare_groups(real_run, "stab", "top", memory=m, workers=w, **kw).tests
        for m, w in ((1, 1), (3 * per_column, 2), (2**40, 3))  # 1, 3 (a prime) and all
    ]
    assert block_columns(rows, 3 * per_column, 4) == 3
    for other in runs[1:]:
        pd.testing.assert_frame_equal(runs[0], other)


def test_missing_run_folder_is_named(tmp_path: Path, cli) -> None:
    r = cli("compare", tmp_path / "nope", "--a", "stab", "--b", "top", "--out", tmp_path / "c")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nope: run folder not found" in r.stderr and not (tmp_path / "c").exists()


def test_out_may_name_missing_folders(real_run: Path, tmp_path: Path, cli) -> None:
    """As run and normalise: missing folders are created, and removed if it fails."""
    out = tmp_path / "new" / "deeper" / "c"
    r = cli("-q", "compare", real_run, "--a", "stab", "--b", "top", "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "compare.json").is_file()
    bad = tmp_path / "other" / "c"
    r = cli("-q", "compare", real_run, "--a", "stab", "--b", "nope", "--out", bad)
    assert r.returncode == 2 and not (tmp_path / "other").exists(), r.stderr
