"""The targets file's text (``targets_human.txt``): its columns, and its lines as records.

The canonical file has a header line and one tab-separated record per line.  Two kinds
of damage are met in the wild and repaired here, and nothing else is accepted:

* each record wrapped over two lines, the break before ``sum_stat``: a line with the
  first 7 fields ending in a tab, then a line ``sum_stat<TAB>description``;
* a long ``description`` broken once at a space: the part before the break ends in a
  space and the next line (no tab) continues it.

The pieces are joined with no separator (the breaks were *inserted*), and each joined
record is checked field by field.  :func:`perturbscore.tracks.read_targets` turns the
records into the parsed track table.  A track shortlist (its rows checked against the
table, each with its line for messages) is read here too: :func:`shortlist_order`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PerturbscoreError
from .frame import Columns
from .messages import listing, not_utf8, quote

TARGET_COLUMNS = [
    "index",
    "genome",
    "identifier",
    "file",
    "clip",
    "scale",
    "sum_stat",
    "description",
]
#: Columns :func:`target_columns` adds, split from ``description``.
PARSED_COLUMNS = ["assay", "target", "biosample"]
#: ``sum_stat`` values basenji writes (how a track's coverage was pooled into bins).
SUM_STATS = ("mean", "sum", "sum_sqrt", "avg", "median", "max", "peak")
_HEADER_WORDS = " ".join(TARGET_COLUMNS)
_N_FIELDS = len(TARGET_COLUMNS)


def read_records(path: Path) -> list[list[str]]:
    """The checked records of a targets file, in file order.

    Each record has the 8 fields of :data:`TARGET_COLUMNS`, ``index`` equal to its
    position, integer ``genome``, a non-empty identifier unique in the file, numeric
    ``clip`` and ``scale``, a known ``sum_stat`` (:data:`SUM_STATS`) and a non-empty
    ``description``.

    Raises
    ------
    PerturbscoreError
        Missing or unreadable file, wrong header, or any line that is neither a record
        nor one of the known repairs; the message names the file, the 1-based line and
        what was expected there.
    """
    lines = _read_lines(path)
    if lines[0].split("\t") != TARGET_COLUMNS:
        raise PerturbscoreError(
            f"{path}: line 1: header {quote(lines[0])} is not the expected tab-separated "
            f"{_HEADER_WORDS}; is this the model's targets file?"
        )
    records: list[list[str]] = []
    first_line: dict[str, int] = {}  # identifier -> line, for duplicates
    i = 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        record, field_lines, i = _join_record(path, lines, i, after_record=bool(records))
        fields = record.split("\t")
        _check_record(path, fields, field_lines, len(records))
        ident = fields[2]
        if ident in first_line:
            raise PerturbscoreError(
                f"{path}: line {field_lines[2]}: identifier {quote(ident)} is also the "
                f"identifier on line {first_line[ident]}; each track needs its own identifier."
            )
        first_line[ident] = field_lines[2]
        records.append(fields)
    if not records:
        raise PerturbscoreError(f"{path}: no track records after the header.")
    return records


def split_description(description: str) -> tuple[str, str, str]:
    """``CHIP:H3K27ac:GM12878`` -> (CHIP, H3K27ac, GM12878); ``DNASE:x`` -> (DNASE, '', x)."""
    assay, sep, rest = description.partition(":")
    if not sep:
        return "", "", description.strip()
    assay = assay.strip().upper()
    if assay == "CHIP":
        target, sep2, biosample = rest.partition(":")
        if sep2:
            return assay, target.strip(), biosample.strip()
        return assay, "", rest.strip()
    return assay, "", rest.strip()


def target_columns(path: Path) -> Columns:
    """The parsed track table (see :func:`perturbscore.tracks.read_targets`) as columns."""
    records = read_records(path)
    fields = list(zip(*records, strict=True)) if records else [() for _ in TARGET_COLUMNS]
    data: dict[str, Any] = dict(zip(TARGET_COLUMNS, map(list, fields), strict=True))
    for col in ("index", "genome"):
        data[col] = np.array([int(v) for v in data[col]], dtype=np.int64)
    for col in ("clip", "scale"):
        data[col] = _numbers(data[col])
    split = [split_description(d) for d in data["description"]]
    for k, col in enumerate(PARSED_COLUMNS):
        data[col] = [s[k] for s in split]
    return Columns(data, len(records))


def _numbers(texts: list[str]) -> np.ndarray:
    """Numeric text as ``pandas.to_numeric`` reads it: int64 if every value is an integer."""
    try:
        return np.array([int(v) for v in texts], dtype=np.int64)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond int64
        return np.array([float(v) for v in texts], dtype=np.float64)


def _read_lines(path: Path) -> list[str]:
    """The file's lines (a BOM dropped, CRLF read as LF); the first is the header."""
    if not path.is_file():
        raise PerturbscoreError(f"{path}: track table not found. Check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PerturbscoreError(
            f"{path}: not a UTF-8 text file; the track table is tab-separated text with the "
            f"header {_HEADER_WORDS}."
        ) from None
    return text.replace("\r\n", "\n").split("\n")


def _join_record(
    path: Path, lines: list[str], i: int, *, after_record: bool
) -> tuple[str, list[int], int]:
    """The record starting on ``lines[i]`` (not blank), repaired.

    Returns the joined record, the 1-based line each of its fields is on, and the
    index of the line after it.
    """
    line, lineno = lines[i], i + 1
    tabs = line.count("\t")
    if tabs == _N_FIELDS - 1:  # canonical: one record per line
        record, field_lines = line, [lineno] * _N_FIELDS
        i += 1
    elif tabs == _N_FIELDS - 2 and line.endswith("\t"):  # wrapped before sum_stat
        rest = lines[i + 1] if i + 1 < len(lines) else ""
        if rest.count("\t") != 1:
            raise PerturbscoreError(
                f"{path}: line {lineno + 1}: expected the rest of the record begun on line "
                f"{lineno}, sum_stat<TAB>description (the record is wrapped before "
                f"sum_stat), found {_found(rest)}."
            )
        record, field_lines = line + rest, [lineno] * (_N_FIELDS - 2) + [lineno + 1] * 2
        i += 2
    elif tabs == 0 and after_record:
        raise PerturbscoreError(
            f"{path}: line {lineno}: {quote(line, 60)} is not a track record (no tab); a "
            "description broken over two lines is repaired only once per record, so "
            "remove or repair it."
        )
    else:
        raise PerturbscoreError(
            f"{path}: line {lineno}: expected a track record of {_N_FIELDS} tab-separated "
            f"fields ({_HEADER_WORDS}), or its first {_N_FIELDS - 1} fields ending in a tab "
            f"when the record is wrapped before sum_stat, found {_found(line)}."
        )
    # A description broken once at a space continues on the next line (no tab).
    if i < len(lines) and lines[i].strip() and "\t" not in lines[i]:
        if not record.endswith(" "):
            raise PerturbscoreError(
                f"{path}: line {i + 1}: {quote(lines[i], 60)} is not a track record (no tab), "
                f"and the description before it on line {field_lines[-1]} does not end in a "
                "space as a description broken over two lines does; remove or repair it."
            )
        record += lines[i]
        i += 1
    return record, field_lines, i


def _found(line: str) -> str:
    if not line.strip():
        return "an empty line" if line == "" else "a blank line"
    return f"{line.count(chr(9)) + 1} field(s) {quote(line, 60)}"


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _check_record(path: Path, fields: list[str], lines: list[int], expected_index: int) -> None:
    """Check one joined record's fields; the message names the line the field is on."""

    def bad(k: int, what: str) -> PerturbscoreError:
        return PerturbscoreError(
            f"{path}: line {lines[k]}: {TARGET_COLUMNS[k]} {quote(fields[k], 60)} is not {what}."
        )

    if not fields[0].isdigit() or int(fields[0]) != expected_index:
        raise PerturbscoreError(
            f"{path}: line {lines[0]}: track index {quote(fields[0])}, expected "
            f"{expected_index}; rows must be the tracks 0, 1, 2, ... in prediction-array order."
        )
    if not fields[1].isdigit():
        raise bad(1, "an integer genome number (0 for human)")
    if not fields[2].strip():
        raise bad(2, "a track identifier (it is empty)")
    for k in (4, 5):
        if not _is_number(fields[k]):
            raise bad(k, "a number")
    if fields[6] not in SUM_STATS:
        raise bad(6, f"a summary statistic: one of {listing(SUM_STATS)}")
    if not fields[7].strip():
        raise bad(7, "a description (it is empty)")


def _read_shortlist(path: Path) -> dict[str, list[str]]:
    """A track shortlist (CSV, or TSV for .tsv/.txt) as text columns, with an ``index`` column.

    Read with the csv module as ``pandas.read_csv(dtype=str, keep_default_na=False)``
    reads it (blank lines, and lines of spaces and tabs, skipped; short rows padded with
    empty text; of a repeated column name, the first column), without pandas.
    """
    if not path.is_file():
        raise PerturbscoreError(f"{path}: track shortlist not found. Check the path.")
    sep = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    kind = "tab" if sep == "\t" else "comma"

    def unreadable(reason: str) -> PerturbscoreError:
        return PerturbscoreError(
            f"{path}: cannot read the track shortlist as a {kind}-separated table ({reason}); "
            "it needs an 'index' column of 0-based track numbers."
        )

    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=sep, strict=True)
        try:
            # (file line, fields); pandas skips a line of spaces and tabs as blank.
            lined = [(reader.line_num, r) for r in reader if not _blank_row(r)]
        except UnicodeDecodeError:
            raise PerturbscoreError(not_utf8(path, "the track shortlist")) from None
        except csv.Error as exc:  # pandas' messages named the line; so does this one
            raise unreadable(f"line {reader.line_num}: {' '.join(str(exc).split())}") from None
    if not lined:
        raise unreadable("the file has no header row")
    header, body = lined[0][1], [r for _, r in lined[1:]]
    for line, r in lined[1:]:
        if len(r) > len(header):
            raise unreadable(f"line {line} has {len(r)} fields, the header {len(header)}")
    if "index" not in header:
        raise PerturbscoreError(
            f"{path}: shortlist has no 'index' column (its columns: {listing(header)}); add "
            "the 0-based track numbers of targets_human.txt as 'index'."
        )
    if not body:
        raise PerturbscoreError(f"{path}: the track shortlist has no rows; list the tracks.")
    padded = [r + [""] * (len(header) - len(r)) for r in body]
    table: dict[str, list[str]] = {}
    for j, name in enumerate(header):  # a repeated name: pandas reads the first as it
        table.setdefault(name, [r[j] for r in padded])
    return table


def _blank_row(fields: list[str]) -> bool:
    """Whether a csv row is what pandas skips as a blank line (empty, or spaces and tabs
    that are not the separator)."""
    return not fields or (len(fields) == 1 and not fields[0].strip(" \t"))


def shortlist_order(table: Columns, shortlist: Path) -> list[tuple[int, str]]:
    """The shortlist's track numbers (and lines), each checked against the track table."""
    n = len(table)
    sl = _read_shortlist(Path(shortlist))
    order = []
    for row, raw in enumerate(sl["index"], start=2):
        try:
            idx = int(raw)
        except ValueError:
            raise PerturbscoreError(
                f"{shortlist}: line {row}: index {quote(raw)} is not an integer; write "
                "the 0-based track number."
            ) from None
        if not 0 <= idx < n:
            raise PerturbscoreError(
                f"{shortlist}: line {row}: track index {idx} is outside 0..{n - 1} "
                "of the track table; is this shortlist for another model?"
            )
        if "identifier" in sl:
            want = sl["identifier"][row - 2]
            have = table["identifier"][idx]
            if want != have:
                raise PerturbscoreError(
                    f"{shortlist}: line {row}: index {idx} is {quote(want)} in the "
                    f"shortlist but {quote(have)} in the track table; shortlist and table "
                    "disagree, so one of them is from another model or was re-ordered."
                )
        order.append((idx, f"{shortlist} line {row}"))
    return order
