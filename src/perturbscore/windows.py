"""Variants to model windows: input reading, validation against the genome, the work plan.

Conventions (recorded in every predict manifest):

* Variant positions are 1-based (VCF, the study's ``PHYSICAL``); a window centre given per
  variant (``--centre-column``, e.g. a TSS) is 1-based too.  Without one, the window is
  centred on the variant.
* A window of ``L`` bases is ``[c - L/2, c + L/2)`` in 0-based coordinates, ``c`` the
  0-based centre base, so the centre base sits at offset ``L/2`` of the input and falls in
  output bin ``B/2`` (448 of Enformer's 896; bins 447 and 448 flank the midpoint).
* A variant is *in the field* when any of its bases lies inside the model's input; the
  ALT prediction of a variant outside it equals its REF prediction by construction.
* SNVs and equal-length substitutions only: indels change the window's length and would
  need an alignment rule, so they are refused with a message naming the first ones.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PerturbscoreError
from .variants import read_variants

if TYPE_CHECKING:
    import pandas as pd

    from .genome import Genome

#: Enformer's input length in enformer-pytorch (``SEQUENCE_LENGTH``), used when a model's
#: config does not say (``sequence_length``) and no ``--input-length`` is given.
ENFORMER_INPUT_LENGTH = 196_608

CHROM_COLUMNS = ("Chromosome", "chrom", "CHROM", "chr", "chromosome", "#CHROM")
POS_COLUMNS = ("PHYSICAL", "pos", "POS", "position", "Position")
REF_COLUMNS = ("REF", "ref")
ALT_COLUMNS = ("ALT", "alt")
MAX_LISTED = 5


# --- geometry (LOCAL to predict; the lead reconciles it with perturbscore.geometry) ------
@dataclass(frozen=True)
class Geometry:
    """Where a model looks and what it outputs.

    Attributes
    ----------
    input_length : int
        Bases fed to the model (196,608 for Enformer in enformer-pytorch).
    bin_size : int
        Bases per output bin (``2 ** num_downsamples``: 128).
    n_bins : int
        Output bins after the model's central crop (``target_length``: 896).
    """

    input_length: int
    bin_size: int
    n_bins: int

    @property
    def output_offset(self) -> int:
        """Offset in the input of the first output bin (the crop is symmetric)."""
        return (self.input_length - self.n_bins * self.bin_size) // 2

    @property
    def centre_bin(self) -> int:
        """Output bin holding the centre base (input offset ``L/2``): ``B/2`` for even B."""
        return (self.input_length // 2 - self.output_offset) // self.bin_size

    @classmethod
    def from_config(cls, config: Any, input_length: int | None = None) -> Geometry:
        """Geometry of an enformer-pytorch model from its config (``EnformerConfig``)."""
        bin_size = 2 ** int(getattr(config, "num_downsamples", 7))
        length = int(
            input_length or getattr(config, "sequence_length", None) or ENFORMER_INPUT_LENGTH
        )
        target = int(getattr(config, "target_length", 896))
        if length <= 0 or length % bin_size:
            raise PerturbscoreError(
                f"input length {length} must be a positive multiple of the model's bin size "
                f"{bin_size}; choose another --input-length."
            )
        n_bins = length // bin_size if target == -1 else target
        if n_bins > length // bin_size:
            raise PerturbscoreError(
                f"input length {length} gives {length // bin_size} bins, fewer than the "
                f"model's target_length {target}; choose a longer --input-length."
            )
        return cls(length, bin_size, n_bins)


ENFORMER = Geometry(ENFORMER_INPUT_LENGTH, 128, 896)


# --- reading ------------------------------------------------------------------------------
def read_vcf(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Plain or (b)gzipped VCF -> one row per ALT allele (CHROM POS ID REF ALT) and lines."""
    import pandas as pd

    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:3] == b"BCF":
        raise PerturbscoreError(
            f"{path}: BCF is not read directly; convert it with 'bcftools view -Ov -o "
            f"{path.with_suffix('.vcf')} {path}'."
        )
    opener = gzip.open if magic[:2] == b"\x1f\x8b" else open
    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.startswith("#") or not line.strip():
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) < 5:
                raise PerturbscoreError(
                    f"{path}: line {lineno} has {len(f)} tab-separated fields; a VCF record "
                    "needs at least CHROM POS ID REF ALT."
                )
            for alt in f[4].split(","):
                rows.append((f[0], f[1], f[2], f[3], alt))
                lines.append(lineno)
    table = pd.DataFrame(rows, columns=["CHROM", "POS", "ID", "REF", "ALT"], dtype=str)
    return table, np.asarray(lines, dtype=np.int64)


def read_variant_input(path: str | Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Read a variant table or VCF as text.

    Returns
    -------
    (DataFrame, ndarray, str)
        Every input column as text, the 1-based file line (or Parquet row) of each row,
        and the word for it (``"line"`` or ``"row"``).
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: variant file not found. Check the path.")
    name = p.name.lower()
    if name.endswith((".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")):
        table, lines = read_vcf(p)
        return table, lines, "line"
    table = read_variants(p)
    if p.suffix.lower() == ".parquet":
        return table, np.arange(1, len(table) + 1, dtype=np.int64), "row"
    return table, np.arange(2, len(table) + 2, dtype=np.int64), "line"  # after the header


def _pick(table: pd.DataFrame, given: str | None, candidates: Sequence[str], what: str,
          where: str) -> str:
    if given is not None:
        if given not in table.columns:
            raise PerturbscoreError(
                f"{where}: no column {given!r} for the {what}; columns are "
                f"{', '.join(map(str, table.columns))}."
            )
        return given
    for c in candidates:
        if c in table.columns:
            return c
    raise PerturbscoreError(
        f"{where}: no {what} column (looked for {', '.join(candidates)}); name it with "
        f"--{what.split()[0]}-column."
    )


def _ints(values: pd.Series, what: str, where: str, lines: np.ndarray, word: str) -> np.ndarray:
    import pandas as pd

    num = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() | (num.fillna(0) % 1 != 0).to_numpy())
    if bad.size:
        i = int(bad[0])
        raise PerturbscoreError(
            f"{where}: {word} {lines[i]}: {what} {values.iloc[i]!r} is not a whole number "
            f"({bad.size} such rows); fix the table."
        )
    return num.to_numpy().astype(np.int64)


@dataclass
class Variants:
    """Validated variants, one per prediction row, in input order.

    Arrays are aligned with ``table`` rows: ``chrom`` (genome's names), ``pos0`` (0-based
    first base), ``ref``/``alt`` (upper-case alleles), ``centre0`` (0-based window centre).
    """

    table: pd.DataFrame
    chrom: np.ndarray
    pos0: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    centre0: np.ndarray
    lines: np.ndarray
    line_word: str
    source: Path
    columns: dict[str, str]
    ref_mismatches: int = 0


def load_variants(
    path: str | Path,
    *,
    chrom_column: str | None = None,
    pos_column: str | None = None,
    ref_column: str | None = None,
    alt_column: str | None = None,
    centre_column: str | None = None,
) -> Variants:
    """Read a variant file and check its columns, positions and alleles (no genome yet).

    Raises
    ------
    PerturbscoreError
        Missing columns, non-integer positions, empty table, alleles other than A/C/G/T,
        or indels (listing the first ones with their lines).
    """
    src = Path(path)
    table, lines, word = read_variant_input(src)
    where = str(src)
    if table.empty:
        raise PerturbscoreError(f"{where}: the variant table has no rows.")
    cols = {
        "chrom": _pick(table, chrom_column, CHROM_COLUMNS, "chrom (chromosome)", where),
        "pos": _pick(table, pos_column, POS_COLUMNS, "pos (1-based position)", where),
        "ref": _pick(table, ref_column, REF_COLUMNS, "ref allele", where),
        "alt": _pick(table, alt_column, ALT_COLUMNS, "alt allele", where),
    }
    if centre_column is not None:
        cols["centre"] = _pick(table, centre_column, (), "centre", where)
    pos = _ints(table[cols["pos"]], "position", where, lines, word)
    centre = (
        _ints(table[cols["centre"]], "window centre", where, lines, word)
        if "centre" in cols
        else pos
    )
    ref = table[cols["ref"]].str.upper().to_numpy(dtype=object)
    alt = table[cols["alt"]].str.upper().to_numpy(dtype=object)
    valid = np.array([bool(a) and set(a) <= set("ACGT") for a in np.concatenate([ref, alt])])
    bad = np.flatnonzero(~(valid[: len(ref)] & valid[len(ref):]))
    if bad.size:
        listed = "; ".join(f"{word} {lines[i]} {ref[i]}>{alt[i]}" for i in bad[:MAX_LISTED])
        raise PerturbscoreError(
            f"{where}: {bad.size} variants have alleles other than A, C, G, T ({listed}); "
            "remove them or fix the alleles."
        )
    indel = np.flatnonzero(np.array([len(r) != len(a) for r, a in zip(ref, alt, strict=True)]))
    if indel.size:
        listed = "; ".join(f"{word} {lines[i]} {ref[i]}>{alt[i]}" for i in indel[:MAX_LISTED])
        raise PerturbscoreError(
            f"{where}: {indel.size} variants are indels ({listed}); perturbscore predict "
            "handles SNVs and equal-length substitutions only (an indel shifts the window), "
            "so remove them from the table."
        )
    return Variants(
        table=table,
        chrom=table[cols["chrom"]].to_numpy(dtype=object),
        pos0=pos - 1,
        ref=ref,
        alt=alt,
        centre0=centre - 1,
        lines=lines,
        line_word=word,
        source=src,
        columns=cols,
    )


def check_against_genome(v: Variants, genome: Genome, skip_ref_mismatch: bool) -> Variants:
    """Map chromosome names onto the genome and check every REF allele against it.

    Returns the variants with genome chromosome names; with ``skip_ref_mismatch`` the rows
    whose REF differs from the genome are dropped and counted (``ref_mismatches``).
    """
    where = str(v.source)
    names = {c: genome.resolve(str(c)) for c in dict.fromkeys(v.chrom)}
    unknown = [c for c, r in names.items() if r is None]
    if unknown:
        have = ", ".join(list(genome.lengths)[:MAX_LISTED])
        raise PerturbscoreError(
            f"{where}: chromosome {unknown[0]} ({len(unknown)} names in all) is not in "
            f"{genome.path} (its first names: {have}); use the genome the variants were "
            "called on."
        )
    chrom = np.array([names[c] for c in v.chrom], dtype=object)
    bad: list[int] = []
    found: dict[int, str] = {}
    for i in range(len(chrom)):
        end = int(v.pos0[i]) + len(v.ref[i])
        if v.pos0[i] < 0 or end > genome.lengths[chrom[i]]:
            raise PerturbscoreError(
                f"{where}: {v.line_word} {v.lines[i]}: position {v.pos0[i] + 1} lies outside "
                f"chromosome {chrom[i]} ({genome.lengths[chrom[i]]} bases) of {genome.path}."
            )
        seq, _ = genome.fetch(chrom[i], int(v.pos0[i]), end)
        if seq.decode() != v.ref[i]:
            bad.append(i)
            found[i] = seq.decode()
    if bad and not skip_ref_mismatch:
        ids = [c for c in ("rsID", "ID", "Variant") if c in v.table.columns]
        def label(i: int) -> str:
            name = f"{v.table[ids[0]].iloc[i]} " if ids else ""
            return f"{name}({v.line_word} {v.lines[i]}) expected {v.ref[i]}, found {found[i]}"
        listed = "; ".join(label(i) for i in bad[:MAX_LISTED])
        raise PerturbscoreError(
            f"{where}: {len(bad)} REF alleles differ from {genome.path}: {listed}; use the "
            "genome build the variants were called on, or --skip-ref-mismatch to leave them "
            "out (counted in the manifest)."
        )
    keep = np.ones(len(chrom), dtype=bool)
    keep[bad] = False
    return Variants(
        table=v.table[keep].reset_index(drop=True),
        chrom=chrom[keep],
        pos0=v.pos0[keep],
        ref=v.ref[keep],
        alt=v.alt[keep],
        centre0=v.centre0[keep],
        lines=v.lines[keep],
        line_word=v.line_word,
        source=v.source,
        columns=v.columns,
        ref_mismatches=len(bad),
    )


# --- the plan -------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which window each variant uses and which forward passes are needed.

    ``window`` indexes ``windows`` (distinct ``(chrom, start)`` in order of first use);
    ``offset`` is the variant's 0-based offset in its input window.
    """

    windows: list[tuple[str, int]]
    window: np.ndarray
    start: np.ndarray
    offset: np.ndarray
    in_field: np.ndarray
    geometry: Geometry

    @property
    def n_variants(self) -> int:
        return int(self.window.size)

    def passes(self, cache: bool = True) -> int:
        """Forward passes (per strand): naive 2 per variant; cached 1 per window + 1 per
        in-field variant."""
        if not cache:
            return 2 * self.n_variants
        return len(self.windows) + int(self.in_field.sum())

    def summary(self) -> dict[str, int]:
        """Counts for the manifest and ``--plan-only``."""
        return {
            "variants": self.n_variants,
            "windows": len(self.windows),
            "in_field": int(self.in_field.sum()),
            "out_of_field": int((~self.in_field).sum()),
            "forward_passes_naive": self.passes(cache=False),
            "forward_passes": self.passes(cache=True),
        }


def plan_windows(chrom: np.ndarray, pos0: np.ndarray, ref_len: np.ndarray,
                 centre0: np.ndarray, geometry: Geometry) -> Plan:
    """Assign each variant its input window and decide whether it is in the field.

    Parameters
    ----------
    chrom, pos0, ref_len, centre0 : ndarray
        Per variant: chromosome, 0-based first base, allele length, 0-based window centre.
    """
    half = geometry.input_length // 2
    start = np.asarray(centre0, dtype=np.int64) - half
    offset = np.asarray(pos0, dtype=np.int64) - start
    # in the field if any base of the substitution lies inside [0, L)
    in_field = (offset < geometry.input_length) & (offset + np.asarray(ref_len) > 0)
    ids: dict[tuple[str, int], int] = {}
    window = np.empty(start.size, dtype=np.int64)
    for i, key in enumerate(zip(chrom.tolist(), start.tolist(), strict=True)):
        window[i] = ids.setdefault(key, len(ids))
    return Plan(list(ids), window, start, offset, in_field, geometry)


def plan_tables(paths: Sequence[str | Path], geometry: Geometry = ENFORMER,
                **columns: str | None) -> dict[str, dict[str, int]]:
    """Forward passes a set of variant tables needs, without genome or model.

    Returns per table and for ``"all"`` (windows shared across tables counted once) the
    counts of :meth:`Plan.summary`.
    """
    out: dict[str, dict[str, int]] = {}
    parts = []
    for p in paths:
        v = load_variants(p, **columns)
        chrom = np.array([str(c).removeprefix("chr") for c in v.chrom], dtype=object)
        ref_len = np.array([len(r) for r in v.ref])
        parts.append((chrom, v.pos0, ref_len, v.centre0))
        out[str(p)] = plan_windows(chrom, v.pos0, ref_len, v.centre0, geometry).summary()
    cat = [np.concatenate([part[k] for part in parts]) for k in range(4)]
    out["all"] = plan_windows(cat[0], cat[1], cat[2], cat[3], geometry).summary()
    return out


def plan_geometry(model: str | None = None, input_length: int | None = None) -> Geometry:
    """Geometry for ``--plan-only``: from a saved model's ``config.json``, else Enformer's.

    Reads the JSON only, so planning needs neither torch nor the weights.
    """
    from types import SimpleNamespace

    if model is None:
        return Geometry.from_config(SimpleNamespace(), input_length)
    config = Path(model) / "config.json"
    if not config.is_file():
        raise PerturbscoreError(
            f"{config} not found; --plan-only reads the geometry from a saved model folder "
            "(or leave out --model for Enformer's)."
        )
    import json

    return Geometry.from_config(SimpleNamespace(**json.loads(config.read_text())), input_length)
