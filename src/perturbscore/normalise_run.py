"""``perturbscore normalise``: a finished run's tables as background-normalised tables.

:func:`normalise_run` reads the tables a run (``perturbscore run`` or
``import-scores``) lists in its ``manifest.json`` and writes, for each table and each
normalised statistic (:data:`perturbscore.normalise.NORMALISED`), a table of the same
rows and ID columns whose scores are that statistic against a background
(:mod:`perturbscore.normalise`): ``quantile`` (mid-rank, ``[0, 1]``, or ``[-1, 1]``
for signed statistics) or ``robust_z``.  The background is another group of the same
run (its table of the same aggregation and statistic, streamed into a sketch) or a
saved background file.  The output folder is run-shaped: ``compare`` and ``report``
read it as they read a run.

Names
    Output statistic ``{statistic}_{normalised}`` (``abs_diff_quantile``), table
    ``{group}_{statistic}_{normalised}_{aggregation}`` plus the format's extension,
    ``:`` dropped from the aggregation (``window:3`` -> ``window3``); the aggregation
    ``none`` of ``import-scores`` tables is left out (``top_SAD_quantile.parquet``).
Background rows
    Left out of a background built from a group, and counted in the manifest: rows
    of class ``outside_input`` when the run wrote a class column (``geometry.
    class_column`` in its manifest), rows whose scores are exactly 0 on every selected
    track (REF and ALT identical: a variant outside the model's input, which measures
    nothing), and rows with a NaN or infinite score.  Such rows are still normalised in
    the output tables like any other (NaN stays NaN).
Statistics perturbscore does not compute (``SAD`` of a scores file)
    are treated as signed: ``sign(x) * q(|x|)`` among the background's ``|b|``, the
    same as the unsigned quantile for non-negative scores except that 0 stays 0.
Runs with ``[normalise]``
    (:mod:`perturbscore.normalise_inrun`) list their normalised tables too; only their
    raw tables are normalised here.
Reading
    :mod:`perturbscore.runtables`: Parquet by record batches, CSV in chunks of rows;
    RDS and RData files are read whole (pyreadr has no partial reads), then in blocks.
    Blocks are read and normalised on a second thread while the first writes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import normalise as nz
from .errors import PerturbscoreError
from .geometry import CLASS_LABELS, OUTSIDE_INPUT
from .manifest import build_manifest, manifest_text
from .memory import DEFAULT_MEMORY_BYTES
from .names import check_name, is_safe_name
from .normalise import NORMALISED, Background, BackgroundBuilder
from .outputs import Commit, output_folder, temp_path
from .runtables import MANIFEST, Table, blocks, check_columns, read_run, table_columns
from .streaming import prefetch
from .writers import (
    FORMATS,
    TableWriter,
    check_format,
    footer_bytes,
    open_writer,
    table_group_rows,
    writer_bytes,
)

log = logging.getLogger("perturbscore")

EXCLUSION_RULE = (
    "background rows left out: class outside_input in the run's class column (when it has "
    "one), every selected score exactly 0 (REF == ALT, e.g. a variant outside the model's "
    "input), or any score NaN or infinite"
)
OUTSIDE = CLASS_LABELS[OUTSIDE_INPUT]
#: Most rows per block: beyond this, blocks only cost memory.
MAX_BLOCK_ROWS = 65536


@dataclass
class NormaliseResult:
    """What :func:`normalise_run` wrote."""

    tables: list[Path]
    manifest: Path
    background_file: Path | None
    backgrounds: dict[tuple[str, str], Background]
    excluded: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    block_rows: int = 0


def output_stem(group: str, aggregation: str, statistic: str, normalised: str) -> str:
    """File stem of a normalised table (see the module docstring)."""
    stem = f"{group}_{statistic}_{normalised}"
    return stem if aggregation == "none" else f"{stem}_{aggregation.replace(':', '')}"


def _builder(tracks: Sequence[str], aggregation: str, statistic: str) -> BackgroundBuilder:
    # A statistic perturbscore does not compute (SAD of a scores file) is built as a
    # signed one (see the module docstring) and renamed when finished.
    return BackgroundBuilder(tracks, aggregation, statistic if statistic in nz.SIGNED else "diff")


def build_background(
    t: Table, tracks: Sequence[str], rows: int, read_rows: int = 0, class_column: str | None = None
) -> tuple[Background, dict[str, int]]:
    """Stream table ``t`` into a background; rows left out as the module docstring says.

    ``class_column``: the ID column with each row's receptive-field class (a run with
    ``class_column`` in its ``[output]``); its ``outside_input`` rows are left out.
    """
    b = _builder(tracks, t.aggregation, t.statistic)
    counts = {"outside_input": 0, "all_zero": 0, "non_finite": 0}
    use_class = class_column is not None and class_column in (t.id_columns or [class_column])
    for scores, ids in blocks(t, tracks, rows, read_rows, ids=use_class):
        out = np.zeros(len(scores), bool)
        if use_class and ids is not None and class_column in ids.columns:
            out = (ids[class_column] == OUTSIDE).to_numpy()
        zeros = (scores == 0).all(axis=1) & ~out
        bad = ~np.isfinite(scores).all(axis=1) & ~out
        for k, m in (("outside_input", out), ("all_zero", zeros), ("non_finite", bad)):
            counts[k] += int(m.sum())
        b.update(scores, ~(out | zeros | bad))
    try:
        bg = b.finish()
    except PerturbscoreError:
        raise PerturbscoreError(
            f"{t.path}: no row is inside the model's field with finite, not all-zero scores, "
            "so it cannot serve as a background; choose another --background group."
        ) from None
    bg = dataclasses.replace(bg, statistic=t.statistic)
    return bg, {"rows": t.rows, "used": bg.n, **counts}


def normalise_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    background: str | None = None,
    background_file: str | Path | None = None,
    statistics: Sequence[str] = NORMALISED,
    fmt: str | None = None,
    save_background: str | Path | None = None,
    overwrite: bool = False,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    block_rows: int | None = None,
) -> NormaliseResult:
    """Write background-normalised copies of a run's tables (see the module docstring).

    Everything is checked before any work; then the backgrounds are built, and the
    tables written under temporary names and published with ``manifest.json`` in one
    journalled commit (all or nothing).

    Parameters
    ----------
    run_dir : path
        Folder with ``manifest.json`` (``perturbscore run`` or ``import-scores``).
    out_dir : path
        Output folder (created if missing; must not be ``run_dir``).
    background : str, optional
        Group of the run whose tables are the background (exactly one of this and
        ``background_file``).  Its own tables are normalised too.
    background_file : path, optional
        A background file (``.npz``) saved earlier with ``save_background``.
    statistics : sequence of {"quantile", "robust_z"}
    fmt : {"parquet", "csv", "rds", "rdata"}, optional
        Output format (default: the run's).
    save_background : path, optional
        Also write the background built from ``background`` to this ``.npz`` file.
    overwrite : bool
        Replace existing output tables and an existing ``save_background`` file.
    memory_bytes : int
        Budget for blocks, writer buffers and the background sketch, in bytes.
    block_rows : int, optional
        Rows per block (default: the most the budget allows); never changes a result.

    Returns
    -------
    NormaliseResult
    """
    started = time.perf_counter()
    job = _Job.check(
        Path(run_dir),
        Path(out_dir),
        background,
        background_file,
        statistics,
        fmt,
        save_background,
        overwrite,
        memory_bytes,
        block_rows,
    )
    job.timings["validate"] = time.perf_counter() - started
    for k, t in job.sources.items():
        job.backgrounds[k], ex = build_background(
            t, job.tracks, job.rows, job.read_rows, job.class_column
        )
        job.excluded[k] = ex
        if ex["used"] < t.rows:
            log.warning(
                "background %s %s/%s: %d of %d rows left out (%d outside the model's input, "
                "%d all exactly 0, %d not finite)",
                background,
                k[0],
                k[1],
                t.rows - ex["used"],
                t.rows,
                ex["outside_input"],
                ex["all_zero"],
                ex["non_finite"],
            )
    job.timings["background"] = time.perf_counter() - started - job.timings["validate"]
    with output_folder(job.out):
        if not overwrite:
            job.refuse_existing()
        _write(job, started)
    return NormaliseResult(
        [p for _, _, p in job.plan],
        job.out / MANIFEST,
        job.saved,
        job.backgrounds,
        job.excluded,
        job.rows,
    )


@dataclass
class _Job:
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
    ) -> _Job:
        """Every check that needs no table rows; raises PerturbscoreError, writes nothing."""
        stats = list(dict.fromkeys(statistics))
        bad = [s for s in stats if s not in NORMALISED] or ([] if stats else ["(none)"])
        if bad:
            raise PerturbscoreError(f"--statistic {bad[0]}: choose {' or '.join(NORMALISED)}.")
        if (background is None) == (background_file is None):
            raise PerturbscoreError("give exactly one of --background GROUP and --background-file.")
        if block_rows is not None and block_rows < 1:
            raise PerturbscoreError(f"--chunk-rows {block_rows}: give a positive number of rows.")
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
        saved = Path(save_background) if save_background is not None else None
        if saved is not None:
            _check_save(saved, background, overwrite)
        keys = list(dict.fromkeys(t.key for t in tables))
        sources: dict[tuple[str, str], Table] = {}
        backgrounds: dict[tuple[str, str], Background] = {}
        if background is not None:
            check_name(background, "--background group")
            groups = list(dict.fromkeys(t.group for t in tables))
            if background not in groups:
                raise PerturbscoreError(
                    f"--background {background} is not a group of {run}; it has "
                    f"{', '.join(groups)}."
                )
            sources = {t.key: t for t in tables if t.group == background}
            where, have = f"--background {background}", set(sources)
        else:
            where = str(background_file)
            loaded = nz.load_backgrounds(where)
            have = set(loaded)
            backgrounds = {k: loaded[k] for k in keys if k in loaded}
        missing = [f"{a}/{s}" for a, s in keys if (a, s) not in have]
        if missing:
            raise PerturbscoreError(
                f"{where} has no table for {', '.join(missing)}; build the background from a "
                "run with every aggregation and statistic of this one."
            )
        for b in backgrounds.values():
            nz.check_tracks(b, tracks, where)
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
        )
        if not overwrite:
            job.refuse_existing()
        job.read_rows = job.block_rows()
        job.rows = block_rows or job.read_rows
        return job

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
            buffers = math.floor(math.log2(max(1.0, n / nz.DEFAULT_K))) + 2
            held += 8 * buffers * nz.DEFAULT_K * n_s * 8
        keys = {t.key for t in self.tables}
        held += 2 * len(keys) * nz.DEFAULT_GRID * n_s * 8  # finished backgrounds
        # Two blocks in flight: one normalised waits while the next is read and normalised.
        per_row = (4 + 14 * n_stats) * n_s * 8 + 1024
        if budget - held < per_row:
            raise PerturbscoreError(
                f"memory budget {budget} bytes is too small (writers and backgrounds hold "
                f"{held}, one row needs {per_row}); raise --memory or choose --format parquet."
            )
        return int(min(MAX_BLOCK_ROWS, max(biggest, 1), (budget - held) // per_row))

    def refuse_existing(self) -> None:
        existing = [p.name for _, _, p in self.plan if p.exists()]
        existing += [MANIFEST] if (self.out / MANIFEST).exists() else []
        if existing:
            raise PerturbscoreError(
                f"{self.out} already holds {', '.join(existing)}; pass --overwrite to replace "
                "them or choose another --out folder."
            )


def _raw_tables(manifest: dict[str, Any], tables: list[Table]) -> list[Table]:
    """The tables of raw statistics: a run with ``[normalise]`` (its manifest's
    ``normalise`` record) also lists the normalised ones it wrote, left out here."""
    done = manifest.get("normalise") or {}
    raw = manifest.get("parameters", {}).get("statistics") or []
    names = {f"{s}_{n}" for s in raw for n in done.get("statistics", [])}
    kept = [t for t in tables if t.statistic not in names]
    if len(kept) < len(tables):
        log.info("%d tables of the run are normalised already; left out", len(tables) - len(kept))
    return kept


def _check_save(saved: Path, background: str | None, overwrite: bool) -> None:
    if background is None:
        raise PerturbscoreError(
            "--save-background saves a background built from --background GROUP; with "
            "--background-file the background already is a file."
        )
    if saved.suffix != ".npz":
        raise PerturbscoreError(f"--save-background {saved}: a background file ends in .npz.")
    if not saved.parent.is_dir():
        raise PerturbscoreError(f"--save-background {saved}: folder {saved.parent} not found.")
    if saved.is_dir() or (saved.exists() and not overwrite):
        raise PerturbscoreError(
            f"--save-background {saved} already exists; pass --overwrite or choose another name."
        )


def _normalised(
    job: _Job, t: Table, bg: Background
) -> Iterator[tuple[list[np.ndarray], pd.DataFrame]]:
    """Each block of ``t`` as its normalised statistics (in ``job.stats`` order) and IDs."""
    for scores, ids in blocks(t, job.tracks, job.rows, job.read_rows):
        assert ids is not None
        yield [nz.normalise(s, scores, bg) for s in job.stats], ids


def _write_table(
    job: _Job, t: Table, commit: Commit, writers: list[TableWriter], finished: list[Path]
) -> None:
    """Write table ``t``'s normalised tables under temporary names, handed to ``commit``.

    ``writers`` holds the writers still open (to abort on failure), ``finished`` the
    temporaries already complete.
    """
    opened: list[TableWriter] = []
    # Blocks are read and normalised on a background thread while this one writes the
    # previous block (pyarrow and numpy release the GIL).
    feed = prefetch(_normalised(job, t, job.backgrounds[t.key]), depth=1)
    try:
        for values, ids in feed:
            if not opened:  # an R table's ID columns are known once it is read
                for p in (p for u, _, p in job.plan if u is t):  # in job.stats order
                    w = open_writer(
                        job.fmt,
                        p,
                        job.tracks,
                        list(ids.columns),
                        p.stem,
                        expected_rows=t.rows,
                        group_rows=job.group_rows,
                    )
                    writers.append(w)
                    opened.append(w)
            for w, v in zip(opened, values, strict=True):
                w.write(v, ids)
    finally:
        feed.close()  # type: ignore[attr-defined]  # stops and joins the reading thread
    for w in opened:
        w.finish()
        commit.add(w.tmp, w.path)
        # Drop finished writers: an R writer holds its whole table until released.
        writers.remove(w)
        finished.append(w.tmp)


def _write(job: _Job, started: float) -> None:
    """Every table to its temporary name, then one journalled commit with the manifest."""
    writers: list[TableWriter] = []
    finished: list[Path] = []
    staged = temp_path(job.saved) if job.saved is not None else None
    try:
        commit = Commit(job.out)
        for t in job.tables:
            _write_table(job, t, commit, writers, finished)
        job.timings["normalise"] = time.perf_counter() - started - sum(job.timings.values())
        if staged is not None and job.saved is not None:
            # nz.save_backgrounds writes atomically but never replaces a file: stage it in a
            # temporary folder and rename it into place after the commit.
            staged.mkdir()
            nz.save_backgrounds(staged / job.saved.name, job.backgrounds.values())
        commit.run(job.out / MANIFEST, manifest_text(_manifest(job)))
        if staged is not None and job.saved is not None:
            os.replace(staged / job.saved.name, job.saved)
    except BaseException:
        for w in writers:
            w.abort()
        for tmp in finished:
            tmp.unlink(missing_ok=True)  # renamed already if the commit got that far
        raise
    finally:
        if staged is not None and staged.exists():
            for f in staged.iterdir():
                f.unlink()
            staged.rmdir()


def _manifest(job: _Job) -> dict[str, Any]:
    """The output's manifest: a run's schema, outputs with their normalised statistic."""
    entries = [
        {**b.describe(), "background_rows": job.excluded.get(k)} for k, b in job.backgrounds.items()
    ]
    parameters = {
        "normalised": job.stats,
        "run": str(job.run),
        "background": {
            "source": "group" if job.background else "file",
            "group": job.background,
            "file": str(job.background_file) if job.background_file else None,
            "saved_to": str(job.saved) if job.saved else None,
            "rule": EXCLUSION_RULE if job.background else None,
            "entries": entries,
        },
        "quantile": "mid-rank (ties count half); signed statistics: sign(x) * q(|x|) among |b|",
        "robust_z": "(x - median) / (mad_scale * MAD)",
        "mad_scale": nz.MAD_SCALE,
        "max_rank_error": max(b.max_rank_error for b in job.backgrounds.values()),
        "format": job.fmt,
        "memory_budget_bytes": job.memory_bytes,
        "chunk_rows": job.rows,
        "run_parameters": job.manifest.get("parameters", {}),
    }
    outputs = [
        {
            "group": t.group,
            "aggregation": t.aggregation,
            "statistic": f"{t.statistic}_{s}",
            "normalised": s,
            "raw_statistic": t.statistic,
            "path": p.name,
            "object": p.stem if job.fmt == "rdata" else None,
            "rows": t.rows,
            "columns": len(job.tracks) + len(t.id_columns or []),
        }
        for t, s, p in job.plan
    ]
    inputs = [
        {
            "group": t.group,
            "aggregation": t.aggregation,
            "statistic": t.statistic,
            "path": str(t.path),
            "rows": t.rows,
        }
        for t in job.tables
    ]
    tracks = job.manifest["tracks"]
    return build_manifest(
        source="normalise",
        run_file=None,
        parameters=parameters,
        targets=job.manifest.get("targets", {}),
        selection=tracks.get("selection", {}),
        tracks=pd.DataFrame(tracks["selected"]),
        inputs=inputs,
        outputs=outputs,
        warnings=list(job.manifest.get("warnings", [])),
        timings=job.timings,
        extra={"geometry": job.manifest.get("geometry")},  # same rows, same classes
    )
