"""Prediction readers: row blocks equal the array, bad files fail up front."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.readers import NpyReader, open_predictions


def _array(dtype: type = np.float32, shape: tuple[int, int, int] = (11, 3, 5)) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_npy_blocks_equal_the_array(tmp_path: Path, dtype: type) -> None:
    arr = _array(dtype)
    np.save(tmp_path / "a.npy", arr)
    with open_predictions(tmp_path / "a.npy") as r:
        assert r.shape == (11, 3, 5) and r.dtype == np.dtype(dtype)
        buf = np.empty((4, 3, 5), dtype)
        got = np.concatenate([r.read_rows(s, min(s + 4, 11), buf).copy() for s in range(0, 11, 4)])
        np.testing.assert_array_equal(got, arr)
        np.testing.assert_array_equal(r.read_rows(5, 6), arr[5:6])
        assert r.describe()["bytes"] == (tmp_path / "a.npy").stat().st_size


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_members(tmp_path: Path, compression: int) -> None:
    ref, alt = _array(), _array() * 2
    path = tmp_path / "preds.npz"
    (np.savez_compressed if compression == zipfile.ZIP_DEFLATED else np.savez)(
        path, ref=ref, alt=alt
    )
    with open_predictions(f"{path}::alt") as r:
        assert r.shape == alt.shape
        blocks = [r.read_rows(s, min(s + 3, 11)).copy() for s in range(0, 11, 3)]
        np.testing.assert_array_equal(np.concatenate(blocks), alt)
        # Going backwards restarts the stream and still returns the right rows.
        np.testing.assert_array_equal(r.read_rows(1, 2), alt[1:2])
    with pytest.raises(PerturbscoreError, match=r"holds 2 .npy arrays \(alt, ref\).*::<member>"):
        open_predictions(path)
    with pytest.raises(PerturbscoreError, match="no array named mid in the archive; it holds alt, ref"):
        open_predictions(f"{path}::mid")
    single = tmp_path / "one.npz"
    np.savez(single, preds=ref)
    with open_predictions(single) as r:
        np.testing.assert_array_equal(r.read_rows(0, 11), ref)


def test_truncated_npy(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, _array())
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(PerturbscoreError, match=r"t.npy: file is truncated: \d+ bytes, expected"):
        NpyReader(path)


@pytest.mark.parametrize(
    ("arr", "message"),
    [
        (np.arange(30, dtype=np.int32).reshape(2, 3, 5), "dtype int32 is not a float16/float32"),
        (np.array([["a", "b"]], dtype=object).reshape(1, 1, 2), "dtype object"),
        (np.array(["x"] * 6).reshape(1, 2, 3), "dtype <U1"),
        (np.zeros((4, 5), np.float32), r"shape \(4, 5\) has 2 axes"),
        (np.asfortranarray(np.zeros((2, 3, 4), np.float32)), "Fortran order"),
    ],
)
def test_wrong_arrays(tmp_path: Path, arr: np.ndarray, message: str) -> None:
    path = tmp_path / "w.npy"
    np.save(path, arr, allow_pickle=True)
    with pytest.raises(PerturbscoreError, match=message):
        open_predictions(path)


def test_not_an_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_text("REF,ALT\n1,2\n")
    with pytest.raises(PerturbscoreError, match="x.npy: not a valid .npy array"):
        open_predictions(path)


def test_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(PerturbscoreError, match="nope.npy: prediction file not found"):
        open_predictions(tmp_path / "nope.npy")
    (tmp_path / "p.txt").write_bytes(b"")
    with pytest.raises(PerturbscoreError, match="unknown prediction format '.txt'"):
        open_predictions(tmp_path / "p.txt")
