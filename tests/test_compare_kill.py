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
import time
from pathlib import Path

import pytest

from perturbscore.outputs import JOURNAL

from .conftest import _entry_point
from .test_resume import kill_in_commit


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_entry_point(), *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kill-demo") / "demo"
    r = _cli("-q", "demo", folder)
    assert r.returncode == 0, r.stderr
    return folder / "results"


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
def clean(results: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Uninterrupted comparisons: the default figures, and ECDFs of one chosen track."""
    base = tmp_path_factory.mktemp("kill-clean")
    out = {}
    for name, extra in (("default", ()), ("one", ("--plot-track", "SYNTH0004"))):
        r = _cli(*_compare(results, base / name, *extra))
        assert r.returncode == 0, r.stderr
        out[name] = _files(base / name)
    assert set(out["one"]) != set(out["default"])  # the overwrite below changes figures
    return out


def _signal_while_drawing(args: list[str], out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start ``perturbscore ARGS``; send ``sig`` once its first figure is staged in ``out``."""
    proc = subprocess.Popen(
        [*_entry_point(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    staged = out / f".compare.perturbscore-{proc.pid}.partial" / "figures"
    deadline = time.monotonic() + 120
    while not (staged.is_dir() and any(staged.iterdir())):
        assert proc.poll() is None, "compare ended before its first figure"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigkill_while_drawing_then_the_same_command(
    results: Path, clean: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    killed = _signal_while_drawing(_compare(results, out), out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    # Only the dead process's own bookkeeping is there, and no reader takes it for a result.
    assert all(p.name.startswith(".") for p in out.iterdir())
    assert _cli("report", out).returncode == 2
    again = _cli(*_compare(results, out))  # no --overwrite needed: nothing was published
    assert again.returncode == 0, again.stderr
    assert _files(out) == clean["default"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_while_drawing_leaves_nothing(
    results: Path, tmp_path: Path, sig: int, code: int
) -> None:
    out = tmp_path / "cmp"
    stopped = _signal_while_drawing(_compare(results, out), out, sig)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr and stopped.stdout == ""
    assert not out.exists()  # created by this call, and empty again: removed


@pytest.mark.parametrize("renames", [1, 7])
def test_sigkill_while_replacing_an_earlier_comparison(
    results: Path, clean: dict[str, dict[str, bytes]], tmp_path: Path, renames: int
) -> None:
    out = tmp_path / "cmp"
    first = _cli(*_compare(results, out, "--plot-track", "SYNTH0004"))
    assert first.returncode == 0, first.stderr
    killed = kill_in_commit(_compare(results, out, "--overwrite"), renames)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Mid-commit the earlier compare.json is already gone: no reader mixes the two.
    assert (out / JOURNAL).is_file() and not (out / "compare.json").exists()
    report = _cli("report", out)
    assert report.returncode == 2 and "killed while it published" in report.stderr
    # Any later command there first finishes the commit the journal promised.
    plain = _cli(*_compare(results, out))
    assert plain.returncode == 2 and "already exists" in plain.stderr
    assert "finished the commit of an interrupted run" in plain.stderr
    assert _files(out) == clean["default"]  # the new comparison, none of the earlier figures
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert _cli("report", out).returncode == 0
