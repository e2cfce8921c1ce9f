"""``perturbscore normalise``: damaged tables, the saved background's file, out-of-field
rows and what a background's values depend on, through the console script.

Each user error: exit 2, one sentence on stderr naming the file, nothing written and
nothing printed before it (no background warning).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import run_cli
from .test_normalise_run import _snapshot, make_run, synthetic


def _one_error(r, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for n in needles:
        assert n in r.stderr, r.stderr


def _zeros_run(folder: Path, fmt: str = "csv") -> Path:
    """A run whose background group has all-zero rows, so building its background warns."""
    groups = synthetic(n_bg=12, n_top=8)
    for key in groups["stab"]:
        groups["stab"][key][:3] = 0.0
    return make_run(folder, groups, fmt=fmt)


def _damage(table: Path, row: int, col: int, text: str) -> None:
    rows = list(csv.reader(table.open()))
    rows[row][col] = text
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize("group", ["top", "stab"])
def test_text_in_a_csv_score_column_is_named_before_any_background(
    tmp_path: Path, group: str
) -> None:
    run = _zeros_run(tmp_path / "run")
    table = run / f"{group}_abs_diff_ave.csv"
    _damage(table, 5, 1, "abc")  # column 1: track T0
    before = _snapshot(tmp_path)
    r = run_cli(
        "normalise", run, "--background", "stab", "--out", tmp_path / "out",
        "--save-background", tmp_path / "bg.npz",
    )  # fmt: skip
    _one_error(r, f"{table}: not a readable CSV table", "abc", "rerun")
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_short_csv_table_is_named_before_any_background(tmp_path: Path) -> None:
    run = _zeros_run(tmp_path / "run")
    table = run / "top_diff_ave.csv"
    table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")
    r = run_cli("normalise", run, "--background", "stab", "--out", tmp_path / "out")
    _one_error(r, f"{table} has 7 rows but the manifest says 8")
    assert not (tmp_path / "out").exists()


def test_a_cut_off_r_table_is_named_before_any_background(tmp_path: Path) -> None:
    run = _zeros_run(tmp_path / "run", fmt="rds")
    table = run / "top_abs_diff_ave.rds"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    r = run_cli("normalise", run, "--background", "stab", "--out", tmp_path / "out")
    _one_error(r, f"{table}: not a readable R data file")
    assert not (tmp_path / "out").exists()


def test_a_damaged_table_is_named_when_normalising_against_a_file(tmp_path: Path) -> None:
    run = _zeros_run(tmp_path / "run")
    bg = tmp_path / "bg.npz"
    r = run_cli("normalise", run, "--background", "stab", "--out", tmp_path / "a",
                "--save-background", bg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    _damage(run / "top_diff_ave.csv", 2, 2, "n/a")
    r = run_cli("normalise", run, "--background-file", bg, "--out", tmp_path / "b")
    _one_error(r, "top_diff_ave.csv: not a readable CSV table")
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- --save-background


def _save(run: Path, out: Path, saved: Path, *extra: object):
    return run_cli(
        "normalise", run, "--background", "stab", "--out", out, "--save-background", saved,
        *extra,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["text", "npz"])
def test_overwrite_replaces_only_a_background_file(tmp_path: Path, kind: str) -> None:
    run = make_run(tmp_path / "run", synthetic(n_bg=8, n_top=5))
    notes = tmp_path / "notes.npz"
    if kind == "text":
        notes.write_text("my own notes\n")
    else:  # an .npz of the user's own arrays
        np.savez(notes, x=np.arange(3))
    before = _snapshot(tmp_path)
    r = _save(run, tmp_path / "out", notes, "--overwrite")
    _one_error(r, f"--save-background {notes}", "not a background file", "another name")
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_overwrite_replaces_a_background_file_saved_earlier(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", synthetic(n_bg=8, n_top=5))
    bg = tmp_path / "bg.npz"
    assert _save(run, tmp_path / "a", bg).returncode == 0
    first = bg.read_bytes()
    r = run_cli("normalise", run, "--background", "top", "--out", tmp_path / "b",
                "--save-background", bg, "--overwrite")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert bg.read_bytes() != first
    meta = json.loads(str(np.load(bg)["meta"]))
    assert meta["format"] == "perturbscore-background"


@pytest.mark.parametrize("inside", ["run", "out"])
def test_the_background_is_never_saved_into_the_run_or_out_folder(
    tmp_path: Path, inside: str
) -> None:
    run = make_run(tmp_path / "run", synthetic(n_bg=8, n_top=5))
    out = tmp_path / "out"
    if inside == "out":
        out.mkdir()
    folder = run if inside == "run" else out
    before = _snapshot(tmp_path)
    r = _save(run, out, folder / "bg.npz")
    word = "run folder" if inside == "run" else "--out folder"
    _one_error(r, f"inside the {word} {folder}", "save it beside")
    assert _snapshot(tmp_path) == before and not (folder / "bg.npz").exists()
    if inside == "out":
        assert not list(out.iterdir())


# --------------------------------------------------------------------------- out-of-field rows


@pytest.mark.parametrize("setup", ["keep", "keep+class", "na"])
def test_kept_out_of_field_rows_are_named_once(tmp_path: Path, setup: str) -> None:
    """A run with --out-of-field keep: its out-of-field zeros get normalised values as if
    measured; named once per run, per group, on stderr and in the manifest."""
    from .test_run_geometry import ROWS, _oracle_classes, write_geometry_study

    run_file = write_geometry_study(tmp_path / "g")
    if "class" in setup:
        run_file.write_text(
            run_file.read_text().replace(
                '[output]\nformat = "parquet"\n',
                '[output]\nformat = "parquet"\nclass_column = "field"\n',
            )
        )
    policy = "na" if setup == "na" else "keep"
    r = run_cli("-q", "run", run_file, "--out", tmp_path / "o", "--out-of-field", policy)
    assert r.returncode == 0, r.stderr
    r = run_cli("normalise", tmp_path / "o", "--background", "stab", "--out", tmp_path / "n")
    assert r.returncode == 0, r.stderr
    warnings = json.loads((tmp_path / "n" / "manifest.json").read_text())["warnings"]
    mine = [w for w in warnings if w.startswith("out-of-field zeros normalised")]
    lines = [ln for ln in r.stderr.splitlines() if "out-of-field zeros normalised" in ln]
    if policy == "na":
        assert not mine and not lines, r.stderr
        return
    parts = []
    for g, n in ROWS.items():
        k = int((_oracle_classes(run_file.parent, g) == 0).sum())
        assert k > 0
        parts.append(f"{g} {k} of {n} rows ({100 * k / n:.1f}%)")
    assert len(mine) == 1 and len(lines) == 1, r.stderr
    assert " and ".join(parts) in mine[0], mine[0]
    assert "--out-of-field na" in mine[0]
    if "class" in setup:
        assert "compare --out-of-field exclude" in mine[0]
    else:
        assert 'class_column = "field"' in mine[0]


# --------------------------------------------------------------------------- what values depend on


def _tiny_study(folder: Path, scores: str) -> Path:
    """A two-group run file on synthetic predictions (# n B T = 12 3 3) with ``scores``
    (TOML lines of [scores])."""
    from .conftest import write_targets

    folder.mkdir(parents=True, exist_ok=True)
    write_targets(folder / "t.txt", ["A", "B", "C"], "DNASE:x")
    rng = np.random.default_rng(2)
    for g in ("bg", "q"):
        ref = rng.random((12, 3, 3)).astype("f4")
        np.save(folder / f"{g}_ref.npy", ref)
        np.save(folder / f"{g}_alt.npy", ref + rng.random((12, 3, 3)).astype("f4"))
        (folder / f"{g}.csv").write_text(
            "GENE,rsID,REF,ALT\n" + "".join(f"G{i},rs{g}{i},A,C\n" for i in range(12))
        )
    groups = "".join(
        f'[[groups]]\nname = "{g}"\nbatches = [{{ ref = "{g}_ref.npy", alt = "{g}_alt.npy", '
        f'variants = "{g}.csv" }}]\n'
        for g in ("bg", "q")
    )
    path = folder / "r.toml"
    path.write_text(f'targets = "t.txt"\n[scores]\n{scores}\n{groups}')
    return path


def _run(folder: Path, name: str, scores: str, normalise: str = "") -> Path:
    toml = _tiny_study(folder, scores)
    if normalise:
        toml.write_text(toml.read_text() + f"[normalise]\n{normalise}\n")
    r = run_cli("-q", "run", toml, "--out", folder / name)
    assert r.returncode == 0, r.stderr
    return folder / name


LOG2FC = 'statistics = ["log2fc"]\naggregations = ["ave", "tss"]'


@pytest.fixture()
def saved_pc1(tmp_path: Path) -> Path:
    run = _run(tmp_path / "s", "run", LOG2FC)
    bg = tmp_path / "bg_pc1.npz"
    r = run_cli("-q", "normalise", run, "--background", "bg", "--out", tmp_path / "n",
                "--save-background", bg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads(str(np.load(bg)["meta"]))
    got = {
        (e["aggregation"], e["basis"]["pseudocount"], tuple(e["basis"]["bins"]))
        for e in meta["entries"]
    }
    assert got == {("ave", 1.0, (0, 3)), ("tss", 1.0, (1, 2))}
    return bg


def test_a_background_of_another_pseudocount_is_refused(tmp_path: Path, saved_pc1: Path) -> None:
    run = _run(tmp_path / "p2", "run", LOG2FC + "\npseudocount = 0.01")
    before = _snapshot(tmp_path)
    r = run_cli("normalise", run, "--background-file", saved_pc1, "--out", tmp_path / "x")
    _one_error(r, str(saved_pc1), "pseudocount 1.0", "pseudocount 0.01", "ave/log2fc")
    assert _snapshot(tmp_path) == before
    # and in-run: the run file's [normalise] background
    toml = _tiny_study(tmp_path / "p3", LOG2FC + "\npseudocount = 0.01")
    toml.write_text(toml.read_text() + f'[normalise]\nbackground = "{saved_pc1}"\n')
    r = run_cli("-q", "run", toml, "--out", tmp_path / "p3" / "o")
    _one_error(r, "[normalise] background", "pseudocount 1.0", "pseudocount 0.01")
    assert not (tmp_path / "p3" / "o").exists()


def test_a_background_of_other_bins_is_refused(tmp_path: Path, saved_pc1: Path) -> None:
    # centre bin 0: tss reads bin 0, not the background's 1..2
    run = _run(tmp_path / "c", "run", LOG2FC + "\ncenter_bin = 0")
    r = run_cli("normalise", run, "--background-file", saved_pc1, "--out", tmp_path / "x")
    _one_error(r, "tss/log2fc", "reads bin 1 (mean)", "reads bin 0 (mean)")
    toml = _tiny_study(tmp_path / "c2", LOG2FC + "\ncenter_bin = 0")
    toml.write_text(toml.read_text() + f'[normalise]\nbackground = "{saved_pc1}"\n')
    r = run_cli("-q", "run", toml, "--out", tmp_path / "c2" / "o")
    _one_error(r, "tss/log2fc", "reads bin 1 (mean)", "reads bin 0 (mean)")
    assert not (tmp_path / "c2" / "o").exists()


def test_the_same_basis_is_accepted_and_an_old_file_warned_about(
    tmp_path: Path, saved_pc1: Path
) -> None:
    run = _run(tmp_path / "same", "run", LOG2FC)
    r = run_cli("normalise", run, "--background-file", saved_pc1, "--out", tmp_path / "a")
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    # a file saved before backgrounds recorded their basis: accepted, with a warning
    old = tmp_path / "old.npz"
    with np.load(saved_pc1) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for e in meta["entries"]:
        del e["basis"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(old, **arrays)
    r = run_cli("normalise", run, "--background-file", old, "--out", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    note = [ln for ln in r.stderr.splitlines() if "records no basis" in ln]
    assert len(note) == 1 and str(old) in note[0] and "--save-background" in note[0], r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [w for w in m["warnings"] if "records no basis" in w]
    # in-run too: accepted, the warning on stderr and in the run's manifest
    toml = _tiny_study(tmp_path / "inrun", LOG2FC)
    toml.write_text(toml.read_text() + f'[normalise]\nbackground = "{old}"\n')
    r = run_cli("-q", "run", toml, "--out", tmp_path / "inrun" / "o")
    assert r.returncode == 0, r.stderr
    assert sum("records no basis" in ln for ln in r.stderr.splitlines()) == 1, r.stderr
    m = json.loads((tmp_path / "inrun" / "o" / "manifest.json").read_text())
    assert [w for w in m["warnings"] if "records no basis" in w]


# --------------------------------------------------------------------------- small messages


def _bg_of(path: Path, tracks: list[str]) -> Path:
    from perturbscore.normalise_files import save_backgrounds
    from perturbscore.normalise_sketch import BackgroundBuilder

    items = []
    for key in ("abs_diff", "diff"):
        b = BackgroundBuilder(tracks, "ave", key)
        b.update(np.arange(10.0 * len(tracks)).reshape(10, -1))
        items.append(b.finish())
    return save_backgrounds(path, items)


@pytest.mark.parametrize(
    ("tracks", "hint"),
    [
        (["T0", "T1", "T2", "U0", "U1", "U2"], "(it has 3 tracks the run did not select)"),
        (["T0", "T1", "T2", "U0"], "(it has 1 track the run did not select)"),
        (["T0", "T1", "U0"], "(1 selected track is not in it)"),
        (["T2", "T1", "T0"], "(the same tracks in another order)"),
    ],
)
def test_a_background_of_other_tracks_says_how_they_differ(
    tmp_path: Path, tracks: list[str], hint: str
) -> None:
    run = make_run(tmp_path / "run", synthetic(n_bg=5, n_top=4))
    bg = _bg_of(tmp_path / "bg.npz", tracks)
    r = run_cli("normalise", run, "--background-file", bg, "--out", tmp_path / "out")
    _one_error(r, f"the background's {len(tracks)} tracks are not the run's 3 selected", hint)
    assert not (tmp_path / "out").exists()


def test_a_repeated_statistic_counts_once(tmp_path: Path) -> None:
    # as compare's repeated --design: each choice once, in the order first given
    run = make_run(tmp_path / "run", synthetic(n_bg=5, n_top=4))
    out = tmp_path / "out"
    stats = ["--statistic", "robust_z", "--statistic", "quantile", "--statistic", "robust_z"]
    r = run_cli("normalise", run, "--background", "stab", "--out", out, *stats)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["parameters"]["normalised"] == ["robust_z", "quantile"]
    assert len(m["outputs"]) == 8 == len({o["path"] for o in m["outputs"]})


# --------------------------------------------------------------------------- exact robust_z


@pytest.mark.parametrize("ties", [False, True])
def test_robust_z_is_exact_for_a_compacted_background(tmp_path: Path, ties: bool) -> None:
    """9,000 background rows: past 2 k = 8,192 the sketch compacts, yet robust_z uses
    the background's exact median and MAD (numpy's), for every block size."""
    from .test_normalise_run import TRACKS, oracle_robust_z

    rng = np.random.default_rng(11)
    bg = np.abs(rng.normal(0, 1, (9000, 3)) * [1.0, 3.0, 0.2])
    if ties:
        bg = bg.round(1)  # many values equal to the median and to median +- MAD
    top = np.abs(rng.normal(0.5, 2, (40, 3)))
    top[0] = np.median(bg, axis=0)  # a score at the median: z 0
    run = make_run(tmp_path / "run", {"stab": {"ave/abs_diff": bg}, "top": {"ave/abs_diff": top}})
    want = oracle_robust_z(top, bg)
    got = {}
    for rows in ("1000", "4093"):
        out = tmp_path / f"o{rows}"
        r = run_cli("-q", "normalise", run, "--background", "stab", "--out", out,
                    "--statistic", "robust_z", "--chunk-rows", rows)  # fmt: skip
        assert r.returncode == 0, r.stderr
        m = json.loads((out / "manifest.json").read_text())
        assert m["parameters"]["background"]["entries"][0]["mode"] == "grid"
        got[rows] = pd.read_parquet(out / "top_abs_diff_robust_z_ave.parquet")[TRACKS].to_numpy()
        np.testing.assert_allclose(got[rows], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got["1000"], got["4093"])
