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

    [normalise]                    # optional: add abs_diff_quantile, abs_diff_robust_z, ...
    background = "stab-background.npz"   # saved by perturbscore normalise --save-background
    statistics = ["quantile", "robust_z"]

    [[groups]]
    name = "stab"
    batches = [
      { ref = "ref_old.npy", alt = "alt_old.npy", variants = "variants_old.csv" },
      { ref = "ref_new.npy", alt = "alt_new.npy", variants = "variants_new.csv" },
    ]

Every key is described once, in :data:`SCHEMA`: its expected TOML type, how it is
checked, its default and an example.  The same table validates the file and words the
error messages (``stablefm.toml [scores] center_bin: expected an integer ≥ 0, got the
string "1"; write center_bin = 1``), and :func:`schema_table` renders it for the docs.
"""

from __future__ import annotations

import os
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PerturbscoreError
from .geometry_tables import GeometryConfig, parse_geometry_config
from .messages import describe_value, listing, quote
from .names import check_name, is_safe_name
from .normalise_inrun import NormaliseConfig
from .readers import NPZ_MEMBER_SEP
from .runfile_schema import DEFAULT_NAME, SCHEMA
from .runfile_sections import as_table, missing_key, read_section
from .runfile_values import Reject, check_template_text
from .tracks import TrackSelection, selection_from_options
from .variants import DEFAULT_ID_COLUMNS


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

    def __post_init__(self) -> None:
        # The name becomes part of file names (tables, cubes, figures): also for configs
        # built in Python rather than read from a run file.
        check_name(self.name, "group name")


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
    #: Model geometry and where the variants' positions are ([geometry], [variants]).
    geometry: GeometryConfig | None = None
    #: ID column that receives each variant's receptive-field class (needs geometry).
    class_column: str | None = None
    #: Background-normalised statistics added to the outputs ([normalise]).
    normalise: NormaliseConfig | None = None

    @property
    def output_statistics(self) -> tuple[str, ...]:
        """Statistics of the output tables: the raw ones, then the normalised ones."""
        extra = self.normalise.names(self.statistics) if self.normalise else ()
        return (*self.statistics, *extra)

    def table_name(self, group: str, aggregation: str, statistic: str) -> str:
        """File stem of one output table (no extension)."""
        return self.name.format(group=group, aggregation=aggregation, statistic=statistic)

    def object_name(self, group: str, aggregation: str, statistic: str) -> str:
        """Object name inside an RData file."""
        template = self.object or self.name
        return template.format(group=group, aggregation=aggregation, statistic=statistic)


def _resolve(base: Path, value: str) -> Path:
    # Keep an npz member suffix out of path resolution.
    file_part, sep, member = value.partition(NPZ_MEMBER_SEP)
    p = Path(file_part)
    p = p if p.is_absolute() else base / p
    return Path(f"{p}{sep}{member}") if sep else p


def _same_file_key(path: Path) -> str:
    """A comparable form of a (possibly ``::member``) path: absolute and normalised."""
    file_part, sep, member = str(path).partition(NPZ_MEMBER_SEP)
    return os.path.normpath(os.path.abspath(file_part)) + sep + member


def _check_batches(where: str, groups: list[tuple[str, list[Batch]]]) -> None:
    """Refuse REF = ALT and batches listed twice (their rows would be scored twice)."""
    seen: dict[tuple[str, ...], str] = {}
    for label, batches in groups:
        for number, batch in enumerate(batches, start=1):
            here = f"{label} batch {number}"
            ref, alt, variants = (_same_file_key(p) for p in (batch.ref, batch.alt, batch.variants))
            if ref == alt:
                raise PerturbscoreError(
                    f"{where} {here}: ref and alt are the same file {batch.ref}; alt must hold "
                    "the predictions for the ALT alleles, so this is probably a typo."
                )
            for kind, key, what in (
                ("pair", (ref, alt), f"ref {batch.ref} and alt {batch.alt}"),
                ("ref", (variants, ref), f"variants {batch.variants} and ref {batch.ref}"),
                ("alt", (variants, alt), f"variants {batch.variants} and alt {batch.alt}"),
            ):
                first = seen.get((kind, *key))
                if first is not None:
                    raise PerturbscoreError(
                        f"{where}: {here} repeats {first}, both with {what}; list each batch "
                        "once, or its rows are scored twice."
                    )
                seen[(kind, *key)] = here


#: Longest table name (template filled in) that still fits a file name of 255 bytes with
#: the longest extension (``.parquet``) and the temporary name written first,
#: ``.{name}.old.perturbscore-{pid}.partial`` (a pid has at most 7 digits on Linux).
MAX_TABLE_NAME = 255 - len(".") - len(".parquet") - len(".old.perturbscore-4194304.partial")


def _check_output_names(where: str, cfg: RunConfig) -> None:
    """Refuse a name template that would give several tables the same file, or a name
    too long for a file (the run would fail at its first write, after the work)."""
    longest = max(
        (
            cfg.table_name(g.name, a, st)
            for g in cfg.groups
            for a in cfg.aggregations
            for st in cfg.output_statistics
        ),
        key=lambda n: len(n.encode()),
    )
    if len(longest.encode()) > MAX_TABLE_NAME:
        raise PerturbscoreError(
            f"{where} [output] name: the template {quote(cfg.name, 40)} makes the table name "
            f"{quote(longest, 40)} of {len(longest.encode())} characters, but table names "
            f"may have at most {MAX_TABLE_NAME} (a file name holds 255 bytes, with the "
            "extension and the temporary name written first); shorten the template."
        )
    used = {f for _, f, _, _ in string.Formatter().parse(cfg.name) if f is not None}
    for fld, values in (
        ("group", [g.name for g in cfg.groups]),
        ("aggregation", list(cfg.aggregations)),
        ("statistic", list(cfg.output_statistics)),
    ):
        if len(values) > 1 and fld not in used:
            raise PerturbscoreError(
                f"{where} [output] name: the template {quote(cfg.name)} has no {{{fld}}} but "
                f"the run has {len(values)} ({listing(values)}), so their tables would share "
                f"one file; add {{{fld}}} to the name."
            )


def _read_batches(batches_raw: Any, base: Path, gw: str) -> list[Batch]:
    """A group's ``batches`` list, each batch checked and its paths resolved."""
    if (
        not isinstance(batches_raw, list)
        or not batches_raw
        or not all(isinstance(b, dict) for b in batches_raw)
    ):
        raise PerturbscoreError(
            f"{gw} batches: expected {SCHEMA['groups']['batches'].rule()}, got "
            f"{describe_value(batches_raw)}; write batches = "
            f"{SCHEMA['groups']['batches'].example}."
        )
    batches = []
    for bi, b in enumerate(batches_raw, start=1):
        bf = read_section(b, "batches", f"{gw} batch {bi}")
        batches.append(
            Batch(
                _resolve(base, bf["ref"]),
                _resolve(base, bf["alt"]),
                _resolve(base, bf["variants"]),
                format=bf["format"],
            )
        )
    return batches


def _read_groups(
    groups_raw: Any, base: Path, where: str
) -> tuple[list[tuple[str, list[Batch]]], list[str]]:
    """The ``[[groups]]`` tables: ``(label for messages, batches)`` per group, and names."""
    if (
        not isinstance(groups_raw, list)
        or not groups_raw
        or not all(isinstance(g, dict) for g in groups_raw)
    ):
        raise PerturbscoreError(
            f"{where}: groups must be one or more [[groups]] tables, got "
            f"{describe_value(groups_raw)}; write [[groups]] (double brackets) before each "
            'group\'s name = "..." and batches = [...].'
        )
    groups: list[tuple[str, list[Batch]]] = []
    names: list[str] = []
    first_seen: dict[str, int] = {}
    for gi, g in enumerate(groups_raw, start=1):
        label = f"group {gi}"
        name_value = g.get("name")
        if isinstance(name_value, str) and name_value:
            label += f" {quote(name_value)}"
        gw = f"{where} {label}"
        # The name's rule lives in names.check_name: one message for every command.
        if isinstance(name_value, str) and name_value and not is_safe_name(name_value):
            check_name(name_value, "group name", gw)
        fields = read_section(g, "groups", gw)
        name = fields["name"]
        if name in first_seen:
            raise PerturbscoreError(
                f"{gw}: the group name {quote(name)} is also group {first_seen[name]}'s; "
                "group names must be unique, since they name the output tables."
            )
        first_seen[name] = gi
        names.append(name)
        groups.append((label, _read_batches(fields["batches"], base, gw)))
    return groups, names


def _track_selection(tracks: dict[str, Any], base: Path, where: str) -> TrackSelection:
    """The ``[tracks]`` section as a selection (shortlist resolved against ``base``)."""
    try:
        return selection_from_options(
            shortlist=_resolve(base, tracks["shortlist"]) if tracks["shortlist"] else None,
            identifiers=tracks["identifiers"],
            indices=tracks["indices"],
            where=tracks["where"] or (),
            origin=f"{where} [tracks]",
        )
    except PerturbscoreError as exc:
        raise PerturbscoreError(f"{where} [tracks] where: {exc}") from None


def _check_class_column(where: str, cfg: RunConfig) -> None:
    """A class column needs a geometry and a name of its own."""
    if cfg.class_column and cfg.geometry is None:
        raise PerturbscoreError(
            f"{where} [output] class_column: a class needs the model's geometry; add "
            '[geometry] with model = "enformer" and [variants] with position = "..."'
        )
    ids = cfg.id_columns
    if cfg.class_column and isinstance(ids, tuple) and cfg.class_column in ids:
        raise PerturbscoreError(
            f"{where} [output] class_column: {quote(cfg.class_column)} is already an ID column; "
            'name a new column, e.g. class_column = "field".'
        )


def _normalise_section(raw: Any, base: Path, where: str) -> NormaliseConfig | None:
    """The ``[normalise]`` section: a saved background and the normalised statistics."""
    if raw is None:
        return None
    nf = read_section(as_table(raw, "normalise", where), "normalise", f"{where} [normalise]")
    return NormaliseConfig(base / nf["background"], tuple(nf["statistics"]))


def parse_run_config(data: dict[str, Any], base: Path, source: Path | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from parsed TOML; paths are resolved against ``base``.

    Every key is checked against :data:`SCHEMA` before anything else happens.

    Raises
    ------
    PerturbscoreError
        Unknown or missing keys, values of the wrong type or content, unsafe or repeated
        group names, a batch listed twice, REF equal to ALT, or a name template that would
        give several tables one file.  The message names the file, the key and the fix.
    """
    where = str(source or "run file")
    top = read_section(data, "", where, required=False)
    tracks = read_section(as_table(top["tracks"], "tracks", where), "tracks", f"{where} [tracks]")
    scores = read_section(as_table(top["scores"], "scores", where), "scores", f"{where} [scores]")
    output = read_section(as_table(top["output"], "output", where), "output", f"{where} [output]")
    norm = _normalise_section(top["normalise"], base, where)
    for name, key in SCHEMA[""].items():
        if key.required and name not in data:
            raise missing_key(where, name, key)
    groups, names = _read_groups(top["groups"], base, where)
    _check_batches(where, groups)
    selection = _track_selection(tracks, base, where)
    cfg = RunConfig(
        targets=_resolve(base, top["targets"]),
        groups=tuple(Group(n, tuple(bs)) for n, (_, bs) in zip(names, groups, strict=True)),
        tracks=selection,
        aggregations=tuple(scores["aggregations"]),
        statistics=tuple(scores["statistics"]),
        center_bin=scores["center_bin"],
        pseudocount=scores["pseudocount"],
        id_columns=output["id_columns"],
        format=output["format"],
        name=output["name"],
        object=output["object"],
        source=source,
        geometry=parse_geometry_config(data, where),
        class_column=output["class_column"],
        normalise=norm,
    )
    _check_class_column(where, cfg)
    _check_output_names(where, cfg)
    return cfg


def check_template(template: str, what: str) -> None:
    """Reject templates naming fields other than group, aggregation and statistic."""
    try:
        check_template_text(template, file_name=False)
    except Reject as exc:
        raise PerturbscoreError(f"{what} template {quote(template)}: {exc.detail}.") from None


def load_run_file(path: str | Path) -> RunConfig:
    """Read and validate a TOML run file; relative paths are relative to its folder."""
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: run file not found. Check the path.")
    try:
        # utf-8-sig: Notepad and Excel start UTF-8 files with a byte-order mark, which
        # TOML does not allow; it carries no meaning, so it is dropped.
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PerturbscoreError(
            f"{p}: not a UTF-8 text file; save the run file as UTF-8 TOML."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PerturbscoreError(f"{p}: not valid TOML ({exc}).") from exc
    return parse_run_config(data, p.parent, source=p)
