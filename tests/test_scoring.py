"""Hand-computed values for every aggregation and statistic on a tiny array."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.scoring import parse_aggregation, score_block

# Two variants, five bins, one track.  Axes: N B T.
REF = np.array([[[1.0], [2.0], [3.0], [4.0], [5.0]], [[4.0], [4.0], [4.0], [4.0], [4.0]]])
ALT = np.array([[[2.0], [2.0], [5.0], [4.0], [9.0]], [[1.0], [1.0], [1.0], [1.0], [1.0]]])

# (aggregation, statistic) -> expected scores of the two variants, worked by hand:
#   tss      = bin 2:             ref 3, 4        alt 5, 1
#   ave      = mean of 5 bins:    ref 3, 4        alt 22/5, 1
#   window:1 = mean of bins 1..3: ref 3, 4        alt 11/3, 1
#   sum      = sum of 5 bins:     ref 15, 20      alt 22, 5
EXPECTED = {
    ("tss", "diff"): [2.0, -3.0],
    ("tss", "abs_diff"): [2.0, 3.0],
    ("tss", "log2fc"): [math.log2(6 / 4), math.log2(2 / 5)],
    ("ave", "diff"): [22 / 5 - 3, -3.0],
    ("ave", "abs_diff"): [22 / 5 - 3, 3.0],
    ("ave", "log2fc"): [math.log2((22 / 5 + 1) / 4), math.log2(2 / 5)],
    ("window:1", "diff"): [11 / 3 - 3, -3.0],
    ("window:1", "abs_diff"): [11 / 3 - 3, 3.0],
    ("window:1", "log2fc"): [math.log2((11 / 3 + 1) / 4), math.log2(2 / 5)],
    ("sum", "diff"): [7.0, -15.0],
    ("sum", "abs_diff"): [7.0, 15.0],
    ("sum", "log2fc"): [math.log2(23 / 16), math.log2(6 / 21)],
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_aggregation_and_statistic_by_hand(dtype: type) -> None:
    aggs = [parse_aggregation(a, 5) for a in ("tss", "ave", "window:1", "sum")]
    got = score_block(
        REF.astype(dtype), ALT.astype(dtype), aggs, ["diff", "abs_diff", "log2fc"], pseudocount=1.0
    )
    assert set(got) == set(EXPECTED)
    for key, want in EXPECTED.items():
        assert got[key].shape == (2, 1)
        np.testing.assert_allclose(got[key][:, 0], want, rtol=1e-12, err_msg=str(key))


def test_pseudocount_changes_log2fc() -> None:
    agg = [parse_aggregation("tss", 5)]
    got = score_block(REF, ALT, agg, ["log2fc"], pseudocount=0.5)
    np.testing.assert_allclose(
        got[("tss", "log2fc")][:, 0], [math.log2(5.5 / 3.5), math.log2(1.5 / 4.5)]
    )


def test_window_bins_and_centre() -> None:
    assert (parse_aggregation("window:2", 5).start, parse_aggregation("window:2", 5).stop) == (0, 5)
    assert parse_aggregation("tss", 3).start == 1
    assert parse_aggregation("tss", 896, center_bin=447).start == 447
    assert parse_aggregation("tss", 896, center_bin=448).start == 448
    assert parse_aggregation("window:1", 4, center_bin=1).start == 0
    assert parse_aggregation("window:1", 4, center_bin=1).label == "window1"


@pytest.mark.parametrize("spec", ["tss", "window:1"])
def test_even_bins_need_a_centre(spec: str) -> None:
    with pytest.raises(PerturbscoreError, match=r"even number of bins \(896\).*447 or 448"):
        parse_aggregation(spec, 896)


@pytest.mark.parametrize(
    ("spec", "bins", "message"),
    [
        ("median", 3, "unknown aggregation"),
        ("window:2", 3, "do not fit"),
        ("window:x", 3, "unknown aggregation"),
    ],
)
def test_bad_aggregations(spec: str, bins: int, message: str) -> None:
    with pytest.raises(PerturbscoreError, match=message):
        parse_aggregation(spec, bins)


def test_centre_out_of_range() -> None:
    with pytest.raises(
        PerturbscoreError,
        match=r"--center-bin\) is outside the predictions. bins 0..3; give a bin in that "
        r"range, e.g. 2",
    ):
        parse_aggregation("tss", 4, center_bin=4)
