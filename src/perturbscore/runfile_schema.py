"""The run-file schema: every key once, with its type, check, default and example.

:data:`SCHEMA` validates run files (:mod:`perturbscore.runfile`) and words their error
messages; :func:`schema_table` renders it for the docs.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import readers
from .messages import listing, quote, toml_value
from .names import is_safe_name
from .scoring import STATISTICS
from .variants import DEFAULT_ID_COLUMNS
from .writers import FORMATS as OUTPUT_FORMATS

TEMPLATE_FIELDS = {"group", "aggregation", "statistic"}
DEFAULT_NAME = "{group}_{statistic}_{aggregation}"
_AGGREGATION = re.compile(r"(tss|ave|sum|window:\d+)")


class Reject(Exception):
    """A value of the wrong type or content; ``guess`` is TOML text the user likely meant."""

    def __init__(self, guess: str | None = None, detail: str | None = None) -> None:
        super().__init__(detail or "")
        self.guess = guess
        self.detail = detail


@dataclass(frozen=True)
class Key:
    """One run-file key: what it must be, how it is checked, its default and an example.

    Attributes
    ----------
    expected : str or callable
        The rule for people (``"an integer ≥ 0"``); used in messages and the docs.  A
        callable is asked at message time (the list of prediction formats can grow).
    check : callable
        ``check(value) -> value`` returns the checked (normalised) value or raises
        :class:`Reject`.
    example : str
        A valid value in TOML syntax, offered as the fix when no better guess exists.
    default : object
        The value when the key is absent (ignored when ``required``).
    required : bool
        Whether the key must be present.
    """

    expected: str | Callable[[], str]
    check: Callable[[Any], Any]
    example: str
    default: Any = None
    required: bool = False

    def rule(self) -> str:
        """The expected value in words (computed now when it depends on other modules)."""
        return self.expected if isinstance(self.expected, str) else self.expected()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_guess(v: Any) -> str | None:
    """TOML text of the integer ≥ 0 that ``v`` (a string or whole float) spells, if any."""
    if isinstance(v, str) and v.strip().isdigit():
        return str(int(v.strip()))
    if isinstance(v, float) and v.is_integer() and v >= 0:
        return str(int(v))
    return None


def _check_int(v: Any) -> int:
    if not _is_int(v) or v < 0:
        raise Reject(_int_guess(v))
    return int(v)


def _check_number(v: Any) -> float:
    if _is_number(v) and math.isfinite(v) and v >= 0:
        return float(v)
    guess = None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f >= 0:
            guess = repr(f)
    raise Reject(guess)


def _check_path(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Reject()
    return v


def _strings(v: Any) -> tuple[str, ...]:
    """A string or a non-empty list of non-empty strings, as a tuple."""
    if isinstance(v, str) and v.strip():
        return (v,)
    if isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v):
        return tuple(v)
    guess = None
    if isinstance(v, list) and v and all(_is_number(s) for s in v):
        guess = toml_value([str(s) for s in v])
    raise Reject(guess)


def _no_repeats(values: tuple[str, ...], norm: Callable[[str], str] = str) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for value in values:
        key = norm(value)
        if key in seen:
            unique = list({norm(v): v for v in reversed(values)}.values())[::-1]
            raise Reject(toml_value(unique), detail=f"{quote(value)} is listed twice")
        seen[key] = value
    return values


def _check_identifiers(v: Any) -> tuple[str, ...]:
    return _no_repeats(_strings(v))


def _check_indices(v: Any) -> tuple[int, ...]:
    if isinstance(v, list) and v and all(_is_int(i) and i >= 0 for i in v):
        return tuple(int(i) for i in v)
    guess = None
    if _is_int(v) and v >= 0:
        guess = f"[{v}]"
    elif isinstance(v, list) and v:
        fixed = [_int_guess(i) if not _is_int(i) else str(i) for i in v]
        if all(f is not None for f in fixed):
            guess = "[" + ", ".join(str(f) for f in fixed) + "]"
    raise Reject(guess)


def _check_aggregations(v: Any) -> tuple[str, ...]:
    values = _strings(v)
    for a in values:
        if not _AGGREGATION.fullmatch(a.strip().lower()):
            raise Reject(detail=f"{quote(a)} is not one of tss, ave, sum or window:K")
    return _no_repeats(values, lambda a: a.strip().lower())


def _check_statistics(v: Any) -> tuple[str, ...]:
    values = _strings(v)
    for s in values:
        if s not in STATISTICS:
            raise Reject(detail=f"{quote(s)} is not one of {listing(STATISTICS)}")
    return _no_repeats(values)


def _check_background(v: Any) -> str:
    path = _check_path(v)
    if not path.lower().endswith(".npz"):
        raise Reject(detail=f"{quote(path)} does not end in .npz")
    return path


def _check_normalised(v: Any) -> tuple[str, ...]:
    values = _strings(v)
    for s in values:
        if s not in ("quantile", "robust_z"):
            raise Reject(detail=f"{quote(s)} is not one of quantile or robust_z")
    return _no_repeats(values)


def _choice(options: Callable[[], Any]) -> Callable[[Any], str]:
    # ``options`` is called at check time: readers.FORMATS may be extended after import.
    def check(v: Any) -> str:
        allowed = [str(o) for o in options()]
        if isinstance(v, str) and v.strip().lower() in allowed:
            return v.strip().lower()
        raise Reject()

    return check


def _template_fields(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as exc:
        raise Reject(detail=f"it is not a valid template ({exc})") from None


def check_template_text(v: Any, file_name: bool) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Reject()
    for literal, name, spec, conversion in _template_fields(v):
        if name is not None:
            if name not in TEMPLATE_FIELDS:
                raise Reject(
                    detail=f"it names {{{name}}}; only {{group}}, {{aggregation}} and "
                    "{statistic} are filled in"
                )
            if spec or conversion:
                raise Reject(detail=f"{{{name}}} carries a format or conversion; write {{{name}}}")
        # Filled-in fields are safe names; the text around them must be too, or a
        # template such as "../{group}" would write outside the output folder.
        if file_name and literal and not re.fullmatch(r"[A-Za-z0-9_-]+", literal):
            raise Reject(
                detail=f"its text {quote(literal)} may hold only letters, digits, '_' and '-', "
                "since it becomes a file name"
            )
    return v


def _check_id_columns(v: Any) -> tuple[str, ...] | str:
    if v == "all":
        return "all"
    return _no_repeats(_strings(v))


def _check_group_name(v: Any) -> str:
    # The content rule (names.check_name) is applied before, with its own message.
    if not isinstance(v, str) or not is_safe_name(v):
        raise Reject(toml_value(str(v)) if _is_int(v) else None)
    return v


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "targets": Key(
            "a path string to the model's track table",
            _check_path,
            '"targets_human.txt"',
            required=True,
        ),
        "tracks": Key("a table [tracks]", lambda v: v, "[tracks]", default={}),
        "scores": Key("a table [scores]", lambda v: v, "[scores]", default={}),
        "output": Key("a table [output]", lambda v: v, "[output]", default={}),
        # Read by geometry_tables.parse_geometry_config (receptive-field classes).
        "geometry": Key(
            'a table [geometry] with model = "enformer" or "borzoi" (or a custom geometry)',
            lambda v: v,
            '[geometry] with model = "enformer"',
        ),
        "variants": Key(
            "a table [variants] naming the position column(s) of the variant tables",
            lambda v: v,
            '[variants] with position = "variant_pos_in_window"',
        ),
        "normalise": Key(
            'a table [normalise] with background = "FILE.npz"',
            lambda v: v,
            '[normalise] with background = "stab-background.npz"',
        ),
        "groups": Key(
            "one or more [[groups]] tables",
            lambda v: v,
            '[[groups]] with name = "stab" and batches = [...]',
            required=True,
        ),
        # Read and checked by perturbscore predict (predict_config); run leaves it alone.
        "predict": Key(
            "a table [predict] of perturbscore predict's options",
            lambda v: v,
            '[predict] with variants = "variants.csv"',
        ),
    },
    "tracks": {
        "shortlist": Key(
            "a path string to a CSV with an index column",
            _check_path,
            '"basenji_relevant_metadata.csv"',
        ),
        "identifiers": Key(
            "a non-empty list of distinct track identifier strings",
            _check_identifiers,
            '["ENCFF093VXI"]',
        ),
        "indices": Key(
            "a non-empty list of 0-based track numbers, integers ≥ 0",
            _check_indices,
            "[12, 69]",
        ),
        "where": Key(
            "a non-empty list of queries field=value, field==value or field~regex",
            _strings,
            '["biosample=GM12878"]',
        ),
    },
    "scores": {
        "aggregations": Key(
            "one aggregation or a non-empty list of distinct ones: tss, ave, sum or window:K",
            _check_aggregations,
            '["ave", "tss"]',
            default=("ave", "tss"),
        ),
        "statistics": Key(
            f"one statistic or a non-empty list of distinct ones: {listing(STATISTICS)}",
            _check_statistics,
            '["abs_diff"]',
            default=("abs_diff",),
        ),
        "center_bin": Key("an integer ≥ 0 naming a bin", _check_int, "447", default=None),
        "pseudocount": Key("a number ≥ 0", _check_number, "1.0", default=1.0),
    },
    "output": {
        "format": Key(
            f"one of {listing(OUTPUT_FORMATS, quoted=True)}",
            _choice(lambda: OUTPUT_FORMATS),
            '"parquet"',
            default="parquet",
        ),
        "name": Key(
            "a file-name template of letters, digits, '_', '-' and {group}, {aggregation}, "
            "{statistic}",
            lambda v: check_template_text(v, file_name=True),
            '"{group}_{statistic}_{aggregation}"',
            default=DEFAULT_NAME,
        ),
        "object": Key(
            "a template using {group}, {aggregation} and {statistic}",
            lambda v: check_template_text(v, file_name=False),
            '"{group}_{statistic}_{aggregation}"',
            default=None,
        ),
        "id_columns": Key(
            'a non-empty list of distinct column names, or "all"',
            _check_id_columns,
            '["GENE", "rsID", "REF", "ALT"]',
            default=DEFAULT_ID_COLUMNS,
        ),
        "class_column": Key(
            "a column name for each variant's receptive-field class (needs [geometry])",
            _check_path,
            '"field"',
            default=None,
        ),
    },
    "normalise": {
        "background": Key(
            "a path string to a background file (.npz) saved by perturbscore normalise",
            _check_background,
            '"stab-background.npz"',
            required=True,
        ),
        "statistics": Key(
            "one normalised statistic or a non-empty list of distinct ones: quantile, robust_z",
            _check_normalised,
            '["quantile", "robust_z"]',
            default=("quantile", "robust_z"),
        ),
    },
    "groups": {
        "name": Key(
            "a name of at most 64 letters, digits, '_' and '-', starting with a letter or digit",
            _check_group_name,
            '"stab"',
            required=True,
        ),
        "batches": Key(
            "a non-empty list of tables { ref = ..., alt = ..., variants = ... }",
            lambda v: v,
            '[{ ref = "ref.npy", alt = "alt.npy", variants = "variants.csv" }]',
            required=True,
        ),
    },
    "batches": {
        "ref": Key("a path string to the REF predictions", _check_path, '"ref.npy"', required=True),
        "alt": Key("a path string to the ALT predictions", _check_path, '"alt.npy"', required=True),
        "variants": Key(
            "a path string to the variant table", _check_path, '"variants.csv"', required=True
        ),
        "format": Key(
            lambda: f"a prediction format, one of {listing(readers.FORMATS, quoted=True)}",
            _choice(lambda: readers.FORMATS),
            '"npy"',
            default=None,
        ),
    },
}


def schema_table() -> str:
    """The run-file keys as a Markdown table (section, key, expected, default)."""
    rows = ["| section | key | expected | default |", "| --- | --- | --- | --- |"]
    labels = {"": "(top)", "groups": "[[groups]]", "batches": "batches = [{...}]"}
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            default = (
                "required"
                if key.required
                else (
                    "none" if key.default is None or key.default == {} else toml_value(key.default)
                )
            )
            label = labels.get(section, f"[{section}]")
            rows.append(f"| {label} | `{name}` | {key.rule()} | {default} |")
    return "\n".join(rows)
