"""Benchmark: perturbscore vs the study's old CSV pipeline vs a bare numpy read loop.

Generates study-shaped predictions at ``--scale`` (1.0 = the study's 55,084 rows of
``(3, 5313)`` float32, 6.7 GB across REF and ALT), then measures, each in a fresh
subprocess so that peak RSS is its own:

* ``old``   a faithful re-implementation of the published three scripts: load all eight
            ``.npy`` files, write ALT-REF of the TSS bin and of the 3-bin mean for all
            5,313 tracks to CSV; re-read the CSVs and keep the 177 GM12878 tracks; take
            |ALT-REF|, attach GENE/rsID/REF/ALT by position, bind old then new batch, save
            RData (the R step done with pandas + pyreadr);
* ``new``   ``perturbscore run`` of the same job (``examples/stablefm.toml``'s recipe);
* ``bare``  a numpy loop over memory-mapped blocks that only reads the selected values
            (the floor for any implementation that must read the same bytes).

Wall times exclude interpreter start-up and imports and are the best of ``--repeat``
runs; peak RSS is the largest of them.  All runs read from a warm page cache (the data
were just written).  Prints a table and the ratios.

Usage::

    python benchmarks/bench_run.py --scale 0.1            # old vs new speed ratio
    python benchmarks/bench_run.py --scale 1.0 --skip-old  # peak RSS at the study's size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "stablefm"
STUDY_ROWS = {
    ("stab", ""): 14189,
    ("stab", "_new"): 5818,
    ("top", ""): 25049,
    ("top", "_new"): 10028,
}
BINS, TRACKS = 3, 5313
ID_COLUMNS = ["GENE", "rsID", "REF", "ALT"]


def _ref_name(kind: str, group: str, suffix: str) -> str:
    return f"final_{kind}_preds_{group}_snps{suffix}_strand.npy"


def _variants_name(group: str, suffix: str) -> str:
    return f"{group}_snps{suffix}_strand_final_variants.csv"


def generate(folder: Path, scale: float, seed: int = 0) -> None:
    """Write study-shaped predictions and variant tables (real tables from ../shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "scale.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"scale": scale}:
        return
    rng = np.random.default_rng(seed)
    for (group, suffix), rows in STUDY_ROWS.items():
        n = max(1, round(rows * scale))
        for kind in ("ref", "alt"):
            arr = np.lib.format.open_memmap(
                folder / _ref_name(kind, group, suffix),
                mode="w+",
                dtype=np.float32,
                shape=(n, BINS, TRACKS),
            )
            for start in range(0, n, 2048):
                stop = min(start + 2048, n)
                arr[start:stop] = rng.random((stop - start, BINS, TRACKS), dtype=np.float32) * 4
            arr.flush()
            del arr
        real = pd.read_csv(SHARED / _variants_name(group, suffix), dtype=str)
        reps = -(-n // len(real))
        pd.concat([real] * reps, ignore_index=True).iloc[:n].to_csv(
            folder / _variants_name(group, suffix), index=False
        )
    run_file = (REPO / "examples" / "stablefm.toml").read_text()
    run_file = run_file.replace(
        'targets = "targets_human.txt"', f'targets = "{SHARED / "targets_human.txt"}"'
    )
    run_file = run_file.replace(
        'shortlist = "basenji_relevant_metadata.csv"',
        f'shortlist = "{SHARED / "basenji_relevant_metadata.csv"}"',
    )
    (folder / "stablefm.toml").write_text(run_file)
    os.sync()  # flush the new files: dirty pages inflate the first reader's RSS
    stamp.write_text(json.dumps({"scale": scale}))


def old_pipeline(data: Path, work: Path) -> None:
    """The published three scripts, reproduced step by step (CSV round trips included)."""
    import pyreadr

    work.mkdir(parents=True, exist_ok=True)
    # Script 1: load all eight arrays, ALT-REF for every track, write CSVs.
    arrays = {
        (kind, g, s): np.load(data / _ref_name(kind, g, s))
        for (g, s) in STUDY_ROWS
        for kind in ("ref", "alt")
    }
    for g, s in STUDY_ROWS:
        ref, alt = arrays[("ref", g, s)], arrays[("alt", g, s)]
        pd.DataFrame(alt[:, 1, :] - ref[:, 1, :]).to_csv(work / f"{g}{s}_tss.csv", index=False)
        pd.DataFrame(np.mean(alt, axis=1) - np.mean(ref, axis=1)).to_csv(
            work / f"{g}{s}_ave.csv", index=False
        )
    del arrays
    # Script 2: re-read, keep the GM12878 tracks.
    keep = [str(i) for i in pd.read_csv(SHARED / "basenji_relevant_metadata.csv")["index"]]
    for g, s in STUDY_ROWS:
        for agg in ("tss", "ave"):
            pd.read_csv(work / f"{g}{s}_{agg}.csv")[keep].to_csv(
                work / f"{g}{s}_{agg}_relevant.csv", index=False
            )
    # Script 3 (R in the study): abs, IDs by position, bind old then new, save.
    for g in ("stab", "top"):
        for agg in ("ave", "tss"):
            parts = []
            for s in ("", "_new"):
                df = pd.read_csv(work / f"{g}{s}_{agg}_relevant.csv").abs()
                ids = pd.read_csv(data / _variants_name(g, s), dtype=str)
                for c in ID_COLUMNS:
                    df[c] = ids[c].to_numpy()
                parts.append(df)
            name = f"{g}_diff_{agg}_relevant_comb"
            pyreadr.write_rdata(
                str(work / f"{name}.RData"), pd.concat(parts, ignore_index=True), df_name=name
            )


def new_pipeline(data: Path, work: Path, memory: str) -> None:
    """perturbscore on the same job."""
    from perturbscore import RunOptions, run_path
    from perturbscore.memory import parse_size

    run_path(
        data / "stablefm.toml",
        work,
        RunOptions(memory_bytes=parse_size(memory), progress=False, overwrite=True),
    )


def bare_loop(data: Path) -> None:
    """Read only the selected values, block by block, and touch them."""
    sel = pd.read_csv(SHARED / "basenji_relevant_metadata.csv")["index"].to_numpy()
    total = 0.0
    for g, s in STUDY_ROWS:
        ref = np.load(data / _ref_name("ref", g, s), mmap_mode="r")
        alt = np.load(data / _ref_name("alt", g, s), mmap_mode="r")
        for start in range(0, ref.shape[0], 2048):
            total += float(ref[start : start + 2048][:, :, sel].sum())
            total += float(alt[start : start + 2048][:, :, sel].sum())
    if total == 42.0:  # keep the reads from being optimised away in spirit
        print("", end="")


def _measure(which: str, data: Path, work: Path, memory: str) -> None:
    start = time.perf_counter()
    if which == "old":
        old_pipeline(data, work)
    elif which == "new":
        new_pipeline(data, work, memory)
    else:
        bare_loop(data)
    wall = time.perf_counter() - start
    rss = peak_rss_bytes()
    print(json.dumps({"which": which, "wall_s": wall, "peak_rss_bytes": rss}))


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    VmHWM belongs to the process image: ``ru_maxrss`` survives exec on Linux and so can
    report the peak of the parent that started us (here, the one that just wrote GBs of
    data through memory maps).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(which: str, data: Path, work: Path, memory: str) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--_measure",
            which,
            "--data",
            str(data),
            "--work",
            str(work),
            "--memory",
            memory,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.1, help="1.0 = the study's 55,084 rows")
    ap.add_argument("--data", type=Path, default=None, help="data folder (default bench-data/S)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--memory", default="512MiB", help="perturbscore --memory")
    ap.add_argument("--repeat", type=int, default=2, help="runs of new and bare (best is kept)")
    ap.add_argument("--skip-old", action="store_true", help="skip the (slow) old pipeline")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--_measure", choices=["old", "new", "bare"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    data = args.data or REPO / "bench-data" / f"scale-{args.scale}"
    work = args.work or data / "work"
    if args._measure:
        _measure(args._measure, data, work, args.memory)
        return
    t0 = time.perf_counter()
    generate(data, args.scale)
    size = sum(p.stat().st_size for p in data.glob("final_*.npy"))
    print(
        f"data: scale {args.scale}, {size / 1e9:.2f} GB of predictions "
        f"(generated/checked in {time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    # Best wall time of the repeats, but the largest peak RSS: memory is a bound.
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for which in ("bare", "new"):
            r = measure(which, data, work / which, args.memory)
            best = results.setdefault(which, r)
            best["wall_s"] = min(best["wall_s"], r["wall_s"])
            best["peak_rss_bytes"] = max(best["peak_rss_bytes"], r["peak_rss_bytes"])
    if not args.skip_old:
        results["old"] = measure("old", data, work / "old", args.memory)
    print(f"{'pipeline':<10}{'wall s':>10}{'GB/s':>8}{'peak RSS MiB':>15}")
    for which, r in results.items():
        print(
            f"{which:<10}{r['wall_s']:>10.2f}{size / 1e9 / r['wall_s']:>8.2f}"
            f"{r['peak_rss_bytes'] / 2**20:>15.0f}"
        )
    new = results["new"]
    print(
        "perturbscore / bare numpy loop wall time: "
        f"{new['wall_s'] / results['bare']['wall_s']:.2f}x"
    )
    if "old" in results:
        print(
            f"old pipeline / perturbscore wall time:    "
            f"{results['old']['wall_s'] / new['wall_s']:.0f}x faster"
        )
        print(
            f"old pipeline / perturbscore peak RSS:     "
            f"{results['old']['peak_rss_bytes'] / new['peak_rss_bytes']:.1f}x"
        )
    print(
        f"perturbscore peak RSS: {new['peak_rss_bytes'] / 1e9:.3f} GB "
        f"(budget {args.memory} for its working set)"
    )
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
