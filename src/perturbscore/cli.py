"""Command-line interface: parses options, calls one library function, reports.

Exit codes: 0 success, 2 user error (bad input or options; nothing written),
1 unexpected failure.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .constants import ENGINES, NAN_POLICIES, OUT_OF_FIELD, OUTPUT_FORMATS
from .errors import Interrupted, PerturbscoreError
from .memory import DEFAULT_MEMORY_BYTES, parse_size

if TYPE_CHECKING:
    from .engine import RunResult

# Heavy modules (numpy, pandas, pyarrow, the pipeline) are imported inside the commands,
# so that --help and --version stay instant.
FORMATS = OUTPUT_FORMATS
log = logging.getLogger("perturbscore")
F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """User errors: one line and exit 2; signals: what to do next and 128 + signal."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PerturbscoreError as exc:
            click.echo(f"perturbscore: error: {exc}", err=True)
            sys.exit(2)
        except Interrupted as exc:
            click.echo(f"perturbscore: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("perturbscore: interrupted by SIGINT", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _setup_logging(verbose: int, quiet: bool) -> None:
    """-q: warnings only; default: info; -v: debug; -vv: debug of the libraries too."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("perturbscore: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    if verbose > 1:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


def _verbosity(func: F) -> F:
    """-v/-q also after the subcommand (``perturbscore run -q ...``)."""

    def update(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        obj = ctx.ensure_object(dict)
        if param.name == "verbose" and value:
            obj["verbose"] = obj.get("verbose", 0) + value
        if param.name == "quiet" and value:
            obj["quiet"] = True
        _setup_logging(obj.get("verbose", 0), obj.get("quiet", False))
        return value

    func = click.option(
        "-q", "--quiet", is_flag=True, expose_value=False, callback=update,
        help="Only warnings and errors; no progress bar.",
    )(func)
    func = click.option(
        "-v", "--verbose", count=True, expose_value=False, callback=update,
        help="More log output on stderr (-vv: the libraries' too).",
    )(func)
    return func


def _quiet() -> bool:
    return bool(click.get_current_context().ensure_object(dict).get("quiet"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="perturbscore")
@click.option(
    "-v", "--verbose", count=True, help="More log output on stderr (-vv: the libraries' too)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Per-variant perturbation scores from REF/ALT sequence-model predictions."""
    _setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet, "verbose": verbose}


def _report(result: RunResult) -> None:
    # Data-like output (what was written) goes to stdout, one path per line.
    for path in result.files:
        click.echo(str(path))
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
    type=click.Choice(list(NAN_POLICIES)),
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
    type=click.Choice(list(ENGINES)),
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
@click.option(
    "--out-of-field",
    type=click.Choice(list(OUT_OF_FIELD)),
    default="keep",
    show_default=True,
    help="Variants outside the model's input (needs [geometry]): keep their 0 scores, "
    "write NaN, or leave the rows out.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output tables.")
@_verbosity
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
        progress=not _quiet(),
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
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the files an earlier demo wrote there (only those; others are never touched).",
)
@click.pass_context
@_user_errors
def demo_cmd(ctx: click.Context, folder: Path, overwrite: bool) -> None:
    """Write a synthetic dataset in the study's layout to FOLDER and run stablefm.toml on it.

    Refuses, changing nothing, if FOLDER already holds any file the demo writes
    (its inputs or its results), unless --overwrite.
    """
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
@click.option(
    "--memory",
    default=str(DEFAULT_MEMORY_BYTES),
    show_default=True,
    help="Memory budget in bytes, or with a unit: 512MB, 2GiB.",
)
@_verbosity
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
        selection_from_options(shortlist, list(identifiers), list(indices), list(where)),
        normalise=normalise,
        fmt=fmt,
        overwrite=overwrite,
        memory_bytes=parse_size(memory),
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
@click.option(
    "--out-of-field",
    type=click.Choice(["keep", "exclude"]),
    default="keep",
    show_default=True,
    help="exclude: leave variants outside the model's input out of every test (needs the "
    "run's class column); the summary counts them.",
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
    out_of_field: str,
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
        out_of_field=out_of_field,
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
@_user_errors
def check_cmd(target: Path, positions_only: bool, rtol: float, atol: float, as_json: bool) -> None:
    """Receptive-field classes and integrity checks of a run file or a finished run.

    Exit code 0: clean; 3: rows flagged (misaligned rows or wrong positions); 2: user error.
    """
    import json

    from .check import check_path

    report = check_path(target, positions_only=positions_only, rtol=rtol, atol=atol)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.text())
    sys.exit(report.exit_code)


def _terminate(signum: int, frame: object) -> None:
    # SLURM and other schedulers end jobs with SIGTERM: unwind like Ctrl-C, so that
    # temporary files are removed and --resume state is synced.
    raise Interrupted("SIGTERM", 128 + signum)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="perturbscore")


@cli.command("predict")
@click.argument("variants", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--genome", type=click.Path(path_type=Path), default=None,
              help="Indexed FASTA, plain or bgzipped (needs FASTA.fai, and FASTA.gzi).")
@click.option("--model", default=None,
              help="enformer-pytorch model: a save_pretrained folder or a hub id.")
@click.option("--targets", type=click.Path(path_type=Path), default=None,
              help="The model's track table (targets_human.txt).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (created if missing).")
@click.option("--shortlist", type=click.Path(path_type=Path), default=None,
              help="Keep the tracks of this CSV's 'index' column.")
@click.option("--identifier", "identifiers", multiple=True, help="Keep this track (repeatable).")
@click.option("--index", "indices", type=int, multiple=True, help="Keep this 0-based track.")
@click.option("--where", multiple=True, help="Keep tracks matching field=value (as in 'run').")
@click.option("--head", default="human", show_default=True, help="Model output head.")
@click.option("--bins", default="3", show_default=True,
              help="Odd number of central bins to keep, or 'all'.")
@click.option("--center-bin", type=int, default=None,
              help="Bin holding the window centre: B/2 (default; 448 of 896: window start = "
              "centre - window/2) or B/2 - 1 (447: one base to the right).")
@click.option("--input-length", type=int, default=None,
              help="Bases the model reads (default: the model config's sequence_length, or "
              "196608); the window is twice that.")
@click.option("--centre-column", default=None,
              help="Column with a 1-based window centre per variant (e.g. a TSS).")
@click.option("--chrom-column", default=None, help="Chromosome column (default: detected).")
@click.option("--pos-column", default=None, help="1-based position column (default: detected).")
@click.option("--ref-column", default=None, help="REF allele column (default REF).")
@click.option("--alt-column", default=None, help="ALT allele column (default ALT).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--precision", type=click.Choice(["float32", "float16", "bfloat16"]),
              default="float32", show_default=True, help="Model precision.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32",
              show_default=True, help="Stored prediction dtype.")
@click.option("--reverse-complement", is_flag=True,
              help="Average with the reverse complement's prediction (bins flipped back).")
@click.option("--no-ref-cache", is_flag=True, help="Predict REF again for every variant.")
@click.option("--no-skip-out-of-field", is_flag=True,
              help="Run the model for variants outside its input too.")
@click.option("--skip-ref-mismatch", is_flag=True,
              help="Leave out variants whose REF differs from the genome (counted).")
@click.option("--group", default="predicted", show_default=True,
              help="Group name in the run file written beside the predictions.")
@click.option("--resume", is_flag=True,
              help="Keep what an interrupted run recorded; the same command with --resume "
              "continues it.")
@click.option("--overwrite", is_flag=True, help="Replace earlier predictions in --out.")
@click.option("--plan-only", is_flag=True,
              help="Only count windows and forward passes (no genome or weights needed).")
@click.pass_context
@_user_errors
def predict_cmd(ctx: click.Context, variants: tuple[Path, ...], plan_only: bool,
                **kw: Any) -> None:
    """Predict REF/ALT with Enformer for VARIANTS (table or VCF) and write a run file."""
    from .tracks import selection_from_options

    columns = {k: kw[k] for k in ("centre_column", "chrom_column", "pos_column",
                                  "ref_column", "alt_column")}
    if plan_only:
        from .predict_model import plan_geometry
        from .windows import plan_tables

        geometry = plan_geometry(kw["model"], kw["input_length"], kw["center_bin"])
        plan = plan_tables(variants, geometry, **columns)
        keys = list(plan["all"])
        click.echo("\t".join(["table", *keys]))
        for name, counts in plan.items():
            click.echo("\t".join([name, *(str(counts[k]) for k in keys)]))
        return
    from .predict import PredictOptions, run_predict

    missing = [f"--{k.replace('_dir', '')}" for k in ("genome", "model", "targets", "out_dir")
               if kw[k] is None]
    if missing or len(variants) != 1:
        raise PerturbscoreError(
            "perturbscore predict needs one variant file and " + ", ".join(
                missing or ["--genome", "--model", "--targets", "--out"])
            + " (or --plan-only to count forward passes)."
        )
    bins = None if kw["bins"] == "all" else int(kw["bins"]) if kw["bins"].isdigit() else -1
    if bins == -1:
        raise PerturbscoreError(f"--bins {kw['bins']!r}: give an odd number or 'all'.")
    result = run_predict(PredictOptions(
        variants=variants[0], genome=kw["genome"], model=kw["model"], targets=kw["targets"],
        out=kw["out_dir"], selection=selection_from_options(
            kw["shortlist"], kw["identifiers"], kw["indices"], kw["where"]),
        head=kw["head"], bins=bins, centre_bin=kw["center_bin"],
        input_length=kw["input_length"], **columns, device=kw["device"],
        batch_size=kw["batch_size"], precision=kw["precision"], dtype=kw["dtype"],
        reverse_complement=kw["reverse_complement"], ref_cache=not kw["no_ref_cache"],
        skip_out_of_field=not kw["no_skip_out_of_field"],
        skip_ref_mismatch=kw["skip_ref_mismatch"], resume=kw["resume"],
        overwrite=kw["overwrite"], group=kw["group"], progress=not ctx.obj["quiet"]))
    for path in [*result.outputs, result.manifest]:
        click.echo(str(path))
    log.info("%d variants, %d forward passes (naive: %d)", result.summary["variants"],
             result.summary["forward_passes"], result.summary["forward_passes_naive"])


@cli.command("normalise")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--background", default=None, help="Group of the run that is the background.")
@click.option("--background-file", type=click.Path(path_type=Path), default=None,
              help="Background file (.npz) saved earlier with --save-background.")
@click.option("--save-background", type=click.Path(path_type=Path), default=None,
              help="Also save the background built from --background to this .npz file.")
@click.option("--statistic", "statistics", multiple=True,
              type=click.Choice(["quantile", "robust_z"]),
              help="Normalised statistic (repeatable; default both).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (created if missing).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default=None,
              help="Output format (default: the run's).")
@click.option("--memory", default=str(DEFAULT_MEMORY_BYTES), show_default=True,
              help="Memory budget in bytes, or with a unit: 512MB, 2GiB.")
@click.option("--chunk-rows", type=int, default=None,
              help="Rows per block (default: the most the memory budget allows).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing output tables and the --save-background file.")
@_verbosity
@_user_errors
def normalise_cmd(run_dir: Path, background: str | None, background_file: Path | None,
                  save_background: Path | None, statistics: tuple[str, ...], out_dir: Path,
                  fmt: str | None, memory: str, chunk_rows: int | None, overwrite: bool) -> None:
    """Background-normalised copies (quantile, robust z) of the tables of RUN_DIR."""
    from .normalise_run import normalise_run

    result = normalise_run(
        run_dir, out_dir, background=background, background_file=background_file,
        statistics=statistics or ("quantile", "robust_z"), fmt=fmt,
        save_background=save_background, overwrite=overwrite,
        memory_bytes=parse_size(memory), block_rows=chunk_rows,
    )
    for path in [*result.tables, result.manifest]:
        click.echo(str(path))
    if result.background_file is not None:
        click.echo(str(result.background_file))
    log.info("%d tables normalised (%d rows per block)", len(result.tables), result.block_rows)
