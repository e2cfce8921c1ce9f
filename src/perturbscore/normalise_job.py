"""Checking a ``perturbscore normalise`` job before any work, and sizing its blocks.

:meth:`NormaliseJob.check` runs every check before any work (options, the run's
manifest and tables, output names, the background group or file, each table's columns,
outputs already there), sizes the blocks for the budget (:meth:`NormaliseJob.block_rows`):
blocks of ``# n S`` scores (rows, selected tracks), each normalised into one block per
statistic, and reads the tables whose values and row count only reading shows
(:meth:`NormaliseJob.check_tables`: CSV and R files; Parquet footers hold the row
count), so a damaged or edited table is named before any background is built or any
warning printed, as ``compare`` does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PerturbscoreError
from .messages import overwrite_hint
from .names import check_name, is_safe_name
from .normalise import DEFAULT_GRID, DEFAULT_K, NORMALISED, Background
from .normalise_files import (
    check_bases,
    check_tracks,
    is_background_file,
    load_backgrounds,
    run_basis,
)
from .outputs_earlier import refuse_existing_outputs, stale_outputs
from .runtables import (
    MANIFEST,
    Block,
    Table,
    blocks,
    check_columns,
    read_run,
    table_columns,
    table_errors,
)
from .writers import FORMATS, check_format, footer_bytes, table_group_rows, writer_bytes

log = logging.getLogger("perturbscore")

#: Most rows per block: beyond this, blocks only cost memory.
MAX_BLOCK_ROWS = 65536


def checked_blocks(
    t: Table, tracks: Sequence[str], rows: int, read_rows: int = 0, ids: bool = True
) -> Iterator[Block]:
    """:func:`perturbscore.runtables.blocks`, with what the readers raise on a damaged or
    edited table (text in a score column, a cut-off file) turned into one sentence naming
    the file (:func:`perturbscore.runtables.table_errors`, as ``compare`` words it)."""
    it = blocks(t, tracks, rows, read_rows, ids)
    while True:
        with table_errors(t.path):
            try:
                item = next(it)
            except StopIteration:  # inside: table_errors would take it for damage
                return
        yield item


def output_stem(group: str, aggregation: str, statistic: str, normalised: str) -> str:
    """File stem of a normalised table (see the module docstring)."""
    stem = f"{group}_{statistic}_{normalised}"
    return stem if aggregation == "none" else f"{stem}_{aggregation.replace(':', '')}"


@dataclass
class NormaliseJob:
    """One normalisation, validated: inputs, backgrounds (or their sources), outputs."""

    run: Path
    out: Path
    manifest: dict[str, Any]
    tables: list[Table]
    tracks: list[str]
    stats: list[str]
    fmt: str
    plan: list[tuple[Table, str, Path]]
    background: str | None
    background_file: Path | None
    saved: Path | None
    sources: dict[tuple[str, str], Table]
    backgrounds: dict[tuple[str, str], Background]
    memory_bytes: int
    rows: int = 0
    read_rows: int = 0
    group_rows: int = 0
    excluded: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # this job's, added to the run's
    overwrite: bool = False  # may replace earlier outputs and a saved background file

    @property
    def class_column(self) -> str | None:
        """The run's receptive-field class column, if its manifest names one."""
        geometry = self.manifest.get("geometry") or {}
        return geometry.get("class_column") if isinstance(geometry, dict) else None

    @classmethod
    def check(
        cls,
        run: Path,
        out: Path,
        background: str | None,
        background_file: str | Path | None,
        statistics: Sequence[str],
        fmt: str | None,
        save_background: str | Path | None,
        overwrite: bool,
        memory_bytes: int,
        block_rows: int | None,
    ) -> NormaliseJob:
        """Every check before any work; raises PerturbscoreError, writes nothing."""
        stats = _check_arguments(statistics, background, background_file, block_rows)
        manifest, tables, tracks = read_run(run)
        if manifest.get("source") == "normalise":
            raise PerturbscoreError(
                f"{run} already holds normalised tables; give the run folder they were made from."
            )
        tables = _raw_tables(manifest, tables)
        fmt = check_format(fmt or str(manifest.get("parameters", {}).get("format") or "parquet"))
        if out.exists() and not out.is_dir():
            raise PerturbscoreError(f"--out {out} is an existing file; name a folder.")
        if out.resolve() == run.resolve():
            raise PerturbscoreError(f"--out {out} is the run folder itself; choose another folder.")
        plan = _plan_outputs(run, out, tables, stats, fmt)
        saved = Path(save_background) if save_background is not None else None
        if saved is not None:
            check_save(saved, background, overwrite, run, out)
        sources, backgrounds = _backgrounds(run, tables, tracks, background, background_file)
        for t in tables:
            cols = table_columns(t)
            if cols is not None:
                t.id_columns = check_columns(t, cols, tracks)
        job = cls(
            run,
            out,
            manifest,
            tables,
            tracks,
            stats,
            fmt,
            plan,
            background,
            Path(background_file) if background_file is not None else None,
            saved,
            sources,
            backgrounds,
            memory_bytes,
            overwrite=overwrite,
        )
        if background_file is not None:
            parameters = manifest.get("parameters") or {}
            bases = {k: run_basis(parameters, *k) for k in backgrounds}
            note = check_bases(backgrounds, bases, str(background_file))
            if note:  # printed once the tables are checked (normalise_run)
                job.warnings.append(note)
        job.refuse_existing(overwrite)
        job.read_rows = job.block_rows()
        job.rows = block_rows or job.read_rows
        job.check_tables()
        return job

    def check_tables(self) -> None:
        """Read the CSV and R tables through once: values, row count and tracks.

        The background group's tables are left to the build of the background, which
        reads them first of all and prints nothing until every one is built
        (:func:`perturbscore.normalise_run.normalise_run`); Parquet tables' row counts
        were checked from their footers.
        """
        building = {id(t) for t in self.sources.values()}
        for t in self.tables:
            if t.kind == "parquet" or id(t) in building:
                continue
            for _ in checked_blocks(t, self.tracks, self.rows, self.read_rows, ids=False):
                pass

    def block_rows(self) -> int:
        """Rows per block within the budget: what stays held (writers' buffers, R tables,
        the sketch) and, per row, its read copies and the normalised values with the
        searches' temporaries (about 12 arrays like the scores each), plus its IDs."""
        n_s, n_stats, budget = len(self.tracks), len(self.stats), self.memory_bytes
        biggest = max(t.rows for t in self.tables)
        self.group_rows = table_group_rows(n_s, biggest)
        # A table's normalised statistics are written side by side (row groups, footers,
        # and Arrow's copy of the table's scores); closing one serialises its footer.
        n_ids = max((len(t.id_columns or ()) for t in self.tables), default=0)
        held = n_stats * writer_bytes(self.fmt, n_s, n_ids, biggest, self.group_rows)
        if self.fmt == "parquet":
            held += footer_bytes(n_s + n_ids, biggest, self.group_rows)
            held += self.group_rows * n_s * 8
        if self.fmt in ("rds", "rdata"):
            held += n_stats * biggest * n_s * 8  # the R writers hold their whole table
        if any(t.kind == "r" for t in self.tables):
            held += biggest * (n_s * 8 + 512)  # pyreadr reads a whole table
        # pyarrow decodes a whole row group (measured: about 6 copies of its scores).
        held += 6 * max(t.group_rows for t in self.tables) * n_s * 8
        if self.sources:
            n = max(t.rows for t in self.sources.values())
            # At most one buffer of k rows per level (floor(log2(n / k)) + 1) and the stage;
            # finish() sorts and accumulates weights over them in about 7 more copies.
            buffers = math.floor(math.log2(max(1.0, n / DEFAULT_K))) + 2
            held += 8 * buffers * DEFAULT_K * n_s * 8
        keys = {t.key for t in self.tables}
        held += 2 * len(keys) * DEFAULT_GRID * n_s * 8  # finished backgrounds
        # Two blocks in flight: one normalised waits while the next is read and normalised.
        per_row = (4 + 14 * n_stats) * n_s * 8 + 1024
        if budget - held < per_row:
            raise PerturbscoreError(
                f"memory budget {budget:,} bytes is too small: the writers and backgrounds hold "
                f"{held:,} bytes and one row needs {per_row:,}; raise --memory to "
                f"{-(-(held + per_row) // 2**20)}MiB or more, or choose --format parquet."
            )
        return int(min(MAX_BLOCK_ROWS, max(biggest, 1), (budget - held) // per_row))

    def refuse_existing(self, overwrite: bool) -> None:
        """Earlier outputs need ``overwrite``; anything else is never replaced."""
        refuse_existing_outputs(
            self.out, self._planned(), overwrite, "normalise", "perturbscore normalise"
        )

    def stale(self) -> list[Path]:
        """An earlier normalise's outputs there that this one does not write again."""
        return stale_outputs(self.out, "normalise", self._planned())

    def _planned(self) -> list[Path]:
        return [p for _, _, p in self.plan] + [self.out / MANIFEST]


def _check_arguments(
    statistics: Sequence[str],
    background: str | None,
    background_file: str | Path | None,
    block_rows: int | None,
) -> list[str]:
    """The options that need no file: returns the statistics, each once."""
    stats = list(dict.fromkeys(statistics))
    bad = [s for s in stats if s not in NORMALISED] or ([] if stats else ["(none)"])
    if bad:
        raise PerturbscoreError(f"--statistic {bad[0]}: choose {' or '.join(NORMALISED)}.")
    if (background is None) == (background_file is None):
        raise PerturbscoreError("give exactly one of --background GROUP and --background-file.")
    if block_rows is not None and block_rows < 1:
        raise PerturbscoreError(f"--chunk-rows {block_rows}: give a positive number of rows.")
    return stats


def _plan_outputs(
    run: Path, out: Path, tables: list[Table], stats: list[str], fmt: str
) -> list[tuple[Table, str, Path]]:
    """Each table's normalised tables ``(table, statistic, path)``, names checked."""
    plan = []
    for t in tables:
        for part in (t.statistic, t.aggregation.replace(":", "")):
            if not is_safe_name(part):
                raise PerturbscoreError(
                    f"{run / MANIFEST}: {part!r} (of {t.path.name}) cannot be part of a file "
                    "name; only letters, digits, '_' and '-' can."
                )
        for s in stats:
            stem = output_stem(t.group, t.aggregation, t.statistic, s)
            plan.append((t, s, out / f"{stem}{FORMATS[fmt]}"))
    names = [p.name for _, _, p in plan]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise PerturbscoreError(
            f"{run / MANIFEST}: two tables would both be written as {clash[0]}; rename a "
            "group so that group and statistic names do not run into each other."
        )
    return plan


def _backgrounds(
    run: Path,
    tables: list[Table],
    tracks: list[str],
    background: str | None,
    background_file: str | Path | None,
) -> tuple[dict[tuple[str, str], Table], dict[tuple[str, str], Background]]:
    """The background group's tables (to build from) or the file's loaded backgrounds,
    one for each (aggregation, statistic) of the run, on the run's tracks."""
    keys = list(dict.fromkeys(t.key for t in tables))
    sources: dict[tuple[str, str], Table] = {}
    backgrounds: dict[tuple[str, str], Background] = {}
    if background is not None:
        check_name(background, "--background group")
        groups = list(dict.fromkeys(t.group for t in tables))
        if background not in groups:
            raise PerturbscoreError(
                f"--background {background} is not a group of {run}; it has {', '.join(groups)}."
            )
        sources = {t.key: t for t in tables if t.group == background}
        where, have = f"--background {background}", set(sources)
    else:
        where = str(background_file)
        loaded = load_backgrounds(where)
        have = set(loaded)
        backgrounds = {k: loaded[k] for k in keys if k in loaded}
    missing = [f"{a}/{s}" for a, s in keys if (a, s) not in have]
    if missing:
        raise PerturbscoreError(
            f"{where} has no table for {', '.join(missing)}; build the background from a "
            "run with every aggregation and statistic of this one."
        )
    for b in backgrounds.values():
        check_tracks(b, tracks, where)
    return sources, backgrounds


def _raw_tables(manifest: dict[str, Any], tables: list[Table]) -> list[Table]:
    """The tables of raw statistics: a run with ``[normalise]`` (its manifest's
    ``normalise`` record) also lists the normalised ones it wrote, left out here."""
    done = manifest.get("normalise") or {}
    raw = manifest.get("parameters", {}).get("statistics") or []
    names = {f"{s}_{n}" for s in raw for n in done.get("statistics", [])}
    kept = [t for t in tables if t.statistic not in names]
    if len(kept) < len(tables):
        n = len(tables) - len(kept)
        log.info("%d table%s of the run normalised already: left out", n, "s" if n > 1 else "")
    return kept


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies in ``folder`` or below it."""
    return path.resolve().is_relative_to(folder.resolve())


def check_save(saved: Path, background: str | None, overwrite: bool, run: Path, out: Path) -> None:
    """``--save-background``: a new ``.npz`` outside the run and ``--out`` folders, or,
    with ``overwrite``, a background file saved earlier (never another file)."""
    if background is None:
        raise PerturbscoreError(
            "--save-background saves a background built from --background GROUP; with "
            "--background-file the background already is a file."
        )
    if saved.suffix != ".npz":
        raise PerturbscoreError(f"--save-background {saved}: a background file ends in .npz.")
    if not saved.parent.is_dir():
        raise PerturbscoreError(f"--save-background {saved}: folder {saved.parent} not found.")
    # The run folder belongs to the run, and --out to what its manifest lists; a file
    # of neither would be unlisted there, and could be taken or swept as theirs.
    for folder, what in ((run, "run folder"), (out, "--out folder")):
        if _inside(saved, folder):
            raise PerturbscoreError(
                f"--save-background {saved} is inside the {what} {folder}; save it beside "
                f"that folder instead, e.g. --save-background {folder.parent / saved.name}."
            )
    refuse_saved(saved, overwrite)


def refuse_saved(saved: Path, overwrite: bool, now: str = "") -> None:
    """Refuse a ``--save-background`` file that exists (without ``overwrite``) or that is
    not a background file; ``now``: how a message says it appeared while the job ran."""
    if saved.is_dir() or (saved.exists() and not overwrite):
        raise PerturbscoreError(
            f"--save-background {saved} already exists{now}; {overwrite_hint()} or choose "
            "another name."
        )
    if saved.exists() and not is_background_file(saved):
        raise PerturbscoreError(
            f"--save-background {saved} exists{now} and is not a background file perturbscore "
            "saved, so --overwrite does not replace it; choose another name."
        )
