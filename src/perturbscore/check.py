"""``perturbscore check``: receptive-field classes and integrity findings of a run.

``check_run_file`` reads a run file's variant tables (classes per table, from the
``[geometry]`` and ``[variants]`` sections) and, when the prediction files are there,
streams them block by block through :mod:`.integrity`.  ``check_run_dir`` reports what
a finished run recorded in its ``manifest.json`` (``geometry`` with
``geometry.classes``, ``integrity``, and the NaN/Inf a ``--nan propagate`` run passed
through) and checks every table the manifest lists: there, readable, with the
recorded row count and the run's track columns.

One verdict (:attr:`CheckReport.flags`) decides the exit code, the last line printed
and the JSON's ``clean``/``exit_code`` (``integrity.clean`` and
``integrity.exit_code`` too), so that they always agree.

Exit codes: 0 clean, 3 flagged (:data:`.integrity.EXIT_FLAGGED`: rows flagged, NaN/Inf
in the predictions, positions outside their window, a table of the run missing or
damaged), 2 user error (nothing could be checked: a wrong path, a bad run file).
"""

from __future__ import annotations

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
from .messages import count
from .readers import missing_prediction_files, prediction_file
from .runfile import RunConfig, load_run_file

#: Manifest keys shared with the run pipeline.
MANIFEST_GEOMETRY = "geometry"
MANIFEST_INTEGRITY = "integrity"
#: Suffixes of the tables a run writes (a Parquet table may be a folder of parts).
TABLE_SUFFIXES = (".parquet", ".csv", ".rds", ".rdata")
#: Half the memory budget the check reads predictions under (512 MiB, as a run's default).
BLOCK_BYTES = 256 * 2**20


@dataclass
class CheckReport:
    """What :func:`check_run_file` / :func:`.check_dir.check_run_dir` found."""

    source: str
    geometry: dict[str, Any] | None = None
    integrity: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: RUN_DIR only: every table the manifest lists, ``{"path", "rows", "problem"}``
    #: (``problem`` None when the table is there, readable, with its rows and tracks).
    tables: list[dict[str, Any]] | None = None

    @property
    def flags(self) -> list[str]:
        """Why the check is not clean, one phrase per reason (empty: clean).

        The one verdict: the exit code, the printed verdict and the JSON all follow it.
        """
        reasons = []
        res = self.integrity
        if res is not None:
            if res.get("nonfinite"):
                reasons.append("NaN or Inf in the predictions")
            if any((res.get("findings") or {}).values()) or (
                not res.get("clean", True) and not res.get("nonfinite")
            ):
                reasons.append(
                    "rows may be attached to the wrong variants, or positions/windows are wrong"
                )
        classes = (self.geometry or {}).get("classes") or {}
        outside = sum(int(e.get("outside_window") or 0) for e in classes.get("per_table", []))
        if outside:
            reasons.append(
                f"{count(outside, 'row lies', 'rows lie')} outside the window itself (the "
                "positions are wrong)"
            )
        bad = [t for t in self.tables or [] if t["problem"]]
        if self.tables == []:
            reasons.append("manifest.json lists no tables of the run")
        if bad:
            reasons.append(
                f"{len(bad)} of {count(len(self.tables or []), 'table')} of the run missing "
                "or damaged"
            )
        return reasons

    @property
    def clean(self) -> bool:
        """Nothing flagged (:attr:`flags` is empty)."""
        return not self.flags

    @property
    def exit_code(self) -> int:
        """0 clean, 3 when anything is flagged (:attr:`flags`)."""
        return EXIT_CLEAN if self.clean else EXIT_FLAGGED

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"source", "geometry", "integrity", "tables", "notes", "clean",
        "flags", "exit_code"}``; ``integrity.clean``/``integrity.exit_code`` are the
        check's verdict too."""
        integrity = self.integrity
        if integrity is not None:
            integrity = {**integrity, "clean": self.clean, "exit_code": self.exit_code}
        return {
            "source": self.source,
            MANIFEST_GEOMETRY: self.geometry,
            MANIFEST_INTEGRITY: integrity,
            "tables": self.tables,
            "notes": self.notes,
            "clean": self.clean,
            "flags": self.flags,
            "exit_code": self.exit_code,
        }

    def text(self) -> str:
        """The short report ``perturbscore check`` prints; its last line is the verdict."""
        lines = [f"check: {self.source}"]
        if self.geometry:
            lines.append(describe_geometry(self.geometry))
            if self.geometry.get("classes"):
                lines.append(format_classes(self.geometry["classes"]))
        lines += self.notes
        if self.integrity is not None:
            lines.append(format_integrity(self.integrity, verdict=False))
        if self.tables == []:
            lines.append("tables: none listed in manifest.json")
        elif self.tables is not None:
            bad = [t for t in self.tables if t["problem"]]
            n = count(len(self.tables), "table")
            lines.append(
                f"tables: {n} listed in manifest.json, "
                + (
                    f"{len(self.tables) - len(bad)} readable with their recorded rows and tracks"
                    if bad
                    else "every one readable with its recorded rows and tracks"
                )
            )
            lines += [f"  FLAG {t['problem']}" for t in bad]
        flags = self.flags
        if not flags:
            checked = "" if self.integrity is not None else " (the predictions were not read)"
            lines.append(f"  clean: no misaligned rows or wrong positions found{checked}")
        else:
            lines.append(f"  flagged: {'; '.join(flags)} (exit code {self.exit_code})")
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
            findings.add(res.batch, res.nonfinite, res.bad_log2, res.bad_log2_inputs)
    finally:
        close_readers()
    return findings.with_nonfinite(findings.checker.finish())


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
    # Before any table is read: a typo among the prediction paths is a user error.
    missing = [] if positions_only else _missing_predictions(cfg, Path(path))
    report = CheckReport(str(path))
    counter = _count_classes(cfg, geo)
    if geo is not None:
        report.geometry = {**geo.describe(), "classes": counter.describe()}
    else:
        report.notes.append(
            "no [geometry] in the run file: receptive-field classes not computed (add "
            '[geometry] model = "enformer" and [variants] position = ...)'
        )
    if positions_only:
        report.notes.append("integrity: not checked (--positions-only)")
        return report
    if missing:
        shown = ", ".join(Path(m).name for m in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        report.notes.append(
            f"integrity: not checked: {count(len(missing), 'prediction file')} not found "
            f"({shown}{more}); class counts come from the variant tables alone"
        )
        return report

    report.integrity = _integrity(cfg, rtol, atol, max_examples, block_bytes)
    return report


def _missing_predictions(cfg: RunConfig, run_file: Path) -> list[str]:
    """The run file's prediction files when none of them is here (the variant-tables-only
    check), else ``[]``; some here and some not is a user error (a wrong path, most
    likely), raised naming the first missing one."""
    named = [
        (p, group.name, number, side)
        for group in cfg.groups
        for number, batch in enumerate(group.batches, start=1)
        for side, p in (("ref", batch.ref), ("alt", batch.alt))
    ]
    missing = [str(f) for f in missing_prediction_files(p for p, *_ in named)]
    files = {str(prediction_file(p)) for p, *_ in named}
    if not missing or len(missing) == len(files):
        return missing
    p, group, number, side = next(n for n in named if str(prediction_file(n[0])) in missing)
    others = (
        f" and {count(len(missing) - 1, 'other')} ({', '.join(missing[1:3])}"
        f"{', ...' if len(missing) > 3 else ''})"
        if len(missing) > 1
        else ""
    )
    here = len(files) - len(missing)
    raise PerturbscoreError(
        f"{prediction_file(p)}: prediction file not found ({side} of group {group}, batch "
        f"{number} in {run_file}){others}, while {here} of the run file's "
        f"{count(len(files), 'prediction file')} are there; fix the path, or pass "
        "--positions-only to check the variant tables alone."
    )


def _count_classes(cfg: RunConfig, geo: GeometryConfig | None) -> ClassCounter:
    """Each variant table read and its ID columns checked; classes counted with a geometry."""
    from .variants import id_columns_of, read_variant_columns

    counter = ClassCounter()
    for group in cfg.groups:
        for number, batch in enumerate(group.batches, start=1):
            # Every column: the position columns are checked (and named) by the geometry.
            df = read_variant_columns(batch.variants)
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


def check_path(path: str | Path, positions_only: bool = False, **kwargs: Any) -> CheckReport:
    """:func:`.check_dir.check_run_dir` for a folder, :func:`check_run_file` otherwise."""
    for name in ("rtol", "atol"):
        value = kwargs.get(name)
        if value is not None and not value >= 0:
            raise PerturbscoreError(
                f"--{name} {value} is not a tolerance; give a number of 0 or more."
            )
    p = Path(path)
    comparison = p.parent if p.name == "compare.json" else p
    if (comparison / "compare.json").is_file() and not (comparison / "manifest.json").is_file():
        raise PerturbscoreError(
            f"{comparison} is a comparison's folder (compare.json), not a run; check the run "
            "folder it compared, or its run file."
        )
    if p.is_file() and p.name == "manifest.json":
        p = p.parent  # a finished run's own manifest: the run folder is meant
    elif p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
        raise PerturbscoreError(
            f"{p} is a table, not a run file or a run folder; give the run file (.toml), or "
            f"the folder that holds the run's manifest.json"
            + (f" ({p.parent})" if (p.parent / "manifest.json").is_file() else "")
            + "."
        )
    if p.is_dir():
        if positions_only:
            raise PerturbscoreError(
                f"{p}: --positions-only applies to a run file, not to a run folder."
            )
        from .check_dir import check_run_dir  # it builds on this module's CheckReport

        return check_run_dir(p)
    return check_run_file(p, positions_only=positions_only, **kwargs)
