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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PerturbscoreError
from .frame import Columns, as_columns
from .integrity_keys import id_keys
from .messages import listing, quote
from .variants_text import read_text_table

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_ID_COLUMNS = ("GENE", "rsID", "REF", "ALT")


def read_variants(
    path: str | Path, columns: Sequence[str] | None = None, optional: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a variant table (``.csv``, ``.tsv``/``.txt``, ``.parquet``) with every column as text.

    Missing values are kept as they are written (``NA`` stays the text ``NA``), so that
    nothing is reinterpreted between input and output.  ``columns`` reads only those
    (all must exist; row counting is unaffected), and the ``optional`` columns where
    the table has them (their absence is for the caller to report).  The same table
    as :func:`read_variant_columns`, as a pandas DataFrame.
    """
    return read_variant_columns(path, columns, optional).to_frame()


def read_variant_columns(
    path: str | Path, columns: Sequence[str] | None = None, optional: Sequence[str] = ()
) -> Columns:
    """:func:`read_variants` as :class:`~perturbscore.frame.Columns` (what a run reads).

    A CSV or TSV table is read without pandas (see :mod:`.frame`).
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: variant table not found. Check the path.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return _read_parquet(p, columns, optional)
        if suffix in {".csv", ".tsv", ".txt"}:
            return read_text_table(
                p,
                "," if suffix == ".csv" else "\t",
                lambda names: _present(p, columns, names, optional),
            )
        raise PerturbscoreError(
            f"{p}: unknown variant table format {quote(suffix or p.name)}; use .csv, .tsv "
            "or .parquet."
        )
    except (ValueError, OSError, csv.Error) as exc:
        # Parser messages name the line; keep them on one line of the sentence (pandas'
        # ParserError is a ValueError).
        reason = " ".join(str(exc).split())
        raise PerturbscoreError(
            f"{p}: cannot read the variant table ({reason}); it must be a .csv, .tsv or .parquet "
            "table with a header row."
        ) from exc


def _read_parquet(path: Path, columns: Sequence[str] | None, optional: Sequence[str]) -> Columns:
    """A Parquet variant table's columns as text (missing values as empty text)."""
    import pandas as pd

    header = pq_columns(path)
    df = pd.read_parquet(path, columns=_present(path, columns, header, optional))
    df = df.astype(object).where(df.notna(), "").astype(str)
    table = Columns.from_frame(df)
    table.attrs["header"] = header
    return table


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


def id_columns_of(df: Columns | pd.DataFrame, wanted: Sequence[str] | str, where: str) -> list[str]:
    """Resolve the ID columns to keep: a list, or ``"all"`` for every column."""
    if isinstance(wanted, str):
        if wanted != "all":
            raise PerturbscoreError(
                f'id_columns must be a list of column names or "all", not {quote(wanted)}.'
            )
        return list(df.columns)
    _present(Path(where), wanted, list(df.columns))  # raises, naming the missing columns
    return list(wanted)


def duplicate_report(
    df: Columns | pd.DataFrame,
    columns: Sequence[str],
    where: str,
    keys: Sequence[str] | None = None,
) -> list[str]:
    """A warning about repeated identifiers in one variant table (kept, but worth knowing).

    Multi-allelic sites legitimately share an rsID (one row per ALT allele), as do
    variants predicted for several genes; rows whose *all* ID columns repeat are more
    suspicious and get their own clause.  Both go in one line per file, with an
    example: its IDs and 1-based lines (rows, for Parquet) in the table.

    Parameters
    ----------
    df : Columns or pandas.DataFrame
        The variant table, in file order.
    columns : sequence of str
        The ID columns kept in the output.
    where : str
        The table's path, as it should appear in the message.
    keys : sequence of str, optional
        Each row's ID key (:func:`.integrity_keys.id_keys` of ``columns``), when the
        caller has them already.

    Returns
    -------
    list of str
        No entry, or one line.  It depends only on ``df``, ``columns`` and ``where``, so
        a file used by several batches gives the same line each time and callers can
        report it once (``dict.fromkeys(warnings)``).
    """
    parquet = Path(where).suffix.lower() == ".parquet"
    table = as_columns(df)

    def lines(mask: np.ndarray, limit: int = 2) -> str:
        # Row i of a CSV/TSV is line i + 2 (line 1 is the header).
        numbers = [int(k) + (1 if parquet else 2) for k in np.flatnonzero(mask)[:limit]]
        return ("rows " if parquet else "lines ") + " and ".join(map(str, numbers))

    parts: list[str] = []
    cols = list(columns)
    if cols:
        full_keys: list[str] | None = list(keys) if keys is not None else id_keys(table, cols)
    else:
        full_keys = None
    full = _repeated(full_keys) if full_keys is not None else None
    if "rsID" in table:
        rsids = table["rsID"].tolist()
        dup = _repeated(rsids)
        # Said once when the ID columns are no more telling than the rsID alone.
        if dup.any() and not (full is not None and np.array_equal(full, dup)):
            example = rsids[int(np.flatnonzero(dup)[0])]
            repeated = {r for r, d in zip(rsids, dup.tolist(), strict=True) if d}
            parts.append(
                f"{int(dup.sum())} rows share an rsID with another row "
                f"({len(repeated)} rsIDs, e.g. {example} on "
                f"{lines(table['rsID'] == example)}: multi-allelic sites or several genes per "
                "variant)"
            )
    if full is not None and full_keys is not None and full.any():
        at = int(np.flatnonzero(full)[0])
        first = full_keys[at]
        same = np.fromiter((k == first for k in full_keys), bool, len(full_keys))
        ids = ", ".join(f"{c} {table[c][at]}" for c in cols)
        parts.append(
            f"{int(full.sum())} rows repeat all ID columns ({listing(cols)}), e.g. {ids} on "
            f"{lines(same)}, so they cannot be told apart by ID"
        )
    if not parts:
        return []
    return [f"{where}: " + "; ".join(parts) + "; all rows are kept."]


def _repeated(keys: list[Any]) -> np.ndarray:
    """Which rows' keys occur more than once (``bool # n``; pandas' ``duplicated(keep=False)``)."""
    counts = Counter(keys)
    if len(counts) == len(keys):  # the usual case: nothing repeats
        return np.zeros(len(keys), bool)
    return np.fromiter(map(counts.__getitem__, keys), np.int64, len(keys)) > 1


def check_ids_against_tracks(
    id_columns: Sequence[str],
    track_names: Sequence[str],
    run_file: str | Path | None = None,
    listed: Sequence[str] | str = (),
) -> None:
    """Refuse ID columns named like a selected track: a table cannot hold both.

    Parameters
    ----------
    id_columns : sequence of str
        The ID columns the tables get (after ``"all"`` is resolved).
    track_names : sequence of str
        Identifiers of the selected tracks (the score columns).
    run_file : str or Path, optional
        The run file, named in the message with its ``[output] id_columns`` key.
    listed : sequence of str or str
        ``id_columns`` as the run file wrote it (``"all"`` words the fix differently).

    Raises
    ------
    PerturbscoreError
        Naming the run file, the key, the clashing names and the fix.
    """
    tracks = set(track_names)
    clash = [c for c in id_columns if c in tracks]
    if not clash:
        return
    where = f"{run_file} [output] id_columns" if run_file else "ID columns"
    one = len(clash) == 1
    names = f"column{'' if one else 's'} {listing(clash, quoted=True)}"
    it = "it" if one else "them"
    if listed == "all":
        head = f'{where}: "all" keeps the variant table\'s {names}, which'
        fix = f"list the ID columns without {it}, or rename {it} in the variant table"
    else:
        head = f"{where}: the ID {names}"
        fix = f"leave {it} out of id_columns, or rename {it} in the variant table"
    raise PerturbscoreError(
        f"{head} {'is' if one else 'are'} also the identifier{'' if one else 's'} of "
        f"{'a selected track' if one else 'selected tracks'}, and a table cannot hold two "
        f"columns of one name; {fix}, or leave the track{'' if one else 's'} out of [tracks]."
    )
