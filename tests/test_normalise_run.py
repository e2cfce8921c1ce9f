"""``perturbscore normalise``: a run's tables against a background, end to end.

Oracles are numpy written here: the mid-rank quantile ``(#{b < x} + #{b <= x}) / 2n``
(signed: ``sign(x)`` times that of ``|x|`` among ``|b|``) and ``(x - median) /
(1.4826 MAD)`` over the background rows; backgrounds here have at most 2049 rows, where
the sketch is exact, except the one test that checks block-size independence of a
sketched background.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.demo import write_demo_dataset
from perturbscore.manifest import build_manifest, manifest_text
from perturbscore.normalise_files import save_backgrounds
from perturbscore.normalise_run import normalise_run
from perturbscore.normalise_sketch import BackgroundBuilder
from perturbscore.writers import open_writer

from .conftest import run_cli

TRACKS = ["T0", "T1", "T2"]


# --------------------------------------------------------------------------- oracles


def oracle_quantile(x: np.ndarray, b: np.ndarray, signed: bool) -> np.ndarray:
    """Mid-rank quantile of every x (``n S``) among its track's background b (``m S``)."""
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        ref = np.abs(b[:, j]) if signed else b[:, j]
        for i, v in enumerate(x[:, j]):
            a = abs(v) if signed else v
            q = ((ref < a).sum() + (ref <= a).sum()) / (2 * ref.size)
            out[i, j] = np.sign(v) * q if signed else q
    return out


def oracle_robust_z(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    med = np.median(b, axis=0)
    mad = np.median(np.abs(b - med), axis=0)
    return (x - med) / (1.4826 * mad)


# --------------------------------------------------------------------------- runs


def make_run(folder: Path, groups: dict[str, dict[str, np.ndarray]], fmt: str = "parquet") -> Path:
    """A run folder in the manifest schema: groups -> {"agg/stat": scores (n S)}."""
    folder.mkdir(parents=True)
    ext = {"parquet": ".parquet", "csv": ".csv", "rds": ".rds", "rdata": ".RData"}[fmt]
    outputs = []
    for g, tables in groups.items():
        for key, scores in tables.items():
            agg, stat = key.split("/")
            name = f"{g}_{stat}_{agg}"
            ids = pd.DataFrame(
                {"rsID": [f"rs{g}{i}" for i in range(len(scores))], "ALT": ["A"] * len(scores)}
            )
            w = open_writer(fmt, folder / f"{name}{ext}", TRACKS, ["rsID", "ALT"], name, len(ids))
            w.write(scores, ids)
            w.commit()
            outputs.append(
                {
                    "group": g,
                    "aggregation": agg,
                    "statistic": stat,
                    "path": f"{name}{ext}",
                    "object": name,
                    "rows": len(scores),
                    "columns": 5,
                }
            )
    tracks = pd.DataFrame(
        {
            "index": range(3),
            "identifier": TRACKS,
            "description": [f"DNASE:cell{i}" for i in range(3)],
        }
    )
    m = build_manifest(
        source="run",
        run_file=None,
        parameters={"format": fmt},
        targets={},
        selection={},
        tracks=tracks,
        inputs=[],
        outputs=outputs,
        warnings=[],
    )
    (folder / "manifest.json").write_text(manifest_text(m))
    return folder


def synthetic(n_bg: int = 60, n_top: int = 45, seed: int = 3) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    bg_diff = rng.normal(0, 1, (n_bg, 3)).round(2)  # rounding makes ties
    top_diff = rng.normal(0.3, 1.2, (n_top, 3)).round(2)
    return {
        "stab": {"ave/abs_diff": np.abs(bg_diff), "ave/diff": bg_diff},
        "top": {"ave/abs_diff": np.abs(top_diff), "ave/diff": top_diff},
    }


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"rsID": str, "ALT": str})
    import pyreadr

    return next(iter(pyreadr.read_r(str(path)).values()))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset run to Parquet with abs_diff and diff."""
    folder = tmp_path_factory.mktemp("demo")
    write_demo_dataset(folder)
    toml = folder / "stablefm.toml"
    text = toml.read_text().replace(
        'statistics = ["abs_diff"]', 'statistics = ["abs_diff", "diff"]'
    )
    toml.write_text(
        text.replace(
            "{group}_diff_{aggregation}_relevant_comb", "{group}_{statistic}_{aggregation}"
        )
    )
    r = run_cli("-q", "run", toml, "--out", folder / "results", "--format", "parquet")
    assert r.returncode == 0, r.stderr
    return folder / "results"


# --------------------------------------------------------------------------- values


def test_demo_run_against_numpy_oracle(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "norm"
    r = run_cli("-q", "normalise", demo_run, "--background", "stab", "--out", out)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    run_m = json.loads((demo_run / "manifest.json").read_text())
    tracks = [t["identifier"] for t in run_m["tracks"]["selected"]]
    assert m["tracks"]["selected"] == run_m["tracks"]["selected"]
    assert len(m["outputs"]) == 2 * len(run_m["outputs"])
    assert r.stdout.split() == [str(out / o["path"]) for o in m["outputs"]] + [
        str(out / "manifest.json")
    ]
    raw = {
        (o["group"], o["aggregation"], o["statistic"]): demo_run / o["path"]
        for o in run_m["outputs"]
    }
    for o in m["outputs"]:
        src = pd.read_parquet(raw[(o["group"], o["aggregation"], o["raw_statistic"])])
        bg = pd.read_parquet(raw[("stab", o["aggregation"], o["raw_statistic"])])
        got = pd.read_parquet(out / o["path"])
        assert o["path"] == f"{o['group']}_{o['statistic']}_{o['aggregation']}.parquet"
        assert o["statistic"] == f"{o['raw_statistic']}_{o['normalised']}"
        assert list(got.columns) == list(src.columns)
        pd.testing.assert_frame_equal(got.drop(columns=tracks), src.drop(columns=tracks))
        x, b = src[tracks].to_numpy(), bg[tracks].to_numpy()
        # The background leaves out rows that measure nothing (all scores exactly 0:
        # the demo's variants outside Enformer's input).
        b = b[~(b == 0).all(axis=1)]
        want = (
            oracle_quantile(x, b, signed=o["raw_statistic"] == "diff")
            if o["normalised"] == "quantile"
            else oracle_robust_z(x, b)
        )
        np.testing.assert_allclose(got[tracks].to_numpy(), want, rtol=1e-12, atol=1e-15)
    entries = m["parameters"]["background"]["entries"]
    stab = pd.concat(
        [
            pd.read_csv(demo_run.parent / f)
            for f in (
                "stab_snps_strand_final_variants.csv",
                "stab_snps_new_strand_final_variants.csv",
            )
        ]
    )
    seen = int(((stab["variant_pos_in_window"] - 196_608).abs() <= 98_304).sum())
    assert {(e["aggregation"], e["statistic"], e["n"], e["mode"]) for e in entries} == {
        (a, s, seen, "exact") for a in ("ave", "tss") for s in ("abs_diff", "diff")
    }
    assert m["parameters"]["max_rank_error"] == 0.0
    assert m["parameters"]["mad_scale"] == 1.4826


def test_all_zero_and_nan_rows_left_out_of_background(tmp_path: Path) -> None:
    groups = synthetic()
    stab = groups["stab"]["ave/abs_diff"]
    stab[[2, 7, 11]] = 0.0  # REF == ALT rows
    stab[4, 1] = np.nan
    stab[9, 0] = 0.0  # one zero is not an all-zero row
    run = make_run(tmp_path / "run", groups)
    res = normalise_run(run, tmp_path / "out", background="stab")
    assert res.excluded[("ave", "abs_diff")] == {
        "rows": 60,
        "used": 56,
        "outside_input": 0,
        "all_zero": 3,
        "non_finite": 1,
    }
    keep = np.ones(60, bool)
    keep[[2, 4, 7, 11]] = False
    got = pd.read_parquet(tmp_path / "out" / "top_abs_diff_quantile_ave.parquet")[TRACKS]
    top = groups["top"]["ave/abs_diff"]
    np.testing.assert_allclose(got.to_numpy(), oracle_quantile(top, stab[keep], False), rtol=1e-12)
    own = pd.read_parquet(tmp_path / "out" / "stab_abs_diff_robust_z_ave.parquet")[TRACKS]
    np.testing.assert_allclose(own.to_numpy(), oracle_robust_z(stab, stab[keep]), rtol=1e-12)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = next(
        e for e in m["parameters"]["background"]["entries"] if e["statistic"] == "abs_diff"
    )
    assert entry["background_rows"]["all_zero"] == 3 and entry["n"] == 56
    assert "exactly 0" in m["parameters"]["background"]["rule"]


@pytest.mark.parametrize("fmt", ["csv", "rds", "rdata"])
def test_every_input_format_gives_the_parquet_values(tmp_path: Path, fmt: str) -> None:
    ref = normalise_run(make_run(tmp_path / "p", synthetic()), tmp_path / "po", background="stab")
    run = make_run(tmp_path / fmt, synthetic(), fmt=fmt)
    res = normalise_run(run, tmp_path / f"{fmt}o", background="stab")
    assert [p.suffix for p in res.tables] == [{"csv": ".csv", "rds": ".rds"}.get(fmt, ".RData")] * 8
    for a, b in zip(ref.tables, res.tables, strict=True):
        want, got = read(a), read(b)
        np.testing.assert_array_equal(got[TRACKS].to_numpy(), want[TRACKS].to_numpy())
        assert list(got["rsID"]) == list(want["rsID"])


def test_saved_background_gives_identical_tables(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", synthetic())
    bg = tmp_path / "bg.npz"
    r = run_cli(
        "normalise", run, "--background", "stab", "--out", tmp_path / "a", "--save-background", bg
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == str(bg) and bg.is_file()
    r = run_cli("normalise", run, "--background-file", bg, "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert mb["parameters"]["background"]["file"] == str(bg)
    for o in ma["outputs"]:
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "a" / o["path"]), pd.read_parquet(tmp_path / "b" / o["path"])
        )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_killed_save_of_the_background_is_swept_by_the_next(tmp_path: Path) -> None:
    # --save-background writes beside the user's files, outside --out: only the
    # leftovers of that one file's dead writers are removed there, nothing else.
    import subprocess
    import sys

    run = make_run(tmp_path / "run", synthetic())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    left = tmp_path / f".bg.npz.perturbscore-{dead}.partial"
    left.mkdir()
    (left / "bg.npz").write_bytes(b"half a background")
    other = tmp_path / f".mine.npz.perturbscore-{dead}.partial"  # another file's: not this save's
    other.write_text("keep")
    r = run_cli(
        "normalise", run, "--background", "stab", "--out", tmp_path / "a",
        "--save-background", tmp_path / "bg.npz",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not left.exists() and other.read_text() == "keep"


def test_chunk_rows_never_change_results(tmp_path: Path) -> None:
    # 2100 background rows: more than the 2049-point grid, so the sketch is used.
    groups = synthetic(n_bg=2100, n_top=30)
    run = make_run(tmp_path / "run", groups)
    results = {}
    for rows in (1, 7, None):
        res = normalise_run(run, tmp_path / f"o{rows}", background="stab", block_rows=rows)
        results[rows] = [p.read_bytes() for p in res.tables]
    assert res.backgrounds[("ave", "abs_diff")].mode == "grid"
    assert results[1] == results[7] == results[None]
    tiny = normalise_run(run, tmp_path / "mem", background="stab", memory_bytes=40 * 2**20)
    assert [p.read_bytes() for p in tiny.tables] == results[None]


def test_compare_runs_on_the_output(tmp_path: Path) -> None:
    """The study's own flow: the demo (RData tables), normalised, then compared."""
    demo = tmp_path / "demo"
    assert run_cli("-q", "demo", demo).returncode == 0
    out = tmp_path / "norm"
    r = run_cli("-q", "normalise", demo / "results", "--background", "stab", "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir())[:2] == [
        "manifest.json",
        "stab_abs_diff_quantile_ave.RData",
    ]
    r = run_cli("compare", out, "--a", "stab", "--b", "top", "--out", tmp_path / "cmp")
    assert r.returncode == 0, r.stderr
    tests = pd.read_csv(tmp_path / "cmp" / "tests.csv")
    assert set(tests["statistic"]) == {"abs_diff_quantile", "abs_diff_robust_z"}
    q = next(
        iter(__import__("pyreadr").read_r(str(out / "top_abs_diff_quantile_tss.RData")).values())
    )
    assert q.select_dtypes("number").to_numpy().min() >= 0
    assert q.select_dtypes("number").to_numpy().max() <= 1


def test_overwrite_replaces_and_statistic_chooses(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", synthetic())
    out = tmp_path / "out"
    assert run_cli("normalise", run, "--background", "top", "--out", out).returncode == 0
    r = run_cli(
        "normalise",
        run,
        "--background",
        "stab",
        "--out",
        out,
        "--overwrite",
        "--statistic",
        "robust_z",
        "--format",
        "csv",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert {o["normalised"] for o in m["outputs"]} == {"robust_z"}
    assert all(o["path"].endswith("_robust_z_ave.csv") for o in m["outputs"])


# --------------------------------------------------------------------------- errors


def _bg_file(path: Path, tracks: list[str], keys: list[tuple[str, str]]) -> Path:
    items = []
    for agg, stat in keys:
        b = BackgroundBuilder(tracks, agg, stat)
        b.update(np.arange(10.0 * len(tracks)).reshape(10, -1))
        items.append(b.finish())
    return save_backgrounds(path, items)


ERRORS = {
    "no run folder": (lambda t, run: [t / "nope", "--background", "stab"], "run folder not found"),
    "no manifest": (lambda t, run: [t, "--background", "stab"], "no manifest.json"),
    "unknown group": (lambda t, run: [run, "--background", "mid"], "not a group of"),
    "unsafe group": (lambda t, run: [run, "--background", "../x"], "is not allowed"),
    "both sources": (
        lambda t, run: [run, "--background", "stab", "--background-file", t / "b.npz"],
        "exactly one of",
    ),
    "no source": (lambda t, run: [run], "exactly one of"),
    "out is run": (lambda t, run: [run, "--background", "stab", "--out", run], "run folder itself"),
    "missing entries": (
        lambda t, run: [run, "--background-file", _bg_file(t / "b.npz", TRACKS, [("ave", "diff")])],
        "no table for ave/abs_diff",
    ),
    "other tracks": (
        lambda t, run: [
            run,
            "--background-file",
            _bg_file(t / "b.npz", ["X", "Y", "Z"], [("ave", "diff"), ("ave", "abs_diff")]),
        ],
        "tracks are not the run's",
    ),
    "save with file": (
        lambda t, run: [
            run,
            "--background-file",
            _bg_file(t / "b.npz", TRACKS, [("ave", "diff"), ("ave", "abs_diff")]),
            "--save-background",
            t / "c.npz",
        ],
        "--save-background saves",
    ),
    "save exists": (
        lambda t, run: [run, "--background", "stab", "--save-background", run / "manifest.json"],
        "ends in .npz",
    ),
    "memory": (lambda t, run: [run, "--background", "stab", "--memory", "1000"], "too small"),
    "chunk rows": (lambda t, run: [run, "--background", "stab", "--chunk-rows", "0"], "positive"),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_exit_2_and_write_nothing(tmp_path: Path, case: str) -> None:
    run = make_run(tmp_path / "run", synthetic(n_bg=5, n_top=4))
    make_args, message = ERRORS[case]
    args = make_args(tmp_path, run)
    if "--out" not in args:
        args += ["--out", tmp_path / "out"]
    before = _snapshot(tmp_path)
    r = run_cli("normalise", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before


def test_existing_outputs_and_files_are_not_touched(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", synthetic(n_bg=5, n_top=4))
    as_file = tmp_path / "file"
    as_file.write_text("mine")
    r = run_cli("normalise", run, "--background", "stab", "--out", as_file)
    assert r.returncode == 2 and "existing file" in r.stderr and as_file.read_text() == "mine"
    out = tmp_path / "out"
    out.mkdir()
    (out / "top_diff_quantile_ave.parquet").write_text("mine")
    saved = tmp_path / "bg.npz"
    saved.write_text("mine")
    # The user's table: no earlier normalise wrote it (so --overwrite is not advised);
    # the user's background file: it exists (refused first).
    for extra, said in (([], "which no earlier 'perturbscore normalise' wrote there"),
                        (["--save-background", saved], "already")):  # fmt: skip
        r = run_cli("normalise", run, "--background", "stab", "--out", out, *extra)
        assert r.returncode == 2 and said in r.stderr, r.stderr
        assert sorted(os.listdir(out)) == ["top_diff_quantile_ave.parquet"]
        assert (out / "top_diff_quantile_ave.parquet").read_text() == "mine"
        assert saved.read_text() == "mine"


def test_failure_during_work_leaves_nothing(tmp_path: Path) -> None:
    """A table that no longer matches its manifest fails mid-work: nothing is published."""
    run = make_run(tmp_path / "run", synthetic(n_bg=5, n_top=4), fmt="csv")
    table = run / "top_diff_ave.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer than the manifest says
    r = run_cli(
        "normalise",
        run,
        "--background",
        "stab",
        "--out",
        tmp_path / "out",
        "--save-background",
        tmp_path / "bg.npz",
    )
    assert r.returncode == 2 and "3 rows but the manifest says 4" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "bg.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    shutil.rmtree(run)


def test_import_scores_shaped_run(tmp_path: Path) -> None:
    """Aggregation "none" and a statistic perturbscore does not compute (SAD): signed."""
    rng = np.random.default_rng(5)
    bg, top = rng.normal(0, 1, (30, 3)), rng.normal(0, 1, (20, 3))
    top[0] = 0.0
    run = make_run(tmp_path / "run", {"stab": {"none/SAD": bg}, "top": {"none/SAD": top}})
    res = normalise_run(run, tmp_path / "out", background="stab", statistics=["quantile"])
    assert [p.name for p in res.tables] == ["stab_SAD_quantile.parquet", "top_SAD_quantile.parquet"]
    got = pd.read_parquet(res.tables[1])[TRACKS].to_numpy()
    np.testing.assert_allclose(got, oracle_quantile(top, bg, signed=True), rtol=1e-12)
    assert (got[0] == 0).all() and res.backgrounds[("none", "SAD")].signed


def test_names_that_would_clash_are_refused(tmp_path: Path) -> None:
    scores = np.ones((3, 3))
    run = make_run(tmp_path / "run", {"a_b": {"ave/diff": scores}, "a": {"ave/b_diff": scores}})
    r = run_cli("normalise", run, "--background", "a", "--out", tmp_path / "out")
    assert r.returncode == 2 and "a_b_diff_quantile_ave.parquet" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("policy", ["keep", "na"])
def test_class_column_leaves_out_of_field_rows_out(tmp_path: Path, policy: str) -> None:
    """A run with geometry and a class column: its outside_input rows are left out."""
    from .test_run_geometry import _oracle_classes, write_geometry_study

    run_file = write_geometry_study(tmp_path / "g")
    text = run_file.read_text().replace(
        '[output]\nformat = "parquet"\n', '[output]\nformat = "parquet"\nclass_column = "field"\n'
    )
    run_file.write_text(text)
    r = run_cli("-q", "run", run_file, "--out", tmp_path / "o", "--out-of-field", policy)
    assert r.returncode == 0, r.stderr
    res = normalise_run(tmp_path / "o", tmp_path / "n", background="stab")
    out = _oracle_classes(run_file.parent, "stab") == 0
    assert out.any()
    for key, ex in res.excluded.items():
        assert ex == {
            "rows": out.size,
            "used": int((~out).sum()),
            "outside_input": int(out.sum()),
            "all_zero": 0,
            "non_finite": 0,
        }, key
    tracks = [f"G{i}" for i in range(5)]
    raw = pd.read_parquet(tmp_path / "o" / "stab_abs_diff_tss.parquet")
    top = pd.read_parquet(tmp_path / "o" / "top_abs_diff_tss.parquet")
    got = pd.read_parquet(tmp_path / "n" / "top_abs_diff_quantile_tss.parquet")
    assert list(got["field"]) == list(top["field"])
    b = raw[tracks].to_numpy()[~out]
    want = oracle_quantile(np.nan_to_num(top[tracks].to_numpy()), b, signed=False)
    want[top[tracks].isna().to_numpy()] = np.nan
    np.testing.assert_allclose(got[tracks].to_numpy(), want, rtol=1e-12)
    m = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert m["geometry"]["class_column"] == "field"


def test_a_file_that_is_no_background_and_a_small_budget_are_sentences(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path / "run", synthetic())
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    r = run_cli("normalise", run, "--background-file", notes, "--out", tmp_path / "a")
    assert r.returncode == 2 and "notes.txt is not a background file" in r.stderr
    assert "allow_pickle" not in r.stderr and not (tmp_path / "a").exists()
    r = run_cli(
        "normalise", run, "--background", "stab", "--out", tmp_path / "b", "--memory", "1KB"
    )
    assert r.returncode == 2 and "raise --memory to" in r.stderr and "MiB or more" in r.stderr
    assert not (tmp_path / "b").exists()


def test_a_background_spread_of_rounding_is_named_on_stderr_and_in_the_manifest(
    tmp_path: Path,
) -> None:
    """Most background rows differ only by float32 rounding on T1: robust_z divides by it."""
    rng = np.random.default_rng(5)
    ulp = float(np.spacing(np.float32(0.5)))
    bg = np.abs(rng.normal(0, 1, (60, 3)))
    bg[:, 1] = rng.integers(0, 3, 60) * ulp
    bg[:3, 1] = [0.4, 0.3, 0.2]
    top = np.abs(rng.normal(0, 1, (20, 3)))
    run = make_run(tmp_path / "run", {"stab": {"ave/abs_diff": bg}, "top": {"ave/abs_diff": top}})
    out = tmp_path / "out"
    r = run_cli("normalise", run, "--background", "stab", "--out", out)
    assert r.returncode == 0, r.stderr
    mad = np.median(np.abs(bg[:, 1] - np.median(bg[:, 1])))  # numpy oracle
    expected = (
        "robust_z: 1 of 3 tracks of background stab ave/abs_diff have a MAD below 2^-20 of "
        f"their largest background score (e.g. T1: MAD {mad:.3g}, largest 0.4)"
    )
    assert sum(expected in line for line in r.stderr.splitlines()) == 1, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [w for w in manifest["warnings"] if expected in w]
    # quantile alone divides by nothing: no warning
    r = run_cli(
        "normalise", run, "--background", "stab", "--statistic", "quantile", "--out", tmp_path / "q"
    )
    assert r.returncode == 0 and "MAD" not in r.stderr, r.stderr


@pytest.mark.parametrize("when", ["before the commit", "after the commit"])
def test_a_save_background_file_that_appears_meanwhile_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Another program writes the --save-background name while normalise runs: its file
    stays; before the commit nothing is published, after it the tables stay and the
    message says so."""
    from perturbscore import normalise_run as nr
    from perturbscore.errors import PerturbscoreError

    run = make_run(tmp_path / "run", synthetic(n_bg=8, n_top=5))
    saved, out = tmp_path / "bg.npz", tmp_path / "out"
    if when == "before the commit":
        real_save = nr.save_backgrounds

        def save(*args: object) -> None:
            saved.write_text("theirs")
            real_save(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(nr, "save_backgrounds", save)
    else:
        real_run = nr.Commit.run

        def commit_run(self: object, *args: object) -> None:
            real_run(self, *args)  # type: ignore[arg-type]
            saved.write_text("theirs")

        monkeypatch.setattr(nr.Commit, "run", commit_run)
    with pytest.raises(PerturbscoreError, match="it appeared while normalise ran") as err:
        normalise_run(run, out, background="stab", save_background=saved)
    assert saved.read_text() == "theirs"
    left = sorted(p.name for p in tmp_path.iterdir())  # no staged copy left beside it
    if when == "before the commit":
        assert left == ["bg.npz", "run"]
    else:
        assert left == ["bg.npz", "out", "run"] and "The tables in" in str(err.value)
        assert len(list(out.glob("*.parquet"))) == 8 and (out / "manifest.json").is_file()
