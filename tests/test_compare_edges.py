"""Edge cases of the per-track tests that must stay quiet on stderr."""

from __future__ import annotations

import warnings

import numpy as np
import pytest


@pytest.mark.parametrize("kind", ["signed", "ranksum"])
def test_empty_samples_give_nan_without_numpy_warnings(kind: str) -> None:
    """A design with no units (e.g. a pairing of matching units only, for paired) tests
    nothing: NaN, and no 'Mean of empty slice' leaking to the user's stderr."""
    from perturbscore.compare_tests import block_tests

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = block_tests(kind, np.empty((3, 0)), np.empty((3, 0)))
    assert np.isnan(res["median_difference"]).all() and np.isnan(res["p_two_sided"]).all()
    assert (res["n_x"] == 0).all() and (res["n_y"] == 0).all()
