"""Benchmark: compare 5,313 tracks x 2 aggregations on 50,000 variants.

Writes a run folder (manifest + Parquet tables, synthetic scores) for two groups of
25,000 variants each, then times ``compare_groups`` (unpaired rank-sum over every track
of both aggregations) and the paired design on 25,000 units.

Usage::

    python benchmarks/bench_compare.py [--variants 50000] [--tracks 5313]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from perturbscore.compare import compare_groups


def make_run(folder: Path, n_variants: int, n_tracks: int) -> Path:
    rng = np.random.default_rng(0)
    ids = [f"T{i:05d}" for i in range(n_tracks)]
    half = n_variants // 2
    outputs = []
    genes = [f"ENSG{i:08d}.1" for i in range(half)]
    for group in ("stab", "top"):
        for agg in ("ave", "tss"):
            scores = rng.gamma(1.5, 0.2, size=(half, n_tracks)).astype(np.float64)
            df = pd.DataFrame(scores, columns=ids)
            df["GENE"], df["rsID"] = genes, [f"rs{group}{i}" for i in range(half)]
            df["REF"], df["ALT"] = "A", "G"
            name = f"{group}_abs_diff_{agg}.parquet"
            df.to_parquet(folder / name)
            outputs.append(
                {
                    "group": group,
                    "aggregation": agg,
                    "statistic": "abs_diff",
                    "path": name,
                    "rows": half,
                }
            )
    pd.DataFrame(
        {
            "unit": genes,
            "a_GENE": genes,
            "b_GENE": genes,
            "a_rsID": [f"rsstab{i}" for i in range(half)],
            "b_rsID": [f"rstop{i}" for i in range(half)],
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", type=int, default=50_000)
    ap.add_argument("--tracks", type=int, default=5313)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = make_run(Path(tmp), args.variants, args.tracks)
        print(
            f"data: {args.variants} variants x {args.tracks} tracks x 2 aggregations "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        for design in ("unpaired", "paired"):
            t0 = time.perf_counter()
            res = compare_groups(
                folder,
                "stab",
                "top",
                designs=[design],
                pairing=[folder / "pairs.csv"] if design == "paired" else (),
            )
            wall = time.perf_counter() - t0
            print(
                f"compare {design:<9} {len(res.tests):>6} tests in {wall:6.1f} s "
                f"({len(res.tests) / wall:,.0f} tests/s)"
            )


if __name__ == "__main__":
    main()
