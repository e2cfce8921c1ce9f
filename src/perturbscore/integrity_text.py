"""Integrity findings as text for people: one line per finding, then its first rows.

:func:`format_integrity` words a :meth:`.integrity.IntegrityChecker.finish` result;
rows are named by group, batch, variant table and 1-based line (the header is line 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .geometry import CLASS_LABELS
from .integrity import FINDINGS
from .messages import count

_TITLES = {
    "identical_in_field": "rows inside the field with REF == ALT (bitwise)",
    "differing_out_of_field": "rows outside the model's input whose REF and ALT differ",
    "duplicate_vectors": "rows of distinct variants sharing one score vector",
    "cross_group_mismatch": "rows scored differently in another group",
}


def format_integrity(result: Mapping[str, Any], limit: int = 5, verdict: bool = True) -> str:
    """Short human text of a :meth:`.integrity.IntegrityChecker.finish` result.

    ``verdict``: end with the clean/flagged line of ``result`` alone; ``perturbscore
    check`` words its own verdict (:attr:`.check.CheckReport.flags`), which weighs the
    positions and the run's tables too.
    """
    lines = []
    ident = result.get("identical_rows")
    if ident is not None:
        parts = [f"{ident.get(lab, 0)} {lab}" for lab in CLASS_LABELS]
        if ident.get("unclassified"):
            parts.append(f"{ident['unclassified']} unclassified")
        lines.append(
            f"integrity: {count(result['rows'], 'row')} checked; REF == ALT in "
            f"{ident['total']} ({', '.join(parts)})"
        )
    for finding in FINDINGS:
        n = (result.get("findings") or {}).get(finding, 0)
        if not n:
            continue
        extra = ""
        if finding == "duplicate_vectors":
            sets = result.get("duplicate_vector_sets", 0)
            extra = f" in {sets} set{'' if sets == 1 else 's'}"
        title = _TITLES[finding]
        if n == 1:
            title = title.replace("rows", "row", 1)
        lines.append(f"  FLAG {n} {title}{extra}")
        for ex in result.get("examples", {}).get(finding, [])[:limit]:
            lines.append("    " + _example(finding, ex))
    for path, found in (result.get("nonfinite") or {}).items():
        lines.append(
            f"  FLAG {count(found['values'], 'NaN or Inf value')} in {path}, first at "
            f"{found['first']} ('perturbscore run' refuses them; --nan propagate carries "
            "them into the scores)"
        )
    if not verdict:
        return "\n".join(lines)
    if result["clean"]:
        lines.append("  clean: no misaligned rows or wrong positions found")
    elif not any(result["findings"].values()):
        lines.append(f"  flagged: NaN or Inf in the predictions (exit code {result['exit_code']})")
    else:
        lines.append(
            "  flagged: rows may be attached to the wrong variants, or positions/windows are "
            f"wrong (exit code {result['exit_code']})"
        )
    return "\n".join(lines)




def _example(finding: str, ex: Mapping[str, Any]) -> str:
    if finding == "duplicate_vectors":
        rows = "; ".join(_at(r) for r in ex["first"])
        return f"{ex['rows']} rows: {rows}"
    text = _at(ex)
    if finding == "cross_group_mismatch":
        text += (
            f" vs group {ex['first_group']}: "
            + (f"track {ex['track']}" if "track" in ex else f"column {ex['column']}")
            + " differs by "
            f"{ex['difference']:.3g}"
        )
    elif "class" in ex:
        text += f" [{ex['class']}]"
    return text


def _at(ex: Mapping[str, Any]) -> str:
    table = str(ex.get("table", "")).replace("\\", "/").rsplit("/", 1)[-1]
    where = f"{ex['group']}/{ex['batch']} {table} line {ex['line']}"
    return f"{ex['id']} ({where})" if ex.get("id") else where
