"""Crashes the way the world makes them: real processes, real signals, then --resume.

Kills come from outside (SIGKILL, SIGINT, SIGTERM sent by the test to a running
``perturbscore run``) at seeded points of the stream, or, for points too short to hit
from outside (between two renames of a commit), from a small harness that runs the
real console entry point and sends SIGKILL to its own process there: no cleanup code
runs in either case.  After each, the same command with ``--resume`` must give tables
byte-identical to an uninterrupted run and leave nothing else in the output folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.outputs import JOURNAL, LOCK, recover
from perturbscore.resume import STATE_DIR

from .conftest import _entry_point, write_targets

TOML = "kill.toml"
ROWS = {"stab": (150, 70), "top": (120, 60)}  # 400 rows: 400 one-row blocks
F_SETPIPE_SZ = 1031  # fcntl: set a pipe's capacity (Linux)


def write_kill_study(folder: Path, n_tracks: int = 6, bins: int = 3, seed: int = 3) -> Path:
    """A study-shaped dataset with enough rows for many one-row blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_targets(
        folder / "targets.txt",
        [f"K{i:03d}" for i in range(n_tracks)],
        [f"DNASE:GM12878 k{i}" for i in range(n_tracks)],
    )
    lines = ['targets = "targets.txt"', "", "[output]", 'format = "parquet"', ""]
    for group, sizes in ROWS.items():
        batches = []
        for b, n in enumerate(sizes):
            ref = rng.normal(size=(n, bins, n_tracks)).astype(np.float32)
            alt = ref + rng.normal(scale=0.1, size=ref.shape).astype(np.float32)
            np.save(folder / f"{group}{b}_ref.npy", ref)
            np.save(folder / f"{group}{b}_alt.npy", alt)
            pd.DataFrame(
                {
                    "GENE": [f"G{i // 4}" for i in range(n)],
                    "rsID": [f"rs{group}{b}_{i}" for i in range(n)],
                    "REF": "A",
                    "ALT": "G",
                }
            ).to_csv(folder / f"{group}{b}.csv", index=False)
            batches.append(
                f'{{ ref = "{group}{b}_ref.npy", alt = "{group}{b}_alt.npy", '
                f'variants = "{group}{b}.csv" }}'
            )
        lines += ["[[groups]]", f'name = "{group}"', "batches = [", *(f"  {x}," for x in batches)]
        lines += ["]", ""]
    (folder / TOML).write_text("\n".join(lines))
    return folder / TOML


@pytest.fixture()
def kstudy(tmp_path: Path) -> Path:
    return write_kill_study(tmp_path / "kstudy")


def _args(run_file: Path, out: Path, *extra: object) -> list[str]:
    return ["run", str(run_file), "--out", str(out), "--chunk-rows", "1", *map(str, extra)]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_entry_point(), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _tables(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }


def _clean(kstudy: Path, tmp_path: Path, *extra: object) -> dict[str, bytes]:
    # Default blocks: the block size never changes a table's bytes.
    out = tmp_path / "clean"
    r = _cli("run", str(kstudy), "--out", str(out), *map(str, extra))
    assert r.returncode == 0, r.stderr
    return _tables(out)


def _kill_after(args: list[str], blocks: int, sig: int) -> subprocess.CompletedProcess[str]:
    """Start ``perturbscore -v ARGS``, send ``sig`` once ``blocks`` blocks are logged.

    The child logs a line per block to a pipe that is read only this far: once the
    pipe (shrunk to one page, about 60 lines) is full the child waits, so the signal
    always lands mid-stream.
    """
    proc = subprocess.Popen(
        [*_entry_point(), "-v", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    fcntl.fcntl(proc.stderr.fileno(), F_SETPIPE_SZ, 4096)
    seen = 0
    for line in proc.stderr:
        if " done (" in line and line.startswith("perturbscore: DEBUG: block"):
            seen += 1
            if seen >= blocks:
                break
    assert seen >= blocks, "the run ended before the kill point"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _leftovers(out: Path) -> list[str]:
    names = sorted(p.name for p in out.iterdir())
    return [n for n in names if n.startswith(".")]


SEEDS = [11, 23, 37]


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_midstream_then_resume_is_identical(
    kstudy: Path, tmp_path: Path, seed: int
) -> None:
    clean = _clean(kstudy, tmp_path)
    out = tmp_path / "out"
    point = random.Random(seed).randint(5, 300)
    killed = _kill_after(_args(kstudy, out, "--resume"), point, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    # A kill -9 runs no cleanup: its temporary tables and lock are still there ...
    assert any(n.endswith(".partial") for n in _leftovers(out))
    resumed = _cli(*_args(kstudy, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert _tables(out) == clean
    # ... and the resumed run swept them: only the tables and the manifest remain.
    assert _leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted([*clean, "manifest.json"])
    # stdout lists every file written, one per line.
    assert sorted(Path(x).name for x in resumed.stdout.split()) == sorted([*clean, "manifest.json"])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_sigterm_clean_up_and_say_how_to_continue(
    kstudy: Path, tmp_path: Path, sig: int, code: int
) -> None:
    clean = _clean(kstudy, tmp_path, "--format", "rdata")
    out = tmp_path / "out"
    killed = _kill_after(_args(kstudy, out, "--resume", "--format", "rdata"), 150, sig)
    assert killed.returncode == code, killed.stderr[-2000:]
    name = signal.Signals(sig).name
    assert f"perturbscore: interrupted by {name}:" in killed.stderr
    assert "run the same command again to continue" in killed.stderr
    assert "Traceback" not in killed.stderr
    # Cleanup ran: no temporary tables, no lock; only the recorded blocks stay.
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR]
    resumed = _cli(*_args(kstudy, out, "--resume", "--format", "rdata"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr
    assert _tables(out) == clean and _leftovers(out) == []


def test_sigterm_without_resume_writes_nothing(kstudy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = _kill_after(_args(kstudy, out), 100, signal.SIGTERM)
    assert killed.returncode == 143
    assert "nothing was written" in killed.stderr and "--resume" in killed.stderr
    assert not out.exists()  # the folder it created is gone again


def test_lost_unsynced_scores_are_recomputed_not_zeros(kstudy: Path, tmp_path: Path) -> None:
    clean = _clean(kstudy, tmp_path)
    out = tmp_path / "out"
    assert _kill_after(_args(kstudy, out, "--resume"), 250, signal.SIGKILL).returncode < 0
    data = out / STATE_DIR / "blocks.f8"
    lines = (out / STATE_DIR / "blocks.jsonl").read_text().splitlines()
    assert lines, "no block was confirmed before the kill"
    # A node that died lost the tail of the score file but kept the log (the old bug
    # extended the file with zeros and replayed them).
    os.truncate(data, data.stat().st_size // 3)
    resumed = _cli(*_args(kstudy, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "incomplete on disk" in resumed.stderr
    assert _tables(out) == clean


def test_corrupt_scores_fail_their_checksum_and_are_recomputed(
    kstudy: Path, tmp_path: Path
) -> None:
    clean = _clean(kstudy, tmp_path)
    out = tmp_path / "out"
    assert _kill_after(_args(kstudy, out, "--resume"), 250, signal.SIGKILL).returncode < 0
    data = out / STATE_DIR / "blocks.f8"
    size = (out / STATE_DIR / "blocks.jsonl").read_text().count("\n")
    assert size > 20
    with open(data, "r+b") as fh:
        fh.seek(10 * 6 * 8 * 2 + 3)  # inside the 11th block
        fh.write(b"\xff\xff")
    resumed = _cli(*_args(kstudy, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "fails its checksum" in resumed.stderr
    assert _tables(out) == clean


HARNESS = textwrap.dedent(
    """
    import os, signal, sys
    import perturbscore.outputs as outputs
    calls = {"n": 0}
    real = outputs._replace
    def replace(tmp, final):
        real(tmp, final)
        calls["n"] += 1
        if calls["n"] == int(os.environ["KILL_AFTER_RENAMES"]):
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup runs
    outputs._replace = replace
    from perturbscore.cli import main
    sys.argv = ["perturbscore", *sys.argv[1:]]
    main()
    """
)


def kill_in_commit(args: list[str], renames: int) -> subprocess.CompletedProcess[str]:
    """Run ``perturbscore ARGS`` through :data:`HARNESS`: SIGKILL after ``renames``
    renames of its commit."""
    return subprocess.run(
        [sys.executable, "-c", HARNESS, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KILL_AFTER_RENAMES": str(renames)},
        timeout=300,
    )


def again_after_sigkill(
    killed: subprocess.CompletedProcess[str], args: list[str], out: Path, reader: str
) -> None:
    """What every command owes a folder its ``kill -9`` (``killed``) left before publishing:
    only the dead process's hidden leftovers are there, the ``reader`` command refuses
    ``out``, and the same command (``args``, no --overwrite: nothing was published)
    succeeds and sweeps them.  The caller compares the outputs."""
    from .conftest import run_cli

    assert killed.returncode == -signal.SIGKILL
    assert all(p.name.startswith(".") for p in out.iterdir())
    assert run_cli(reader, out).returncode == 2
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def kill_while_replacing(
    first: list[str], second: list[str], out: Path, listing: str, reader: str, renames: int
) -> subprocess.CompletedProcess[str]:
    """``perturbscore FIRST`` into ``out``, then ``SECOND --overwrite`` killed after
    ``renames`` renames of its commit; checks what every command owes such a folder.

    Mid-commit the earlier ``listing`` (its manifest) is already gone, so the
    ``reader`` command (its first argument after the command: ``out``) refuses the
    folder rather than mix the two outputs; the next ``SECOND`` there (without
    --overwrite) first finishes the commit the journal promised and leaves nothing
    hidden.  Returns that last call, for the caller's own checks.
    """
    from .conftest import run_cli

    done = run_cli(*first)
    assert done.returncode == 0, done.stderr
    killed = kill_in_commit([*second, "--overwrite"], renames)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / JOURNAL).is_file() and not (out / listing).exists()
    refused = run_cli(reader, out)
    assert refused.returncode == 2 and "killed while it published" in refused.stderr
    plain = run_cli(*second)
    assert plain.returncode == 2 and "finished the commit of an interrupted run" in plain.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    return plain


@pytest.mark.parametrize("renames", [1, 3])
def test_killed_during_commit_is_finished_by_the_next_run(
    kstudy: Path, tmp_path: Path, renames: int
) -> None:
    clean = _clean(kstudy, tmp_path)
    out = tmp_path / "out"
    r = kill_in_commit(_args(kstudy, out, "--resume"), renames)
    assert r.returncode == -signal.SIGKILL, r.stderr
    published = [n for n in clean if (out / n).exists()]
    assert len(published) == renames and (out / JOURNAL).exists()
    resumed = _cli(*_args(kstudy, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "finished the commit of an interrupted run" in resumed.stderr
    assert _tables(out) == clean
    assert sorted(p.name for p in out.iterdir()) == sorted([*clean, "manifest.json"])


def test_readers_refuse_a_folder_caught_mid_commit(kstudy: Path, tmp_path: Path) -> None:
    # --overwrite over an earlier run, killed after one rename: the earlier manifest is
    # gone first, and every reader says what happened instead of mixing the two runs.
    out = tmp_path / "out"
    assert _cli(*_args(kstudy, out)).returncode == 0
    r = kill_in_commit(_args(kstudy, out, "--overwrite"), 1)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (out / JOURNAL).exists() and not (out / "manifest.json").exists()
    for reader in (
        ["check", str(out)],
        ["compare", str(out), "--a", "stab", "--b", "top", "--out", str(tmp_path / "c")],
        ["normalise", str(out), "--background", "stab", "--out", str(tmp_path / "n")],
    ):
        refused = _cli(*reader)
        assert refused.returncode == 2, (reader, refused.stderr)
        assert "was killed while it published its outputs" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "n").exists()
    again = _cli(*_args(kstudy, out, "--overwrite"))
    assert again.returncode == 0, again.stderr
    assert _cli("check", str(out)).returncode == 0


def test_commit_finished_by_a_plain_rerun_too(kstudy: Path, tmp_path: Path) -> None:
    clean = _clean(kstudy, tmp_path)
    out = tmp_path / "out"
    kill_in_commit(_args(kstudy, out), 2)
    again = _cli(*_args(kstudy, out))
    # The interrupted commit is completed; the new run then finds the tables there.
    assert again.returncode == 2 and "already holds" in again.stderr
    assert _tables(out) == clean and not (out / JOURNAL).exists()


def test_sweep_removes_only_dead_processes_partials(kstudy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (out / f".stab_abs_diff_ave.parquet.perturbscore-{dead}.partial").write_bytes(b"x" * 100)
    (out / f".stab_scores.zarr.perturbscore-{dead}.partial").mkdir()
    (out / f".stab_scores.zarr.perturbscore-{dead}.partial" / "chunk").write_bytes(b"y")
    mine = out / f".notes.txt.perturbscore-{os.getpid()}.partial"  # a live process's: kept
    mine.write_text("keep")
    (out / "notes.txt").write_text("the user's")
    # The user's own files of a form other programs use for temporaries are not ours
    # (a bare .{name}.{pid}.partial was swept), nor a folder moved aside by another tool.
    users = [f".mydata.{dead}.partial", f".stab_abs_diff_ave.parquet.{dead}.partial"]
    for name in users:
        (out / name).write_text("the user's")
    (out / LOCK).write_text(f"{dead}\n")  # a dead process's lock is taken over
    r = _cli(*_args(kstudy, out))
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    assert mine.name in names and (out / "notes.txt").read_text() == "the user's"
    assert all((out / name).read_text() == "the user's" for name in users)
    assert not any(dead in n for n in names - set(users)) and LOCK not in names


def test_a_killed_but_unreaped_process_does_not_hold_the_folder(
    kstudy: Path, tmp_path: Path
) -> None:
    # SIGKILL leaves a zombie until the parent waits for it (a container's init or a
    # crashed job runner may never do so): its pid exists, yet it writes nothing.
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.send_signal(signal.SIGKILL)
        for _ in range(200):  # until the kernel has made it a zombie (not waited for)
            state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                break
            time.sleep(0.01)
        assert state == "Z"
        (out / LOCK).write_text(f"{child.pid}\n")
        (out / f".stab_abs_diff_ave.parquet.perturbscore-{child.pid}.partial").write_bytes(b"x")
        r = _cli(*_args(kstudy, out))
        assert r.returncode == 0, r.stderr
        names = {p.name for p in out.iterdir()}
        assert LOCK not in names and not any(str(child.pid) in n for n in names)
    finally:
        child.wait()


def test_state_without_resume_is_refused(kstudy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _kill_after(_args(kstudy, out, "--resume"), 50, signal.SIGKILL).returncode < 0
    r = _cli(*_args(kstudy, out))
    assert r.returncode == 2
    assert "add --resume to continue it" in r.stderr and "Traceback" not in r.stderr


def test_changed_input_is_refused_naming_it(kstudy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _kill_after(_args(kstudy, out, "--resume"), 50, signal.SIGKILL).returncode < 0
    p = kstudy.parent / "top0_alt.npy"
    arr = np.load(p)
    arr[0] += 1
    np.save(p, arr)
    r = _cli(*_args(kstudy, out, "--resume"))
    assert r.returncode == 2
    assert f"{p} changed (modification time)" in r.stderr


def test_rewritten_zarr_chunks_are_refused(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    folder = tmp_path / "z"
    run_file = write_kill_study(folder)
    text = run_file.read_text()
    root = zarr.open_group(str(folder / "preds.zarr"), mode="a")
    for p in sorted(folder.glob("*_ref.npy")) + sorted(folder.glob("*_alt.npy")):
        arr = np.load(p)
        z = root.create_array(p.stem, shape=arr.shape, chunks=(50, *arr.shape[1:]), dtype=arr.dtype)
        z[:] = arr
        text = text.replace(f'"{p.name}"', f'"preds.zarr::{p.stem}"')
    run_file.write_text(text)
    out = tmp_path / "out"
    assert _kill_after(_args(run_file, out, "--resume"), 50, signal.SIGKILL).returncode < 0
    z = zarr.open_group(str(folder / "preds.zarr"), mode="r+")["top0_alt"]
    z[0:10] = z[0:10] + 1  # rewrites a chunk: the store folder's size and mtime stay
    r = _cli(*_args(run_file, out, "--resume"))
    assert r.returncode == 2, r.stderr
    assert f"{folder / 'preds.zarr'} changed" in r.stderr and "chunk files" in r.stderr


def test_different_chunk_rows_on_resume_is_reported(kstudy: Path, tmp_path: Path) -> None:
    clean = _clean(kstudy, tmp_path)
    out = tmp_path / "out"
    assert _kill_after(_args(kstudy, out, "--resume"), 100, signal.SIGKILL).returncode < 0
    r = _cli("run", str(kstudy), "--out", str(out), "--chunk-rows", "7", "--resume")
    assert r.returncode == 0, r.stderr
    assert "--chunk-rows 7 ignored: the recorded run used 1 rows per block" in r.stderr
    assert _tables(out) == clean


def test_repeating_a_finished_resume_run_reports_it_done(kstudy: Path, tmp_path: Path) -> None:
    """A requeued job repeats its command after the run finished: exit 0, the same files
    listed, nothing rewritten; with a changed input it is a new run (refused as before)."""
    out = tmp_path / "out"
    first = _cli(*_args(kstudy, out, "--resume"))
    assert first.returncode == 0, first.stderr
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    again = _cli(*_args(kstudy, out, "--resume"))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert "nothing to resume" in again.stderr and "nothing was written" in again.stderr
    assert "tables written" not in again.stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    p = kstudy.parent / "top0_alt.npy"
    arr = np.load(p)
    arr[0] += 1
    np.save(p, arr)
    changed = _cli(*_args(kstudy, out, "--resume"))
    assert changed.returncode == 2 and "--overwrite" in changed.stderr
    assert "holds a finished run with other inputs or options" in changed.stderr
    assert "top0_alt.npy changed" in changed.stderr


HOLD_LOCK = """
import sys, time
from pathlib import Path
from typing import Any
from perturbscore.locks import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_the_folder_lock_dies_with_its_process(kstudy: Path, tmp_path: Path) -> None:
    # A live holder keeps the folder; once it is killed (SIGKILL: no cleanup runs, and
    # it may stay a zombie), the kernel has released its flock and the next run proceeds.
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        busy = _cli(*_args(kstudy, out))
        assert busy.returncode == 2
        assert f"another perturbscore process (pid {holder.pid})" in busy.stderr
        holder.send_signal(signal.SIGKILL)
        time.sleep(0.2)  # not waited for: a zombie now
        r = _cli(*_args(kstudy, out))
        assert r.returncode == 0, r.stderr
        assert LOCK not in {p.name for p in out.iterdir()}
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_naming_a_reused_pid_is_taken_over(kstudy: Path, tmp_path: Path) -> None:
    # The pid now belongs to an unrelated live process that holds no lock.
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(f"{os.getpid()} {__import__('socket').gethostname()}\n")
    r = _cli(*_args(kstudy, out))
    assert r.returncode == 0, r.stderr


def test_another_hosts_lock_file_is_not_taken_over(kstudy: Path, tmp_path: Path) -> None:
    # On a shared disk a lock taken on another node may not reach this one: say whose
    # it is and how to clear it, and touch nothing.
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text("4242 node17.cluster\n")
    theirs = out / ".stab_abs_diff_ave.parquet.perturbscore-4242.partial"
    theirs.write_bytes(b"node17's")
    r = _cli(*_args(kstudy, out))
    assert r.returncode == 2
    assert "pid 4242 on node17.cluster" in r.stderr and "delete that file" in r.stderr
    assert theirs.read_bytes() == b"node17's"
    assert (out / LOCK).read_text() == "4242 node17.cluster\n"


@pytest.mark.parametrize(
    "bad",
    [
        {"remove": ["../outside/keep.txt"]},
        {"remove": ["OUTSIDE/dir"]},  # an absolute path
        {"remove": ["link/keep.txt"]},  # through a linked folder
        {"moves": [["t.tmp", "../outside/dir"]]},
        {"moves": [["../outside/keep.txt", "t2"]]},
        {"manifest": ["../outside/keep.txt", "{}"]},
    ],
)
def test_a_journal_naming_paths_outside_its_folder_is_refused(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    """An edited or foreign journal that names a path outside the folder ('..', an
    absolute path, a linked folder) is refused, naming it; nothing outside is touched."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (outside / "dir").mkdir()
    (outside / "dir" / "data.txt").write_text("mine")
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "t.tmp").write_text("new")
    journal = {
        "pid": 2**22 + 12345,  # above pid_max: no such process
        "remove": [],
        "moves": [],
        "manifest": ["manifest.json", "{}"],
    }
    text = json.dumps({**journal, **bad}).replace("OUTSIDE", str(outside))
    (out / JOURNAL).write_text(text)
    with pytest.raises(PerturbscoreError, match="outside .*it is not one perturbscore wrote"):
        recover(out)
    assert (outside / "keep.txt").read_text() == "mine"
    assert (outside / "dir" / "data.txt").read_text() == "mine"
    assert (out / "t.tmp").read_text() == "new" and not (out / "manifest.json").exists()


def test_a_finished_run_names_the_option_that_changed(kstudy: Path, tmp_path: Path) -> None:
    """Trial 7, repro 16 (b, c): --center-bin given on the command line was reported as
    "the run file's settings differ (center_bin)", and a changed --zarr as "--out-of-field
    or --zarr differs"; the option is named, with its values."""
    out = tmp_path / "out"
    first = _cli(*_args(kstudy, out, "--resume", "--center-bin", "1"))
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for extra, said in (
        (("--center-bin", "0"), "(--center-bin or the run file's center_bin was 1, now 0)"),
        (("--center-bin", "1", "--zarr"), "(--zarr was not given, now given)"),
    ):
        r = _cli(*_args(kstudy, out, "--resume", *extra))
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if "error" in line]
        assert "Traceback" not in r.stderr and len(errors) == 1, r.stderr
        assert f"holds a finished run with other inputs or options {said}, so" in errors[0]
        assert "settings differ" not in r.stderr and "or --zarr differs" not in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
