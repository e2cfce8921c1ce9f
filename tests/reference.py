"""Plain in-memory re-implementations used as test oracles.

``study_recipe`` is the published pipeline's arithmetic, done the obvious way:
load whole arrays, ALT - REF of the middle bin and of the 3-bin mean in float32
(as numpy did in the study's script), keep the shortlist's tracks, take the
absolute value, attach GENE/rsID/REF/ALT by row position and bind old then new.
``float64_recipe`` is the same with float64 reductions, which perturbscore
must match exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ID_COLUMNS = ["GENE", "rsID", "REF", "ALT"]
BATCHES = {"stab": ["", "_new"], "top": ["", "_new"]}


def _tables(folder: Path, dtype: type) -> dict[tuple[str, str], pd.DataFrame]:
    short = pd.read_csv(folder / "basenji_relevant_metadata.csv")
    idx = short["index"].to_numpy()
    names = list(short["identifier"])
    out: dict[tuple[str, str], pd.DataFrame] = {}
    for group, suffixes in BATCHES.items():
        parts: dict[str, list[pd.DataFrame]] = {"ave": [], "tss": []}
        for suffix in suffixes:
            ref = np.load(folder / f"final_ref_preds_{group}_snps{suffix}_strand.npy").astype(dtype)
            alt = np.load(folder / f"final_alt_preds_{group}_snps{suffix}_strand.npy").astype(dtype)
            var = pd.read_csv(folder / f"{group}_snps{suffix}_strand_final_variants.csv", dtype=str)
            mid = ref.shape[1] // 2
            diffs = {
                "tss": alt[:, mid, :] - ref[:, mid, :],
                "ave": alt.mean(axis=1) - ref.mean(axis=1),
            }
            for agg, d in diffs.items():
                df = pd.DataFrame(np.abs(d[:, idx]).astype(np.float64), columns=names)
                for c in ID_COLUMNS:
                    df[c] = var[c].to_numpy()
                parts[agg].append(df)
        for agg, frames in parts.items():
            out[(group, agg)] = pd.concat(frames, ignore_index=True)
    return out


def study_recipe(folder: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """The study's float32 recipe: (group, 'ave'|'tss') -> table."""
    return _tables(folder, np.float32)


def float64_recipe(folder: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """The same recipe reduced in float64, as perturbscore computes."""
    return _tables(folder, np.float64)
