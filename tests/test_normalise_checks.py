"""``perturbscore normalise``: damaged tables, the saved background's file, out-of-field
rows and what a background's values depend on, through the console script.

Each user error: exit 2, one sentence on stderr naming the file, nothing written and
nothing printed before it (no background warning).
"""

from __future__ import annotations

import csv
from pathlib import Path

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
