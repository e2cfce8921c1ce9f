"""Building a background: a streaming per-track quantile sketch.

The background is kept as a per-track quantile sketch, never as all its values.
It is built streaming (:class:`BackgroundBuilder`: ``update(block # n S)`` per
block, then :meth:`~BackgroundBuilder.finish`) with a Munro-Paterson sketch run on
all tracks at once: rows are staged into buffers of ``k`` values per track (so
block boundaries never matter), each full buffer is sorted and carried up a
binary tower of levels, two buffers of one level being merged and every other
value kept (alternating odd/even) with twice the weight.  Each such compaction at
level ``h`` moves any rank by at most ``2**h``; the sketch adds these up, so its
rank error bound is exact for the data seen, about ``log2(n / k) / (2 k)`` of
``n`` (``k = 4096``: below 0.001 for ``n = 10**6``).  :meth:`finish` keeps the
exact sorted values when ``n <= grid`` (tiny backgrounds are exact) and otherwise
``grid`` values at the evenly spaced ranks ``j / (grid - 1)`` (plus the exact
minimum and maximum), which adds ``1 / (grid - 1)``.  The stated
``max_rank_error`` is the sum of both (doubled for signed statistics, whose
``|b|`` counts come from two points of the CDF); quantiles are within it of the
exact mid-rank quantile of the background.

The median and the MAD (robust_z's centre and scale) are exact, ``np.median``'s
values: while no buffer was compacted (fewer than ``2 k`` rows) the sketch holds every
value; after compactions, :meth:`~BackgroundBuilder.finish` given the background's
blocks again (``source``) brackets each track's middle ranks by the sketch's rank
bound (every value's count is within ``sum(compactions * 2**h)`` rows of the true
one) and reads the blocks twice more: once to count the values below the bracket and
keep those inside it (a few per track), giving the exact median, and once more so for
the deviations from it (whose counts are within twice that), giving the exact MAD.
Without ``source`` they are the sketch's (the median within the rank error, the MAD
within about three times it).  Memory while building:
``(levels + 2) * k * S * 8`` bytes (``levels ~ log2(n / k)``); saved: ``grid * S``
float64 values per background.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import PerturbscoreError
from .normalise import DEFAULT_GRID, DEFAULT_K, SIGNED, Background, check_block


@dataclass
class BackgroundBuilder:
    """Streaming construction of a :class:`Background` (see the module docstring).

    Parameters
    ----------
    tracks : sequence of str
        Track identifiers of the score columns.
    aggregation, statistic : str
    k : int
        Sketch buffer size per track (rank error about ``log2(n/k) / (2k)``).
    grid : int
        Rank grid kept by :meth:`finish` (adds ``1 / (grid - 1)``).
    """

    tracks: Sequence[str]
    aggregation: str
    statistic: str
    k: int = DEFAULT_K
    grid: int = DEFAULT_GRID
    _stage: np.ndarray = field(init=False, repr=False)
    _fill: int = 0
    _levels: list[np.ndarray | None] = field(default_factory=list, repr=False)
    _parity: list[int] = field(default_factory=list, repr=False)
    _compactions: list[int] = field(default_factory=list, repr=False)
    _n: int = 0
    _min: np.ndarray = field(init=False, repr=False)
    _max: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.statistic not in SIGNED:
            raise PerturbscoreError(
                f"a background is built from a raw statistic ({', '.join(SIGNED)}), "
                f"not {self.statistic!r}."
            )
        if self.k < 2 or self.grid < 2:
            raise ValueError("k and grid must be at least 2")
        s = len(self.tracks)
        self._stage = np.empty((s, self.k), np.float64)  # track-major: sorted in place
        self._min = np.full(s, np.inf)
        self._max = np.full(s, -np.inf)

    @property
    def n(self) -> int:
        """Background values per track so far."""
        return self._n

    def update(self, block: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add the rows of ``block`` (``# n S`` float64) where ``mask`` (``bool # n``) holds.

        Leave out rows that do not measure anything (e.g. out-of-field rows, whose
        scores are exactly 0) with ``mask``.  Values must be finite.
        """
        x = check_block(block, len(self.tracks), "background block")
        if mask is not None:
            x = x[np.asarray(mask, bool)]
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).sum())
            raise PerturbscoreError(
                f"background {self.aggregation}/{self.statistic}: {bad} non-finite "
                f"score{'s' if bad > 1 else ''}; "
                "a background needs finite values (leave those rows out of it)."
            )
        if not x.shape[0]:
            return
        np.minimum(self._min, x.min(axis=0), out=self._min)
        np.maximum(self._max, x.max(axis=0), out=self._max)
        pos = 0
        while pos < x.shape[0]:
            take = min(self.k - self._fill, x.shape[0] - pos)
            self._stage[:, self._fill : self._fill + take] = x[pos : pos + take].T
            self._fill += take
            pos += take
            if self._fill == self.k:
                self._push(np.sort(self._stage, axis=1), 0)
                self._fill = 0
        self._n += x.shape[0]

    def _push(self, buf: np.ndarray, h: int) -> None:
        while True:
            if h == len(self._levels):
                self._levels.append(None)
                self._parity.append(0)
                self._compactions.append(0)
            held = self._levels[h]
            if held is None:
                self._levels[h] = buf
                return
            merged = np.sort(np.concatenate([held, buf], axis=1), axis=1)
            buf = np.ascontiguousarray(merged[:, self._parity[h] :: 2])
            self._parity[h] ^= 1
            self._compactions[h] += 1
            self._levels[h] = None
            h += 1

    def memory_bytes(self) -> int:
        """Bytes the sketch holds now."""
        held = sum(b.nbytes for b in self._levels if b is not None)
        return held + self._stage.nbytes

    def _items(self) -> tuple[np.ndarray, np.ndarray]:
        """Sketch items ``# S m`` and their weights ``# m``."""
        parts = [self._stage[:, : self._fill]]
        weights = [np.ones(self._fill)]
        for h, b in enumerate(self._levels):
            if b is not None:
                parts.append(b)
                weights.append(np.full(b.shape[1], float(2**h)))
        return np.concatenate(parts, axis=1), np.concatenate(weights)

    def finish(self, source: Callable[[], Iterable[np.ndarray]] | None = None) -> Background:
        """The background: exact values (``n <= grid``) or the rank grid, median and MAD.

        ``source``: called for a fresh pass over the same rows given to :meth:`update`
        (``# n S`` float64 blocks, the left-out rows already dropped); with it the median
        and MAD are exact (see the module docstring), read in two more passes only where
        the sketch compacted.
        """
        if self._n == 0:
            raise PerturbscoreError(
                f"background {self.aggregation}/{self.statistic} has no rows; choose a "
                "group with rows inside the model's field."
            )
        values, weights = self._items()
        signed = SIGNED[self.statistic]
        sketch_err = sum(c * 2**h for h, c in enumerate(self._compactions)) / self._n
        if not any(self._compactions) and self._n <= self.grid:
            mode, stored = "exact", np.sort(values, axis=1)
            median = np.median(stored, axis=1)
            mad = np.median(np.abs(stored - median[:, None]), axis=1)
            err = 0.0
        else:
            mode = "grid"
            ranks = np.linspace(0.0, 1.0, self.grid) * self._n
            # The grid and the median from one sort (each rank is looked up on its own).
            found = _weighted_quantiles(values, weights, np.append(ranks, self._n / 2))
            stored, median = np.ascontiguousarray(found[:, :-1]), found[:, -1]
            stored[:, 0], stored[:, -1] = self._min, self._max
            slack = float(sum(c * 2**h for h, c in enumerate(self._compactions)))
            if not slack:  # every value is in the sketch, with weight 1
                median = np.median(values, axis=1)
                mad = np.median(np.abs(values - median[:, None]), axis=1)
            else:
                dev = np.abs(values - median[:, None])
                mad = _weighted_quantiles(dev, weights, np.array([self._n / 2]))[:, 0]
                if source is not None:
                    median = _exact_median(values, weights, self._n, slack, source(), median)
                    dev = np.abs(values - median[:, None])
                    mad = _exact_median(
                        dev, weights, self._n, 2 * slack, source(), mad, centre=median
                    )
            err = sketch_err + 1.0 / (self.grid - 1)
            err = 2 * err if signed else err
        return Background(
            self.aggregation,
            self.statistic,
            signed,
            tuple(self.tracks),
            self._n,
            mode,
            stored,
            median,
            mad,
            err,
            self.k,
            self.grid,
        )


def _exact_median(
    items: np.ndarray,
    weights: np.ndarray,
    n: int,
    slack: float,
    blocks: Iterable[np.ndarray],
    estimate: np.ndarray,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """``np.median`` per track of the ``n`` values in ``blocks`` (``# n S``; with
    ``centre`` ``# S``: of ``|x - centre|``), from one pass.

    ``items``/``weights``: the sketch of those values (``# S m``, ``# m``), whose
    cumulative weight at any value is within ``slack`` of the true count.  The middle
    order statistics (1-based ranks ``(n + 1) // 2`` and ``n // 2 + 1``) lie between the
    sketch's quantiles at ``slack + 1`` ranks below and above them; the pass counts the
    values below that bracket, ties with its ends, and keeps those inside.  A track
    whose bracket misses (never, by the bound) keeps ``estimate``.
    """
    r1, r2 = (n + 1) // 2, n // 2 + 1
    order = np.argsort(items, axis=1)
    sv = np.take_along_axis(items, order, axis=1)
    cw = np.cumsum(weights[order], axis=1)
    s = sv.shape[0]
    lo, hi = np.full(s, -np.inf), np.full(s, np.inf)
    a, b = r1 - slack - 1, r2 + slack + 1  # the ranks just outside the bracket
    for t in range(s):  # smallest item whose cumulative weight reaches each end's rank
        if a > 0:
            lo[t] = sv[t, min(int(np.searchsorted(cw[t], a, side="left")), sv.shape[1] - 1)]
        if b <= cw[t, -1]:
            hi[t] = sv[t, min(int(np.searchsorted(cw[t], b, side="left")), sv.shape[1] - 1)]
    below = np.zeros(s, np.int64)
    at_lo = np.zeros(s, np.int64)
    at_hi = np.zeros(s, np.int64)
    inside: list[list[np.ndarray]] = [[] for _ in range(s)]
    seen = 0
    for block in blocks:
        v = np.abs(block - centre) if centre is not None else np.asarray(block, np.float64)
        seen += v.shape[0]
        below += (v < lo).sum(axis=0)
        at_lo += (v == lo).sum(axis=0)
        at_hi += ((v == hi) & (hi > lo)).sum(axis=0)
        mid = (v > lo) & (v < hi)
        for j in np.flatnonzero(mid.any(axis=0)):
            inside[j].append(v[mid[:, j], j])
    out = np.array(estimate, np.float64, copy=True)
    if seen != n:  # not the rows the sketch saw: keep the sketch's values
        return out
    for t in range(s):
        mids = np.sort(np.concatenate(inside[t])) if inside[t] else np.empty(0)

        def at(r: int, t: int = t, mids: np.ndarray = mids) -> float | None:
            p = r - int(below[t])  # 1-based position in [lo] * at_lo + mids + [hi] * at_hi
            if p < 1:
                return None
            if p <= at_lo[t]:
                return float(lo[t])
            p -= int(at_lo[t])
            if p <= mids.size:
                return float(mids[p - 1])
            return float(hi[t]) if p - mids.size <= at_hi[t] else None

        x1, x2 = at(r1), at(r2)
        if x1 is not None and x2 is not None:
            out[t] = (x1 + x2) / 2 if r1 != r2 else x1
    return out


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Per track (row of ``values # S m``), the smallest value whose cumulative weight
    reaches each rank (``# r``) -> ``# S r``."""
    # Any sort: equal values give the same value at every rank, whatever their order.
    order = np.argsort(values, axis=1)
    sv = np.take_along_axis(values, order, axis=1)
    cw = np.cumsum(weights[order], axis=1)
    s, m = sv.shape
    total = cw[:, -1:]
    # One searchsorted over all tracks: shift each track's cumulative weights apart.
    shift = (np.arange(s) * (float(total.max()) + 1.0))[:, None]
    idx = np.searchsorted((cw + shift).ravel(), (ranks[None, :] + shift).ravel(), side="left")
    idx = idx.reshape(s, -1) - (np.arange(s) * m)[:, None]
    idx = np.clip(idx, 0, m - 1)
    return np.take_along_axis(sv, idx, axis=1)
