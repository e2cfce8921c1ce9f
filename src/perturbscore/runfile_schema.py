"""The run-file schema: every key once, with its type, check, default and example.

:data:`SCHEMA` validates run files (:mod:`perturbscore.runfile`) and words their error
messages; :func:`schema_table` renders it for the docs.  The checks of single values
live in :mod:`perturbscore.runfile_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import readers
from .messages import listing, toml_value
from .runfile_values import (
    check_aggregations,
    check_background,
    check_group_name,
    check_id_columns,
    check_identifiers,
    check_indices,
    check_int,
    check_normalised,
    check_number,
    check_path,
    check_statistics,
    check_template_text,
    choice,
    strings,
)
from .scoring import STATISTICS
from .variants import DEFAULT_ID_COLUMNS
from .writers import FORMATS as OUTPUT_FORMATS

DEFAULT_NAME = "{group}_{statistic}_{aggregation}"


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
        :class:`~perturbscore.runfile_values.Reject`.
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


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "targets": Key(
            "a path string to the model's track table",
            check_path,
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
            check_path,
            '"basenji_relevant_metadata.csv"',
        ),
        "identifiers": Key(
            "a non-empty list of distinct track identifier strings",
            check_identifiers,
            '["ENCFF093VXI"]',
        ),
        "indices": Key(
            "a non-empty list of 0-based track numbers, integers ≥ 0",
            check_indices,
            "[12, 69]",
        ),
        "where": Key(
            "a non-empty list of queries field=value, field==value or field~regex, each with a "
            "value",
            strings,
            '["biosample=GM12878"]',
        ),
    },
    "scores": {
        "aggregations": Key(
            "one aggregation or a non-empty list of distinct ones: tss, ave, sum or window:K",
            check_aggregations,
            '["ave", "tss"]',
            default=("ave", "tss"),
        ),
        "statistics": Key(
            f"one statistic or a non-empty list of distinct ones: {listing(STATISTICS)}",
            check_statistics,
            '["abs_diff"]',
            default=("abs_diff",),
        ),
        "center_bin": Key("an integer ≥ 0 naming a bin", check_int, "447", default=None),
        "pseudocount": Key("a number ≥ 0", check_number, "1.0", default=1.0),
    },
    "output": {
        "format": Key(
            f"one of {listing(OUTPUT_FORMATS, quoted=True)}",
            choice(lambda: OUTPUT_FORMATS),
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
            check_id_columns,
            '["GENE", "rsID", "REF", "ALT"]',
            default=DEFAULT_ID_COLUMNS,
        ),
        "class_column": Key(
            "a column name for each variant's receptive-field class (needs [geometry])",
            check_path,
            '"field"',
            default=None,
        ),
    },
    "normalise": {
        "background": Key(
            "a path string to a background file (.npz) saved by perturbscore normalise",
            check_background,
            '"stab-background.npz"',
            required=True,
        ),
        "statistics": Key(
            "one normalised statistic or a non-empty list of distinct ones: quantile, robust_z",
            check_normalised,
            '["quantile", "robust_z"]',
            default=("quantile", "robust_z"),
        ),
    },
    "groups": {
        "name": Key(
            "a name of at most 64 letters, digits, '_' and '-', starting with a letter or digit",
            check_group_name,
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
        "ref": Key("a path string to the REF predictions", check_path, '"ref.npy"', required=True),
        "alt": Key("a path string to the ALT predictions", check_path, '"alt.npy"', required=True),
        "variants": Key(
            "a path string to the variant table", check_path, '"variants.csv"', required=True
        ),
        "format": Key(
            lambda: f"a prediction format, one of {listing(readers.FORMATS, quoted=True)}",
            choice(lambda: readers.FORMATS),
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
