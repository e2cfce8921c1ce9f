"""A real-shaped run for comparison tests: the study's variant tables, synthetic scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perturbscore import RunOptions, load_run_file, run

from .conftest import write_targets

TRACKS = ["DNASE:GM12878", "CHIP:H3K27ac:GM12878", "CHIP:CTCF:GM12878", "CAGE:liver, pool1"]


def make_real_shaped_run(shared: Path, folder: Path, fmt: str = "parquet") -> Path:
    """Run perturbscore on synthetic (N, 3, 4) predictions for the real variant tables.

    Top variants get a slightly larger perturbation on track 1 so tests have signal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    write_targets(
        folder / "targets_human.txt", [f"SYNTH{i:04d}" for i in range(len(TRACKS))], TRACKS
    )
    groups = []
    for group, shift in (("stab", 0.0), ("top", 0.3)):
        batches = []
        for suffix in ("", "_new"):
            name = f"{group}_snps{suffix}_strand_final_variants.csv"
            n = len(pd.read_csv(shared / name, usecols=["rsID"]))
            ref = rng.gamma(2.0, 1.0, size=(n, 3, len(TRACKS))).astype(np.float32)
            alt = ref + rng.normal(0, 0.5, size=ref.shape).astype(np.float32)
            alt[:, :, 1] += np.float32(shift)
            np.save(folder / f"{group}{suffix}_ref.npy", ref)
            np.save(folder / f"{group}{suffix}_alt.npy", alt)
            batches.append(
                f'{{ ref = "{group}{suffix}_ref.npy", alt = "{group}{suffix}_alt.npy",'
                f' variants = "{(shared / name).resolve()}" }}'
            )
        groups.append(f'[[groups]]\nname = "{group}"\nbatches = [{", ".join(batches)}]\n')
    (folder / "run.toml").write_text(
        f'targets = "targets_human.txt"\n[scores]\naggregations = ["ave", "tss"]\n'
        f'[output]\nformat = "{fmt}"\n' + "\n".join(groups)
    )
    out = folder / "results"
    run(load_run_file(folder / "run.toml"), out, RunOptions(progress=False))
    return out
