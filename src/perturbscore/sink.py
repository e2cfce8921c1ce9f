"""Where a run's scores go: every table writer and Zarr cube of the run.

:class:`Sink` opens every planned table (and, with ``--zarr``, each group's cube)
under its temporary name, takes each block's scores ``(group, aggregation,
statistic) -> # n S`` (rows of the block, selected tracks) in block order, applies
the ``--out-of-field`` policy, finishes a group's tables after its last row, and
hands the temporaries to the run's :class:`perturbscore.outputs.Commit`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .geometry import apply_out_of_field
from .outputs import Commit, EarlySync
from .plan import Prepared, cube_name
from .rserialize import SharedText
from .writers import TableWriter, open_writer

if TYPE_CHECKING:
    from .cube import CubeWriter

log = logging.getLogger("perturbscore")


class Sink:
    """Every table writer and Zarr cube of a run: blocks go in, temporaries come out."""

    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        rows = prep.rows_per_group()
        self.by_key = {(o.group, o.aggregation.spec, o.statistic): o for o in prep.outputs}
        self.order = list(self.by_key)  # output tables in writer order (the resume log's)
        self.group_tables = {
            g.name: [n for n, k in enumerate(self.order) if k[0] == g.name]
            for g in prep.config.groups
        }
        self.writers: dict[tuple[str, str, str], TableWriter] = {}
        self.cubes: dict[str, CubeWriter] = {}
        self.policy = prep.opts.out_of_field
        self.keep = [b.keep(self.policy) for b in prep.batches]  # rows written, per batch
        self.next_row = {g.name: 0 for g in prep.config.groups}  # blocks arrive in order
        self.rows = rows
        self.syncing = EarlySync()  # finished groups' tables go to disk while others stream
        # Each group's serialised ID columns (R): a group's tables get the same ID rows
        # (emit writes one block's to each).
        self.shared = {g.name: SharedText() for g in prep.config.groups}
        try:
            self._open(rows)
        except BaseException:
            self.abort()  # what was opened before the failure
            raise

    def _open(self, rows: dict[str, int]) -> None:
        prep = self.prep
        for key, o in self.by_key.items():
            self.writers[key] = open_writer(
                prep.fmt,
                o.path,
                prep.track_names,
                prep.id_cols,
                o.object_name,
                expected_rows=rows[o.group],
                group_rows=prep.group_rows,
                shared=self.shared[o.group],
            )
        if prep.opts.zarr:
            from .cube import CubeWriter
            from .frame import Columns

            for g in prep.config.groups:
                mine = [
                    b.ids if k is None else b.ids.rows(k)
                    for b, k in zip(prep.batches, self.keep, strict=True)
                    if b.group == g.name
                ]
                self.cubes[g.name] = CubeWriter(
                    prep.out / cube_name(g.name),
                    Columns.concat(mine, prep.batches[0].ids.columns).to_frame(),
                    prep.tracks.to_frame(),
                    [a.spec for a in prep.aggs],
                    list(prep.config.output_statistics),
                    prep.plan.chunk_rows,
                )

    def emit(self, batch: int, start: int, stop: int, values: dict[Any, Any]) -> None:
        """One block's scores, ``(group, aggregation, statistic) -> (n, S)``.

        The ``--out-of-field`` policy applies here, so live and replayed blocks (which
        hold the raw scores) are written alike.
        """
        b = self.prep.batches[batch]
        ids = b.ids.rows(slice(start, stop))
        if b.classes is not None and self.policy == "na":
            cls = b.classes[start:stop]
            values = {k: apply_out_of_field("na", v, cls)[0] for k, v in values.items()}
        keep = self.keep[batch]
        if keep is not None and not keep[start:stop].all():
            sel = keep[start:stop]
            values = {k: v[sel] for k, v in values.items()}
            ids = ids.rows(sel)
        for key, v in values.items():
            self.writers[key].write(v, ids)
        if b.group in self.cubes and len(ids):
            self.cubes[b.group].write(
                self.next_row[b.group], {(k[1], k[2]): v for k, v in values.items()}
            )
        self.next_row[b.group] += len(ids)
        if self.next_row[b.group] == self.rows[b.group]:
            # The group's last row: finish its tables now (temporary names still), so a
            # wide Parquet footer or an R table is not held while later groups stream.
            for key, w in self.writers.items():
                if key[0] == b.group:
                    w.finish()
                    self.syncing.start(w.tmp)
            self.shared[b.group].clear()  # every table of the group holds its text now

    def finish(self, commit: Commit) -> None:
        """Finish every table under its temporary name and hand the renames to ``commit``."""
        for key, w in self.writers.items():
            self.by_key[key].rows = w.rows
            w.finish()
            commit.add(w.tmp, w.path)
        for cube in self.cubes.values():
            commit.add(cube.tmp, cube.path)
        self.syncing.wait()

    def abort(self) -> None:
        """Remove every temporary table and cube, each even if another one fails.

        Called while a failure propagates: closing a writer on a full disk fails too
        (its temporary is removed all the same), and that must neither leave the other
        temporaries behind nor hide the error that stopped the run.
        """
        # Flushes still running are not waited for: a file is removed under them safely.
        items: list[TableWriter | CubeWriter] = [*self.writers.values(), *self.cubes.values()]
        for item in items:
            try:
                item.abort()
            except Exception as exc:  # noqa: BLE001 - reported by the failure being handled
                log.debug("aborting %s: %s", item.tmp, exc)
