"""Delimited variant tables (``.csv``, ``.tsv``) read as text, checked line by line.

:func:`read_text_table` is the text half of :func:`.variants.read_variants`: one pass
of the csv module checks every row (naming the line of anything a lenient parser
would misread) and keeps the wanted columns.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PerturbscoreError
from .frame import Columns
from .messages import listing, not_utf8, quote


def read_text_table(
    path: Path, sep: str, wanted: Callable[[list[str]], list[str] | None]
) -> Columns:
    """A delimited table, checked row by row and kept as text, in one pass.

    The checks refuse what a lenient parser would misread, naming the line: extra
    fields in the first row (pandas makes them an index), short rows (padded with empty
    text), blank lines between rows (skipped, shifting every later row against the
    predictions), a quote left open (it swallows the rest of the file into one field).
    Text that is not UTF-8 and a separator other than the suffix's are named as such.
    A plain file (no quote, no carriage return, every row as wide as the header) is
    split with ``str.split`` (:func:`_split_lines`), anything else read by the csv
    module.  The same pass keeps the wanted columns, so the file is parsed once; the frame is
    what ``pandas.read_csv(dtype=str, keep_default_na=False)`` gives for a table that
    passes (a byte order mark dropped, a column with no name called ``Unnamed: i``,
    pandas' own text dtype), without the second parse that took a third of the time
    spent on the study's tables.  A file holding a quote character is parsed by pandas
    too and must read the same: quotes outside CSV's rules (inside a value that does
    not start with one, text after a closing quote) are read differently by different
    tools (R's ``read.csv`` opens a quoted section at ``5"``), and such a table is
    refused rather than read one way of two.
    """
    # The csv module refuses fields over 128 KiB by default, which a long indel's allele
    # can exceed; pandas reads them. The limit is the process's: raised once, for all.
    csv.field_size_limit(_FIELD_LIMIT)
    picked: list[tuple[str, ...]] = []
    try:
        # A small file is read once, for the quote check and for the split.
        text = _small_text(path)
        quoted = '"' in text if text is not None else _holds_quote(path)
        split = None if text is None or quoted else _split_lines(path, text, sep, wanted)
        if split is not None:
            header, keep, values, rows = split
        else:
            header, keep = _check_rows(path, sep, wanted, picked, plain=not quoted)
    except UnicodeDecodeError:
        raise PerturbscoreError(not_utf8(path, "the variant table")) from None
    names = header if keep is None else keep
    if split is None:
        rows = len(picked)
        values = [list(v) for v in zip(*picked, strict=True)] if picked else [[] for _ in names]
    # ``attrs["header"]``: every column, for messages about missing ones.
    table = Columns(dict(zip(names, values, strict=True)), rows, {"header": header})
    if quoted:
        _same_as_pandas(path, sep, table)
    return table


#: Largest file :func:`_split_lines` reads (it holds the text, its lines and every field at
#: once, several times the file's size); a larger one is streamed by the csv module.
SPLIT_MAX_BYTES = 64 * 2**20


def _small_text(path: Path) -> str | None:
    """The file's text (a byte order mark dropped) if it is at most :data:`SPLIT_MAX_BYTES`,
    else None."""
    if path.stat().st_size > SPLIT_MAX_BYTES:
        return None  # held whole, with its lines and fields: the csv module streams
    return path.read_bytes().decode("utf-8-sig")


def _split_lines(
    path: Path, text: str, sep: str, wanted: Callable[[list[str]], list[str] | None]
) -> tuple[list[str], list[str] | None, list[Any], int] | None:
    """The header's names, the wanted names, their columns and the number of rows of
    ``text`` (the file at ``path``), split with ``str.split``; None if the file is not
    the plain case this covers.

    Plain: at most :data:`SPLIT_MAX_BYTES` (:func:`_small_text`), no quote character
    anywhere (the caller checked), no carriage return, a header, at least two columns,
    and every line after the header exactly as many fields.  The csv module reads such a
    file as these splits (a quote or a line ending other than a line feed is the only
    syntax it has beyond them), here in 40% of its time.  Anything else (a blank line, a
    short row, CRLF) goes to the csv module's passes, which name the line.
    """
    first, _, body = text.partition("\n")
    if "\r" in text or not first:
        return None
    fields = first.split(sep)
    width = len(fields)
    if width < 2:  # one column: a blank line would read as a field, not as a blank line
        return None
    header, names, keep, index = _header(path, sep, iter([fields]), wanted)
    body = body.removesuffix("\n")
    lines = body.split("\n") if body else []
    if any(line.count(sep) != width - 1 for line in lines):
        return None
    cells = body.replace("\n", sep).split(sep) if lines else []
    # No wanted column gives no rows, as pandas' usecols=[] (and the csv pass) does.
    return names, keep, [cells[i::width] for i in index], len(lines) if index else 0


def _holds_quote(path: Path) -> bool:
    """Whether the file holds a double quote anywhere (read in 1 MiB pieces)."""
    with path.open("rb") as fh:
        while piece := fh.read(1 << 20):
            if b'"' in piece:
                return True
    return False


def _same_as_pandas(path: Path, sep: str, table: Columns) -> None:
    """Refuse a table whose quotes pandas reads otherwise than the csv module did."""
    # Only files holding a quote character pay for pandas here.
    import pandas as pd

    df = table.to_frame()
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
        f'{path}: the variant table can be read two ways at {where}: its quotes (") are '
        "outside CSV's rules (inside a value that does not start with one, or text after a "
        "closing quote), which tools read differently; quote each such value whole and "
        'write each quote inside it twice ("5""" for 5"), or remove the quotes.'
    )


def _header_names(fields: list[str]) -> list[str]:
    """Column names as pandas gives them: an unnamed column is ``Unnamed: i``."""
    return [f or f"Unnamed: {i}" for i, f in enumerate(fields)]


#: Longest field the csv module reads (its default, 131,072 characters, is less than an
#: allele a variant table can hold); the largest value the module accepts on every platform.
_FIELD_LIMIT = 2**31 - 1

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
    plain: bool = False,
) -> tuple[list[str], list[str] | None]:
    """Check every row (see :func:`read_text_table`); append the ``wanted(header)`` fields of
    each to ``picked`` (all fields for None) and return the header's names and those.

    ``plain``: the file holds no quote character, so no field holds a line break and
    every row is one line.  Its rows are then first read without the per-row
    bookkeeping that names lines (13 of the 76 ms this takes on the study's four
    tables, of which the csv module's own parse is 43 ms); any irregular row (a blank
    line, a wrong number of fields) sends the file through the careful pass, which
    names it.
    """
    # utf-8-sig: a byte order mark (Excel writes one) is not part of the first name.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header, names, keep, index = _header(path, sep, reader, wanted)
        if plain and _plain_body(reader, len(header), index, picked):
            return names, keep
    picked.clear()
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header, names, keep, index = _header(path, sep, reader, wanted)
        end = _careful_body(path, reader, len(header), index, picked)
    # The last row holds a line break: a quote still open at the end of the file
    # swallowed them (the lenient reader above returns that row without a word).
    if end.last_open and _unclosed_at_end(path, sep):
        raise _open_quote(path, *end.last_open)
    # A quote opened on the last line of a file that ends without a line break leaves
    # no line break to see: read that line again, strictly.
    if not end.last_open and _last_line_unclosed(path, sep):
        raise _open_quote(path, end.line, end.line)
    return names, keep


def _header(
    path: Path, sep: str, reader: Any, wanted: Callable[[list[str]], list[str] | None]
) -> tuple[list[str], list[str], list[str] | None, list[int]]:
    """Read and check the header row: ``(fields, names, wanted names, their positions)``."""
    header = next(reader, None)
    if header == [] and next((r for r in reader if r), None) is not None:
        raise PerturbscoreError(
            f"{path}: line 1 is blank; the first line must be the header (the column "
            "names), with one row per prediction row after it: delete the blank line."
        )
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
    _refuse_unnamed_clash(path, header, names)
    keep = wanted(names)
    index = [names.index(c) for c in keep] if keep is not None else list(range(len(names)))
    return header, names, keep, index


def _plain_body(reader: Any, width: int, index: list[int], picked: list[tuple[str, ...]]) -> bool:
    """Keep the ``index`` fields of every row; False at the first row that is not
    ``width`` fields (``picked`` is then incomplete: the careful pass starts again)."""
    append = picked.append
    if len(index) > 1:
        pick = itemgetter(*index)
        for row in reader:
            if len(row) != width:
                return False
            append(pick(row))
    else:
        at = index[0] if index else None
        for row in reader:
            if len(row) != width:
                return False
            if at is not None:
                append((row[at],))
    return True


@dataclass
class _End:
    line: int  # the last line read
    last_open: tuple[int, int] | None  # lines of a last row that holds a line break


def _careful_body(
    path: Path, reader: Any, width: int, index: list[int], picked: list[tuple[str, ...]]
) -> _End:
    """Check every row, naming the line of the first that is wrong; keep ``index``."""
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
        if multi and len(row) != width:
            raise _open_quote(path, start, end)
        if len(row) != width:
            fields = f"{len(row)} field" + ("" if len(row) == 1 else "s")
            raise PerturbscoreError(
                f"{path}: line {start}: {fields}, but the header has "
                f"{width}; fix the row (a separator inside a value must be quoted)."
            )
        if pick is not None:
            picked.append(pick(row))
        elif index:
            picked.append((row[index[0]],))
    return _End(end, last_open)


def _refuse_unnamed_clash(path: Path, header: list[str], names: list[str]) -> None:
    """Refuse a nameless column whose stand-in name (``Unnamed: i``) another column has."""
    for i, field in enumerate(header):
        if not field and names[i] in header:
            raise PerturbscoreError(
                f"{path}: line 1: column {i + 1} has no name, and column "
                f"{header.index(names[i]) + 1} is named {quote(names[i])}, the name a column "
                "without one is given; give every column a name of its own."
            )


def _open_quote(path: Path, start: int, end: int) -> PerturbscoreError:
    spans = f", so lines {start} to {end} were read as one row" if end > start else ""
    return PerturbscoreError(
        f'{path}: line {start}: a quote (") opened on line {start} is not closed{spans}; '
        'close the quote, or remove it (a quote inside a quoted value is written twice, "").'
    )


def _open_at_end(lines: Iterable[str], sep: str) -> bool:
    """Whether a strict csv reader of ``lines`` meets their end inside a quote."""
    try:
        for _ in csv.reader(lines, delimiter=sep, strict=True):
            pass
    except csv.Error as exc:
        return "end of data" in str(exc)
    return False


def _unclosed_at_end(path: Path, sep: str) -> bool:
    with path.open(newline="", encoding="utf-8") as fh:
        return _open_at_end(fh, sep)


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
    return _open_at_end([tail[cut + 1 :].decode("utf-8", "replace")], sep)
