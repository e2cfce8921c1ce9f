"""Wilcoxon tests and BH adjustment that reproduce R's ``wilcox.test`` and ``p.adjust``.

Every test runs on many tracks at once: inputs are ``(n, K)`` arrays, one column per
track, NaN meaning "missing" (dropped from that column's test).  The rules are R's
defaults (``stats::wilcox.test``, ``exact = NULL, correct = TRUE``):

* rank-sum (``x`` vs ``y``): exact distribution when both samples have fewer than 50
  values and there are no ties, else the normal approximation with continuity and tie
  correction;
* signed rank (differences ``d``): zero differences are dropped from the ranks (and
  ``n``); exact when fewer than 50 non-zero differences remain and there are neither ties
  nor zeros, else the normal approximation as above.

Exact null distributions are counted by dynamic programming in float64 (as R's
``cwilcox``/``csignrank`` do) and cached per sample size; tails are summed directly
from the shorter side, as R's ``pwilcox``/``psignrank`` do, so p-values keep their
relative precision down to the smallest (``1 / choose(m + n, n)``, ``2^-n``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb

import numpy as np
from scipy.special import ndtr

EXACT_LIMIT = 50


@dataclass
class TestResult:
    """Per-column results; arrays of length ``K``.

    Attributes
    ----------
    statistic : R's ``W`` (rank sum of ``x`` minus ``n_x (n_x + 1) / 2``) or ``V``.
    p_greater, p_less, p_two_sided : NaN where the test could not be run.
    exact : whether the exact distribution was used.
    n_x, n_y : sample sizes: usable values per sample (rank-sum), or usable pairs
        (signed rank: both are the number of non-missing differences, zeros included).
    n_zero : zero differences (signed rank; dropped from the ranks, as R does); 0 for
        the rank-sum test.
    effect : rank-biserial correlation, in [-1, 1]; positive when ``x`` tends larger.
    """

    statistic: np.ndarray
    p_greater: np.ndarray
    p_less: np.ndarray
    p_two_sided: np.ndarray
    exact: np.ndarray
    n_x: np.ndarray
    n_y: np.ndarray
    n_zero: np.ndarray
    effect: np.ndarray


@lru_cache(maxsize=256)
def _ranksum_counts(m: int, n: int) -> np.ndarray:
    """Counts of ``W = 0..m n`` over all ways to pick ``m`` of ``m + n`` ranks."""
    total = m * (m + 1) // 2 + m * n  # largest rank sum of m ranks out of m + n
    # dp[j, s]: ways to choose j ranks from those seen so far summing to s.
    dp = np.zeros((m + 1, total + 1))
    dp[0, 0] = 1.0
    for rank in range(1, m + n + 1):
        for j in range(min(rank, m), 0, -1):
            dp[j, rank:] += dp[j - 1, : total + 1 - rank]
    return dp[m, m * (m + 1) // 2 :]


@lru_cache(maxsize=256)
def _signrank_counts(n: int) -> np.ndarray:
    """Counts of ``V = 0..n(n+1)/2`` over all sign assignments of ranks ``1..n``."""
    total = n * (n + 1) // 2
    c = np.zeros(total + 1)
    c[0] = 1.0
    for rank in range(1, n + 1):
        c[rank:] = c[rank:] + c[: total + 1 - rank].copy()
    return c


def _tail(counts: np.ndarray, weight: float, q: float, lower: bool) -> float:
    """``P(S <= q)`` (``lower``) or ``P(S > q)`` from null counts, as R's ``pwilcox``.

    R sums the probabilities of the *shorter* side of the distribution (values up to
    ``q`` when ``q`` is at most the centre, else those above ``q`` through the
    symmetric lower side) and only then takes ``1 - p`` if the other tail was asked
    for.  A far tail is therefore a direct sum of tiny terms, never ``1 - (1 - p)``,
    which would cancel to 0 or below for p-values under about 1e-16.  ``weight`` is
    ``1 / choose(m + n, n)`` or ``2^-n``; each term is weighted before summing, as R does.
    """
    top = len(counts) - 1  # largest value of the statistic (m n, or n (n + 1) / 2)
    q = np.floor(q + 1e-7)
    if q < 0:
        return 0.0 if lower else 1.0
    if q >= top:
        return 1.0 if lower else 0.0
    qi = int(q)
    if qi <= top / 2:
        p = float(np.sum(counts[: qi + 1] * weight))  # P(S <= q)
        return p if lower else 1.0 - p
    # P(S > q) = P(S < top - q) by the symmetry of the null distribution.
    p = float(np.sum(counts[: top - qi] * weight))
    return 1.0 - p if lower else p


def _exact_p(
    counts: np.ndarray, weight: float, stat: float, centre: float
) -> tuple[float, float, float]:
    """R's exact p-values of ``wilcox.test``: greater, less, two-sided."""
    p_greater = _tail(counts, weight, stat - 1, lower=False)
    p_less = _tail(counts, weight, stat, lower=True)
    p = p_greater if stat > centre else p_less
    return p_greater, p_less, min(2.0 * p, 1.0)


def _sorted_ranks(
    v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort each row of ``v`` (``K n``) once; average ranks in sorted order.

    Returns ``order`` (the argsort, NaN last), ``ranks`` (``K n``, R's
    ``rank(ties.method = "average")`` of the sorted values, 0 for NaN), ``valid``,
    ``tie`` (``sum(t^3 - t)`` per row) and ``has_tie``.  Statistics are sums of ranks
    over a selection of the sorted values, so ranks are never scattered back to the
    original order.
    """
    k, n = v.shape
    # Average ranks do not depend on the order within a tie group: any sort will do.
    order = np.argsort(v, axis=1)  # NaN last
    s = np.take_along_axis(v, order, axis=1)
    valid = ~np.isnan(s)
    pos = np.arange(1.0, n + 1.0)
    equal = s[:, 1:] == s[:, :-1]  # NaN never equals: each NaN is its own run
    if not equal.any():  # continuous scores: ranks are sorted positions, no tie term
        ranks = np.where(valid, pos, 0.0) if not valid.all() else np.broadcast_to(pos, (k, n))
        return order, ranks, valid, np.zeros(k), np.zeros(k, bool)
    start = np.ones((k, n), bool)
    start[:, 1:] = ~equal
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0), axis=1)
    run_id = np.cumsum(start, axis=1) - 1 + (np.arange(k) * n)[:, None]
    size = np.bincount(run_id.ravel(), minlength=k * n)[run_id]
    ranks = np.where(valid, first + (size + 1) / 2.0, 0.0)
    # Each element of a group of t contributes t^2 - 1: the group's sum is t^3 - t.
    tie = np.where(valid, size.astype(float) ** 2 - 1, 0.0).sum(axis=1)
    return order, ranks, valid, tie, ((size > 1) & valid).any(axis=1)


def _normal(z: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R's continuity-corrected normal p-values from ``z = stat - mean`` and ``sigma``.

    ``sigma = 0`` (every value tied) gives what R gives: ``greater = less = 1`` (the
    corrected statistic is -0.5 / 0 or 0.5 / 0) and a two-sided NaN (0 / 0).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        p_greater = ndtr(-(z - 0.5) / sigma)
        p_less = ndtr((z + 0.5) / sigma)
        zz = (z - np.sign(z) * 0.5) / sigma
        p_two = 2.0 * np.minimum(ndtr(zz), ndtr(-zz))
    bad = ~(sigma >= 0)  # NaN sigma: no values
    for arr in (p_greater, p_less, p_two):
        arr[bad] = np.nan
    return p_greater, p_less, p_two


def rank_sum(x: np.ndarray, y: np.ndarray) -> TestResult:
    """Wilcoxon rank-sum (Mann-Whitney) test of ``x`` against ``y``, column by column.

    Parameters
    ----------
    x, y : numpy.ndarray
        ``(n_x, K)`` and ``(n_y, K)``; NaN values are dropped per column.

    Returns
    -------
    TestResult
        ``p_greater`` is R's ``alternative = "greater"``: ``x`` tends to be larger.
    """
    x = np.atleast_2d(np.asarray(x, float).T)
    y = np.atleast_2d(np.asarray(y, float).T)
    return rank_sum_rows(x, y)


def rank_sum_rows(x: np.ndarray, y: np.ndarray) -> TestResult:
    """:func:`rank_sum` with one test per *row*: ``x`` is ``(K, n_x)``, ``y`` ``(K, n_y)``.

    The track-major layout (``# T N``) the comparison reads its blocks in: each test's
    sample is contiguous, so no transposed copy is made before sorting.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    rows_x = x.shape[1]
    v = np.concatenate([x, y], axis=1)  # (K, n): each track's combined sample, sorted once
    nx = (~np.isnan(x)).sum(axis=1)
    ny = (~np.isnan(y)).sum(axis=1)
    if v.shape[1] == 0:
        w = np.zeros(v.shape[0])
        tie, has_tie = np.zeros(v.shape[0]), np.zeros(v.shape[0], bool)
    else:
        order, ranks, _, tie, has_tie = _sorted_ranks(v)
        # W: the ranks that fall on x's values (NaN ranks are 0).  A row-wise dot
        # product of the x-mask with the ranks; exact, the sums being whole or half
        # numbers far below 2^53.
        is_x = (order < rows_x).astype(np.float64)
        w = np.einsum("ij,ij->i", is_x, ranks) - nx * (nx + 1) / 2.0
    ntot = nx + ny
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.sqrt((nx * ny / 12.0) * ((ntot + 1) - tie / (ntot * (ntot - 1))))
    pg, pl, p2 = _normal(w - nx * ny / 2.0, sigma)
    exact = (nx < EXACT_LIMIT) & (ny < EXACT_LIMIT) & ~has_tie & (nx > 0) & (ny > 0)
    for j in np.flatnonzero(exact):
        m, n = int(nx[j]), int(ny[j])
        pg[j], pl[j], p2[j] = _exact_p(
            _ranksum_counts(m, n), 1.0 / float(comb(m + n, n)), w[j], m * n / 2.0
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = 2.0 * w / (nx * ny) - 1.0
    return TestResult(w, pg, pl, p2, exact, nx, ny, np.zeros_like(nx), effect)


def signed_rank(d: np.ndarray) -> TestResult:
    """Wilcoxon signed-rank test of differences ``d`` (``(n, K)``), column by column.

    Zero differences are dropped from the ranks, as R does; ``n_x`` and ``n_y`` report
    the usable pairs including them and ``n_zero`` how many were zero.  ``effect`` is
    the matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)``.
    """
    return signed_rank_rows(np.atleast_2d(np.asarray(d, float).T))


def signed_rank_rows(d: np.ndarray) -> TestResult:
    """:func:`signed_rank` with one test per *row* of ``d`` (``(K, n)``, ``# T N``)."""
    d = np.asarray(d, float)
    usable = ~np.isnan(d)
    zero = usable & (d == 0)
    nz = np.where(zero, np.nan, np.abs(d))  # (K, n)
    n = (~np.isnan(nz)).sum(axis=1)
    if nz.shape[1] == 0:
        v = np.zeros(nz.shape[0])
        tie, has_tie = np.zeros(nz.shape[0]), np.zeros(nz.shape[0], bool)
    else:
        order, ranks, _, tie, has_tie = _sorted_ranks(nz)
        positive = np.take_along_axis(d > 0, order, axis=1)
        v = np.where(positive, ranks, 0.0).sum(axis=1)
    sigma = np.sqrt(n * (n + 1) * (2 * n + 1) / 24.0 - tie / 48.0)
    pg, pl, p2 = _normal(v - n * (n + 1) / 4.0, sigma)
    exact = (n < EXACT_LIMIT) & ~has_tie & ~zero.any(axis=1) & (n > 0)
    for j in np.flatnonzero(exact):
        nj = int(n[j])
        pg[j], pl[j], p2[j] = _exact_p(
            _signrank_counts(nj), float(np.exp(-nj * np.log(2.0))), v[j], nj * (nj + 1) / 4.0
        )
    total = n * (n + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = (2.0 * v - total) / total
    pairs = usable.sum(axis=1)
    return TestResult(v, pg, pl, p2, exact, pairs, pairs.copy(), zero.sum(axis=1), effect)


def p_adjust_bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, as R's ``p.adjust(p, "BH")``; NaN kept out."""
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    vals = p[ok]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(-vals, kind="stable")  # decreasing, as R's order(p, decreasing=TRUE)
    i = np.arange(m, 0, -1)
    adj = np.minimum(1.0, np.minimum.accumulate(m / i * vals[order]))
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out
