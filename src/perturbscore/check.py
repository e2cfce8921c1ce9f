"""``perturbscore check``: receptive-field classes and integrity findings of a run.

``check_run_file`` reads a run file's variant tables (classes per table, from the
``[geometry]`` and ``[variants]`` sections) and, when the prediction files are there,
streams them block by block through :mod:`.integrity`.  ``check_run_dir`` prints what a
finished run recorded in its ``manifest.json`` under the keys ``geometry`` (with
``geometry.classes``) and ``integrity``.

Exit codes: 0 clean, 3 flagged (:data:`.integrity.EXIT_FLAGGED`), 2 user error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PerturbscoreError
from .geometry_tables import (
    ClassCounter,
    GeometryConfig,
    format_classes,
    place_table,
)
from .integrity import EXIT_CLEAN, EXIT_FLAGGED
from .integrity_text import format_integrity
from .outputs import refuse_unfinished_commit
from .readers import missing_prediction_files
from .runfile import RunConfig, load_run_file

#: Manifest keys shared with the run pipeline.
MANIFEST_GEOMETRY = "geometry"
MANIFEST_INTEGRITY = "integrity"
#: Half the memory budget the check reads predictions under (512 MiB, as a run's default).
BLOCK_BYTES = 256 * 2**20


@dataclass
class CheckReport:
    """What :func:`check_run_file` / :func:`check_run_dir` found."""

    source: str
    geometry: dict[str, Any] | None = None
    integrity: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 clean, 3 when integrity is flagged or positions fall outside their window."""
        if self.integrity is not None and not self.integrity.get("clean", True):
            return EXIT_FLAGGED
        classes = (self.geometry or {}).get("classes", {})
        if any(e.get("outside_window") for e in classes.get("per_table", [])):
            return EXIT_FLAGGED
        return EXIT_CLEAN

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"source", "geometry", "integrity", "notes", "exit_code"}``."""
        return {
            "source": self.source,
            MANIFEST_GEOMETRY: self.geometry,
            MANIFEST_INTEGRITY: self.integrity,
            "notes": self.notes,
            "exit_code": self.exit_code,
        }

    def text(self) -> str:
        """The short report ``perturbscore check`` prints."""
        lines = [f"check: {self.source}"]
        if self.geometry:
            lines.append(describe_geometry(self.geometry))
            if self.geometry.get("classes"):
                lines.append(format_classes(self.geometry["classes"]))
        lines += self.notes
        if self.integrity is not None:
            lines.append(format_integrity(self.integrity))
        return "\n".join(lines)


def describe_geometry(geo: dict[str, Any]) -> str:
    """One line naming the geometry and the position columns of a manifest entry."""
    pos = geo.get("position") or {}
    if pos.get("window_start"):
        how = f"{pos['position']} - {pos['window_start']}"
    elif pos.get("window_centre"):
        how = f"{pos['position']} - {pos['window_centre']} + {geo['centre_offset']}"
    else:
        how = str(pos.get("position"))
    return (
        f"geometry: {geo['model']}: {geo['window_bp']:,}-bp window, model reads the central "
        f"{geo['input_bp']:,} bp, output {geo['output_bins']} x {geo['bin_bp']} bp = "
        f"{geo['output_bp']:,} bp, centre bin {geo['centre_bin']}\n"
        f"positions: offset = {how} (0-based offset in the window)"
    )


def load_check_config(path: str | Path) -> tuple[RunConfig, GeometryConfig | None]:
    """Read a run file and its ``[geometry]``/``[variants]`` position settings."""
    cfg = load_run_file(path)
    return cfg, cfg.geometry


def _integrity(
    cfg: RunConfig, rtol: float, atol: float, max_examples: int, block_bytes: int
) -> dict[str, Any]:
    """The run's own integrity checks, through the span pipeline, writing nothing."""
    from .engine import local_mapper
    from .findings import Findings
    from .options import RunOptions
    from .plan import prepare
    from .spans import close_readers, spans

    # A folder that is never created: prepare() writes nothing.
    prep = prepare(
        cfg,
        Path(cfg.source or ".").parent / ".perturbscore-check",
        RunOptions(progress=False, memory_bytes=max(2 * block_bytes, 64 * 2**20)),
    )
    findings = Findings(prep, rtol=rtol, atol=atol, max_examples=max_examples)
    try:
        for res in local_mapper(prep)(spans(prep.span_plan, prep.plan.chunk_rows)):
            grp = prep.batches[res.batch].group
            values = {(grp, a, st): v for (a, st), v in res.scores.items()}
            findings.block(res.batch, res.start, res.identical, values)
            findings.add(res.batch, res.nonfinite, res.bad_log2)
    finally:
        close_readers()
    result = findings.checker.finish()
    if findings.nonfinite:
        # What 'perturbscore run' refuses (by default) is no clean bill of health.
        result["nonfinite"] = {
            path: {"values": count, "first": where}
            for path, (count, where) in findings.nonfinite.items()
        }
        result["clean"] = False
        result["exit_code"] = EXIT_FLAGGED
    return result


def check_run_file(
    path: str | Path,
    positions_only: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    max_examples: int = 10,
    block_bytes: int = BLOCK_BYTES,
) -> CheckReport:
    """Classes per variant table and, with predictions present, the integrity checks.

    Parameters
    ----------
    path : str or Path
        A run file.
    positions_only : bool
        Read only the variant tables (classes); never the predictions.
    rtol, atol : float
        Tolerance of the cross-group check.
    max_examples : int
        First offenders kept per finding.
    block_bytes : int
        Budget of one REF + ALT block (rows per block follow from it; results do not).

    Returns
    -------
    CheckReport
    """
    cfg, geo = load_check_config(path)
    report = CheckReport(str(path))
    counter = _count_classes(cfg, geo)
    if geo is not None:
        report.geometry = {**geo.describe(), "classes": counter.describe()}
    else:
        report.notes.append(
            "no [geometry] in the run file: receptive-field classes not computed (add "
            '[geometry] model = "enformer" and [variants] position = ...)'
        )

    missing = [
        str(f)
        for f in missing_prediction_files(
            p for g in cfg.groups for b in g.batches for p in (b.ref, b.alt)
        )
    ]
    if positions_only:
        report.notes.append("integrity: not checked (--positions-only)")
        return report
    if missing:
        shown = ", ".join(Path(m).name for m in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        report.notes.append(
            f"integrity: not checked: {len(missing)} prediction files not found ({shown}{more}); "
            "class counts come from the variant tables alone"
        )
        return report

    report.integrity = _integrity(cfg, rtol, atol, max_examples, block_bytes)
    return report


def _count_classes(cfg: RunConfig, geo: GeometryConfig | None) -> ClassCounter:
    """Each variant table read and its ID columns checked; classes counted with a geometry."""
    from .variants import id_columns_of, read_variants

    counter = ClassCounter()
    for group in cfg.groups:
        for number, batch in enumerate(group.batches, start=1):
            # Every column: the position columns are checked (and named) by the geometry.
            df = read_variants(batch.variants)
            id_columns_of(df, cfg.id_columns, str(batch.variants))
            if geo is not None:
                placed = place_table(df, geo, str(batch.variants))
                counter.add(
                    group.name,
                    number,
                    str(batch.variants),
                    placed.cls,
                    int(placed.outside_window.sum()),
                )
    return counter


def check_run_dir(path: str | Path) -> CheckReport:
    """What a finished run recorded: ``manifest.json``'s ``geometry`` and ``integrity``."""
    p = Path(path)
    manifest = p / "manifest.json"
    refuse_unfinished_commit(p)
    if not manifest.is_file():
        raise PerturbscoreError(
            f"{p}: no manifest.json; give a run file, or the --out folder of a finished run."
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PerturbscoreError(f"{manifest}: cannot read the run manifest ({exc}).") from exc
    report = CheckReport(str(p))
    report.geometry = data.get(MANIFEST_GEOMETRY)
    report.integrity = data.get(MANIFEST_INTEGRITY)
    if report.geometry is None:
        report.notes.append("the run recorded no geometry (no [geometry] in its run file)")
    if report.integrity is None:
        report.notes.append("the run recorded no integrity checks")
    return report


def check_path(path: str | Path, positions_only: bool = False, **kwargs: Any) -> CheckReport:
    """:func:`check_run_dir` for a folder, :func:`check_run_file` otherwise."""
    for name in ("rtol", "atol"):
        value = kwargs.get(name)
        if value is not None and not value >= 0:
            raise PerturbscoreError(
                f"--{name} {value} is not a tolerance; give a number of 0 or more."
            )
    p = Path(path)
    if p.is_dir():
        if positions_only:
            raise PerturbscoreError(
                f"{p}: --positions-only applies to a run file, not to a run folder."
            )
        return check_run_dir(p)
    return check_run_file(p, positions_only=positions_only, **kwargs)
