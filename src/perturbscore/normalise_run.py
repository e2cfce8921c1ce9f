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
    the output tables like any other (NaN stays NaN); a run's out-of-field zeros kept
    by its ``--out-of-field keep`` are named in one warning
    (:func:`.normalise_background.kept_out_of_field_warning`), since they get values as if measured.
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
Checks and block sizing
    :mod:`perturbscore.normalise_job`: everything is checked before any work.
"""

from __future__ import annotations

import logging
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
from .manifest import build_manifest, manifest_text
from .memory import DEFAULT_MEMORY_BYTES
from .normalise import NORMALISED, Background
from .normalise_background import EXCLUSION_RULE, build_backgrounds, warn_about_backgrounds
from .normalise_files import save_backgrounds
from .normalise_job import NormaliseJob, check_save, checked_blocks, refuse_saved
from .outputs import Commit, output_folder, sweep, temp_path
from .runtables import MANIFEST, Table
from .streaming import prefetch
from .writers import (
    TableWriter,
    open_writer,
)

log = logging.getLogger("perturbscore")

@dataclass
class NormaliseResult:
    """What :func:`normalise_run` wrote."""

    tables: list[Path]
    manifest: Path
    background_file: Path | None
    backgrounds: dict[tuple[str, str], Background]
    excluded: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    block_rows: int = 0


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
    job = NormaliseJob.check(
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
    build_backgrounds(job)
    job.timings["background"] = time.perf_counter() - started - job.timings["validate"]
    warn_about_backgrounds(job)
    with output_folder(job.out):
        job.refuse_existing(overwrite)  # again: the folder may have changed meanwhile
        if job.saved is not None:  # and so may the file a background replaces
            check_save(job.saved, job.background, overwrite, job.run, job.out)
        _write(job, started, job.stale() if overwrite else [])
    return NormaliseResult(
        [p for _, _, p in job.plan],
        job.out / MANIFEST,
        job.saved,
        job.backgrounds,
        job.excluded,
        job.rows,
    )


def _normalised(
    job: NormaliseJob, t: Table, bg: Background
) -> Iterator[tuple[list[np.ndarray], pd.DataFrame]]:
    """Each block of ``t`` as its normalised statistics (in ``job.stats`` order) and IDs."""
    for scores, ids in checked_blocks(t, job.tracks, job.rows, job.read_rows):
        assert ids is not None
        yield [nz.normalise(s, scores, bg) for s in job.stats], ids


def _write_table(
    job: NormaliseJob, t: Table, commit: Commit, writers: list[TableWriter], finished: list[Path]
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


def _write(job: NormaliseJob, started: float, stale: Sequence[Path] = ()) -> None:
    """Every table to its temporary name, then one journalled commit with the manifest."""
    writers: list[TableWriter] = []
    finished: list[Path] = []
    staged = temp_path(job.saved) if job.saved is not None else None
    try:
        commit = Commit(job.out)
        for path in stale:  # --overwrite: an earlier normalise's tables not written again
            commit.remove(path)
        for t in job.tables:
            _write_table(job, t, commit, writers, finished)
        job.timings["normalise"] = time.perf_counter() - started - sum(job.timings.values())
        if staged is not None and job.saved is not None:
            # save_backgrounds writes atomically but never replaces a file: stage it in a
            # temporary folder and rename it into place after the commit.
            sweep(job.saved.parent, job.saved.name)  # what a killed save left there
            staged.mkdir()
            save_backgrounds(staged / job.saved.name, job.backgrounds.values())
            # Checked at the start; a file another program wrote there since is not ours.
            refuse_saved(job.saved, job.overwrite, _APPEARED)
        commit.run(job.out / MANIFEST, manifest_text(_manifest(job)))
        if staged is not None and job.saved is not None:
            _place_saved(staged / job.saved.name, job.saved, job.overwrite, job.out)
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


#: How a message says that a --save-background file appeared after the first check.
_APPEARED = " (it appeared while normalise ran)"


def _place_saved(staged: Path, saved: Path, overwrite: bool, out: Path) -> None:
    """Move the staged background file to ``saved``: without ``overwrite`` by a hard link,
    which fails rather than replace a file that appeared since the last check."""
    try:
        if overwrite:
            refuse_saved(saved, overwrite, _APPEARED)
            os.replace(staged, saved)
            return
        try:
            os.link(staged, saved)
        except FileExistsError:
            raise PerturbscoreError(
                f"--save-background {saved} already exists{_APPEARED}; choose another name."
            ) from None
        except OSError:  # a file system without hard links: check, then replace
            refuse_saved(saved, overwrite, _APPEARED)
            os.replace(staged, saved)
    except PerturbscoreError as exc:
        raise PerturbscoreError(f"{exc} The tables in {out} are complete.") from None


def _manifest(job: NormaliseJob) -> dict[str, Any]:
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
        warnings=[*job.manifest.get("warnings", []), *job.warnings],
        timings=job.timings,
        extra={"geometry": job.manifest.get("geometry")},  # same rows, same classes
    )
