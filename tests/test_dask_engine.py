"""The Dask engine gives the local engine's tables, on a LocalCluster with 2 workers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore import RunOptions, load_run_file, run
from perturbscore.errors import PerturbscoreError

distributed = pytest.importorskip("distributed")
xr = pytest.importorskip("xarray")

TOML = "stablefm.toml"


@pytest.fixture(scope="module")
def scheduler():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    yield cluster.scheduler_address
    cluster.close()


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p) for p in folder.glob("*.parquet")}


def test_dask_equals_local(study: Path, tmp_path: Path, scheduler: str, cli) -> None:
    r = cli(
        "run",
        study / TOML,
        "--out",
        tmp_path / "dask",
        "--engine",
        "dask",
        "--scheduler",
        scheduler,
        "--format",
        "parquet",
        "--zarr",
        "--chunk-rows",
        7,
    )
    assert r.returncode == 0, r.stderr
    run(
        load_run_file(study / TOML),
        tmp_path / "local",
        RunOptions(format="parquet", zarr=True, chunk_rows=7, progress=False),
    )
    local, dask = _tables(tmp_path / "local"), _tables(tmp_path / "dask")
    assert sorted(local) == sorted(dask) and len(local) == 4
    for name, table in local.items():
        assert (tmp_path / "dask" / name).is_dir()  # a partitioned dataset
        assert len(list((tmp_path / "dask" / name).glob("*.parquet"))) > 1
        pd.testing.assert_frame_equal(dask[name], table, check_exact=True)
    for g in ("stab", "top"):
        xr.testing.assert_identical(
            xr.open_zarr(tmp_path / "dask" / f"{g}_scores.zarr").load(),
            xr.open_zarr(tmp_path / "local" / f"{g}_scores.zarr").load(),
        )


def test_own_local_cluster_and_hdf5_inputs(study: Path, tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    text = (study / TOML).read_text()
    for p in sorted(study.glob("final_*.npy")):
        with h5py.File(study / "preds.h5", "a") as f:
            f.create_dataset(p.stem, data=np.load(p), chunks=(8, 3, 42))
        text = text.replace(f'"{p.name}"', f'"preds.h5::{p.stem}"')
    (study / "h5.toml").write_text(text)
    opts = RunOptions(format="parquet", chunk_rows=11, progress=False)
    run(load_run_file(study / TOML), tmp_path / "local", opts)
    run(
        load_run_file(study / "h5.toml"),
        tmp_path / "dask",
        RunOptions(format="parquet", chunk_rows=11, progress=False, engine="dask", workers=2),
    )
    for name, table in _tables(tmp_path / "local").items():
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "dask" / name), table, check_exact=True
        )


def test_unreachable_scheduler_fails_fast(study: Path, tmp_path: Path, cli) -> None:
    start = time.monotonic()
    r = cli(
        "run",
        study / TOML,
        "--out",
        tmp_path / "o",
        "--engine",
        "dask",
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--format",
        "parquet",
    )
    assert r.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "o").exists()


def test_dask_refuses_other_formats_and_nan(
    study: Path, tmp_path: Path, scheduler: str, cli
) -> None:
    r = cli("run", study / TOML, "--out", tmp_path / "o", "--engine", "dask")
    assert r.returncode == 2 and "writes partitioned Parquet datasets, not rdata" in r.stderr
    p = study / "final_alt_preds_top_snps_strand.npy"
    arr = np.load(p)
    arr[2, 1, 4] = np.inf
    np.save(p, arr)
    with pytest.raises(PerturbscoreError, match="final_alt_preds_top_snps_strand.npy: 1 values"):
        run(
            load_run_file(study / TOML),
            tmp_path / "n",
            RunOptions(format="parquet", engine="dask", scheduler=scheduler, progress=False),
        )
    assert not (tmp_path / "n").exists()
