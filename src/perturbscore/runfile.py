"""Run files: a TOML description of groups, batches, tracks, scores and outputs.

Example (paths are relative to the run file)::

    targets = "targets_human.txt"

    [tracks]                       # optional; default: every track
    shortlist = "basenji_relevant_metadata.csv"   # and/or identifiers, indices, where

    [scores]
    aggregations = ["ave", "tss"]  # tss, ave, window:K, sum
    statistics = ["abs_diff"]      # abs_diff, diff, log2fc
    # center_bin = 447             # required for tss/window with an even number of bins
    # pseudocount = 1.0            # for log2fc

    [output]
    format = "parquet"             # parquet, csv, rds, rdata
    name = "{group}_{statistic}_{aggregation}"
    object = "{group}_{statistic}_{aggregation}"   # object name inside RData files
    id_columns = ["GENE", "rsID", "REF", "ALT"]    # or "all"

    [[groups]]
    name = "stab"
    batches = [
      { ref = "ref_old.npy", alt = "alt_old.npy", variants = "variants_old.csv" },
      { ref = "ref_new.npy", alt = "alt_new.npy", variants = "variants_new.csv" },
    ]
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PerturbscoreError
from .readers import NPZ_MEMBER_SEP
from .scoring import check_statistics
from .tracks import TrackSelection, selection_from_options
from .variants import DEFAULT_ID_COLUMNS
from .writers import check_format

TEMPLATE_FIELDS = {"group", "aggregation", "statistic"}
DEFAULT_NAME = "{group}_{statistic}_{aggregation}"


@dataclass(frozen=True)
class Batch:
    """One REF/ALT pair and its variant table; rows line up by position."""

    ref: Path
    alt: Path
    variants: Path
    format: str | None = None  # of ref/alt when their names do not tell it


@dataclass(frozen=True)
class Group:
    """A named, ordered list of batches whose rows are stacked into one table."""

    name: str
    batches: tuple[Batch, ...]


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; build it with :func:`load_run_file` or directly."""

    targets: Path
    groups: tuple[Group, ...]
    tracks: TrackSelection = field(default_factory=TrackSelection)
    aggregations: tuple[str, ...] = ("ave", "tss")
    statistics: tuple[str, ...] = ("abs_diff",)
    center_bin: int | None = None
    pseudocount: float = 1.0
    id_columns: tuple[str, ...] | str = DEFAULT_ID_COLUMNS
    format: str = "parquet"
    name: str = DEFAULT_NAME
    object: str | None = None
    source: Path | None = None

    def table_name(self, group: str, aggregation: str, statistic: str) -> str:
        """File stem of one output table (no extension)."""
        return self.name.format(group=group, aggregation=aggregation, statistic=statistic)

    def object_name(self, group: str, aggregation: str, statistic: str) -> str:
        """Object name inside an RData file."""
        template = self.object or self.name
        return template.format(group=group, aggregation=aggregation, statistic=statistic)


def check_template(template: str, what: str) -> None:
    """Reject templates naming fields other than group, aggregation and statistic."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise PerturbscoreError(f"{what} template {template!r}: {exc}") from exc
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise PerturbscoreError(
            f"{what} template {template!r} uses {sorted(unknown)}; only {{group}}, "
            "{aggregation} and {statistic} are filled in."
        )


def _expect(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise PerturbscoreError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}."
        )


def _resolve(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise PerturbscoreError(f"{where}: expected a path string, got {value!r}.")
    # Keep an npz member suffix out of path resolution.
    file_part, sep, member = value.partition(NPZ_MEMBER_SEP)
    p = Path(file_part)
    p = p if p.is_absolute() else base / p
    return Path(f"{p}{sep}{member}") if sep else p


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PerturbscoreError(f"{where}: expected a list of strings, got {value!r}.")
    return tuple(value)


def parse_run_config(data: dict[str, Any], base: Path, source: Path | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from parsed TOML; paths are resolved against ``base``."""
    where = str(source or "run file")
    # [geometry] and [variants] are read by geometry.parse_geometry_config (check command).
    _expect(
        data, {"targets", "tracks", "scores", "output", "groups", "geometry", "variants"}, where
    )
    if "targets" not in data:
        raise PerturbscoreError(f"{where}: 'targets' (the track table path) is required.")
    targets = _resolve(base, data["targets"], f"{where}: targets")

    tracks = data.get("tracks", {})
    _expect(tracks, {"shortlist", "identifiers", "indices", "where"}, f"{where} [tracks]")
    selection = selection_from_options(
        shortlist=_resolve(base, tracks["shortlist"], f"{where} [tracks] shortlist")
        if "shortlist" in tracks
        else None,
        identifiers=_str_list(tracks["identifiers"], f"{where} [tracks] identifiers")
        if "identifiers" in tracks
        else None,
        indices=tracks.get("indices"),
        where=_str_list(tracks.get("where", []), f"{where} [tracks] where"),
    )

    scores = data.get("scores", {})
    _expect(
        scores, {"aggregations", "statistics", "center_bin", "pseudocount"}, f"{where} [scores]"
    )
    output = data.get("output", {})
    _expect(output, {"format", "name", "object", "id_columns"}, f"{where} [output]")
    id_columns: tuple[str, ...] | str = DEFAULT_ID_COLUMNS
    if "id_columns" in output:
        raw = output["id_columns"]
        id_columns = "all" if raw == "all" else _str_list(raw, f"{where} [output] id_columns")

    groups_raw = data.get("groups")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise PerturbscoreError(
            f"{where}: at least one [[groups]] entry with a name and batches is required."
        )
    groups: list[Group] = []
    for gi, g in enumerate(groups_raw, start=1):
        gw = f"{where} group {gi}"
        _expect(g, {"name", "batches"}, gw)
        name = g.get("name")
        if not isinstance(name, str) or not name:
            raise PerturbscoreError(f"{gw}: 'name' is required.")
        batches_raw = g.get("batches")
        if not isinstance(batches_raw, list) or not batches_raw:
            raise PerturbscoreError(f"{gw} ({name}): 'batches' must list at least one batch.")
        batches = []
        for bi, b in enumerate(batches_raw, start=1):
            bw = f"{gw} ({name}) batch {bi}"
            _expect(b, {"ref", "alt", "variants", "format"}, bw)
            missing = {"ref", "alt", "variants"} - set(b)
            if missing:
                raise PerturbscoreError(f"{bw}: missing {sorted(missing)}.")
            ref, alt, variants = (
                _resolve(base, b[k], f"{bw} {k}") for k in ("ref", "alt", "variants")
            )
            batches.append(Batch(ref, alt, variants, format=b.get("format")))
        groups.append(Group(name, tuple(batches)))
    if len({g.name for g in groups}) != len(groups):
        raise PerturbscoreError(f"{where}: group names must be unique.")

    cfg = RunConfig(
        targets=targets,
        groups=tuple(groups),
        tracks=selection,
        aggregations=_str_list(scores.get("aggregations", ["ave", "tss"]), f"{where} aggregations"),
        statistics=tuple(
            check_statistics(
                _str_list(scores.get("statistics", ["abs_diff"]), f"{where} statistics")
            )
        ),
        center_bin=scores.get("center_bin"),
        pseudocount=float(scores.get("pseudocount", 1.0)),
        id_columns=id_columns,
        format=check_format(output.get("format", "parquet")),
        name=output.get("name", DEFAULT_NAME),
        object=output.get("object"),
        source=source,
    )
    check_template(cfg.name, "output name")
    if cfg.object:
        check_template(cfg.object, "object name")
    return cfg


def load_run_file(path: str | Path) -> RunConfig:
    """Read and validate a TOML run file; relative paths are relative to its folder."""
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: run file not found. Check the path.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PerturbscoreError(f"{p}: not valid TOML ({exc}).") from exc
    return parse_run_config(data, p.parent, source=p)
