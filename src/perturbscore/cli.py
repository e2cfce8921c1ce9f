"""Command-line interface: parses options, calls one library function, reports.

This module holds the ``perturbscore`` group and the commands that make score tables
(``run``, ``tracks``, ``demo``, ``import-scores``); :mod:`.cli_analysis` and
:mod:`.cli_predict` add the others, and :mod:`.cli_common` holds what they all share
(user errors as exit 2, logging and -q/-v, ``--memory``).

Exit codes: 0 success, 2 user error (bad input or options; nothing written),
141 standard output's reader gone (``| head``), 1 unexpected failure.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .cli_common import (
    CLOSED_PIPE_EXIT,
    chunk_rows_option,
    log,
    memory_option,
    out_folder_option,
    print_lines,
    report_interrupt,
    setup_logging,
    show_progress,
    single_threaded_blas,
    stdout_refused,
    table_format_option,
    track_options,
    user_errors,
    verbosity,
)
from .constants import ENGINES, NAN_POLICIES, OUT_OF_FIELD
from .errors import WRITE_ERRNOS, Interrupted, PerturbscoreError
from .memory import parse_size
from .messages import for_cli

if TYPE_CHECKING:
    from .engine import RunResult

# Heavy modules (numpy, pandas, pyarrow, the pipeline) are imported inside the commands,
# so that --help and --version stay instant.


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perturbscore")
@click.option(
    "-v", "--verbose", count=True, help="More log output on stderr (-vv: the libraries' too)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Per-variant perturbation scores from REF/ALT sequence-model predictions."""
    setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet, "verbose": verbose}


def _report(result: RunResult) -> None:
    # Data-like output (what was written) goes to stdout, one path per line.
    print_lines(map(str, result.files))
    if result.written:
        log.info("%d tables written (%d rows per block)", len(result.outputs), result.chunk_rows)
    else:
        log.info("%d tables of the finished run listed; nothing was written", len(result.outputs))


@cli.command("run")
@click.argument("run_file", type=click.Path(path_type=Path))
@out_folder_option()
@table_format_option("Output format; overrides the run file.")
@memory_option
@chunk_rows_option("Rows per block (default: about 1 MiB of selected values, within the budget).")
@click.option(
    "--center-bin",
    type=int,
    default=None,
    help="TSS bin for an even number of bins (e.g. 447 or 448 for Enformer's 896).",
)
@click.option(
    "--nan",
    "nan_policy",
    type=click.Choice(list(NAN_POLICIES)),
    default="error",
    show_default=True,
    help="NaN/Inf in predictions: fail, or carry into the scores.",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Threads: one writes, the others read and score blocks ahead (default: one per "
    "core, plus the writer; 1: everything in one thread).",
)
@click.option(
    "--engine",
    type=click.Choice(list(ENGINES)),
    default="local",
    show_default=True,
    help="Score blocks here, or on a Dask cluster (the same tables either way).",
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
@click.option(
    "--out-of-field",
    type=click.Choice(list(OUT_OF_FIELD)),
    default="keep",
    show_default=True,
    help="Variants outside the model's input (needs [geometry]): keep their 0 scores, "
    "write NaN, or leave the rows out.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output tables.")
@verbosity
@click.pass_context
@user_errors
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
    out_of_field: str,
    overwrite: bool,
) -> None:
    """Score the groups of RUN_FILE (TOML): one table per group x aggregation x statistic."""
    from .pipeline import RunOptions, run_path

    options = RunOptions(
        memory_bytes=parse_size(memory),
        chunk_rows=chunk_rows,
        overwrite=overwrite,
        nan_policy=nan_policy,
        format=fmt,
        progress=show_progress(),
        threads=threads,
        resume=resume,
        zarr=zarr_cube,
        engine=engine,
        scheduler=scheduler,
        workers=workers,
        out_of_field=out_of_field,
    )
    _report(run_path(run_file, out_dir, options, center_bin=center_bin))


@cli.command("tracks")
@click.argument("targets", type=click.Path(path_type=Path))
@track_options
@click.option(
    "--columns",
    default="index,identifier,assay,target,biosample,description",
    show_default=True,
    help="Comma-separated columns to print, or 'all'.",
)
@click.option("--sep", type=click.Choice(["tab", "comma"]), default="tab", show_default=True)
@verbosity
@user_errors
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
        command_line=True,
    )
    text = table.to_csv(sep="\t" if sep == "tab" else ",", index=False)
    print_lines([text.removesuffix("\n")], "the track table")
    log.info("%d track%s", len(table), "" if len(table) == 1 else "s")


@cli.command("demo")
@click.argument("folder", type=click.Path(path_type=Path), default=Path("demo-out"))
@click.option(
    "--overwrite",
    is_flag=True,
    help=(
        "Replace the files an earlier demo wrote there (only those, as its record "
        "perturbscore-demo.json or their bytes show; a file of a demo name that is not the "
        "demo's is refused, never touched)."
    ),
)
@verbosity
@click.pass_context
@user_errors
def demo_cmd(ctx: click.Context, folder: Path, overwrite: bool) -> None:
    """Write a synthetic dataset in the study's layout to FOLDER and run stablefm.toml on it.

    Refuses, changing nothing, if FOLDER already holds any file the demo writes
    (its inputs or its results), unless --overwrite; even then, if one of them is not
    the demo's own (the user's, or a demo file the user edited).
    """
    from .demo import run_demo

    result = run_demo(folder, overwrite=overwrite, progress=show_progress())
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
@track_options
@click.option(
    "--normalise",
    type=click.Choice(["none", "zscore"]),
    default="none",
    show_default=True,
    help="zscore: per track over all groups' variants.",
)
@table_format_option("Output format.", default="parquet")
@out_folder_option()
@click.option("--overwrite", is_flag=True, help="Replace existing output tables.")
@memory_option
@verbosity
@user_errors
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
    memory: str,
) -> None:
    """Re-select (and normalise) Calico-style scores files: SOURCES are GROUP=FILE.h5."""
    from .calico import import_scores
    from .tracks import selection_from_options

    groups: dict[str, str] = {}
    for item in sources:
        group, sep, file = item.partition("=")
        if not sep or not group or not file:
            raise PerturbscoreError(f"source {item!r}: write GROUP=FILE, e.g. top=top_sad.h5.")
        if group in groups:
            raise PerturbscoreError(
                f"group {group} is given twice ({groups[group]} and {file}); give each group "
                "one scores file."
            )
        groups[group] = file
    result = import_scores(
        groups,
        statistic,
        targets,
        out_dir,
        selection_from_options(
            shortlist, list(identifiers), list(indices), list(where), command_line=True
        ),
        normalise=normalise,
        fmt=fmt,
        overwrite=overwrite,
        memory_bytes=parse_size(memory),
    )
    print_lines(map(str, [*result.tables.values(), result.manifest]))


def _terminate(signum: int, frame: object) -> None:
    # SLURM and other schedulers end jobs with SIGTERM: unwind like Ctrl-C, so that
    # temporary files are removed and --resume state is synced.
    raise Interrupted("SIGTERM", 128 + signum)


#: click >= 8.2 raises this for a bare ``perturbscore`` (older versions print the help).
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """Console-script entry point.

    click's own usage errors (an option value not among the choices, a missing option, a
    typo'd option) get the one-line form of every other user error, with exit code 2,
    instead of click's usage block.
    """
    signal.signal(signal.SIGTERM, _terminate)
    single_threaded_blas()
    for_cli()
    try:
        code = cli.main(prog_name="perturbscore", standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:  # bare `perturbscore`: the help, as click shows it
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        where = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        message = exc.format_message().replace(". (Did you mean", " (did you mean").rstrip(".")
        click.echo(f"perturbscore: error: {message}{where}.", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # Ctrl-C while click itself reads input
        report_interrupt(KeyboardInterrupt())
    except (Interrupted, KeyboardInterrupt) as exc:  # a signal while the options are parsed
        report_interrupt(exc)
    except OSError as exc:  # click's own --help/--version text on a full stdout
        if exc.errno not in WRITE_ERRNOS | {errno.EIO}:
            raise
        with contextlib.suppress(OSError):
            click.echo(f"perturbscore: error: {stdout_refused(exc)}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def console() -> None:
    """The ``perturbscore`` program: :func:`main`, then an exit without Python's teardown.

    Once a command has returned, every output is committed and fsynced and every worker
    joined; what is left is the interpreter's teardown (freeing each module's objects,
    pandas' and pyarrow's among them), measured at 0.10-0.12 s of a 1.7 s study-sized
    run and of no use to anyone.  So the streams are flushed and the process exits at
    once with the command's status.  An unexpected exception is left to Python, which
    prints its traceback and exits 1 as usual.  Tests call :func:`main`, which exits
    through ``SystemExit``.
    """
    try:
        main()
        status: object = 0
    except SystemExit as exc:
        status = exc.code
    if status is not None and not isinstance(status, int):
        print(status, file=sys.stderr)  # what SystemExit("text") does
        status = 1
    logging.shutdown()  # flushes and closes the handlers
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # a reader gone (| head): the end of print_lines' case
            if stream is sys.stdout and not status:
                status = CLOSED_PIPE_EXIT
        except (OSError, ValueError):  # nothing more to say where nothing can be said
            pass
    os._exit(status or 0)


# The command modules register on ``cli`` above, so they are imported once it exists.
from . import cli_analysis as cli_analysis  # noqa: E402
from . import cli_predict as cli_predict  # noqa: E402
