"""A checked comparison: the tests each design runs, their samples, and running them.

A :class:`ComparisonPlan` (made by :func:`.compare_plan.plan_comparison`, which checks
everything first) knows the tests of every track (:meth:`ComparisonPlan.specs`: which
samples each design compares, see :mod:`.compare`) and reads their samples a block of
track columns at a time (``# T n``: tracks, values): whole groups for ``unpaired``, per
pairing unit for ``paired`` and ``matching``.  :meth:`ComparisonPlan.execute` runs the
tests (:mod:`.compare_tests`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .compare_pairing import Lookup, Pairing
from .compare_tables import RunTables
from .compare_tests import (
    _COPIES_PER_VALUE,
    DEFAULT_MEMORY,
    WHOLE_TABLE_KEPT,
    WHOLE_TABLE_READING,
    CompareResult,
    Spec,
    Take,
    adjust_p,
    block_columns,
    results_table,
    run_blocks,
    untested_warnings,
)
from .memory import byte_count
from .messages import count

log = logging.getLogger("perturbscore")


@dataclass
class ComparisonPlan:
    """Everything checked and looked up; :meth:`execute` runs the tests."""

    run: RunTables
    group_a: str
    group_b: str
    designs: list[str]
    track_meta: pd.DataFrame
    combos: list[tuple[str, str]]
    pairing: Pairing | None
    lookups: dict[tuple[str, str, str], Lookup]
    family: str
    per_rank: bool
    summary: dict[str, Any]
    warnings: list[str]

    @property
    def ids(self) -> list[str]:
        return list(self.track_meta["identifier"])

    def specs(self) -> list[Spec]:
        """The tests of every track, in output order."""
        a, b = self.group_a, self.group_b
        out = []
        if "unpaired" in self.designs:
            out.append(Spec("unpaired", None, b, a, "ranksum", Take("B", "A")))
        if self.pairing is None:
            return out
        units = self.pairing.units
        ranks: list[int | None] = [None]
        if self.per_rank:
            ranks = [int(r) for r in sorted(units["rank"].unique())]
        match = units["matching"].to_numpy()
        for r in ranks:
            sel = np.ones(len(units), bool) if r is None else (units["rank"] == r).to_numpy()
            m, nm = np.flatnonzero(sel & match), np.flatnonzero(sel & ~match)
            if "paired" in self.designs:
                out.append(
                    Spec(
                        "paired",
                        r,
                        b,
                        a,
                        "signed",
                        Take("uB", "uA", nm, nm),
                    )
                )
            if "matching" in self.designs:
                for side, name in (("A", a), ("B", b)):
                    out.append(
                        Spec(
                            "matching",
                            r,
                            "matching",
                            f"non-matching {name}",
                            "ranksum",
                            Take("matched", "u" + side, m, nm),
                        )
                    )
        return out

    def read_block(self, agg: str, stat: str, cols: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores of one block of tracks: whole groups and per unit (``# T N``)."""
        all_ids = list(self.run.tracks["identifier"])
        sa = self.run.get(self.group_a, agg, stat)
        sb = self.run.get(self.group_b, agg, stat)
        out = {"A": sa.read_scores(cols, all_ids), "B": sb.read_scores(cols, all_ids)}
        if self.pairing is not None:
            ua = self.lookups[(self.group_a, agg, stat)].take(out["A"])
            ub = self.lookups[(self.group_b, agg, stat)].take(out["B"])
            out["uA"], out["uB"] = ua, ub
            # A matching unit's variant is the same on both sides: A's score, else B's.
            out["matched"] = np.where(np.isnan(ua), ub, ua)
        if "unpaired" not in self.designs:
            out.pop("A")
            out.pop("B")
        return out

    def read_samples(
        self, agg: str, stat: str, cols: Sequence[str]
    ) -> dict[tuple[str, Any], dict[str, np.ndarray]]:
        """The samples each (design, rank) tested, for the figures (these tracks only)."""
        s = self.read_block(agg, stat, cols)
        out: dict[tuple[str, Any], dict[str, np.ndarray]] = {}
        for spec in self.specs():
            x, y = (v.T for v in spec.take(s))  # figures take (n, T)
            d = out.setdefault((spec.design, spec.rank), {})
            if spec.kind == "signed":
                both = ~np.isnan(x) & ~np.isnan(y)  # the pairs tested
                d[spec.x] = np.where(both, x, np.nan)
                d[spec.y] = np.where(both, y, np.nan)
            else:
                d.setdefault(spec.x, x)
                d.setdefault(spec.y, y)
        return out

    def _rows_per_table(self) -> int:
        """Mean rows of the compared tables (50,000 for a table of unknown length)."""
        rows = 0
        for agg, stat in self.combos:
            for g in (self.group_a, self.group_b):
                ss = self.run.get(g, agg, stat)
                rows += ss.rows if ss.rows is not None else 50_000
        return max(rows // max(len(self.combos), 1), 1)

    def _table_bytes(self, agg: str, stat: str) -> list[tuple[int, str]]:
        """Score bytes of the pair ``(agg, stat)``'s tables that are read whole, with
        their names (Parquet tables, read a block of tracks at a time, count 0)."""
        n_tracks = len(self.run.tracks)
        out = []
        for g in (self.group_a, self.group_b):
            ss = self.run.get(g, agg, stat)
            if not ss.columnar:
                out.append(
                    ((ss.rows if ss.rows is not None else 50_000) * n_tracks * 8, ss.path.name)
                )
        return out

    def whole_table_bytes(self) -> int:
        """Bytes that tables read whole (CSV, R) hold at most at once, before any block.

        A pair of such tables is read at its first block and let go after its last;
        the next pair's first block is read ahead meanwhile, so two pairs meet.  With a
        pairing every table is kept from the checks on (the unit lookups read them).
        """
        tables = [self._table_bytes(a, s) for a, s in self.combos]
        pairs = [sum(b for b, _ in pair) for pair in tables]
        largest = max((b for pair in tables for b, _ in pair), default=0)
        kept = sum(pairs) if self.pairing is not None else sum(sorted(pairs)[-2:])
        return int(WHOLE_TABLE_KEPT * kept + WHOLE_TABLE_READING * largest)

    def _budget_note(self, memory: int, held: int, per_track: int) -> str:
        """Why ``memory`` cannot be kept with tables read whole, and what to do."""
        mib = 2**20
        names = max(
            (self._table_bytes(a, s) for a, s in self.combos), key=lambda p: sum(b for b, _ in p)
        )
        need = -(-(held + per_track) // mib)
        return (
            f"--memory {byte_count(memory)} cannot be kept: compare reads R and CSV tables "
            f"whole, and these hold about {byte_count(held)} at once (the largest pair: "
            f"{' and '.join(n for _, n in names)}), besides {byte_count(per_track)} per "
            f"track tested at a time; it will use about {need:,} MiB. Give --memory {need:,}MiB "
            "or more, or write the run's tables as Parquet (perturbscore run --format "
            "parquet), which compare reads a block of tracks at a time."
        )

    def _release(self, agg: str, stat: str) -> None:
        """After a table's last block: whole-table caches (CSV, R) are let go."""
        for g in (self.group_a, self.group_b):
            self.run.get(g, agg, stat).release()

    def execute(
        self, memory: int = DEFAULT_MEMORY, progress: bool = False, workers: int | None = None
    ) -> CompareResult:
        """Run every test, a block of track columns (sized to ``memory``) at a time.

        The plan's warnings are logged first: only now is every input known to be
        usable, so that a user error is never preceded by warnings about the data.
        """
        for note in self.warnings:
            log.warning("%s", note)
        specs = self.specs()
        ids = self.ids
        rows = self._rows_per_table()
        held = self.whole_table_bytes()
        per_track = rows * 8 * _COPIES_PER_VALUE
        if held and memory - held < per_track:
            log.warning("%s", self._budget_note(memory, held, per_track))
        width = block_columns(rows, max(memory - held, 0), len(ids))
        blocks = [ids[j : j + width] for j in range(0, len(ids), width)]
        log.info(
            "%s per track x %s x %s, %s per block",
            count(len(specs), "test"),
            count(len(ids), "track"),
            count(len(self.combos), "table"),
            count(width, "track"),
        )
        jobs = [(agg, stat, cols) for agg, stat in self.combos for cols in blocks]
        parts = run_blocks(jobs, specs, self.read_block, self._release, workers, progress)
        out = results_table(parts, self.combos, specs, self.track_meta)
        adjust_p(out, self.family)
        warnings = list(self.warnings) + untested_warnings(out)
        return CompareResult(out, self.track_meta, self.summary, self.read_samples, warnings)
