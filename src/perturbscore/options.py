"""Run options (how to execute a run) and their validation, before any input is read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .constants import ENGINES, NAN_POLICIES, OUT_OF_FIELD
from .errors import PerturbscoreError
from .memory import DEFAULT_MEMORY_BYTES

_SCHEDULER = re.compile(
    r"(?P<proto>tcp|tls|ucx|ws|wss)://(?P<host>[^\s:/]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)/?"
)


@dataclass
class RunOptions:
    """How to execute a run (what to compute lives in :class:`RunConfig`).

    Attributes
    ----------
    memory_bytes : int
        Budget for the run's own allocations, in bytes (see :mod:`perturbscore.memory`).
    chunk_rows : int, optional
        Force a block size (rows); default: about 1 MiB of selected values per block.
    overwrite : bool
        Replace existing output tables.
    nan_policy : {"error", "propagate"}
        NaN/Inf in the selected predictions: fail (after counting them all), or pass them on.
    format : str, optional
        Override the run file's output format.
    progress : bool
        Show a progress bar on stderr (only when stderr is a terminal).
    threads : int, optional
        Threads: one scores and writes, the others read blocks ahead (default: every
        core; 1 reads in the calling thread).
    resume : bool
        Record finished blocks in ``OUT/.perturbscore-resume`` and, if a run with the same
        run file and inputs died, continue it (see :mod:`perturbscore.resume`).
    zarr : bool
        Also write each group's score cube to ``{group}_scores.zarr`` (:mod:`.cube`).
    engine : {"local", "dask"}
        Where spans are scored (:mod:`perturbscore.dask_engine` for Dask).
    scheduler : str, optional
        Dask scheduler address; default: a local cluster sized to the machine.
    workers : int, optional
        Workers of that local cluster (default: one per core).
    out_of_field : {"keep", "na", "drop"}
        Variants outside the model's input (needs the run file's geometry): keep their
        scores (0), write NaN, or leave the rows out.
    """

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    chunk_rows: int | None = None
    overwrite: bool = False
    nan_policy: str = "error"
    format: str | None = None
    progress: bool = True
    threads: int | None = None
    resume: bool = False
    zarr: bool = False
    engine: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    out_of_field: str = "keep"


def check_options(opts: RunOptions, fmt: str, out: Path) -> None:
    """Validate options that need no input file (user errors, exit 2)."""
    if opts.nan_policy not in NAN_POLICIES:
        raise PerturbscoreError(
            f"--nan must be one of {', '.join(NAN_POLICIES)}, not {opts.nan_policy!r}."
        )
    if opts.engine not in ENGINES:
        raise PerturbscoreError(f"--engine must be local or dask, not {opts.engine!r}.")
    if opts.out_of_field not in OUT_OF_FIELD:
        raise PerturbscoreError(
            f"--out-of-field must be one of {', '.join(OUT_OF_FIELD)}, not {opts.out_of_field!r}."
        )
    if opts.threads is not None and opts.threads < 1:
        raise PerturbscoreError(f"--threads must be at least 1, not {opts.threads}.")
    if opts.workers is not None and opts.workers < 1:
        raise PerturbscoreError(f"--workers must be at least 1, not {opts.workers}.")
    if opts.chunk_rows is not None and opts.chunk_rows < 1:
        raise PerturbscoreError(f"--chunk-rows must be at least 1, not {opts.chunk_rows}.")
    if opts.memory_bytes < 1:
        raise PerturbscoreError(f"--memory must be positive, not {opts.memory_bytes} bytes.")
    from .outputs import check_out_folder

    check_out_folder(out)
    if opts.engine != "dask" and (opts.scheduler or opts.workers):
        raise PerturbscoreError("--scheduler and --workers belong to --engine dask.")
    if opts.engine == "dask" and opts.scheduler and opts.workers:
        raise PerturbscoreError(
            "--workers sizes the local Dask cluster; with --scheduler the cluster has its own."
        )
    if opts.scheduler:
        check_scheduler(opts.scheduler)
    from .extras import require

    if opts.engine == "dask":
        require("distributed", "--engine dask")
    if opts.zarr:
        require("zarr", "--zarr")
        require("xarray", "--zarr")
        require("dask.array", "--zarr", extra="dask")


def check_scheduler(address: str) -> None:
    """A Dask scheduler address must be ``PROTOCOL://HOST:PORT`` with a valid port."""
    m = _SCHEDULER.fullmatch(address.strip())
    if not m or not 1 <= int(m["port"]) <= 65535:
        raise PerturbscoreError(
            f"--scheduler {address!r} is not a Dask scheduler address; write "
            "tcp://HOST:PORT with a port from 1 to 65535 (e.g. tcp://10.0.0.5:8786)."
        )
