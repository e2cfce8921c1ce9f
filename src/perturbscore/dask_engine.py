"""The Dask engine: the same scores computed on a Dask cluster.

Inputs become dask arrays chunked along variants (each chunk is read on a worker by
the same readers the local engine uses, so any format works on any worker that sees
the files); scores are computed with ``map_blocks`` by the same
:func:`~perturbscore.scoring.score_block`; each output table is written as a
partitioned Parquet dataset (a folder of ``part.N.parquet``), and with ``zarr`` the
group's score cube as Zarr.  Everything is written to temporary names and renamed only
when the whole computation succeeded.

Without a scheduler address a :class:`distributed.LocalCluster` sized to the machine
is started; with one (``tcp://host:8786``, e.g. from dask-jobqueue on SLURM) the run
fails fast when it cannot be reached.  Needs the ``dask`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings as warnings_module
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .readers import open_predictions
from .scoring import Aggregation, score_block

if TYPE_CHECKING:
    from .pipeline import Prepared, RunResult

log = logging.getLogger("perturbscore")

CONNECT_TIMEOUT = "5s"


def _read_chunk(
    path: str, fmt: str | None, start: int, stop: int, columns: np.ndarray | None
) -> np.ndarray:
    """One chunk of selected predictions, read on a worker (``n B S``)."""
    with open_predictions(path, fmt) as reader:
        return reader.read_selected(start, stop, columns)


def _score_chunk(
    ref: np.ndarray, alt: np.ndarray, agg: Aggregation, stat: str, pseudocount: float
) -> np.ndarray:
    return score_block(ref, alt, [agg], [stat], pseudocount)[(agg.spec, stat)]


def _nonfinite_chunk(x: np.ndarray) -> np.ndarray:
    return np.array([int((~np.isfinite(x)).sum())])


def _frame(scores: np.ndarray, ids: pd.DataFrame, tracks: list[str]) -> pd.DataFrame:
    from .writers import text_values

    df = pd.DataFrame(scores, columns=tracks)
    for col in ids.columns:
        df[col] = pd.Series(text_values(ids[col]), dtype="str")  # as the local engine reads
    return df


def prediction_array(
    path: str,
    fmt: str | None,
    shape: tuple[int, int, int],
    dtype: np.dtype[Any],
    columns: np.ndarray | None,
    chunk: int,
) -> Any:
    """A dask array ``(N, B, S)`` over a prediction file, chunked along variants."""
    import dask.array as da
    from dask.base import tokenize

    n, n_bins, n_tracks = shape
    width = n_tracks if columns is None else len(columns)
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    name = "read-" + tokenize(path, fmt, columns, chunk)
    graph = {
        (name, i, 0, 0): (_read_chunk, path, fmt, s, e, columns) for i, (s, e) in enumerate(bounds)
    }
    chunks = (tuple(e - s for s, e in bounds), (n_bins,), (width,))
    return da.Array(graph, name, chunks, dtype=dtype)


def _client(scheduler: str | None, workers: int | None) -> Any:
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise PerturbscoreError(
                f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT} "
                f"({exc}); check the address and that the scheduler is running."
            ) from exc
    n = workers or os.cpu_count() or 1
    # ":0": a free port, so several runs (or a test cluster) never collide on 8787.
    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    return Client(cluster)


def run_dask(prep: Prepared) -> RunResult:
    """Compute and write the run's tables on Dask (see the module docstring)."""
    import dask
    import dask.array as da
    import dask.dataframe as dd

    from .pipeline import MANIFEST, RunResult, cube_name

    config, opts, out, tracks, aggs = prep.config, prep.opts, prep.out, prep.tracks, prep.aggs
    outputs, warnings, columns = prep.outputs, prep.warnings, prep.columns
    batches = prep.batches
    chunk = prep.plan.chunk_rows
    track_names = list(tracks["identifier"])
    # Per group: every batch's dask arrays, concatenated along variants.
    scores: dict[tuple[str, str, str], Any] = {}
    counts: list[tuple[str, Any]] = []
    ids_of: dict[str, pd.DataFrame] = {}
    for g in config.groups:
        mine = [b for b in batches if b.group == g.name]
        parts: dict[tuple[str, str], list[Any]] = {}
        for b in mine:
            ref, alt = (
                prediction_array(r.path, b.format, r.shape, r.dtype, columns, chunk)
                for r in (b.ref, b.alt)
            )
            for r, arr in ((b.ref, ref), (b.alt, alt)):
                counts.append(
                    (
                        r.path,
                        da.map_blocks(
                            _nonfinite_chunk, arr, drop_axis=[1, 2], chunks=(1,), dtype=np.int64
                        ).sum(),
                    )
                )
            for agg in aggs:
                for stat in config.statistics:
                    parts.setdefault((agg.spec, stat), []).append(
                        da.map_blocks(
                            _score_chunk,
                            ref,
                            alt,
                            agg,
                            stat,
                            config.pseudocount,
                            drop_axis=1,
                            dtype=np.float64,
                        )
                    )
        for (agg_spec, stat), arrays in parts.items():
            scores[(g.name, agg_spec, stat)] = da.concatenate(arrays, axis=0)
        ids_of[g.name] = pd.concat([b.ids for b in mine], ignore_index=True)

    created_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    writes: list[Any] = []
    temps: list[tuple[Path, Path]] = []
    client = None
    try:
        # Connect first: an unreachable scheduler fails before anything is written.
        t_cluster = time.perf_counter()
        client = _client(opts.scheduler, opts.workers)
        log.info("Dask engine: %s", client)
        t_compute = time.perf_counter()
        for o in outputs:
            arr = scores[(o.group, o.aggregation.spec, o.statistic)]
            ids = ids_of[o.group]
            bounds = np.cumsum((0, *arr.chunks[0]))
            frames = [
                dask.delayed(_frame)(blk, ids.iloc[bounds[i] : bounds[i + 1]], track_names)
                for i, blk in enumerate(arr.to_delayed().ravel())
            ]
            meta = _frame(np.empty((0, len(track_names))), ids.iloc[:0], track_names)
            tmp = o.path.with_name(f".{o.path.name}.{os.getpid()}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            temps.append((tmp, o.path))
            writes.append(
                dd.from_delayed(frames, meta=meta, verify_meta=False).to_parquet(
                    tmp, write_index=False, compute=False, name_function=_part_name
                )
            )
            o.rows = int(arr.shape[0])
        if opts.zarr:
            from .cube import ZARR_FORMAT, cube_dataset

            for g in config.groups:
                cube = da.stack(
                    [
                        da.stack([scores[(g.name, a.spec, s)] for s in config.statistics], axis=-1)
                        for a in aggs
                    ],
                    axis=-2,
                ).rechunk({0: chunk})  # Zarr needs uniform chunks; batches join unevenly
                final = out / cube_name(g.name)
                tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
                shutil.rmtree(tmp, ignore_errors=True)
                temps.append((tmp, final))
                ds = cube_dataset(
                    cube, ids_of[g.name], tracks, [a.spec for a in aggs], list(config.statistics)
                )
                writes.append(ds.to_zarr(tmp, mode="w", compute=False, zarr_format=ZARR_FORMAT))
        with warnings_module.catch_warnings():
            # One compute for tables, cubes and NaN counts reads every input chunk once;
            # dask warns that it mixes dataframe expressions with array graphs to do so.
            warnings_module.filterwarnings("ignore", message="Computing mixed collections")
            results = dask.compute(*writes, *(c for _, c in counts))
        found = [
            (p, int(n)) for (p, _), n in zip(counts, results[len(writes) :], strict=True) if int(n)
        ]
        if found:
            detail = "; ".join(f"{p}: {n} values" for p, n in found)
            if opts.nan_policy == "error":
                raise PerturbscoreError(
                    f"NaN or Inf in the selected predictions: {detail}. Fix the predictions, or "
                    "pass --nan propagate to carry them into the scores."
                )
            warnings.append(f"NaN/Inf passed through (--nan propagate): {detail}")
        for tmp, final in temps:
            _replace_dir(tmp, final)
        timings = {"cluster": t_compute - t_cluster, "compute": time.perf_counter() - t_compute}
    except BaseException:
        for tmp, _ in temps:
            shutil.rmtree(tmp, ignore_errors=True)
        if created_dir:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        if client is not None:
            _close(client)
    for note in warnings:
        log.warning("%s", note)
    return RunResult(outputs, out / MANIFEST, chunk, warnings, timings)


def _part_name(i: int) -> str:
    # Zero-padded so that every reader's (lexicographic) file order is the row order.
    return f"part.{i:06d}.parquet"


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    os.replace(tmp, final)


def _close(client: Any) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None and not isinstance(cluster, str):
        cluster.close()


__all__: Sequence[str] = ["run_dask", "prediction_array"]
