"""``perturbscore check RUN_DIR``: a finished run's folder checked.

:func:`check_run_dir` reports what the run recorded in its ``manifest.json``
(``geometry`` with the class counts, ``integrity``, and the NaN/Inf a ``--nan
propagate`` run passed through, :func:`recorded_nonfinite`) and checks every table the
manifest lists (:func:`check_tables`: there, readable, with the recorded row count and
the run's track columns).  The verdict is :class:`.check.CheckReport`'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .check import MANIFEST_GEOMETRY, MANIFEST_INTEGRITY, TABLE_SUFFIXES, CheckReport
from .errors import PerturbscoreError
from .integrity import EXIT_FLAGGED
from .outputs import refuse_unfinished_commit


def check_run_dir(path: str | Path) -> CheckReport:
    """What a finished run recorded, and whether its tables are still what it wrote.

    ``manifest.json``'s ``geometry`` and ``integrity``, with the NaN/Inf values a
    ``--nan propagate`` run passed through (flagged as the run-file check flags them);
    then every table the manifest lists: there, readable, with the run's track columns
    and the row count the manifest recorded (Parquet: from the footers; CSV and R
    tables are read whole).  A missing or damaged table is a finding (exit code 3),
    not an error: the check goes on and lists every one.
    """
    p = Path(path)
    manifest = p / "manifest.json"
    refuse_unfinished_commit(p)
    if not manifest.is_file():
        raise PerturbscoreError(
            f"{p}: no manifest.json; give a run file, or the --out folder of a finished run."
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PerturbscoreError(f"{manifest}: cannot read the run manifest ({exc}).") from exc
    if not isinstance(data, dict):
        raise PerturbscoreError(f"{manifest}: not a perturbscore run manifest (no fields).")
    report = CheckReport(str(p))
    report.geometry = data.get(MANIFEST_GEOMETRY)
    report.integrity = data.get(MANIFEST_INTEGRITY)
    recorded = (report.integrity or {}).get("nonfinite")
    # Runs before the manifest recorded it say so only in a warning's words.
    nonfinite = recorded or recorded_nonfinite(data.get("warnings") or [])
    if report.geometry is None:
        report.notes.append("the run recorded no geometry (no [geometry] in its run file)")
    if report.integrity is None:
        report.notes.append("the run recorded no integrity checks")
        if nonfinite:
            report.integrity = {}
    if nonfinite and report.integrity is not None:
        report.integrity = {
            **report.integrity,
            "nonfinite": nonfinite,
            "clean": False,
            "exit_code": EXIT_FLAGGED,
        }
    report.tables = check_tables(p, data)
    return report


#: How :meth:`.findings.Findings.conclude` words the NaN/Inf a run passed through, for
#: manifests without ``integrity.nonfinite`` ("1 values" in older runs, "1 value" now).
_NONFINITE_WARNING = "NaN/Inf passed through (--nan propagate): "
_NONFINITE_ENTRY = re.compile(
    r"(?P<path>.+?): (?P<values>\d+) values?, first at (?P<first>.+)", re.S
)


def recorded_nonfinite(warnings: list[Any]) -> dict[str, dict[str, Any]]:
    """The NaN/Inf values a ``--nan propagate`` run recorded among its manifest's
    ``warnings``, as the run-file check reports them: ``{path: {"values", "first"}}``."""
    found: dict[str, dict[str, Any]] = {}
    for w in warnings:
        if not isinstance(w, str) or not w.startswith(_NONFINITE_WARNING):
            continue
        detail = w[len(_NONFINITE_WARNING) :]
        # Entries are joined by "; "; split only before one that starts a new entry.
        for entry in re.split(r"; (?=[^;]+?: \d+ values?, first at )", detail):
            m = _NONFINITE_ENTRY.fullmatch(entry)
            if m:
                found[m["path"]] = {"values": int(m["values"]), "first": m["first"]}
            else:  # worded otherwise (another version): still flagged, as written
                found[entry] = {"values": 0, "first": "(see the run's warnings)"}
    return found


def check_tables(run_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every table ``manifest`` lists (none: flagged by :attr:`CheckReport.flags`):
    ``{"path", "rows", "problem"}``, ``problem`` the
    sentence of what is wrong with it (missing, unreadable, rows or tracks not those
    recorded) or None.  The checks are those ``compare`` makes
    (:meth:`.compare_tables.ScoreSet.verify`)."""
    from .compare_tables import ScoreSet

    outputs = manifest.get("outputs")
    selected = (manifest.get("tracks") or {}).get("selected") or []
    tracks = [str(t["identifier"]) for t in selected if isinstance(t, dict) and "identifier" in t]
    if not isinstance(outputs, list):
        return []  # flagged: a finished run lists its tables
    found = []
    for o in outputs:
        rel = o.get("path") if isinstance(o, dict) else None
        rows = o.get("rows") if isinstance(o, dict) else None
        if not isinstance(rel, str):
            found.append({"path": None, "rows": None, "problem": "an output without a path"})
            continue
        table = run_dir / rel
        entry: dict[str, Any] = {"path": str(table), "rows": rows, "problem": None}
        found.append(entry)
        if not table.exists():
            entry["problem"] = f"{table}: listed in manifest.json but missing"
            continue
        if table.suffix.lower() not in TABLE_SUFFIXES:
            entry["problem"] = (
                f"{table}: not a table perturbscore writes (Parquet, CSV, RDS or RData)"
            )
            continue
        if table.is_dir() and (
            table.suffix.lower() != ".parquet" or not any(table.glob("*.parquet"))
        ):
            # (the Dask engine writes a table as a folder of Parquet part files)
            entry["problem"] = f"{table}: a folder without Parquet part files, not a table"
            continue
        s = ScoreSet(str(o.get("group")), "", "", table, rows if isinstance(rows, int) else None)
        try:
            s.verify(tracks)
        except PerturbscoreError as exc:
            entry["problem"] = str(exc).rstrip(".")
    return found
