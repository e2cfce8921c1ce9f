"""The streaming run against the in-memory study recipe, formats and manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadr
import pytest

from perturbscore import RunOptions, load_run_file, run
from perturbscore.demo import demo_run_file
from perturbscore.tracks import selection_from_options

from .reference import float64_recipe, study_recipe

REPO = Path(__file__).resolve().parents[1]
NAMES = {(g, a): f"{g}_diff_{a}_relevant_comb" for g in ("stab", "top") for a in ("ave", "tss")}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


@pytest.mark.parametrize("chunk_rows", [1, 7, None])
def test_parity_with_the_study_recipe(study: Path, tmp_path: Path, chunk_rows: int | None) -> None:
    cfg = load_run_file(study / "stablefm.toml")
    out = tmp_path / "out"
    res = run(cfg, out, RunOptions(format="parquet", chunk_rows=chunk_rows, progress=False))
    assert res.chunk_rows == (chunk_rows or 53)  # "all": the largest batch in one block
    exact, study32 = float64_recipe(study), study_recipe(study)
    for key, stem in NAMES.items():
        got = _read(out / f"{stem}.parquet")
        want = exact[key]
        assert list(got.columns) == list(want.columns)
        assert len(got) == {"stab": 40 + 17, "top": 53 + 23}[key[0]]
        # Bit-identical to the float64 in-memory reference, whatever the block size...
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)
        # ...and equal to the study's float32 arithmetic to float32 precision.
        score_cols = want.columns[:-4]
        np.testing.assert_allclose(
            got[score_cols].to_numpy(), study32[key][score_cols].to_numpy(), rtol=2e-6, atol=2e-6
        )


def test_rows_are_old_then_new_batch(study: Path, tmp_path: Path) -> None:
    run(
        load_run_file(study / "stablefm.toml"),
        tmp_path / "o",
        RunOptions(format="parquet", progress=False),
    )
    got = _read(tmp_path / "o" / "top_diff_tss_relevant_comb.parquet")
    old = pd.read_csv(study / "top_snps_strand_final_variants.csv", dtype=str)
    new = pd.read_csv(study / "top_snps_new_strand_final_variants.csv", dtype=str)
    assert list(got["rsID"]) == list(old["rsID"]) + list(new["rsID"])


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_all_tracks_other_dtypes_and_statistics(study: Path, tmp_path: Path, dtype: type) -> None:
    for p in study.glob("final_*.npy"):
        np.save(p, np.load(p).astype(dtype))
    cfg = replace(
        load_run_file(study / "stablefm.toml"),
        tracks=selection_from_options(),
        aggregations=("tss", "ave", "window:1", "sum"),
        statistics=("abs_diff", "diff", "log2fc"),
        name="{group}_{statistic}_{aggregation}",
    )
    outs = {}
    for chunk in (1, 5, None):
        out = tmp_path / f"o{chunk}"
        run(cfg, out, RunOptions(format="parquet", chunk_rows=chunk, progress=False))
        outs[chunk] = {p.name: _read(p) for p in out.glob("*.parquet")}
    assert len(outs[None]) == 2 * 4 * 3
    for name, table in outs[None].items():
        for chunk in (1, 5):
            pd.testing.assert_frame_equal(outs[chunk][name], table, check_exact=True)
    ref = np.load(study / "final_ref_preds_stab_snps_new_strand.npy").astype(np.float64)
    alt = np.load(study / "final_alt_preds_stab_snps_new_strand.npy").astype(np.float64)
    got = outs[None]["stab_log2fc_sum.parquet"].iloc[40:, :42].to_numpy()
    np.testing.assert_array_equal(got, np.log2((alt.sum(1) + 1) / (ref.sum(1) + 1)))
    got = outs[None]["stab_diff_window1.parquet"].iloc[40:, :42].to_numpy()
    np.testing.assert_array_equal(got, alt[:, 0:3].mean(1) - ref[:, 0:3].mean(1))


def test_rdata_and_rds_round_trip(study: Path, tmp_path: Path) -> None:
    cfg = load_run_file(study / "stablefm.toml")
    run(cfg, tmp_path / "rdata", RunOptions(progress=False))
    run(cfg, tmp_path / "rds", RunOptions(format="rds", progress=False))
    run(cfg, tmp_path / "pq", RunOptions(format="parquet", progress=False))
    for stem in NAMES.values():
        want = _read(tmp_path / "pq" / f"{stem}.parquet")
        objs = pyreadr.read_r(tmp_path / "rdata" / f"{stem}.RData")
        assert list(objs) == [stem]
        for got in (objs[stem], pyreadr.read_r(tmp_path / "rds" / f"{stem}.rds")[None]):
            assert list(got.columns) == list(want.columns)
            pd.testing.assert_frame_equal(
                got.reset_index(drop=True), want, check_dtype=False, check_exact=True
            )


def _only_t_and_f(study: Path) -> None:
    for p in study.glob("*_final_variants.csv"):
        df = pd.read_csv(p, dtype=str)
        df["REF"], df["ALT"] = "T", "F"
        df.to_csv(p, index=False)


def test_t_and_f_alleles_stay_letters(study: Path, tmp_path: Path) -> None:
    _only_t_and_f(study)
    cfg = load_run_file(study / "stablefm.toml")
    for fmt in ("parquet", "rds", "rdata", "csv"):
        run(cfg, tmp_path / fmt, RunOptions(format=fmt, progress=False))
    pq = _read(tmp_path / "parquet" / "stab_diff_ave_relevant_comb.parquet")
    assert set(pq["REF"]) == {"T"} and set(pq["ALT"]) == {"F"}
    rds = pyreadr.read_r(tmp_path / "rds" / "stab_diff_ave_relevant_comb.rds")[None]
    assert set(rds["REF"]) == {"T"} and rds["REF"].map(type).eq(str).all()
    csv = (tmp_path / "csv" / "stab_diff_ave_relevant_comb.csv").read_text().splitlines()
    assert csv[1].endswith(",T,F")


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_r_itself_reads_strings_not_logicals(study: Path, tmp_path: Path) -> None:
    _only_t_and_f(study)
    cfg = load_run_file(study / "stablefm.toml")
    run(cfg, tmp_path / "rds", RunOptions(format="rds", progress=False))
    run(cfg, tmp_path / "rdata", RunOptions(progress=False))
    script = (
        f"x <- readRDS('{tmp_path}/rds/top_diff_tss_relevant_comb.rds');"
        f"load('{tmp_path}/rdata/top_diff_tss_relevant_comb.RData');"
        "y <- top_diff_tss_relevant_comb;"
        "cat(class(x), class(x$REF), class(x$ALT), unique(x$REF), unique(y$ALT), nrow(y), ncol(y),"
        " class(y[[1]]), sep=' ')"
    )
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "data.frame",
        "character",
        "character",
        "T",
        "F",
        "76",
        "25",
        "numeric",
    ]


def test_manifest(study: Path, tmp_path: Path) -> None:
    res = run(
        load_run_file(study / "stablefm.toml"),
        tmp_path / "o",
        RunOptions(format="parquet", progress=False, memory_bytes=64 * 2**20),
    )
    m = json.loads(res.manifest.read_text())
    assert m["parameters"]["memory_budget_bytes"] == 64 * 2**20
    assert m["parameters"]["aggregations"][1] == {"spec": "tss", "bins": [1, 2], "reduce": "mean"}
    assert m["tracks"]["count"] == 21 and m["tracks"]["selected"][0]["identifier"] == "SYNTH0000"
    assert [i["ref"]["shape"] for i in m["inputs"]] == [
        [40, 3, 42],
        [17, 3, 42],
        [53, 3, 42],
        [23, 3, 42],
    ]
    assert m["inputs"][0]["ref"]["dtype"] == "float32"
    assert m["inputs"][0]["variants"]["rows"] == 40
    assert {o["path"]: o["rows"] for o in m["outputs"]} == {
        "stab_diff_ave_relevant_comb.parquet": 57,
        "stab_diff_tss_relevant_comb.parquet": 57,
        "top_diff_ave_relevant_comb.parquet": 76,
        "top_diff_tss_relevant_comb.parquet": 76,
    }
    assert any("share an rsID" in w for w in m["warnings"])


def test_nan_propagate_carries_nan(study: Path, tmp_path: Path) -> None:
    p = study / "final_alt_preds_top_snps_new_strand.npy"
    arr = np.load(p)
    arr[3, 1, 0] = np.nan
    np.save(p, arr)
    res = run(
        load_run_file(study / "stablefm.toml"),
        tmp_path / "o",
        RunOptions(format="parquet", nan_policy="propagate", progress=False),
    )
    tss = _read(tmp_path / "o" / "top_diff_tss_relevant_comb.parquet")
    assert np.isnan(tss.iloc[53 + 3, 0]) and int(tss.iloc[:, :21].isna().sum().sum()) == 1
    assert any("(line 5 of " in w and "bin 1, track 0 (SYNTH0000)" in w for w in res.warnings)


def test_example_run_file_is_the_packaged_one() -> None:
    assert (REPO / "examples" / "stablefm.toml").read_text() == demo_run_file()
