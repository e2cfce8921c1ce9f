"""The console script: good runs, and every bad input of issue 2 (exit 2, nothing written)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import _entry_point, run_cli

TOML = "stablefm.toml"


def _no_output(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def test_run_writes_the_four_study_tables(study: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "res"
    r = cli("run", study / TOML, "--out", out, "--chunk-rows", 13)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "manifest.json",
        "stab_diff_ave_relevant_comb.RData",
        "stab_diff_tss_relevant_comb.RData",
        "top_diff_ave_relevant_comb.RData",
        "top_diff_tss_relevant_comb.RData",
    ]
    # stdout lists what was written and nothing else; logs go to stderr.
    assert r.stdout.splitlines() == [str(out / n) for n in names[1:]] + [str(out / names[0])]
    assert "memory plan" in r.stderr


def test_quiet_and_format_override(study: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "res"
    r = cli("-q", "run", study / TOML, "--out", out, "--format", "csv", "--memory", "64MB")
    assert r.returncode == 0, r.stderr
    assert "INFO" not in r.stderr
    df = pd.read_csv(out / "stab_diff_tss_relevant_comb.csv", dtype={"REF": str, "ALT": str})
    assert df.shape == (57, 21 + 4)


def test_tracks_command(shared: Path, cli) -> None:
    r = cli("tracks", shared / "targets_human.txt", "--where", "biosample=GM12878")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "index\tidentifier\tassay\ttarget\tbiosample\tdescription"
    assert len(lines) == 1 + 177
    assert lines[1].startswith("12\tENCFF093VXI\tDNASE\t\tGM12878")
    r = cli(
        "tracks",
        shared / "targets_human.txt",
        "--index",
        3,
        "--index",
        1,
        "--columns",
        "identifier",
        "--sep",
        "comma",
    )
    assert r.stdout.splitlines() == ["identifier", "ENCFF463ZLQ", "ENCFF110QGM"]


def test_demo_command(tmp_path: Path, cli) -> None:
    r = cli("demo", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 5
    assert (tmp_path / "d" / "results" / "top_diff_ave_relevant_comb.RData").is_file()
    again = cli("demo", tmp_path / "d")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert "--out" not in again.stderr  # demo has no --out option
    assert cli("demo", tmp_path / "d", "--overwrite").returncode == 0


def _break(study: Path, what: str) -> None:
    """Damage the study folder in one of the ways issue 2 lists."""
    ref_old = study / "final_ref_preds_stab_snps_strand.npy"
    if what == "shapes":
        np.save(study / "final_alt_preds_stab_snps_strand.npy", np.load(ref_old)[:-1])
    elif what == "tracks":
        for p in study.glob("final_*.npy"):
            np.save(p, np.load(p)[:, :, :-1])
    elif what == "rows":
        df = pd.read_csv(study / "top_snps_new_strand_final_variants.csv")
        df.iloc[:-2].to_csv(study / "top_snps_new_strand_final_variants.csv", index=False)
    elif what == "index":
        short = pd.read_csv(study / "basenji_relevant_metadata.csv", index_col=0)
        short.loc[short.index[0], "index"] = 42
        short.to_csv(study / "basenji_relevant_metadata.csv")
    elif what == "identifier":
        text = (
            (study / TOML)
            .read_text()
            .replace(
                'shortlist = "basenji_relevant_metadata.csv"', 'identifiers = ["SYNTH0001", "NOPE"]'
            )
        )
        (study / TOML).write_text(text)
    elif what == "shortlist":
        short = pd.read_csv(study / "basenji_relevant_metadata.csv", index_col=0)
        short.loc[short.index[1], "identifier"] = "SYNTH9999"
        short.to_csv(study / "basenji_relevant_metadata.csv")
    elif what in ("nan", "inf"):
        for name, row in (
            ("final_ref_preds_top_snps_strand.npy", 7),
            ("final_ref_preds_top_snps_strand.npy", 9),
        ):
            arr = np.load(study / name)
            arr[row, 2, 4] = np.nan if what == "nan" else np.inf
            np.save(study / name, arr)
    elif what == "truncated":
        data = ref_old.read_bytes()
        ref_old.write_bytes(data[: len(data) // 2])
    elif what == "non-numeric":
        np.save(ref_old, np.full((40, 3, 42), "x"))
    elif what == "missing":
        (study / "final_alt_preds_top_snps_new_strand.npy").unlink()
    elif what == "even-bins":
        for p in study.glob("final_*.npy"):
            np.save(p, np.load(p)[:, :2, :])
    else:  # pragma: no cover
        raise AssertionError(what)


BAD_INPUTS = [
    (
        "shapes",
        r"REF .*final_ref_preds_stab_snps_strand.npy has shape 40 x 3 x 42 but ALT "
        r".*final_alt_preds_stab_snps_strand.npy has shape 39 x 3 x 42",
    ),
    (
        "tracks",
        r"final_ref_preds_stab_snps_strand.npy: 41 tracks, but the track table "
        r".*targets_human.txt has 42 rows",
    ),
    (
        "rows",
        r"top_snps_new_strand_final_variants.csv: 21 variant rows, but "
        r".*final_ref_preds_top_snps_new_strand.npy has 23 prediction rows",
    ),
    ("index", r"basenji_relevant_metadata.csv: line 2: track index 42 is outside 0..41"),
    ("identifier", r'track identifiers not in the track table: "NOPE";'),
    (
        "shortlist",
        r'basenji_relevant_metadata.csv: line 3: index 4 is "SYNTH9999" in the '
        r'shortlist but "SYNTH0004" in the track table',
    ),
    (
        "nan",
        r"NaN or Inf in the selected predictions: .*final_ref_preds_top_snps_strand.npy: "
        r"2 values, first at variant ENSG\S+ rsDEMO\d+ [ACGT] [ACGT] \(line 9 of "
        r".*top_snps_strand_final_variants.csv\), bin 2, track 4 \(SYNTH0004\).*--nan propagate",
    ),
    ("inf", r"NaN or Inf .*2 values, first at variant .*\(line 9 of .*\), bin 2, track 4"),
    ("truncated", r"final_ref_preds_stab_snps_strand.npy: file is truncated"),
    (
        "non-numeric",
        r"final_ref_preds_stab_snps_strand.npy: dtype <U1 is not a float16/float32/"
        r"float64 prediction array",
    ),
    ("missing", r"final_alt_preds_top_snps_new_strand.npy: prediction file not found"),
    (
        "even-bins",
        r"even number of bins \(2\), so the TSS bin is ambiguous; name it with "
        r"--center-bin",
    ),
]


@pytest.mark.parametrize(("what", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_and_writes_nothing(
    study: Path, tmp_path: Path, cli, what: str, message: str
) -> None:
    import re

    _break(study, what)
    out = tmp_path / "res"
    r = cli("run", study / TOML, "--out", out, "--chunk-rows", 5)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert re.search(message, r.stderr), r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    _no_output(out)
    assert not out.exists()  # the folder the run created is removed again


def test_even_bins_with_centre_named(study: Path, tmp_path: Path, cli) -> None:
    _break(study, "even-bins")
    r = cli(
        "run", study / TOML, "--out", tmp_path / "res", "--center-bin", 1, "--format", "parquet"
    )
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "res" / "stab_diff_tss_relevant_comb.parquet")
    ref = np.load(study / "final_ref_preds_stab_snps_strand.npy")
    alt = np.load(study / "final_alt_preds_stab_snps_strand.npy")
    np.testing.assert_allclose(got.iloc[:40, 0], np.abs(alt[:, 1, 0] - ref[:, 1, 0]), rtol=1e-6)


def test_existing_output_needs_overwrite(study: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "res"
    assert cli("run", study / TOML, "--out", out).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = cli("run", study / TOML, "--out", out)
    assert r.returncode == 2
    assert "already holds" in r.stderr and "--overwrite" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert cli("run", study / TOML, "--out", out, "--overwrite").returncode == 0


def test_failure_keeps_an_existing_folder_clean(study: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "res"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _break(study, "nan")
    r = cli("run", study / TOML, "--out", out)
    assert r.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no partial or temp files


def test_failure_removes_the_folders_it_created(study: Path, tmp_path: Path, cli) -> None:
    # --out a/b/c with none of them there: a failed run leaves none of them behind.
    _break(study, "nan")
    r = cli("run", study / TOML, "--out", tmp_path / "x" / "a" / "b")
    assert r.returncode == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", "lots"], "memory size 'lots' not understood"),
        (["--memory", "1000"], "memory budget 1,000 bytes is too small: the run needs at least"),
        (["--chunk-rows", "0"], "--chunk-rows must be at least 1"),
    ],
)
def test_bad_options(study: Path, tmp_path: Path, cli, args: list[str], message: str) -> None:
    r = cli("run", study / TOML, "--out", tmp_path / "res", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    _no_output(tmp_path / "res")


def test_bad_run_files(tmp_path: Path, cli) -> None:
    (tmp_path / "a.toml").write_text('targets = "t.txt"\n[scores]\naggregation = ["ave"]\n')
    r = cli("run", tmp_path / "a.toml", "--out", tmp_path / "o")
    said = "unknown key aggregation (did you mean aggregations?); the keys"
    assert r.returncode == 2 and said in r.stderr
    (tmp_path / "b.toml").write_text("targets = \n")
    r = cli("run", tmp_path / "b.toml", "--out", tmp_path / "o")
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = cli("run", tmp_path / "none.toml", "--out", tmp_path / "o")
    assert r.returncode == 2 and "run file not found" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "r.toml", "--out", "o", "--format", "rdat"], "Invalid value for '--format'"),
        (["run", "r.toml", "--out", "o", "--fromat", "csv"], "(did you mean one of: '--format'"),
        (
            ["compare", "r", "--a", "x", "--b", "y", "--out-of-field", "nan", "--out", "c"],
            "Invalid value for '--out-of-field'",
        ),  # fmt: skip
        (["run"], "Missing argument 'RUN_FILE'"),
        # A required --out left out (click >= 8.3 took default=None as given: traceback).
        (["run", "r.toml"], "Missing option '--out'"),
        (["compare", "r", "--a", "x", "--b", "y"], "Missing option '--out'"),
        (["normalise", "r", "--background", "x"], "Missing option '--out'"),
        (
            ["import-scores", "x=y.h5", "--statistic", "sad", "--targets", "t"],
            "Missing option '--out'",
        ),
        # --out "$OUT" with OUT unset would write into the current folder.
        (["run", "r.toml", "--out", ""], "Invalid value for '--out': is empty"),
        (["compare", "r", "--a", "x", "--out", " "], "Invalid value for '--out': is empty"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_click_usage_errors_are_one_sentence(tmp_path: Path, args: list[str], needle: str) -> None:
    """Bad option values and typos: exit 2 and one line like every other user error."""
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("perturbscore: error: ")
    assert needle in r.stderr and "--help'." in r.stderr and "Usage:" not in r.stderr
    assert list(tmp_path.iterdir()) == []


SIGNAL_WHILE_PARSING = """
import os, signal, sys
import click
parse = click.Command.parse_args
def parse_args(self, ctx, args):
    if self.name == "run":  # a real signal, delivered while the options are parsed
        os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
    return parse(self, ctx, args)
click.Command.parse_args = parse_args
from perturbscore.cli import main
sys.argv = ["perturbscore", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_before_any_work_is_one_sentence(tmp_path: Path, sig: str, code: int) -> None:
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", SIGNAL_WHILE_PARSING, "run", "r.toml", "--out", "o"],
        env={**os.environ, "SIGNAL": sig},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == code, r.stderr
    # (click starts a new line after ^C, so that the sentence does not follow "^C")
    assert r.stderr.lstrip("\n") == (
        f"perturbscore: interrupted by {sig}; nothing was written: run the same command again\n"
    )
    assert list(tmp_path.iterdir()) == []


_FULL = Path("/dev/full")


def _to(stdout: object, *args: object) -> subprocess.CompletedProcess[str]:
    """The console script with stdout sent to ``stdout`` (a file object or PIPE)."""
    return subprocess.run(
        [*_entry_point(), *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(not _FULL.exists(), reason="no /dev/full")
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--version"], "cannot write to standard output (No space left on device)"),
        (["--help"], "cannot write to standard output (No space left on device)"),
        (["tracks", "TARGETS"], "cannot write the track table to standard output"),
    ],
)
def test_standard_output_on_a_full_disk_is_one_sentence(
    shared: Path, args: list[str], said: str
) -> None:
    """Standard output on a full disk (``> /dev/full``): exit 2 and a sentence, no traceback."""
    args = [str(shared / "targets_human.txt") if a == "TARGETS" else a for a in args]
    with _FULL.open("w") as full:
        r = _to(full, *args)
    assert r.returncode == 2, r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(not _FULL.exists(), reason="no /dev/full")
def test_a_run_listing_on_a_full_disk_says_its_tables_are_complete(
    study: Path, tmp_path: Path
) -> None:
    """The tables are committed before they are listed: the message says they are complete,
    not that the disk could not take the outputs (it did)."""
    out = tmp_path / "res"
    with _FULL.open("w") as full:
        r = _to(full, "-q", "run", study / TOML, "--out", out)
    assert r.returncode == 2, r.stderr
    assert "cannot write the list of files written to standard output" in r.stderr
    assert "the outputs themselves are complete" in r.stderr and "Traceback" not in r.stderr
    again = tmp_path / "again"
    assert run_cli("-q", "run", study / TOML, "--out", again).returncode == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        if name != "manifest.json":
            assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_a_closed_pipe_ends_quietly(shared: Path) -> None:
    """``perturbscore tracks ... | head``: the reader is gone before anything is written;
    the command ends as a program killed by SIGPIPE does (141), without a traceback."""
    proc = subprocess.Popen(
        [*_entry_point(), "tracks", str(shared / "targets_human.txt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()  # before the table is read and printed: every write finds no reader
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 141, stderr
    assert stderr == "", stderr


def test_a_reader_that_leaves_midway_ends_the_table_quietly(shared: Path) -> None:
    """``perturbscore tracks ... | head``: the reader takes the first lines and goes while
    the 549 KB table is written; 141, as a program killed by SIGPIPE, not 0 (one large
    write cut short by the reader's exit was reported by Python as nothing)."""
    for _ in range(3):
        proc = subprocess.Popen(
            [*_entry_point(), "-q", "tracks", str(shared / "targets_human.txt")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(200).startswith(b"index\tidentifier\t")
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 141, stderr
        assert stderr == "", stderr


_BLAS_PROBE = """
import os, sys
from perturbscore.cli import main
sys.argv = ["perturbscore", "--version"]
try:
    main()
except SystemExit:
    pass
print(os.environ.get("OPENBLAS_NUM_THREADS"), "numpy" in sys.modules)
"""


@pytest.mark.parametrize(
    ("given", "seen"),
    [({}, "1"), ({"OPENBLAS_NUM_THREADS": "3"}, "3"), ({"OMP_NUM_THREADS": "4"}, "None")],
)
def test_the_console_script_keeps_openblas_to_one_thread(given: dict, seen: str) -> None:
    # Set before numpy (and its OpenBLAS thread pool) is loaded; a number the user
    # chose, through any variable OpenBLAS reads, is kept.
    import os
    import sys

    blas = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in blas} | given
    out = subprocess.run(
        [sys.executable, "-c", _BLAS_PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-2:] == [seen, "False"]
