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
    Rows whose scores are exactly 0 on every selected track are left out of a
    background built from a group: REF and ALT were identical (a variant outside the
    model's input), which measures nothing.  Rows with a NaN or infinite score are
    left out too.  Both are counted in the manifest.  Such rows are still normalised
    in the output tables like any other.
Statistics perturbscore does not compute (``SAD`` of a scores file)
    are treated as signed: ``sign(x) * q(|x|)`` among the background's ``|b|``, the
    same as the unsigned quantile for non-negative scores except that 0 stays 0.
Reading
    Parquet by record batches, CSV in chunks of rows; RDS and RData files are read
    whole (pyreadr has no partial reads) and then processed in blocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
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

from .errors import PerturbscoreError
from .manifest import build_manifest, manifest_text
from .memory import DEFAULT_MEMORY_BYTES
from .names import check_name, is_safe_name
from .normalise import (
    DEFAULT_GRID,
    DEFAULT_K,
    MAD_SCALE,
    NORMALISED,
    SIGNED,
    Background,
    BackgroundBuilder,
    check_tracks,
    load_backgrounds,
    normalise,
    save_backgrounds,
)
from .outputs import Commit, folder_lock, recover, sweep, temp_path
from .writers import FORMATS, TableWriter, check_format, open_writer, parquet_group_rows

log = logging.getLogger("perturbscore")

MANIFEST = "manifest.json"
EXCLUSION_RULE = (
    "background rows left out: every selected score exactly 0 (REF == ALT, e.g. a variant "
    "outside the model's input), or any score NaN or infinite"
)
#: Most rows per block: beyond this, blocks only cost memory.
MAX_BLOCK_ROWS = 65536
_READERS = {".parquet": "parquet", ".csv": "csv", ".rds": "r", ".rdata": "r"}


@dataclass(eq=False)  # identity: one object per table
class Table:
    """One input table of the run."""

    group: str
    aggregation: str
    statistic: str
    path: Path
    rows: int
    #: Non-track columns, in table order (known after validation, or the first read).
    id_columns: list[str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.aggregation, self.statistic)

    @property
    def kind(self) -> str:
        return _READERS[self.path.suffix.lower()]


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


def _read_run(run_dir: Path) -> tuple[dict[str, Any], list[Table], list[str]]:
    """The run's manifest, its tables and the selected track identifiers, checked."""
    mpath = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise PerturbscoreError(f"{run_dir}: run folder not found; give the --out folder of a run.")
    if not mpath.is_file():
        raise PerturbscoreError(
            f"{run_dir}: no {MANIFEST}; give the --out folder of 'perturbscore run' or "
            "'perturbscore import-scores'."
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        tracks = [str(t["identifier"]) for t in manifest["tracks"]["selected"]]
        outputs = list(manifest["outputs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PerturbscoreError(f"{mpath}: not a perturbscore manifest ({exc}).") from exc
    tables: list[Table] = []
    for o in outputs:
        if o.get("normalised"):
            raise PerturbscoreError(
                f"{mpath}: this folder already holds normalised tables; give the run folder "
                "they were made from."
            )
        check_name(o["group"], "group name", str(mpath))
        t = Table(o["group"], o["aggregation"], o["statistic"], run_dir / o["path"], o["rows"])
        if not t.path.is_file():
            raise PerturbscoreError(f"{t.path}: listed in {mpath} but missing.")
        if t.path.suffix.lower() not in _READERS:
            raise PerturbscoreError(
                f"{t.path}: unknown table format {t.path.suffix!r}; normalise reads Parquet, "
                "CSV, RDS and RData tables."
            )
        if any(u.group == t.group and u.key == t.key for u in tables):
            raise PerturbscoreError(
                f"{mpath}: two tables for group {t.group}, {t.aggregation}/{t.statistic}."
            )
        tables.append(t)
    if not tables:
        raise PerturbscoreError(f"{mpath}: the run lists no tables.")
    return manifest, tables, tracks


def _columns(t: Table) -> list[str] | None:
    """Column names of a table without reading its rows (None for R files)."""
    if t.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(t.path).metadata
        except (OSError, ValueError) as exc:
            raise PerturbscoreError(f"{t.path}: not a readable Parquet file ({exc}).") from exc
        if meta.num_rows != t.rows:
            raise PerturbscoreError(
                f"{t.path} has {meta.num_rows} rows but the manifest says {t.rows}; the run "
                "folder was changed after the run: run it again."
            )
        return list(meta.schema.to_arrow_schema().names)
    if t.kind == "csv":
        return list(pd.read_csv(t.path, nrows=0).columns)
    return None


def _check_columns(t: Table, columns: Sequence[str], tracks: Sequence[str]) -> list[str]:
    """The ID columns (every non-track column), after checking every track is there."""
    have = set(columns)
    missing = [c for c in tracks if c not in have]
    if missing:
        raise PerturbscoreError(
            f"{t.path} lacks {len(missing)} of the run's selected tracks (e.g. {missing[0]}); "
            "the table does not belong to this manifest."
        )
    wanted = set(tracks)
    return [c for c in columns if c not in wanted]


def _text(values: pd.Series) -> pd.Series:
    """An ID column as text, missing values as None."""
    s = values.astype(object)
    s = s.map(lambda v: v if isinstance(v, str) else str(v), na_action="ignore")
    return s.where(s.notna(), None)


def blocks(t: Table, tracks: Sequence[str], rows: int) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
    """The table in blocks of at most ``rows`` rows: scores ``# n S`` float64, ID columns.

    A table without rows gives one empty block (its ID columns are still needed).
    Sets ``t.id_columns``.
    """
    seen = 0
    empty: tuple[np.ndarray, pd.DataFrame] | None = None
    for frame in _frames(t, tracks, rows):
        if t.id_columns is None:
            t.id_columns = _check_columns(t, list(frame.columns), tracks)
        scores = frame[list(tracks)].to_numpy(dtype=np.float64)
        ids = pd.DataFrame({c: _text(frame[c]) for c in t.id_columns})
        if not len(frame):
            empty = (scores, ids)
        for start in range(0, len(frame), rows):
            yield scores[start : start + rows], ids.iloc[start : start + rows]
        seen += len(frame)
    if seen != t.rows:
        raise PerturbscoreError(
            f"{t.path} has {seen} rows but the manifest says {t.rows}; the run folder was "
            "changed after the run: run it again."
        )
    if not seen:
        cols = t.id_columns or []
        yield empty or (np.empty((0, len(tracks))), pd.DataFrame({c: [] for c in cols}))


def _frames(t: Table, tracks: Sequence[str], rows: int) -> Iterator[pd.DataFrame]:
    if t.kind == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(t.path).iter_batches(batch_size=rows):
            yield batch.to_pandas()
    elif t.kind == "csv":
        head = pd.read_csv(t.path, nrows=0).columns
        scores = set(tracks)
        dtypes = {c: ("float64" if c in scores else "str") for c in head}
        yield from pd.read_csv(
            t.path,
            dtype=dtypes,
            keep_default_na=False,
            na_values={c: ["", "NA", "NaN", "nan"] for c in scores & set(head)},
            chunksize=rows,
        )
    else:
        import pyreadr

        try:
            objects = pyreadr.read_r(str(t.path))
        except Exception as exc:  # pyreadr raises its own types for bad files
            raise PerturbscoreError(f"{t.path}: not a readable R data file ({exc}).") from exc
        if len(objects) != 1:
            raise PerturbscoreError(f"{t.path}: holds {len(objects)} objects, not one table.")
        yield next(iter(objects.values())).reset_index(drop=True)


def _builder(tracks: Sequence[str], aggregation: str, statistic: str) -> BackgroundBuilder:
    # A statistic perturbscore does not compute (SAD of a scores file) is built as a
    # signed one (see the module docstring) and renamed when finished.
    return BackgroundBuilder(tracks, aggregation, statistic if statistic in SIGNED else "diff")


def build_background(
    t: Table, tracks: Sequence[str], rows: int
) -> tuple[Background, dict[str, int]]:
    """Stream table ``t`` into a background; rows left out as the module docstring says."""
    b = _builder(tracks, t.aggregation, t.statistic)
    zero = nonfinite = 0
    for scores, _ in blocks(t, tracks, rows):
        finite = np.isfinite(scores).all(axis=1)
        zeros = (scores == 0).all(axis=1)
        zero += int(zeros.sum())
        nonfinite += int((~finite).sum())
        b.update(scores, finite & ~zeros)
    try:
        bg = b.finish()
    except PerturbscoreError:
        raise PerturbscoreError(
            f"{t.path}: every row is all zeros or non-finite, so it cannot serve as a "
            "background; choose another --background group."
        ) from None
    bg = dataclasses.replace(bg, statistic=t.statistic)
    return bg, {"rows": t.rows, "used": bg.n, "all_zero": zero, "non_finite": nonfinite}


def _block_rows(n_tracks: int, n_stats: int, fixed: int, budget: int) -> int:
    """Rows per block within ``budget``: a row's read copies, normalised values and
    the searches' temporaries (about 12 arrays like the scores each), plus its IDs."""
    per_row = (4 + 12 * n_stats) * n_tracks * 8 + 512
    room = budget - fixed
    if room < per_row:
        raise PerturbscoreError(
            f"memory budget {budget} bytes is too small (writers and background need {fixed}, "
            f"one row {per_row}); raise --memory or choose --format parquet."
        )
    return int(min(MAX_BLOCK_ROWS, room // per_row))


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
    """Write background-normalised copies of a run's tables (module docstring).

    Parameters
    ----------
    run_dir : path
        Folder with ``manifest.json`` (``perturbscore run`` or ``import-scores``).
    out_dir : path
        Output folder: tables and ``manifest.json``, published together or not at all.
    background : str, optional
        Group of the run whose tables are the background (exactly one of this and
        ``background_file``).
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
        Budget for blocks, writer buffers and the background sketch.
    block_rows : int, optional
        Rows per block (default: the most the budget allows); never changes a result.
    """
    started = time.perf_counter()
    stats = list(dict.fromkeys(statistics))
    bad = [s for s in stats if s not in NORMALISED]
    if bad or not stats:
        raise PerturbscoreError(
            f"--statistic {bad[0] if bad else '(none)'}: choose {' or '.join(NORMALISED)}."
        )
    if (background is None) == (background_file is None):
        raise PerturbscoreError("give exactly one of --background GROUP and --background-file.")
    run = Path(run_dir)
    manifest, tables, tracks = _read_run(run)
    fmt = check_format(fmt or str(manifest.get("parameters", {}).get("format") or "parquet"))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PerturbscoreError(f"--out {out} is an existing file, not a folder; name a folder.")
    if out.resolve() == run.resolve():
        raise PerturbscoreError(f"--out {out} is the run folder itself; choose another folder.")
    if block_rows is not None and block_rows < 1:
        raise PerturbscoreError(f"--chunk-rows {block_rows}: give a positive number of rows.")
    plan: list[tuple[Table, str, Path]] = []
    for t in tables:
        for part, what in ((t.statistic, "statistic"), (t.aggregation.replace(":", ""), "agg")):
            if not is_safe_name(part):
                raise PerturbscoreError(
                    f"{run / MANIFEST}: {what} {part!r} of {t.path.name} cannot be part of a file "
                    "name (letters, digits, '_' and '-' only)."
                )
        for s in stats:
            stem = output_stem(t.group, t.aggregation, t.statistic, s)
            plan.append((t, s, out / f"{stem}{FORMATS[fmt]}"))
    keys = list(dict.fromkeys(t.key for t in tables))
    saved = Path(save_background) if save_background is not None else None
    if saved is not None:
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
    sources: dict[tuple[str, str], Table] = {}
    loaded: dict[tuple[str, str], Background] = {}
    if background is not None:
        check_name(background, "--background group")
        groups = list(dict.fromkeys(t.group for t in tables))
        if background not in groups:
            raise PerturbscoreError(
                f"--background {background} is not a group of {run}; it has {', '.join(groups)}."
            )
        sources = {t.key: t for t in tables if t.group == background}
        missing = [f"{a}/{s}" for a, s in keys if (a, s) not in sources]
        if missing:
            raise PerturbscoreError(
                f"--background {background} has no table for {', '.join(missing)}; choose a "
                "group with every aggregation and statistic of the run."
            )
    else:
        where = str(background_file)
        loaded = load_backgrounds(where)
        missing = [f"{a}/{s}" for a, s in keys if (a, s) not in loaded]
        if missing:
            raise PerturbscoreError(
                f"{where} has no background for {', '.join(missing)}; build one from a run "
                "with that aggregation and statistic."
            )
        for k in keys:
            check_tracks(loaded[k], tracks, where)
    for t in tables:
        cols = _columns(t)
        if cols is not None:
            t.id_columns = _check_columns(t, cols, tracks)
    if not overwrite:
        _refuse_existing(out, plan)

    n_s = len(tracks)
    group_rows = parquet_group_rows(n_s, len(stats), memory_bytes)
    fixed = len(stats) * 3 * group_rows * n_s * 8 if fmt == "parquet" else 0
    biggest = max(t.rows for t in tables)
    if fmt in ("rds", "rdata"):
        fixed += len(stats) * biggest * n_s * 8  # the R writers hold their whole table
    if any(t.kind == "r" for t in tables):
        fixed += biggest * (n_s * 8 + 512)  # pyreadr reads a whole table
    if sources:
        levels = math.ceil(math.log2(max(2, max(t.rows for t in sources.values()) / DEFAULT_K)))
        fixed += (levels + 3) * DEFAULT_K * n_s * 8
    fixed += len(keys) * DEFAULT_GRID * n_s * 8 * 2
    rows = _block_rows(n_s, len(stats), fixed, memory_bytes)
    if block_rows is not None:
        rows = block_rows
    timings = {"validate": time.perf_counter() - started}

    excluded: dict[tuple[str, str], dict[str, int]] = {}
    if sources:
        for k, t in sources.items():
            loaded[k], excluded[k] = build_background(t, tracks, rows)
            if excluded[k]["all_zero"] or excluded[k]["non_finite"]:
                log.warning(
                    "background %s %s/%s: %d of %d rows left out (%d all exactly 0, %d with "
                    "NaN or infinite scores)",
                    background,
                    k[0],
                    k[1],
                    t.rows - loaded[k].n,
                    t.rows,
                    excluded[k]["all_zero"],
                    excluded[k]["non_finite"],
                )
    timings["background"] = time.perf_counter() - started - timings["validate"]

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(out):
            recover(out)
            sweep(out)
            if not overwrite:
                _refuse_existing(out, plan)
            info = {
                "run": str(run),
                "background": background,
                "background_file": str(background_file) if background_file else None,
                "saved_to": str(saved) if saved else None,
                "excluded": excluded,
                "fmt": fmt,
                "rows": rows,
                "budget": memory_bytes,
                "timings": timings,
                "started": started,
            }
            loaded = {k: loaded[k] for k in keys}
            _write(plan, tables, tracks, loaded, manifest, info, saved, out, group_rows)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return NormaliseResult([p for _, _, p in plan], out / MANIFEST, saved, loaded, excluded, rows)


def _refuse_existing(out: Path, plan: Sequence[tuple[Table, str, Path]]) -> None:
    existing = [p.name for _, _, p in plan if p.exists()]
    if (out / MANIFEST).exists():
        existing.append(MANIFEST)
    if existing:
        raise PerturbscoreError(
            f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them or "
            "choose another --out folder."
        )


def _write(
    plan: list[tuple[Table, str, Path]],
    tables: list[Table],
    tracks: list[str],
    backgrounds: dict[tuple[str, str], Background],
    manifest: dict[str, Any],
    info: dict[str, Any],
    saved: Path | None,
    out: Path,
    group_rows: int,
) -> None:
    """Every table to its temporary name, then one journalled commit with the manifest."""
    writers: list[TableWriter] = []
    staged = temp_path(saved) if saved is not None else None
    try:
        commit = Commit(out)
        for t in tables:
            bg = backgrounds[t.key]
            opened: list[tuple[str, TableWriter]] = []
            for scores, ids in blocks(t, tracks, info["rows"]):
                if not opened:  # the ID columns of an R table are known once it is read
                    for u, s, p in plan:
                        if u is t:
                            w = open_writer(
                                info["fmt"],
                                p,
                                tracks,
                                list(ids.columns),
                                p.stem,
                                expected_rows=t.rows,
                                group_rows=group_rows,
                            )
                            writers.append(w)
                            opened.append((s, w))
                for s, w in opened:
                    w.write(normalise(s, scores, bg), ids)
            for _, w in opened:
                w.finish()
                commit.add(w.tmp, w.path)
        info["timings"]["normalise"] = (
            time.perf_counter() - info["started"] - sum(info["timings"].values())
        )
        if staged is not None and saved is not None:
            # save_backgrounds writes atomically but never replaces: stage it in a
            # temporary folder (swept like any partial) and rename it after the commit.
            staged.mkdir()
            save_backgrounds(staged / saved.name, backgrounds.values())
        commit.run(
            out / MANIFEST, manifest_text(_manifest(plan, tracks, backgrounds, manifest, info))
        )
        if staged is not None and saved is not None:
            os.replace(staged / saved.name, saved)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        if staged is not None and staged.exists():
            for f in staged.iterdir():
                f.unlink()
            staged.rmdir()


def _manifest(
    plan: list[tuple[Table, str, Path]],
    tracks: list[str],
    backgrounds: dict[tuple[str, str], Background],
    run_manifest: dict[str, Any],
    info: dict[str, Any],
) -> dict[str, Any]:
    entries = []
    for k, b in backgrounds.items():
        e = b.describe()
        e["left_out"] = info["excluded"].get(k)
        entries.append(e)
    parameters = {
        "normalised": sorted({s for _, s, _ in plan}, key=NORMALISED.index),
        "run": info["run"],
        "background": {
            "source": "group" if info["background"] else "file",
            "group": info["background"],
            "file": info["background_file"],
            "saved_to": info["saved_to"],
            "rule": EXCLUSION_RULE if info["background"] else None,
            "entries": entries,
        },
        "quantile": "mid-rank (ties count half); signed statistics: sign(x) * q(|x|) among |b|",
        "robust_z": "(x - median) / (mad_scale * MAD)",
        "mad_scale": MAD_SCALE,
        "max_rank_error": max(b.max_rank_error for b in backgrounds.values()),
        "format": info["fmt"],
        "memory_budget_bytes": info["budget"],
        "chunk_rows": info["rows"],
        "run_parameters": run_manifest.get("parameters", {}),
    }
    tracks_part = run_manifest["tracks"]
    outputs = [
        {
            "group": t.group,
            "aggregation": t.aggregation,
            "statistic": f"{t.statistic}_{s}",
            "normalised": s,
            "raw_statistic": t.statistic,
            "path": p.name,
            "object": p.stem if info["fmt"] == "rdata" else None,
            "rows": t.rows,
            "columns": len(tracks) + len(t.id_columns or []),
        }
        for t, s, p in plan
    ]
    return build_manifest(
        source="normalise",
        run_file=None,
        parameters=parameters,
        targets=run_manifest.get("targets", {}),
        selection=tracks_part.get("selection", {}),
        tracks=pd.DataFrame(tracks_part["selected"]),
        inputs=[
            {
                "group": t.group,
                "aggregation": t.aggregation,
                "statistic": t.statistic,
                "path": str(t.path),
                "rows": t.rows,
            }
            for t in dict.fromkeys(t for t, _, _ in plan)
        ],
        outputs=outputs,
        warnings=list(run_manifest.get("warnings", [])),
        timings=info["timings"],
    )
