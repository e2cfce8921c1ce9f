"""Variants to model windows: input reading, validation against the genome, the work plan.

Conventions (those of :mod:`perturbscore.geometry`, recorded in every predict manifest):

* Variant positions are 1-based (VCF, the study's ``PHYSICAL``); a window centre given per
  variant (``--centre-column``, e.g. a TSS) is 1-based too.  Without one, the window is
  centred on the variant.
* The window of a model (:class:`perturbscore.geometry.Geometry`, ``window`` bp, of which
  the model reads the central ``input`` bp) starts at ``centre - centre_offset``: with
  the default 448-centred convention ``centre_offset = window // 2``, so for Enformer
  ``window_start = TSS - 196,608``, the study's own ``enformer_start``, and the centre
  base falls in output bin 448 of 896.  ``--center-bin 447`` moves the window one base to
  the right (the centre base at offset ``window // 2 - 1``).
* Only the ``input`` bases the model reads are fetched and fed (enformer-pytorch takes
  the central 196,608 bp of the 393,216-bp window; the TF-Hub model would crop them).
* A variant's class is :func:`perturbscore.geometry.place`'s, taken over its bases: class 0
  (``outside_input``) when no base lies in the bases the model reads; its ALT prediction
  then equals its REF prediction by construction and it is not run.
* SNVs and equal-length substitutions only: indels change the window's length and would
  need an alignment rule, so they are refused with a message naming the first ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PerturbscoreError
from .geometry import ENFORMER, OUTSIDE_INPUT, Geometry, place
from .messages import closest, count, listing, quote
from .predict_vcf import VCF_SUFFIXES, read_vcf
from .variants import read_variants

if TYPE_CHECKING:
    import pandas as pd

    from .genome import Genome

CHROM_COLUMNS = ("Chromosome", "chrom", "CHROM", "chr", "chromosome", "#CHROM")
POS_COLUMNS = ("PHYSICAL", "pos", "POS", "position", "Position")
REF_COLUMNS = ("REF", "ref")
ALT_COLUMNS = ("ALT", "alt")
MAX_LISTED = 5


# --- reading ------------------------------------------------------------------------------
def read_variant_input(path: str | Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Read a variant table, VCF or BCF as text.

    Returns
    -------
    (DataFrame, ndarray, str)
        Every input column as text, the 1-based file line (Parquet row, BCF record) of
        each row, and the word for it (``"line"``, ``"row"`` or ``"record"``).
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: variant file not found. Check the path.")
    name = p.name.lower()
    if name.endswith(VCF_SUFFIXES):
        return read_vcf(p)  # one row per ALT allele, for text VCF and BCF alike
    table = read_variants(p)
    if p.suffix.lower() == ".parquet":
        return table, np.arange(1, len(table) + 1, dtype=np.int64), "row"
    return table, np.arange(2, len(table) + 2, dtype=np.int64), "line"  # after the header


def _pick(table: pd.DataFrame, given: str | None, candidates: Sequence[str], what: str,
          where: str) -> str:
    if given is not None:
        if given not in table.columns:
            columns = [str(c) for c in table.columns]
            near = closest(given, columns, cutoff=0.5)
            hint = f" (did you mean {quote(near)}?)" if near else ""
            raise PerturbscoreError(
                f"{where}: no column {quote(given)} for the {what}; columns are "
                f"{listing(columns, 20)}{hint}."
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
            f"({count(bad.size, 'such row')}); fix the table."
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
            f"{where}: {count(bad.size, 'variant has', 'variants have')} alleles other than "
            f"A, C, G, T ({listed}); "
            "remove them or fix the alleles."
        )
    indel = np.flatnonzero(np.array([len(r) != len(a) for r, a in zip(ref, alt, strict=True)]))
    if indel.size:
        listed = "; ".join(f"{word} {lines[i]} {ref[i]}>{alt[i]}" for i in indel[:MAX_LISTED])
        raise PerturbscoreError(
            f"{where}: {count(indel.size, 'variant is an indel', 'variants are indels')} "
            f"({listed}); perturbscore predict "
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
            f"{where}: {count(len(bad), 'REF allele differs', 'REF alleles differ')} from "
            f"{genome.path}: {listed}; use the "
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
    """Which window each variant uses and which forward passes are needed (``# n`` arrays).

    ``window`` indexes ``windows`` (distinct ``(chrom, start)`` in order of first use);
    ``start`` is the 0-based first base of the variant's geometry window, ``offset`` the
    variant's 0-based offset in it and ``cls`` its :func:`~perturbscore.geometry.place`
    class (the highest over its bases).
    """

    windows: list[tuple[str, int]]
    window: np.ndarray
    start: np.ndarray
    offset: np.ndarray
    cls: np.ndarray
    geometry: Geometry

    @property
    def n_variants(self) -> int:
        return int(self.window.size)

    @property
    def in_field(self) -> np.ndarray:
        """Variants with a base the model reads (class 1 or 2)."""
        return self.cls != OUTSIDE_INPUT

    @property
    def input_start(self) -> np.ndarray:
        """0-based first base fed to the model, per variant."""
        return self.start + self.geometry.input_start

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
    """Assign each variant its window and its class.

    Parameters
    ----------
    chrom, pos0, ref_len, centre0 : ndarray
        Per variant (``# n``): chromosome, 0-based first base, allele length, 0-based
        window centre.
    geometry : Geometry
        The window starts at ``centre0 - geometry.centre_offset``.
    """
    start = np.asarray(centre0, dtype=np.int64) - geometry.centre_offset
    offset = np.asarray(pos0, dtype=np.int64) - start
    last = offset + np.asarray(ref_len, dtype=np.int64) - 1
    # a substitution's class is that of its most-seen base: its first or its last one
    # (an allele is far shorter than the input, so no base between can see more)
    cls = np.maximum(place(offset, geometry).cls, place(last, geometry).cls)
    ids: dict[tuple[str, int], int] = {}
    window = np.empty(start.size, dtype=np.int64)
    for i, key in enumerate(zip(chrom.tolist(), start.tolist(), strict=True)):
        window[i] = ids.setdefault(key, len(ids))
    return Plan(list(ids), window, start, offset, cls, geometry)


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
