"""The model's track table (``targets_human.txt``) and track selection.

The table has one row per output track; row ``i`` describes track ``i`` of the
prediction arrays' last axis.  Besides the file's own columns
(``index genome identifier file clip scale sum_stat description``) the parsed
table carries ``assay`` (DNASE, ATAC, CHIP, CAGE), ``target`` (the ChIP target,
empty otherwise) and ``biosample``, split from ``description``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import PerturbscoreError

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
_RECORD_START = re.compile(r"^(\d+)\t")


def _split_description(description: str) -> tuple[str, str, str]:
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
    """Parse a targets table, repairing records that were wrapped over several lines.

    The canonical file has one tab-separated record per line.  Copies met in the wild
    have extra line breaks *inserted* into records (before ``sum_stat``, or inside a long
    ``description``); removing them restores the record, so continuation lines are
    joined with no separator.  A record is complete once it has 8 fields and the next
    line starts the next index.

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
        Missing file, wrong header, a record that cannot be repaired (the line is named),
        or indices that are not 0, 1, 2, ...
    """
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: track table not found. Check the path.")
    lines = p.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")
    header = lines[0].split("\t")
    if header[: len(TARGET_COLUMNS)] != TARGET_COLUMNS or len(header) != len(TARGET_COLUMNS):
        raise PerturbscoreError(
            f"{p}: line 1: header {header} is not the expected {TARGET_COLUMNS} (tab-separated)."
        )
    records: list[list[str]] = []
    pending = ""
    pending_line = 0

    def finish(lineno: int) -> None:
        fields = pending.split("\t")
        if len(fields) != len(TARGET_COLUMNS):
            raise PerturbscoreError(
                f"{p}: line {pending_line}: record has {len(fields)} tab-separated fields "
                f"(expected {len(TARGET_COLUMNS)}) by line {lineno}; the file is damaged "
                "beyond wrapped lines."
            )
        expected = len(records)
        if fields[0] != str(expected):
            raise PerturbscoreError(
                f"{p}: line {pending_line}: track index {fields[0]!r}, expected {expected}; "
                "rows must be the tracks 0, 1, 2, ... in prediction-array order."
            )
        records.append(fields)

    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        starts_record = _RECORD_START.match(line) is not None
        if pending and starts_record and pending.count("\t") >= len(TARGET_COLUMNS) - 1:
            finish(lineno - 1)
            pending = ""
        if not pending:
            if not starts_record:
                raise PerturbscoreError(
                    f"{p}: line {lineno}: expected a record starting with a track index, "
                    f"found {line[:60]!r}."
                )
            pending, pending_line = line, lineno
        else:
            pending += line
        if pending.count("\t") > len(TARGET_COLUMNS) - 1:
            raise PerturbscoreError(
                f"{p}: line {lineno}: record starting on line {pending_line} has more than "
                f"{len(TARGET_COLUMNS)} tab-separated fields."
            )
    if pending:
        finish(len(lines))
    if not records:
        raise PerturbscoreError(f"{p}: no track records after the header.")
    table = pd.DataFrame(records, columns=TARGET_COLUMNS)
    for col in ("index", "genome"):
        table[col] = table[col].astype("int64")
    for col in ("clip", "scale"):
        table[col] = pd.to_numeric(table[col])
    split = [_split_description(d) for d in table["description"]]
    for i, col in enumerate(PARSED_COLUMNS):
        table[col] = [s[i] for s in split]
    return table


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
            raise PerturbscoreError(f"bad regular expression {condition[1:]!r}: {exc}") from exc
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
                f"track query {item!r}: write field=value (word match), field==value (exact) "
                "or field~regex, e.g. biosample=GM12878."
            )
        name, op, value = m.groups()
        cond = {"=": "", "==": "=", "~": "~"}[op] + value.strip()
        if name in out:
            raise PerturbscoreError(f"track query names {name!r} twice; use field~a|b for either.")
        out[name] = cond
    return out


def _read_shortlist(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PerturbscoreError(f"{path}: track shortlist not found. Check the path.")
    sep = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    if "index" not in df.columns:
        raise PerturbscoreError(
            f"{path}: shortlist has no 'index' column (columns: {list(df.columns)}); add the "
            "0-based track numbers of targets_human.txt as 'index'."
        )
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
                    f"{sel.shortlist}: line {row}: index {raw!r} is not an integer."
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
                        f"{sel.shortlist}: line {row}: index {idx} is {want!r} in the shortlist "
                        f"but {have!r} in the track table; shortlist and table disagree, so "
                        "one of them is from another model or was re-ordered."
                    )
            order.append(idx)
    if sel.identifiers:
        pos = {ident: i for i, ident in enumerate(table["identifier"])}
        missing = [i for i in sel.identifiers if i not in pos]
        if missing:
            raise PerturbscoreError(
                f"track identifiers not in the track table: {missing[:10]}"
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                + "; run 'perturbscore tracks TARGETS' to list them."
            )
        order = (order or []) + [pos[i] for i in sel.identifiers]
    if sel.indices:
        bad = [i for i in sel.indices if not 0 <= int(i) < n]
        if bad:
            raise PerturbscoreError(
                f"track indices out of range 0..{n - 1}: {bad[:10]}; indices are 0-based."
            )
        order = (order or []) + [int(i) for i in sel.indices]
    if order is None:
        order = list(range(n))
    dupes = sorted(i for i, count in Counter(order).items() if count > 1)
    if dupes:
        raise PerturbscoreError(
            f"tracks selected more than once: indices {dupes[:10]}; each output column must be "
            "a distinct track."
        )
    chosen = table.iloc[order]
    for col, cond in sel.where.items():
        if col not in table.columns:
            raise PerturbscoreError(
                f"track query column {col!r} does not exist; use one of {list(table.columns)}."
            )
        chosen = chosen[match_condition(chosen[col], cond).to_numpy()]
    if chosen.empty:
        raise PerturbscoreError(
            f"track selection {sel.describe()} matched no track; "
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
        raise PerturbscoreError(f"unknown columns {unknown}; choose from {list(chosen.columns)}.")
    return chosen[cols]
