"""Benchmark: ``perturbscore compare`` as a whole process against a scipy process.

Writes a run folder (manifest + Parquet tables, synthetic scores) of the study's size
(stab 20,007 rows, top 35,077 rows, 2 aggregations, ``--tracks`` tracks), then runs,
side by side in one go, each as its own process:

* ``perturbscore -q compare RUN --a stab --b top --out ...`` (unpaired);
* the user's alternative: read the tables 256 columns at a time with pyarrow and call
  ``scipy.stats.mannwhitneyu(..., axis=0, method="asymptotic")``;
* with ``--designs``, the three designs on a pairing table of 22,000 units.

and prints wall time and peak RSS of each, and their ratios.

Usage::

    python benchmarks/bench_compare.py [--tracks 5313] [--designs] [--memory 1GiB]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from as_users_run import as_users_run

ROWS = {"stab": 20_007, "top": 35_077}

SCIPY_SCRIPT = """
import sys, numpy as np, pyarrow.parquet as pq
from scipy import stats
run = sys.argv[1]; n = int(sys.argv[2])
ids = [f"T{i:05d}" for i in range(n)]
for agg in ("ave", "tss"):
    a = pq.ParquetFile(f"{run}/stab_abs_diff_{agg}.parquet")
    b = pq.ParquetFile(f"{run}/top_abs_diff_{agg}.parquet")
    for j in range(0, n, 256):
        cols = ids[j:j + 256]
        tb, ta = b.read(columns=cols), a.read(columns=cols)
        x = np.column_stack([tb.column(c).to_numpy() for c in cols])
        y = np.column_stack([ta.column(c).to_numpy() for c in cols])
        stats.mannwhitneyu(x, y, axis=0, method="asymptotic")
"""


def make_run(folder: Path, n_tracks: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    ids = [f"T{i:05d}" for i in range(n_tracks)]
    outputs = []
    n_units = 22_000
    for group, n in ROWS.items():
        genes = [f"ENSG{i % n_units:08d}.1" for i in range(n)]
        for agg in ("ave", "tss"):
            cols = {c: rng.gamma(1.5, 0.2, size=n) for c in ids}
            cols["GENE"] = genes
            cols["rsID"] = [f"rs{group}{i}" for i in range(n)]
            cols["ALT"] = ["G"] * n
            name = f"{group}_abs_diff_{agg}.parquet"
            pq.write_table(pa.table(cols), folder / name, row_group_size=8192)
            outputs.append(
                {"group": group, "aggregation": agg, "statistic": "abs_diff", "path": name,
                 "rows": n}
            )  # fmt: skip
    units = [f"ENSG{i:08d}.1" for i in range(n_units)]
    pd.DataFrame(
        {
            "unit": units,
            "rank": [1 + i % 3 for i in range(n_units)],
            "a_GENE": units,
            "b_GENE": units,
            "a_rsID": [f"rsstab{i}" for i in range(n_units)],
            "b_rsID": [f"rstop{i}" if i % 3 else f"rsstab{i}" for i in range(n_units)],
            "a_ALT": "G",
            "b_ALT": "G",
        }
    ).to_csv(folder / "pairs.csv", index=False)
    manifest = {
        "tracks": {
            "selected": [
                {"index": i, "identifier": t, "description": "CHIP:H3K27ac:GM12878"}
                for i, t in enumerate(ids)
            ]
        },
        "outputs": outputs,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process."""
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # A fresh wrapper per command so ru_maxrss is this command's own peak.
    wrapper = [
        sys.executable,
        "-c",
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(r.returncode)",
        *cmd,
    ]
    r = subprocess.run(wrapper, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    del before
    peak_kib = int(r.stderr.strip().splitlines()[-1])
    return wall, peak_kib / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=5313)
    ap.add_argument("--designs", action="store_true", help="Also run all three designs.")
    ap.add_argument("--memory", default="1GiB")
    ap.add_argument("--keep", default=None, help="Write the run here and keep it.")
    ap.add_argument("--reuse", default=None, help="A run folder written with --keep.")
    args = ap.parse_args()
    as_users_run()
    exe = str(Path(sys.executable).parent / "perturbscore")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.reuse:
            run = Path(args.reuse)
        else:
            run = Path(args.keep) if args.keep else Path(tmp)
            run.mkdir(parents=True, exist_ok=True)
            make_run(run, args.tracks)
        print(
            f"data: stab {ROWS['stab']} + top {ROWS['top']} rows x {args.tracks} tracks x 2 "
            f"aggregations (written in {time.perf_counter() - t0:.1f} s)"
        )
        ours = timed(
            [exe, "-q", "compare", str(run), "--a", "stab", "--b", "top", "--memory",
             args.memory, "--out", f"{tmp}/cmp_unpaired"]
        )  # fmt: skip
        print(f"perturbscore compare (unpaired): {ours[0]:7.1f} s, peak RSS {ours[1]:.2f} GiB")
        ref = timed([sys.executable, "-c", SCIPY_SCRIPT, str(run), str(args.tracks)])
        print(f"scipy mannwhitneyu, 256 columns: {ref[0]:7.1f} s, peak RSS {ref[1]:.2f} GiB")
        print(f"speed-up over scipy: {ref[0] / ours[0]:.2f}x")
        if args.designs:
            three = timed(
                [exe, "-q", "compare", str(run), "--a", "stab", "--b", "top",
                 "--design", "unpaired", "--design", "paired", "--design", "matching",
                 "--pairing", str(run / "pairs.csv"), "--memory", args.memory,
                 "--out", f"{tmp}/cmp_three"]
            )  # fmt: skip
            print(
                f"perturbscore compare (3 designs): {three[0]:6.1f} s, peak RSS {three[1]:.2f} GiB"
            )


if __name__ == "__main__":
    main()
