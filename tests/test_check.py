"""``perturbscore check``: a finished run's tables are checked, not only its manifest;
one verdict decides the exit code, the last line printed and the JSON; a typo among the
prediction paths is a user error.

Everything goes through the console script (exit code, stdout, stderr) and every test
asserts that check wrote nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from perturbscore.check import CheckReport

from .conftest import run_cli
from .test_integrity import make_dataset

#: make_dataset's run: groups a (40 rows) and b (28), aggregations ave and tss,
#: statistics abs_diff and diff: 8 tables.
ROWS = {"a": 40, "b": 28}


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under ``folder`` with its size and mtime: what 'nothing written' compares."""
    return sorted(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    )


def _run(tmp_path: Path, fmt: str, *extra: str, nan: bool = False) -> tuple[Path, Path]:
    """make_dataset's run file (tables as ``fmt``) and its finished run folder."""
    run = make_dataset(tmp_path / "d")
    run.write_text(run.read_text() + f'\n[output]\nformat = "{fmt}"\n', encoding="utf-8")
    if nan:
        alt = np.load(tmp_path / "d" / "alt_a.npy")
        alt[5, 1, 0] = np.nan
        np.save(tmp_path / "d" / "alt_a.npy", alt)
    out = tmp_path / "out"
    done = run_cli("-q", "run", run, "--out", out, *extra)
    assert done.returncode == 0, done.stderr
    return run, out


def _check(target: Path, *args: str) -> tuple[int, str, dict]:
    """check's exit code and text, and its --json, after checking they agree."""
    folder = target if target.is_dir() else target.parent
    before = _listing(folder)
    done = run_cli("-q", "check", target, *args)
    as_json = run_cli("-q", "check", target, "--json", *args)
    assert _listing(folder) == before  # check writes nothing
    assert "Traceback" not in done.stderr + as_json.stderr
    assert done.returncode in (0, 3), done.stderr
    report = json.loads(as_json.stdout)
    assert_one_verdict(done.returncode, done.stdout, report)
    assert as_json.returncode == done.returncode
    return done.returncode, done.stdout, report


def assert_one_verdict(code: int, text: str, report: dict) -> None:
    """The exit code, the verdict line and the JSON say the same."""
    last = text.rstrip("\n").splitlines()[-1].strip()
    assert report["exit_code"] == code
    assert report["clean"] is (code == 0) and (report["flags"] == []) is (code == 0)
    if report["integrity"] is not None:
        assert report["integrity"]["clean"] is report["clean"]
        assert report["integrity"]["exit_code"] == code
    if code == 0:
        assert last.startswith("clean: "), text
        assert "FLAG" not in text
    else:
        assert last.startswith("flagged: ") and last.endswith(f"(exit code {code})"), text
        for reason in report["flags"]:
            assert reason in last


def test_an_intact_run_folder_is_clean(tmp_path: Path) -> None:
    _, out = _run(tmp_path, "csv")
    code, text, report = _check(out)
    assert code == 0
    assert "tables: 8 tables listed in manifest.json, every one readable" in text
    assert [t["problem"] for t in report["tables"]] == [None] * 8
    # Its manifest.json stands for the folder.
    assert _check(out / "manifest.json")[2]["tables"] == report["tables"]


def test_a_deleted_and_a_truncated_csv_table_are_flagged(tmp_path: Path) -> None:
    # check RUN_DIR read only the manifest: this folder checked "clean", exit 0.
    _, out = _run(tmp_path, "csv")
    (out / "a_abs_diff_tss.csv").unlink()
    table = out / "b_diff_ave.csv"
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(lines[:5]))  # header + 4 rows of 28
    code, text, report = _check(out)
    assert code == 3
    assert f"FLAG {out / 'a_abs_diff_tss.csv'}: listed in manifest.json but missing" in text
    assert f"FLAG {table} has 4 rows but the run's manifest.json says {ROWS['b']}" in text
    assert "flagged: 2 of 8 tables of the run missing or damaged (exit code 3)" in text
    bad = {Path(t["path"]).name for t in report["tables"] if t["problem"]}
    assert bad == {"a_abs_diff_tss.csv", "b_diff_ave.csv"}


def test_damaged_parquet_tables_are_flagged(tmp_path: Path) -> None:
    _, out = _run(tmp_path, "parquet")
    cut = out / "a_diff_tss.parquet"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # the footer is gone
    short = out / "b_abs_diff_ave.parquet"
    pd.read_parquet(short).head(7).to_parquet(short, index=False)  # readable, 7 rows
    lacking = out / "a_abs_diff_ave.parquet"
    pd.read_parquet(lacking).drop(columns=["T3"]).to_parquet(lacking, index=False)
    emptied = out / "b_diff_tss.parquet"
    emptied.unlink()
    emptied.mkdir()  # a folder of no Parquet parts (the Dask engine writes folders)
    code, text, report = _check(out)
    assert code == 3
    assert f"FLAG {emptied}: a folder without Parquet part files, not a table" in text
    assert f"FLAG {cut}: not a readable Parquet table" in text
    assert f"FLAG {short} has 7 rows but the run's manifest.json says {ROWS['b']}" in text
    assert f"FLAG {lacking} lacks 1 of the run's selected tracks (e.g. T3)" in text
    assert sum(t["problem"] is not None for t in report["tables"]) == 4


def test_nan_passed_through_by_the_run_is_flagged_as_check_of_the_run_file_flags_it(
    tmp_path: Path,
) -> None:
    # The run file's check exits 3 (NaN/Inf); its --nan propagate run checked clean.
    run, out = _run(tmp_path, "csv", "--nan", "propagate", nan=True)
    code_file, text_file, from_file = _check(run)
    code_dir, text_dir, from_dir = _check(out)
    assert code_file == code_dir == 3
    assert from_dir["integrity"]["nonfinite"] == from_file["integrity"]["nonfinite"]
    (path, found), *_ = from_dir["integrity"]["nonfinite"].items()
    assert path.endswith("alt_a.npy") and found["values"] == 1
    # Row 5 of a is line 7 of its variant table; bin 1, track 0 (T0).
    assert "line 7 of" in found["first"] and "bin 1, track 0 (T0)" in found["first"]
    flag = f"FLAG 1 NaN or Inf value in {path}, first at {found['first']}"
    assert flag in text_file and flag in text_dir
    for text in (text_file, text_dir):
        assert text.splitlines()[-1] == "  flagged: NaN or Inf in the predictions (exit code 3)"
    # The run's manifest records them itself (not only in a warning's words).
    recorded = json.loads((out / "manifest.json").read_text())["integrity"]
    assert recorded["nonfinite"] == from_file["integrity"]["nonfinite"]
    assert recorded["clean"] is False and recorded["exit_code"] == 3


def test_flagged_integrity_recorded_by_the_run_is_one_verdict(tmp_path: Path) -> None:
    run = make_dataset(tmp_path / "d", shift=True)
    code, text, report = _check(run)
    assert code == 3 and report["integrity"]["findings"]["identical_in_field"] > 0
    assert "rows may be attached to the wrong variants" in text.splitlines()[-1]


def test_rows_outside_the_window_are_one_verdict(tmp_path: Path) -> None:
    # check printed "clean: no misaligned rows..." and --json said integrity.clean true
    # and integrity.exit_code 0, yet it exited 3: the outside-window rows made the exit
    # code alone, the integrity section kept a verdict of its own.  A run folder whose
    # manifest records such rows (the run file's own check may refuse the positions).
    run = make_dataset(tmp_path / "d")
    report = json.loads(run_cli("-q", "check", run, "--json").stdout)
    report["geometry"]["classes"]["per_table"][0]["outside_window"] = 1
    folder = tmp_path / "recorded"
    folder.mkdir()
    (folder / "manifest.json").write_text(
        json.dumps({"geometry": report["geometry"], "integrity": report["integrity"]})
    )
    code, text, got = _check(folder)
    assert code == 3
    assert got["flags"] == [
        "1 row lies outside the window itself (the positions are wrong)",
        "manifest.json lists no tables of the run",  # (this manifest is only a part)
    ]
    assert "tables: none listed in manifest.json" in text


def test_a_table_is_not_a_run_file(tmp_path: Path) -> None:
    _, out = _run(tmp_path, "csv")
    before = _listing(tmp_path)
    done = run_cli("check", out / "a_diff_ave.csv")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"perturbscore: error: {out / 'a_diff_ave.csv'} is a table, not a run file or a run "
        f"folder; give the run file (.toml), or the folder that holds the run's manifest.json "
        f"({out})."
    )
    assert _listing(tmp_path) == before


def test_a_comparison_is_not_a_run(tmp_path: Path) -> None:
    _, out = _run(tmp_path, "csv")
    comp = tmp_path / "comparison"
    done = run_cli("-q", "compare", out, "--a", "a", "--b", "b", "--out", comp)
    assert done.returncode == 0, done.stderr
    before = _listing(tmp_path)
    for target in (comp, comp / "compare.json"):
        done = run_cli("check", target)
        assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
        assert done.stderr.strip() == (
            f"perturbscore: error: {comp} is a comparison's folder (compare.json), not a run; "
            "check the run folder it compared, or its run file."
        )
    assert _listing(tmp_path) == before


def test_the_verdict_weighs_every_reason() -> None:
    """:class:`CheckReport` alone: each reason makes the report flagged, in every field."""
    integrity = {"clean": True, "exit_code": 0, "rows": 3, "findings": {"x": 0}}
    integrity["identical_rows"] = {"total": 0}
    geometry = {"classes": {"per_table": [{"outside_window": 2}]}}
    cases = [
        (CheckReport("s", integrity=integrity), []),
        (CheckReport("s", integrity=integrity, geometry=geometry), ["outside the window"]),
        (CheckReport("s", integrity={**integrity, "findings": {"x": 1}}), ["wrong variants"]),
        (CheckReport("s", integrity={**integrity, "nonfinite": {"p": {}}}), ["NaN or Inf"]),
        (CheckReport("s", tables=[{"problem": "gone"}, {"problem": None}]), ["1 of 2 tables"]),
    ]
    for report, reasons in cases:
        d = report.as_dict()
        assert len(report.flags) == len(reasons)
        assert all(r in f for r, f in zip(reasons, report.flags, strict=True))
        assert d["exit_code"] == (3 if reasons else 0) == report.exit_code
        assert d["clean"] is (not reasons)
        if d["integrity"] is not None:
            assert d["integrity"]["clean"] is d["clean"]
            assert d["integrity"]["exit_code"] == d["exit_code"]


def test_a_missing_prediction_among_present_ones_is_a_user_error(tmp_path: Path) -> None:
    # A typo in one path checked "integrity: not checked", exit 0, as if the run file
    # named no predictions at all.
    run = make_dataset(tmp_path / "d")
    run.write_text(run.read_text().replace("ref_b.npy", "ref_bb.npy"), encoding="utf-8")
    before = _listing(tmp_path / "d")
    done = run_cli("check", run)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("perturbscore: error: ") and "Traceback" not in done.stderr
    msg = done.stderr.strip()
    assert f"{tmp_path / 'd' / 'ref_bb.npy'}: prediction file not found" in msg
    assert "(ref of group b, batch 1 in" in msg and "3 of the run file's 4 prediction" in msg
    assert "--positions-only" in msg and msg.count("\n") == 0
    assert _listing(tmp_path / "d") == before
    # --positions-only reads no prediction: the same run file is checked.
    assert run_cli("check", run, "--positions-only").returncode == 0
    # None of them here: the variant tables alone, as documented.
    for p in (tmp_path / "d").glob("*.npy"):
        p.unlink()
    code, text, _ = _check(run)
    assert code == 0
    assert "integrity: not checked: 4 prediction files not found" in text


def test_clean_run_file_has_one_verdict(tmp_path: Path) -> None:
    code, text, report = _check(make_dataset(tmp_path / "d"))
    assert code == 0 and report["flags"] == []
    assert text.splitlines()[-1] == "  clean: no misaligned rows or wrong positions found"


def test_recorded_nonfinite_reads_every_file_of_the_warning() -> None:
    """The run records NaN/Inf it passed through as one warning; every file is read back,
    an ID holding "; " included, "1 value" as well as "1 values"."""
    from perturbscore.check_dir import recorded_nonfinite

    warning = (
        "NaN/Inf passed through (--nan propagate): /a/alt.npy: 1 values, first at variant "
        "G1 x; y (line 2 of v.csv), bin 1, track 3 (S); /b/ref.npy: 12 value, first at "
        "variant Q (line 5 of w.csv), bin 0, track 1 (T)"
    )
    assert recorded_nonfinite(["another warning", warning]) == {
        "/a/alt.npy": {
            "values": 1,
            "first": "variant G1 x; y (line 2 of v.csv), bin 1, track 3 (S)",
        },
        "/b/ref.npy": {"values": 12, "first": "variant Q (line 5 of w.csv), bin 0, track 1 (T)"},
    }
