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
    track whose background MAD is 0 gives NaN (no spread to scale by).

Every output value depends on its own row only, so block size never changes a result.

The background sketch
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
    exact mid-rank quantile of the background.  The median is within that rank error;
    the MAD, a median of deviations from the sketch's median, within about three times
    it (exact in ``exact`` mode).  Memory while building:
    ``(levels + 2) * k * S * 8`` bytes (``levels ~ log2(n / k)``); saved: ``grid * S``
    float64 values per background.

File format (``.npz``, read without pickles)
    ``meta``: a JSON string ``{"format": "perturbscore-background", "version": 1,
    "tracks": [...], "entries": [{"aggregation", "statistic", "signed", "n", "mode",
    "max_rank_error", "k", "grid"}, ...]}``; per entry ``i``: ``values_i`` (``# m S``
    float64, sorted per track), ``median_i`` and ``mad_i`` (``# S``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PerturbscoreError

#: The new statistics: names a run file or compare may use.
NORMALISED = ("quantile", "robust_z")
#: Statistics whose sign carries meaning (quantiles mapped to [-1, 1]).
SIGNED = {"abs_diff": False, "diff": True, "log2fc": True}
MAD_SCALE = 1.4826
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
        x = _check_block(scores, len(self.tracks), "scores")
        xt = x.T
        if xt.strides[1] != xt.itemsize:
            xt = np.ascontiguousarray(xt)
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
        return q.T

    def robust_z(self, scores: np.ndarray) -> np.ndarray:
        """``(x - median) / (1.4826 * MAD)`` per track, ``# n S`` float64 (NaN where MAD = 0)."""
        x = _check_block(scores, len(self.tracks), "scores")
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
        }


def normalise(name: str, scores: np.ndarray, background: Background) -> np.ndarray:
    """Apply the normalised statistic ``name`` (``quantile`` or ``robust_z``) to a block."""
    if name == "quantile":
        return background.quantile(scores)
    if name == "robust_z":
        return background.robust_z(scores)
    raise PerturbscoreError(f"unknown normalised statistic {name!r}; use quantile or robust_z.")


def _check_block(block: np.ndarray, n_tracks: int, what: str) -> np.ndarray:
    x = np.asarray(block, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_tracks:
        raise ValueError(f"{what} must be (n, {n_tracks}), not {x.shape}")
    return x


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
        x = _check_block(block, len(self.tracks), "background block")
        if mask is not None:
            x = x[np.asarray(mask, bool)]
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).sum())
            raise PerturbscoreError(
                f"background {self.aggregation}/{self.statistic}: {bad} non-finite scores; "
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

    def finish(self) -> Background:
        """The background: exact values (``n <= grid``) or the rank grid, median and MAD."""
        if self._n == 0:
            raise PerturbscoreError(
                f"background {self.aggregation}/{self.statistic} has no rows; choose a "
                "group with rows inside the model's field."
            )
        values, weights = self._items()
        signed = SIGNED[self.statistic]
        sketch_err = sum(c * 2**h for h, c in enumerate(self._compactions)) / self._n
        if not any(self._compactions) and self._n <= self.grid:
            exact = np.sort(values, axis=1)
            median = np.median(exact, axis=1)
            mad = np.median(np.abs(exact - median[:, None]), axis=1)
            err = 0.0
            return Background(
                self.aggregation,
                self.statistic,
                signed,
                tuple(self.tracks),
                self._n,
                "exact",
                exact,
                median,
                mad,
                err,
                self.k,
                self.grid,
            )
        ranks = np.linspace(0.0, 1.0, self.grid) * self._n
        # The grid and the median from one sort (each rank is looked up on its own).
        found = _weighted_quantiles(values, weights, np.append(ranks, self._n / 2))
        grid, median = np.ascontiguousarray(found[:, :-1]), found[:, -1]
        grid[:, 0], grid[:, -1] = self._min, self._max
        dev = np.abs(values - median[:, None])
        mad = _weighted_quantiles(dev, weights, np.array([self._n / 2]))[:, 0]
        err = sketch_err + 1.0 / (self.grid - 1)
        return Background(
            self.aggregation,
            self.statistic,
            signed,
            tuple(self.tracks),
            self._n,
            "grid",
            grid,
            median,
            mad,
            (2 * err if signed else err),
            self.k,
            self.grid,
        )


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


# --------------------------------------------------------------------------- files


def save_backgrounds(path: str | Path, backgrounds: Iterable[Background]) -> Path:
    """Write backgrounds (same tracks) to one ``.npz`` file, atomically (temp, rename).

    Refuses to replace an existing file (the user's files are not overwritten).
    """
    p = Path(path)
    items = list(backgrounds)
    if not items:
        raise PerturbscoreError(f"{p}: no backgrounds to save.")
    if p.suffix != ".npz":
        raise PerturbscoreError(f"{p}: a background file ends in .npz; rename it.")
    if p.exists():
        raise PerturbscoreError(f"{p} already exists; choose another name or remove it first.")
    tracks = items[0].tracks
    if any(b.tracks != tracks for b in items):
        raise PerturbscoreError(f"{p}: backgrounds of one file must share their tracks.")
    keys = [b.key for b in items]
    if len(set(keys)) != len(keys):
        raise PerturbscoreError(f"{p}: two backgrounds for the same aggregation and statistic.")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "tracks": list(tracks),
        "entries": [b.describe() for b in items],
    }
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for i, b in enumerate(items):
        arrays[f"values_{i}"] = b.values
        arrays[f"median_{i}"] = b.median
        arrays[f"mad_{i}"] = b.mad
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def load_backgrounds(path: str | Path) -> dict[tuple[str, str], Background]:
    """Read a background file: ``{(aggregation, statistic): Background}``."""
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: background file not found. Check the path.")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise PerturbscoreError(
                    f"{p}: not a perturbscore background file (version {VERSION})."
                )
            tracks = tuple(meta["tracks"])
            out: dict[tuple[str, str], Background] = {}
            for i, e in enumerate(meta["entries"]):
                b = Background(
                    e["aggregation"],
                    e["statistic"],
                    bool(e["signed"]),
                    tracks,
                    int(e["n"]),
                    e["mode"],
                    np.asarray(z[f"values_{i}"], np.float64),
                    np.asarray(z[f"median_{i}"], np.float64),
                    np.asarray(z[f"mad_{i}"], np.float64),
                    float(e["max_rank_error"]),
                    int(e["k"]),
                    int(e["grid"]),
                )
                out[b.key] = b
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise PerturbscoreError(f"{p}: cannot read background file ({exc}).") from exc
    return out


def check_tracks(background: Background, tracks: Sequence[str], where: str) -> None:
    """Refuse a background whose tracks are not the run's selected tracks, in order."""
    if tuple(tracks) != background.tracks:
        missing = [t for t in tracks if t not in set(background.tracks)]
        hint = f"{len(missing)} selected tracks are not in it" if missing else "order differs"
        raise PerturbscoreError(
            f"{where}: the background's {len(background.tracks)} tracks are not the run's "
            f"{len(tracks)} selected tracks ({hint}); build the background with the same "
            "track selection."
        )


def pick_background(
    backgrounds: Mapping[tuple[str, str], Background], aggregation: str, statistic: str, where: str
) -> Background:
    """The background of one (aggregation, statistic), or a user error naming what exists."""
    try:
        return backgrounds[(aggregation, statistic)]
    except KeyError:
        have = ", ".join(f"{a}/{s}" for a, s in backgrounds) or "none"
        raise PerturbscoreError(
            f"{where}: no background for {aggregation}/{statistic} (it has {have}); build one "
            "with that aggregation and statistic."
        ) from None
