"""A tiny run for comparison tests: two groups of pure noise, some variants out of field.

Both groups draw REF and ALT from the same distribution (no group effect on any track);
a chosen share of each group's variants lies outside the model's input, where ALT is
REF, so every score is exactly 0 as in the study's tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perturbscore import RunOptions, load_run_file, run

from .conftest import write_targets

TRACKS = [f"T{i}" for i in range(6)]
#: Enformer's window centre offset: 196,608 bp from the window's first base.
CENTRE = 196_608


def tiny_run(
    folder: Path,
    out_of_field: dict[str, int],
    n: int = 200,
    fmt: str = "csv",
    aggregations: tuple[str, ...] = ("ave",),
    class_column: bool = True,
    seed: int = 1,
) -> Path:
    """Write and run a two-group run (``a``, ``b``, ``n`` variants each) into ``folder``.

    ``out_of_field`` gives, per group, how many of its variants lie outside the model's
    input (the first ones).  Returns the run's results folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_targets(folder / "targets.txt", list(TRACKS), ["DNASE:GM12878"] * len(TRACKS))
    groups = []
    for g in ("a", "b"):
        ref = rng.gamma(2.0, 1.0, size=(n, 3, len(TRACKS))).astype(np.float32)
        alt = ref + rng.normal(0, 0.5, size=ref.shape).astype(np.float32)
        out = np.arange(n) < out_of_field[g]
        alt[out] = ref[out]  # the model never saw the variant: ALT is REF
        # Offset 10 lies outside the input (centre +- 98,304); the others in the output.
        pos = np.where(out, 10, CENTRE + rng.integers(-50_000, 50_000, n))
        np.save(folder / f"{g}_ref.npy", ref)
        np.save(folder / f"{g}_alt.npy", alt)
        pd.DataFrame(
            {
                "GENE": "ENSG1",
                "rsID": [f"rs{g}{i}" for i in range(n)],
                "REF": "A",
                "ALT": "C",
                "variant_pos_in_window": pos,
            }
        ).to_csv(folder / f"{g}.csv", index=False)
        groups.append(
            f'[[groups]]\nname = "{g}"\n'
            f'batches = [{{ ref = "{g}_ref.npy", alt = "{g}_alt.npy", variants = "{g}.csv" }}]\n'
        )
    aggs = ", ".join(f'"{a}"' for a in aggregations)
    column = 'class_column = "field"\n' if class_column else ""
    (folder / "run.toml").write_text(
        f'targets = "targets.txt"\n[scores]\naggregations = [{aggs}]\n'
        f'[output]\nformat = "{fmt}"\n{column}'
        '[geometry]\nmodel = "enformer"\n[variants]\nposition = "variant_pos_in_window"\n'
        + "\n".join(groups)
    )
    results = folder / "results"
    run(load_run_file(folder / "run.toml"), results, RunOptions(progress=False))
    return results
