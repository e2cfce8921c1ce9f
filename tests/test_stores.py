"""HDF5 and Zarr readers against the same data written as .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore import RunOptions, load_run_file, run
from perturbscore.errors import PerturbscoreError
from perturbscore.readers import open_predictions

h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")


def _arr(dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(5).gamma(2.0, size=(23, 3, 7)).astype(dtype)


def _write_h5(path: Path, name: str, arr: np.ndarray, chunks: tuple | None = (4, 3, 7)) -> None:
    with h5py.File(path, "a") as f:
        f.create_dataset(name, data=arr, chunks=chunks)


def _write_zarr(path: Path, name: str, arr: np.ndarray, fmt: int, chunks=(4, 3, 7)) -> None:
    root = zarr.open_group(str(path), mode="a", zarr_format=fmt)
    z = root.create_array(name, shape=arr.shape, chunks=chunks, dtype=arr.dtype)
    z[...] = arr


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_hdf5_reader(tmp_path: Path, dtype: type) -> None:
    arr = _arr(dtype)
    _write_h5(tmp_path / "p.h5", "preds/ref", arr)
    with open_predictions(f"{tmp_path / 'p.h5'}::preds/ref") as r:
        assert r.shape == arr.shape and r.dtype == arr.dtype and not r.warnings
        np.testing.assert_array_equal(r.read_rows(3, 17), arr[3:17])
        cols = np.array([6, 0, 2])
        np.testing.assert_array_equal(r.read_selected(0, 23, cols, None), arr[:, :, cols])
    with open_predictions(tmp_path / "p.h5") as r:  # the only dataset
        assert r.path.endswith("::preds/ref")


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_reader_v2_and_v3(tmp_path: Path, fmt: int) -> None:
    arr = _arr()
    _write_zarr(tmp_path / "p.zarr", "alt", arr, fmt)
    with open_predictions(f"{tmp_path / 'p.zarr'}::alt") as r:
        assert r.shape == arr.shape and r.describe()["format"] == f"zarr{fmt}"
        np.testing.assert_array_equal(r.read_rows(5, 23), arr[5:])
        buf = np.empty((4, 3, 7), np.float32)
        np.testing.assert_array_equal(r.read_rows(0, 4, buf), arr[:4])


def test_missing_dataset_inside_a_store(tmp_path: Path) -> None:
    _write_h5(tmp_path / "p.h5", "ref", _arr())
    with pytest.raises(PerturbscoreError, match=r"p.h5: no dataset 'alt' inside the file"):
        open_predictions(f"{tmp_path / 'p.h5'}::alt")
    _write_zarr(tmp_path / "p.zarr", "ref", _arr(), 3)
    with pytest.raises(PerturbscoreError, match=r"p.zarr: no array 'alt' inside the store"):
        open_predictions(f"{tmp_path / 'p.zarr'}::alt")
    with pytest.raises(PerturbscoreError, match="Zarr store not found"):
        open_predictions(f"{tmp_path / 'none.zarr'}::alt")


def test_chunking_along_tracks_only_warns(tmp_path: Path) -> None:
    _write_h5(tmp_path / "p.h5", "ref", _arr(), chunks=(23, 3, 2))
    with open_predictions(f"{tmp_path / 'p.h5'}::ref") as r:
        assert len(r.warnings) == 1
        assert "chunked along tracks only (chunks (23, 3, 2)" in r.warnings[0]
        assert "Rechunk along variants" in r.warnings[0]


def _study_in_stores(study: Path, kind: str) -> None:
    """Move the study's predictions into one HDF5 file or Zarr store per batch."""
    text = (study / "stablefm.toml").read_text()
    for p in sorted(study.glob("final_ref_preds_*.npy")):
        alt = p.with_name(p.name.replace("_ref_", "_alt_"))
        stem = p.stem.replace("final_ref_preds_", "")
        if kind == "hdf5":
            store = study / f"{stem}.h5"
            _write_h5(store, "ref", np.load(p), chunks=(8, 3, 42))
            _write_h5(store, "alt", np.load(alt), chunks=(8, 3, 42))
        else:
            store = study / f"{stem}.zarr"
            _write_zarr(store, "ref", np.load(p), 3, chunks=(8, 3, 42))
            _write_zarr(store, "alt", np.load(alt), 3, chunks=(8, 3, 42))
        text = text.replace(f'"{p.name}"', f'"{store.name}::ref"')
        text = text.replace(f'"{alt.name}"', f'"{store.name}::alt"')
    (study / "stores.toml").write_text(text)


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
def test_runs_from_stores_equal_npy(study: Path, tmp_path: Path, kind: str) -> None:
    _study_in_stores(study, kind)
    opts = RunOptions(format="parquet", chunk_rows=5, progress=False)
    run(load_run_file(study / "stablefm.toml"), tmp_path / "npy", opts)
    run(load_run_file(study / "stores.toml"), tmp_path / kind, opts)
    for p in (tmp_path / "npy").glob("*.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(p), pd.read_parquet(tmp_path / kind / p.name), check_exact=True
        )


def test_cli_missing_dataset_exits_2(study: Path, tmp_path: Path, cli) -> None:
    _study_in_stores(study, "hdf5")
    text = (
        (study / "stores.toml")
        .read_text()
        .replace("stab_snps_strand.h5::alt", "stab_snps_strand.h5::ALT")
    )
    (study / "stores.toml").write_text(text)
    r = cli("run", study / "stores.toml", "--out", tmp_path / "o")
    assert r.returncode == 2
    assert "stab_snps_strand.h5: no dataset 'ALT' inside the file" in r.stderr
    assert not (tmp_path / "o").exists()


def test_zarr_cube_opens_with_xarray_and_round_trips(study: Path, tmp_path: Path, cli) -> None:
    xr = pytest.importorskip("xarray")
    out = tmp_path / "o"
    r = cli(
        "run",
        study / "stablefm.toml",
        "--out",
        out,
        "--format",
        "parquet",
        "--zarr",
        "--chunk-rows",
        6,
    )
    assert r.returncode == 0, r.stderr
    ds = xr.open_zarr(out / "top_scores.zarr")
    assert ds["scores"].dims == ("variant", "track", "aggregation", "statistic")
    assert ds.sizes == {"variant": 76, "track": 21, "aggregation": 2, "statistic": 1}
    assert list(ds["aggregation"].values) == ["ave", "tss"]
    tss = pd.read_parquet(out / "top_diff_tss_relevant_comb.parquet")
    got = ds["scores"].sel(aggregation="tss", statistic="abs_diff").values
    np.testing.assert_array_equal(got, tss.iloc[:, :21].to_numpy())
    assert list(ds["rsID"].values) == list(tss["rsID"])
    assert list(ds["track"].values) == list(tss.columns[:21])
    assert set(ds["biosample"].values) == {
        "GM12878",
        "B lymphoblastoid cell line: GM12878 ENCODE, biol_",
    }
    # xarray round trip: what it reads back it writes identically.
    ds.load().to_zarr(tmp_path / "copy.zarr", zarr_format=2)
    xr.testing.assert_identical(xr.open_zarr(tmp_path / "copy.zarr").load(), ds)
    again = cli("run", study / "stablefm.toml", "--out", out, "--format", "rds", "--zarr")
    assert again.returncode == 2 and "stab_scores.zarr" in again.stderr


def test_format_named_in_the_run_file(study: Path, tmp_path: Path) -> None:
    _study_in_stores(study, "hdf5")
    text = (study / "stores.toml").read_text()
    for p in sorted(study.glob("*.h5")):
        p.rename(p.with_suffix(".data"))  # a name that tells nothing
        text = text.replace(f'"{p.name}::', f'"{p.with_suffix(".data").name}::')
    text = text.replace('variants = "', 'format = "hdf5", variants = "')
    (study / "named.toml").write_text(text)
    opts = RunOptions(format="parquet", progress=False)
    run(load_run_file(study / "stablefm.toml"), tmp_path / "npy", opts)
    run(load_run_file(study / "named.toml"), tmp_path / "named", opts)
    for p in (tmp_path / "npy").glob("*.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(p), pd.read_parquet(tmp_path / "named" / p.name)
        )
    with pytest.raises(PerturbscoreError, match=r"unknown prediction format '.data'"):
        open_predictions(f"{next(study.glob('*.data'))}::ref")
