"""Sizing a planned run: its reading threads and its memory plan.

:func:`memory_plan` turns the checked batches (``# N B T``: variants, bins, tracks),
the selected tracks and the planned tables into the arguments of
:func:`perturbscore.memory.plan_memory`, counting what every reading thread and
every open table writer holds, so that the block size fits the ``--memory`` budget.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .memory import MemoryPlan, plan_memory
from .options import RunOptions
from .plan_batches import BatchInput, group_sizes
from .scoring import Aggregation
from .writers import footer_bytes, holds_in_memory, writer_bytes

if TYPE_CHECKING:
    from .plan import OutputTable


def reader_threads(requested: int | None) -> int:
    """Threads that read and score blocks for ``--threads N``: ``N - 1`` (one writes).

    The default gives every core a reading and scoring thread: the writing thread
    mostly waits for them (measured: 1.9 s against 2.8 s with one reader fewer on 2
    cores at the study's size).
    """
    threads = requested or (os.cpu_count() or 1) + 1
    return threads - 1


#: Bytes counted per ID value for its serialised head in an R file (8 bytes) and for
#: text that the variant table holds once but the file holds in every row (alleles).
_SERIALISED_PER_VALUE = 16


def id_table_bytes(batches: list[BatchInput]) -> tuple[int, int]:
    """Bytes of the batches' ID tables, and the most of one group's serialised for R.

    The first counts an array that batches share (the batches of one variant table)
    once, each array measured once (:meth:`.frame.Columns.nbytes`).  The second is what
    a group's tables share from the first table's finish to the last one's
    (:class:`.rserialize.SharedText`): at most 16 bytes per value plus the text's own
    size, which a Python string's size bounds.
    """
    sizes: dict[int, int] = {}
    total = sum(b.ids.nbytes(sizes) for b in batches)
    per_group: dict[str, int] = {}
    for b in batches:
        own = sum(sizes[id(b.ids[c])] for c in b.ids.columns)
        size = b.n_rows * len(b.ids.columns) * _SERIALISED_PER_VALUE + own
        per_group[b.group] = per_group.get(b.group, 0) + size
    return total, max(per_group.values(), default=0)


def memory_plan(
    opts: RunOptions,
    fmt: str,
    batches: list[BatchInput],
    n_tracks: int,
    n_selected: int,
    aggs: list[Aggregation],
    outputs: list[OutputTable],
    group_rows: int,
    held_bytes: int = 0,
) -> MemoryPlan:
    """The block size for the budget, counting what every thread and writer holds."""
    threads = reader_threads(opts.threads)
    n_bins = batches[0].shape[1]
    itemsize = max(b.itemsize for b in batches)
    per_group = len(outputs) // len({o.group for o in outputs})
    most = max(group_sizes(batches).values())
    n_ids = len(batches[0].ids.columns)
    ids, serialised = id_table_bytes(batches)
    return plan_memory(
        budget=opts.memory_bytes,
        n_bins=n_bins,
        n_tracks=n_tracks,
        n_selected=n_selected,
        itemsize=itemsize,
        n_aggregations=len(aggs),
        n_outputs_per_group=per_group,
        in_memory_rows=sum(b.n_rows for b in batches) if holds_in_memory(fmt) else 0,
        resident_bytes=held_bytes + ids + (serialised if holds_in_memory(fmt) else 0),
        chunk_rows=opts.chunk_rows,
        max_rows=max(b.n_rows for b in batches),
        # Threads' blocks, one more queued, and the one being written (a sequential
        # reader's queue holds two).
        blocks_in_flight=2 + max(threads, 1) if threads else 1,
        # Each reading thread (or the scoring thread, reading itself) has its own REF
        # and ALT scratch buffers.
        scratch_threads=max(1, threads),
        scratch_row_bytes=n_bins * n_tracks * itemsize,
        # Groups are written one after another (a group's tables are finished after its
        # last block), so one group's writers are open at a time; closing a file
        # serialises its footer once more.
        writer_buffer_bytes=per_group * writer_bytes(fmt, n_selected, n_ids, most, group_rows)
        + (footer_bytes(n_selected + n_ids, most, group_rows) if fmt == "parquet" else 0),
        cube=opts.zarr,
        # Dask: one span is one task; budget-sized spans amortise per-task overhead.
        cache_sized=opts.engine == "local",
        fmt=fmt,
    )
