"""VCF and BCF variant input for ``perturbscore predict``.

Text VCF (plain or gzip/bgzip-compressed) is parsed here, with no dependency; BCF (plain
or BGZF-compressed, as ``bcftools view -Ob`` writes it) is read through pysam (the
``vcf`` extra), imported only when a BCF is given.  Both give one table with the same
columns and the same rule: one row per ALT allele of a record (a multi-allelic record
becomes several rows, each with the record's CHROM, POS, ID and REF), in file order,
every value as text (``.`` for a missing ID or ALT, as written in a VCF).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PerturbscoreError
from .extras import require

if TYPE_CHECKING:
    import pandas as pd

VCF_COLUMNS = ["CHROM", "POS", "ID", "REF", "ALT"]
VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf", ".bcf.gz")


def is_bcf(path: Path) -> bool:
    """Whether ``path`` holds BCF (its first bytes, once decompressed, are ``BCF``)."""
    with open(path, "rb") as fh:
        magic = fh.read(3)
    if magic[:2] == b"\x1f\x8b":  # gzip or BGZF: look inside
        try:
            with gzip.open(path, "rb") as fh:
                magic = fh.read(3)
        except (OSError, EOFError) as exc:
            raise PerturbscoreError(
                f"{path}: not a readable gzip/bgzip file ({exc}); check the file."
            ) from exc
    return magic == b"BCF"


def read_vcf(path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """A VCF or BCF as one text row per ALT allele (CHROM POS ID REF ALT).

    Returns
    -------
    (DataFrame, ndarray, str)
        The rows, the 1-based file line (VCF) or record number (BCF) of each row, and
        the word for it (``"line"`` or ``"record"``) used in messages.
    """
    if is_bcf(path):
        table, records = read_bcf(path)
        return table, records, "record"
    table, lines = read_vcf_text(path)
    return table, lines, "line"


def _frame(rows: list[tuple[str, ...]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=VCF_COLUMNS, dtype=str)


def read_vcf_text(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Plain or (b)gzipped text VCF -> one row per ALT allele, and each row's file line."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    opener = gzip.open if gz else open
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
    return _frame(rows), np.asarray(lines, dtype=np.int64)


def read_bcf(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """BCF -> one row per ALT allele (as :func:`read_vcf_text`), and each row's record number.

    Needs pysam (``pip install 'perturbscore[vcf]'``); a missing pysam is a user error
    naming that line.
    """
    pysam = require("pysam", f"reading the BCF file {path}", extra="vcf")
    rows: list[tuple[str, ...]] = []
    records: list[int] = []
    # htslib prints its own warnings and errors to stderr; the error we raise says it all
    previous = pysam.set_verbosity(0)
    try:
        with pysam.VariantFile(str(path), "r") as vf:
            for n, rec in enumerate(vf, start=1):
                # the text a VCF line would hold: '.' for a missing ID or ALT
                ident = rec.id if rec.id is not None else "."
                for alt in rec.alts or (".",):
                    rows.append((str(rec.chrom), str(rec.pos), ident, str(rec.ref), str(alt)))
                    records.append(n)
    except (OSError, ValueError) as exc:
        raise PerturbscoreError(
            f"{path}: not a readable BCF file ({exc}); check it with 'bcftools view {path}'."
        ) from exc
    finally:
        pysam.set_verbosity(previous)
    return _frame(rows), np.asarray(records, dtype=np.int64)
