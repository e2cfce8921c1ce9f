"""Planning a run: a run file and options become a validated, typed :class:`Prepared`.

:func:`prepare` checks everything a run relies on before reading a single prediction
(options, files, shapes, dtypes, track table, selection, variant row counts, output
names, the memory budget) and returns what the engines execute: the picklable
:class:`~perturbscore.spans.SpanPlan`, the output tables, the variant ID tables and
the memory plan.  Nothing is written here.  The batches are opened and cross-checked
in :mod:`perturbscore.plan_batches`, the block size sized in
:mod:`perturbscore.plan_sizing`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import PerturbscoreError
from .frame import Columns
from .geometry_tables import ClassCounter
from .memory import MemoryPlan
from .messages import quote
from .normalise_inrun import RunNormaliser, prepare_normaliser
from .options import RunOptions, check_options
from .outputs_earlier import refuse_existing_outputs, uncache_replaced
from .plan_batches import BatchInput, group_sizes, open_batches
from .plan_sizing import memory_plan, reader_threads
from .resume import input_fingerprint
from .runfile import RunConfig
from .scoring import Aggregation, parse_aggregation
from .spans import SpanPlan
from .tracks import choose_tracks, target_columns
from .variants import check_ids_against_tracks
from .writers import FORMATS, check_format, table_group_rows

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
class Prepared:
    """A validated run, ready for an engine."""

    config: RunConfig
    opts: RunOptions
    fmt: str
    out: Path
    batches: list[BatchInput]
    outputs: list[OutputTable]
    tracks: Columns  # selected rows of the track table, in output order
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
        return list(self.tracks["identifier"].tolist())

    def rows_per_group(self) -> dict[str, int]:
        """Rows of each group's tables (prediction rows, less those ``drop`` leaves out)."""
        rows: dict[str, int] = {}
        for b in self.batches:
            keep = b.keep(self.opts.out_of_field)
            rows[b.group] = rows.get(b.group, 0) + (b.n_rows if keep is None else int(keep.sum()))
        return rows


def cube_name(group: str) -> str:
    """File name of a group's Zarr score cube."""
    return f"{group}_scores.zarr"


def _out_of_field_note(
    classes: dict[str, Any], policy: str, normalised: bool = False
) -> list[str]:
    """The warning that a run has variants the model never saw, with what was done
    (``normalised``: the run's ``[normalise]`` statistics are computed from them too)."""
    total = classes["total"]
    n_out, n = total["outside_input"], sum(total.values())
    if not n_out:
        return []
    done = {
        "keep": "kept as 0 (--out-of-field na writes NaN instead, drop leaves them out)",
        "na": "written as NaN (--out-of-field na)",
        "drop": "left out of the tables (--out-of-field drop)",
    }[policy]
    if normalised and policy == "keep":
        done += "; [normalise] gives those zeros a quantile and robust_z as if measured"
    per_group = ", ".join(f"{g} {c['outside_input']:,}" for g, c in classes["per_group"].items())
    return [
        f"{n_out:,} of {n:,} variants ({100 * n_out / n:.1f}%; {per_group}) lie outside the "
        "model's input: REF and ALT are identical there and every score is 0, meaning 'not "
        f"measured'; {done}"
    ]


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
    """Refuse to replace outputs without ``--overwrite``, and anything but an earlier
    run's outputs with it; with it, start dropping the outputs it replaces from the page
    cache (:func:`.outputs_earlier.uncache_replaced`)."""
    replaced = refuse_existing_outputs(
        prep.out,
        planned_paths(prep),
        prep.opts.overwrite,
        "run",
        "perturbscore run",
        "RunOptions(overwrite=True)",
    )
    uncache_replaced(replaced)  # only regular files; folders (Dask tables) are left alone


def input_files(config: RunConfig, batches: list[BatchInput]) -> list[Path]:
    """Every file or store the run reads (an archive once, not its members)."""
    files = [Path(config.targets)]
    if config.normalise is not None:
        files.append(config.normalise.background)
    if config.tracks.shortlist:
        files.append(Path(config.tracks.shortlist))
    for b in batches:
        files += [Path(p.split("::")[0]) for p in (b.spec.ref, b.spec.alt)] + [b.variants_path]
    return files


def refuse_inputs_as_outputs(prep: Prepared) -> None:
    """Refuse outputs named like one of the run's inputs: the commit would destroy it,
    even with ``--overwrite`` (which replaces earlier outputs, never inputs)."""
    files = input_files(prep.config, prep.batches)
    files += [Path(prep.config.source)] if prep.config.source is not None else []
    inputs = {p.resolve() for p in files}
    for out in planned_paths(prep):  # (names too long for a file: runfile refuses them)
        final = out.resolve()
        hit = next((i for i in inputs if i == final or final in i.parents), None)
        if hit is not None:
            raise PerturbscoreError(
                f"the output {out} would replace the run's input {hit}; name the tables "
                "otherwise ([output] name) or choose another --out folder."
            )


def fingerprint(
    config: RunConfig, fmt: str, opts: RunOptions, batches: list[BatchInput]
) -> dict[str, Any]:
    """What a resumed run must share with the recorded one (see :mod:`.resume`)."""
    settings = json.loads(json.dumps(asdict(replace(config, source=None)), default=str))
    seen: dict[str, dict[str, Any]] = {}
    for f in input_files(config, batches):
        seen.setdefault(str(f.resolve()), input_fingerprint(f))
    return {
        "run_file": str(config.source.resolve()) if config.source else None,
        "settings": settings,
        "inputs": list(seen.values()),
        "format": fmt,
        "nan_policy": opts.nan_policy,
        # How the tables are written from the blocks (resume.BLOCK_INDEPENDENT).
        "outputs": {"out_of_field": opts.out_of_field, "zarr": opts.zarr},
        "perturbscore_version": __version__,
    }


def _normaliser(config: RunConfig, track_names: list[str]) -> RunNormaliser | None:
    """``[normalise]``'s loaded backgrounds, checked against the aggregations and tracks."""
    if config.normalise is None:
        return None
    return prepare_normaliser(
        config.normalise,
        [a.strip().lower() for a in config.aggregations],
        config.statistics,
        track_names,
        f"{config.source or 'run file'} [normalise] background",
        config.pseudocount,
    )


def _check_fields(
    config: RunConfig,
    opts: RunOptions,
    counter: ClassCounter,
    warnings: list[str],
    id_cols: list[str],
    track_names: list[str],
) -> dict[str, Any] | None:
    """``--out-of-field`` against the geometry, the class counts (noted in ``warnings``)
    and ID columns against track names; returns the class counts (with geometry)."""
    if opts.out_of_field != "keep" and config.geometry is None:
        raise PerturbscoreError(
            f"--out-of-field {opts.out_of_field} needs the model's geometry: add [geometry] "
            'with model = "enformer" and [variants] with position = "..." to '
            f"{config.source or 'the run file'}."
        )
    classes = counter.describe() if config.geometry is not None else None
    if classes is not None:
        warnings += _out_of_field_note(
            classes, opts.out_of_field, normalised=config.normalise is not None
        )
    own = [c for c in id_cols if c != config.class_column]
    check_ids_against_tracks(own, track_names, config.source, config.id_columns)
    if config.class_column in set(track_names):
        raise PerturbscoreError(
            f"{config.source or 'run file'} [output] class_column: "
            f"{quote(config.class_column)} is also the identifier of a selected track, and a "
            'table cannot hold two columns of one name; name a new column, e.g. '
            'class_column = "field".'
        )
    return classes


def _aggregations(config: RunConfig, n_bins: int) -> list[Aggregation]:
    """The run file's aggregations for ``n_bins`` bins, each listed once."""
    aggs = [parse_aggregation(a, n_bins, config.center_bin) for a in config.aggregations]
    if len({a.spec for a in aggs}) != len(aggs):
        raise PerturbscoreError(
            f"aggregations repeat: {', '.join(config.aggregations)}; list each once."
        )
    return aggs


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
    table = target_columns(Path(config.targets))
    tracks = choose_tracks(table, config.tracks)
    track_idx = tracks["index"].astype(np.intp)
    columns = None if np.array_equal(track_idx, np.arange(len(table))) else track_idx
    track_names = list(tracks["identifier"].tolist())
    normaliser = _normaliser(config, track_names)  # before any prediction is opened
    log.info("%d of %d tracks selected from %s", len(tracks), len(table), config.targets)
    batches, id_cols, warnings, counter = open_batches(config, len(table))
    if normaliser is not None:
        warnings.extend(normaliser.warnings())
    classes = _check_fields(config, opts, counter, warnings, id_cols, track_names)
    aggs = _aggregations(config, batches[0].shape[1])
    if normaliser is not None:
        normaliser.check_bins(aggs)  # the bins the backgrounds were built from
    outputs = _plan_outputs(config, aggs, fmt, out)
    threads = reader_threads(opts.threads)
    group_rows = table_group_rows(len(tracks), max(group_sizes(batches).values()))
    plan = memory_plan(
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
    refuse_inputs_as_outputs(prep)
    return prep


__all__ = [
    "OutputTable",
    "Prepared",
    "prepare",
    "cube_name",
]
