"""Planning a run: a run file and options become a validated, typed :class:`Prepared`.

:func:`prepare` checks everything a run relies on before reading a single prediction
(options, files, shapes, dtypes, track table, selection, variant row counts, output
names, the memory budget) and returns what the engines execute: the picklable
:class:`~perturbscore.spans.SpanPlan`, the output tables, the variant ID tables and
the memory plan.  Nothing is written here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .errors import PerturbscoreError
from .geometry import OUTSIDE_INPUT, Placement
from .geometry_tables import ClassCounter, place_table
from .integrity_keys import id_keys
from .memory import MemoryPlan, plan_memory
from .normalise_inrun import RunNormaliser, prepare_normaliser
from .options import RunOptions, check_options
from .readers import SCRATCH_BYTES, open_predictions
from .resume import input_fingerprint
from .runfile import Batch, RunConfig
from .scoring import Aggregation, parse_aggregation
from .spans import BatchSpec, SpanPlan
from .tracks import read_targets, select_tracks
from .variants import duplicate_report, id_columns_of, read_variants
from .writers import (
    FORMATS,
    check_format,
    footer_bytes,
    holds_in_memory,
    table_group_rows,
    writer_bytes,
)

log = logging.getLogger("perturbscore")

MANIFEST = "manifest.json"


@dataclass
class OutputTable:
    """One planned output table."""

    group: str
    aggregation: Aggregation
    statistic: str
    path: Path
    object_name: str
    rows: int = 0


@dataclass
class BatchInput:
    """One batch as checked: what its readers reported and its variant ID rows."""

    group: str
    number: int
    spec: BatchSpec
    ref_facts: dict[str, Any]
    alt_facts: dict[str, Any]
    shape: tuple[int, int, int]
    itemsize: int  # the larger of REF's and ALT's
    variants_path: Path
    ids: pd.DataFrame  # the ID columns written with the scores (and the class column)
    classes: np.ndarray | None = None  # receptive-field class per row (int8), with geometry
    keys: Any = field(default_factory=list)  # ID key per row (# n), for integrity checks

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def keep(self, policy: str) -> np.ndarray | None:
        """Rows written under ``--out-of-field`` (None: all of them)."""
        if policy != "drop" or self.classes is None:
            return None
        return np.asarray(self.classes != OUTSIDE_INPUT)


@dataclass
class Prepared:
    """A validated run, ready for an engine."""

    config: RunConfig
    opts: RunOptions
    fmt: str
    out: Path
    batches: list[BatchInput]
    outputs: list[OutputTable]
    tracks: pd.DataFrame  # selected rows of the track table, in output order
    table_rows: int  # rows of the whole track table
    id_cols: list[str]
    aggs: list[Aggregation]
    plan: MemoryPlan
    span_plan: SpanPlan
    fingerprint: dict[str, Any]
    reader_threads: int
    group_rows: int  # Parquet rows per row group
    warnings: list[str] = field(default_factory=list)
    classes: dict[str, Any] | None = None  # geometry_tables.ClassCounter.describe(), with geometry
    normaliser: RunNormaliser | None = None  # [normalise]: its loaded backgrounds

    @property
    def track_names(self) -> list[str]:
        return list(self.tracks["identifier"])

    def rows_per_group(self) -> dict[str, int]:
        """Rows of each group's tables (prediction rows, less those ``drop`` leaves out)."""
        rows: dict[str, int] = {}
        for b in self.batches:
            keep = b.keep(self.opts.out_of_field)
            rows[b.group] = rows.get(b.group, 0) + (b.n_rows if keep is None else int(keep.sum()))
        return rows


def _group_sizes(batches: list[BatchInput]) -> dict[str, int]:
    """Prediction rows per group (an upper bound of its tables' rows)."""
    sizes: dict[str, int] = {}
    for b in batches:
        sizes[b.group] = sizes.get(b.group, 0) + b.n_rows
    return sizes


def cube_name(group: str) -> str:
    """File name of a group's Zarr score cube."""
    return f"{group}_scores.zarr"


def _absolute(path: Path | str) -> str:
    """An absolute path (keeping a ``::member`` suffix): workers elsewhere must find it."""
    text = str(path)
    file_part, sep, member = text.partition("::")
    return os.path.abspath(file_part) + (sep + member if sep else "")


def _check_pair(
    config: RunConfig,
    group: str,
    number: int,
    batch: Batch,
    n_tracks: int,
    warnings: list[str],
    first_bins: list[tuple[int, str]],
) -> tuple[tuple[dict[str, Any], dict[str, Any]], tuple[int, int, int], int, int]:
    """Open one batch's REF and ALT and check their shapes; returns facts, shape, itemsize, N.

    ``warnings`` collects the readers' warnings (each once); ``first_bins`` holds the
    first batch's bins and REF path, appended by the first call.
    """
    with contextlib.ExitStack() as stack:
        ref = stack.enter_context(open_predictions(batch.ref, batch.format))
        alt = stack.enter_context(open_predictions(batch.alt, batch.format))
        for w in (*ref.warnings, *alt.warnings):
            if w not in warnings:
                warnings.append(w)
        if ref.shape != alt.shape:
            raise PerturbscoreError(
                f"group {group} batch {number}: REF {ref.path} has shape "
                f"{_shape(ref.shape)} but ALT {alt.path} has shape {_shape(alt.shape)}; "
                "they must be predictions for the same variants, bins and tracks."
            )
        if ref.shape[2] != n_tracks:
            raise PerturbscoreError(
                f"{ref.path}: {ref.shape[2]} tracks, but the track table "
                f"{config.targets} has {n_tracks} rows; use the targets file of the "
                "model that made the predictions."
            )
        if not first_bins:
            first_bins.append((ref.shape[1], ref.path))
        elif ref.shape[1] != first_bins[0][0]:
            n_bins, first_bins_path = first_bins[0]
            raise PerturbscoreError(
                f"{ref.path}: {ref.shape[1]} bins, but {first_bins_path} has {n_bins}; "
                "all batches of a run must share the bins axis."
            )
        facts = (ref.describe(), alt.describe())
        shape, itemsize = ref.shape, max(ref.dtype.itemsize, alt.dtype.itemsize)
        n_pred = ref.n_rows
    return facts, shape, itemsize, n_pred


def _place_batch(
    config: RunConfig,
    group: str,
    number: int,
    batch: Batch,
    ids: pd.DataFrame,
    table_ids: pd.DataFrame,
    placed: dict[Path, Placement],
    counter: ClassCounter,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Receptive-field classes of one batch's rows (counted); adds the class column."""
    assert config.geometry is not None
    if batch.variants not in placed:
        placed[batch.variants] = place_table(ids, config.geometry, str(batch.variants))
    where = placed[batch.variants]
    classes = where.cls
    counter.add(
        group,
        number,
        str(batch.variants),
        classes,
        int(where.outside_window.sum()),
    )
    if config.class_column:
        table_ids = table_ids.assign(**{config.class_column: where.labels})
    return table_ids, classes


def _open_batches(
    config: RunConfig, n_tracks: int
) -> tuple[list[BatchInput], list[str], list[str], ClassCounter]:
    """Open and cross-check every batch; returns batches, ID columns, warnings, classes."""
    batches: list[BatchInput] = []
    warnings: list[str] = []
    id_cols: list[str] | None = None
    geo = config.geometry
    counter = ClassCounter()
    placed: dict[Path, Placement] = {}
    first_bins: list[tuple[int, str]] = []  # (bins, REF path) of the first batch
    tables = _read_tables(config)
    for group in config.groups:
        for number, batch in enumerate(group.batches, start=1):
            facts, shape, itemsize, n_pred = _check_pair(
                config, group.name, number, batch, n_tracks, warnings, first_bins
            )
            ids = tables[batch.variants]
            if len(ids) != n_pred:
                raise PerturbscoreError(
                    f"{batch.variants}: {len(ids)} variant rows, but {batch.ref} has {n_pred} "
                    "prediction rows; the table must have one row per prediction row, in order."
                )
            cols = id_columns_of(ids, config.id_columns, str(batch.variants))
            if id_cols is None:
                id_cols = cols
            elif cols != id_cols:
                raise PerturbscoreError(
                    f"{batch.variants}: ID columns {', '.join(cols)} differ from the first "
                    f"batch's {', '.join(id_cols)}; tables of a run share their columns. Name "
                    "id_columns in the run file's [output] section."
                )
            for w in duplicate_report(ids, cols, str(batch.variants)):
                if w not in warnings:  # one file used by several batches: said once
                    warnings.append(w)
            table_ids, classes = ids[cols], None
            if geo is not None:
                table_ids, classes = _place_batch(
                    config, group.name, number, batch, ids, table_ids, placed, counter
                )
            spec = BatchSpec(
                group.name,
                number,
                _absolute(batch.ref),
                _absolute(batch.alt),
                batch.format,
                shape[0],
            )
            batches.append(
                BatchInput(
                    group.name,
                    number,
                    spec,
                    facts[0],
                    facts[1],
                    shape,
                    itemsize,
                    batch.variants,
                    table_ids,
                    classes,
                    id_keys(ids, cols),
                )
            )
    assert id_cols is not None  # a run file always has a batch
    if config.class_column:
        id_cols = [*id_cols, config.class_column]
    return batches, id_cols, warnings, counter


def _read_tables(config: RunConfig) -> dict[Path, pd.DataFrame]:
    """Every distinct variant table of the run, in run-file order, read once.

    Only the ID columns and the position columns are read (a missing position column
    is reported by the geometry, naming ``[variants]``).  Reading them in parallel
    threads was measured no faster: pandas holds the GIL while it builds the columns.
    """
    wanted = None if isinstance(config.id_columns, str) else list(config.id_columns)
    optional = config.geometry.position.columns if config.geometry is not None else ()
    paths = dict.fromkeys(b.variants for g in config.groups for b in g.batches)
    return {p: read_variants(p, wanted, optional) for p in paths}


def _out_of_field_note(classes: dict[str, Any], policy: str) -> list[str]:
    """The warning that a run has variants the model never saw, with what was done."""
    total = classes["total"]
    n_out, n = total["outside_input"], sum(total.values())
    if not n_out:
        return []
    done = {
        "keep": "kept as 0 (--out-of-field na writes NaN instead, drop leaves them out)",
        "na": "written as NaN (--out-of-field na)",
        "drop": "left out of the tables (--out-of-field drop)",
    }[policy]
    per_group = ", ".join(f"{g} {c['outside_input']:,}" for g, c in classes["per_group"].items())
    return [
        f"{n_out:,} of {n:,} variants ({100 * n_out / n:.1f}%; {per_group}) lie outside the "
        "model's input: REF and ALT are identical there and every score is 0, meaning 'not "
        f"measured'; {done}"
    ]


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


def _plan_outputs(
    config: RunConfig, aggs: list[Aggregation], fmt: str, out_dir: Path
) -> list[OutputTable]:
    outputs: list[OutputTable] = []
    for group in config.groups:
        for agg in aggs:
            for stat in config.output_statistics:
                stem = config.table_name(group.name, agg.label, stat)
                outputs.append(
                    OutputTable(
                        group.name,
                        agg,
                        stat,
                        out_dir / (stem + FORMATS[fmt]),
                        config.object_name(group.name, agg.label, stat),
                    )
                )
    names = [o.path.name for o in outputs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise PerturbscoreError(
            f"the output name template {config.name} gives several tables the same file "
            f"({', '.join(clash[:3])}); include {{group}}, {{aggregation}} and {{statistic}} "
            "as needed."
        )
    for o in outputs:
        if Path(o.path.name).name != o.path.name or o.path.name.startswith("."):
            raise PerturbscoreError(
                f"output name {o.path.name} would leave the output folder or be hidden; "
                "choose another output name template."
            )
    return outputs


def planned_paths(prep: Prepared) -> list[Path]:
    """Every path the run publishes under its final name."""
    paths = [o.path for o in prep.outputs] + [prep.out / MANIFEST]
    if prep.opts.zarr:
        paths += [prep.out / cube_name(g.name) for g in prep.config.groups]
    return paths


def check_existing(prep: Prepared) -> None:
    """Refuse to replace outputs without ``--overwrite``."""
    if prep.opts.overwrite:
        return
    existing = [p.name for p in planned_paths(prep) if p.exists() or p.is_symlink()]
    if existing:
        more = f" and {len(existing) - 4} more" if len(existing) > 4 else ""
        raise PerturbscoreError(
            f"{prep.out} already holds {', '.join(existing[:4])}{more}; pass --overwrite to "
            "replace them or choose another --out folder."
        )


def fingerprint(
    config: RunConfig, fmt: str, opts: RunOptions, batches: list[BatchInput]
) -> dict[str, Any]:
    """What a resumed run must share with the recorded one (see :mod:`.resume`)."""
    settings = json.loads(json.dumps(asdict(replace(config, source=None)), default=str))
    files = [Path(config.targets)]
    if config.normalise is not None:
        files.append(config.normalise.background)
    if config.tracks.shortlist:
        files.append(Path(config.tracks.shortlist))
    for b in batches:
        files += [Path(p.split("::")[0]) for p in (b.spec.ref, b.spec.alt)] + [b.variants_path]
    seen: dict[str, dict[str, Any]] = {}
    for f in files:
        seen.setdefault(str(f.resolve()), input_fingerprint(f))
    return {
        "run_file": str(config.source.resolve()) if config.source else None,
        "settings": settings,
        "inputs": list(seen.values()),
        "format": fmt,
        "nan_policy": opts.nan_policy,
        "perturbscore_version": __version__,
    }


def reader_threads(requested: int | None) -> int:
    """Threads that read and score blocks for ``--threads N``: ``N - 1`` (one writes).

    The default gives every core a reading and scoring thread: the writing thread
    mostly waits for them (measured: 1.9 s against 2.8 s with one reader fewer on 2
    cores at the study's size).
    """
    threads = requested or (os.cpu_count() or 1) + 1
    return threads - 1


def _memory_plan(
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
    most = max(_group_sizes(batches).values())
    n_ids = len(batches[0].ids.columns)
    return plan_memory(
        budget=opts.memory_bytes,
        n_bins=n_bins,
        n_tracks=n_tracks,
        n_selected=n_selected,
        itemsize=itemsize,
        n_aggregations=len(aggs),
        n_outputs_per_group=per_group,
        in_memory_rows=sum(b.n_rows for b in batches) if holds_in_memory(fmt) else 0,
        resident_bytes=held_bytes + sum(int(b.ids.memory_usage(deep=True).sum()) for b in batches),
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


def prepare(config: RunConfig, out_dir: str | Path, opts: RunOptions) -> Prepared:
    """Validate a run and plan it (see the module docstring).

    Raises
    ------
    PerturbscoreError
        Any problem a user can fix; nothing has been written.
    """
    fmt = check_format(opts.format or config.format)
    out = Path(out_dir)
    check_options(opts, fmt, out)
    table = read_targets(config.targets)
    tracks = select_tracks(table, config.tracks)
    track_idx = tracks["index"].to_numpy(dtype=np.intp)
    columns = None if np.array_equal(track_idx, np.arange(len(table))) else track_idx
    track_names = list(tracks["identifier"])
    normaliser = None
    if config.normalise is not None:  # before any prediction is opened (same specs as aggs)
        normaliser = prepare_normaliser(
            config.normalise,
            [a.strip().lower() for a in config.aggregations],
            config.statistics,
            track_names,
            f"{config.source or 'run file'} [normalise] background",
        )
    log.info("%d of %d tracks selected from %s", len(tracks), len(table), config.targets)
    batches, id_cols, warnings, counter = _open_batches(config, len(table))
    if opts.out_of_field != "keep" and config.geometry is None:
        raise PerturbscoreError(
            f"--out-of-field {opts.out_of_field} needs the model's geometry: add [geometry] "
            'with model = "enformer" and [variants] with position = "..." to the run file.'
        )
    classes = counter.describe() if config.geometry is not None else None
    if classes is not None:
        warnings += _out_of_field_note(classes, opts.out_of_field)
    clash = sorted(set(id_cols) & set(track_names))
    if clash:
        raise PerturbscoreError(
            f"ID columns {', '.join(clash)} have the same names as selected tracks; choose "
            "other id_columns."
        )
    n_bins = batches[0].shape[1]
    aggs = [parse_aggregation(a, n_bins, config.center_bin) for a in config.aggregations]
    if len({a.spec for a in aggs}) != len(aggs):
        raise PerturbscoreError(
            f"aggregations repeat: {', '.join(config.aggregations)}; list each once."
        )
    outputs = _plan_outputs(config, aggs, fmt, out)
    threads = reader_threads(opts.threads)
    group_rows = table_group_rows(len(tracks), max(_group_sizes(batches).values()))
    plan = _memory_plan(
        opts,
        fmt,
        batches,
        len(table),
        len(tracks),
        aggs,
        outputs,
        group_rows,
        normaliser.nbytes if normaliser else 0,
    )
    log.info("%s", plan.describe())
    span_plan = SpanPlan(
        tuple(b.spec for b in batches),
        columns,
        tuple(aggs),
        tuple(config.statistics),
        config.pseudocount,
        plan.scratch_bytes,
        normaliser,
    )
    prep = Prepared(
        config,
        opts,
        fmt,
        out,
        batches,
        outputs,
        tracks,
        len(table),
        id_cols,
        aggs,
        plan,
        span_plan,
        fingerprint(config, fmt, opts, batches),
        threads,
        group_rows,
        warnings,
        classes,
        normaliser,
    )
    return prep


__all__ = [
    "RunOptions",
    "OutputTable",
    "BatchInput",
    "Prepared",
    "prepare",
    "cube_name",
    "SCRATCH_BYTES",
]
