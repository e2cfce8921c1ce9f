"""The model's track table (``targets_human.txt``) and track selection.

The table has one row per output track; row ``i`` describes track ``i`` of the
prediction arrays' last axis.  Besides the file's own columns
(``index genome identifier file clip scale sum_stat description``) the parsed
table carries ``assay`` (DNASE, ATAC, CHIP, CAGE), ``target`` (the ChIP target,
empty otherwise) and ``biosample``, split from ``description``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import PerturbscoreError
from .messages import listing, quote

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
PARSED_COLUMNS = ["assay", "target", "biosample"]
#: ``sum_stat`` values basenji writes (how a track's coverage was pooled into bins).
SUM_STATS = ("mean", "sum", "sum_sqrt", "avg", "median", "max", "peak")
_HEADER_WORDS = " ".join(TARGET_COLUMNS)


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


def read_targets(path: str | Path) -> pd.DataFrame:
    """Parse a targets table: the canonical form, or the known damaged copies.

    The canonical file has one tab-separated record per line.  Two kinds of damage
    are met in the wild and repaired, and nothing else is accepted:

    * each record wrapped over two lines, the break before ``sum_stat``: a line with
      the first 7 fields ending in a tab, then a line ``sum_stat<TAB>description``;
    * a long ``description`` broken once at a space: the part before the break ends
      in a space and the next line (no tab) continues it.

    The pieces are joined with no separator (the breaks were *inserted*).  Each
    record is then checked: 8 fields, ``index`` equal to its position, integer
    ``genome``, non-empty and unique ``identifier``, numeric ``clip`` and ``scale``, a
    known ``sum_stat`` (:data:`SUM_STATS`) and a non-empty ``description``.

    Parameters
    ----------
    path : str or Path
        Tab-separated file with the header ``index genome identifier file clip scale
        sum_stat description``.

    Returns
    -------
    pandas.DataFrame
        One row per track, in file order, ``index`` equal to the row position; columns
        :data:`TARGET_COLUMNS` then :data:`PARSED_COLUMNS`.

    Raises
    ------
    PerturbscoreError
        Missing or unreadable file, wrong header, or any line that is neither a record
        nor one of the known repairs; the message names the file, the 1-based line and
        what was expected there.
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: track table not found. Check the path.")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PerturbscoreError(
            f"{p}: not a UTF-8 text file; the track table is tab-separated text with the "
            f"header {_HEADER_WORDS}."
        ) from None
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[0].split("\t") != TARGET_COLUMNS:
        raise PerturbscoreError(
            f"{p}: line 1: header {quote(lines[0])} is not the expected tab-separated "
            f"{_HEADER_WORDS}; is this the model's targets file?"
        )
    records: list[list[str]] = []
    first_line: dict[str, int] = {}  # identifier -> line, for duplicates
    n_fields = len(TARGET_COLUMNS)
    i = 1
    while i < len(lines):
        line, lineno = lines[i], i + 1
        if not line.strip():
            i += 1
            continue
        tabs = line.count("\t")
        if tabs == n_fields - 1:  # canonical: one record per line
            record, field_lines = line, [lineno] * n_fields
            i += 1
        elif tabs == n_fields - 2 and line.endswith("\t"):  # wrapped before sum_stat
            rest = lines[i + 1] if i + 1 < len(lines) else ""
            if rest.count("\t") != 1:
                raise PerturbscoreError(
                    f"{p}: line {lineno + 1}: expected the rest of the record begun on line "
                    f"{lineno}, sum_stat<TAB>description (the record is wrapped before "
                    f"sum_stat), found {_found(rest)}."
                )
            record, field_lines = line + rest, [lineno] * (n_fields - 2) + [lineno + 1] * 2
            i += 2
        elif tabs == 0 and records:
            raise PerturbscoreError(
                f"{p}: line {lineno}: {quote(line, 60)} is not a track record (no tab); a "
                "description broken over two lines is repaired only once per record, so "
                "remove or repair it."
            )
        else:
            raise PerturbscoreError(
                f"{p}: line {lineno}: expected a track record of {n_fields} tab-separated "
                f"fields ({_HEADER_WORDS}), or its first {n_fields - 1} fields ending in a tab "
                f"when the record is wrapped before sum_stat, found {_found(line)}."
            )
        # A description broken once at a space continues on the next line (no tab).
        if i < len(lines) and lines[i].strip() and "\t" not in lines[i]:
            if not record.endswith(" "):
                raise PerturbscoreError(
                    f"{p}: line {i + 1}: {quote(lines[i], 60)} is not a track record (no tab), and "
                    f"the description before it on line {field_lines[-1]} does not end in a "
                    "space as a description broken over two lines does; remove or repair it."
                )
            record += lines[i]
            i += 1
        fields = record.split("\t")
        _check_record(p, fields, field_lines, len(records))
        ident = fields[2]
        if ident in first_line:
            raise PerturbscoreError(
                f"{p}: line {field_lines[2]}: identifier {quote(ident)} is also the identifier "
                f"on line {first_line[ident]}; each track needs its own identifier."
            )
        first_line[ident] = field_lines[2]
        records.append(fields)
    if not records:
        raise PerturbscoreError(f"{p}: no track records after the header.")
    table = pd.DataFrame(records, columns=TARGET_COLUMNS)
    for col in ("index", "genome"):
        table[col] = table[col].astype("int64")
    for col in ("clip", "scale"):
        table[col] = pd.to_numeric(table[col])
    split = [split_description(d) for d in table["description"]]
    for k, col in enumerate(PARSED_COLUMNS):
        table[col] = [s[k] for s in split]
    return table


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


@dataclass(frozen=True)
class TrackSelection:
    """How to choose tracks; fields combine (explicit lists first, ``where`` filters them).

    Attributes
    ----------
    shortlist : Path, optional
        CSV/TSV with an ``index`` column (0-based track numbers); its row order is the
        output column order.  If it has an ``identifier`` column it must agree with the
        track table at the same index.
    identifiers : list of str, optional
        Track identifiers (e.g. ``ENCFF093VXI``), in output order.
    indices : list of int, optional
        0-based track numbers, in output order.
    where : dict, optional
        Column -> condition, all of which must hold (see :func:`match_condition`).
    """

    shortlist: Path | None = None
    identifiers: tuple[str, ...] | None = None
    indices: tuple[int, ...] | None = None
    where: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """The selection in words, for messages (``where biosample=GM12878``)."""
        parts = []
        if self.shortlist:
            parts.append(f"shortlist {self.shortlist}")
        if self.identifiers:
            parts.append(f"identifiers {listing(self.identifiers)}")
        if self.indices:
            parts.append(f"indices {listing(self.indices)}")
        if self.where:
            ops = {"=": "==", "~": "~"}
            conds = [
                f"{col}{ops[c[0]]}{c[1:]}" if c[:1] in ops else f"{col}={c}"
                for col, c in self.where.items()
            ]
            parts.append(f"where {' and '.join(conds)}")
        return "; ".join(parts) or "every track"

    def describe(self) -> dict[str, object]:
        """Parameters recorded in the run manifest."""
        return {
            "shortlist": str(self.shortlist) if self.shortlist else None,
            "identifiers": list(self.identifiers) if self.identifiers else None,
            "indices": list(self.indices) if self.indices else None,
            "where": dict(self.where),
        }


def match_condition(values: pd.Series, condition: str) -> pd.Series:
    """Evaluate one ``where`` condition on a column; case-insensitive throughout.

    ``value`` matches a whole word or phrase in the field (``GM12878`` matches
    ``B lymphoblastoid cell line: GM12878 ENCODE, biol_`` but not ``GM128780``);
    ``=value`` (written ``field==value``) requires the whole field to equal it;
    ``~regex`` searches with a regular expression.
    """
    text = values.astype(str)
    if condition.startswith("="):
        return text.str.casefold() == condition[1:].casefold()
    if condition.startswith("~"):
        try:
            rx = re.compile(condition[1:], re.IGNORECASE)
        except re.error as exc:
            raise PerturbscoreError(
                f"track query: {quote(condition[1:])} is not a valid regular expression ({exc}); "
                "fix the pattern after ~."
            ) from exc
    else:
        rx = re.compile(
            r"(?<![A-Za-z0-9_])" + re.escape(condition) + r"(?![A-Za-z0-9_])", re.IGNORECASE
        )
    return text.map(lambda s: rx.search(s) is not None).astype(bool)


def parse_where(items: Iterable[str]) -> dict[str, str]:
    """Parse ``field=value``, ``field==value`` and ``field~regex`` strings into conditions."""
    out: dict[str, str] = {}
    for item in items:
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|=|~)(.*)$", item)
        if not m:
            raise PerturbscoreError(
                f"track query {quote(item)}: write field=value (word match), field==value "
                "(exact) or field~regex, e.g. biosample=GM12878."
            )
        name, op, value = m.groups()
        cond = {"=": "", "==": "=", "~": "~"}[op] + value.strip()
        if name in out:
            raise PerturbscoreError(
                f"track queries name the field {name} twice; use {name}~a|b for either."
            )
        out[name] = cond
    return out


def _read_shortlist(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PerturbscoreError(f"{path}: track shortlist not found. Check the path.")
    sep = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        # EmptyDataError is a ValueError; the text of each names the line.
        kind = "tab" if sep == "\t" else "comma"
        reason = " ".join(str(exc).split())
        raise PerturbscoreError(
            f"{path}: cannot read the track shortlist as a {kind}-separated table ({reason}); "
            "it needs an 'index' column of 0-based track numbers."
        ) from None
    if "index" not in df.columns:
        raise PerturbscoreError(
            f"{path}: shortlist has no 'index' column (its columns: {listing(df.columns)}); add "
            "the 0-based track numbers of targets_human.txt as 'index'."
        )
    if df.empty:
        raise PerturbscoreError(f"{path}: the track shortlist has no rows; list the tracks.")
    return df


def select_tracks(table: pd.DataFrame, selection: TrackSelection | None = None) -> pd.DataFrame:
    """Select tracks from a parsed track table, in output column order.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`read_targets`.
    selection : TrackSelection, optional
        Nothing selected means every track, in table order.

    Returns
    -------
    pandas.DataFrame
        Rows of ``table`` (its ``index`` column gives the track number), in the order
        the selection names them.

    Raises
    ------
    PerturbscoreError
        Index out of range, unknown identifier, shortlist disagreeing with the table,
        duplicated track, unknown query column, or an empty result.
    """
    sel = selection or TrackSelection()
    n = len(table)
    order: list[int] | None = None
    if sel.shortlist is not None:
        sl = _read_shortlist(Path(sel.shortlist))
        order = []
        for row, raw in enumerate(sl["index"], start=2):
            try:
                idx = int(raw)
            except ValueError:
                raise PerturbscoreError(
                    f"{sel.shortlist}: line {row}: index {quote(raw)} is not an integer; write "
                    "the 0-based track number."
                ) from None
            if not 0 <= idx < n:
                raise PerturbscoreError(
                    f"{sel.shortlist}: line {row}: track index {idx} is outside 0..{n - 1} "
                    "of the track table; is this shortlist for another model?"
                )
            if "identifier" in sl.columns:
                want = sl["identifier"].iloc[row - 2]
                have = table["identifier"].iloc[idx]
                if want != have:
                    raise PerturbscoreError(
                        f"{sel.shortlist}: line {row}: index {idx} is {quote(want)} in the "
                        f"shortlist but {quote(have)} in the track table; shortlist and table "
                        "disagree, so one of them is from another model or was re-ordered."
                    )
            order.append(idx)
    if sel.identifiers:
        pos = {ident: i for i, ident in enumerate(table["identifier"])}
        missing = [i for i in sel.identifiers if i not in pos]
        if missing:
            raise PerturbscoreError(
                f"track identifiers not in the track table: {listing(missing, quoted=True)}; "
                "run 'perturbscore tracks TARGETS' to list them."
            )
        order = (order or []) + [pos[i] for i in sel.identifiers]
    if sel.indices:
        bad = [i for i in sel.indices if not 0 <= int(i) < n]
        if bad:
            raise PerturbscoreError(
                f"track indices out of range 0..{n - 1}: {listing(bad)}; indices are 0-based."
            )
        order = (order or []) + [int(i) for i in sel.indices]
    if order is None:
        order = list(range(n))
    dupes = sorted(i for i, count in Counter(order).items() if count > 1)
    if dupes:
        raise PerturbscoreError(
            f"tracks selected more than once: indices {listing(dupes)}; each output column "
            "must be a distinct track."
        )
    chosen = table.iloc[order]
    for col, cond in sel.where.items():
        if col not in table.columns:
            raise PerturbscoreError(
                f"track query column {col} does not exist; use one of {listing(table.columns, 20)}."
            )
        chosen = chosen[match_condition(chosen[col], cond).to_numpy()]
    if chosen.empty:
        raise PerturbscoreError(
            f"the track selection ({sel.summary()}) matched no track; "
            "run 'perturbscore tracks TARGETS' to see the table."
        )
    return chosen.reset_index(drop=True)


def selection_from_options(
    shortlist: str | Path | None = None,
    identifiers: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
    where: Iterable[str] | None = None,
) -> TrackSelection:
    """Build a :class:`TrackSelection` from CLI/TOML-style values (``where``: query strings)."""
    conds = parse_where(where or [])
    return TrackSelection(
        shortlist=Path(shortlist) if shortlist else None,
        identifiers=tuple(identifiers) if identifiers else None,
        indices=tuple(int(i) for i in indices) if indices else None,
        where=conds,
    )


def track_listing(
    targets: str | Path,
    *,
    shortlist: str | Path | None = None,
    identifiers: Sequence[str] = (),
    indices: Sequence[int] = (),
    where: Iterable[str] = (),
    columns: str | Sequence[str] = "all",
) -> pd.DataFrame:
    """Parsed track table, selected and cut to ``columns`` (``"all"`` or names / comma list)."""
    table = read_targets(targets)
    chosen = select_tracks(
        table, selection_from_options(shortlist, list(identifiers), list(indices), list(where))
    )
    if columns == "all":
        return chosen
    cols = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else list(columns)
    unknown = [c for c in cols if c not in chosen.columns]
    if unknown:
        raise PerturbscoreError(
            f"unknown columns {listing(unknown, quoted=True)}; choose from "
            f"{listing(chosen.columns, 20)}, or all."
        )
    return chosen[cols]
