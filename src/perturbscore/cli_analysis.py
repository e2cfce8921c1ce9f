"""CLI commands that analyse finished runs: compare, report, check, normalise.

They register on :data:`perturbscore.cli.cli`; :mod:`perturbscore.cli` imports this
module after the group exists.  Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli import cli
from .cli_common import (
    chunk_rows_option,
    log,
    memory_option,
    out_folder_option,
    print_lines,
    show_progress,
    table_format_option,
    user_errors,
    verbosity,
)
from .memory import parse_size


@cli.command("compare")
@click.argument("run_folder", type=click.Path(path_type=Path))
@click.option("--a", "group_a", required=True, help="Group A (e.g. stab).")
@click.option("--b", "group_b", required=True, help="Group B, tested against A (e.g. top).")
@click.option(
    "--design",
    "designs",
    multiple=True,
    default=("unpaired",),
    show_default=True,
    type=click.Choice(["unpaired", "paired", "matching"]),
    help="Repeatable.",
)
@click.option(
    "--pairing",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Pairing table or folder of tables, e.g. fine_mapping/ (repeatable).",
)
@click.option("--a-prefix", default=None, help="Pairing column prefix of A (default: A upper).")
@click.option("--b-prefix", default=None, help="Pairing column prefix of B (default: B upper).")
@click.option(
    "--keys",
    default="GENE,rsID,ALT",
    show_default=True,
    help="Score-table columns a pairing variant is looked up by; only they decide.",
)
@click.option(
    "--duplicates",
    type=click.Choice(["error", "first", "mean", "max"]),
    default="error",
    show_default=True,
    help="A pairing variant matching several score rows.",
)
@click.option(
    "--per-rank",
    is_flag=True,
    help="Test each pairing rank (potential set 1, 2, 3) separately, as the study does.",
)
@click.option("--track", "tracks", multiple=True, help="Restrict to these track identifiers.")
@click.option(
    "--family",
    type=click.Choice(["all", "design", "table", "rank"]),
    default="all",
    show_default=True,
    help="BH family: all tests, per design, per (design, aggregation, statistic), or that "
    "per rank.",
)
@click.option(
    "--plot-track",
    "plot_tracks",
    multiple=True,
    help="Draw ECDFs for these tracks (default: the 3 most significant per design).",
)
@click.option("--xlim", nargs=2, type=float, default=None, help="ECDF x-axis limits: LOW HIGH.")
@click.option(
    "--memory",
    default="1GiB",
    show_default=True,
    help="Budget for the blocks of track columns read at a time (e.g. 512MB, 2GiB).",
)
@click.option(
    "--out-of-field",
    type=click.Choice(["keep", "exclude"]),
    default="keep",
    show_default=True,
    help="exclude: leave variants outside the model's input out of every test (needs the "
    "run's class column); the summary counts them.",
)
@out_folder_option(help="Folder for the tests, figures and compare.json (created if missing).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier comparison in --out.")
@verbosity
@click.pass_context
@user_errors
def compare_cmd(
    ctx: click.Context,
    run_folder: Path,
    group_a: str,
    group_b: str,
    designs: tuple[str, ...],
    pairing: tuple[Path, ...],
    a_prefix: str | None,
    b_prefix: str | None,
    keys: str,
    duplicates: str,
    per_rank: bool,
    tracks: tuple[str, ...],
    family: str,
    plot_tracks: tuple[str, ...],
    xlim: tuple[float, float] | None,
    memory: str,
    out_of_field: str,
    out_dir: Path,
    overwrite: bool,
) -> None:
    """Test group B against group A on every track of the run in RUN_FOLDER."""
    from .extras import require

    require("scipy", "perturbscore compare")
    require("matplotlib", "perturbscore compare (figures)")
    from .compare_outputs import run_comparison

    summary = run_comparison(
        run_folder,
        out_dir,
        group_a=group_a,
        group_b=group_b,
        designs=designs,
        pairing=pairing,
        a_prefix=a_prefix,
        b_prefix=b_prefix,
        keys=[k.strip() for k in keys.split(",") if k.strip()],
        duplicates=duplicates,
        tracks=tracks,
        family=family,
        per_rank=per_rank,
        out_of_field=out_of_field,
        plot_tracks=plot_tracks,
        xlim=xlim,
        overwrite=overwrite,
        memory=parse_size(memory),
        progress=show_progress(),
    )
    # stdout: every file this comparison wrote, one per line.
    written = [*summary["files"], "compare.json"]
    written += [f[k] for f in summary["figures"] for k in ("png", "svg") if f.get(k)]
    print_lines(str(out_dir / rel) for rel in written)
    log.info(
        "%d tests, %d with adjusted two-sided p < 0.05",
        summary["n_tests"],
        summary["n_significant_two_sided_0.05"],
    )


@cli.command("report")
@click.argument("compare_folder", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="HTML file (default COMPARE_FOLDER/report.html).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing --out page that perturbscore report wrote (never another file).",
)
@verbosity
@user_errors
def report_cmd(compare_folder: Path, out: Path | None, overwrite: bool) -> None:
    """Write one self-contained HTML report from a 'perturbscore compare' folder."""
    from .extras import require

    require("pandas", "perturbscore report")
    from .report import build_report

    print_lines([str(build_report(compare_folder, out, overwrite))])


@cli.command("check")
@click.argument("target", metavar="RUN_FILE|RUN_DIR", type=click.Path(path_type=Path))
@click.option(
    "--positions-only",
    is_flag=True,
    help="Classes from the variant tables only; do not read the predictions.",
)
@click.option("--rtol", type=float, default=1e-5, show_default=True, help="Cross-group rtol.")
@click.option("--atol", type=float, default=1e-6, show_default=True, help="Cross-group atol.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@verbosity
@user_errors
def check_cmd(target: Path, positions_only: bool, rtol: float, atol: float, as_json: bool) -> None:
    """Receptive-field classes and integrity checks of a run file or a finished run.

    A finished run's tables are checked too (there, readable, with their recorded rows
    and tracks).  Exit code 0: clean; 3: flagged (misaligned rows or wrong positions,
    NaN/Inf in the predictions, a table of the run missing or damaged); 2: user error.
    """
    import json

    from .check import check_path

    report = check_path(target, positions_only=positions_only, rtol=rtol, atol=atol)
    print_lines([json.dumps(report.as_dict(), indent=2) if as_json else report.text()],
                "the check's report")
    sys.exit(report.exit_code)


@cli.command("normalise")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--background", default=None, help="Group of the run that is the background.")
@click.option(
    "--background-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Background file (.npz) saved earlier with --save-background.",
)
@click.option(
    "--save-background",
    type=click.Path(path_type=Path),
    default=None,
    help="Also save the background built from --background to this .npz file.",
)
@click.option(
    "--statistic",
    "statistics",
    multiple=True,
    type=click.Choice(["quantile", "robust_z"]),
    help="Normalised statistic (repeatable; default both).",
)
@out_folder_option()
@table_format_option("Output format (default: the run's).")
@memory_option
@chunk_rows_option("Rows per block (default: the most the memory budget allows).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing output tables and the --save-background file.",
)
@verbosity
@user_errors
def normalise_cmd(
    run_dir: Path,
    background: str | None,
    background_file: Path | None,
    save_background: Path | None,
    statistics: tuple[str, ...],
    out_dir: Path,
    fmt: str | None,
    memory: str,
    chunk_rows: int | None,
    overwrite: bool,
) -> None:
    """Background-normalised copies (quantile, robust z) of the tables of RUN_DIR."""
    from .normalise_run import normalise_run

    result = normalise_run(
        run_dir,
        out_dir,
        background=background,
        background_file=background_file,
        statistics=statistics or ("quantile", "robust_z"),
        fmt=fmt,
        save_background=save_background,
        overwrite=overwrite,
        memory_bytes=parse_size(memory),
        block_rows=chunk_rows,
    )
    files = [*result.tables, result.manifest]
    print_lines(map(str, files + ([result.background_file] if result.background_file else [])))
    n, rows = len(result.tables), result.block_rows
    log.info(
        "%d table%s normalised (%d row%s per block)",
        *(n, "s" if n != 1 else "", rows, "s" if rows != 1 else ""),
    )
