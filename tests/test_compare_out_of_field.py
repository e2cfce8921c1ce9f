"""compare on runs with out-of-field variants (scores exactly 0, 'not measured').

Two groups of identical noise that differ only in their share of out-of-field rows:
kept as 0 they make every track 'significant', and compare says so in one warning
(stderr, compare.json, the report); with --out-of-field exclude there is no warning and
no signal.  Also: figure file names drop the ':' of ``window:K`` as the run's tables do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .compare_tiny import tiny_run

SHARES = {"a": 20, "b": 100}  # of 200 rows each


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    return tiny_run(folder, SHARES, aggregations=("window:1", "ave"))


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "WARNING" in line]


def test_kept_out_of_field_zeros_are_warned_about(noise_run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "keep"
    r = cli("-q", "compare", noise_run, "--a", "a", "--b", "b", "--out", out)
    assert r.returncode == 0, r.stderr
    lines = [w for w in _warnings(r.stderr) if "out-of-field" in w]
    assert len(lines) == 1, r.stderr  # one line, not one per table
    w = lines[0]
    assert "a 20 of 200 rows (10.0%) and b 100 of 200 rows (50.0%)" in w
    assert "enter the tests as 'no effect'" in w and "by their share alone" in w
    assert "--out-of-field exclude" in w
    # The run wrote the class column: exclude works as it is, no rerun needed.
    assert "class_column" not in w
    # What the warning is about: pure noise, yet every test comes out 'significant'.
    tests = pd.read_csv(out / "tests.csv")
    assert (tests["p_adj_two_sided"] < 0.05).all()
    summary = json.loads((out / "compare.json").read_text())
    assert summary["out_of_field"] == "keep"
    assert summary["out_of_field_rows"] == SHARES
    assert [x for x in summary["warnings"] if "out-of-field zeros" in x] == [
        w.split("WARNING: ", 1)[1]
    ]
    r = cli("report", out)
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    assert "out-of-field variants (--out-of-field)" in page
    assert "keep: their 0 scores tested as &#x27;no effect&#x27; (a 20, b 100 rows)" in page
    assert "out-of-field zeros in the compared groups" in page  # the Warnings section


def test_excluded_out_of_field_rows_give_no_warning(noise_run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "exclude"
    r = cli("-q", "compare", noise_run, "--a", "a", "--b", "b", "--out-of-field", "exclude",
            "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not [w for w in _warnings(r.stderr) if "out-of-field zeros" in w], r.stderr
    assert "left out of every test" in r.stderr
    tests = pd.read_csv(out / "tests.csv")
    assert (tests["n_x"] == 100).all() and (tests["n_y"] == 180).all()
    assert not (tests["p_adj_two_sided"] < 0.05).any()  # noise is noise again
    summary = json.loads((out / "compare.json").read_text())
    assert summary["out_of_field"] == "exclude"
    assert summary["left_out_out_of_field"] == SHARES
    assert cli("report", out).returncode == 0
    page = (out / "report.html").read_text()
    assert "exclude: left out of every test (a 20, b 100 rows)" in page


def test_warning_names_the_class_column_setting(tmp_path: Path, cli) -> None:
    """Without a class column, exclude is refused; the warning says how to get one."""
    res = tiny_run(tmp_path / "r", {"a": 5, "b": 30}, n=60, class_column=False)
    r = cli("-q", "compare", res, "--a", "a", "--b", "b", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    (w,) = [w for w in _warnings(r.stderr) if "out-of-field zeros" in w]
    assert "a 5 of 60 rows" in w and "b 30 of 60 rows" in w
    assert 'class_column = "field" in the run file\'s [output]' in w


@pytest.mark.parametrize(
    ("geometry", "want"),
    [
        (None, {}),  # import-scores: nothing known
        ({"out_of_field": "na", "classes": {"per_group": {"a": {"outside_input": 3}}}}, {}),
        ({"out_of_field": "drop", "classes": {"per_group": {"a": {"outside_input": 3}}}}, {}),
        ({"out_of_field": "keep", "classes": {"per_group": {"a": {"outside_input": 3}}}},
         {"a": 3}),  # fmt: skip
        ({"out_of_field": "keep", "classes": {"per_group": {"a": {"outside_input": 0}}}}, {}),
    ],
)
def test_only_zeros_kept_by_the_run_count(geometry: object, want: dict) -> None:
    """NaN (run --out-of-field na) drops out of every test and drop leaves no row."""
    from perturbscore.compare_tables import out_of_field_rows

    assert out_of_field_rows({"geometry": geometry}, ("a", "b")) == want


def test_figure_names_drop_the_colon_like_the_tables(
    noise_run: Path, tmp_path: Path, cli
) -> None:
    out = tmp_path / "names"
    r = cli("-q", "compare", noise_run, "--a", "a", "--b", "b", "--out", out,
            "--plot-track", "T0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    tables = sorted(p.name for p in noise_run.glob("a_*.csv"))
    assert tables == ["a_abs_diff_ave.csv", "a_abs_diff_window1.csv"]  # the run's rule
    figures = {p.name for p in (out / "figures").iterdir()}
    assert "ecdf_unpaired_T0_window1_abs_diff.png" in figures
    assert not [f for f in figures if ":" in f]
    assert not [line for line in r.stdout.splitlines() if ":" in Path(line).name]
    summary = json.loads((out / "compare.json").read_text())
    assert not [f for f in summary["figures"] if ":" in f["png"] + f["svg"]]
    assert cli("-q", "report", out).returncode == 0
