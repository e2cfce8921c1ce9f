"""Reduce REF/ALT prediction blocks to per-variant scores.

Axis convention: prediction blocks are ``(n, B, S)`` (variants, bins, selected
tracks); scores are ``(n, S)``.  Every score is computed per variant row in
float64, so the result of a row never depends on which block it was read in:
chunk size cannot change a result.

Aggregations over bins
    ``tss``       the centre bin (``B // 2`` for odd ``B``; for even ``B`` it must be named)
    ``ave``       mean of all bins
    ``window:K``  mean of the ``2K + 1`` bins centred on the centre bin
    ``sum``       sum of all bins
Statistics
    ``abs_diff``  ``|agg(ALT) - agg(REF)|``  (the study's perturbation score)
    ``diff``      ``agg(ALT) - agg(REF)``
    ``log2fc``    ``log2((agg(ALT) + c) / (agg(REF) + c))`` with pseudocount ``c``
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PerturbscoreError

STATISTICS = ("abs_diff", "diff", "log2fc")
AGGREGATION_KINDS = ("tss", "ave", "window", "sum")


@dataclass(frozen=True)
class Aggregation:
    """A reduction over the bins axis, bound to a bin count.

    Attributes
    ----------
    spec : str
        What the user wrote: ``tss``, ``ave``, ``window:K`` or ``sum``.
    start, stop : int
        The bins ``[start, stop)`` it reads.
    mean : bool
        Mean (True) or sum (False) over those bins.
    """

    spec: str
    start: int
    stop: int
    mean: bool

    @property
    def label(self) -> str:
        """Name used in output file names: ``tss``, ``ave``, ``window2``, ``sum``."""
        return self.spec.replace(":", "")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Reduce ``x`` (``n B S``, any float dtype) to ``(n, S)`` float64.

        Bins are added one after another in float64, in bin order (the order numpy's
        reduction over a middle axis uses), then divided by their count for a mean:
        ``x.astype(float64).mean(axis=1)`` bit for bit, without the float64 copy of
        the block.
        """
        acc = x[:, self.start, :].astype(np.float64)
        for b in range(self.start + 1, self.stop):
            acc += x[:, b, :]
        if self.mean and self.stop - self.start > 1:
            acc /= self.stop - self.start
        return acc


def centre_bin(n_bins: int, center_bin: int | None, spec: str) -> int:
    """The centre bin for ``n_bins`` bins, or the user's choice (required for even ``B``)."""
    if center_bin is not None:
        if not 0 <= center_bin < n_bins:
            raise PerturbscoreError(
                f"aggregation {spec!r}: centre bin {center_bin} (center_bin in [scores], or "
                f"--center-bin) is outside the predictions' bins 0..{n_bins - 1}; give a bin "
                f"in that range, e.g. {n_bins // 2}."
            )
        return center_bin
    if n_bins % 2 == 0:
        raise PerturbscoreError(
            f"aggregation {spec!r}: predictions have an even number of bins ({n_bins}), so the "
            f"TSS bin is ambiguous; name it with --center-bin (e.g. {n_bins // 2 - 1} or "
            f"{n_bins // 2}) or center_bin in the run file."
        )
    return n_bins // 2


def parse_aggregation(spec: str, n_bins: int, center_bin: int | None = None) -> Aggregation:
    """Bind an aggregation spec to a bin count.

    Raises
    ------
    PerturbscoreError
        Unknown spec, a window wider than the bins, or ``tss``/``window`` on even ``B``
        without ``center_bin``.
    """
    s = spec.strip().lower()
    if s == "ave":
        return Aggregation(s, 0, n_bins, True)
    if s == "sum":
        return Aggregation(s, 0, n_bins, False)
    if s == "tss":
        c = centre_bin(n_bins, center_bin, s)
        return Aggregation(s, c, c + 1, True)
    m = re.fullmatch(r"window:(\d+)", s)
    if m:
        k = int(m.group(1))
        c = centre_bin(n_bins, center_bin, s)
        if c - k < 0 or c + k >= n_bins:
            raise PerturbscoreError(
                f"aggregation {spec!r}: bins {c - k}..{c + k} around centre {c} do not fit in "
                f"{n_bins} bins; use a smaller K."
            )
        return Aggregation(s, c - k, c + k + 1, True)
    raise PerturbscoreError(f"unknown aggregation {spec!r}; use tss, ave, window:K or sum.")


def check_statistics(stats: Sequence[str]) -> list[str]:
    """Validate statistic names, keeping order and dropping repeats."""
    out: list[str] = []
    for s in stats:
        if s not in STATISTICS:
            raise PerturbscoreError(f"unknown statistic {s!r}; use one of {', '.join(STATISTICS)}.")
        if s not in out:
            out.append(s)
    if not out:
        raise PerturbscoreError("no statistic chosen; use abs_diff, diff or log2fc.")
    return out


def statistic(name: str, ref: np.ndarray, alt: np.ndarray, pseudocount: float) -> np.ndarray:
    """One statistic from aggregated REF and ALT, each ``(n, S)`` float64."""
    if name == "diff":
        return alt - ref
    if name == "abs_diff":
        return np.abs(alt - ref)
    if name == "log2fc":
        # Non-positive arguments give NaN (log of a negative) or -inf; the pipeline
        # counts them and records a warning rather than failing.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log2((alt + pseudocount) / (ref + pseudocount))
    raise PerturbscoreError(f"unknown statistic {name!r}")


def score_block(
    ref: np.ndarray,
    alt: np.ndarray,
    aggregations: Sequence[Aggregation],
    statistics: Sequence[str],
    pseudocount: float = 1.0,
) -> dict[tuple[str, str], np.ndarray]:
    """Scores of one block for every (aggregation, statistic) pair.

    Parameters
    ----------
    ref, alt : numpy.ndarray
        ``(n, B, S)`` predictions of the selected tracks (any float dtype; reduced in float64).
    aggregations : sequence of Aggregation
    statistics : sequence of str
    pseudocount : float
        ``c`` of ``log2fc``.

    Returns
    -------
    dict
        ``(aggregation.spec, statistic) -> (n, S)`` float64 array.
    """
    if ref.shape != alt.shape:
        raise ValueError(f"REF block {ref.shape} and ALT block {alt.shape} differ")
    out: dict[tuple[str, str], np.ndarray] = {}
    for agg in aggregations:
        r = agg.apply(ref)
        a = agg.apply(alt)
        for stat in statistics:
            out[(agg.spec, stat)] = statistic(stat, r, a, pseudocount)
    return out


def nonfinite_positions(block: np.ndarray) -> tuple[int, tuple[int, int, int] | None]:
    """Count NaN/Inf values in an ``(n, B, S)`` block and give the first ``(row, bin, col)``."""
    # Fast path: a float64-accumulated sum is finite exactly when every value is (float16/32
    # values cannot overflow it); only a block that fails it pays for the full mask.
    if np.isfinite(np.add.reduce(block, axis=None, dtype=np.float64)):
        return 0, None
    bad = ~np.isfinite(block)
    count = int(bad.sum())
    if not count:
        return 0, None
    first = np.argwhere(bad)[0]
    return count, (int(first[0]), int(first[1]), int(first[2]))
