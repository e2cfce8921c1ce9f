"""Benchmark: ``perturbscore normalise`` on a study-shaped run, beside a plain pyarrow copy.

Writes a run folder shaped like the study's at ``--scale 1.0``: groups ``stab`` (20,007
rows) and ``top`` (35,077 rows; 55,084 in all), the 177 selected tracks, aggregations
``ave`` and ``tss`` of ``abs_diff`` (4 tables), about 31% of the rows exactly 0 (the
study's out-of-field share).  Then measures, as whole processes (interpreter and
imports included, as a user runs them):

* ``normalise``  ``perturbscore normalise RUN --background stab --out OUT`` (quantile and
                 robust_z: 8 tables), Parquet in and out, and with ``--format`` of the run;
* ``floor``      a plain pyarrow script that reads every table and writes it twice
                 (the same bytes in and out, no arithmetic).

Prints seconds (best of ``--repeat``) and the ratio normalise / floor.

Usage::

    python benchmarks/bench_normalise_run.py [--scale 1.0] [--format parquet|rdata] [--repeat 1]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from perturbscore.manifest import build_manifest, manifest_text
from perturbscore.writers import FORMATS, open_writer

GROUPS = {"stab": 20_007, "top": 35_077}
N_TRACKS = 177
ZERO_SHARE = 0.31

FLOOR = """
import sys, pyarrow.parquet as pq
run, out = sys.argv[1], sys.argv[2]
import json, pathlib
m = json.loads(pathlib.Path(run, "manifest.json").read_text())
for o in m["outputs"]:
    t = pq.read_table(pathlib.Path(run, o["path"]))
    for k in range(2):
        pq.write_table(t, pathlib.Path(out, f"{k}_{o['path']}"))
"""


def write_run(folder: Path, scale: float, fmt: str) -> None:
    rng = np.random.default_rng(1)
    tracks = [f"T{i:04d}" for i in range(N_TRACKS)]
    folder.mkdir()
    outputs = []
    for g, n_full in GROUPS.items():
        n = max(10, int(n_full * scale))
        ids = pd.DataFrame(
            {
                "GENE": [f"ENSG{i // 3:08d}" for i in range(n)],
                "rsID": [f"rs{g}{i}" for i in range(n)],
                "REF": "A",
                "ALT": "G",
            }
        )
        for agg in ("ave", "tss"):
            scores = rng.gamma(0.5, 0.02, (n, N_TRACKS))
            scores[rng.random(n) < ZERO_SHARE] = 0.0
            name = f"{g}_abs_diff_{agg}"
            path = folder / f"{name}{FORMATS[fmt]}"
            w = open_writer(fmt, path, tracks, list(ids.columns), name, n)
            w.write(scores, ids)
            w.commit()
            outputs.append(
                {
                    "group": g,
                    "aggregation": agg,
                    "statistic": "abs_diff",
                    "path": path.name,
                    "object": name,
                    "rows": n,
                    "columns": N_TRACKS + 4,
                }
            )
    selected = pd.DataFrame(
        {
            "index": range(N_TRACKS),
            "identifier": tracks,
            "description": [f"CHIP:H3K27ac:GM12878 {i}" for i in range(N_TRACKS)],
        }
    )
    m = build_manifest(
        source="run",
        run_file=None,
        parameters={"format": fmt},
        targets={},
        selection={},
        tracks=selected,
        inputs=[],
        outputs=outputs,
        warnings=[],
    )
    (folder / "manifest.json").write_text(manifest_text(m))


def timed(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        out = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else Path(cmd[-1])
        shutil.rmtree(out, ignore_errors=True)
        if "--out" not in cmd:
            out.mkdir()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--format", default="parquet", choices=["parquet", "rdata"])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "perturbscore")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        write_run(run, args.scale, args.format)
        rows = sum(max(10, int(n * args.scale)) for n in GROUPS.values())
        norm = timed(
            [
                exe,
                "-q",
                "normalise",
                str(run),
                "--background",
                "stab",
                "--out",
                str(Path(tmp) / "norm"),
            ],
            args.repeat,
        )
        print(f"rows {rows} x {N_TRACKS} tracks x 2 aggregations, format {args.format}")
        print(f"normalise  {norm:8.2f} s  (8 tables: quantile + robust_z)")
        if args.format == "parquet":
            floor = timed(
                [sys.executable, "-c", FLOOR, str(run), str(Path(tmp) / "floor")], args.repeat
            )
            print(f"floor      {floor:8.2f} s  (pyarrow: read 4 tables, write 8)")
            print(f"ratio      {norm / floor:8.2f}")


if __name__ == "__main__":
    main()
