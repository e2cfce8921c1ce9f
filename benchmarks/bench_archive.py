"""Benchmark: ``perturbscore run`` over the study's zip archive vs over the unpacked files.

Generates study-shaped predictions at ``--scale`` (1.0 = the study's 55,084 rows of
``(3, 5313)`` float32, 6.7 GB; the generator is ``bench_run.generate``), zips the eight
``.npy`` files into ``raw_scores/`` inside an archive twice, stored (``zip -0``) and
deflated (``zip``), and times whole ``perturbscore run`` processes of the study's run
file (``examples/stablefm.toml``) over:

* ``unpacked``   the eight ``.npy`` files;
* ``stored``     ``raw_scores_stored.zip::final_...npy`` (read in place);
* ``deflated``   ``raw_scores_deflated.zip::final_...npy`` (streamed, one reader thread);
* ``unzip+run``  ``unzip`` of the deflated archive, then a run over what it wrote (what
                 a user does today).

Every run's tables are checked byte-identical to the unpacked run's.  ``unpacked`` and
``stored`` are interleaved, best of ``--repeat``, and measured before the deflated
archive is made: both copies (2 x 7 GB at scale 1.0) must fit in the page cache
together, or the one evicted reads from disk and the ratio measures the disk, not the
reader.  ``--cold`` drops every input from the page cache before each run instead, so
that both read from disk.  Prints the table, the stored/unpacked ratio (goal: at most
1.1x) and the deflated throughput next to unzip + run.

Usage::

    python benchmarks/bench_archive.py --scale 0.3
    python benchmarks/bench_archive.py --scale 0.3 --stored-only --cold --keep
    python benchmarks/bench_archive.py --scale 1.0   # needs ~30 GB of free disk
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from as_users_run import as_users_run  # noqa: E402
from bench_run import REPO, generate  # noqa: E402

PREFIX = "raw_scores/"


def perturbscore() -> list[str]:
    exe = Path(sys.executable).parent / "perturbscore"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "perturbscore"]


def make_archive(data: Path, name: str, method: int, level: int | None) -> Path:
    """Zip the eight arrays into ``raw_scores/`` (as ``zip -r`` of the folder would)."""
    path = data / name
    if path.exists():
        return path
    tmp = path.with_suffix(".partial")
    with zipfile.ZipFile(tmp, "w", compression=method, compresslevel=level) as zf:
        zf.writestr(zipfile.ZipInfo(PREFIX), b"")
        for f in sorted(data.glob("final_*.npy")):
            zf.write(f, PREFIX + f.name)
    tmp.rename(path)
    return path


def archive_run_file(data: Path, archive: Path) -> Path:
    """``stablefm.toml`` of ``data`` with every array read from ``archive`` (by base name)."""
    text = (data / "stablefm.toml").read_text()
    text = re.sub(r'"(final_[a-z_]+\.npy)"', rf'"{archive.name}::\1"', text)
    path = data / f"{archive.stem}.toml"
    path.write_text(text)
    return path


def evict(paths: list[Path]) -> None:
    """Drop ``paths`` from the page cache (clean pages only; no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run(run_file: Path, out: Path, threads: int | None, cold: list[Path] | None = None) -> float:
    """Wall seconds of one whole ``perturbscore run`` process (``cold``: evicted first)."""
    if cold:
        evict(cold)
    cmd = [*perturbscore(), "-q", "run", str(run_file), "--out", str(out), "--overwrite"]
    if threads:
        cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return wall


def tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "manifest.json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.3, help="1.0 = the study's 55,084 rows")
    ap.add_argument("--data", type=Path, default=None, help="data folder (default bench-data/S)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of unpacked and stored")
    ap.add_argument("--threads", type=int, default=None, help="perturbscore --threads")
    ap.add_argument(
        "--level", type=int, default=6, help="deflate level of the archive (zip's default: 6)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="drop the inputs from the page cache before each run (reads from disk)",
    )
    ap.add_argument(
        "--stored-only", action="store_true", help="only unpacked vs stored (no deflated runs)"
    )
    args = ap.parse_args()
    as_users_run()
    data = args.data or REPO / "bench-data" / f"archive-{args.scale}"
    t0 = time.perf_counter()
    generate(data, args.scale)
    npy_bytes = sum(p.stat().st_size for p in data.glob("final_*.npy"))
    stored = make_archive(data, "raw_scores_stored.zip", zipfile.ZIP_STORED, None)
    print(
        f"data: scale {args.scale}, {npy_bytes / 1e9:.2f} GB of predictions; prepared in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    work = data / "work"
    files = {"unpacked": data / "stablefm.toml", "stored": archive_run_file(data, stored)}
    walls: dict[str, float] = {}
    # Every prediction byte a run may read: evicted before each run with --cold.
    inputs = sorted(data.glob("final_*.npy")) + [stored]
    cold = inputs if args.cold else None
    for _ in range(args.repeat):  # interleaved so both see the same machine state
        for which in ("unpacked", "stored"):
            wall = run(files[which], work / which, args.threads, cold)
            walls[which] = min(walls.get(which, wall), wall)
    ratio = walls["stored"] / walls["unpacked"]
    print(
        f"unpacked {walls['unpacked']:.2f} s, stored {walls['stored']:.2f} s: stored archive / "
        f"unpacked files wall time {ratio:.3f}x (goal <= 1.1x)",
        flush=True,
    )
    assert tables(work / "stored") == tables(work / "unpacked"), "stored: tables differ"
    if args.stored_only:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        return
    t0 = time.perf_counter()
    deflated = make_archive(data, "raw_scores_deflated.zip", zipfile.ZIP_DEFLATED, args.level)
    files["deflated"] = archive_run_file(data, deflated)
    if cold:
        cold.append(deflated)
    print(
        f"deflated archive {deflated.stat().st_size / 1e9:.2f} GB (level {args.level}), made "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    walls["deflated"] = run(files["deflated"], work / "deflated", args.threads, cold)
    # What a user does today: unzip (a second copy on disk), then run.
    unpacked_dir = work / "unzipped"
    shutil.rmtree(unpacked_dir, ignore_errors=True)
    if cold:
        evict(cold)
    start = time.perf_counter()
    subprocess.run(["unzip", "-q", str(deflated), "-d", str(unpacked_dir)], check=True)
    t_unzip = time.perf_counter() - start
    for f in data.glob("*.csv"):
        shutil.copy(f, unpacked_dir / PREFIX / f.name)
    shutil.copy(data / "stablefm.toml", unpacked_dir / PREFIX / "stablefm.toml")
    t_after = run(unpacked_dir / PREFIX / "stablefm.toml", work / "unzip-run", args.threads)
    walls["unzip+run"] = t_unzip + t_after

    expected = tables(work / "unpacked")
    for which in ("stored", "deflated", "unzip-run"):
        assert tables(work / which) == expected, f"{which}: tables differ from unpacked"
    print("tables: stored, deflated and unzip+run byte-identical to unpacked")
    print(f"{'input':<12}{'wall s':>9}{'MB/s':>9}")
    for which, wall in walls.items():
        print(f"{which:<12}{wall:>9.2f}{npy_bytes / 1e6 / wall:>9.0f}")
    print(f"  (unzip alone {t_unzip:.2f} s, run after it {t_after:.2f} s)")
    print(f"stored archive / unpacked files wall time: {ratio:.3f}x (goal <= 1.1x)")
    print(
        f"deflated archive: {npy_bytes / 1e6 / walls['deflated']:.0f} MB/s of predictions "
        f"({deflated.stat().st_size / 1e6 / walls['deflated']:.0f} MB/s compressed) vs "
        f"unzip + run {npy_bytes / 1e6 / walls['unzip+run']:.0f} MB/s: "
        f"{walls['unzip+run'] / walls['deflated']:.2f}x the time, and no second copy on disk"
    )
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    else:
        shutil.rmtree(unpacked_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
