"""--resume: a run killed midway continues to byte-identical tables."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from perturbscore.pipeline import FAIL_AFTER_ENV
from perturbscore.resume import STATE_DIR

from .conftest import _entry_point

TOML = "stablefm.toml"


def _run(study: Path, out: Path, *extra: object, fail_after: int = 0):
    env = dict(os.environ)
    env.pop(FAIL_AFTER_ENV, None)
    if fail_after:
        env[FAIL_AFTER_ENV] = str(fail_after)
    return subprocess.run(
        [
            *_entry_point(),
            "run",
            str(study / TOML),
            "--out",
            str(out),
            "--chunk-rows",
            "7",
            *map(str, extra),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.mark.parametrize("fmt", ["parquet", "rdata"])
def test_killed_run_resumes_to_identical_tables(study: Path, tmp_path: Path, fmt: str) -> None:
    clean = _run(study, tmp_path / "clean", "--format", fmt)
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "resumed"
    first = _run(study, out, "--format", fmt, "--resume", fail_after=3)
    assert first.returncode == 1 and "failing as asked" in first.stderr
    assert [p.name for p in out.iterdir()] == [STATE_DIR]  # no tables, only the state
    log = (out / STATE_DIR / "blocks.jsonl").read_text().splitlines()
    assert len(log) == 3
    # Die a second time, later in the run, then finish.
    second = _run(study, out, "--format", fmt, "--resume", fail_after=9)
    assert second.returncode == 1
    assert len((out / STATE_DIR / "blocks.jsonl").read_text().splitlines()) == 12
    last = _run(study, out, "--format", fmt, "--resume")
    assert last.returncode == 0, last.stderr
    assert "resuming: 12 blocks already done" in last.stderr
    assert _bytes(out) == _bytes(tmp_path / "clean")
    assert not (out / STATE_DIR).exists()


def test_a_block_cut_off_mid_write_is_redone(study: Path, tmp_path: Path) -> None:
    assert _run(study, tmp_path / "clean", "--format", "parquet").returncode == 0
    out = tmp_path / "r"
    assert _run(study, out, "--format", "parquet", "--resume", fail_after=4).returncode == 1
    state = out / STATE_DIR
    with open(state / "scores-0.f8", "ab") as fh:  # scores of a block never confirmed
        fh.write(b"\x01" * 123)
    with open(state / "blocks.jsonl", "a") as fh:  # and a log line cut short
        fh.write('{"batch": 0, "sta')
    assert _run(study, out, "--format", "parquet", "--resume").returncode == 0
    assert _bytes(out) == _bytes(tmp_path / "clean")


def test_state_of_other_inputs_is_refused(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert _run(study, out, "--resume", fail_after=2).returncode == 1
    variants = study / "top_snps_strand_final_variants.csv"
    df = pd.read_csv(variants, dtype=str)
    df.loc[0, "GENE"] = "ENSGCHANGED"
    df.to_csv(variants, index=False)
    r = _run(study, out, "--resume")
    assert r.returncode == 2
    assert "resume state belongs to another run (inputs differ" in r.stderr
    assert (out / STATE_DIR / "state.json").is_file()  # left for the user to decide
    assert [p.name for p in out.iterdir()] == [STATE_DIR]
    other = study / "other.toml"
    other.write_text((study / TOML).read_text().replace('"abs_diff"', '"diff"'))
    r = subprocess.run(
        [*_entry_point(), "run", str(other), "--out", str(out), "--chunk-rows", "7", "--resume"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "run_file, settings" in r.stderr
