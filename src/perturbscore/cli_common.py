"""What every CLI command shares: user errors as exit 2, logging and -q/-v, common options.

:mod:`perturbscore.cli` (the group and the run commands), :mod:`perturbscore.cli_analysis`
and :mod:`perturbscore.cli_predict` build their commands from these.  Only click and
the standard library are imported here, so that ``perturbscore --help`` stays instant.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .constants import OUTPUT_FORMATS
from .errors import WRITE_ERRNOS, Interrupted, PerturbscoreError, full_disk
from .memory import DEFAULT_MEMORY_BYTES

log = logging.getLogger("perturbscore")
F = TypeVar("F", bound=Callable[..., Any])

#: ``--memory`` of every command that streams under a budget.
memory_option = click.option(
    "--memory",
    default=str(DEFAULT_MEMORY_BYTES),
    show_default=True,
    help="Memory budget in bytes, or with a unit: 512MB (= 512M, 10^6 bytes each), 512MiB, 2GiB.",
)


#: Variables OpenBLAS reads for its thread count, in the order it reads them.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def single_threaded_blas() -> None:
    """One OpenBLAS thread for the console script, unless the user chose a number.

    numpy's OpenBLAS starts a pool of threads when numpy is imported, and each spins for
    a while looking for work; no command here multiplies matrices, so on a 2-core machine
    that spin took 0.1-0.15 CPU s of a study-sized run from its own reading threads.
    Sets ``OPENBLAS_NUM_THREADS=1`` in this process's environment unless one of
    :data:`BLAS_THREAD_VARIABLES` is set (the user's choice is kept).  Must run before
    numpy is imported (``perturbscore.cli`` does not import it).  torch, which
    ``predict`` runs, uses MKL and its own threads on x86-64 (its build here), which
    this leaves alone.
    """
    if not any(os.environ.get(v) for v in BLAS_THREAD_VARIABLES):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"


class _FolderPath(click.Path):
    """A path option that refuses an empty value: ``--out "$OUT"`` with ``OUT`` unset
    would otherwise write into the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; name the output folder (use . for the current one).", param, ctx)
        return super().convert(value, param, ctx)


def out_folder_option(
    required: bool = True, help: str = "Output folder (created if missing)."
) -> Any:
    """``--out`` (parameter ``out_dir``) of every command that writes a folder."""
    # No explicit default: click >= 8.3 takes ``default=None`` as a given value, and a
    # required option would then never be reported missing.
    return click.option(
        "--out",
        "out_dir",
        required=required,
        type=_FolderPath(path_type=Path),
        help=help,
    )


def table_format_option(help: str, default: str | None = None) -> Any:
    """``--format`` (parameter ``fmt``) of the commands that write score tables."""
    return click.option(
        "--format",
        "fmt",
        # As the run file's format: any case, given back as the canonical (lower-case) name.
        type=click.Choice(list(OUTPUT_FORMATS), case_sensitive=False),
        default=default,
        show_default=default is not None,
        help=help,
    )


def chunk_rows_option(help: str) -> Any:
    """``--chunk-rows`` of the commands that stream blocks (a block size never changes a
    result)."""
    return click.option("--chunk-rows", type=int, default=None, help=help)


def track_options(func: F) -> F:
    """``--shortlist``, ``--identifier``, ``--index``, ``--where``: a run file's ``[tracks]``.

    The commands that select tracks (``tracks``, ``import-scores``, ``predict``) share
    them, with the selection language of :mod:`perturbscore.tracks`.
    """
    options = [
        click.option(
            "--shortlist",
            type=click.Path(path_type=Path),
            default=None,
            help="Keep the tracks of this CSV's 'index' column (0-based track numbers).",
        ),
        click.option(
            "--identifier", "identifiers", multiple=True, help="Keep this track (repeatable)."
        ),
        click.option(
            "--index",
            "indices",
            type=int,
            multiple=True,
            help="Keep this 0-based track (repeatable).",
        ),
        click.option(
            "--where",
            "where",
            multiple=True,
            help="Keep tracks matching a query: field=value (word match), field==value "
            "(exact), field~regex; fields: assay, target, biosample, identifier, "
            "description, ... (repeatable: all must match).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def user_errors(func: F) -> F:
    """User errors: one line and exit 2; signals: what to do next and 128 + signal."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PerturbscoreError as exc:
            click.echo(f"perturbscore: error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            # A full, over-quota or read-only output file system is the user's to fix
            # (the run engine words its own; this covers every other write, e.g. a lock).
            if exc.errno not in WRITE_ERRNOS:
                raise
            message = write_refused(exc, kwargs.get("out_dir"))
            click.echo(f"perturbscore: error: {message}", err=True)
            sys.exit(2)
        except (Interrupted, KeyboardInterrupt) as exc:
            report_interrupt(exc)

    return wrapper  # type: ignore[return-value]


def report_interrupt(exc: BaseException) -> NoReturn:
    """What a signal stopped, and what to do next; exit 128 + the signal number.

    A command that was writing says itself how to continue (``--resume``); any other
    stop left nothing behind (outputs are all or nothing, cleanup ran).
    """
    if isinstance(exc, Interrupted):
        text, code = str(exc), exc.exit_code
    else:
        text, code = "interrupted by SIGINT", 130
    if text in ("interrupted by SIGINT", "interrupted by SIGTERM"):  # no command's advice
        text += "; nothing was written: run the same command again"
    click.echo(f"perturbscore: {text}", err=True)
    sys.exit(code)


#: Exit status when standard output's reader has gone (``| head``): that of a program
#: killed by SIGPIPE (128 + 13), as the shell's own tools end.
CLOSED_PIPE_EXIT = 141


def stdout_refused(exc: OSError, what: str = "", after: str = "") -> str:
    """One sentence for standard output that cannot be written (a full disk): ``what``
    could not be written there; ``after`` adds what is fine all the same."""
    subject = f"{what} " if what else ""
    return (
        f"cannot write {subject}to standard output ({exc.strerror or exc}){after}: free "
        "space where standard output goes, or send it to another file."
    )


def print_lines(lines: Iterable[str], what: str | None = None) -> None:
    """Write ``lines`` to standard output, each ended by a line break; what goes wrong there
    is said so.

    ``what`` names the text for messages; None: the list of the files a command wrote,
    which it prints after committing them, so that they are complete whatever happens
    to the list.  A reader that closed the pipe early (``| head``) ends the command
    quietly with :data:`CLOSED_PIPE_EXIT` (click would exit 1, the status of an
    unexpected failure); standard output on a full disk (or failing) is a user error.
    """
    try:
        for text in lines:
            # A line at a time, even of a long text: one large write into a pipe whose
            # reader leaves (| head) can end as a short write that Python reports as
            # nothing, where a small one raises BrokenPipeError.
            for line in text.split("\n"):
                click.echo(line)
    except BrokenPipeError:
        # Nothing more reaches the reader; later flushes of stdout must not fail again.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
        sys.exit(CLOSED_PIPE_EXIT)
    except OSError as exc:
        if what is None:
            message = stdout_refused(
                exc, "the list of files written", "; the outputs themselves are complete"
            )
        else:
            message = stdout_refused(exc, what)
        raise PerturbscoreError(message) from None


def write_refused(exc: OSError, out_dir: object = None) -> str:
    """One sentence for an OSError of :data:`WRITE_ERRNOS`, naming where and what to do."""
    where = exc.filename or out_dir
    place = f"cannot write {where}" if where else "cannot write the outputs"
    if exc.errno == errno.EROFS:
        return f"{place}: the file system is read-only; choose another --out folder."
    full = full_disk(exc)
    return f"{place}: the {full}; free space there or choose another --out folder."


def setup_logging(verbose: int, quiet: bool) -> None:
    """-q: warnings only; default: info; -v: debug; -vv: debug of the libraries too."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("perturbscore: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    if verbose > 1:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


def verbosity(func: F) -> F:
    """-v/-q also after the subcommand (``perturbscore run -q ...``)."""

    def update(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        obj = ctx.ensure_object(dict)
        if param.name == "verbose" and value:
            obj["verbose"] = obj.get("verbose", 0) + value
        if param.name == "quiet" and value:
            obj["quiet"] = True
        setup_logging(obj.get("verbose", 0), obj.get("quiet", False))
        return value

    func = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=update,
        help="Only warnings and errors; no progress bar.",
    )(func)
    func = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=update,
        help="More log output on stderr (-vv: the libraries' too).",
    )(func)
    return func


def is_quiet() -> bool:
    """Whether -q was given, before or after the subcommand (no progress bar then)."""
    return bool(click.get_current_context().ensure_object(dict).get("quiet"))


def show_progress() -> bool:
    """A progress bar on stderr: unless -q, and only on a terminal (a log file of a batch
    job would fill with its carriage-return frames)."""
    return not is_quiet() and sys.stderr.isatty()
