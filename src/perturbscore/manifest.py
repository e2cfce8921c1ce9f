"""``manifest.json``: one schema for every command that writes score tables.

``perturbscore run`` and ``perturbscore import-scores`` both describe their tables with
:func:`build_manifest`, so ``compare`` and ``report`` read either the same way.  Keys:

``perturbscore_version``, ``created`` (UTC), ``source`` (``"run"`` or ``"calico
scores"``), ``run_file``
``parameters``
    what was computed (aggregations with their bins, statistics, centre bin,
    pseudocount, format, memory budget and block size, ...)
``targets``
    the track table: path, bytes, rows
``tracks``
    ``selection`` (as given), ``count`` and ``selected``: per selected track, in column
    order, ``index``, ``identifier``, ``description`` and the parsed ``assay``,
    ``target`` and ``biosample`` (so readers need not parse descriptions again)
``inputs``
    per batch (or scores file): group, paths, shapes, dtypes, variant rows
``outputs``
    per table: group, aggregation, statistic, file name (``path``), RData ``object``,
    ``rows``, ``columns``
``zarr_cubes``, ``timings_s``, ``warnings``
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .frame import Columns, as_columns

if TYPE_CHECKING:
    import pandas as pd

    from .engine import RunResult
    from .plan import Prepared

TRACK_FIELDS = ("index", "identifier", "description", "assay", "target", "biosample")


def track_records(tracks: Columns | pd.DataFrame) -> list[dict[str, Any]]:
    """The ``tracks.selected`` records of a manifest (Python values, JSON-ready)."""
    table = as_columns(tracks)
    return table.records([c for c in TRACK_FIELDS if c in table.columns])


def file_facts(path: Path) -> dict[str, Any]:
    """Path and size of an input file."""
    return {"path": str(path), "bytes": path.stat().st_size}


def build_manifest(
    *,
    source: str,
    run_file: Path | None,
    parameters: dict[str, Any],
    targets: dict[str, Any],
    selection: dict[str, Any],
    tracks: Columns | pd.DataFrame,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    warnings: list[str],
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest dict in the shared schema (see the module docstring)."""
    manifest: dict[str, Any] = {
        "perturbscore_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "run_file": str(run_file) if run_file else None,
        "parameters": parameters,
        "targets": targets,
        "tracks": {"selection": selection, "count": len(tracks), "selected": track_records(tracks)},
        "inputs": inputs,
        "outputs": outputs,
        "zarr_cubes": [],
        "timings_s": {k: round(v, 4) for k, v in (timings or {}).items()},
        "warnings": list(warnings),
    }
    manifest.update(extra or {})
    return manifest


def manifest_text(manifest: dict[str, Any]) -> str:
    """The manifest as written: indented JSON with numpy scalars as numbers."""
    return json.dumps(manifest, indent=2, default=_json_default) + "\n"


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_manifest(prep: Prepared, result: RunResult) -> dict[str, Any]:
    """The manifest of a finished run (schema: :mod:`perturbscore.manifest`)."""
    from .plan import cube_name

    config, opts, plan = prep.config, prep.opts, prep.plan
    parameters = {
        "aggregations": [
            {"spec": a.spec, "bins": [a.start, a.stop], "reduce": "mean" if a.mean else "sum"}
            for a in prep.aggs
        ],
        "statistics": list(config.statistics),
        "center_bin": config.center_bin,
        "pseudocount": config.pseudocount,
        "nan_policy": opts.nan_policy,
        "format": prep.fmt,
        "id_columns": config.id_columns
        if isinstance(config.id_columns, str)
        else list(config.id_columns),
        "engine": opts.engine,
        "memory_budget_bytes": plan.budget,
        "chunk_rows": plan.chunk_rows,
        "estimated_peak_bytes": plan.estimated_bytes,
    }
    inputs = [
        {
            "group": b.group,
            "batch": b.number,
            "ref": b.ref_facts,
            "alt": b.alt_facts,
            "variants": {**file_facts(b.variants_path), "rows": len(b.ids)},
        }
        for b in prep.batches
    ]
    outputs = [
        {
            "group": o.group,
            "aggregation": o.aggregation.spec,
            "statistic": o.statistic,
            "path": o.path.name,
            "object": o.object_name if prep.fmt == "rdata" else None,
            "rows": o.rows,
            "columns": len(prep.tracks) + len(prep.id_cols),
        }
        for o in prep.outputs
    ]
    return build_manifest(
        source="run",
        run_file=config.source,
        parameters=parameters,
        targets={**file_facts(Path(config.targets)), "rows": prep.table_rows},
        selection=config.tracks.describe(),
        tracks=prep.tracks,
        inputs=inputs,
        outputs=outputs,
        warnings=result.warnings,
        timings=result.timings,
        extra={
            "zarr_cubes": [cube_name(g.name) for g in config.groups] if opts.zarr else [],
            "geometry": None
            if config.geometry is None
            else {
                **config.geometry.describe(),
                "classes": prep.classes,
                "out_of_field": opts.out_of_field,
                "class_column": config.class_column,
            },
            "integrity": result.integrity,
            "normalise": prep.normaliser.describe() if prep.normaliser else None,
            # What the inputs and options were (sizes, mtimes, chunk files): a repeated
            # --resume of a finished run knows it is the same run.
            "fingerprint": prep.fingerprint,
        },
    )
