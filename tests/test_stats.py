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
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # The exact branch is taken exactly where R takes it.
    if case["case"].endswith(("exact_n12", "exact_9_14", "exact_49_3")):
        assert res.exact[0]
    else:
        assert not res.exact[0]


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
    assert (res.n_x[0], res.n_y[0]) == (5, 2)  # 5 usable pairs, 2 of them zero
    assert res.statistic[0] == 1 + 3  # ranks of |1|, |-2|, |3| are 1, 2, 3


def test_effect_sizes_by_hand() -> None:
    r = rank_sum(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0]))
    assert r.statistic[0] == 6 and r.effect[0] == 1.0  # every x above every y
    s = signed_rank(np.array([1.0, -2.0, 3.0]))
    assert s.effect[0] == pytest.approx((4 - 2) / 6)


def test_degenerate_columns_give_nan_not_errors() -> None:
    res = rank_sum(np.array([[1.0, 2.0], [1.0, np.nan]]), np.array([[1.0, np.nan], [1.0, np.nan]]))
    assert np.isnan(res.p_two_sided).all()  # all tied; and an empty sample


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
