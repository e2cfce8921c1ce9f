"""Planning a comparison: every option and input checked, the pairing looked up.

:func:`plan_comparison` checks the options, finds the run's tables
(:mod:`.compare_tables`), reads the pairing tables and looks their variants up in every
score table (:mod:`.compare_pairing`), all before any test runs: a user error is raised
then, with nothing written.  It returns a :class:`.compare_design.ComparisonPlan`, whose
``summary`` records the parameters and the pairing's unit counts for ``compare.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .compare_counts import BOTH_SCORED, rank_counts, unit_counts, variant_counts
from .compare_design import ComparisonPlan
from .compare_out_of_field import (
    exclude_out_of_field,
    kept_out_of_field_warning,
    out_of_field_rows,
)
from .compare_pairing import DEFAULT_KEYS, Lookup, Pairing, build_lookup, read_pairing
from .compare_tables import RunTables, load_run
from .errors import PerturbscoreError
from .messages import closest, count
from .names import check_name

log = logging.getLogger("perturbscore")

DESIGNS = ("unpaired", "paired", "matching")
DUPLICATE_RULES = ("error", "first", "mean", "max")
FAMILIES = ("all", "design", "table", "rank")
#: What compare does with variants outside the model's input (needs the run's class column).
OUT_OF_FIELD_RULES = ("keep", "exclude")


def refuse_repeats(values: Sequence[str], option: str, what: str) -> None:
    """Refuse a value given more than once for ``option`` (``--track``, ``--plot-track``):
    a slip that would test or draw it twice.  ``what`` names one value (``track``)."""
    seen: set[str] = set()
    for v in values:
        if v in seen:
            n = list(values).count(v)
            times = "twice" if n == 2 else f"{n} times"
            raise PerturbscoreError(f"{option} {v} is given {times}; give each {what} once.")
        seen.add(v)


def _refuse_repeated_keys(keys: Sequence[str]) -> None:
    """A key named twice in ``--keys`` (pandas cannot merge on it): the list to give instead
    keeps the user's order, each key at its first place."""
    repeated = [k for k in dict.fromkeys(keys) if list(keys).count(k) > 1]
    if repeated:
        once = ",".join(dict.fromkeys(keys))
        raise PerturbscoreError(
            f"--keys {','.join(keys)} names {' and '.join(repeated)} more than once; give "
            f"each key once: --keys {once}."
        )


def _check_options(
    designs: Sequence[str],
    group_a: str,
    group_b: str,
    keys: Sequence[str],
    duplicates: str,
    family: str,
    out_of_field: str,
    tracks: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Check the options that need no input; returns the designs and keys to use."""
    designs = list(dict.fromkeys(designs))
    if not designs:
        raise PerturbscoreError("no design given; use --design unpaired|paired|matching.")
    for d in designs:
        if d not in DESIGNS:
            raise PerturbscoreError(f"unknown design {d}; use {', '.join(DESIGNS)}.")
    if duplicates not in DUPLICATE_RULES:
        raise PerturbscoreError(f"--duplicates must be one of {', '.join(DUPLICATE_RULES)}.")
    if family not in FAMILIES:
        raise PerturbscoreError(f"--family must be one of {', '.join(FAMILIES)}.")
    check_name(group_a, "group name", "--a")
    check_name(group_b, "group name", "--b")
    if group_a == group_b:
        raise PerturbscoreError(
            f"--a and --b are both {group_a}; compare two different groups of the run."
        )
    keys = [k for k in keys if k]
    if not keys:
        raise PerturbscoreError("--keys is empty; name score-table columns, e.g. GENE,rsID,ALT.")
    _refuse_repeated_keys(keys)
    refuse_repeats(tracks or (), "--track", "track")
    if out_of_field not in OUT_OF_FIELD_RULES:
        raise PerturbscoreError(
            f"--out-of-field must be one of {', '.join(OUT_OF_FIELD_RULES)}, not {out_of_field}."
        )
    return designs, keys


def _check_groups(run: RunTables, group_a: str, group_b: str) -> None:
    for g, opt in ((group_a, "--a"), (group_b, "--b")):
        if g not in run.groups():
            raise PerturbscoreError(
                f"{opt}: group {g} is not in the run at {run.folder}; it has "
                f"{', '.join(run.groups())}."
            )


def _selected_tracks(run: RunTables, tracks: Sequence[str] | None) -> pd.DataFrame:
    """The run's track metadata, restricted to ``tracks`` (in that order) when given."""
    track_meta = run.tracks
    if tracks:
        known = set(track_meta["identifier"])
        unknown = [t for t in tracks if t not in known]
        if unknown:
            near = closest(unknown[0], sorted(known))
            hint = f" (did you mean {near}?)" if near else ""
            raise PerturbscoreError(
                f"--track: {', '.join(unknown[:5])} not among the run's tracks{hint}; give "
                f"identifiers listed in {run.folder / 'manifest.json'}."
            )
        track_meta = track_meta.set_index("identifier").loc[list(tracks)].reset_index()
    return track_meta


def _shared_tables(run: RunTables, group_a: str, group_b: str) -> list[tuple[str, str]]:
    """The (aggregation, statistic) tables both groups have, sorted."""
    combos = sorted(
        {(s.aggregation, s.statistic) for s in run.sets if s.group == group_a}
        & {(s.aggregation, s.statistic) for s in run.sets if s.group == group_b}
    )
    if not combos:
        raise PerturbscoreError(
            f"nothing to compare: groups {group_a} and {group_b} share no "
            "(aggregation, statistic) table."
        )
    return combos


def _table_lookup(
    run: RunTables,
    group: str,
    side: str,
    agg: str,
    stat: str,
    units: pd.DataFrame,
    keys: Sequence[str],
    duplicates: str,
) -> Lookup:
    """Where the units' ``side`` variants sit in ``group``'s (agg, stat) table."""
    all_ids = list(run.tracks["identifier"])
    s = run.get(group, agg, stat)
    names = s.column_names(all_ids)
    missing = [k for k in keys if k not in names]
    if missing:
        have = [c for c in names if c not in set(all_ids)]
        raise PerturbscoreError(
            f"{s.path}: pairing key(s) {', '.join(missing)} are not columns of the "
            f"score table (it has {', '.join(have)}); choose --keys."
        )
    wanted = units[[f"{side}_{k}" for k in keys]].set_axis(list(keys), axis=1)
    return build_lookup(s.read(keys, all_ids), wanted, duplicates, f"{s.path} (group {group})")


def _plan_pairing(
    run: RunTables,
    combos: Sequence[tuple[str, str]],
    group_a: str,
    group_b: str,
    pair: Pairing,
    keys: Sequence[str],
    duplicates: str,
    unpaired_too: bool = False,
    out_of_field: str = "keep",
) -> tuple[dict[tuple[str, str, str], Lookup], dict[str, Any], list[str]]:
    """Look the pairing variants up in every compared table; returns lookups, unit counts
    and warnings (logged when the tests start, once every input is checked).

    None found at all is a user error when every design needs the pairing (wrong keys or
    the wrong study's pairing tables); beside an unpaired design it is a warning, and
    the pairing designs test nothing.
    """
    units = pair.units
    summary = unit_counts(pair)
    lookups: dict[tuple[str, str, str], Lookup] = {}
    for agg, stat in combos:
        found, outside = {}, {}
        for g, side in ((group_a, "a"), (group_b, "b")):
            lk = _table_lookup(run, g, side, agg, stat, units, keys, duplicates)
            lookups[(g, agg, stat)] = lk
            found[side] = lk.found()
            outside[side] = lk.left_out(run.get(g, agg, stat).exclude)
        if "variants" not in summary:
            # Classes are per variant, the same in every table of a group: one table's do.
            excluded = outside if out_of_field == "exclude" else None
            summary["variants"] = variant_counts(units, found, excluded, group_a, group_b)
            if "rank" in units.columns:
                summary["per_rank"] = rank_counts(units, found, excluded)
    if not any(lk.found().any() for lk in lookups.values()):
        msg = (
            f"none of the {len(units):,} pairing units has a variant in the score tables of "
            f"{group_a} or {group_b} by the keys {', '.join(keys)}; check --keys (they must "
            "be ID columns of both the pairing tables and the run's tables) and the groups"
        )
        if not unpaired_too:
            raise PerturbscoreError(msg + ".")
        return lookups, summary, [f"{msg}; only the unpaired design tests anything."]
    counts = summary["variants"]
    nf = {k: v for k, v in counts.items() if "without" in k and v}
    notes = []
    if nf:
        notes.append(
            "pairing variants not found in the score tables (left out): "
            + "; ".join(f"{k.replace(' without a score row', '')}: {v:,}" for k, v in nf.items())
        )
    oof = {k: v for k, v in counts.items() if "outside the model's input" in k and v}
    if oof:
        notes.append(
            "pairing units and variants outside the model's input (--out-of-field exclude, "
            "left out): "
            + "; ".join(f"{k.replace(' (left out)', '')}: {v:,}" for k, v in oof.items())
            + f"; {BOTH_SCORED}: {counts[BOTH_SCORED]:,}"
        )
    return lookups, summary, notes


def _read_pairing_for(
    designs: Sequence[str],
    pairing: Sequence[str | Path],
    a_prefix: str,
    b_prefix: str,
    keys: Sequence[str],
    per_rank: bool,
) -> Pairing | None:
    """The pairing the designs need (None for ``unpaired`` alone), checked against them."""
    needs_pairing = [d for d in designs if d != "unpaired"]
    if not needs_pairing:
        if per_rank:
            raise PerturbscoreError("--per-rank needs the paired or matching design.")
        return None
    if not pairing:
        raise PerturbscoreError(
            f"design(s) {', '.join(needs_pairing)} need --pairing tables "
            "(e.g. the fine_mapping/ folder)."
        )
    pair = read_pairing(pairing, a_prefix, b_prefix, keys)
    if per_rank and "rank" not in pair.units.columns:
        raise PerturbscoreError(
            "--per-rank needs ranks: the pairing tables have no 'rank' column "
            "(the fine-mapping shape has them)."
        )
    return pair


def _check_tables(
    run: RunTables,
    groups: tuple[str, str],
    combos: Sequence[tuple[str, str]],
    paired: bool,
    out_of_field: str,
) -> tuple[dict[str, Any], list[str]]:
    """Check every compared table (damaged or edited ones are named before any test) and
    handle out-of-field rows; returns their ``compare.json`` entries and warnings.

    ``out_of_field_rows`` are the rows of out-of-field variants (0 scores) in each group,
    as the run counted them: kept in the tests as 'no effect' unless ``exclude``.
    """
    all_ids = list(run.tracks["identifier"])
    for agg, stat in combos:
        for g in groups:  # the pairing lookups read whole tables anyway: keep them then
            run.get(g, agg, stat).check(all_ids, keep=paired)
    left_out = exclude_out_of_field(run, groups, combos) if out_of_field == "exclude" else {}
    rows = out_of_field_rows(run.manifest, groups)
    entries: dict[str, Any] = {"out_of_field": out_of_field, "out_of_field_rows": rows}
    warnings: list[str] = []
    if left_out:
        entries["left_out_out_of_field"] = left_out
        warnings.append(
            "left out of every test, as outside the model's input: "
            + ", ".join(f"{g} {count(n, 'variant')}" for g, n in left_out.items())
        )
    elif out_of_field == "keep" and rows:
        warnings.append(kept_out_of_field_warning(run.manifest, groups, rows))
    return entries, warnings


def plan_comparison(
    run_folder: str | Path,
    group_a: str,
    group_b: str,
    designs: Sequence[str] = ("unpaired",),
    pairing: Sequence[str | Path] = (),
    a_prefix: str | None = None,
    b_prefix: str | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
    duplicates: str = "error",
    tracks: Sequence[str] | None = None,
    family: str = "all",
    per_rank: bool = False,
    out_of_field: str = "keep",
) -> ComparisonPlan:
    """Check every option and input and look the pairing variants up; no test is run.

    Raises :class:`PerturbscoreError` for anything the user can fix, before any work.
    The parameters are those of :func:`perturbscore.compare.compare_groups`.
    """
    designs, keys = _check_options(
        designs, group_a, group_b, keys, duplicates, family, out_of_field, tracks
    )
    run = load_run(run_folder)
    _check_groups(run, group_a, group_b)
    track_meta = _selected_tracks(run, tracks)
    combos = _shared_tables(run, group_a, group_b)
    paired = any(d != "unpaired" for d in designs)
    field_summary, warnings = _check_tables(run, (group_a, group_b), combos, paired, out_of_field)
    summary: dict[str, Any] = {
        "group_a": group_a,
        "group_b": group_b,
        "designs": list(designs),
        "keys": list(keys),
        "duplicates": duplicates,
        "family": family,
        "per_rank": per_rank,
        "run": str(run.folder),
        "n_tracks": len(track_meta),
        "tables": [f"{a}, {s}" for a, s in combos],
        **field_summary,
    }
    pair = _read_pairing_for(
        designs,
        pairing,
        a_prefix or group_a.upper(),
        b_prefix or group_b.upper(),
        keys,
        per_rank,
    )
    lookups: dict[tuple[str, str, str], Lookup] = {}
    if pair is not None:
        lookups, summary["units"], pairing_notes = _plan_pairing(
            run,
            combos,
            group_a,
            group_b,
            pair,
            keys,
            duplicates,
            "unpaired" in designs,
            out_of_field,
        )
        warnings += pairing_notes
    return ComparisonPlan(
        run,
        group_a,
        group_b,
        designs,
        track_meta,
        combos,
        pair,
        lookups,
        family,
        per_rank,
        summary,
        warnings,
    )
