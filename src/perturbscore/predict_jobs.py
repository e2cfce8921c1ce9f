"""The forward passes of ``perturbscore predict`` and the bases each one is fed.

One :class:`Job` per forward pass: the REF of a window (written to every row that shares
the window, and to the ALT rows of its out-of-field variants) or the ALT of one variant.
The order is fixed by the plan alone, so a resumed run makes the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .genome import Genome
    from .windows import Plan, Variants


@dataclass(slots=True)
class Job:
    """One forward pass: the window's REF (``variant`` None) or one variant's ALT.

    ``ref_rows``/``alt_rows``: the output rows its prediction is written to.
    """

    window: int
    variant: int | None
    ref_rows: tuple[int, ...]
    alt_rows: tuple[int, ...]


def build_jobs(plan: Plan, ref_cache: bool, skip_out_of_field: bool) -> list[Job]:
    """The forward passes, in a fixed order (so a resumed run makes the same batches)."""
    jobs: list[Job] = []
    inf = plan.in_field
    if ref_cache:
        order = np.argsort(plan.window, kind="stable")
        cuts = np.flatnonzero(np.diff(plan.window[order])) + 1
        for rows in np.split(order, cuts):
            w = int(plan.window[rows[0]])
            rows_l = rows.tolist()
            run = [i for i in rows_l if inf[i] or not skip_out_of_field]
            skipped = tuple(i for i in rows_l if not (inf[i] or not skip_out_of_field))
            jobs.append(Job(w, None, tuple(rows_l), skipped))
            jobs += [Job(w, i, (), (i,)) for i in run]
    else:
        for i in range(plan.n_variants):
            skip = skip_out_of_field and not inf[i]
            jobs.append(Job(int(plan.window[i]), None, (i,), (i,) if skip else ()))
            if not skip:
                jobs.append(Job(int(plan.window[i]), i, (), (i,)))
    return jobs


def job_sequence(genome: Genome, plan: Plan, v: Variants, job: Job,
                 cache: dict[int, bytes]) -> bytes:
    """Bases fed to the model for ``job``: the part of the window the model reads
    (``geometry.input`` bases from offset ``geometry.input_start``), with the ALT allele
    for ALT jobs."""
    g = plan.geometry
    if job.window not in cache:
        cache.clear()  # jobs come grouped by window: one window in memory at a time
        chrom, start = plan.windows[job.window]
        first = start + g.input_start
        cache[job.window] = genome.fetch(chrom, first, first + g.input)[0]
    seq = cache[job.window]
    if job.variant is None:
        return seq
    i, length = job.variant, g.input
    off, alt = int(plan.offset[i]) - g.input_start, v.alt[i].encode("ascii")
    lo, hi = max(off, 0), min(off + len(alt), length)  # only the bases inside the window
    if hi <= lo:
        return seq
    out = bytearray(seq)
    out[lo:hi] = alt[lo - off: hi - off]
    return bytes(out)
