"""Group comparisons end to end: real pairing tables, synthetic scores, figures, report."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.compare import compare_groups, read_pairing
from perturbscore.errors import PerturbscoreError
from perturbscore.stats import rank_sum, signed_rank

from .compare_data import make_real_shaped_run


@pytest.fixture(scope="module")
def real_run(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_real_shaped_run(shared, tmp_path_factory.mktemp("real"))


def test_pairing_table_shape(shared: Path) -> None:
    units = read_pairing([shared / "fine_mapping" / "chr22_all_pp_max.csv"], "STAB", "TOP")
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
    same = (raw["STAB_1"] == raw["TOP_1"]) & (raw["STAB_1_VAR_HG19"] == raw["TOP_1_VAR_HG19"])
    assert units[units["rank"] == 1]["matching"].sum() == same.sum()


def test_end_to_end_join_split_and_counts(real_run: Path, shared: Path) -> None:
    res = compare_groups(
        real_run,
        "stab",
        "top",
        designs=["unpaired", "paired", "matching"],
        pairing=[shared / "fine_mapping"],
    )
    units = read_pairing([shared / "fine_mapping"], "STAB", "TOP")
    # Independent oracle: join by (GENE, rsID, ALT) with pandas merges.
    stab = pd.read_parquet(real_run / "stab_abs_diff_tss.parquet")
    top = pd.read_parquet(real_run / "top_abs_diff_tss.parquet")
    keys = ["GENE", "rsID", "ALT"]
    nm = units[~units["matching"]]
    a = nm.merge(stab, left_on=["a_" + k for k in keys], right_on=keys, how="left")
    b = nm.merge(top, left_on=["b_" + k for k in keys], right_on=keys, how="left")
    d = (b["SYNTH0001"] - a["SYNTH0001"]).to_numpy()
    want = signed_rank(d[:, None])
    row = res.tests.query(
        "design == 'paired' and aggregation == 'tss' and identifier == 'SYNTH0001'"
    ).iloc[0]
    assert (
        row["n_x"] == np.isfinite(d).sum() == res.summary["units"]["non_matching_with_both_scores"]
    )
    assert row["p_two_sided"] == pytest.approx(want.p_two_sided[0], rel=1e-12)
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
    assert urow["p_less"] == pytest.approx(rank_sum(ub[:, None], ua[:, None]).p_less[0], rel=1e-12)
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
        (dict(group_b="nope"), "group 'nope' is not in the run"),
        (dict(tracks=["SYNTH0009"]), r"tracks \['SYNTH0009'\] are not in the run"),
        (dict(designs=["paired"]), "need --pairing tables"),
        (
            dict(designs=["paired"], keys=["GENE", "Variant"], pairing="PAIR"),
            r"pairing tables give no value for key\(s\) \['Variant'\]",
        ),
        (
            dict(designs=["paired"], keys=["GENE", "VAR"], pairing="PAIR"),
            r"pairing keys \['VAR'\] are not columns of the score table",
        ),
        (
            dict(designs=["paired"], pairing="PAIR", b_prefix="TOPX"),
            r"pairing columns \['TOPX_1'\] are missing",
        ),
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
    assert r.stdout.strip() == str(out / "tests.csv")
    tests = pd.read_csv(out / "tests.csv")
    assert len(tests) == 2 * 4 * 3
    from PIL import Image

    png = out / "figures" / "ecdf_SYNTH0001_tss_abs_diff.png"
    img = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert img.shape[0] > 300 and img.shape[1] > 400
    # An empty plot is almost all white; three ECDF lines and axes are not.
    assert (img < 200).mean() > 0.01
    assert "non-matching top" in (out / "figures" / "ecdf_SYNTH0001_tss_abs_diff.svg").read_text()
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
    from perturbscore.report import build_report, run_comparison

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
