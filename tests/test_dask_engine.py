"""The Dask engine gives the local engine's tables, on a LocalCluster with 2 workers."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from perturbscore import RunOptions, load_run_file, run
from perturbscore.errors import PerturbscoreError

from .conftest import _entry_point, run_cli

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


def _tables(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.mark.parametrize("fmt", ["parquet", "rdata"])
def test_dask_equals_local(study: Path, tmp_path: Path, scheduler: str, cli, fmt: str) -> None:
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
        fmt,
        "--zarr",
        "--chunk-rows",
        7,
    )
    assert r.returncode == 0, r.stderr
    run(
        load_run_file(study / TOML),
        tmp_path / "local",
        RunOptions(format=fmt, zarr=True, chunk_rows=7, progress=False),
    )
    # One ordered consumer writes for every engine: the same bytes, any format.
    local, dask = _tables(tmp_path / "local"), _tables(tmp_path / "dask")
    assert len(local) == 4 and dask == local
    for g in ("stab", "top"):
        xr.testing.assert_identical(
            xr.open_zarr(tmp_path / "dask" / f"{g}_scores.zarr").load(),
            xr.open_zarr(tmp_path / "local" / f"{g}_scores.zarr").load(),
        )
    # stdout lists every file written, the Zarr cubes too.
    assert sorted(Path(x).name for x in r.stdout.split()) == sorted(
        [*local, "manifest.json", "stab_scores.zarr", "top_scores.zarr"]
    )


def test_relative_run_file_on_a_scheduler(study: Path, tmp_path: Path, scheduler: str) -> None:
    # As the README shows it: cd into the data and name the run file relatively; the
    # workers (started elsewhere) get absolute paths.
    r = run_cli(
        "run",
        TOML,
        "--out",
        tmp_path / "o",
        "--engine",
        "dask",
        "--scheduler",
        scheduler,
        "--format",
        "parquet",
        cwd=study,
    )
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "o").glob("*.parquet"))) == 4


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
    assert _tables(tmp_path / "dask") == _tables(tmp_path / "local")


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
    assert "cannot connect to the Dask scheduler at tcp://127.0.0.1:9 (" in r.stderr
    assert "Error" not in r.stderr  # what happened in words, no exception class names
    assert time.monotonic() - start < 60
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("address", ["tcp://127.0.0.1", "foo://127.0.0.1:1", "tcp://h:99999"])
def test_malformed_scheduler_is_a_user_error(study: Path, tmp_path: Path, cli, address) -> None:
    r = cli(
        "run", study / TOML, "--out", tmp_path / "o", "--engine", "dask", "--scheduler", address
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"--scheduler {address!r} is not a Dask scheduler address" in r.stderr
    assert not (tmp_path / "o").exists()


def test_same_messages_as_the_local_engine(study: Path, tmp_path: Path, scheduler: str) -> None:
    p = study / "final_alt_preds_top_snps_strand.npy"
    arr = np.load(p)
    arr[2, 1, 4] = np.inf
    np.save(p, arr)
    messages = []
    for opts in (
        RunOptions(format="parquet", progress=False),
        RunOptions(format="parquet", engine="dask", scheduler=scheduler, progress=False),
    ):
        with pytest.raises(PerturbscoreError) as err:
            run(load_run_file(study / TOML), tmp_path / "n", opts)
        messages.append(str(err.value))
        assert not (tmp_path / "n").exists()
    assert messages[0] == messages[1]
    assert "final_alt_preds_top_snps_strand.npy: 1 value, first at variant" in messages[0]


def test_ctrl_c_stops_the_dask_engine_cleanly(tmp_path: Path) -> None:
    from .test_resume import write_kill_study

    run_file = write_kill_study(tmp_path / "k")
    proc = subprocess.Popen(
        [
            *_entry_point(),
            "-v",
            "run",
            str(run_file),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "dask",
            "--workers",
            "2",
            "--chunk-rows",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "block 20 of" in line:
            break
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert time.monotonic() - start < 60
    tail = [x for x in err.splitlines() if "DEBUG" not in x]
    assert "Traceback" not in err and len(tail) < 10, "\n".join(tail)
    assert "interrupted by SIGINT: nothing was written" in err
    assert not (tmp_path / "o").exists()


def test_an_address_that_is_no_scheduler_fails_fast(study: Path, tmp_path: Path, cli) -> None:
    # Something answers there (as the dashboard's port would), but it is no scheduler.
    import http.server
    import threading

    handler = http.server.SimpleHTTPRequestHandler
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        start = time.monotonic()
        r = cli(
            "run",
            study / TOML,
            "--out",
            tmp_path / "o",
            "--engine",
            "dask",
            "--scheduler",
            address,
        )
        assert r.returncode == 2, r.stderr
        assert f"cannot connect to the Dask scheduler at {address} (" in r.stderr
        # an HTTP server answers: either it stalls the handshake or sends what is no
        # Dask message; both are said in words
        assert ("no Dask answer within 10 s" in r.stderr) or ("not a Dask scheduler" in r.stderr)
        assert "MemoryError" not in r.stderr
        assert "Traceback" not in r.stderr and time.monotonic() - start < 60
        assert not (tmp_path / "o").exists()
    finally:
        server.shutdown()


def test_an_unknown_scheduler_host_is_named(study: Path, tmp_path: Path, cli) -> None:
    r = cli(
        "run", study / TOML, "--out", tmp_path / "o",
        "--engine", "dask", "--scheduler", "tcp://no-such-host.invalid:8786",
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "the host no-such-host.invalid is not known" in r.stderr
    assert not (tmp_path / "o").exists()
