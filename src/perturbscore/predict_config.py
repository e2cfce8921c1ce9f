"""The ``[predict]`` section of a run file: ``perturbscore predict RUN_FILE``.

Every option of ``perturbscore predict`` has a key of the same name, with ``_`` for ``-``
(``--batch-size`` is ``batch_size``); the variant file is ``variants`` and ``--out`` is
``out``; the three ``--no-...``/``--skip-...`` switches are booleans (``ref_cache = false``
is ``--no-ref-cache``).  Paths are relative to the run file's folder; ``model`` is taken
as a path when that path exists there, else as a hub id.  Without ``targets`` in
``[predict]``, the run file's top-level ``targets`` (the model's track table) is used.
Options given on the command line override the section's keys.

Example::

    targets = "targets_human.txt"

    [predict]
    variants = "variants.csv"
    genome = "hg38.fa"
    model = "enformer"
    out = "predictions"
    centre_column = "Transcription start site (TSS)"
    shortlist = "basenji_relevant_metadata.csv"
    format = "zarr"
    resume = true
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import PerturbscoreError
from .messages import describe_value, listing
from .predict import PredictOptions
from .predict_output import FORMATS
from .runfile_schema import Key
from .runfile_sections import refuse_unknown_keys
from .runfile_values import Reject, is_int, strings
from .tracks import parse_where, selection_from_options

PRECISIONS = ("float32", "float16", "bfloat16")
DTYPES = ("float32", "float16")
PATHS = ("variants", "genome", "targets", "out", "shortlist")  # resolved against the file


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Reject(f'"{v}"' if is_int(v) else None)
    return v


def _int(least: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if is_int(v) and v >= least:
            return int(v)
        guess = v.strip() if isinstance(v, str) and v.strip().isdigit() else None
        raise Reject(guess if guess is not None and int(guess) >= least else None)

    return check


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise Reject(
        v.strip().lower() if isinstance(v, str) and v.strip().lower() in ("true", "false") else None
    )


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if isinstance(v, str) and v in options:
            return v
        raise Reject(
            f'"{v.strip().lower()}"'
            if isinstance(v, str) and v.strip().lower() in options
            else None
        )

    return check


def _ints(v: Any) -> tuple[int, ...]:
    if isinstance(v, list) and v and all(is_int(i) and i >= 0 for i in v):
        return tuple(v)
    raise Reject(f"[{v}]" if is_int(v) and v >= 0 else None)


def _bins(v: Any) -> int | None:
    """The one rule for the bins kept, of ``[predict] bins`` and ``--bins`` alike."""
    if v == "all":
        return None
    if is_int(v) and v >= 1 and v % 2 == 1:
        return int(v)
    raise Reject()


#: How messages state :func:`_bins`'s rule.
BINS_RULE = 'an odd number of central bins, or "all"'


def bins_option(text: str) -> int | None:
    """``--bins`` as typed on the command line, checked by the run file's rule (:func:`_bins`).

    Raises
    ------
    PerturbscoreError
        Not an odd number ≥ 1 or ``all`` (``4``, ``0``, ``abc``).
    """
    try:
        return _bins(int(text) if text.strip().isdigit() else text.strip())
    except Reject:
        raise PerturbscoreError(
            f"--bins {text}: expected {BINS_RULE} (1, 3, 5, ...); write e.g. --bins 3."
        ) from None


def _keys() -> dict[str, Key]:
    path = Key("a path string", _text, '"file"')
    text = Key("a non-empty string", _text, '"name"')
    flag = Key("true or false", _bool, "true")
    return {
        "variants": Key("a path string to the variant table, VCF or BCF", _text, '"variants.csv"'),
        "genome": Key("a path string to an indexed FASTA", _text, '"hg38.fa"'),
        "model": Key("a save_pretrained folder or a hub id", _text, '"enformer"'),
        "targets": Key("a path string to the model's track table", _text, '"targets_human.txt"'),
        "out": Key("a path string to the output folder", _text, '"predictions"'),
        "shortlist": path,
        "identifiers": Key(
            "a non-empty list of track identifier strings", strings, '["ENCFF093VXI"]'
        ),
        "indices": Key("a non-empty list of 0-based track numbers", _ints, "[12, 69]"),
        "where": Key("a non-empty list of queries field=value", strings, '["biosample=GM12878"]'),
        "head": text,
        "bins": Key(BINS_RULE, _bins, "3"),
        "center_bin": Key("an integer ≥ 0 naming a bin", _int(0), "447"),
        "input_length": Key("an integer ≥ 1 (bases the model reads)", _int(1), "196608"),
        "centre_column": text,
        "chrom_column": text,
        "pos_column": text,
        "ref_column": text,
        "alt_column": text,
        "device": Key('a device string: "cpu", "cuda" or "cuda:N"', _text, '"cuda"'),
        "batch_size": Key("an integer ≥ 1", _int(1), "4"),
        "precision": Key(
            f"one of {listing(PRECISIONS, quoted=True)}", _choice(PRECISIONS), '"float32"'
        ),
        "dtype": Key(f"one of {listing(DTYPES, quoted=True)}", _choice(DTYPES), '"float32"'),
        "format": Key(f"one of {listing(FORMATS, quoted=True)}", _choice(FORMATS), '"npy"'),
        "zarr_chunk_rows": Key("an integer ≥ 1 (variants per Zarr chunk)", _int(1), "1024"),
        "reverse_complement": flag,
        "ref_cache": flag,
        "skip_out_of_field": flag,
        "skip_ref_mismatch": flag,
        "resume": flag,
        "overwrite": flag,
        "group": Key("a group name for the written run file", _text, '"predicted"'),
    }


KEYS = _keys()


def read_predict_section(path: Path) -> dict[str, Any]:
    """The checked ``[predict]`` keys of the run file ``path``, paths resolved.

    Raises
    ------
    PerturbscoreError
        The file is missing or not TOML, has no ``[predict]`` table, or a key is unknown
        or of the wrong type; the message names the file, the key and the fix.
    """
    if not path.is_file():
        raise PerturbscoreError(f"{path}: run file not found. Check the path.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PerturbscoreError(f"{path}: not a valid UTF-8 TOML run file ({exc}).") from exc
    where = f"{path} [predict]"
    section = data.get("predict")
    if not isinstance(section, dict):
        got = "none" if section is None else describe_value(section)
        raise PerturbscoreError(
            f"{path}: perturbscore predict reads a [predict] table of the run file, got "
            f"{got}; add [predict] with variants, genome, model and out."
        )
    refuse_unknown_keys(section, KEYS, where, limit=40)
    out: dict[str, Any] = {}
    for name, value in section.items():
        key = KEYS[name]
        try:
            out[name] = key.check(value)
        except Reject as exc:
            raise PerturbscoreError(
                f"{where} {name}: expected {key.rule()}, got {describe_value(value)}; "
                f"write {name} = {exc.guess or key.example}."
            ) from None
    if "where" in out:  # the queries' own rules, with the file and key in the message
        try:
            parse_where(out["where"])
        except PerturbscoreError as exc:
            raise PerturbscoreError(f"{where} where: {exc}") from None
    if "targets" not in out and isinstance(data.get("targets"), str):
        out["targets"] = data["targets"]  # the run file's own track table
    base = path.parent
    for name in PATHS:
        if name in out:
            out[name] = base / out[name]
    if "model" in out and (base / out["model"]).exists():
        out["model"] = str(base / out["model"])
    return out


def predict_options(
    values: Mapping[str, Any], source: Path | None = None, progress: bool = True
) -> PredictOptions:
    """:class:`PredictOptions` from ``[predict]``-style values (absent keys: defaults).

    ``source``: the run file the values came from, named in the messages.
    """
    missing = [k for k in ("variants", "genome", "model", "targets", "out") if k not in values]
    if missing:
        flags = ", ".join(f"--{k}" for k in missing if k != "variants")
        need = (["one variant file"] if "variants" in missing else []) + ([flags] if flags else [])
        where = f" ([predict] of {source} or the command line)" if source else ""
        raise PerturbscoreError(
            f"perturbscore predict needs {' and '.join(need)}{where} (or --plan-only to count "
            "forward passes)."
        )
    selection = selection_from_options(
        values.get("shortlist"),
        values.get("identifiers"),
        values.get("indices"),
        values.get("where"),
    )
    names = {f.name for f in fields(PredictOptions)}
    kw = {k: v for k, v in values.items() if k in names}
    renamed = {"center_bin": "centre_bin"}
    kw.update({renamed[k]: values[k] for k in renamed if k in values})
    return PredictOptions(
        **{
            **kw,
            "selection": selection,
            "progress": progress,
            "variants": Path(values["variants"]),
            "genome": Path(values["genome"]),
            "targets": Path(values["targets"]),
            "out": Path(values["out"]),
            "model": str(values["model"]),
        }
    )
