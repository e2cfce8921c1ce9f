"""``perturbscore normalise`` killed the way the world does it: SIGKILL, SIGTERM, SIGINT.

The signals come from outside while the tables are written (the first temporary table
in OUT is the cue), or, between two renames of the journalled commit, from the harness
of :mod:`tests.test_resume` that sends SIGKILL to its own process there: no cleanup code
runs in either case.  Afterwards OUT holds the earlier output, the new one, or nothing
a reader takes for one; the next command finishes or sweeps what the dead one left, and
its tables are byte for byte those of an uninterrupted command.  The background file of
``--save-background`` is all or nothing too.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import run_cli, signal_when
from .test_resume import again_after_sigkill, kill_while_replacing


def _normalise(results: Path, out: Path, *extra: object) -> list[str]:
    # One row per block: slow enough for a signal to land while tables are written.
    return ["normalise", str(results), "--background", "stab", "--out", str(out),
            "--chunk-rows", "1", *map(str, extra)]  # fmt: skip


def _tables(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` but the manifest (which records the time), by name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def clean(demo_results: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("nkill-clean") / "norm"
    r = run_cli(*_normalise(demo_results, out))
    assert r.returncode == 0, r.stderr
    return _tables(out)


def _signal_while_writing(args: list[str], out: Path, sig: int) -> subprocess.CompletedProcess:
    """Send ``sig`` to ``perturbscore ARGS`` once a temporary table is in ``out``."""

    def staged() -> bool:
        return out.is_dir() and any(p.name.endswith(".partial") for p in out.iterdir())

    return signal_when(args, staged, sig, "its first table was staged")


def test_sigkill_while_writing_then_the_same_command(
    demo_results: Path, clean: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "norm"
    args = _normalise(demo_results, out)
    again_after_sigkill(_signal_while_writing(args, out, signal.SIGKILL), args, out, "check")
    assert _tables(out) == clean


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_while_writing_leaves_nothing(
    demo_results: Path, tmp_path: Path, sig: int, code: int
) -> None:
    out = tmp_path / "norm"
    saved = tmp_path / "background.npz"
    args = _normalise(demo_results, out, "--save-background", saved)
    stopped = _signal_while_writing(args, out, sig)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr and stopped.stdout == ""
    assert "interrupted by" in stopped.stderr
    assert not out.exists()  # created by this call, and empty again: removed
    assert not saved.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("renames", [1, 5])
def test_sigkill_while_replacing_an_earlier_output(
    demo_results: Path, clean: dict[str, bytes], tmp_path: Path, renames: int
) -> None:
    out = tmp_path / "norm"
    first = _normalise(demo_results, out, "--statistic", "robust_z")
    plain = kill_while_replacing(first, _normalise(demo_results, out), out, "manifest.json",
                                 "check", renames)  # fmt: skip
    assert "already holds" in plain.stderr
    assert _tables(out) == clean  # the new output, and no table of the earlier one
    assert run_cli("check", out).returncode in (0, 3)
