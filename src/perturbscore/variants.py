"""Variant tables: one row per prediction row, read as text.

Every column is read as a string and kept as one: an allele column holding only
``T``/``F`` must stay the letters T and F (thymine, and an F that some tools write),
never become booleans, and identifiers such as ``01`` must keep their zeros.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .errors import PerturbscoreError
from .messages import listing, quote

DEFAULT_ID_COLUMNS = ("GENE", "rsID", "REF", "ALT")


def read_variants(
    path: str | Path, columns: Sequence[str] | None = None, optional: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a variant table (``.csv``, ``.tsv``/``.txt``, ``.parquet``) with every column as text.

    Missing values are kept as they are written (``NA`` stays the text ``NA``), so that
    nothing is reinterpreted between input and output.  ``columns`` reads only those
    (all must exist; row counting is unaffected), and the ``optional`` columns where
    the table has them (their absence is for the caller to report).
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: variant table not found. Check the path.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            header = pq_columns(p)
            df = pd.read_parquet(p, columns=_present(p, columns, header, optional))
            df = df.astype(object).where(df.notna(), "").astype(str)
            df.attrs["header"] = header
        elif suffix in {".csv", ".tsv", ".txt"}:
            sep = "," if suffix == ".csv" else "\t"
            _check_fields(p, sep)
            header = list(pd.read_csv(p, sep=sep, nrows=0).columns)
            df = pd.read_csv(
                p,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                usecols=_present(p, columns, header, optional),
            )
            df.attrs["header"] = header  # every column, for messages about missing ones
        else:
            raise PerturbscoreError(
                f"{p}: unknown variant table format {quote(suffix or p.name)}; use .csv, .tsv "
                "or .parquet."
            )
    except (ValueError, OSError, pd.errors.ParserError, csv.Error) as exc:
        # Parser messages name the line; keep them on one line of the sentence.
        reason = " ".join(str(exc).split())
        raise PerturbscoreError(
            f"{p}: cannot read the variant table ({reason}); it must be a .csv, .tsv or .parquet "
            "table with a header row."
        ) from exc
    return df


def _check_fields(path: Path, sep: str) -> None:
    """Refuse a header with repeated names and rows with another number of fields.

    pandas would silently turn extra fields of the first row into an index, pad short
    rows with empty text, and ignore both when reading only some columns, so every ID
    would shift; one pass with the csv module finds the line instead.
    """
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, None)
        if not header:
            raise PerturbscoreError(
                f"{path}: the variant table is empty; it needs a header row and one row per "
                "prediction row."
            )
        repeated = [c for c, n in Counter(header).items() if n > 1]
        if repeated:
            raise PerturbscoreError(
                f"{path}: line 1: the header names the column{'s' if len(repeated) > 1 else ''} "
                f"{listing(repeated, quoted=True)} more than once; give every column its own "
                "name."
            )
        for row in reader:
            if row and len(row) != len(header):
                fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
                raise PerturbscoreError(
                    f"{path}: line {reader.line_num}: {fields}, but the header has "
                    f"{len(header)}; fix the row (a separator inside a value must be quoted)."
                )


def pq_columns(path: Path) -> list[str]:
    """Column names of a Parquet file, from its schema alone."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def _present(
    path: Path, wanted: Sequence[str] | None, have: list[str], optional: Sequence[str] = ()
) -> list[str] | None:
    if wanted is None:
        return None
    wanted = [*wanted, *(c for c in optional if c in have)]
    missing = [c for c in wanted if c not in have]
    if missing:
        raise PerturbscoreError(
            f"{path}: ID columns {listing(missing, quoted=True)} are not in the variant table "
            f"(its columns: {listing(have, 20, quoted=True)}); choose others with id_columns, "
            'or id_columns = "all".'
        )
    return [c for c in have if c in set(wanted)]


def id_columns_of(df: pd.DataFrame, wanted: Sequence[str] | str, where: str) -> list[str]:
    """Resolve the ID columns to keep: a list, or ``"all"`` for every column."""
    if isinstance(wanted, str):
        if wanted != "all":
            raise PerturbscoreError(
                f'id_columns must be a list of column names or "all", not {quote(wanted)}.'
            )
        return list(df.columns)
    _present(Path(where), wanted, list(df.columns))  # raises, naming the missing columns
    return list(wanted)


def duplicate_report(df: pd.DataFrame, columns: Sequence[str], where: str) -> list[str]:
    """A warning about repeated identifiers in one variant table (kept, but worth knowing).

    Multi-allelic sites legitimately share an rsID (one row per ALT allele), as do
    variants predicted for several genes; rows whose *all* ID columns repeat are more
    suspicious and get their own clause.  Both go in one line per file, with an
    example: its IDs and 1-based lines (rows, for Parquet) in the table.

    Parameters
    ----------
    df : pandas.DataFrame
        The variant table, in file order.
    columns : sequence of str
        The ID columns kept in the output.
    where : str
        The table's path, as it should appear in the message.

    Returns
    -------
    list of str
        No entry, or one line.  It depends only on ``df``, ``columns`` and ``where``, so
        a file used by several batches gives the same line each time and callers can
        report it once (``dict.fromkeys(warnings)``).
    """
    parquet = Path(where).suffix.lower() == ".parquet"

    def lines(mask: pd.Series, limit: int = 2) -> str:
        # Row i of a CSV/TSV is line i + 2 (line 1 is the header).
        numbers = [int(k) + (1 if parquet else 2) for k in mask.to_numpy().nonzero()[0][:limit]]
        return ("rows " if parquet else "lines ") + " and ".join(map(str, numbers))

    parts: list[str] = []
    cols = list(columns)
    full = df.duplicated(subset=cols, keep=False) if cols else None
    if "rsID" in df.columns:
        dup = df["rsID"].duplicated(keep=False)
        # Said once when the ID columns are no more telling than the rsID alone.
        if dup.any() and not (full is not None and full.equals(dup)):
            example = df.loc[dup, "rsID"].iloc[0]
            parts.append(
                f"{int(dup.sum())} rows share an rsID with another row "
                f"({df.loc[dup, 'rsID'].nunique()} rsIDs, e.g. {example} on "
                f"{lines(df['rsID'] == example)}: multi-allelic sites or several genes per "
                "variant)"
            )
    if full is not None and full.any():
        first = df.loc[full, cols].iloc[0]
        same = (df[cols] == first).all(axis=1)
        ids = ", ".join(f"{c} {first[c]}" for c in cols)
        parts.append(
            f"{int(full.sum())} rows repeat all ID columns ({listing(cols)}), e.g. {ids} on "
            f"{lines(same)}, so they cannot be told apart by ID"
        )
    if not parts:
        return []
    return [f"{where}: " + "; ".join(parts) + "; all rows are kept."]
