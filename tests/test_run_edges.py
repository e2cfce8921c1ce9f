"""``perturbscore run`` at the edges: an empty group, a full or read-only output disk.

Through the installed console script in a subprocess (exit code, one sentence, no
traceback, what is left in the folder).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyreadr
import pytest

from perturbscore.demo import write_demo_dataset

ID_COLUMNS = ["GENE", "rsID", "REF", "ALT"]
EXT = {"parquet": "parquet", "csv": "csv", "rds": "rds", "rdata": "RData"}


def _read(path: Path, fmt: str) -> pd.DataFrame:
    """A table through a reader that is not perturbscore's (pyreadr: librdata)."""
    if fmt == "parquet":
        return pq.read_table(path).to_pandas()
    if fmt == "csv":
        return pd.read_csv(path, dtype={c: str for c in ID_COLUMNS})
    (frame,) = pyreadr.read_r(path).values()
    return frame


@pytest.fixture(scope="module")
def emptied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo with both batches of group stab emptied: 0-row arrays, header-only CSVs."""
    folder = tmp_path_factory.mktemp("emptied")
    write_demo_dataset(folder)
    for suffix in ("", "_new"):
        for kind in ("ref", "alt"):
            p = folder / f"final_{kind}_preds_stab_snps{suffix}_strand.npy"
            np.save(p, np.load(p)[:0])
        p = folder / f"stab_snps{suffix}_strand_final_variants.csv"
        pd.read_csv(p, dtype=str).iloc[:0].to_csv(p, index=False)
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "csv", "rds", "rdata"])
def test_a_group_without_rows_writes_empty_tables(
    emptied: Path, tmp_path: Path, cli, fmt: str
) -> None:
    """Every format: the empty group's tables exist with the columns of any other table
    (score columns numeric, ID columns text) and no row; the other group is whole."""
    out = tmp_path / "out"
    r = cli("run", emptied / "stablefm.toml", "--out", out, "--format", fmt, "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    for agg in ("ave", "tss"):
        stab = _read(out / f"stab_diff_{agg}_relevant_comb.{EXT[fmt]}", fmt)
        top = _read(out / f"top_diff_{agg}_relevant_comb.{EXT[fmt]}", fmt)
        assert len(stab) == 0 and len(top) == 53 + 23
        assert list(stab.columns) == list(top.columns)
        assert list(stab.columns)[-4:] == ID_COLUMNS
        if fmt != "csv":  # a header-only CSV has no types to tell
            assert all(np.issubdtype(t, np.floating) for t in stab.dtypes.iloc[:-4])
            assert all(pd.api.types.is_string_dtype(t) for t in stab.dtypes.iloc[-4:])


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_r_loads_an_empty_group_table(emptied: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    assert cli("run", emptied / "stablefm.toml", "--out", out, "-q").returncode == 0
    script = (
        f'load("{out}/stab_diff_ave_relevant_comb.RData"); x <- stab_diff_ave_relevant_comb; '
        f'y <- readRDS("{out}/../rds.rds"); '
        'cat(nrow(x), ncol(x), class(x[[1]]), class(x[["rsID"]]), identical(x, y), "\\n")'
    )
    r = cli("run", emptied / "stablefm.toml", "--out", tmp_path / "r", "--format", "rds", "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.copy(tmp_path / "r" / "stab_diff_ave_relevant_comb.rds", tmp_path / "rds.rds")
    got = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    n_cols = len(_read(out / "top_diff_ave_relevant_comb.RData", "rdata").columns)
    assert got.stdout.split() == ["0", str(n_cols), "numeric", "character", "TRUE"]


# --- a full output disk ------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (needs root: sessions and CI containers here run as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo with 1,000 tracks (500 selected): about 2 MB of CSV tables."""
    folder = tmp_path_factory.mktemp("wide")
    write_demo_dataset(folder, n_tracks=1000)
    return folder


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.partial"))


def _error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("perturbscore: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(("fmt", "resume"), [("csv", False), ("parquet", True)])
def test_a_full_disk_is_one_sentence_and_leaves_no_partial_table(
    wide: Path, small_disk: Path, tmp_path: Path, cli, fmt: str, resume: bool
) -> None:
    """Exit 2 naming the folder and what to do; no ``.partial`` file, with or without
    --resume (which keeps its block state); after more space the same command finishes
    with the tables of a run on a roomy disk."""
    out = small_disk / "out"
    args = ["run", wide / "stablefm.toml", "--out", out, "--format", fmt, "--threads", "2"]
    args += ["--resume"] if resume else []
    r = cli(*args)
    assert r.returncode == 2, r.stderr[-3000:]
    line = _error_line(r.stderr)
    assert f"cannot write into {out}: its disk is full" in line
    assert line.endswith(".") and "free space" in line
    if resume:
        assert "run the same command again to continue" in line
        assert (out / ".perturbscore-resume").is_dir()
        assert _partials(out) == []
    else:
        assert not out.exists()  # the run created it, and nothing is left in it
    assert _partials(small_disk) == []

    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    r = cli(*args, "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    ref = tmp_path / "ref"
    assert cli("run", wide / "stablefm.toml", "--out", ref, "--format", fmt, "-q").returncode == 0
    for table in sorted(ref.glob(f"*.{fmt}")):
        assert (out / table.name).read_bytes() == table.read_bytes(), table.name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())


def test_a_disk_filling_up_while_the_tables_are_published(
    wide: Path, small_disk: Path, tmp_path: Path, cli
) -> None:
    """Tables and journal fit, the manifest does not: the journal stays (the tables are
    published, the manifest missing), and the sentence says the same command with --resume
    finishes it; it does, with the tables of a roomy run."""
    out = small_disk / "out"
    args = ["run", wide / "stablefm.toml", "--out", out, "--format", "csv", "-q"]
    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    assert cli(*args).returncode == 0
    st = os.statvfs(small_disk)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize  # tables and manifest
    manifest = (out / "manifest.json").stat().st_size
    ref = tmp_path / "ref"
    shutil.copytree(out, ref)
    shutil.rmtree(out)
    # At the commit the disk holds the tables, the journal (the manifest's text and the
    # renames) and the manifest's temporary: room for all but half a manifest.
    size_k = (used + manifest // 2) // 1024
    subprocess.run(["mount", "-o", f"remount,size={size_k}k", str(small_disk)], check=True)
    r = cli(*args)
    assert r.returncode == 2, r.stderr[-3000:]
    line = _error_line(r.stderr)
    assert f"cannot write into {out} while publishing the finished tables" in line
    assert "run the same command again (with --resume) to finish publishing them" in line
    assert (out / ".perturbscore-commit.json").is_file() and _partials(out) == []

    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    for table in sorted(ref.glob("*.csv")):
        assert (out / table.name).read_bytes() == table.read_bytes(), table.name


def test_a_full_disk_before_the_run_starts(wide: Path, small_disk: Path, cli) -> None:
    """Not even the folder lock fits: the same kind of sentence, exit 2."""
    out = small_disk / "out"
    out.mkdir()
    with open(small_disk / "filler", "wb") as fh:
        while True:
            try:
                fh.write(b"\0" * 65536)
                fh.flush()
            except OSError:
                break
    r = cli("run", wide / "stablefm.toml", "--out", out, "--format", "csv")
    assert r.returncode == 2
    line = _error_line(r.stderr)
    assert str(out) in line and "disk is full" in line and "choose another --out" in line


def test_messages_of_a_refused_write() -> None:
    """Read-only file system and quota: each names the folder and what to do."""
    from perturbscore.cli_common import write_refused
    from perturbscore.engine import write_failure

    out = Path("/data/run1")
    ro = write_failure(OSError(errno.EROFS, "Read-only file system"), out, None)
    assert ro == (
        "cannot write into /data/run1: it is on a read-only file system; no partial table is "
        "left: choose another --out folder."
    )
    quota = write_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), out, None)
    assert quota.startswith("cannot write into /data/run1: its disk quota is exceeded;")
    assert write_refused(OSError(errno.EROFS, "x", "/data/run1/.lock")) == (
        "cannot write /data/run1/.lock: the file system is read-only; choose another --out folder."
    )
    assert "/data/run1: the disk is full" in write_refused(OSError(errno.ENOSPC, "x"), out)


_NAN_CAUSE = (
    "1 score is NaN or infinite because the REF or ALT aggregate is (NaN/Inf in the "
    "predictions, passed through by --nan propagate)"
)
_PC_CAUSE = "1 score is NaN or infinite because agg + pseudocount <= 0 (pseudocount 1.0)"


def _log2fc_job(tmp_path: Path, ref: np.ndarray, alt: np.ndarray) -> Path:
    """A folder with the demo's 42-track table, ``ref``/``alt`` (``# N B T``), a variant
    table of ``N`` rows and ``r.toml``: log2fc of the 3-bin mean, CSV out."""
    demo = tmp_path / "demo"
    write_demo_dataset(demo)
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(demo / "targets_human.txt", work)
    n = len(ref)
    pd.DataFrame(
        {"GENE": [f"G{i}" for i in range(n)], "rsID": [f"rs{i}" for i in range(n)],
         "REF": "A", "ALT": "C"}  # fmt: skip
    ).to_csv(work / "v.csv", index=False)
    np.save(work / "ref.npy", ref)
    np.save(work / "alt.npy", alt)
    (work / "r.toml").write_text(
        'targets = "targets_human.txt"\n[scores]\naggregations = ["ave"]\n'
        'statistics = ["log2fc"]\n[output]\nformat = "csv"\n[[groups]]\nname = "g"\n'
        'batches = [ { ref = "ref.npy", alt = "alt.npy", variants = "v.csv" } ]\n'
    )
    return work


@pytest.mark.parametrize(
    ("nan", "non_positive", "expected"),
    [
        (True, False, f"log2fc: {_NAN_CAUSE}"),
        (False, True, f"log2fc: {_PC_CAUSE}"),
        (True, True, f"log2fc: {_NAN_CAUSE}; {_PC_CAUSE}"),
    ],
)
def test_the_log2fc_warning_names_its_cause(
    tmp_path: Path, cli, nan: bool, non_positive: bool, expected: str
) -> None:
    """Trial 7, repro 05: one NaN in the predictions (--nan propagate) was blamed on
    "agg + pseudocount <= 0", with "1 scores are"; each cause is now counted apart."""
    ref = np.random.default_rng(0).random((5, 3, 42), dtype=np.float32)
    alt = ref + np.float32(0.5)
    if nan:
        ref[3, 1, 5] = np.nan
    if non_positive:  # ave + pseudocount 1 is 0 for REF and ALT: log2(0 / 0)
        ref[0, :, 0] = alt[0, :, 0] = -1.0
    work = _log2fc_job(tmp_path, ref, alt)
    r = cli("run", work / "r.toml", "--out", work / "o", "--nan", "propagate")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "log2fc:" in line]
    assert len(warned) == 1 and warned[0].endswith(expected), r.stderr


def test_a_resume_log_of_an_earlier_version_does_not_guess_the_log2fc_cause(
    tmp_path: Path, cli
) -> None:
    """Blocks logged before the cause was recorded (no ``bad_log2_inputs``) are replayed
    with their NaN log2fc scores counted as of unknown cause, not as agg + pseudocount."""
    import json
    import signal

    from .test_resume import _kill_after

    # 400 blocks of one row: the signal lands mid-stream (see _kill_after).
    ref = np.random.default_rng(0).random((400, 3, 42), dtype=np.float32)
    alt = ref + np.float32(0.5)
    ref[3, 1, 5] = np.nan  # in a block logged before the signal
    work = _log2fc_job(tmp_path, ref, alt)
    args = ["run", str(work / "r.toml"), "--out", str(work / "o"), "--nan", "propagate",
            "--resume", "--chunk-rows", "1", "--threads", "1"]  # fmt: skip
    killed = _kill_after(args, 20, signal.SIGTERM)  # unwinds: the finished blocks are logged
    assert killed.returncode == 143, killed.stderr
    log = next((work / "o").glob(".perturbscore-resume/*.jsonl"))
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(e.get("bad_log2") for e in entries), entries[:5]  # the NaN block was logged
    for e in entries:
        e.pop("bad_log2_inputs", None)  # as an earlier version wrote them
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "log2fc:" in line]
    assert len(warned) == 1 and "agg + pseudocount" not in warned[0].split("(")[0], r.stderr
    assert warned[0].endswith(
        "log2fc: 1 score is NaN or infinite in blocks resumed from a log of an earlier "
        "version, which did not record why (NaN/Inf in the predictions, or agg + "
        "pseudocount <= 0)"
    ), warned


def test_earlier_outputs_are_uncached_and_left_as_they_are(tmp_path: Path) -> None:
    # --overwrite drops the page cache of the outputs it will replace, in a thread,
    # so that the commit's renames do not free it: files keep their bytes and times.
    # Only a regular file with one link is opened: a FIFO (opening it would release a
    # writer waiting on it), a folder, a link and a hard-linked file are left alone.
    import threading

    from perturbscore.outputs_earlier import uncache_replaced

    table = tmp_path / "stab.RData"
    table.write_bytes(os.urandom(1 << 20))
    before = (table.read_bytes(), table.stat().st_mtime_ns)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:  # blocks in open() until someone opens the FIFO to read
        with open(fifo, "wb") as fh:
            opened.set()
            fh.write(b"x")

    waiting = threading.Thread(target=writer, daemon=True)
    waiting.start()
    folder = tmp_path / "part.parquet"
    folder.mkdir()
    link = tmp_path / "link.RData"
    link.symlink_to(table)
    shared = tmp_path / "shared.RData"
    shared.write_bytes(b"y" * 4096)
    os.link(shared, tmp_path / "backup.RData")
    paths = [table, fifo, folder, link, shared, tmp_path / "missing.RData"]
    calls: list[str] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd, offset, length, advice)

    os.posix_fadvise = spy  # type: ignore[assignment]
    try:
        thread = uncache_replaced(paths)
        assert thread is not None
        thread.join(timeout=30)
    finally:
        os.posix_fadvise = real  # type: ignore[assignment]
    assert not thread.is_alive()
    assert calls == [str(table)]  # the one regular file with one link
    assert not opened.wait(0.5)  # the FIFO's writer still waits: it was never opened
    assert (table.read_bytes(), table.stat().st_mtime_ns) == before
    assert folder.is_dir() and link.is_symlink()
    assert uncache_replaced([]) is None
    with open(fifo, "rb") as fh:  # let the writer go
        assert fh.read() == b"x"
