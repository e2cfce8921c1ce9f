"""The ``perturbscore predict`` command (Enformer REF/ALT predictions).

It registers on :data:`perturbscore.cli.cli`; :mod:`perturbscore.cli` imports this
module after the group exists.  Torch and the model are imported inside the command.
``perturbscore predict RUN_FILE`` reads the options from the run file's ``[predict]``
table (:mod:`perturbscore.predict_config`); options given on the command line win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .cli import cli
from .cli_common import (
    log,
    out_folder_option,
    print_lines,
    show_progress,
    track_options,
    user_errors,
    verbosity,
)
from .errors import PerturbscoreError


@cli.command("predict")
@click.argument("variants", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--genome",
    type=click.Path(path_type=Path),
    default=None,
    help="Indexed FASTA, plain or bgzipped (needs FASTA.fai, and FASTA.gzi).",
)
@click.option(
    "--model", default=None, help="enformer-pytorch model: a save_pretrained folder or a hub id."
)
@click.option(
    "--targets",
    type=click.Path(path_type=Path),
    default=None,
    help="The model's track table (targets_human.txt).",
)
@out_folder_option(required=False)
@track_options
@click.option("--head", default="human", show_default=True, help="Model output head.")
@click.option(
    "--bins", default="3", show_default=True, help="Odd number of central bins to keep, or 'all'."
)
@click.option(
    "--center-bin",
    type=int,
    default=None,
    help="Bin holding the window centre: B/2 (default; 448 of 896: window start = "
    "centre - window/2) or B/2 - 1 (447: one base to the right).",
)
@click.option(
    "--input-length",
    type=int,
    default=None,
    help="Bases the model reads (default: the model config's sequence_length, or "
    "196608); the window is twice that.",
)
@click.option(
    "--centre-column",
    default=None,
    help="Column with a 1-based window centre per variant (e.g. a TSS).",
)
@click.option("--chrom-column", default=None, help="Chromosome column (default: detected).")
@click.option("--pos-column", default=None, help="1-based position column (default: detected).")
@click.option("--ref-column", default=None, help="REF allele column (default REF).")
@click.option("--alt-column", default=None, help="ALT allele column (default ALT).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Model precision.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Stored prediction dtype.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["npy", "zarr"], case_sensitive=False),
    default="npy",
    show_default=True,
    help="Arrays as ref.npy + alt.npy, or one Zarr store predictions.zarr (needs zarr).",
)
@click.option(
    "--zarr-chunk-rows",
    type=int,
    default=None,
    help="Variants per Zarr chunk (default: about 8 MiB a chunk).",
)
@click.option(
    "--reverse-complement",
    is_flag=True,
    help="Average with the reverse complement's prediction (bins flipped back).",
)
@click.option("--no-ref-cache", is_flag=True, help="Predict REF again for every variant.")
@click.option(
    "--no-skip-out-of-field", is_flag=True, help="Run the model for variants outside its input too."
)
@click.option(
    "--skip-ref-mismatch",
    is_flag=True,
    help="Leave out variants whose REF differs from the genome (counted).",
)
@click.option(
    "--group",
    default="predicted",
    show_default=True,
    help="Group name in the run file written beside the predictions.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep what an interrupted run recorded; the same command with --resume continues it.",
)
@click.option("--overwrite", is_flag=True, help="Replace earlier predictions in --out.")
@click.option(
    "--plan-only",
    is_flag=True,
    help="Only count windows and forward passes (no genome or weights needed).",
)
@verbosity
@click.pass_context
@user_errors
def predict_cmd(ctx: click.Context, variants: tuple[Path, ...], plan_only: bool, **kw: Any) -> None:
    """Predict REF/ALT with Enformer for VARIANTS (table, VCF or BCF) and write a run file.

    VARIANTS may instead be one run file (.toml) whose [predict] table holds the options
    (keys named as the options, with _ for -); options given here override it.
    """
    source = variants[0] if len(variants) == 1 and variants[0].suffix == ".toml" else None
    values = _values(ctx, kw, only_given=source is not None)
    if source is not None:
        from .predict_config import read_predict_section

        values = {**read_predict_section(source), **values}
    elif len(variants) == 1:
        values["variants"] = variants[0]
    if plan_only:
        _plan(list(variants) if source is None else [values.get("variants")], values)
        return
    from .predict import run_predict
    from .predict_config import predict_options

    result = run_predict(predict_options(values, source, progress=show_progress()))
    print_lines(map(str, [*result.outputs, result.manifest]))
    log.info(
        "%d variants, %d forward passes (naive: %d)",
        result.summary["variants"],
        result.summary["forward_passes"],
        result.summary["forward_passes_naive"],
    )


#: Command-line parameters whose [predict] key has another name or sense.
_RENAMED = {"out_dir": "out", "fmt": "format"}
_NEGATED = {"no_ref_cache": "ref_cache", "no_skip_out_of_field": "skip_out_of_field"}


def _values(ctx: click.Context, kw: dict[str, Any], only_given: bool) -> dict[str, Any]:
    """The options as [predict] keys: all set ones, or only those typed on the command line."""
    out: dict[str, Any] = {}
    for name, value in kw.items():
        typed = ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
        if (only_given and not typed) or value is None or value == ():
            continue
        if name in _NEGATED:
            out[_NEGATED[name]] = not value
        elif name == "bins":
            from .predict_config import bins_option  # the run file's rule: one rule

            out["bins"] = bins_option(value)
        else:
            out[_RENAMED.get(name, name)] = value
    return out


def _plan(variants: list[Any], values: dict[str, Any]) -> None:
    """``--plan-only``: windows and forward passes per table, on stdout."""
    from .predict_model import plan_geometry
    from .windows import plan_tables

    if not variants or variants[0] is None:
        raise PerturbscoreError(
            "--plan-only needs the variant tables (or variants in [predict] of the run file)."
        )
    columns = {
        k: values.get(k)
        for k in ("centre_column", "chrom_column", "pos_column", "ref_column", "alt_column")
    }
    geometry = plan_geometry(
        values.get("model"), values.get("input_length"), values.get("center_bin")
    )
    plan = plan_tables(variants, geometry, **columns)
    keys = list(plan["all"])
    rows = ["\t".join([name, *(str(counts[k]) for k in keys)]) for name, counts in plan.items()]
    print_lines(["\t".join(["table", *keys]), *rows], "the plan")
