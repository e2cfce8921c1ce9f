"""``perturbscore compare`` killed the way the world does it: SIGKILL, SIGTERM, SIGINT.

A comparison is published by the journalled commit every writing command shares
(:class:`perturbscore.outputs.Commit`).  The signals come from outside while the
process draws its figures, or, between two renames of the commit (a window no outside
timing can hit), from a small harness that runs the real console entry point and sends
SIGKILL to its own process there: no cleanup code runs in either case.  Afterwards the
folder holds the earlier comparison, the new one, or nothing a reader takes for a
comparison, never a mix, and the next command finishes or sweeps what the dead one left.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from .conftest import run_cli, signal_when
from .test_resume import again_after_sigkill, kill_while_replacing


def _compare(results: Path, out: Path, *extra: object) -> list[str]:
    return ["compare", str(results), "--a", "stab", "--b", "top", "--out", str(out), *extra]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path (figures' bytes carry dates: names only)."""
    return {
        p.relative_to(folder).as_posix(): (b"" if p.parent.name == "figures" else p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "compare.json"
    }


@pytest.fixture(scope="module")
def clean(
    demo_results: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, bytes]]:
    """Uninterrupted comparisons: the default figures, and ECDFs of one chosen track."""
    base = tmp_path_factory.mktemp("kill-clean")
    out = {}
    for name, extra in (("default", ()), ("one", ("--plot-track", "SYNTH0004"))):
        r = run_cli(*_compare(demo_results, base / name, *extra))
        assert r.returncode == 0, r.stderr
        out[name] = _files(base / name)
    assert set(out["one"]) != set(out["default"])  # the overwrite below changes figures
    return out


def _signal_while_drawing(args: list[str], out: Path, sig: int) -> subprocess.CompletedProcess:
    """Send ``sig`` to ``perturbscore ARGS`` once its first figure is staged in ``out``."""

    def drawn() -> bool:
        return any(f.is_file() for f in out.glob(".compare.perturbscore-*.partial/figures/*"))

    return signal_when(args, drawn, sig, "its first figure")


def test_sigkill_while_drawing_then_the_same_command(
    demo_results: Path, clean: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    args = _compare(demo_results, out)
    again_after_sigkill(_signal_while_drawing(args, out, signal.SIGKILL), args, out, "report")
    assert _files(out) == clean["default"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_while_drawing_leaves_nothing(
    demo_results: Path, tmp_path: Path, sig: int, code: int
) -> None:
    out = tmp_path / "cmp"
    stopped = _signal_while_drawing(_compare(demo_results, out), out, sig)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr and stopped.stdout == ""
    assert not out.exists()  # created by this call, and empty again: removed


@pytest.mark.parametrize("renames", [1, 7])
def test_sigkill_while_replacing_an_earlier_comparison(
    demo_results: Path, clean: dict[str, dict[str, bytes]], tmp_path: Path, renames: int
) -> None:
    out = tmp_path / "cmp"
    first = _compare(demo_results, out, "--plot-track", "SYNTH0004")
    plain = kill_while_replacing(first, _compare(demo_results, out), out, "compare.json",
                                 "report", renames)  # fmt: skip
    assert "already exists" in plain.stderr
    assert _files(out) == clean["default"]  # the new comparison, none of the earlier figures
    assert run_cli("report", out).returncode == 0
