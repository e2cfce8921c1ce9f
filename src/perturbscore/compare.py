"""Compare two variant groups track by track (Wilcoxon tests, BH, effect sizes).

Inputs are the tables a run wrote (found through its ``manifest.json``), two group
names A and B, and designs:

``unpaired``
    every score of B against every score of A, per track (rank-sum);
``paired``
    per unit of a pairing table (e.g. a gene and a credible-set rank), the difference
    B - A of the unit's two variants, per track (signed rank).  Units whose two
    variants are the same ("matching") are left out;
``matching``
    scores of matching units against those of non-matching units of A, and of B
    (rank-sum; two tests per track).

Every test row says which sample is ``x`` and which is ``y``: ``p_greater`` is
R's ``alternative = "greater"``, i.e. ``x`` tends to be larger (for ``paired``, the
differences ``x - y`` = B - A tend to be positive).  Missing scores drop out of a
track's test; ``n_x``/``n_y`` report the sample sizes used (for ``paired``, both are
the number of pairs, and ``n_zero`` how many of their differences are zero).

Score tables are read a block of track columns at a time (Parquet reads only those
columns), so memory follows ``memory`` rather than the number of tracks; CSV and R
tables are read whole, once per table, and what they hold is taken from ``memory``
before the blocks are sized (a warning says when it cannot be kept).

The work is split by concern: :mod:`.compare_tables` (the run's tables),
:mod:`.compare_pairing` (pairing tables, looking their variants up),
:mod:`.compare_plan` (checking every option and input before any test),
:mod:`.compare_design` (the tests each design runs, their samples) and
:mod:`.compare_tests` (the per-track tests, block by block, and BH).  Writing the
outputs is :mod:`.compare_outputs`, the HTML page :mod:`.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .compare_pairing import DEFAULT_KEYS
from .compare_plan import plan_comparison
from .compare_tests import DEFAULT_MEMORY, CompareResult


def compare_groups(
    run_folder: str | Path,
    group_a: str,
    group_b: str,
    designs: Sequence[str] = ("unpaired",),
    pairing: Sequence[str | Path] = (),
    a_prefix: str | None = None,
    b_prefix: str | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
    duplicates: str = "error",
    tracks: Sequence[str] | None = None,
    family: str = "all",
    per_rank: bool = False,
    memory: int = DEFAULT_MEMORY,
    progress: bool = False,
    workers: int | None = None,
    out_of_field: str = "keep",
) -> CompareResult:
    """Test group B against group A on every track of every (aggregation, statistic).

    Parameters
    ----------
    run_folder : path
        ``--out`` folder of ``perturbscore run`` (with ``manifest.json``).
    group_a, group_b : str
        Group names of the run (e.g. ``stab`` and ``top``).
    designs : sequence of {"unpaired", "paired", "matching"}
    pairing : paths
        Pairing tables, required by ``paired`` and ``matching``.
    a_prefix, b_prefix : str, optional
        Column prefixes of the groups in pp_max-shaped pairing tables (default: the
        group names upper-cased, e.g. STAB and TOP).
    keys : columns
        Score-table columns a pairing variant is looked up by (default GENE, rsID, ALT:
        the allele tells multi-allelic sites apart).  Only these decide whether a unit
        is usable and whether it is matching.
    duplicates : {"error", "first", "mean", "max"}
        What to do when a pairing variant matches several score rows.
    tracks : identifiers, optional
        Restrict to these tracks.
    family : {"all", "design", "table", "rank"}
        BH family: every test in the output, per design, per (design, aggregation,
        statistic), or per (design, aggregation, statistic, rank).
    per_rank : bool
        Test the units of each pairing rank (potential set 1, 2, 3) separately, as the
        study does, instead of pooling them; the ``rank`` column says which.
    memory : int
        Bytes the tables read whole (CSV, R) and the blocks of track columns may take.
    progress : bool
        Progress bar on stderr.
    workers : int, optional
        Threads testing blocks (default: CPU count).
    out_of_field : {"keep", "exclude"}
        ``exclude``: leave variants outside the model's input (their scores are 0, "not
        measured") out of every test, read from the run's class column; the summary
        counts them.

    Returns
    -------
    CompareResult
    """
    from .extras import require

    require("scipy", "perturbscore compare")
    plan = plan_comparison(
        run_folder,
        group_a,
        group_b,
        designs,
        pairing,
        a_prefix,
        b_prefix,
        keys,
        duplicates,
        tracks,
        family,
        per_rank,
        out_of_field,
    )
    return plan.execute(memory=memory, progress=progress, workers=workers)
