"""Memory budget: parse sizes and size row blocks so the working set fits.

The budget covers what perturbscore allocates for a run: the REF/ALT read buffers
of one block, the selected-track copies and float64 intermediates, the score
blocks and their writer copies, the variant ID tables held for the run, and, for the
R output formats (which pyreadr writes in one go), the whole output tables.  It does
not cover the interpreter and imported libraries (about 150 MB of resident memory
for Python, numpy, pandas and pyarrow).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PerturbscoreError

DEFAULT_MEMORY_BYTES = 512 * 2**20  # 536,870,912 bytes
#: Scratch buffer whole rows are read through (readers take it from here, so that
#: parsing a size imports no numpy, for a fast --help).
SCRATCH_BYTES = 4 * 2**20
#: Selected REF values per block (n B S itemsize) the block size aims at: blocks this
#: small stay in the CPU cache through scoring, which measured faster than blocks that
#: fill the budget (the budget is a ceiling, not a target).
TARGET_BLOCK_BYTES = 2**20

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def parse_size(text: str | int) -> int:
    """``"512MB"`` -> 512,000,000; ``"1GiB"`` -> 1,073,741,824; plain numbers are bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise PerturbscoreError(
            f"memory size {text!r} not understood; write e.g. 512MB, 2GiB or 1000000 (bytes)."
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def byte_count(n: int) -> str:
    """A byte count read as words: ``1,000 bytes``, ``688,830,348 bytes (657 MiB)``."""
    words = f"{n:,} byte{'' if n == 1 else 's'}"
    if n >= 2**30:
        return f"{words} ({n / 2**30:.1f} GiB)"
    if n >= 2**20:
        return f"{words} ({n / 2**20:.0f} MiB)"
    return words


@dataclass(frozen=True)
class MemoryPlan:
    """Block size chosen for a budget, with the estimate that justified it.

    Attributes
    ----------
    budget : int
        The ceiling, in bytes.
    chunk_rows : int
        Rows per block.
    per_row_bytes : int
        Bytes each block row costs across every block in flight.
    fixed_bytes : int
        Bytes independent of the block size (scratch buffers of every thread, ID tables,
        writer buffers, in-memory R tables).
    scratch_bytes : int
        Size of each thread's REF and ALT scratch buffers.
    """

    budget: int
    chunk_rows: int
    per_row_bytes: int
    fixed_bytes: int
    scratch_bytes: int = SCRATCH_BYTES

    @property
    def estimated_bytes(self) -> int:
        """Estimated peak of the run's own allocations."""
        return self.fixed_bytes + self.chunk_rows * self.per_row_bytes

    def describe(self) -> str:
        """One log line."""
        return (
            f"memory plan: {self.chunk_rows} rows per block, about "
            f"{self.estimated_bytes / 2**20:.0f} MiB of a {self.budget / 2**20:.0f} MiB budget"
        )


def plan_memory(
    *,
    budget: int,
    n_bins: int,
    n_tracks: int,
    n_selected: int,
    itemsize: int,
    n_aggregations: int,
    n_outputs_per_group: int,
    in_memory_rows: int = 0,
    resident_bytes: int = 0,
    chunk_rows: int | None = None,
    max_rows: int | None = None,
    blocks_in_flight: int = 2,
    scratch_threads: int = 1,
    scratch_row_bytes: int | None = None,
    writer_buffer_bytes: int = 0,
    cube: bool = False,
    cache_sized: bool = True,
    fmt: str = "parquet",
) -> MemoryPlan:
    """Choose the rows per block so that the estimated working set fits ``budget``.

    Per row of a block in flight (``blocks_in_flight``: the one being scored and
    written, and those being read or waiting in the read-ahead queue): the selected
    REF and ALT values in their dtype (``2 B S itemsize``), the float64 aggregates
    (``2 A S 8``) and the scores (``O S 8``); per row of the block being written, the
    copies writers and the resume log make (``2 O S 8``) and, with a Zarr cube, its
    block (``O S 8``).  Fixed: each thread's REF and ALT scratch buffers
    (``scratch_threads 2 scratch_bytes``), the ID tables, writer buffers and, for R
    formats, the finished tables (``rows O S 8``).  Scratch buffers are 4 MiB, or one
    row if rows are larger, and shrink (to one row at the least) when the budget is
    tight.  Unless ``chunk_rows`` is forced, blocks aim at :data:`TARGET_BLOCK_BYTES`
    of selected values (``cache_sized``); ``max_rows`` caps them at the largest batch.

    Raises
    ------
    PerturbscoreError
        When even the fixed part or one row does not fit the budget, or a forced
        ``chunk_rows`` exceeds it.
    """
    row_bytes = scratch_row_bytes or n_bins * n_tracks * itemsize
    selected = n_bins * n_selected * itemsize
    per_row = _per_row_bytes(
        selected, n_selected, n_aggregations, n_outputs_per_group, blocks_in_flight, cube
    )
    base = (
        resident_bytes + writer_buffer_bytes + in_memory_rows * n_outputs_per_group * n_selected * 8
    )
    scratch = _scratch_bytes(budget, base, per_row, row_bytes, scratch_threads)
    fixed = base + 2 * scratch_threads * scratch
    if fixed + per_row > budget:
        need = fixed + per_row
        hint = _too_small_hint(
            fmt,
            in_memory_rows * n_outputs_per_group * n_selected * 8,
            writer_buffer_bytes,
            2 * scratch_threads * scratch,
            need,
            n_selected,
            scratch_threads,
        )
        raise PerturbscoreError(
            f"memory budget {budget:,} byte{'' if budget == 1 else 's'} is too small: the run "
            f"needs at least {need:,} "
            f"bytes ({fixed:,} resident plus {per_row:,} per block row); raise --memory to "
            f"{-(-need // 2**20)}MiB or more{hint}."
        )
    fit = _block_rows(
        budget, fixed, per_row, selected, chunk_rows, max_rows, cache_sized=cache_sized
    )
    return MemoryPlan(budget, int(fit), per_row, fixed, scratch)


def _per_row_bytes(
    selected: int,
    n_selected: int,
    n_aggregations: int,
    n_outputs_per_group: int,
    blocks_in_flight: int,
    cube: bool,
) -> int:
    """Bytes one block row costs: its values in every block in flight, the writers' copies."""
    return (
        blocks_in_flight
        * (
            2 * selected
            + 2 * n_aggregations * n_selected * 8
            + n_outputs_per_group * n_selected * 8
        )
        + (2 + int(cube)) * n_outputs_per_group * n_selected * 8
    )


def _scratch_bytes(budget: int, base: int, per_row: int, row_bytes: int, threads: int) -> int:
    """Each thread's scratch buffer: 4 MiB (or one row), whole rows, shrunk to fit a block."""
    scratch = max(SCRATCH_BYTES, row_bytes)
    # Shrink scratch buffers (whole rows at a time) until they leave room for a block.
    while scratch > row_bytes and base + 2 * threads * scratch + per_row > budget:
        scratch = max(row_bytes, scratch // 2)
    return max(row_bytes, scratch // row_bytes * row_bytes)


def _too_small_hint(
    fmt: str,
    table_bytes: int,
    writer_bytes: int,
    scratch_bytes: int,
    need: int,
    n_selected: int,
    scratch_threads: int,
) -> str:
    """What else to change when not even one row fits: the part that dominates ``need``
    (nothing when under 1 MiB is needed: the budget is then plainly too small)."""
    if need < 2**20:
        return ""
    if table_bytes > need // 2:
        return (
            f", or use parquet or csv: the {fmt} format keeps whole tables in memory "
            f"({table_bytes / 2**20:.0f} MiB here)"
        )
    if writer_bytes > need // 2:
        return (
            f", or select fewer tracks, or use csv: Parquet writers hold row groups and "
            f"footer metadata ({writer_bytes / 2**20:.0f} MiB here for {n_selected} tracks)"
        )
    if scratch_threads > 1 and scratch_bytes > need // 2:
        return ", or give fewer --threads (each has its own read buffers)"
    return ""


def _block_rows(
    budget: int,
    fixed: int,
    per_row: int,
    selected: int,
    chunk_rows: int | None,
    max_rows: int | None,
    *,
    cache_sized: bool,
) -> int:
    """Rows per block: what fits (cache-sized unless forced), a forced ``chunk_rows`` checked."""
    fit = max(1, (budget - fixed) // per_row)
    if chunk_rows is None:
        if cache_sized:
            fit = min(fit, max(1, TARGET_BLOCK_BYTES // selected))
    else:
        if chunk_rows < 1:
            raise PerturbscoreError(f"--chunk-rows must be at least 1, not {chunk_rows}.")
        if max_rows is not None:
            # Clamped before the memory check: a block never holds more rows than the
            # largest batch, so a larger --chunk-rows (all rows in one block) costs what
            # that batch costs, not what the number asked for would.  Spans are cut at
            # batch ends either way, so the blocks, and the results, are the same.
            chunk_rows = min(chunk_rows, max(1, max_rows))
        if chunk_rows > fit:
            raise PerturbscoreError(
                f"--chunk-rows {chunk_rows:,} needs about "
                f"{byte_count(fixed + chunk_rows * per_row)}, over the budget of "
                f"{byte_count(budget)} (at most {fit:,} rows fit); raise "
                "--memory or give fewer --chunk-rows."
            )
        fit = chunk_rows
    if max_rows is not None:
        # A block never needs more rows than the largest batch has.
        fit = min(fit, max(1, max_rows))
    return fit
