"""Wilcoxon p-values and BH adjustment against values computed by R (tests/data)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from perturbscore.stats import p_adjust_bh, rank_sum, signed_rank

DATA = Path(__file__).parent / "data" / "wilcox_reference.csv"


def _floats(text: str) -> np.ndarray:
    return np.array([np.nan if v.strip() == "NA" else float(v) for v in text.split(";")])


def _cases() -> list[dict[str, str]]:
    with open(DATA) as fh:
        return [row for row in csv.DictReader(fh) if row["case"] != "bh"]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["case"])
def test_matches_r_wilcox_test(case: dict[str, str]) -> None:
    x, y = _floats(case["x"]), _floats(case["y"])
    res = signed_rank(x - y) if case["paired"] == "TRUE" else rank_sum(x, y)
    got = [res.p_greater[0], res.p_less[0], res.p_two_sided[0], res.statistic[0]]
    want = [float(case[k]) for k in ("p_greater", "p_less", "p_two_sided", "statistic")]
    # Relative tolerance over the whole range, tails of 1e-100 included; NaN where R
    # gives NaN (all values tied: two-sided 0 / 0).
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True)
    assert all(0 <= p <= 1 for p in got[:3] if not np.isnan(p))
    # The exact branch is taken exactly where R takes it.
    assert bool(res.exact[0]) == (case["exact"] == "TRUE")


def test_columns_are_independent_tests() -> None:
    cases = [c for c in _cases() if c["paired"] == "FALSE"]
    n = max(len(_floats(c["x"])) for c in cases)
    m = max(len(_floats(c["y"])) for c in cases)
    xs, ys = np.full((n, len(cases)), np.nan), np.full((m, len(cases)), np.nan)
    for j, c in enumerate(cases):
        x, y = _floats(c["x"]), _floats(c["y"])
        xs[: len(x), j], ys[: len(y), j] = x, y
    res = rank_sum(xs, ys)  # NaN padding = missing values, dropped per column
    np.testing.assert_allclose(
        res.p_two_sided, [float(c["p_two_sided"]) for c in cases], rtol=1e-12
    )
    assert list(res.n_x) == [len(_floats(c["x"])) for c in cases]


def test_zero_differences_are_dropped_but_counted() -> None:
    d = np.array([0.0, 0.0, 1.0, -2.0, 3.0, np.nan])
    res = signed_rank(d)
    # 5 usable pairs (both sample sizes), 2 of them zero.
    assert (res.n_x[0], res.n_y[0], res.n_zero[0]) == (5, 5, 2)
    assert res.statistic[0] == 1 + 3  # ranks of |1|, |-2|, |3| are 1, 2, 3


def test_effect_sizes_by_hand() -> None:
    r = rank_sum(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0]))
    assert r.statistic[0] == 6 and r.effect[0] == 1.0  # every x above every y
    s = signed_rank(np.array([1.0, -2.0, 3.0]))
    assert s.effect[0] == pytest.approx((4 - 2) / 6)


def test_degenerate_columns_give_nan_not_errors() -> None:
    res = rank_sum(np.array([[1.0, 2.0], [1.0, np.nan]]), np.array([[1.0, np.nan], [1.0, np.nan]]))
    assert np.isnan(res.p_two_sided).all()  # all tied; and an empty sample
    # All tied: R's wilcox.test gives greater = less = 1 and a NaN two-sided p.
    assert (res.p_greater[0], res.p_less[0]) == (1.0, 1.0)
    assert np.isnan(res.p_greater[1]) and not res.exact.any()


def test_far_tails_are_not_one_minus_the_other() -> None:
    # 30 vs 30 fully separated: exactly 1 / choose(60, 30) (R: 8.4556169460723878e-18).
    from math import comb

    res = rank_sum(np.arange(31.0, 61.0), np.arange(1.0, 31.0))
    assert res.p_greater[0] == pytest.approx(1 / comb(60, 30), rel=1e-13)
    s = signed_rank(-np.arange(1.0, 41.0))
    assert s.p_less[0] == pytest.approx(2.0**-40, rel=1e-13) and s.p_greater[0] == 1.0


def test_bh_matches_r_p_adjust() -> None:
    with open(DATA) as fh:
        row = next(r for r in csv.DictReader(fh) if r["case"] == "bh")
    got = p_adjust_bh(_floats(row["x"]))
    np.testing.assert_allclose(got, _floats(row["p_greater"]), rtol=1e-15, equal_nan=True)


def test_bh_by_hand() -> None:
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.04, 0.04, 0.5 (monotone from the top).
    np.testing.assert_allclose(
        p_adjust_bh(np.array([0.03, 0.5, 0.01, 0.02])), [0.04, 0.5, 0.04, 0.04]
    )


# --- Property test against scipy with R's method rule --------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Few distinct values make ties (and zero differences) likely; NaN is "missing".
_VALUES = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, np.nan]),
    st.floats(-10, 10, allow_nan=False, width=32),
)


def _scipy_rule(exact: bool) -> str:
    return "exact" if exact else "asymptotic"


@settings(max_examples=150, deadline=None)
@given(
    x=st.lists(_VALUES, min_size=2, max_size=60),
    y=st.lists(_VALUES, min_size=2, max_size=60),
)
def test_rank_sum_matches_scipy_with_r_rule(x: list[float], y: list[float]) -> None:
    from scipy import stats

    xa, ya = np.array(x), np.array(y)
    xs, ys = xa[~np.isnan(xa)], ya[~np.isnan(ya)]
    res = rank_sum(xa, ya)
    if len(xs) == 0 or len(ys) == 0:
        assert np.isnan(res.p_two_sided[0])
        return
    both = np.concatenate([xs, ys])
    exact = len(xs) < 50 and len(ys) < 50 and len(np.unique(both)) == len(both)
    assert bool(res.exact[0]) == exact
    if len(np.unique(both)) == 1:  # all tied: R's 1, 1, NaN (scipy says NaN)
        assert (res.p_greater[0], res.p_less[0]) == (1.0, 1.0)
        assert np.isnan(res.p_two_sided[0])
        return
    for alt, got in (
        ("greater", res.p_greater[0]),
        ("less", res.p_less[0]),
        ("two-sided", res.p_two_sided[0]),
    ):
        want = stats.mannwhitneyu(
            xs, ys, alternative=alt, method=_scipy_rule(exact), use_continuity=True
        ).pvalue
        assert got == pytest.approx(want, rel=1e-9, abs=0), alt


@settings(max_examples=150, deadline=None)
@given(d=st.lists(_VALUES, min_size=2, max_size=60))
def test_signed_rank_matches_scipy_with_r_rule(d: list[float]) -> None:
    from scipy import stats

    da = np.array(d)
    ds = da[~np.isnan(da)]
    res = signed_rank(da)
    nz = ds[ds != 0]
    assert (res.n_x[0], res.n_zero[0]) == (len(ds), len(ds) - len(nz))
    if len(nz) == 0:  # no non-zero difference: no test
        assert np.isnan(res.p_two_sided[0])
        return
    a = np.abs(nz)
    exact = len(nz) < 50 and len(np.unique(a)) == len(a) and len(nz) == len(ds)
    assert bool(res.exact[0]) == exact
    for alt, got in (
        ("greater", res.p_greater[0]),
        ("less", res.p_less[0]),
        ("two-sided", res.p_two_sided[0]),
    ):
        # zero_method="wilcox" drops zeros before ranking, as R does.
        want = stats.wilcoxon(
            nz, alternative=alt, method="exact" if exact else "asymptotic", correction=True
        ).pvalue
        assert got == pytest.approx(want, rel=1e-9, abs=0), alt
