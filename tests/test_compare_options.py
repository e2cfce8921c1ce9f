"""compare and report refusing what a new user's trial found them doing (trial 7): a
report written over files it did not write or over its own page unasked, damaged figures
embedded, repeated --keys, --track and --plot-track, and messages that read wrong.

Every refusal goes through the console script: exit 2, one sentence, no traceback,
nothing written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from .conftest import run_cli

MARK = '<meta name="generator" content="perturbscore report">'


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``perturbscore demo``: its inputs, pairing table and finished run (``results``)."""
    folder = tmp_path_factory.mktemp("demo") / "demo"
    r = run_cli("-q", "demo", folder)
    assert r.returncode == 0, r.stderr
    return folder


@pytest.fixture(scope="module")
def compared(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished comparison of the demo (unpaired), never written into by the tests."""
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    r = run_cli("-q", "compare", demo / "results", "--a", "stab", "--b", "top", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def _snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def _refused(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("perturbscore: error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one sentence, nothing before
    assert r.stdout == ""
    for w in words:
        assert w in r.stderr, r.stderr
    return r.stderr


def _copy(compared: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cmp"
    shutil.copytree(compared, out)
    return out


# --- report --out FILE --overwrite --------------------------------------------------


@pytest.mark.parametrize(
    "which", ["compare.json", "tests.parquet", "run table", "run file", "user page"]
)
def test_report_overwrite_replaces_no_file_it_did_not_write(
    compared: Path, demo: Path, tmp_path: Path, which: str
) -> None:
    # report --out X --overwrite replaced any X with HTML: the comparison's own
    # compare.json and tests.parquet, a run's .RData table, the user's run file.
    cmp = _copy(compared, tmp_path)
    run = tmp_path / "run"
    shutil.copytree(demo / "results", run)
    mine = tmp_path / "my_run.toml"
    shutil.copy(demo / "stablefm.toml", mine)
    page = tmp_path / "notes.html"
    page.write_text("<html><body>My own notes</body></html>\n")
    target = {
        "compare.json": cmp / "compare.json",
        "tests.parquet": cmp / "tests.parquet",
        "run table": run / "stab_diff_ave_relevant_comb.RData",
        "run file": mine,
        "user page": page,
    }[which]
    before = _snapshot(tmp_path)
    r = run_cli("report", cmp, "--out", target, "--overwrite")
    _refused(r, f"--out {target} already exists and is not a report perturbscore wrote")
    assert "pass --overwrite" not in r.stderr  # it would be refused all the same
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_report_twice_needs_overwrite(compared: Path, tmp_path: Path) -> None:
    # The second report replaced the first one unasked, although --help says
    # "--overwrite  Replace an existing --out file."
    cmp = _copy(compared, tmp_path)
    page = cmp / "report.html"
    r = run_cli("report", cmp)
    assert r.returncode == 0 and r.stdout.strip() == str(page), r.stderr
    page.write_text(page.read_text().replace("</body>", "<p>annotated</p></body>"))
    before = _snapshot(tmp_path)
    r = run_cli("report", cmp)
    _refused(r, f"{page} already exists; pass --overwrite to replace it")
    assert _snapshot(tmp_path) == before
    r = run_cli("report", cmp, "--overwrite")
    assert r.returncode == 0 and r.stdout.strip() == str(page), r.stderr
    assert MARK in page.read_text() and "annotated" not in page.read_text()
    # The same for a page given with --out.
    other = tmp_path / "elsewhere.html"
    assert run_cli("report", cmp, "--out", other).returncode == 0
    before = _snapshot(tmp_path)
    _refused(run_cli("report", cmp, "--out", other), f"--out {other} already exists; pass")
    assert _snapshot(tmp_path) == before
    assert run_cli("-q", "report", cmp, "--out", other, "--overwrite").returncode == 0


def test_report_never_replaces_a_page_of_the_users_own(compared: Path, tmp_path: Path) -> None:
    cmp = _copy(compared, tmp_path)
    page = cmp / "report.html"
    page.write_text("<html><body>My own notes</body></html>\n")
    before = _snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        r = run_cli("report", cmp, *extra)
        _refused(r, f"{page} already exists and is not a report perturbscore wrote")
        assert _snapshot(tmp_path) == before
    # A link, even to a page perturbscore wrote, is the user's: not replaced by a file.
    own = tmp_path / "own.html"
    assert run_cli("-q", "report", cmp, "--out", own).returncode == 0
    link = tmp_path / "link.html"
    link.symlink_to(own)
    before = _snapshot(tmp_path)
    r = run_cli("report", cmp, "--out", link, "--overwrite")
    _refused(r, f"--out {link} already exists and is not a report perturbscore wrote")
    assert link.is_symlink() and _snapshot(tmp_path) == before


# --- damaged figures ----------------------------------------------------------------


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:100])


def _not_png(p: Path) -> None:
    p.write_bytes(b"GIF89a" + p.read_bytes()[6:])


def _garbage(p: Path) -> None:
    p.write_text("garbage\n")


def _cut_svg(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _html_root(p: Path) -> None:
    p.write_text('<?xml version="1.0"?>\n<html><body>not a figure</body></html>\n')


@pytest.mark.parametrize(
    ("kind", "damage", "reason"),
    [
        ("png", _truncate, "does not end with the PNG IEND chunk"),
        ("png", _not_png, "does not start with the PNG signature"),
        ("svg", _garbage, "not XML"),
        ("svg", _cut_svg, "not XML"),
        ("svg", _html_root, "its root element is html, not svg"),
    ],
)
def test_report_refuses_a_damaged_figure(
    compared: Path, tmp_path: Path, kind: str, damage, reason: str
) -> None:
    # A truncated PNG and an SVG replaced by garbage were embedded, exit 0.
    cmp = _copy(compared, tmp_path)
    rel = "figures/heatmap_unpaired_top_vs_stab." + kind
    damage(cmp / rel)
    before = _snapshot(tmp_path)
    r = run_cli("report", cmp)
    _refused(r, f"{cmp / rel}: a figure listed in {cmp / 'compare.json'} is damaged", reason)
    assert "--overwrite --out" in r.stderr  # how to draw it again
    assert _snapshot(tmp_path) == before and not (cmp / "report.html").exists()


def test_report_takes_every_figure_compare_drew(compared: Path, tmp_path: Path) -> None:
    """The checks accept what matplotlib writes (PNG and SVG of every kind of figure)."""
    cmp = _copy(compared, tmp_path)
    assert {p.suffix for p in (cmp / "figures").iterdir()} == {".png", ".svg"}
    r = run_cli("report", cmp)
    assert r.returncode == 0, r.stderr
    assert MARK in (cmp / "report.html").read_text()


# --- repeated --keys, --track, --plot-track ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--design", "matching", "--pairing", "PAIRING", "--keys", "GENE,rsID,GENE"],
            "--keys GENE,rsID,GENE names GENE more than once; give each key once: "
            "--keys GENE,rsID.",
        ),
        (
            ["--keys", "ALT,GENE,ALT,rsID,GENE"],
            "names ALT and GENE more than once; give each key once: --keys ALT,GENE,rsID.",
        ),
        (
            ["--track", "SYNTH0000", "--track", "SYNTH0001", "--track", "SYNTH0000"],
            "--track SYNTH0000 is given twice; give each track once.",
        ),
        (
            ["--plot-track", "SYNTH0000", "--plot-track", "SYNTH0000"],
            "--plot-track SYNTH0000 is given twice; give each track once.",
        ),
        (
            ["--plot-track", "SYNTH0003"] * 3,
            "--plot-track SYNTH0003 is given 3 times; give each track once.",
        ),
    ],
)
def test_a_repeated_option_value_is_refused_before_any_work(
    demo: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    # --keys: a pandas traceback (exit 1); --track: every test ran, then a traceback
    # drawing the heat map; --plot-track: every ECDF drawn and listed twice.
    args = [str(demo / "pairing") if a == "PAIRING" else a for a in args]
    out = tmp_path / "cmp"
    r = run_cli("compare", demo / "results", "--a", "stab", "--b", "top", *args, "--out", out)
    _refused(r, message)  # one line: no warning and no progress of any test before it
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_repeated_plot_track_is_refused_through_python(demo: Path, tmp_path: Path) -> None:
    from perturbscore.compare_outputs import run_comparison
    from perturbscore.errors import PerturbscoreError

    with pytest.raises(PerturbscoreError, match="--plot-track SYNTH0004 is given twice"):
        run_comparison(demo / "results", tmp_path / "cmp", a="stab", b="top",
                       plot_tracks=["SYNTH0004", "SYNTH0004"])  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --- messages -------------------------------------------------------------------------


def test_a_pairing_table_without_b_columns_is_named_with_what_it_lacks(
    demo: Path, tmp_path: Path
) -> None:
    # It said "pairing tables give no value for key(s) GENE, rsID, ALT; they give
    # ALT, GENE, rsID": the keys it lacks were the keys it listed as given.
    pairs = pd.read_csv(demo / "pairing" / "demo_pairs.csv", dtype=str)
    a_only = tmp_path / "pairs_a_only.csv"
    pairs[[c for c in pairs.columns if not c.startswith("b_")]].to_csv(a_only, index=False)
    out = tmp_path / "cmp"
    r = run_cli("compare", demo / "results", "--a", "stab", "--b", "top", "--design", "paired",
                "--pairing", a_only, "--out", out)  # fmt: skip
    msg = _refused(
        r,
        f"{a_only}: the pairing table lacks the column(s) b_GENE, b_rsID, b_ALT; --keys "
        "GENE,rsID,ALT needs an a_<key> and a b_<key> column for every key",
    )
    assert "they give" not in msg and not out.exists()
    # Some b_ columns there: the keys usable as they are are offered.
    some = tmp_path / "pairs_some.csv"
    pairs.drop(columns=["b_rsID"]).to_csv(some, index=False)
    r = run_cli("compare", demo / "results", "--a", "stab", "--b", "top", "--design", "paired",
                "--pairing", some, "--out", out)  # fmt: skip
    _refused(r, "lacks the column(s) b_rsID;", "or choose --keys among GENE, ALT).")
    assert not out.exists()


def test_a_budget_under_one_mib_is_written_in_bytes(demo: Path, tmp_path: Path) -> None:
    # --memory 1KB read "--memory 0 MiB cannot be kept ... hold about 0 MiB ... besides
    # 0.0 MiB per track".
    out = tmp_path / "cmp"
    r = run_cli("compare", demo / "results", "--a", "stab", "--b", "top", "--memory", "1KB",
                "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "cannot be kept" in line]
    assert len(notes) == 1, r.stderr
    note = notes[0]
    assert note.startswith("perturbscore: WARNING: --memory 1,000 bytes cannot be kept: "), note
    assert " 0 MiB" not in note and "0.0 MiB" not in note
    # The sizes are the demo's R tables, whole: 8 bytes per value of each table pair.
    held = note.split("these hold about ", 1)[1].split(" at once", 1)[0]
    per_track = note.split("besides ", 1)[1].split(" per track", 1)[0]
    for size in (held, per_track):
        number, unit = size.split(" ")
        assert unit == "bytes" and int(number.replace(",", "")) > 0, size
        assert number == f"{int(number.replace(',', '')):,}"  # thousands separated
    assert "Give --memory 1MiB or more" in note


def test_byte_count() -> None:
    from perturbscore.memory import byte_count

    assert byte_count(0) == "0 bytes" and byte_count(1) == "1 byte"
    assert byte_count(1000) == "1,000 bytes" and byte_count(2**20 - 1) == "1,048,575 bytes"
    assert byte_count(64 * 2**20) == "67,108,864 bytes (64 MiB)"
    assert byte_count(3 * 2**30) == "3,221,225,472 bytes (3.0 GiB)"



def test_report_help_says_what_overwrite_replaces() -> None:
    r = run_cli("report", "--help")
    assert r.returncode == 0
    assert "perturbscore report wrote" in " ".join(r.stdout.split())
