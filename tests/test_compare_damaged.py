"""Damaged or edited inputs of compare, normalise and report: exit 2, one sentence.

Each case goes through the console script: exit code 2, ``perturbscore: error:`` and a
message naming the file and the fix, no traceback, and nothing written.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .compare_tiny import tiny_run

OOF = {"a": 5, "b": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("damaged")
    return {
        fmt: tiny_run(base / fmt, OOF, n=40, fmt=fmt) for fmt in ("csv", "parquet", "rdata")
    }


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def _refused(r, *words: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("perturbscore: error: ")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    return r.stderr


def _garbage_rdata(p: Path) -> None:
    p.write_bytes(b"these are not the bytes of an R data file\n" * 20)


def _truncated_rdata(p: Path) -> None:
    # A valid R header, cut short: only reading the whole table (during the tests) finds it.
    data = p.read_bytes()
    data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert data[:4] == b"RDX3"
    p.write_bytes(data[: len(data) // 3])


def _truncated_parquet(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _csv_without_a_track(p: Path) -> None:
    pd.read_csv(p, dtype=str).drop(columns=["T3"]).to_csv(p, index=False)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize(
    ("fmt", "damage", "words"),
    [
        ("rdata", _garbage_rdata, ["not a readable R data file"]),
        ("rdata", _truncated_rdata, ["not a readable R data file"]),
        ("parquet", _truncated_parquet, ["not a readable Parquet table"]),
        ("csv", _csv_without_a_track, ["lacks 1 of the run's selected tracks (e.g. T3)"]),
        ("csv", _empty, ["is empty, not even a header line"]),
    ],
)
def test_damaged_table_compare_exits_2(
    runs: dict[str, Path], tmp_path: Path, cli, fmt: str, damage, words: list[str]
) -> None:
    run = _copy(runs[fmt], tmp_path)
    table = sorted(run.glob("b_abs_diff_ave.*"))[0]
    damage(table)
    out = tmp_path / "cmp"
    r = cli("compare", run, "--a", "a", "--b", "b", "--out", out)
    msg = _refused(r, str(table), *words, "changed after it was written: rerun the command")
    assert "Error" not in msg.split("(")[0]  # no exception class names up front
    assert not out.exists() and not list(tmp_path.glob(".cmp*"))


def test_empty_csv_table_normalise_exits_2(runs: dict[str, Path], tmp_path: Path, cli) -> None:
    run = _copy(runs["csv"], tmp_path)
    table = run / "a_abs_diff_ave.csv"
    _empty(table)
    out = tmp_path / "norm"
    r = cli("normalise", run, "--background", "b", "--out", out)
    _refused(r, str(table), "is empty, not even a header line")
    assert not out.exists()


@pytest.fixture()
def compared(runs: dict[str, Path], tmp_path: Path, cli) -> Path:
    out = tmp_path / "cmp"
    r = cli("-q", "compare", runs["parquet"], "--a", "a", "--b", "b", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_report_with_a_deleted_figure_exits_2(compared: Path, cli) -> None:
    fig = json.loads((compared / "compare.json").read_text())["figures"][1]["png"]
    (compared / fig).unlink()
    r = cli("report", compared)
    _refused(r, str(compared / fig), "is missing", "--overwrite")
    assert not (compared / "report.html").exists()


@pytest.mark.parametrize(
    ("text", "unreadable"),
    [('{"group_a": "a", "group_b"', True), ("[1, 2]", True), ("\xff\xfe", True),
     ('{"group_a": "a"}', False)],  # fmt: skip
)
def test_report_with_a_damaged_compare_json_exits_2(
    compared: Path, runs: dict[str, Path], cli, text: str, unreadable: bool
) -> None:
    cpath = compared / "compare.json"
    cpath.write_text(text, encoding="latin-1")
    r = cli("report", compared)
    _refused(r, str(cpath), "perturbscore compare")
    assert not (compared / "report.html").exists()
    if not unreadable:
        return  # lists no files of its own: compare --overwrite replaces only it
    # compare --overwrite cannot tell that comparison's files from the user's: refused.
    before = sorted(p.name for p in compared.rglob("*"))
    r = cli("compare", runs["parquet"], "--a", "a", "--b", "b", "--out", compared, "--overwrite")
    _refused(r, str(cpath), "is damaged", "choose a new --out folder")
    assert sorted(p.name for p in compared.rglob("*")) == before
    assert cpath.read_text(encoding="latin-1") == text


@pytest.mark.parametrize("name", ["run.toml", "manifest.json"])
def test_a_file_given_as_the_run_folder_is_called_a_file(
    runs: dict[str, Path], tmp_path: Path, cli, name: str
) -> None:
    # An existing run file was reported as "run folder not found".
    given = runs["csv"].parent / name if name == "run.toml" else runs["csv"] / name
    assert given.is_file()
    r = cli("compare", given, "--a", "a", "--b", "b", "--out", tmp_path / "c")
    msg = _refused(r, f"{given} is a file, not a run folder; give ")
    assert "not found" not in msg and not (tmp_path / "c").exists()
    if name == "manifest.json":
        assert f"give {runs['csv']}, the folder that holds it" in msg


def test_report_takes_compare_json_for_its_folder(runs: dict[str, Path], tmp_path: Path, cli):
    # 'report X/compare.json' said "no compare.json".
    out = tmp_path / "cmp"
    r = cli("-q", "compare", runs["parquet"], "--a", "a", "--b", "b", "--out", out)
    assert r.returncode == 0, r.stderr
    r = cli("report", out / "compare.json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out / "report.html") and (out / "report.html").is_file()
    before = sorted(p.name for p in out.iterdir())
    r = cli("report", out / "tests.csv")
    _refused(r, f"{out / 'tests.csv'} is a file, not a comparison folder")
    r = cli("report", tmp_path / "nope")
    _refused(r, f"{tmp_path / 'nope'}: comparison folder not found")
    assert sorted(p.name for p in out.iterdir()) == before and not (tmp_path / "nope").exists()


def test_an_earlier_comparison_removes_only_its_own_files(tmp_path: Path) -> None:
    """compare --overwrite removes what compare.json lists, inside the folder, files only."""
    from perturbscore.outputs_earlier import stale_outputs

    out, outside = tmp_path / "cmp", tmp_path / "outside.txt"
    (out / "figures" / "sub").mkdir(parents=True)
    outside.write_text("mine\n")
    for name in ("tests.csv", "figures/old.png", "figures/sub/x.png", "notes.txt"):
        (out / name).write_text("x\n")
    (out / "figures" / "link.png").symlink_to(outside)
    listed = ["figures/old.png", "../outside.txt", "figures/link.png", "figures/sub/../sub/x.png"]
    (out / "compare.json").write_text(
        json.dumps({"figures": [{"png": p} for p in listed], "files": ["tests.csv", "figures"]})
    )
    stale = stale_outputs(out, "compare", [out / "tests.csv"])
    # Not the file outside, nor the link leading there, nor anything named with "..";
    # the folder "figures" is listed and returned, and compare's commit skips folders.
    assert sorted(p.relative_to(out).as_posix() for p in stale) == ["figures", "figures/old.png"]
    assert outside.read_text() == "mine\n"


def test_report_of_a_run_folder_says_the_compare_command_that_works(
    runs: dict[str, Path], tmp_path: Path, cli
) -> None:
    """'report RUN' said to run 'compare ... --out RUN', which compare refuses (RUN is not
    a comparison folder). It now gives a command with the run's groups that works."""
    run = shutil.copytree(runs["csv"], tmp_path / "results")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    msg = _refused(cli("report", run), f"{run} is a run folder (it holds manifest.json")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    command = msg.split("first: perturbscore ", 1)[1].split(", then perturbscore ")[0]
    assert command == f"compare {run} --a a --b b --out {run}-compare"
    r = cli("-q", *command.split())
    assert r.returncode == 0, r.stderr
    r = cli("-q", "report", f"{run}-compare")
    assert r.returncode == 0 and (tmp_path / "results-compare" / "report.html").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(cli("report", empty), f"{empty}: no compare.json; give the --out folder of")
