"""Rows of variants outside the model's input (scores exactly 0, "not measured") in a
run's tables, as compare and normalise treat them.

:func:`out_of_field_rows` counts them per group from the run's manifest,
:func:`exclude_out_of_field` marks them for ``--out-of-field exclude``, and
:func:`kept_out_of_field_warning` (with :func:`out_of_field_shares`) says what keeping
them as 0 does to the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .compare_tables import RunTables
from .errors import PerturbscoreError
from .messages import count
from .runtables import RERUN

#: The run-file setting that writes each variant's class into the tables.
CLASS_COLUMN_SETTING = 'class_column = "field" in the run file\'s [output]'


def exclude_out_of_field(
    run: RunTables, groups: Sequence[str], combos: Sequence[tuple[str, str]]
) -> dict[str, int]:
    """Mark the rows of ``outside_input`` variants in every compared table of ``groups``.

    The class comes from the class column the run wrote (``class_column`` in the run
    file's ``[output]``, recorded in the manifest); returns rows left out per group.
    """
    geo = run.manifest.get("geometry") or {}
    column = geo.get("class_column") if isinstance(geo, dict) else None
    if not column:
        raise PerturbscoreError(
            f"--out-of-field exclude needs each variant's class in the tables, but the run at "
            f"{run.folder} wrote none; rerun 'perturbscore run' with {CLASS_COLUMN_SETTING} "
            "(or with --out-of-field na, whose missing scores drop out of every test anyway)."
        )
    all_ids = list(run.tracks["identifier"])
    counts: dict[str, int] = {}
    for s in run.sets:
        if s.group not in groups or (s.aggregation, s.statistic) not in set(combos):
            continue
        if column not in s.column_names(all_ids):
            raise PerturbscoreError(
                f"{s.path} lacks the class column {column} that the run's manifest.json "
                f"names; {RERUN}."
            )
        cls = s.read([column], all_ids)[column].astype(str).to_numpy()
        s.exclude = cls == "outside_input"
        counts[s.group] = int(s.exclude.sum())
    return counts


def out_of_field_rows(manifest: dict[str, Any], groups: Sequence[str]) -> dict[str, int]:
    """Rows per group whose scores are the 0 of a variant outside the model's input.

    From the run's manifest (``geometry.classes.per_group``, counted by
    ``perturbscore run``); empty when the run has no geometry, or wrote such variants as
    NaN or left them out (its ``--out-of-field na`` or ``drop``), or has none of them.
    """
    geo = manifest.get("geometry")
    if not isinstance(geo, dict) or (geo.get("out_of_field") or "keep") != "keep":
        return {}
    per_group = (geo.get("classes") or {}).get("per_group") or {}
    counts = {}
    for g in groups:
        n = (per_group.get(g) or {}).get("outside_input", 0)
        if isinstance(n, int) and n > 0:
            counts[g] = n
    return counts


def out_of_field_shares(
    manifest: dict[str, Any], groups: Sequence[str], counts: dict[str, int]
) -> str:
    """``stab 6,442 of 20,007 rows (32.2%) and top ...``: each group's out-of-field rows
    (``counts``, from :func:`out_of_field_rows`) and their share of its rows, as the
    run's manifest counted them."""
    per_group = ((manifest.get("geometry") or {}).get("classes") or {}).get("per_group") or {}
    parts = []
    for g in groups:
        n = counts.get(g, 0)
        total = sum(v for v in (per_group.get(g) or {}).values() if isinstance(v, int))
        share = f" ({100 * n / total:.1f}%)" if total else ""
        parts.append(
            f"{g} {n:,} of {count(total, 'row')}{share}" if total else f"{g} {count(n, 'row')}"
        )
    return " and ".join(parts)


def kept_out_of_field_warning(
    manifest: dict[str, Any], groups: Sequence[str], counts: dict[str, int]
) -> str:
    """The warning for out-of-field zeros kept in the tests: how many, why it matters and
    what to do (``--out-of-field exclude``, which needs the run's class column)."""
    has_column = bool((manifest.get("geometry") or {}).get("class_column"))
    fix = (
        "pass --out-of-field exclude to leave them out"
        if has_column
        else "pass --out-of-field exclude to leave them out, after rerunning "
        f"'perturbscore run' with {CLASS_COLUMN_SETTING} (exclude finds them by that class "
        "column)"
    )
    scored = (
        "whose raw scores were exactly 0 ('not measured'), normalised here as if measured"
        if manifest.get("source") == "normalise"
        else "scored exactly 0 ('not measured')"
    )
    shares = out_of_field_shares(manifest, groups, counts)
    return (
        f"out-of-field zeros in the compared groups: {shares} are variants "
        f"outside the model's input, {scored}; with --out-of-field "
        "keep they enter the tests as 'no effect' and can make the groups differ by their "
        f"share alone; {fix}."
    )
