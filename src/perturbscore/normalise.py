"""Background-normalised scores: per-track quantiles and robust z-scores.

A raw score (``abs_diff`` of a CAGE track, ``diff`` of a DNase track) has no common
scale across tracks or models.  Following AlphaGenome's recipe, each score is placed
in the distribution of the same statistic, same aggregation and same track over a
*background* set of variants (another group of the run, e.g. common variants, or a
saved background file):

``quantile``
    Unsigned statistics (``abs_diff``): the mid-rank quantile
    ``q(x) = (#{b < x} + #{b <= x}) / (2 n)`` in ``[0, 1]`` (ties count half).
    Signed statistics (``diff``, ``log2fc``): ``sign(x) * q_|b|(|x|)`` in ``[-1, 1]``,
    the mid-rank quantile of ``|x|`` among the background's ``|b|`` carrying the sign
    of ``x`` (0 stays 0).
``robust_z``
    ``(x - median(b)) / (1.4826 * MAD(b))`` with ``MAD = median(|b - median(b)|)``;
    1.4826 = ``1 / Phi^-1(3/4)`` makes it the standard deviation for normal data.  A
    track whose background MAD is 0 gives NaN (no spread to scale by).  A MAD above 0
    but below ``2**-20`` of the track's largest background score is flagged
    (:func:`unresolved_mad`): float32 predictions resolve about ``2**-24`` of their
    values, so such a spread may be rounding, and dividing by it gives huge z-scores.

Every output value depends on its own row only, so block size never changes a result.
Backgrounds are built by :mod:`perturbscore.normalise_sketch` (a streaming quantile
sketch) and saved and read by :mod:`perturbscore.normalise_files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import PerturbscoreError

#: The new statistics: names a run file or compare may use.
NORMALISED = ("quantile", "robust_z")
#: Statistics whose sign carries meaning (quantiles mapped to [-1, 1]).
SIGNED = {"abs_diff": False, "diff": True, "log2fc": True}
MAD_SCALE = 1.4826
#: Blocks with at least this many rows of zeros place them once (:meth:`Background.quantile`).
SHARED_ZERO_ROWS = 8
DEFAULT_K = 4096
DEFAULT_GRID = 2049
FORMAT = "perturbscore-background"
VERSION = 1


@dataclass(frozen=True)
class Background:
    """A finished per-track background of one (aggregation, statistic).

    Attributes
    ----------
    aggregation, statistic : str
        What the background scores are (``ave``/``abs_diff``, ...).
    signed : bool
        Quantiles in ``[-1, 1]`` (signed) or ``[0, 1]``.
    tracks : tuple of str
        Track identifiers, the column order of ``values``.
    n : int
        Background values per track.
    mode : {"exact", "grid"}
        ``values`` holds every background value (sorted) or the rank grid.
    values : numpy.ndarray
        ``# S m`` float64, sorted along ``m``.
    median, mad : numpy.ndarray
        ``# S`` float64 (``mad`` unscaled: multiply by :data:`MAD_SCALE`).
    max_rank_error : float
        Stated bound on ``|quantile - exact quantile|``.
    basis : dict, optional
        What the values depend on beyond the aggregation and statistic names
        (:func:`perturbscore.normalise_files.basis`): ``bins`` ``[start, stop)`` and
        ``reduce`` of the aggregation, and for ``log2fc`` the ``pseudocount``; a value
        None where the source run did not record it.  None: not recorded at all (a file
        saved before backgrounds recorded it).
    """

    aggregation: str
    statistic: str
    signed: bool
    tracks: tuple[str, ...]
    n: int
    mode: str
    values: np.ndarray
    median: np.ndarray
    mad: np.ndarray
    max_rank_error: float
    k: int = DEFAULT_K
    grid: int = DEFAULT_GRID
    basis: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(aggregation, statistic)``."""
        return (self.aggregation, self.statistic)

    def __post_init__(self) -> None:
        # The searches gather from one flat view of the values: keep them C-ordered.
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, np.float64))

    def _gather(self, flat: np.ndarray) -> np.ndarray:
        """``values`` at flat positions ``track * m + j`` (any shape)."""
        return np.take(self.values.reshape(-1), flat)

    def _cdf(self, x: np.ndarray, idx: np.ndarray, base: np.ndarray, right: bool) -> np.ndarray:
        """Fraction of the background ``< x`` (``right``: ``<= x``), the shape of ``x``.

        ``idx`` are the matching insertion points of ``x`` in its track's values and
        ``base`` is ``track * m`` of each value (broadcastable to ``x``).  Computed in
        place in a few temporaries the size of ``x``.
        """
        if self.mode == "exact":
            return idx / self.n
        m = self.values.shape[1]
        # Piecewise-linear CDF through (values[j], j / (m - 1)).  Left: v[i-1] < x <= v[i],
        # so a grid value equal to x gives its rank (frac = 1); right: v[i-1] <= x < v[i]
        # (frac = 0).  Below the minimum both give 0; above the maximum, 1.
        ic = np.clip(idx, 1, m - 1)
        at = ic + base
        lo = self._gather(at - 1)
        hi = self._gather(at)
        del at
        den = np.subtract(hi, lo, out=hi)
        flat = den <= 0
        den[flat] = 1.0
        frac = np.subtract(x, lo, out=lo)
        frac /= den
        np.clip(frac, 0.0, 1.0, out=frac)
        frac[flat] = 0.0
        ic -= 1
        est = np.add(ic, frac, out=frac)  # (ic - 1) + frac, as float64
        est /= m - 1
        top = self._gather(base + (m - 1))
        est[(x >= top) if right else (x > top)] = 1.0
        return est

    def _midrank(
        self, xt: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """``F(x-)`` of every value of ``xt`` (``# S n``, rows contiguous), and ``F(x)``
        where it differs: ``(below, (rows, cols) of the ties, F(x) there)``.

        One binary search per value; a value equal to a stored value (a tie) is searched
        again from the right, and only there ``F(x)`` is computed: elsewhere the left and
        right insertion points agree, and so ``F(x) = F(x-)``.
        """
        s, m = self.values.shape
        base = (np.arange(s, dtype=np.intp) * m)[:, None]
        left = np.empty(xt.shape, np.intp)
        for t in range(s):  # numpy has no row-wise searchsorted; the rest is vectorised
            left[t] = np.searchsorted(self.values[t], xt[t], side="left")
        below = self._cdf(xt, left, base, False)
        np.minimum(left, m - 1, out=left)
        left += base
        tie = self._gather(left) == xt  # NaN never ties
        del left
        rows, cols = np.nonzero(tie)
        if not rows.size:
            return below, (rows, cols), np.empty(0)
        xv = xt[rows, cols]
        right = np.empty(rows.size, np.intp)
        bounds = np.searchsorted(rows, np.arange(s + 1))  # rows come sorted
        for u in np.flatnonzero(np.diff(bounds)):
            part = slice(bounds[u], bounds[u + 1])
            right[part] = np.searchsorted(self.values[u], xv[part], side="right")
        return below, (rows, cols), self._cdf(xv, right, rows * m, True)

    def quantile(self, scores: np.ndarray) -> np.ndarray:
        """Mid-rank quantiles of ``scores`` (``# n S`` float64) -> ``# n S`` float64.

        NaN scores give NaN.  The result is column-major (each track's values
        contiguous, as the table writers want them); a column-major ``scores`` block
        is read without a copy.
        """
        x = check_block(scores, len(self.tracks), "scores")
        xt = x.T
        if xt.strides[1] != xt.itemsize:
            xt = np.ascontiguousarray(xt)
        # Rows of zeros (variants outside the model's field: a third of the study's rows)
        # share one quantile per track, computed once: every value's quantile depends on
        # that value and its track's background only, so the bits are the same.
        zero = ~xt.any(axis=0)
        n_zero = int(np.count_nonzero(zero))
        if n_zero < SHARED_ZERO_ROWS:
            return self._quantile_t(xt).T
        q = np.empty_like(xt)
        q[:, zero] = self._quantile_t(np.zeros((xt.shape[0], 1)))
        if n_zero < xt.shape[1]:
            q[:, ~zero] = self._quantile_t(np.ascontiguousarray(xt[:, ~zero]))
        return q.T

    def _quantile_t(self, xt: np.ndarray) -> np.ndarray:
        """:meth:`quantile` of ``xt`` (``# S n``, rows contiguous) -> ``# S n``."""
        if self.signed:
            a = np.abs(xt)
            below_a, ties_a, at_a = self._midrank(a)
            upto_a = below_a.copy()
            upto_a[ties_a] = at_a
            np.negative(a, out=a)
            below_m, ties_m, at_m = self._midrank(a)
            del a
            upto_m = below_m.copy()
            upto_m[ties_m] = at_m
            # #{|b| < a} = #{-a < b < a};  #{|b| <= a} = #{-a <= b <= a}.
            q = np.subtract(below_a, upto_m, out=upto_m)
            q += upto_a
            q -= below_m
            q /= 2
            np.clip(q, 0.0, 1.0, out=q)
            q *= np.sign(xt)
        else:
            q, ties, at = self._midrank(xt)
            # (F(x-) + F(x)) / 2; where they agree this is F(x-) exactly.
            q[ties] = (q[ties] + at) / 2
        nan = np.isnan(xt)
        if nan.any():
            q[nan] = np.nan
        return q

    def robust_z(self, scores: np.ndarray) -> np.ndarray:
        """``(x - median) / (1.4826 * MAD)`` per track, ``# n S`` float64 (NaN where MAD = 0)."""
        x = check_block(scores, len(self.tracks), "scores")
        scale = MAD_SCALE * self.mad
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (x - self.median) / np.where(scale > 0, scale, np.nan)
        return np.asarray(z)

    def describe(self) -> dict[str, Any]:
        """JSON-able facts (for the file's metadata and the run manifest)."""
        return {
            "aggregation": self.aggregation,
            "statistic": self.statistic,
            "signed": self.signed,
            "n": self.n,
            "mode": self.mode,
            "max_rank_error": self.max_rank_error,
            "k": self.k,
            "grid": self.grid,
            "basis": self.basis,
        }


#: A background MAD below this fraction of the track's largest ``|b|`` is flagged: within
#: 16 rounding steps of float32 predictions (``2**-24`` of a value) of that size.
MAD_RESOLUTION = 2.0**-20


def unresolved_mad(background: Background, where: str) -> str | None:
    """A warning naming the tracks whose MAD may be float32 rounding, or None.

    ``where`` names the background in the sentence (``background stab ave/abs_diff``).
    """
    top = np.max(np.abs(background.values[:, [0, -1]]), axis=1)  # values are sorted
    mad = background.mad
    small = np.flatnonzero((mad > 0) & (mad < MAD_RESOLUTION * top))
    if not small.size:
        return None
    t = int(small[0])
    return (
        f"robust_z: {small.size} of {len(mad)} tracks of {where} have a MAD below 2^-20 of "
        f"their largest background score (e.g. {background.tracks[t]}: MAD {mad[t]:.3g}, "
        f"largest {top[t]:.3g}); float32 predictions resolve about 2^-24 of their values, so "
        "that spread may be rounding and robust_z there can be huge; read quantile for those "
        "tracks"
    )


def normalise(name: str, scores: np.ndarray, background: Background) -> np.ndarray:
    """Apply the normalised statistic ``name`` (``quantile`` or ``robust_z``) to a block."""
    if name == "quantile":
        return background.quantile(scores)
    if name == "robust_z":
        return background.robust_z(scores)
    raise PerturbscoreError(f"unknown normalised statistic {name!r}; use quantile or robust_z.")


def check_block(block: np.ndarray, n_tracks: int, what: str) -> np.ndarray:
    """``block`` as float64 ``# n S`` (``S = n_tracks``); a ValueError otherwise."""
    x = np.asarray(block, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_tracks:
        raise ValueError(f"{what} must be (n, {n_tracks}), not {x.shape}")
    return x
