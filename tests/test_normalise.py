"""Background normalisation: hand-computed quantiles and robust z, the sketch's error."""

from __future__ import annotations

import numpy as np
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.normalise import normalise, unresolved_mad
from perturbscore.normalise_files import (
    check_tracks,
    load_backgrounds,
    pick_background,
    save_backgrounds,
)
from perturbscore.normalise_sketch import BackgroundBuilder


def build(values, statistic="abs_diff", chunk=None, **kw):
    x = np.asarray(values, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    b = BackgroundBuilder([f"T{i}" for i in range(x.shape[1])], "ave", statistic, **kw)
    step = chunk or len(x)
    for s in range(0, len(x), step):
        b.update(x[s : s + step])
    return b.finish()


def test_unsigned_quantiles_by_hand():
    bg = build([1, 2, 2, 3])
    assert bg.mode == "exact" and bg.max_rank_error == 0.0
    # x=2: one value below, two tied -> (1 + 3) / (2 * 4); x=2.5: three below.
    q = bg.quantile(np.array([[2.0], [0.0], [5.0], [2.5], [1.0], [np.nan]]))
    np.testing.assert_allclose(q[:5, 0], [0.5, 0.0, 1.0, 0.75, 0.125], rtol=1e-12)
    assert np.isnan(q[5, 0])


def test_signed_quantiles_by_hand():
    bg = build([-3, -1, 1, 2], statistic="diff")
    # |b| = 3, 1, 1, 2.  x=-1.5: two |b| below 1.5 -> -(2 + 2)/8; x=1: two tied at 1 -> 2/8;
    # x=3: three below, one tied -> 7/8; x=0 stays 0.
    q = bg.quantile(np.array([[-1.5], [1.0], [3.0], [0.0], [-9.0]]))
    np.testing.assert_allclose(q[:, 0], [-0.5, 0.25, 0.875, 0.0, -1.0], rtol=1e-12)


def test_robust_z_by_hand():
    bg = build([[1, 5], [2, 5], [2, 5], [3, 5], [10, 5]])
    # Track 0: median 2, |b - 2| = 1, 0, 0, 1, 8 -> MAD 1; track 1: MAD 0 -> NaN.
    z = bg.robust_z(np.array([[5.0, 5.0], [2.0, 6.0], [0.5, 1.0]]))
    np.testing.assert_allclose(z[:, 0], [3 / 1.4826, 0.0, -1.5 / 1.4826], rtol=1e-12)
    assert np.isnan(z[:, 1]).all()
    np.testing.assert_array_equal(normalise("robust_z", np.array([[5.0, 5.0]]), bg), z[:1])


def test_a_mad_at_float32_resolution_is_flagged():
    """Scores that are float32 rounding (a few ulps of predictions near 0.5, most
    variants) give a MAD of ~1e-8 on track T1: robust z of a real 0.1 would be ~10^7."""
    rng = np.random.default_rng(3)
    ulp = float(np.spacing(np.float32(0.5)))  # 2**-24 for values in [0.5, 1)
    noise = rng.integers(0, 3, 400) * ulp  # |ALT - REF| of rounding only
    real = rng.gamma(2.0, 0.05, 400)
    noise[:5] = [0.3, 0.25, 0.2, 0.4, 0.35]  # a few true effects set the largest score
    zeros = np.zeros(400)
    bg = build(np.column_stack([real, noise, zeros]))
    # oracle: numpy's MAD of track 1, and its largest value
    mad = np.median(np.abs(noise - np.median(noise)))
    assert 0 < mad < 2**-20 * noise.max()
    note = unresolved_mad(bg, "background stab ave/abs_diff")
    assert note is not None
    assert note.startswith(
        "robust_z: 1 of 3 tracks of background stab ave/abs_diff have a MAD below 2^-20"
    )
    assert f"e.g. T1: MAD {mad:.3g}, largest {noise.max():.3g}" in note
    # a real spread and a MAD of 0 (robust_z is NaN there) are not flagged
    assert unresolved_mad(build(np.column_stack([real, zeros])), "x") is None


def _exact_midrank(sorted_b: np.ndarray, x: np.ndarray) -> np.ndarray:
    left = np.searchsorted(sorted_b, x, "left")
    right = np.searchsorted(sorted_b, x, "right")
    return (left + right) / (2 * sorted_b.size)


def test_sketch_within_stated_error_on_a_million_values():
    rng = np.random.default_rng(11)
    n = 10**6
    x = np.column_stack(
        [
            rng.standard_normal(n),
            np.round(rng.exponential(1.0, n), 1),  # heavy ties
            rng.lognormal(0, 2, n) * rng.choice([-1, 1], n),  # signed, wide
        ]
    )
    queries = np.column_stack(
        [
            np.r_[np.linspace(-5, 5, 1999), 0.0],
            np.r_[np.round(np.linspace(0, 8, 1999), 1), 0.0],
            np.r_[np.linspace(-50, 50, 1999), 0.0],
        ]
    )
    bg = build(x, chunk=55_084)
    assert bg.mode == "grid" and bg.max_rank_error < 0.002
    est = bg.quantile(queries)
    for t in range(3):
        exact = _exact_midrank(np.sort(x[:, t]), queries[:, t])
        assert np.abs(est[:, t] - exact).max() <= bg.max_rank_error
    signed = build(x, statistic="diff", chunk=100_003)
    est = signed.quantile(queries)
    for t in range(3):
        a = np.abs(queries[:, t])
        exact = np.sign(queries[:, t]) * _exact_midrank(np.sort(np.abs(x[:, t])), a)
        assert np.abs(est[:, t] - exact).max() <= signed.max_rank_error
    # Median and MAD from the sketch: medians within the rank error (ties allowed).
    eps = bg.max_rank_error
    for t in range(3):
        m = bg.median[t]
        assert np.mean(x[:, t] < m) <= 0.5 + eps and np.mean(x[:, t] <= m) >= 0.5 - eps
        dev = np.abs(x[:, t] - np.median(x[:, t]))
        mad = bg.mad[t]
        assert np.mean(dev < mad) <= 0.5 + 3 * eps and np.mean(dev <= mad) >= 0.5 - 3 * eps


def test_chunk_size_never_changes_a_result():
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.standard_normal(3001), np.round(rng.standard_normal(3001), 1)])
    kw = {"k": 64, "grid": 65}
    built = [build(x, statistic="diff", chunk=c, **kw) for c in (1, 7, 3001)]
    for other in built[1:]:
        np.testing.assert_array_equal(other.values, built[0].values)
        np.testing.assert_array_equal(other.median, built[0].median)
        np.testing.assert_array_equal(other.mad, built[0].mad)
        assert other.max_rank_error == built[0].max_rank_error
    q = rng.standard_normal((101, 2))
    whole = built[0].quantile(q)
    parts = np.vstack([built[0].quantile(q[s : s + 7]) for s in range(0, 101, 7)])
    np.testing.assert_array_equal(whole, parts)
    z = np.vstack([built[0].robust_z(q[s : s + 1]) for s in range(101)])
    np.testing.assert_array_equal(built[0].robust_z(q), z)


def test_mask_leaves_rows_out():
    b = BackgroundBuilder(["T0"], "ave", "abs_diff")
    b.update(np.array([[0.0], [1.0], [0.0], [2.0]]), mask=np.array([False, True, False, True]))
    bg = b.finish()
    assert bg.n == 2 and bg.values.tolist() == [[1.0, 2.0]]


def test_save_load_roundtrip(tmp_path):
    a = build([[1, 2], [3, 4], [5, 6]])
    d = build([[-1, 2], [3, -4], [5, 6]], statistic="diff")
    path = save_backgrounds(tmp_path / "bg.npz", [a, d])
    loaded = load_backgrounds(path)
    got = pick_background(loaded, "ave", "diff", str(path))
    np.testing.assert_array_equal(got.values, d.values)
    assert got.signed and got.tracks == ("T0", "T1") and got.n == 3
    x = np.array([[2.0, -3.0]])
    np.testing.assert_array_equal(got.quantile(x), d.quantile(x))
    with pytest.raises(PerturbscoreError, match="already exists"):
        save_backgrounds(path, [a])
    with pytest.raises(PerturbscoreError, match="no background for tss/abs_diff"):
        pick_background(loaded, "tss", "abs_diff", str(path))
    with pytest.raises(PerturbscoreError, match="selected tracks"):
        check_tracks(got, ["T1", "T0"], str(path))
    with pytest.raises(PerturbscoreError, match="non-finite"):
        BackgroundBuilder(["T0"], "ave", "log2fc").update(np.array([[np.inf]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bg.npz"]


def _grid_cdf(v: np.ndarray, x: float, right: bool) -> float:
    """The grid's piecewise-linear CDF through (v[j], j / (m - 1)), one value at a time:
    the fraction below x (right: at most x); 0 below the grid, 1 above it."""
    m = len(v)
    i = int(np.sum(v <= x)) if right else int(np.sum(v < x))
    if i == 0:
        return 0.0
    if i == m:
        return 1.0
    return (i - 1 + (x - v[i - 1]) / (v[i] - v[i - 1])) / (m - 1)


def test_grid_quantiles_with_ties_against_a_scalar_oracle():
    # k = 8, grid = 9: a sketched (grid-mode) background whose grid repeats values.
    rng = np.random.default_rng(8)
    x = np.column_stack([np.round(rng.exponential(1.0, 500), 0), rng.standard_normal(500)])
    for statistic in ("abs_diff", "diff"):
        data = np.abs(x) if statistic == "abs_diff" else x
        bg = build(data, statistic=statistic, k=8, grid=9)
        assert bg.mode == "grid" and len(np.unique(bg.values[0])) < 9  # ties in the grid
        q = np.vstack([bg.values.T, data[:40], [[np.nan, 0.0], [99.0, -99.0], [-0.0, 1e-300]]])
        got = bg.quantile(q)
        assert np.isnan(got[-3, 0])
        for t in range(2):
            v = bg.values[t]
            for i, value in enumerate(q[:, t]):
                if np.isnan(value):
                    continue
                if statistic == "abs_diff":
                    want = (_grid_cdf(v, value, False) + _grid_cdf(v, value, True)) / 2
                else:  # #{|b| < a} and #{|b| <= a} from the CDF at a and -a
                    a = abs(value)
                    below = _grid_cdf(v, a, False) - _grid_cdf(v, -a, True)
                    upto = _grid_cdf(v, a, True) - _grid_cdf(v, -a, False)
                    want = np.sign(value) * min(1.0, max(0.0, (below + upto) / 2))
                assert got[i, t] == pytest.approx(want, rel=1e-12, abs=1e-15), (statistic, t, i)
        # Row-major and column-major blocks give the same values, bit for bit.
        np.testing.assert_array_equal(bg.quantile(np.asfortranarray(q)), got)


def test_all_zero_rows_get_the_values_of_zero_in_blocks_of_any_size():
    # Rows exactly 0 on every track (REF == ALT, about 31% of the study's rows), -0.0
    # included: the same bits in a block as one row at a time.
    rng = np.random.default_rng(4)
    for statistic in ("abs_diff", "diff"):
        x = np.round(rng.standard_normal((3000, 3)), 1)
        x = np.abs(x) if statistic == "abs_diff" else x
        bg = build(x, statistic=statistic, k=64, grid=65)
        q = np.vstack([x[:50], np.zeros((9, 3)), -np.zeros((4, 3)), [[0.0, -0.0, np.nan]]])
        q = q[rng.permutation(len(q))]
        whole = bg.quantile(q)
        rows = np.vstack([bg.quantile(q[i : i + 1]) for i in range(len(q))])
        np.testing.assert_array_equal(whole.view(np.int64), rows.view(np.int64))
        zero = ~q.any(axis=1)
        assert zero.sum() == 13 and np.isnan(whole[~zero]).sum() == 1
        if statistic == "diff":  # 0 stays 0
            assert (whole[zero] == 0).all()
        else:
            np.testing.assert_array_equal(
                whole[zero], np.tile(bg.quantile(np.zeros((1, 3))), (13, 1))
            )
