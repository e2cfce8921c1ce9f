"""Opening and cross-checking a run's batches (before any prediction is scored).

:func:`open_batches` opens every batch's REF and ALT predictions (``# N B T``:
variants, bins, tracks), checks that they agree with each other, with the track
table and with the first batch's bins, reads each distinct variant table once
(one row per prediction row, in order) and, with ``[geometry]``, places each row in
its receptive-field class.  Each batch becomes a :class:`BatchInput`, with the
picklable :class:`~perturbscore.spans.BatchSpec` the engines read it by.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PerturbscoreError
from .frame import Columns
from .geometry import OUTSIDE_INPUT, Placement
from .geometry_tables import ClassCounter, place_table
from .integrity_keys import id_keys
from .messages import closest, count, listing, quote
from .readers import missing_prediction_files, open_predictions
from .runfile import Batch, RunConfig
from .spans import BatchSpec
from .variants import duplicate_report, id_columns_of, read_variant_columns


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
    ids: Columns  # the ID columns written with the scores (and the class column)
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


def group_sizes(batches: list[BatchInput]) -> dict[str, int]:
    """Prediction rows per group (an upper bound of its tables' rows)."""
    sizes: dict[str, int] = {}
    for b in batches:
        sizes[b.group] = sizes.get(b.group, 0) + b.n_rows
    return sizes


def _absolute(path: Path | str) -> str:
    """An absolute path (keeping a ``::member`` suffix): workers elsewhere must find it."""
    text = str(path)
    file_part, sep, member = text.partition("::")
    return os.path.abspath(file_part) + (sep + member if sep else "")


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape)


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
    ids: Columns,
    table_ids: Columns,
    placed: dict[Path, Placement],
    counter: ClassCounter,
) -> tuple[Columns, np.ndarray]:
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
        table_ids = table_ids.with_column(config.class_column, where.labels)
    return table_ids, classes


def _refuse_class_column_clash(config: RunConfig, table: Path, ids: Columns) -> None:
    """The class column is a new column: not one of the variant table's own."""
    name = config.class_column
    if name and name in ids.attrs.get("header", list(ids.columns)):
        raise PerturbscoreError(
            f"{config.source or 'run file'} [output] class_column: {table} has a column "
            f"{quote(name)} already, and a table cannot hold two columns of one name; name "
            'a new column, e.g. class_column = "field".'
        )


def _refuse_missing_tables(config: RunConfig) -> None:
    """A variant table that is not there: named with its batch, and the near miss."""
    missing = [
        (g.name, n, b.variants)
        for g in config.groups
        for n, b in enumerate(g.batches, start=1)
        if not b.variants.is_file()
    ]
    if not missing:
        return
    group, number, path = missing[0]
    folder = path.parent
    near = closest(path.name, [f.name for f in folder.iterdir()]) if folder.is_dir() else None
    hint = f" (did you mean {folder / near}?)" if near else ""
    rest = count(len(missing) - 1, "other batch", "other batches")
    more = f"; the variant tables of {rest} are missing too" if len(missing) > 1 else ""
    raise PerturbscoreError(
        f"{config.source or 'run file'} group {group} batch {number}: variants {path} not "
        f"found{hint}{more}. Check the paths (relative to the run file)."
    )


def _refuse_missing_files(config: RunConfig) -> None:
    """Every missing prediction file in one message (not only the first batch's)."""
    missing = missing_prediction_files(
        p for g in config.groups for b in g.batches for p in (b.ref, b.alt)
    )
    if len(missing) > 1:  # one alone is named by its reader, with the batch
        raise PerturbscoreError(
            f"{config.source or 'run file'}: {len(missing)} prediction files not found: "
            f"{listing(map(str, missing), 4)}. Check the paths (relative to the run file), "
            "or run where the predictions are."
        )


def open_batches(
    config: RunConfig, n_tracks: int
) -> tuple[list[BatchInput], list[str], list[str], ClassCounter]:
    """Open and cross-check every batch; returns batches, ID columns, warnings, classes."""
    batches: list[BatchInput] = []
    warnings: list[str] = []
    id_cols: list[str] | None = None
    geo = config.geometry
    counter = ClassCounter()
    placed: dict[Path, Placement] = {}
    keys_of: dict[Path, list[str]] = {}  # ID keys of each variant table
    first_bins: list[tuple[int, str]] = []  # (bins, REF path) of the first batch
    _refuse_missing_files(config)
    _refuse_missing_tables(config)
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
            _refuse_class_column_clash(config, batch.variants, ids)
            if id_cols is None:
                id_cols = cols
            elif cols != id_cols:
                raise PerturbscoreError(
                    f"{batch.variants}: ID columns {', '.join(cols)} differ from the first "
                    f"batch's {', '.join(id_cols)}; tables of a run share their columns. Name "
                    "id_columns in the run file's [output] section."
                )
            if batch.variants not in keys_of:  # a table used by several batches: once
                keys_of[batch.variants] = id_keys(ids, cols)
            keys = keys_of[batch.variants]
            for w in duplicate_report(ids, cols, str(batch.variants), keys):
                if w not in warnings:  # one file used by several batches: said once
                    warnings.append(w)
            table_ids, classes = ids.pick(cols), None
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
                    keys,
                )
            )
    assert id_cols is not None  # a run file always has a batch
    if config.class_column:
        id_cols = [*id_cols, config.class_column]
    return batches, id_cols, warnings, counter


def _read_tables(config: RunConfig) -> dict[Path, Columns]:
    """Every distinct variant table of the run, in run-file order, read once.

    Only the ID columns and the position columns are read (a missing position column
    is reported by the geometry, naming ``[variants]``).  Reading them in parallel
    threads was measured no faster: the csv module holds the GIL while it parses.
    """
    wanted = None if isinstance(config.id_columns, str) else list(config.id_columns)
    optional = config.geometry.position.columns if config.geometry is not None else ()
    paths = dict.fromkeys(b.variants for g in config.groups for b in g.batches)
    return {p: read_variant_columns(p, wanted, optional) for p in paths}
