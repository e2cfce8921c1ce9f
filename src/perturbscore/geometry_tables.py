"""The run file's geometry settings, and the geometry of variant tables.

``[geometry]`` names the model's geometry (a preset or a custom one) and ``[variants]``
the columns that give each variant's position; :func:`parse_geometry_config` reads both
into a :class:`GeometryConfig`.  :func:`place_table` turns a variant table's position
columns into offsets and :func:`.geometry.place` classes (arrays ``# n``, one entry per
table row, 1-based table lines in messages: the header is line 1), and
:class:`ClassCounter` adds the classes up per table and group for the manifest.  The
position convention is stated once, in :mod:`.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PerturbscoreError
from .frame import Columns
from .geometry import (
    CLASS_LABELS,
    PRESETS,
    Geometry,
    Placement,
    class_counts,
    offsets_from_centre,
    offsets_from_start,
    place,
)
from .messages import closest, count, describe_value, listing, quote
from .runfile_sections import refuse_unknown_keys

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class PositionSpec:
    """Which variant-table columns give a variant's offset.

    Exactly one of: ``position`` alone is the offset column (e.g.
    ``variant_pos_in_window``); ``position`` + ``window_start``; ``position`` +
    ``window_centre``.
    """

    position: str
    window_start: str | None = None
    window_centre: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns to read from each variant table."""
        extra = self.window_start or self.window_centre
        return (self.position, extra) if extra else (self.position,)

    def describe(self) -> dict[str, str | None]:
        """Recorded in the manifest under ``geometry.position``."""
        return {
            "position": self.position,
            "window_start": self.window_start,
            "window_centre": self.window_centre,
        }


@dataclass(frozen=True)
class GeometryConfig:
    """The run file's ``[geometry]`` and ``[variants]`` position settings."""

    geometry: Geometry
    position: PositionSpec

    def describe(self) -> dict[str, Any]:
        """Manifest facts: the geometry plus the position columns."""
        return {**self.geometry.describe(), "position": self.position.describe()}


GEOMETRY_KEYS = {"model", "window", "input", "bins", "bin_size", "centre_bin", "center_bin"}
POSITION_KEYS = {"position", "window_start", "window_centre", "window_center"}


def _example(value: object) -> str:
    """A TOML integer for a mistyped value: ``"393216"`` -> ``393216``, else a placeholder."""
    text = str(value).strip().replace("_", "").replace(",", "")
    return text if text.isdigit() else "<integer>"


def _int(table: Mapping[str, Any], key: str, where: str) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        unit = "bins" if key in ("bins", "centre_bin", "center_bin") else "bp"
        raise PerturbscoreError(
            f"{where} {key}: expected a whole number of {unit}, got {describe_value(value)}; "
            f"write {key} = {_example(value)} (no quotes)."
        )
    return value


def parse_geometry_section(table: Mapping[str, Any], where: str = "run file") -> Geometry:
    """Build a :class:`Geometry` from a parsed ``[geometry]`` table.

    ``model = "enformer"`` or ``"borzoi"`` takes a preset (``centre_bin`` may choose the
    other convention); ``model = "custom"`` (or no model) needs ``window``, ``input``,
    ``bins`` and ``bin_size`` (``centre_bin`` defaults to ``bins // 2``).  A preset with
    any of those keys is refused, so a custom geometry is never mistaken for a preset.
    """
    w = f"{where} [geometry]"
    refuse_unknown_keys(
        table, sorted(GEOMETRY_KEYS), w, shown=sorted(GEOMETRY_KEYS - {"center_bin"})
    )
    if "centre_bin" in table and "center_bin" in table:
        raise PerturbscoreError(f"{w}: give centre_bin or center_bin, not both.")
    centre_key = "centre_bin" if "centre_bin" in table else "center_bin"
    centre = _int(table, centre_key, w) if centre_key in table else None
    model = table.get("model", "custom")
    sizes = {"window", "input", "bins", "bin_size"}
    if not isinstance(model, str):
        raise PerturbscoreError(f"{w}: model must be a name (enformer, borzoi or custom).")
    model = model.strip().lower()
    if model in PRESETS:
        given = sorted(sizes & set(table))
        if given:
            raise PerturbscoreError(
                f"{w}: model {quote(model)} is a preset; remove {', '.join(given)} or set "
                'model = "custom".'
            )
        preset = PRESETS[model]
        return preset if centre is None else _built(lambda: preset.with_centre_bin(centre), w)
    if model != "custom":
        raise PerturbscoreError(
            f"{w}: unknown model {quote(model)}; use enformer, borzoi or custom (with window, "
            "input, bins and bin_size)."
        )
    missing = sorted(sizes - set(table))
    if missing:
        raise PerturbscoreError(f"{w}: a custom geometry needs {', '.join(missing)} (in bp/bins).")
    bins = _int(table, "bins", w)
    return _built(
        lambda: Geometry(
            "custom",
            window=_int(table, "window", w),
            input=_int(table, "input", w),
            bins=bins,
            bin_size=_int(table, "bin_size", w),
            centre_bin=bins // 2 if centre is None else centre,
            source="run file",
        ),
        w,
    )


def _built(make: Callable[[], Geometry], where: str) -> Geometry:
    """Build a geometry, naming the run-file section in its error."""
    try:
        return make()
    except PerturbscoreError as exc:
        if str(exc).startswith(where):
            raise  # already names the section (and the key)
        raise PerturbscoreError(f"{where}: {str(exc).split(': ', 1)[-1]}") from exc


def parse_position_section(table: Mapping[str, Any], where: str = "run file") -> PositionSpec:
    """Build a :class:`PositionSpec` from the position keys of a ``[variants]`` table.

    Keys other than the position ones are ignored here (``[variants]`` may hold other
    settings); ``position`` is required.
    """
    w = f"{where} [variants]"
    keys = {k: table[k] for k in POSITION_KEYS if k in table}
    for k, v in keys.items():
        if not isinstance(v, str) or not v:
            raise PerturbscoreError(f"{w}: {k} must name a column of the variant tables.")
    if "position" not in keys:
        raise PerturbscoreError(
            f"{w}: position must name the variant column with the position (e.g. "
            '"variant_pos_in_window", or "PHYSICAL" with window_start = "enformer_start").'
        )
    if "window_centre" in keys and "window_center" in keys:
        raise PerturbscoreError(f"{w}: give window_centre or window_center, not both.")
    centre = keys.get("window_centre", keys.get("window_center"))
    if centre and "window_start" in keys:
        raise PerturbscoreError(
            f"{w}: give window_start or window_centre, not both; one fixes the window."
        )
    return PositionSpec(keys["position"], keys.get("window_start"), centre)


def parse_geometry_config(
    data: Mapping[str, Any], where: str = "run file"
) -> GeometryConfig | None:
    """Read ``[geometry]`` and ``[variants]`` from a parsed run file (``tomllib`` dict).

    Returns None when the run file has neither (no geometry: no classes).  Either one
    without the other is a user error.
    """
    geo = data.get("geometry")
    var = data.get("variants")
    has_pos = isinstance(var, Mapping) and any(k in var for k in POSITION_KEYS)
    if geo is None and not has_pos:
        return None
    if geo is not None and not isinstance(geo, Mapping):
        raise PerturbscoreError(f"{where}: geometry must be a table ([geometry]).")
    if geo is None:
        raise PerturbscoreError(
            f"{where}: [variants] names a position column but there is no [geometry]; add "
            '[geometry] with model = "enformer" (or borzoi, or a custom geometry).'
        )
    if not has_pos:
        raise PerturbscoreError(
            f"{where}: [geometry] needs the variants' positions: add [variants] with position "
            '= "variant_pos_in_window" (or position + window_start / window_centre).'
        )
    assert isinstance(var, Mapping)
    return GeometryConfig(parse_geometry_section(geo, where), parse_position_section(var, where))


def _plain(text: Any) -> bool:
    """Not text that Python's ``int``/``float`` read but pandas refuses: ``1_000`` (digits
    grouped by ``_``) or digits other than ASCII (``\u0661\u0662``, full-width ``\uff11``)."""
    return not isinstance(text, str) or (text.isascii() and "_" not in text)


def _whole_number(text: Any) -> float:
    """A table cell as a whole number, NaN when it is not one (``12``, ``12.0``, ``1e3``)."""
    if not _plain(text):
        return math.nan
    try:
        x = float(text)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) and x == math.floor(x) else math.nan


def _integer_column(df: Columns | pd.DataFrame, column: str, where: str) -> np.ndarray:
    if column not in df.columns:
        # The table's whole header (read_variants reads only the columns it needs).
        header = [str(c) for c in df.attrs.get("header", df.columns)]
        near = closest(column, header)
        hint = f" (did you mean {quote(near)}?)" if near else ""
        raise PerturbscoreError(
            f"{where}: no column {quote(column)} for the variant positions; its columns are "
            f"{listing(header, 20)}{hint}. Fix [variants] in the run file."
        )
    cells = np.asarray(df[column], dtype=object)
    try:
        plain = _plain("".join(cells.tolist()))  # one check of the whole column's text
    except TypeError:  # not all text (a DataFrame's numbers)
        plain = all(map(_plain, cells.tolist()))
    if plain:
        try:
            return cells.astype(np.int64)  # the usual table: integers written as such
        except (TypeError, ValueError, OverflowError):
            pass
    values = np.fromiter(map(_whole_number, cells.tolist()), np.float64, len(cells))
    bad = np.isnan(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PerturbscoreError(
            f"{where}: column {quote(column)} must hold whole numbers; line {i + 2} has "
            f"{quote(cells[i])} ({count(int(bad.sum()), 'such row')})."
        )
    return values.astype(np.int64)


def offsets_of_table(
    df: Columns | pd.DataFrame, spec: PositionSpec, geometry: Geometry, where: str = "variant table"
) -> np.ndarray:
    """Offsets (``# n`` int64) of a variant table's rows, from the columns ``spec`` names.

    Columns may be text (perturbscore reads variant tables as text); line numbers in
    errors are 1-based table lines (the header is line 1).
    """
    pos = _integer_column(df, spec.position, where)
    if spec.window_start:
        return offsets_from_start(pos, _integer_column(df, spec.window_start, where))
    if spec.window_centre:
        return offsets_from_centre(pos, _integer_column(df, spec.window_centre, where), geometry)
    return pos


def place_table(
    df: Columns | pd.DataFrame, config: GeometryConfig, where: str = "variant table"
) -> Placement:
    """:func:`.geometry.place` applied to a variant table's position columns.

    Raises
    ------
    PerturbscoreError
        A row whose offset falls outside ``[0, window)``: the variant is not in the
        sequence the model read, so the position or window column (or its convention)
        is wrong.  Taken as "outside the input" it would pass for a variant the model
        could not see, and ``--out-of-field na``/``drop`` would discard its real scores.
    """
    placed = place(offsets_of_table(df, config.position, config.geometry, where), config.geometry)
    bad = np.flatnonzero(placed.outside_window)
    if bad.size:
        first = int(bad[0])
        spec = config.position
        if spec.window_start or spec.window_centre:
            how = (
                f"the offset is {spec.position} - {spec.window_start}"
                if spec.window_start
                else f"the offset is {spec.position} - {spec.window_centre} + "
                f"{config.geometry.centre_offset:,}"
            ) + " (both in the same coordinates)"
        else:
            how = f"{spec.position} must be the 0-based offset in the window"
        raise PerturbscoreError(
            f"{where}: {bad.size:,} of {len(df):,} rows place the variant outside the "
            f"{config.geometry.window:,}-bp window (line {first + 2}: offset "
            f"{int(placed.offset[first]):,}), i.e. not in the sequence the model read; "
            f"the run file's [variants] columns or their convention are wrong: {how}."
        )
    return placed


@dataclass
class ClassCounter:
    """Class counts per table, group and in all, for the manifest's ``geometry.classes``.

    Call :meth:`add` once per batch (or per block: counts add up).
    """

    _tables: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def add(
        self, group: str, batch: int, table: str, cls: np.ndarray, outside_window: int = 0
    ) -> None:
        """Add the classes (``# n``) of rows of one batch's variant table."""
        entry = self._tables.setdefault(
            (group, batch),
            {
                "group": group,
                "batch": batch,
                "table": table,
                "rows": 0,
                "counts": dict.fromkeys(CLASS_LABELS, 0),
                "outside_window": 0,
            },
        )
        for label, n in class_counts(cls).items():
            entry["counts"][label] += n
        entry["rows"] += int(np.asarray(cls).size)
        entry["outside_window"] += int(outside_window)

    def describe(self) -> dict[str, Any]:
        """``{"labels", "per_table", "per_group", "total"}``, JSON-able."""
        per_group: dict[str, dict[str, int]] = {}
        total = dict.fromkeys(CLASS_LABELS, 0)
        for e in self._tables.values():
            g = per_group.setdefault(e["group"], dict.fromkeys(CLASS_LABELS, 0))
            for label in CLASS_LABELS:
                g[label] += e["counts"][label]
                total[label] += e["counts"][label]
        return {
            "labels": list(CLASS_LABELS),
            "per_table": [dict(e, counts=dict(e["counts"])) for e in self._tables.values()],
            "per_group": per_group,
            "total": total,
        }


def format_classes(classes: Mapping[str, Any]) -> str:
    """Short text of a ``geometry.classes`` dict: one line per table, then the total."""
    labels: Sequence[str] = classes.get("labels", CLASS_LABELS)
    tables = classes.get("per_table", [])
    names = [f"{e['group']}/{e['batch']} {_basename(e['table'])}" for e in tables]
    width = max([len(n) for n in names] + [len("all tables")])
    head = f"{'table':<{width}} {'rows':>7} " + " ".join(f"{lab:>13}" for lab in labels)
    lines = [head]

    def row(name: str, counts: Mapping[str, int]) -> str:
        n = sum(counts.values())
        cells = " ".join(
            f"{counts[lab]:>7} {100 * counts[lab] / n if n else 0:>4.1f}%" for lab in labels
        )
        return f"{name:<{width}} {n:>7} {cells}"

    for name, e in zip(names, tables, strict=True):
        lines.append(row(name, e["counts"]))
        if e.get("outside_window"):
            lines.append(
                f"  {count(e['outside_window'], 'row lies', 'rows lie')} outside the window itself"
            )
    if len(tables) > 1:
        lines.append(row("all tables", classes["total"]))
    return "\n".join(lines)


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]
