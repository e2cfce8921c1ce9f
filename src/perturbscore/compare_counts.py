"""A pairing's unit and variant counts for ``compare.json``: what the tests use, and why
the rest is left out (no score row, outside the model's input).

Counts are of pairing units (a gene's potential set of one rank) and their variants:
:func:`unit_counts` what the pairing tables gave, :func:`variant_counts` the units and
variants left out by reason and the pairs the paired tests use, :func:`rank_counts` the
same per pairing rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .compare_pairing import Pairing


def unit_counts(pair: Pairing) -> dict[str, Any]:
    """What the pairing tables gave: units read, dropped, usable, matching."""
    units = pair.units
    return {
        "files": len(pair.files),
        "read": int(len(units) + sum(pair.dropped.values())),
        "dropped": dict(pair.dropped),
        "usable": int(len(units)),
        "matching": int(units["matching"].sum()),
        "non_matching": int((~units["matching"]).sum()),
    }


#: ``compare.json`` ``units.variants``: non-matching units the paired tests use.
BOTH_SCORED = "non-matching units with both variants scored"
#: ... and those left out because a variant is outside the model's input (exclude).
PAIRS_OUT_OF_FIELD = "non-matching units with a variant outside the model's input (left out)"


def variant_counts(
    units: pd.DataFrame,
    found: dict[str, np.ndarray],
    outside: dict[str, np.ndarray] | None,
    group_a: str,
    group_b: str,
) -> dict[str, int]:
    """Pairing variants with and without a score row, and (``outside``: ``bool # U`` per
    side, with ``--out-of-field exclude``) those left out as outside the model's input.

    ``found``: ``bool # U`` per side.  Every count is of units or variants the tests do
    not use, by reason, except :data:`BOTH_SCORED`: the pairs the paired design tests
    (fewer on a track where a score is missing).
    """
    m = units["matching"].to_numpy()
    fa, fb = found["a"], found["b"]
    out_a, out_b = (outside["a"], outside["b"]) if outside else (np.zeros_like(fa),) * 2
    counts = {
        "matching units without a score row": int((m & ~fa & ~fb).sum()),
        f"non-matching {group_a} variants without a score row": int((~m & ~fa).sum()),
        f"non-matching {group_b} variants without a score row": int((~m & ~fb).sum()),
    }
    if outside is not None:
        used_a, used_b = fa & ~out_a, fb & ~out_b
        counts.update(
            {
                "matching units outside the model's input (left out)": int(
                    (m & (fa | fb) & ~used_a & ~used_b).sum()
                ),
                f"non-matching {group_a} variants outside the model's input (left out)": int(
                    (~m & fa & out_a).sum()
                ),
                f"non-matching {group_b} variants outside the model's input (left out)": int(
                    (~m & fb & out_b).sum()
                ),
                PAIRS_OUT_OF_FIELD: int((~m & fa & fb & (out_a | out_b)).sum()),
            }
        )
    counts[BOTH_SCORED] = int((~m & fa & fb & ~out_a & ~out_b).sum())
    return counts


def rank_counts(
    units: pd.DataFrame, found: dict[str, np.ndarray], outside: dict[str, np.ndarray] | None
) -> dict[str, dict[str, int]]:
    """Matching and non-matching units per pairing rank, and the non-matching ones the
    paired design tests (``non_matching_both_scored``) or, with ``--out-of-field
    exclude``, leaves out because a variant is outside the model's input."""
    m = units["matching"].to_numpy()
    both = ~m & found["a"] & found["b"]
    out = (outside["a"] | outside["b"]) if outside else np.zeros_like(both)
    per_rank = {}
    for r in sorted(units["rank"].unique()):
        at = (units["rank"] == r).to_numpy()
        entry = {
            "matching": int((m & at).sum()),
            "non_matching": int((~m & at).sum()),
            "non_matching_both_scored": int((both & ~out & at).sum()),
        }
        if outside is not None:
            entry["non_matching_left_out_out_of_field"] = int((both & out & at).sum())
        per_rank[str(r)] = entry
    return per_rank
