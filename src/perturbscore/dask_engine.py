"""The Dask engine: spans scored on a Dask cluster, written by the one ordered consumer.

Each span becomes one future of :func:`~perturbscore.spans.score_span` (the plan is
sent to the workers once); workers open the inputs themselves, at the absolute paths
the plan holds, so they must see the same files (a shared file system).  Results come
back in span order, at most :data:`WINDOW_PER_WORKER` per worker in flight, and
:func:`perturbscore.engine.execute` writes them exactly as for the local engine:
the same tables (every format), the same messages, ``--resume`` included.

Without a scheduler address a :class:`distributed.LocalCluster` sized to the machine
is started, its worker processes ignoring Ctrl-C so that only this process handles it
(and stops them); with one (``tcp://host:8786``, e.g. from dask-jobqueue on SLURM) the
run fails fast when it cannot be reached.  Needs the ``dask`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import PerturbscoreError
from .spans import SpanResult, score_span

if TYPE_CHECKING:
    from .engine import Mapper, Span
    from .plan import Prepared

log = logging.getLogger("perturbscore")

CONNECT_TIMEOUT = "5s"
#: Seconds a connection to a given scheduler may take in all (handshake included).
CONNECT_SECONDS = 10
#: Futures in flight per worker: enough to keep it busy, few enough to bound memory.
WINDOW_PER_WORKER = 2


@contextlib.contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Processes started inside inherit SIGINT ignored (Ctrl-C reaches only us)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hand on
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _client(scheduler: str | None, workers: int | None) -> Any:
    from .extras import require

    distributed = require("distributed", "--engine dask")
    if scheduler:
        return _connect(distributed, scheduler)
    n = workers or os.cpu_count() or 1
    with _ignoring_sigint():
        # ":0": a free port, so several runs (or a test cluster) never collide on 8787.
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    return distributed.Client(cluster)


def _connect(distributed: Any, scheduler: str) -> Any:
    """A client of ``scheduler``, or a user error within :data:`CONNECT_SECONDS`.

    Connecting runs in a helper thread with a deadline: an address that answers but is
    no Dask scheduler (the dashboard's port 8787, another service) can make the
    handshake wait for ever or fail while decoding garbage.
    """
    import socket
    import threading
    from urllib.parse import urlsplit

    host = urlsplit(scheduler).hostname
    if host:
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            raise PerturbscoreError(
                f"cannot connect to the Dask scheduler at {scheduler}: the host {host} is not "
                "known (no such name); check the address."
            ) from None
    done: dict[str, Any] = {}

    def connect() -> None:
        try:
            done["client"] = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except BaseException as exc:  # carried to the caller below
            done["error"] = exc

    thread = threading.Thread(target=connect, name="perturbscore-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS)
    if "client" in done:
        return done["client"]
    if thread.is_alive():
        detail = (
            f"no Dask answer within {CONNECT_SECONDS} s: nothing listens there, or something "
            "that is not a Dask scheduler"
        )
    elif isinstance(done["error"], OSError | TimeoutError):
        detail = "nothing answered there"
    else:  # the handshake failed on what came back (MemoryError, ValueError, ...)
        detail = "something answered there, but not a Dask scheduler"
    raise PerturbscoreError(
        f"cannot connect to the Dask scheduler at {scheduler} ({detail}); check the address "
        "(the scheduler's port, e.g. 8786, not the dashboard's 8787) and that the scheduler "
        "is running."
    )


#: Loggers of the client side of Dask: an interrupted run makes them log tracebacks of
#: their own (a cancelled ``sync`` call, connections closed while tasks run) that say
#: nothing to the user; the run's own message says what happened.
_QUIET_LOGGERS = (
    "distributed",
    "distributed.client",
    "distributed.utils",
    "distributed.worker",
    "distributed.nanny",
    "tornado",
    "tornado.application",
    "tornado.general",
    "asyncio",
)


def _quiet_dask_logs() -> None:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # -vv shows them
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _close(client: Any) -> None:
    cluster = client.cluster
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with contextlib.suppress(Exception):
        client.close(timeout=10)
    if cluster is not None and not isinstance(cluster, str):
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


@contextlib.contextmanager
def dask_mapper(prep: Prepared, timings: dict[str, float]) -> Iterator[Mapper]:
    """A mapper that scores spans on Dask (see the module docstring)."""
    t0 = time.perf_counter()
    client = _client(prep.opts.scheduler, prep.opts.workers)
    _quiet_dask_logs()
    try:
        timings["cluster"] = time.perf_counter() - t0
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or 1)
        log.info("Dask engine: %s", client)
        plan = client.scatter(prep.span_plan, broadcast=True)

        def mapper(tasks: list[Span]) -> Iterator[SpanResult]:
            window = WINDOW_PER_WORKER * n_workers
            pending: deque[Any] = deque()
            try:
                for batch, start, stop in tasks:
                    pending.append(client.submit(score_span, plan, batch, start, stop, pure=False))
                    if len(pending) >= window:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                if pending:
                    client.cancel(list(pending))

        yield mapper
    finally:
        _close(client)


__all__ = ["dask_mapper"]
