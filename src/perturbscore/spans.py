"""The one span pipeline: score rows ``[lo, hi)`` of one batch, wherever that runs.

Every engine computes a run the same way: the run's rows are cut into spans (one
batch's rows ``[lo, hi)``), :func:`score_span` turns a span into scores plus what it
found (NaN/Inf positions, non-finite log2fc counts), and one ordered consumer
(:mod:`perturbscore.engine`) writes the results.  An engine only injects the map that
runs :func:`score_span` over the spans: the built-in ``map``, an ordered thread map
(:func:`perturbscore.streaming.ordered_map`), or Dask futures
(:mod:`perturbscore.dask_engine`).  So every engine produces the same tables and the
same messages.

:class:`SpanPlan` is small and picklable: absolute paths, formats and the scoring
settings, no open files.  :func:`score_span` opens its readers where it runs and keeps
them open in a per-process cache (readers use positional reads, so threads share them);
each thread reads through its own scratch buffer of ``plan.scratch_bytes``.

Axes: predictions ``(n, B, S)`` after track selection (variants, bins, selected
tracks); scores ``(n, S)`` float64.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

from .integrity import row_identical
from .normalise_inrun import RunNormaliser
from .readers import PredictionReader, open_predictions
from .scoring import Aggregation, nonfinite_positions, score_block


@dataclass(frozen=True)
class BatchSpec:
    """One REF/ALT pair as a span needs it: absolute paths and the format."""

    group: str
    number: int  # 1-based within its group
    ref: str
    alt: str
    fmt: str | None
    n_rows: int


@dataclass(frozen=True, eq=False)
class SpanPlan:
    """What :func:`score_span` needs; picklable, so it travels to Dask workers.

    Attributes
    ----------
    batches : tuple of BatchSpec
        Every batch of the run, in run order (groups, then their batches).
    columns : numpy.ndarray or None
        Selected track numbers (``S``), or None for every track in order.
    aggregations : tuple of Aggregation
    statistics : tuple of str
    pseudocount : float
    scratch_bytes : int
        Size of each thread's REF and ALT scratch buffers (whole rows are read through
        them; at least one row).
    normaliser : RunNormaliser or None
        Adds the background-normalised statistics of ``[normalise]`` to every span.
    """

    batches: tuple[BatchSpec, ...]
    columns: np.ndarray | None
    aggregations: tuple[Aggregation, ...]
    statistics: tuple[str, ...]
    pseudocount: float
    scratch_bytes: int
    normaliser: RunNormaliser | None = None


@dataclass
class SpanResult:
    """Scores and findings of one span.

    Attributes
    ----------
    batch : int
        Index into ``plan.batches``.
    start, stop : int
        Rows ``[start, stop)`` of that batch.
    scores : dict
        ``(aggregation spec, statistic) -> (n, S)`` float64.
    nonfinite : list
        ``(path, count, (row, bin, selected track))`` for REF and ALT blocks holding
        NaN/Inf; ``row`` is the batch row.
    bad_log2 : int
        log2fc scores that are NaN or infinite: agg + pseudocount <= 0, or NaN/Inf inputs.
    bad_log2_inputs : int
        Of those, the scores whose REF or ALT aggregate is NaN or infinite (NaN/Inf in the
        predictions, carried by ``--nan propagate``), so that the warning names the cause.
    identical : numpy.ndarray
        ``bool # n``: rows whose REF and ALT are bitwise identical over the selected
        tracks (for the integrity checks of :mod:`perturbscore.integrity`).
    """

    batch: int
    start: int
    stop: int
    scores: dict[tuple[str, str], np.ndarray]
    nonfinite: list[tuple[str, int, tuple[int, int, int]]] = field(default_factory=list)
    bad_log2: int = 0
    identical: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    bad_log2_inputs: int = 0


_lock = threading.Lock()
_readers: dict[tuple[str, str | None, int, int], PredictionReader] = {}
_local = threading.local()


def _reader(path: str, fmt: str | None) -> PredictionReader:
    """This process's reader of ``path`` (opened on first use, shared by threads)."""
    file_part = path.split("::", 1)[0]
    try:
        st = os.stat(file_part)
        key = (path, fmt, st.st_size, st.st_mtime_ns)  # a rewritten file gets a new reader
    except OSError:
        key = (path, fmt, -1, -1)
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = open_predictions(path, fmt)
        return reader


def close_readers() -> None:
    """Close every cached reader of this process (the local engine does at the end)."""
    with _lock:
        readers = list(_readers.values())
        _readers.clear()
    for r in readers:
        r.close()


def _scratch(slot: int, reader: PredictionReader, scratch_bytes: int) -> np.ndarray:
    """This thread's reusable scratch buffer for slot 0 (REF) or 1 (ALT)."""
    rows = max(1, scratch_bytes // reader.row_nbytes)
    buffers: dict[int, np.ndarray] = _local.__dict__.setdefault("scratch", {})
    buf = buffers.get(slot)
    if buf is None or buf.dtype != reader.dtype or buf.shape != (rows, *reader.shape[1:]):
        buf = buffers[slot] = np.empty((rows, *reader.shape[1:]), reader.dtype)
    return buf


def score_span(plan: SpanPlan, batch: int, start: int, stop: int) -> SpanResult:
    """Read, check and score rows ``[start, stop)`` of ``plan.batches[batch]``.

    Parameters
    ----------
    plan : SpanPlan
    batch : int
        Index into ``plan.batches``.
    start, stop : int
        Row range of that batch.

    Returns
    -------
    SpanResult
    """
    spec = plan.batches[batch]
    blocks = []
    found: list[tuple[str, int, tuple[int, int, int]]] = []
    for slot, path in enumerate((spec.ref, spec.alt)):
        reader = _reader(path, spec.fmt)
        block = reader.read_selected(
            start, stop, plan.columns, _scratch(slot, reader, plan.scratch_bytes)
        )
        count, first = nonfinite_positions(block)
        if count:
            assert first is not None
            found.append((path, count, (start + first[0], first[1], first[2])))
        blocks.append(block)
    scores = score_block(blocks[0], blocks[1], plan.aggregations, plan.statistics, plan.pseudocount)
    bad = sum(int((~np.isfinite(v)).sum()) for (_, st), v in scores.items() if st == "log2fc")
    # Only a block with NaN/Inf inputs (rare: --nan propagate) pays for the aggregates again.
    bad_inputs = _log2fc_from_nonfinite(plan, blocks, scores) if bad and found else 0
    if plan.normaliser is not None:
        scores.update(plan.normaliser.apply(scores))
    if blocks[0].dtype == blocks[1].dtype:
        same = row_identical(blocks[0], blocks[1])
    else:  # REF and ALT saved in different dtypes: equal values
        n = stop - start
        same = np.asarray((blocks[0].astype(np.float64) == blocks[1]).reshape(n, -1).all(axis=1))
    return SpanResult(batch, start, stop, scores, found, bad, same, bad_inputs)


def _log2fc_from_nonfinite(
    plan: SpanPlan, blocks: list[np.ndarray], scores: dict[tuple[str, str], np.ndarray]
) -> int:
    """The NaN/Inf log2fc scores whose REF or ALT aggregate is NaN or infinite (``# n S``)."""
    n = 0
    for agg in plan.aggregations:
        score = scores.get((agg.spec, "log2fc"))
        if score is None:
            continue
        inputs_bad = ~(np.isfinite(agg.apply(blocks[0])) & np.isfinite(agg.apply(blocks[1])))
        n += int((~np.isfinite(score) & inputs_bad).sum())
    return n


def spans(plan: SpanPlan, chunk_rows: int) -> list[tuple[int, int, int]]:
    """Every span of the run in order: ``(batch, start, stop)``, ``chunk_rows`` rows each."""
    return [
        (i, s, min(s + chunk_rows, b.n_rows))
        for i, b in enumerate(plan.batches)
        for s in range(0, b.n_rows, chunk_rows)
    ]


def is_sequential(plan: SpanPlan) -> bool:
    """Whether some input must be read in row order by one thread (compressed members)."""
    return any(
        getattr(_reader(p, b.fmt), "sequential", False)
        for b in plan.batches
        for p in (b.ref, b.alt)
    )


__all__ = ["BatchSpec", "SpanPlan", "SpanResult", "score_span", "spans", "close_readers"]
