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
    with pytest.raises(PerturbscoreError, match="no array named mid in the archive; it holds alt"):
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
    with pytest.raises(PerturbscoreError, match="x.npy: not a .npy array .it does not start with"):
        open_predictions(path)


def test_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(PerturbscoreError, match="nope.npy: prediction file not found"):
        open_predictions(tmp_path / "nope.npy")
    (tmp_path / "p.txt").write_bytes(b"")
    with pytest.raises(PerturbscoreError, match="unknown prediction format '.txt'"):
        open_predictions(tmp_path / "p.txt")


# --- zip archives of .npy files ------------------------------------------------------


def _zip_of(
    path: Path, arrays: dict[str, np.ndarray], method: int, zip64: bool = False
) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, arr in arrays.items():
            with zf.open(name, "w", force_zip64=zip64) as dst:
                np.save(dst, arr)
    return path


@pytest.mark.parametrize("zip64", [False, True])
@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_members(tmp_path: Path, method: int, zip64: bool) -> None:
    ref, alt = _array(), _array(np.float16) * 2
    path = _zip_of(
        tmp_path / "raw.zip", {"raw/ref.npy": ref, "raw/alt.npy": alt}, method, zip64
    )
    with open_predictions(f"{path}::alt.npy") as r:  # base name of raw/alt.npy
        assert r.path == f"{path}::raw/alt.npy"
        assert r.shape == alt.shape and r.dtype == np.float16
        assert r.sequential is (method == zipfile.ZIP_DEFLATED)
        assert r.describe()["compression"] == ("stored" if method == 0 else "deflated")
        scratch = np.empty((r.scratch_rows(), 3, 5), np.float16)
        got = np.concatenate(
            [r.read_selected(s, min(s + 4, 11), np.array([4, 0]), scratch) for s in (0, 4, 8)]
        )
        np.testing.assert_array_equal(got, alt[:, :, [4, 0]])
    with open_predictions(f"{path}::raw/ref.npy") as r:
        np.testing.assert_array_equal(r.read_rows(0, 11), ref)
    with pytest.raises(PerturbscoreError, match=r"holds 2 .npy arrays \(raw/alt.npy, raw/ref"):
        open_predictions(path)


def test_stored_member_is_read_in_place_by_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    arr = _array(shape=(400, 3, 7))
    path = _zip_of(tmp_path / "s.zip", {"pad.npy": _array(), "a.npy": arr}, zipfile.ZIP_STORED)
    with open_predictions(f"{path}::a.npy") as r:
        assert not r.sequential
        starts = list(range(0, 400, 9))[::-1]  # out of order, on several threads
        with ThreadPoolExecutor(4) as pool:
            blocks = list(pool.map(lambda s: r.read_rows(s, min(s + 9, 400)), starts))
        for s, b in zip(starts, blocks, strict=True):
            np.testing.assert_array_equal(b, arr[s : s + 9])
        assert not any(p.suffix == ".npy" for p in tmp_path.iterdir())  # nothing unpacked


def test_deflated_member_restarts_only_when_read_backwards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    arr = _array(shape=(50, 3, 5))
    path = _zip_of(tmp_path / "d.zip", {"a.npy": arr}, zipfile.ZIP_DEFLATED)
    with open_predictions(path) as r, caplog.at_level(logging.DEBUG, logger="perturbscore"):
        for s in range(0, 21, 7):
            np.testing.assert_array_equal(r.read_rows(s, s + 7), arr[s : s + 7])
        np.testing.assert_array_equal(r.read_rows(30, 31), arr[30:31])  # skip forward: fine
        assert r.restarts == 0
        np.testing.assert_array_equal(r.read_rows(3, 9), arr[3:9])  # backwards: restart
        assert r.restarts == 1
        np.testing.assert_array_equal(r.read_rows(9, 50), arr[9:])  # to the end: CRC checked
        assert any("decompression restarts" in m.message for m in caplog.records)
        # The decompression buffers are counted with the scratch buffer.
        assert r.scratch_nbytes > r.scratch_rows() * r.row_nbytes + 2**20


def test_scratch_nbytes(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", _array())
    with open_predictions(tmp_path / "a.npy") as r:
        assert not r.sequential
        assert r.scratch_nbytes == r.scratch_rows() * 3 * 5 * 4


def test_zip_archive_over_4_gib(tmp_path: Path) -> None:
    """A member whose header lies past 4 GiB: ZIP64 offsets (the file is sparse)."""
    arr = _array(shape=(20, 3, 5))
    path = tmp_path / "big.zip"
    hole = 4 * 2**30 + 12345
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        with zipfile.ZipFile(path, "w", compression=method) as zf:
            zf.writestr("first.txt", b"x")
            # Leave a hole (no disk used) so the next member's header is past 4 GiB.
            zf.start_dir = hole
            with zf.open("a.npy", "w") as dst:
                np.save(dst, arr)
        with zipfile.ZipFile(path) as zf:
            assert zf.getinfo("a.npy").header_offset == hole
        with open_predictions(f"{path}::a.npy") as r:
            np.testing.assert_array_equal(r.read_rows(0, 20), arr)
            np.testing.assert_array_equal(r.read_rows(19, 20), arr[19:])
        path.unlink()


def test_zip_format_name_and_missing(tmp_path: Path) -> None:
    arr = _array()
    path = _zip_of(tmp_path / "scores.bin", {"a.npy": arr}, zipfile.ZIP_STORED)
    with open_predictions(path, "zip") as r:
        np.testing.assert_array_equal(r.read_rows(0, 11), arr)
    with pytest.raises(PerturbscoreError, match=r"nope.zip::a.npy: prediction file not found"):
        open_predictions(tmp_path / "nope.zip::a.npy")
    with pytest.raises(PerturbscoreError, match=r"unknown format 'rar'; use one of npy, npz, zip"):
        open_predictions(path, "rar")
