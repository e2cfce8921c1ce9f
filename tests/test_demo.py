"""The demo never touches a file it did not write (issue 7): refuse, or replace only its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from perturbscore import demo
from perturbscore.demo import demo_results, write_demo_dataset
from perturbscore.errors import PerturbscoreError

OLD = 1_000_000_000  # a fixed past mtime (2001), so any rewrite shows


def _user_folder(folder: Path) -> dict[str, bytes]:
    """A study folder of the user's: some names the demo also writes, some it does not."""
    files = {
        "targets_human.txt": b"the user's own track table\n",
        "stab_snps_strand_final_variants.csv": b"GENE,rsID\nENSG1,rs1\n",
        "final_ref_preds_stab_snps_strand.npy": b"not really an array",
        "stablefm.toml": b'targets = "mine.txt"\n',
        "notes.txt": b"keep me\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (OLD, OLD))
    return files


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _refused(r, folder: Path) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "--overwrite" in r.stderr and "--out" not in r.stderr
    assert "nothing was changed" in r.stderr
    assert r.stdout == ""


def test_demo_refuses_a_folder_holding_the_users_files(tmp_path: Path, cli) -> None:
    folder = tmp_path / "study"
    _user_folder(folder)
    before = _snapshot(folder)
    r = cli("demo", folder)
    _refused(r, folder)
    assert "already holds 4 of the files the demo writes" in r.stderr
    assert "targets_human.txt" in r.stderr
    # Byte-identical, same mtimes, and no new file (results, staging leftovers).
    assert _snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)


def test_demo_dot_in_a_study_folder_changes_nothing(tmp_path: Path, cli) -> None:
    folder = tmp_path / "study"
    _user_folder(folder)
    before = _snapshot(folder)
    _refused(cli("demo", ".", cwd=folder), folder)
    assert _snapshot(folder) == before


def test_second_demo_is_refused_before_rewriting_anything(tmp_path: Path, cli) -> None:
    folder = tmp_path / "d"
    assert cli("demo", folder).returncode == 0
    for p in [folder, *folder.rglob("*")]:
        os.utime(p, (OLD, OLD))
    before = _snapshot(folder)
    _refused(cli("demo", folder), folder)
    assert _snapshot(folder) == before
    # Refused before any staging: not even the folder's own mtime moved.
    assert folder.stat().st_mtime == OLD


def test_demo_files_lists_what_the_demo_writes(tmp_path: Path) -> None:
    from perturbscore.demo import demo_files, write_demo_dataset

    written = write_demo_dataset(tmp_path / "d")
    assert sorted(p.relative_to(tmp_path / "d") for p in written) == sorted(demo_files())


def test_results_alone_in_the_way_refuse_before_the_inputs_are_written(tmp_path: Path, cli) -> None:
    folder = tmp_path / "d"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "manifest.json").write_text("{}")
    r = cli("demo", folder)
    _refused(r, folder)
    assert "results/manifest.json" in r.stderr
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "results",
        "results/manifest.json",
    ]


def test_overwrite_refuses_the_users_files_of_demo_names(tmp_path: Path, cli) -> None:
    # Trial 7, repro 02: a folder where no demo ever ran, holding the user's own
    # targets_human.txt: --overwrite must not replace a file the demo never wrote.
    folder = tmp_path / "r02"
    folder.mkdir()
    (folder / "targets_human.txt").write_text("my own track table\n")
    os.utime(folder / "targets_human.txt", (OLD, OLD))
    before = _snapshot(folder)
    r = cli("demo", folder, "--overwrite", "-q")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "targets_human.txt, which the demo did not write there" in r.stderr
    assert "nothing was changed" in r.stderr and r.stdout == ""
    assert _snapshot(folder) == before
    assert [p.name for p in folder.iterdir()] == ["targets_human.txt"]


@pytest.mark.parametrize("name", ["pairing", "results"])
@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_a_file_where_the_demo_writes_a_folder_is_refused_first(
    tmp_path: Path, cli, name: str, extra: list[str]
) -> None:
    # A file "pairing": a FileExistsError traceback halfway through the renames (15 demo
    # files left behind); a file "results": refused only after the 17 inputs were written.
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / name).write_text("my notes\n")
    r = cli("demo", folder, *extra)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert f"the demo writes into the folder {name}, but a file of that name" in r.stderr
    assert [p.name for p in folder.iterdir()] == [name]
    assert (folder / name).read_text() == "my notes\n"


def test_overwrite_refuses_a_study_folder_and_a_demo_file_the_user_edited(
    tmp_path: Path, cli
) -> None:
    folder = tmp_path / "study"
    _user_folder(folder)
    before = _snapshot(folder)
    r = cli("demo", folder, "--overwrite")
    assert r.returncode == 2 and "which the demo did not write there" in r.stderr, r.stderr
    assert _snapshot(folder) == before
    # The demo's own file, edited by the user, holds the user's work: refused as well.
    demo_dir = tmp_path / "d"
    assert cli("demo", demo_dir).returncode == 0
    with (demo_dir / "stablefm.toml").open("a") as f:
        f.write("# my edit\n")
    before = _snapshot(demo_dir)
    r = cli("demo", demo_dir, "--overwrite")
    assert r.returncode == 2 and "holds stablefm.toml, which the demo" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert _snapshot(demo_dir) == before


def test_overwrite_replaces_an_earlier_demos_files(tmp_path: Path, cli) -> None:
    # An earlier demo (here another seed: other bytes, as a demo of another version would
    # write) is vouched for by its record; the user's other file is untouched.
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"keep me\n")
    os.utime(folder / "notes.txt", (OLD, OLD))
    write_demo_dataset(folder, seed=8)
    assert cli("demo", folder).returncode == 2  # no --overwrite: refused as before
    r = cli("demo", folder, "--overwrite")
    assert r.returncode == 0, r.stderr
    fresh = tmp_path / "fresh"
    write_demo_dataset(fresh)
    assert (folder / "notes.txt").read_bytes() == b"keep me\n"
    assert (folder / "notes.txt").stat().st_mtime == OLD
    for p in fresh.rglob("*"):
        if p.is_file() and p.name != "perturbscore-demo.json":
            rel = p.relative_to(fresh)
            assert (folder / rel).read_bytes() == p.read_bytes(), rel
    assert {p.name for p in folder.iterdir()} == {p.name for p in fresh.iterdir()} | {
        "notes.txt",
        "results",
    }
    assert all(p.is_file() for p in demo_results(folder))
    # Again (what make demo does), and without a record: a file byte-identical to the
    # demo's holds nothing of the user's, so it is the demo's.
    assert cli("demo", folder, "--overwrite").returncode == 0
    (folder / "perturbscore-demo.json").unlink()
    r = cli("demo", folder, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (folder / "perturbscore-demo.json").is_file()


def test_overwrite_refuses_a_users_file_among_the_results(tmp_path: Path, cli) -> None:
    folder = tmp_path / "d"
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "stab_diff_ave_relevant_comb.RData").write_text("mine")
    before = _snapshot(folder)
    r = cli("demo", folder, "--overwrite")
    assert r.returncode == 2, r.stderr
    assert "holds results/stab_diff_ave_relevant_comb.RData, which the demo" in r.stderr
    assert _snapshot(folder) == before


def test_demo_into_a_file_is_refused(tmp_path: Path, cli) -> None:
    target = tmp_path / "afile"
    target.write_text("x")
    r = cli("demo", target)
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr
    assert "Traceback" not in r.stderr
    assert target.read_text() == "x"


def test_library_write_refuses_then_overwrites(tmp_path: Path) -> None:
    written = write_demo_dataset(tmp_path / "d")
    assert all(p.is_file() and (tmp_path / "d") in p.parents for p in written)
    with pytest.raises(PerturbscoreError, match=f"already holds {len(written)} of the files"):
        write_demo_dataset(tmp_path / "d")
    assert write_demo_dataset(tmp_path / "d", overwrite=True) == written


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    real = demo._write_files

    def half_then_fail(out: Path, n_tracks: int, seed: int) -> list[Path]:
        real(out, n_tracks, seed)
        raise OSError("disk full")

    monkeypatch.setattr(demo, "_write_files", half_then_fail)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="disk full"):
        write_demo_dataset(tmp_path / "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]
    with pytest.raises(OSError, match="disk full"):
        write_demo_dataset(tmp_path / "new" / "d")
    assert not (tmp_path / "new").exists()


def test_sigkill_while_staging_then_the_same_command(tmp_path: Path) -> None:
    # A real kill from outside once the staging folder exists: nothing is published, the
    # user's file stays, and the next demo there sweeps the dead one's staging folder.
    import signal
    import subprocess
    import time

    from .conftest import _entry_point

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    proc = subprocess.Popen(
        [*_entry_point(), "-q", "demo", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = folder / f".perturbscore-demo.perturbscore-{proc.pid}.partial"
    deadline = time.monotonic() + 60
    while not staging.is_dir():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["notes.txt"]
    again = subprocess.run(
        [*_entry_point(), "-q", "demo", str(folder)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert (folder / "notes.txt").read_text() == "keep me\n"


def test_sigkill_while_making_the_reference_copy_then_the_same_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``demo --overwrite`` over a demo folder whose record is gone compares its files with
    a fresh demo written to the system's temporary folder.  A real kill while that copy is
    made leaves it there; the next demo sweeps it (only a dead process's), and the
    folder's files are untouched by the killed command."""
    import signal

    from .conftest import run_cli, signal_when

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the children's system temporary folder
    folder = tmp_path / "demo"
    write_demo_dataset(folder)
    (folder / "perturbscore-demo.json").unlink()  # only byte identity can vouch now
    before = _snapshot(folder)
    args = ["-q", "demo", str(folder), "--overwrite"]
    copies = ".perturbscore-demo-reference.perturbscore-*.partial"
    killed = signal_when(
        args, lambda: any(temp.glob(copies)), signal.SIGKILL, "the reference copy"
    )
    assert killed.returncode == -signal.SIGKILL
    assert len(list(temp.glob(copies))) == 1  # what the kill left
    assert _snapshot(folder) == before
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert list(temp.iterdir()) == []  # the dead copy swept, the new one removed
    assert (folder / "results" / "manifest.json").is_file()
