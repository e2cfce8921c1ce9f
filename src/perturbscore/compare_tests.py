"""The per-track tests of a comparison, run block by block of track columns.

Every design comes down to one test per track between two samples ``x`` and ``y``
(:class:`Spec`): a rank-sum test (``ranksum``) or a signed-rank test of the paired
differences ``x - y`` (``signed``), with R's ``wilcox.test`` defaults.  Samples are
track-major, ``# T n`` (tracks, values): each row is one track's sample, contiguous for
the sorts.  :func:`run_blocks` tests blocks of track columns on a thread pool while one
reader thread reads the next block; :func:`results_table` assembles the tidy table and
:func:`adjust_p` adds the BH-adjusted p-values per family.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("perturbscore")

DEFAULT_MEMORY = 1 << 30
#: float64 arrays of one track column's length held while testing it (the values of
#: both groups, the combined sample, its sort order, sorted values, ranks, masks and
#: temporaries, and the next block being read), measured on the study-size tables;
#: sizes the column blocks.
_COPIES_PER_VALUE = 16
#: A table that is read whole (CSV, R) per score value, as float64 values: what its
#: frame keeps, and what reading it adds while it is read (measured on the study's
#: 35,077-row, 177-track R table: 47 MiB of scores kept as +66 MB, read at a peak of
#: +116 MB).
WHOLE_TABLE_KEPT = 1.4
WHOLE_TABLE_READING = 1.1

#: One block of one table: ``(aggregation, statistic, track identifiers)``.
Job = tuple[str, str, Sequence[str]]
#: Test results of the blocks, per ``(aggregation, statistic, spec number)``.
Parts = dict[tuple[str, str, int], list[dict[str, np.ndarray]]]


@dataclass
class Take:
    """Select a test's two samples from a block: ``block[x][x_rows]``, ``block[y][y_rows]``."""

    x: str
    y: str
    x_rows: np.ndarray | None = None
    y_rows: np.ndarray | None = None

    def __call__(self, block: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x, y = block[self.x], block[self.y]
        if self.x_rows is not None:
            x = x[:, self.x_rows]
        if self.y_rows is not None:
            y = y[:, self.y_rows]
        return x, y


@dataclass
class Spec:
    """One test per track: which design, which samples."""

    design: str
    rank: int | None
    x: str
    y: str
    kind: str  # "ranksum" or "signed"
    take: Take


@dataclass
class CompareResult:
    """Tidy test table plus what is needed to draw the figures."""

    tests: pd.DataFrame
    tracks: pd.DataFrame
    summary: dict[str, Any]
    #: (aggregation, statistic, track identifiers) -> {(design, rank): {label: (n, T)}}
    sample_reader: Callable[[str, str, Sequence[str]], dict[tuple[str, Any], dict[str, Any]]]
    warnings: list[str] = field(default_factory=list)

    def samples(
        self, aggregation: str, statistic: str, tracks: Sequence[str]
    ) -> dict[tuple[str, Any], dict[str, np.ndarray]]:
        """Samples each design tested, for the figures: ``{(design, rank): {label: (n, T)}}``.

        Only these tracks' columns are read again from the run's tables.
        """
        return self.sample_reader(aggregation, statistic, tracks)


def _median(v: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (``# T N`` -> ``T``); plain median when nothing is NaN.

    No rows or no values: NaN, without numpy's "Mean of empty slice" on stderr (a design
    with no units tests nothing, and says so in its own warning).
    """
    if v.size == 0:
        return np.full(v.shape[0], np.nan)
    if not np.isnan(v).any():
        return np.median(v, axis=1)
    return np.nanmedian(v, axis=1)


def block_tests(kind: str, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Tests of one block of tracks; ``x``, ``y`` are ``(T, n)`` (``# T N``)."""
    from .stats import rank_sum_rows, signed_rank_rows

    if kind == "signed":
        both = ~np.isnan(x) & ~np.isnan(y)
        d = np.where(both, x - y, np.nan)  # a pair is usable only with both scores
        r = signed_rank_rows(d)
        med = np.full(d.shape[0], np.nan)
        ok = both.any(axis=1)
        with np.errstate(all="ignore"):
            med[ok] = _median(d[ok])
    else:
        r = rank_sum_rows(x, y)
        med = np.full(x.shape[0], np.nan)
        ok = ~np.isnan(x).all(axis=1) & ~np.isnan(y).all(axis=1)
        med[ok] = _median(x[ok]) - _median(y[ok])
    return {
        "n_x": r.n_x,
        "n_y": r.n_y,
        "n_zero": r.n_zero,
        "test_statistic": r.statistic,
        "exact": r.exact,
        "p_greater": r.p_greater,
        "p_less": r.p_less,
        "p_two_sided": r.p_two_sided,
        "rank_biserial": r.effect,
        "median_difference": med,
    }


def finish_tests(kind: str, res: dict[str, np.ndarray]) -> dict[str, Any]:
    """NA (with a note) where a test has fewer than 2 usable values; notes for ties."""
    nx, ny, nzero = res["n_x"], res["n_y"], res["n_zero"]
    few = ((nx - nzero) < 2) if kind == "signed" else ((nx < 2) | (ny < 2))
    out: dict[str, Any] = dict(res)
    for k in ("p_greater", "p_less", "p_two_sided", "rank_biserial", "test_statistic"):
        out[k] = np.where(few, np.nan, res[k])
    out["exact"] = res["exact"] & ~few
    notes = []
    for i in range(len(nx)):
        if few[i]:
            notes.append(
                f"fewer than 2 usable non-zero differences ({nx[i] - nzero[i]})"
                if kind == "signed"
                else f"fewer than 2 usable values (x {nx[i]}, y {ny[i]})"
            )
        else:
            notes.append("all values tied" if np.isnan(out["p_two_sided"][i]) else "")
    out["note"] = notes
    return out


def block_columns(rows: int, memory: int, n_tracks: int) -> int:
    """Track columns per block so that one block's working set fits ``memory`` bytes."""
    per_column = max(rows, 1) * 8 * _COPIES_PER_VALUE
    return int(max(1, min(n_tracks, memory // per_column)))


def run_blocks(
    jobs: Sequence[Job],
    specs: Sequence[Spec],
    read_block: Callable[[str, str, Sequence[str]], dict[str, np.ndarray]],
    release: Callable[[str, str], None],
    workers: int | None = None,
    progress: bool = False,
) -> Parts:
    """Test every spec on every block of ``jobs``, in order.

    ``read_block(agg, stat, cols)`` gives a block's samples (``# T n`` arrays by name,
    see :class:`Take`); ``release(agg, stat)`` is called after a table's last block.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    nthreads = workers or os.cpu_count() or 1
    parts: Parts = {}
    bar = tqdm(total=len(jobs), desc="compare", unit="block", disable=not progress, file=None)
    # One reader thread reads the next block (pyarrow releases the GIL) while the
    # pool tests the current one: reading and sorting overlap.
    with (
        ThreadPoolExecutor(max_workers=1) as reader,
        ThreadPoolExecutor(max_workers=nthreads) as pool,
    ):
        ahead = reader.submit(read_block, *jobs[0])
        for n, (agg, stat, cols) in enumerate(jobs):
            block = ahead.result()
            if n + 1 < len(jobs):
                ahead = reader.submit(read_block, *jobs[n + 1])
            # Sub-blocks of tracks are independent; numpy's sorts release the GIL,
            # so threads use every core.
            step = max(1, -(-len(cols) // nthreads))
            for i, spec in enumerate(specs):
                x, y = spec.take(block)
                subs = list(
                    pool.map(
                        lambda j, x=x, y=y, spec=spec, step=step: block_tests(
                            spec.kind, x[j : j + step], y[j : j + step]
                        ),
                        range(0, len(cols), step),
                    )
                )
                parts.setdefault((agg, stat, i), []).extend(subs)
            del block
            bar.update(1)
            if n + 1 == len(jobs) or jobs[n + 1][:2] != (agg, stat):
                release(agg, stat)
    bar.close()
    return parts


def _spec_frame(
    meta: pd.DataFrame, agg: str, stat: str, spec: Spec, res: dict[str, Any]
) -> pd.DataFrame:
    """The rows of one spec's tests on one table: the tracks' metadata, then the results."""
    df = meta.copy()
    df.insert(1, "aggregation", agg)
    df.insert(2, "statistic", stat)
    df.insert(3, "design", spec.design)
    df.insert(4, "rank", pd.Series([spec.rank] * len(df), dtype="Int64"))
    df.insert(5, "x", spec.x)
    df.insert(6, "y", spec.y)
    for k, v in res.items():
        df[k] = v
    df["n_x"] = df["n_x"].astype("int64")
    df["n_y"] = df["n_y"].astype("int64")
    df["n_zero"] = pd.array(
        res["n_zero"] if spec.kind == "signed" else [None] * len(df), dtype="Int64"
    )
    df["exact"] = df["exact"].astype(bool)
    return df


def results_table(
    parts: Parts,
    combos: Sequence[tuple[str, str]],
    specs: Sequence[Spec],
    track_meta: pd.DataFrame,
) -> pd.DataFrame:
    """The tidy test table: one row per (table, spec, track), tables then specs in order."""
    frames = []
    meta = track_meta[["identifier", "index", "assay", "target", "biosample"]]
    for agg, stat in combos:
        for i, spec in enumerate(specs):
            got = parts[(agg, stat, i)]
            res = {k: np.concatenate([p[k] for p in got]) for k in got[0]}
            frames.append(_spec_frame(meta, agg, stat, spec, finish_tests(spec.kind, res)))
    return pd.concat(frames, ignore_index=True)


def untested_warnings(tests: pd.DataFrame) -> list[str]:
    """One warning (also logged) per (design, rank) where no track could be tested."""
    warnings = []
    for key, part in tests.groupby(["design", "rank"], dropna=False, sort=False):
        design, rank = key
        if part["p_two_sided"].isna().all():
            is_rank = isinstance(rank, (int, np.integer))
            where = f"{design}, rank {rank}" if is_rank else str(design)
            why = str(part["note"].iloc[0]) or "no usable values"
            msg = f"design {where}: no track could be tested ({why}); its figures are not drawn."
            warnings.append(msg)
            log.warning("%s", msg)
    return warnings


def adjust_p(tests: pd.DataFrame, family: str) -> None:
    """Add ``p_adj_<alternative>`` columns: BH within each family (``--family``)."""
    from .stats import p_adjust_bh

    groups = {
        "all": [],
        "design": ["design"],
        "table": ["design", "aggregation", "statistic"],
        "rank": ["design", "aggregation", "statistic", "rank"],
    }
    by = groups[family]
    for alt in ("greater", "less", "two_sided"):
        col = f"p_{alt}"
        adj = np.full(len(tests), np.nan)
        parts = (
            [tests.index]
            if not by
            else [g.index for _, g in tests.groupby(by, sort=False, dropna=False)]
        )
        for idx in parts:
            adj[idx] = p_adjust_bh(tests.loc[idx, col].to_numpy(dtype=float))
        tests[f"p_adj_{alt}"] = adj


#: The order of "most significant": adjusted p, then raw p (BH ties blocks of tests,
#: and within a tie the smaller raw p is the stronger result), then a fixed key (the
#: track's index in the model's targets, then the table and the samples) so that ties
#: of both never depend on the order the tests were run in.
SIGNIFICANCE_ORDER = (
    "p_adj_two_sided",
    "p_two_sided",
    "index",
    "identifier",
    "aggregation",
    "statistic",
    "x",
    "y",
)


def by_significance(tests: pd.DataFrame) -> pd.DataFrame:
    """``tests`` most significant first (:data:`SIGNIFICANCE_ORDER`; NaN p-values last).

    The report's top tables, the ECDF tracks compare draws and the heat map's rows all
    use this order, so that they agree.
    """
    by = [c for c in SIGNIFICANCE_ORDER if c in tests.columns]
    return tests.sort_values(by, kind="stable", na_position="last")


def rank_of(v: object) -> int | None:
    """A test-table group key's rank: None for pooled units (NA)."""
    return int(v) if isinstance(v, int | np.integer | float) and v == v else None
