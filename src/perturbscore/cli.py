"""Command-line interface: parses options, calls one library function, reports.

Exit codes: 0 success, 2 user error (bad input or options; nothing written),
1 unexpected failure.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import PerturbscoreError
from .memory import DEFAULT_MEMORY_BYTES, parse_size
from .pipeline import NAN_POLICIES, RunOptions, RunResult, run_path
from .writers import FORMATS

log = logging.getLogger("perturbscore")
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Turn :class:`PerturbscoreError` into a one-line message and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PerturbscoreError as exc:
            click.echo(f"perturbscore: error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose == 0 and not quiet:
        level = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("perturbscore: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perturbscore")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Per-variant perturbation scores from REF/ALT sequence-model predictions."""
    _setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet}


def _report(result: RunResult) -> None:
    # Data-like output (what was written) goes to stdout, one path per line.
    for o in result.outputs:
        click.echo(str(o.path))
    click.echo(str(result.manifest))
    log.info("%d tables written (%d rows per block)", len(result.outputs), result.chunk_rows)


@cli.command("run")
@click.argument("run_file", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (created if missing).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default=None,
    help="Output format; overrides the run file.",
)
@click.option(
    "--memory",
    default=str(DEFAULT_MEMORY_BYTES),
    show_default=True,
    help="Memory budget in bytes, or with a unit: 512MB, 2GiB.",
)
@click.option(
    "--chunk-rows",
    type=int,
    default=None,
    help="Rows per block (default: the most the memory budget allows).",
)
@click.option(
    "--center-bin",
    type=int,
    default=None,
    help="TSS bin for an even number of bins (e.g. 447 or 448 for Enformer's 896).",
)
@click.option(
    "--nan",
    "nan_policy",
    type=click.Choice(NAN_POLICIES),
    default="error",
    show_default=True,
    help="NaN/Inf in predictions: fail, or carry into the scores.",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Threads (default: every core): one scores, the others read ahead.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Compute here, or on Dask (writes partitioned Parquet datasets).",
)
@click.option(
    "--scheduler",
    default=None,
    help="Dask scheduler address (tcp://host:8786); default: a local cluster.",
)
@click.option("--workers", type=int, default=None, help="Workers of the local Dask cluster.")
@click.option(
    "--zarr",
    "zarr_cube",
    is_flag=True,
    help="Also write each group's score cube as {group}_scores.zarr (xarray).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Record finished blocks; after a crash, the same command continues.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output tables.")
@click.pass_context
@_user_errors
def run_cmd(
    ctx: click.Context,
    run_file: Path,
    out_dir: Path,
    fmt: str | None,
    memory: str,
    chunk_rows: int | None,
    center_bin: int | None,
    nan_policy: str,
    threads: int | None,
    engine: str,
    scheduler: str | None,
    workers: int | None,
    zarr_cube: bool,
    resume: bool,
    overwrite: bool,
) -> None:
    """Score the groups of RUN_FILE (TOML): one table per group x aggregation x statistic."""
    options = RunOptions(
        memory_bytes=parse_size(memory),
        chunk_rows=chunk_rows,
        overwrite=overwrite,
        nan_policy=nan_policy,
        format=fmt,
        progress=not ctx.obj["quiet"],
        threads=threads,
        resume=resume,
        zarr=zarr_cube,
        engine=engine,
        scheduler=scheduler,
        workers=workers,
    )
    _report(run_path(run_file, out_dir, options, center_bin=center_bin))


@cli.command("tracks")
@click.argument("targets", type=click.Path(path_type=Path))
@click.option(
    "--shortlist",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV with an 'index' column of 0-based track numbers.",
)
@click.option("--identifier", "identifiers", multiple=True, help="Track identifier (repeatable).")
@click.option("--index", "indices", type=int, multiple=True, help="0-based track (repeatable).")
@click.option(
    "--where",
    "where",
    multiple=True,
    help="Query: field=value (word match), field==value (exact), field~regex. "
    "Fields: assay, target, biosample, identifier, description, ...",
)
@click.option(
    "--columns",
    default="index,identifier,assay,target,biosample,description",
    show_default=True,
    help="Comma-separated columns to print, or 'all'.",
)
@click.option("--sep", type=click.Choice(["tab", "comma"]), default="tab", show_default=True)
@_user_errors
def tracks_cmd(
    targets: Path,
    shortlist: Path | None,
    identifiers: tuple[str, ...],
    indices: tuple[int, ...],
    where: tuple[str, ...],
    columns: str,
    sep: str,
) -> None:
    """Print the parsed (and optionally selected) track table of TARGETS to stdout."""
    from .tracks import track_listing

    table = track_listing(
        targets,
        shortlist=shortlist,
        identifiers=identifiers,
        indices=indices,
        where=where,
        columns=columns,
    )
    table.to_csv(sys.stdout, sep="\t" if sep == "tab" else ",", index=False)
    log.info("%d tracks", len(table))


@cli.command("demo")
@click.argument("folder", type=click.Path(path_type=Path), default=Path("demo-out"))
@click.option("--overwrite", is_flag=True, help="Replace the results of an earlier demo.")
@click.pass_context
@_user_errors
def demo_cmd(ctx: click.Context, folder: Path, overwrite: bool) -> None:
    """Write a synthetic dataset in the study's layout to FOLDER and run stablefm.toml on it."""
    from .demo import run_demo

    result = run_demo(folder, overwrite=overwrite, progress=not ctx.obj["quiet"])
    log.info("synthetic demo data and its run file are in %s", folder)
    _report(result)


@cli.command("import-scores")
@click.argument("sources", nargs=-1, required=True)
@click.option("--statistic", required=True, help="Dataset of the scores files, e.g. SAD.")
@click.option(
    "--targets",
    required=True,
    type=click.Path(path_type=Path),
    help="Track table of the model that made the scores.",
)
@click.option("--shortlist", type=click.Path(path_type=Path), default=None)
@click.option("--identifier", "identifiers", multiple=True)
@click.option("--index", "indices", type=int, multiple=True)
@click.option("--where", "where", multiple=True, help="Track query, as for 'tracks'.")
@click.option(
    "--normalise",
    type=click.Choice(["none", "zscore"]),
    default="none",
    show_default=True,
    help="zscore: per track over all groups' variants.",
)
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="parquet", show_default=True
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
@_user_errors
def import_scores_cmd(
    sources: tuple[str, ...],
    statistic: str,
    targets: Path,
    shortlist: Path | None,
    identifiers: tuple[str, ...],
    indices: tuple[int, ...],
    where: tuple[str, ...],
    normalise: str,
    fmt: str,
    out_dir: Path,
    overwrite: bool,
) -> None:
    """Re-select (and normalise) Calico-style scores files: SOURCES are GROUP=FILE.h5."""
    from .calico import import_scores
    from .tracks import selection_from_options

    groups: dict[str, str] = {}
    for item in sources:
        group, sep, file = item.partition("=")
        if not sep or not group or not file:
            raise PerturbscoreError(f"source {item!r}: write GROUP=FILE, e.g. top=top_sad.h5.")
        groups[group] = file
    result = import_scores(
        groups,
        statistic,
        targets,
        out_dir,
        selection_from_options(shortlist, list(identifiers), list(indices), list(where)),
        normalise=normalise,
        fmt=fmt,
        overwrite=overwrite,
    )
    for table in result.tables.values():
        click.echo(str(table))
    click.echo(str(result.manifest))


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
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an earlier comparison in --out.")
@click.pass_context
@_user_errors
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
    out_dir: Path,
    overwrite: bool,
) -> None:
    """Test group B against group A on every track of the run in RUN_FOLDER."""
    from .extras import require

    require("scipy", "perturbscore compare")
    require("matplotlib", "perturbscore compare (figures)")
    from .report import run_comparison

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
        plot_tracks=plot_tracks,
        xlim=xlim,
        overwrite=overwrite,
        memory=parse_size(memory),
        progress=not (ctx.obj or {}).get("quiet", False),
    )
    click.echo(str(out_dir / "tests.csv"))
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
@_user_errors
def report_cmd(compare_folder: Path, out: Path | None) -> None:
    """Write one self-contained HTML report from a 'perturbscore compare' folder."""
    from .extras import require

    require("pandas", "perturbscore report")
    from .report import build_report

    click.echo(str(build_report(compare_folder, out)))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="perturbscore")
