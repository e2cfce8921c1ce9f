"""Variant tables: one row per prediction row, read as text.

Every column is read as a string and kept as one: an allele column holding only
``T``/``F`` must stay the letters T and F (thymine, and an F that some tools write),
never become booleans, and identifiers such as ``01`` must keep their zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .errors import PerturbscoreError

DEFAULT_ID_COLUMNS = ("GENE", "rsID", "REF", "ALT")


def read_variants(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a variant table (``.csv``, ``.tsv``/``.txt``, ``.parquet``) with every column as text.

    Missing values are kept as they are written (``NA`` stays the text ``NA``), so that
    nothing is reinterpreted between input and output.  ``columns`` reads only those
    (all must exist; row counting is unaffected).
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: variant table not found. Check the path.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(p, columns=_present(p, columns, pq_columns(p)))
            df = df.astype(object).where(df.notna(), "").astype(str)
        elif suffix in {".csv", ".tsv", ".txt"}:
            sep = "," if suffix == ".csv" else "\t"
            header = pd.read_csv(p, sep=sep, nrows=0).columns
            df = pd.read_csv(
                p,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                usecols=_present(p, columns, list(header)),
            )
        else:
            raise PerturbscoreError(
                f"{p}: unknown variant table format {suffix!r}; use .csv, .tsv or .parquet."
            )
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PerturbscoreError(f"{p}: cannot read variant table ({exc}).") from exc
    return df


def pq_columns(path: Path) -> list[str]:
    """Column names of a Parquet file, from its schema alone."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def _present(path: Path, wanted: Sequence[str] | None, have: list[str]) -> list[str] | None:
    if wanted is None:
        return None
    missing = [c for c in wanted if c not in have]
    if missing:
        raise PerturbscoreError(
            f"{path}: ID columns {missing} are not in the variant table; its columns are "
            f"{have}. Choose others with id_columns (or 'all')."
        )
    return [c for c in have if c in set(wanted)]


def id_columns_of(df: pd.DataFrame, wanted: Sequence[str] | str, where: str) -> list[str]:
    """Resolve the ID columns to keep: a list, or ``"all"`` for every column."""
    if isinstance(wanted, str):
        if wanted != "all":
            raise PerturbscoreError(f"id_columns must be a list of names or 'all', not {wanted!r}.")
        return list(df.columns)
    _present(Path(where), wanted, list(df.columns))  # raises, naming the missing columns
    return list(wanted)


def duplicate_report(df: pd.DataFrame, columns: Sequence[str], where: str) -> list[str]:
    """Warnings about repeated identifiers (kept, but worth knowing).

    Multi-allelic sites legitimately share an rsID (one row per ALT allele); rows whose
    *all* ID columns repeat are more suspicious and reported separately.
    """
    notes: list[str] = []
    if "rsID" in df.columns:
        dup = df["rsID"].duplicated(keep=False)
        if dup.any():
            notes.append(
                f"{where}: {int(dup.sum())} rows share an rsID with another row "
                f"({df.loc[dup, 'rsID'].nunique()} rsIDs; multi-allelic sites or several "
                "genes per variant); all are kept"
            )
    if columns:
        full = df.duplicated(subset=list(columns), keep=False)
        if full.any():
            notes.append(
                f"{where}: {int(full.sum())} rows repeat all ID columns {list(columns)}; "
                "they are kept, but cannot be told apart by ID"
            )
    return notes
