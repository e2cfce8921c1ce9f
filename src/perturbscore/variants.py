"""Variant tables: one row per prediction row, read as text.

Every column is read as a string and kept as one: an allele column holding only
``T``/``F`` must stay the letters T and F (thymine, and an F that some tools write),
never become booleans, and identifiers such as ``01`` must keep their zeros.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .messages import listing, not_utf8, quote

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
            df = _read_text(p, "," if suffix == ".csv" else "\t", columns, optional)
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


def _read_text(
    path: Path, sep: str, columns: Sequence[str] | None, optional: Sequence[str]
) -> pd.DataFrame:
    """A delimited table, checked row by row and kept as text, in one pass of the csv module.

    The checks refuse what a lenient parser would misread, naming the line: extra
    fields in the first row (pandas makes them an index), short rows (padded with empty
    text), blank lines between rows (skipped, shifting every later row against the
    predictions), a quote left open (it swallows the rest of the file into one field).
    Text that is not UTF-8 and a separator other than the suffix's are named as such.
    The same pass keeps the wanted columns, so the file is parsed once; the frame is
    what ``pandas.read_csv(dtype=str, keep_default_na=False)`` gives for a table that
    passes (a byte order mark dropped, a column with no name called ``Unnamed: i``,
    pandas' own text dtype), without the second parse that took a third of the time
    spent on the study's tables.  A file holding a quote character is parsed by pandas
    too and must read the same: quotes outside CSV's rules (inside a value that does
    not start with one, text after a closing quote) are read differently by different
    tools (R's ``read.csv`` opens a quoted section at ``5"``), and such a table is
    refused rather than read one way of two.
    """
    picked: list[tuple[str, ...]] = []
    try:
        header, wanted = _check_rows(
            path, sep, lambda names: _present(path, columns, names, optional), picked
        )
    except UnicodeDecodeError:
        raise PerturbscoreError(not_utf8(path, "the variant table")) from None
    names = header if wanted is None else wanted
    values = list(zip(*picked, strict=True)) if picked else [() for _ in names]
    df = pd.DataFrame(
        {n: pd.Series(v, dtype=str) for n, v in zip(names, values, strict=True)},
        columns=names,
    )
    df.attrs["header"] = header  # every column, for messages about missing ones
    if _holds_quote(path):
        _same_as_pandas(path, sep, df)
    return df


def _holds_quote(path: Path) -> bool:
    """Whether the file holds a double quote anywhere (read in 1 MiB pieces)."""
    with path.open("rb") as fh:
        while piece := fh.read(1 << 20):
            if b'"' in piece:
                return True
    return False


def _same_as_pandas(path: Path, sep: str, df: pd.DataFrame) -> None:
    """Refuse a table whose quotes pandas reads otherwise than the csv module did."""
    try:
        other = pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
            usecols=list(df.columns),
        )  # fmt: skip
        same = other.shape == df.shape and bool((other.to_numpy() == df.to_numpy()).all())
    except (ValueError, pd.errors.ParserError):
        other, same = None, False
    if same:
        return
    row = 0
    if other is not None and other.shape == df.shape:
        row = int(np.flatnonzero((other.to_numpy() != df.to_numpy()).any(axis=1))[0]) + 1
    where = f"row {row:,} after the header" if row else "its quotes"
    raise PerturbscoreError(
        f"{path}: the variant table can be read two ways at {where}: its quotes (\") are "
        "outside CSV's rules (inside a value that does not start with one, or text after a "
        "closing quote), which tools read differently; quote each such value whole and "
        'write each quote inside it twice ("5""" for 5"), or remove the quotes.'
    )


def _header_names(fields: list[str]) -> list[str]:
    """Column names as pandas gives them: an unnamed column is ``Unnamed: i``."""
    return [f or f"Unnamed: {i}" for i, f in enumerate(fields)]


_SEPARATORS = {",": ("comma", ".csv"), "\t": ("tab", ".tsv"), ";": ("semicolon", None)}


def _wrong_separator(path: Path, header: list[str], sep: str) -> str | None:
    """A hint when a one-field header holds another separator (a TSV named .csv)."""
    if len(header) != 1:
        return None
    for other, (word, suffix) in _SEPARATORS.items():
        if other != sep and other in header[0]:
            fix = (
                f"rename it {path.stem}{suffix}"
                if suffix
                else "save it comma-separated (.csv) or tab-separated (.tsv)"
            )
            return (
                f"{path}: line 1 has no {_SEPARATORS[sep][0]} but holds {word}s "
                f"({quote(header[0], 60)}): the file looks {word}-separated; {fix}."
            )
    return None


def _check_rows(
    path: Path,
    sep: str,
    wanted: Callable[[list[str]], list[str] | None],
    picked: list[tuple[str, ...]],
) -> tuple[list[str], list[str] | None]:
    """Check every row (see :func:`_read_text`); append the ``wanted(header)`` fields of
    each to ``picked`` (all fields for None) and return the header's names and those."""
    # utf-8-sig: a byte order mark (Excel writes one) is not part of the first name.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, None)
        if not header:
            raise PerturbscoreError(
                f"{path}: the variant table is empty; it needs a header row and one row per "
                "prediction row."
            )
        hint = _wrong_separator(path, header, sep)
        if hint:
            raise PerturbscoreError(hint)
        repeated = [c for c, n in Counter(header).items() if n > 1]
        if repeated:
            raise PerturbscoreError(
                f"{path}: line 1: the header names the column{'s' if len(repeated) > 1 else ''} "
                f"{listing(repeated, quoted=True)} more than once; give every column its own "
                "name."
            )
        names = _header_names(header)
        keep = wanted(names)
        index = [names.index(c) for c in keep] if keep is not None else list(range(len(names)))
        pick = itemgetter(*index) if len(index) > 1 else None
        blank = 0  # first blank line not yet followed by a row (blank lines at the end are fine)
        end = reader.line_num
        last_open: tuple[int, int] | None = None
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:
                blank = blank or start
                continue
            if blank:
                raise PerturbscoreError(
                    f"{path}: line {blank} is blank, but rows follow it; every line after the "
                    "header is one prediction row, in order, so delete the blank line (or "
                    "write the row that belongs there)."
                )
            # A field holding a line break ran on past its line: maybe a quote left open.
            # The reader counts every line it consumes, so a row read from more than one
            # line holds one; on the last line only the last field can (a quote opened
            # there runs to the end of the file), which spares a look at every field.
            multi = end > start or "\n" in row[-1] or "\r" in row[-1]
            last_open = (start, end) if multi else None
            if multi and len(row) != len(header):
                raise _open_quote(path, start, end)
            if len(row) != len(header):
                fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
                raise PerturbscoreError(
                    f"{path}: line {start}: {fields}, but the header has "
                    f"{len(header)}; fix the row (a separator inside a value must be quoted)."
                )
            if pick is not None:
                picked.append(pick(row))
            elif index:
                picked.append((row[index[0]],))
    # The last row holds a line break: a quote still open at the end of the file
    # swallowed them (the lenient reader above returns that row without a word).
    if last_open and _unclosed_at_end(path, sep):
        raise _open_quote(path, *last_open)
    # A quote opened on the last line of a file that ends without a line break leaves
    # no line break to see: read that line again, strictly.
    if not last_open and _last_line_unclosed(path, sep):
        raise _open_quote(path, end, end)
    return names, keep


def _open_quote(path: Path, start: int, end: int) -> PerturbscoreError:
    spans = f", so lines {start} to {end} were read as one row" if end > start else ""
    return PerturbscoreError(
        f'{path}: line {start}: a quote (") opened on line {start} is not closed{spans}; '
        'close the quote, or remove it (a quote inside a quoted value is written twice, "").'
    )


def _unclosed_at_end(path: Path, sep: str) -> bool:
    with path.open(newline="", encoding="utf-8") as fh:
        try:
            for _ in csv.reader(fh, delimiter=sep, strict=True):
                pass
        except csv.Error as exc:
            return "end of data" in str(exc)
    return False


def _last_line_unclosed(path: Path, sep: str) -> bool:
    """Whether the file ends without a line break inside a quote opened on its last line."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    if tail.endswith((b"\n", b"\r")):
        return False
    cut = max(tail.rfind(b"\n"), tail.rfind(b"\r"))
    if cut < 0 and len(tail) < size:  # a last line longer than the tail: read it all
        return _unclosed_at_end(path, sep)
    line = tail[cut + 1 :].decode("utf-8", "replace")
    try:
        for _ in csv.reader([line], delimiter=sep, strict=True):
            pass
    except csv.Error as exc:
        return "end of data" in str(exc)
    return False


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
