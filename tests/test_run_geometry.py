"""Runs that know what the model could see: classes, --out-of-field, class column, checks.

The dataset mimics the study: Enformer windows, a position-in-window column, and
predictions whose rows outside the model's input have ALT bitwise equal to REF.  Every
expected value comes from pandas/numpy in the test.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import write_targets
from .test_resume import _cli, _kill_after, _tables

CENTRE = 196_608
ROWS = {"stab": 90, "top": 70}


def _classes(offsets: np.ndarray) -> np.ndarray:
    """Oracle: 0 outside Enformer's 196,608-bp input, 1 input only, 2 in the output."""
    d = offsets - CENTRE
    cls = np.full(offsets.shape, 2)
    cls[(d < -57_344) | (d >= 57_344)] = 1
    cls[(d < -98_304) | (d >= 98_304)] = 0
    return cls


def write_geometry_study(folder: Path, shift: bool = False, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    n_tracks = 5
    write_targets(folder / "targets.txt", [f"G{i}" for i in range(n_tracks)], "DNASE:GM12878")
    groups = []
    for g, n in ROWS.items():
        offsets = rng.integers(0, 393_216, size=n)
        cls = _classes(offsets)
        ref = rng.normal(size=(n, 3, n_tracks)).astype(np.float32)
        alt = ref + rng.normal(scale=0.2, size=ref.shape).astype(np.float32)
        alt[cls == 0] = ref[cls == 0]  # the model never saw these variants
        np.save(folder / f"{g}_ref.npy", ref)
        np.save(folder / f"{g}_alt.npy", alt)
        table = pd.DataFrame(
            {
                "GENE": [f"ENSG{i:03d}" for i in range(n)],
                "rsID": [f"rs{g}{i}" for i in range(n)],
                "REF": "A",
                "ALT": "G",
                "variant_pos_in_window": offsets,
            }
        )
        if shift:  # positions attached to the wrong rows
            table["variant_pos_in_window"] = np.roll(offsets, 1)
        table.to_csv(folder / f"{g}.csv", index=False)
        groups.append(
            f'[[groups]]\nname = "{g}"\nbatches = [{{ ref = "{g}_ref.npy", alt = '
            f'"{g}_alt.npy", variants = "{g}.csv" }}]\n'
        )
    (folder / "geo.toml").write_text(
        'targets = "targets.txt"\n[output]\nformat = "parquet"\n'
        + extra
        + '[geometry]\nmodel = "enformer"\n[variants]\nposition = "variant_pos_in_window"\n'
        + "".join(groups)
    )
    return folder / "geo.toml"


def _oracle_classes(folder: Path, group: str) -> np.ndarray:
    return _classes(pd.read_csv(folder / f"{group}.csv")["variant_pos_in_window"].to_numpy())


@pytest.fixture()
def geo(tmp_path: Path) -> Path:
    return write_geometry_study(tmp_path / "geo")


def test_keep_reports_classes_and_warns(geo: Path, tmp_path: Path) -> None:
    r = _cli("run", str(geo), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    total = {"outside_input": 0, "input_only": 0, "output": 0}
    for g in ROWS:
        cls = _oracle_classes(geo.parent, g)
        want = {k: int((cls == i).sum()) for i, k in enumerate(total)}
        assert manifest["geometry"]["classes"]["per_group"][g] == want
        for k in total:
            total[k] += want[k]
    assert manifest["geometry"]["classes"]["total"] == total
    n_out = total["outside_input"]
    assert f"{n_out:,} of {sum(ROWS.values()):,} variants" in r.stderr and "kept as 0" in r.stderr
    # Aligned predictions pass the integrity checks.
    assert manifest["integrity"]["clean"] and "integrity checks flagged" not in r.stderr
    tss = pd.read_parquet(tmp_path / "o" / "stab_abs_diff_tss.parquet")
    out = _oracle_classes(geo.parent, "stab") == 0
    assert (tss.iloc[:, :5].to_numpy()[out] == 0).all()


def test_na_and_drop(geo: Path, tmp_path: Path) -> None:
    assert _cli("run", str(geo), "--out", str(tmp_path / "keep")).returncode == 0
    na = _cli("run", str(geo), "--out", str(tmp_path / "na"), "--out-of-field", "na")
    drop = _cli(
        "run",
        str(geo),
        "--out",
        str(tmp_path / "drop"),
        "--out-of-field",
        "drop",
        "--format",
        "rdata",
        "--chunk-rows",
        "7",
    )
    assert na.returncode == 0 and drop.returncode == 0, (na.stderr, drop.stderr)
    pyreadr = pytest.importorskip("pyreadr")
    for g in ROWS:
        out = _oracle_classes(geo.parent, g) == 0
        keep = pd.read_parquet(tmp_path / "keep" / f"{g}_abs_diff_ave.parquet")
        nan = pd.read_parquet(tmp_path / "na" / f"{g}_abs_diff_ave.parquet")
        scores = nan.iloc[:, :5].to_numpy()
        assert np.isnan(scores[out]).all() and not np.isnan(scores[~out]).any()
        np.testing.assert_array_equal(scores[~out], keep.iloc[:, :5].to_numpy()[~out])
        dropped = pyreadr.read_r(str(tmp_path / "drop" / f"{g}_abs_diff_ave.RData"))
        table = next(iter(dropped.values()))
        assert len(table) == int((~out).sum())
        assert list(table["rsID"]) == list(keep["rsID"][~out])
        np.testing.assert_array_equal(
            table.iloc[:, :5].to_numpy(), keep.iloc[:, :5].to_numpy()[~out]
        )


def test_class_column(tmp_path: Path) -> None:
    run_file = write_geometry_study(tmp_path / "g", extra="")
    text = run_file.read_text().replace(
        '[output]\nformat = "parquet"\n', '[output]\nformat = "parquet"\nclass_column = "field"\n'
    )
    run_file.write_text(text)
    r = _cli("run", str(run_file), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    table = pd.read_parquet(tmp_path / "o" / "top_abs_diff_tss.parquet")
    labels = np.array(["outside_input", "input_only", "output"])
    assert list(table["field"]) == list(labels[_oracle_classes(run_file.parent, "top")])


@pytest.mark.parametrize(
    ("column", "ids", "message"),
    [
        # a column of the variant table, kept or not among the ID columns
        ("variant_pos_in_window", "", 'stab.csv has a column "variant_pos_in_window" already'),
        ("variant_pos_in_window", 'id_columns = "all"\n', "has a column"),
        ("G3", "", '"G3" is also the identifier of a selected track'),  # a score column
    ],
)
def test_a_class_column_named_like_a_column_is_refused(
    tmp_path: Path, column: str, ids: str, message: str
) -> None:
    run_file = write_geometry_study(tmp_path / "g", extra="")
    text = run_file.read_text().replace(
        '[output]\nformat = "parquet"\n',
        f'[output]\nformat = "parquet"\n{ids}class_column = "{column}"\n',
    )
    run_file.write_text(text)
    out = tmp_path / "o"
    r = _cli("-q", "run", str(run_file), "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perturbscore: error: "), r.stderr
    assert f"{run_file.name} [output] class_column: " in lines[0] and message in lines[0]
    assert 'class_column = "field"' in lines[0] and not out.exists()


@pytest.mark.parametrize("bad", [-1, 393_216, -1_000_000])
def test_a_position_outside_the_window_is_refused(tmp_path: Path, bad: int) -> None:
    """Offsets must lie in [0, 393,216): one outside is a wrong column or convention, and
    taking it for 'outside the input' would let --out-of-field na/drop discard its scores."""
    run_file = write_geometry_study(tmp_path / "g")
    table = pd.read_csv(run_file.parent / "top.csv", dtype=str)
    table.loc[[6, 40], "variant_pos_in_window"] = [str(bad), "393215"]  # the last base is in
    table.to_csv(run_file.parent / "top.csv", index=False)
    for args in (["run", str(run_file), "--out", str(tmp_path / "o")], ["check", str(run_file)]):
        r = _cli("-q", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"perturbscore: error: {run_file.parent / 'top.csv'}: 1 of 70 rows place the "
            f"variant outside the 393,216-bp window (line 8: offset {bad:,}), i.e. not in the "
            "sequence the model read; the run file's [variants] columns or their convention "
            "are wrong: variant_pos_in_window must be the 0-based offset in the window."
        ]
    assert not (tmp_path / "o").exists()


def test_shifted_positions_are_flagged(tmp_path: Path) -> None:
    run_file = write_geometry_study(tmp_path / "s", shift=True)
    r = _cli("run", str(run_file), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "integrity checks flagged rows" in r.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    found = manifest["integrity"]["findings"]
    assert not manifest["integrity"]["clean"]
    assert found["identical_in_field"] + found["differing_out_of_field"] > 0
    check = _cli("check", str(tmp_path / "o"))
    assert check.returncode == 3, check.stdout + check.stderr


def test_out_of_field_needs_geometry(study: Path, tmp_path: Path, cli) -> None:
    text = (study / "stablefm.toml").read_text()
    start, end = text.index("\n[geometry]"), text.index("\n[[groups]]")
    (study / "plain.toml").write_text(text[:start] + text[end:])
    r = cli("run", study / "plain.toml", "--out", tmp_path / "o", "--out-of-field", "drop")
    assert r.returncode == 2 and "--out-of-field drop needs the model's geometry" in r.stderr


def test_drop_resumes_after_sigkill(geo: Path, tmp_path: Path) -> None:
    args = [
        "run",
        str(geo),
        "--out",
        str(tmp_path / "o"),
        "--chunk-rows",
        "1",
        "--out-of-field",
        "drop",
        "--zarr",
        "--resume",
    ]
    clean = _cli("run", str(geo), "--out", str(tmp_path / "c"), "--out-of-field", "drop", "--zarr")
    assert clean.returncode == 0, clean.stderr
    assert _kill_after(args, 60, signal.SIGKILL).returncode == -signal.SIGKILL
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert _tables(tmp_path / "o") == _tables(tmp_path / "c")
    xr = pytest.importorskip("xarray")
    for g in ROWS:
        xr.testing.assert_identical(
            xr.open_zarr(tmp_path / "o" / f"{g}_scores.zarr").load(),
            xr.open_zarr(tmp_path / "c" / f"{g}_scores.zarr").load(),
        )
    resumed = json.loads((tmp_path / "o" / "manifest.json").read_text())["integrity"]
    assert resumed["clean"] and resumed["rows"] == sum(ROWS.values())


@pytest.mark.parametrize("fmt", ["parquet", "rdata"])  # R tables: read whole, then blocks
def test_compare_leaves_out_of_field_variants_out(tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("scipy")
    from scipy.stats import mannwhitneyu

    run_file = write_geometry_study(tmp_path / "g")
    text = run_file.read_text().replace(
        '[output]\nformat = "parquet"\n', '[output]\nformat = "parquet"\nclass_column = "field"\n'
    )
    run_file.write_text(text)
    r = _cli("run", str(run_file), "--out", str(tmp_path / "o"), "--format", fmt)
    assert r.returncode == 0, r.stderr
    r = _cli(
        "compare",
        str(tmp_path / "o"),
        "--a",
        "stab",
        "--b",
        "top",
        "--out-of-field",
        "exclude",
        "--out",
        str(tmp_path / "c"),
    )
    assert r.returncode == 0, r.stderr
    out = {g: int((_oracle_classes(run_file.parent, g) == 0).sum()) for g in ROWS}
    assert f"stab {out['stab']:,} variants, top {out['top']:,} variants" in r.stderr
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["left_out_out_of_field"] == out
    tests = pd.read_csv(tmp_path / "c" / "tests.csv")
    row = tests[(tests["identifier"] == "G2") & (tests["aggregation"] == "ave")].iloc[0]
    # Oracle: scipy on the in-field rows only, with R's rule (exact if both n < 50).
    if fmt == "parquet":
        a = pd.read_parquet(tmp_path / "o" / "stab_abs_diff_ave.parquet")
        b = pd.read_parquet(tmp_path / "o" / "top_abs_diff_ave.parquet")
    else:
        import pyreadr

        a, b = (
            next(iter(pyreadr.read_r(tmp_path / "o" / f"{g}_abs_diff_ave.RData").values()))
            for g in ("stab", "top")
        )
    a, b = a[a["field"] != "outside_input"]["G2"], b[b["field"] != "outside_input"]["G2"]
    assert row["n_x"] == len(b) and row["n_y"] == len(a)
    method = "exact" if len(a) < 50 and len(b) < 50 else "asymptotic"
    want = mannwhitneyu(b, a, alternative="greater", method=method).pvalue
    assert row["p_greater"] == pytest.approx(want, rel=1e-9)
    if fmt != "parquet":
        return
    # Without a class column, exclude is a user error.
    plain = write_geometry_study(tmp_path / "p")
    assert _cli("run", str(plain), "--out", str(tmp_path / "po")).returncode == 0
    bad = _cli(
        "compare",
        str(tmp_path / "po"),
        "--a",
        "stab",
        "--b",
        "top",
        "--out-of-field",
        "exclude",
        "--out",
        str(tmp_path / "pc"),
    )
    assert bad.returncode == 2 and "needs each variant's class" in bad.stderr
    assert not (tmp_path / "pc").exists()


def test_check_refuses_a_negative_tolerance(geo: Path) -> None:
    r = _cli("check", str(geo), "--rtol", "-1")
    assert r.returncode == 2 and "--rtol -1.0 is not a tolerance" in r.stderr


def test_position_column_mistakes_name_the_header(geo: Path, tmp_path: Path) -> None:
    """A typo'd position column: the table's real columns (all of them, although only the
    needed ones are read) and the closest name; a non-integer position: its line."""
    geo.write_text(geo.read_text().replace('position = "variant_pos_in_window"',
                                           'position = "variant_pos_in_windw"'))  # fmt: skip
    r = _cli("run", str(geo), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert 'no column "variant_pos_in_windw" for the variant positions' in message
    assert "its columns are GENE, rsID, REF, ALT, variant_pos_in_window" in message
    assert '(did you mean "variant_pos_in_window"?). Fix [variants]' in message
    assert not (tmp_path / "o").exists()
    geo.write_text(geo.read_text().replace("variant_pos_in_windw", "variant_pos_in_window"))
    table = pd.read_csv(geo.parent / "stab.csv", dtype=str)
    table.loc[3, "variant_pos_in_window"] = "12.5"
    table.to_csv(geo.parent / "stab.csv", index=False)
    r = _cli("run", str(geo), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert 'column "variant_pos_in_window" must hold whole numbers; line 5 has "12.5"' in r.stderr
    assert not (tmp_path / "o").exists()


def _geo_args(geo: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(geo), "--out", str(out), "--chunk-rows", "1", "--resume", *extra]


def test_a_finished_run_is_not_done_under_another_out_of_field(geo: Path, tmp_path: Path) -> None:
    # The tables of a finished run depend on --out-of-field: repeating --resume with
    # another value is not "nothing to resume" (it was, with the 'keep' tables kept).
    out = tmp_path / "o"
    assert _cli(*_geo_args(geo, out)).returncode == 0
    before = _tables(out)
    other = _cli(*_geo_args(geo, out, "--out-of-field", "na"))
    assert other.returncode == 2, other.stderr
    assert "(--out-of-field was keep, now na)" in other.stderr
    assert _tables(out) == before


def test_an_interrupted_run_resumes_under_another_out_of_field(geo: Path, tmp_path: Path) -> None:
    # The stored blocks do not depend on the policy (it is applied when tables are
    # written): an interrupted run may finish with another one, as a fresh run would.
    clean = _cli("run", str(geo), "--out", str(tmp_path / "c"), "--out-of-field", "na")
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "o"
    assert _kill_after(_geo_args(geo, out), 60, signal.SIGKILL).returncode == -signal.SIGKILL
    resumed = _cli(*_geo_args(geo, out, "--out-of-field", "na"))
    assert resumed.returncode == 0, resumed.stderr
    assert _tables(out) == _tables(tmp_path / "c")
