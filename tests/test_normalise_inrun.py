"""``[normalise]`` in a run file: normalised statistics computed inside ``perturbscore run``.

The expected values are those of ``perturbscore normalise --background-file`` applied to
the plain run's tables (itself checked against numpy oracles in test_normalise_run.py),
and, for one table, a numpy mid-rank oracle written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.demo import write_demo_dataset
from perturbscore.normalise_files import save_backgrounds
from perturbscore.normalise_sketch import BackgroundBuilder

from .conftest import run_cli


def _run_file(folder: Path, name: str, normalise: str | None, template: str | None = None) -> Path:
    """The demo's run file as Parquet, abs_diff and diff, default name template, plus a
    ``[normalise]`` section (TOML text) when given."""
    text = (folder / "stablefm.toml").read_text()
    text = text.replace('statistics = ["abs_diff"]', 'statistics = ["abs_diff", "diff"]')
    text = text.replace('format = "rdata"', 'format = "parquet"')
    text = text.replace(
        'name = "{group}_diff_{aggregation}_relevant_comb"',
        f'name = "{template or "{group}_{statistic}_{aggregation}"}"',
    )
    if normalise is not None:
        text = text.replace("[geometry]", f"[normalise]\n{normalise}\n\n[geometry]", 1)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, its plain run, the background of group stab saved from it, and
    ``perturbscore normalise --background-file`` of the plain run."""
    folder = tmp_path_factory.mktemp("inrun")
    write_demo_dataset(folder)
    plain = _run_file(folder, "plain", None)
    r = run_cli("-q", "run", plain, "--out", folder / "plain")
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "-q", "normalise", folder / "plain", "--background", "stab",
        "--out", folder / "by-group", "--save-background", folder / "bg.npz",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli(
        "-q", "normalise", folder / "plain", "--background-file", folder / "bg.npz",
        "--out", folder / "by-file",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return folder


def _tracks(run: Path) -> list[str]:
    m = json.loads((run / "manifest.json").read_text())
    return [t["identifier"] for t in m["tracks"]["selected"]]


@pytest.mark.parametrize("chunk", ["1", "13", "200"])  # 200: each batch in one block
def test_in_run_values_are_those_of_the_normalise_command(demo: Path, chunk: str) -> None:
    toml = _run_file(demo, f"norm{chunk}", 'background = "bg.npz"')
    out = demo / f"inrun{chunk}"
    r = run_cli("-q", "run", toml, "--out", out, "--chunk-rows", chunk)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    tracks = _tracks(out)
    by_file = json.loads((demo / "by-file" / "manifest.json").read_text())
    expected, got = (
        {(o["group"], o["aggregation"], o["statistic"]): o["path"] for o in x["outputs"]}
        for x in (by_file, m)
    )
    assert set(expected) < set(got) and len(got) == 3 * len(expected) // 2
    for key, name in expected.items():
        assert got[key] == name  # same file names as the normalise command writes
        want, have = pd.read_parquet(demo / "by-file" / name), pd.read_parquet(out / name)
        pd.testing.assert_frame_equal(have.drop(columns=tracks), want.drop(columns=tracks))
        np.testing.assert_allclose(
            have[tracks].to_numpy(), want[tracks].to_numpy(), rtol=1e-12, atol=0, equal_nan=True
        )
    for o in json.loads((demo / "plain" / "manifest.json").read_text())["outputs"]:
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / o["path"]), pd.read_parquet(demo / "plain" / o["path"])
        )
    norm = m["normalise"]
    assert norm["statistics"] == ["quantile", "robust_z"] and norm["mad_scale"] == 1.4826
    assert {(e["aggregation"], e["statistic"]) for e in norm["entries"]} == {
        (a, s) for a in ("ave", "tss") for s in ("abs_diff", "diff")
    }
    # One table against a numpy oracle: mid-rank quantiles of top's tss/diff among the
    # background group's rows that measure something (not all exactly 0).
    x = pd.read_parquet(demo / "plain" / "top_diff_tss.parquet")[tracks].to_numpy()
    b = pd.read_parquet(demo / "plain" / "stab_diff_tss.parquet")[tracks].to_numpy()
    b = np.abs(b[~(b == 0).all(axis=1)])
    a = np.abs(x)
    want_q = np.sign(x) * (
        ((b[None, :, :] < a[:, None, :]).sum(1) + (b[None, :, :] <= a[:, None, :]).sum(1))
        / (2 * len(b))
    )
    have_q = pd.read_parquet(out / "top_diff_quantile_tss.parquet")[tracks].to_numpy()
    np.testing.assert_allclose(have_q, want_q, rtol=1e-12, atol=1e-15)


def test_out_of_field_na_and_normalising_the_run_again(demo: Path) -> None:
    """NaN rows (--out-of-field na) stay NaN alike; ``normalise`` of a run that holds
    normalised tables already normalises only its raw tables, to the same values."""
    toml = _run_file(demo, "norm-na", 'background = "bg.npz"')
    out = demo / "inrun-na"
    r = run_cli("-q", "run", toml, "--out", out, "--out-of-field", "na")
    assert r.returncode == 0, r.stderr
    again = demo / "again-na"
    r = run_cli("-q", "normalise", out, "--background-file", demo / "bg.npz", "--out", again)
    assert r.returncode == 0, r.stderr
    m = json.loads((again / "manifest.json").read_text())
    assert len(m["outputs"]) == 16  # 2 groups x 2 aggregations x 2 raw x 2 normalised
    nans = 0
    for o in m["outputs"]:
        want, have = pd.read_parquet(again / o["path"]), pd.read_parquet(out / o["path"])
        pd.testing.assert_frame_equal(have, want, rtol=1e-12)
        nans += int(have.isna().to_numpy().sum())
    assert nans > 0


def _background(path: Path, tracks: list[str], keys: list[tuple[str, str]]) -> str:
    rng = np.random.default_rng(2)
    items = []
    for agg, stat in keys:
        b = BackgroundBuilder(tracks, agg, stat)
        b.update(np.abs(rng.standard_normal((20, len(tracks)))))
        items.append(b.finish())
    save_backgrounds(path, items)
    return path.name


def _all_keys() -> list[tuple[str, str]]:
    return [(a, s) for a in ("ave", "tss") for s in ("abs_diff", "diff")]


ONE = [("ave", "abs_diff")]

ERRORS = {
    "missing file": (lambda d: 'background = "nope.npz"', "background file not found"),
    "not npz": (lambda d: 'background = "bg.csv"', "does not end in .npz"),
    "folder": (lambda d: 'background = "plain.npz"', "is a folder"),
    "no background key": (lambda d: 'statistics = ["quantile"]', "background is missing"),
    "typo": (lambda d: 'backgrond = "bg.npz"', "did you mean background"),
    "unknown statistic": (
        lambda d: 'background = "bg.npz"\nstatistics = ["zscore"]',
        "not one of quantile or robust_z",
    ),
    "other tracks": (
        lambda d: f'background = "{_background(d / "other.npz", ["X", "Y"], _all_keys())}"',
        "tracks are not the run's",
    ),
    "missing entries": (
        lambda d: f'background = "{_background(d / "part.npz", _tracks(d / "plain"), ONE)}"',
        "no background for ave/diff, tss/abs_diff, tss/diff",
    ),
    "name template": (lambda d: 'background = "bg.npz"', "has no {statistic}"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_exit_2_and_write_nothing(demo: Path, tmp_path: Path, case: str) -> None:
    make, message = ERRORS[case]
    (demo / "plain.npz").mkdir(exist_ok=True)
    for stale in ("other.npz", "part.npz"):
        (demo / stale).unlink(missing_ok=True)
    section = make(demo)
    template = "{group}_{aggregation}" if case == "name template" else None
    toml = _run_file(demo, f"bad-{case.replace(' ', '-')}", section, template)
    if case == "name template":
        toml.write_text(toml.read_text().replace('["abs_diff", "diff"]', '["abs_diff"]'))
    r = run_cli("run", toml, "--out", tmp_path / "out")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killed_in_run_normalisation_resumes_byte_identical(
    demo: Path, tmp_path: Path, sig: str
) -> None:
    # A real signal from outside mid-stream, then --resume: the normalised tables (and
    # the raw ones) are byte for byte those of an uninterrupted run.
    import signal

    from .test_resume import _kill_after, _leftovers, _tables

    toml = _run_file(demo, f"kill-{sig}", 'background = "bg.npz"')
    clean = tmp_path / "clean"
    r = run_cli("-q", "run", toml, "--out", clean)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    args = ["run", str(toml), "--out", str(out), "--chunk-rows", "1", "--resume"]
    killed = _kill_after(args, 40, getattr(signal, sig))
    assert killed.returncode in (-signal.SIGKILL, 143), killed.stderr
    assert not (out / "manifest.json").exists()
    resumed = run_cli("-q", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert _tables(out) == _tables(clean)
    assert len(_tables(out)) == 24 and not _leftovers(out)


def test_a_background_spread_of_rounding_is_named_by_the_run(demo: Path, tmp_path: Path) -> None:
    """A saved background whose second track varies only by float32 rounding: the run
    says so once per (aggregation, statistic), on stderr and in its manifest."""
    tracks = _tracks(demo / "plain")
    rng = np.random.default_rng(4)
    ulp = float(np.spacing(np.float32(0.5)))
    items = []
    for agg, stat in _all_keys():
        values = np.abs(rng.standard_normal((50, len(tracks))))
        values[:, 1] = rng.integers(0, 3, 50) * ulp
        values[0, 1] = 0.5
        b = BackgroundBuilder(tracks, agg, stat)
        b.update(values)
        items.append(b.finish())
    save_backgrounds(demo / "rounding.npz", items)
    toml = _run_file(demo, "rounding", 'background = "rounding.npz"')
    r = run_cli("run", toml, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "have a MAD below 2^-20" in line]
    assert len(notes) == 4, r.stderr
    assert "tracks of background ave/abs_diff (rounding.npz)" in notes[0]
    assert f"(e.g. {tracks[1]}: MAD " in notes[0]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sum("have a MAD below 2^-20" in w for w in manifest["warnings"]) == 4
    quantile_only = _run_file(
        demo, "rounding_q", 'background = "rounding.npz"\nstatistics = ["quantile"]'
    )
    r = run_cli("run", quantile_only, "--out", tmp_path / "q")
    assert r.returncode == 0 and "MAD below" not in r.stderr, r.stderr


def test_kept_out_of_field_zeros_are_named_as_normalised(demo: Path, tmp_path: Path) -> None:
    """--out-of-field keep: the run's warning says [normalise] gives those zeros values,
    and compare of a normalise folder does not call them 'scored exactly 0'."""
    toml = _run_file(demo, "kept", 'background = "bg.npz"')
    r = run_cli("run", toml, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "lie outside the model's input" in line]
    assert len(notes) == 1 and notes[0].endswith(
        "; [normalise] gives those zeros a quantile and robust_z as if measured"
    ), r.stderr
    r = run_cli(
        "-q", "compare", demo / "by-group", "--a", "stab", "--b", "top", "--out", tmp_path / "c"
    )
    assert r.returncode == 0, r.stderr
    assert "whose raw scores were exactly 0 ('not measured'), normalised here" in r.stderr
    assert "scored exactly 0" not in r.stderr
