"""Shared fixtures: paths to ../shared, a study-layout dataset, a CLI runner, and a
writer of synthetic track tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from perturbscore.demo import write_demo_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "stablefm"


def write_targets(
    path: Path, identifiers: list[str], description: str | list[str], file: str = "synthetic"
) -> None:
    """A track table like ``targets_human.txt`` (0-based ``index``, tab-separated) for
    synthetic tracks: one ``description`` for all, or one each."""
    pd.DataFrame(
        {
            "index": range(len(identifiers)),
            "genome": 0,
            "identifier": identifiers,
            "file": file,
            "clip": 32,
            "scale": 2,
            "sum_stat": "mean",
            "description": description,
        }
    ).to_csv(path, sep="\t", index=False)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The study's real metadata files (read-only, beside the clone)."""
    if not SHARED.is_dir():
        if os.environ.get("PERTURBSCORE_REQUIRE_SHARED"):
            pytest.fail(f"{SHARED} is missing but PERTURBSCORE_REQUIRE_SHARED is set")
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    """A small synthetic dataset in the study's layout, with its stablefm.toml."""
    folder = tmp_path / "study"
    write_demo_dataset(folder)
    return folder


def _entry_point() -> list[str]:
    exe = Path(sys.executable).parent / "perturbscore"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("perturbscore")
    return [found] if found else [sys.executable, "-m", "perturbscore"]


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``perturbscore`` console script."""
    return subprocess.run(
        [*_entry_point(), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture()
def cli():
    return run_cli


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of ``perturbscore demo`` (through the console script, once per module)."""
    folder = tmp_path_factory.mktemp("demo-cli") / "demo"
    r = run_cli("-q", "demo", folder)
    assert r.returncode == 0, r.stderr
    return folder / "results"


def signal_when(
    args: list[str], ready: Callable[[], bool], sig: int, what: str
) -> subprocess.CompletedProcess[str]:
    """Start ``perturbscore ARGS`` and send it ``sig`` (from outside, as the world does) once
    ``ready()`` holds; ``what`` names that moment for a failure message."""
    proc = subprocess.Popen(
        [*_entry_point(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, f"perturbscore {args[0]} ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within 120 s"
        time.sleep(0.002)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
