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
