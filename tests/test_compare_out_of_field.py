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
    from perturbscore.compare_out_of_field import out_of_field_rows

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


def _pairs(folder: Path) -> Path:
    """A long pairing table over noise_run: unit i pairs a's variant i with b's, ranks
    1, 2, 3 in turn; two matching units (a's variants 0 and 150, out of field and not);
    one unit whose b variant is in no table."""
    n = 200
    a = [f"rsa{i}" for i in range(n)] + ["rsa0", "rsa150", "rsa7"]
    b = [f"rsb{i}" for i in range(n)] + ["rsa0", "rsa150", "rsb999"]
    pair = folder / "pairs.csv"
    pd.DataFrame(
        {
            "unit": [f"u{i}" for i in range(len(a))],
            "rank": [1 + i % 3 for i in range(len(a))],
            "a_GENE": "ENSG1",
            "a_rsID": a,
            "a_ALT": "C",
            "b_GENE": "ENSG1",
            "b_rsID": b,
            "b_ALT": "C",
        }
    ).to_csv(pair, index=False)
    return pair


def test_excluded_units_are_counted_and_the_counts_are_what_the_tests_used(
    noise_run: Path, tmp_path: Path, cli
) -> None:
    # compare.json said 200 "non-matching units with both variants scored" while the
    # paired tests used 100: the units left out for a variant outside the model's input
    # were counted nowhere.
    pair = _pairs(tmp_path)
    out = tmp_path / "cmp"
    r = cli("-q", "compare", noise_run, "--a", "a", "--b", "b", "--design", "paired",
            "--design", "matching", "--pairing", pair, "--per-rank", "--out-of-field",
            "exclude", "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Oracle: the pairing joined to the run's tables and their class column, in pandas.
    units = pd.read_csv(pair, dtype=str)
    units["rank"] = units["rank"].astype(int)
    sides = {}
    for side in ("a", "b"):
        table = pd.read_csv(noise_run / f"{side}_abs_diff_ave.csv", dtype=str)
        got = units.merge(
            table[["GENE", "rsID", "ALT", "field"]],
            left_on=[f"{side}_{k}" for k in ("GENE", "rsID", "ALT")],
            right_on=["GENE", "rsID", "ALT"],
            how="left",
        )["field"]
        sides[side] = (got.notna().to_numpy(), (got == "outside_input").to_numpy())
    matching = (units["a_rsID"] == units["b_rsID"]).to_numpy()
    both = ~matching & sides["a"][0] & sides["b"][0]
    away = sides["a"][1] | sides["b"][1]
    tested = pd.Series(both & ~away).groupby(units["rank"]).sum()
    left_out = pd.Series(both & away).groupby(units["rank"]).sum()
    assert tested.sum() == 100 and left_out.sum() == 100  # b's first 100 are out of field

    tests = pd.read_csv(out / "tests.csv")
    paired = tests[tests["design"] == "paired"]
    n_used = paired.groupby("rank")["n_x"].agg(["min", "max"])
    assert (n_used["min"] == n_used["max"]).all()  # no missing score on any track
    assert n_used["min"].to_dict() == tested.to_dict()
    summary = json.loads((out / "compare.json").read_text())
    v, per_rank = summary["units"]["variants"], summary["units"]["per_rank"]
    assert v["non-matching units with both variants scored"] == n_used["min"].sum()
    assert v["non-matching units with a variant outside the model's input (left out)"] == 100
    assert v["non-matching b variants without a score row"] == 1
    assert v["matching units outside the model's input (left out)"] == 1  # rsa0
    assert v["non-matching a variants outside the model's input (left out)"] == int(
        (~matching & sides["a"][0] & sides["a"][1]).sum()
    )
    for rank, entry in per_rank.items():
        assert entry["non_matching_both_scored"] == tested[int(rank)]
        assert entry["non_matching_left_out_out_of_field"] == left_out[int(rank)]
    # The matching design: of the two matching units only rsa150's (in field) is tested.
    matched = tests[(tests["design"] == "matching") & (tests["x"] == "matching")]
    want = pd.Series(matching & sides["a"][0] & ~sides["a"][1]).groupby(units["rank"]).sum()
    assert want.sum() == 1
    assert matched.groupby("rank")["n_x"].max().to_dict() == want.to_dict()
    assert any("non-matching units with a variant outside" in w for w in summary["warnings"])
    assert cli("-q", "report", out).returncode == 0
    page = (out / "report.html").read_text()
    assert "non-matching units with a variant outside the model&#x27;s input (left out)" in page
    assert "non_matching_left_out_out_of_field" in page
