"""The model's track table (``targets_human.txt``) and track selection.

The table has one row per output track; row ``i`` describes track ``i`` of the
prediction arrays' last axis.  Besides the file's own columns
(``index genome identifier file clip scale sum_stat description``) the parsed
table carries ``assay`` (DNASE, ATAC, CHIP, CAGE), ``target`` (the ChIP target,
empty otherwise) and ``biosample``, split from ``description``.  The file's text
(its columns, the repair of damaged copies, the checks of each record) is
:mod:`perturbscore.targets_file`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PerturbscoreError
from .frame import Columns, as_columns
from .messages import closest, listing, quote
from .targets_file import shortlist_order, target_columns
from .tracks_query import match_condition, parse_where

if TYPE_CHECKING:
    import pandas as pd

#: The command line's option for each key of a selection (one entry per use).
_OPTIONS = {"identifiers": "--identifier", "indices": "--index"}


@dataclass(frozen=True)
class _Place:
    """Where a listed track was named: the ``entry``-th (1-based) value of a key."""

    key: str  # as messages name it: run.toml [tracks] indices, --index, track indices
    entry: int
    value: str  # the entry as written: "ENCFF093VXI", 7
    option: bool  # ``key`` is a repeatable command-line option: "the 2nd --index"

    def words(self) -> str:
        if self.option:
            return f"the {_ordinal(self.entry)} {self.key} ({self.value})"
        return f"{self.key} entry {self.entry} ({self.value})"


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _two_places(a: _Place | str, b: _Place | str) -> str:
    """``by X and by Y``; two entries of one key by their positions, since their values
    (the same track) read alike."""
    if isinstance(a, _Place) and isinstance(b, _Place) and a.key == b.key:
        if a.option:
            return f"by the {_ordinal(a.entry)} and {_ordinal(b.entry)} {a.key}"
        return f"by {a.key} entries {a.entry} and {b.entry}"
    words = [p.words() if isinstance(p, _Place) else p for p in (a, b)]
    return f"by {words[0]} and by {words[1]}"


def read_targets(path: str | Path) -> pd.DataFrame:
    """Parse a targets table: the canonical form, or the known damaged copies.

    The canonical file has one tab-separated record per line.  Two kinds of damage
    are repaired (a record wrapped before ``sum_stat``; a long ``description`` broken
    once at a space), and nothing else is accepted; each joined record is then checked:
    8 fields, ``index`` equal to its position, integer ``genome``, non-empty and unique
    ``identifier``, numeric ``clip`` and ``scale``, a known ``sum_stat``
    (:data:`.targets_file.SUM_STATS`) and a non-empty ``description``.  The text is read
    by :func:`.targets_file.read_records`.

    Parameters
    ----------
    path : str or Path
        Tab-separated file with the header ``index genome identifier file clip scale
        sum_stat description``.

    Returns
    -------
    pandas.DataFrame
        One row per track, in file order, ``index`` equal to the row position; columns
        :data:`.targets_file.TARGET_COLUMNS` then :data:`.targets_file.PARSED_COLUMNS`.

    Raises
    ------
    PerturbscoreError
        Missing or unreadable file, wrong header, or any line that is neither a record
        nor one of the known repairs; the message names the file, the 1-based line and
        what was expected there.
    """
    return target_columns(Path(path)).to_frame()


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
    origin : str
        Where the selection was written, for messages (:meth:`with_origin`); empty for
        the command line and Python.
    """

    shortlist: Path | None = None
    identifiers: tuple[str, ...] | None = None
    indices: tuple[int, ...] | None = None
    where: Mapping[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return str(self.__dict__.get("_origin", ""))

    def with_origin(self, origin: str) -> TrackSelection:
        """This selection, its messages naming ``origin`` (``stablefm.toml [tracks]``).

        The keys are then named ``stablefm.toml [tracks] indices`` rather than ``track
        indices``.  Not a field: it selects nothing, so it stays out of comparisons and
        of the settings a resumed run checks (``dataclasses.asdict``).
        """
        return self._marked("_origin", origin)

    def _marked(self, name: str, value: object) -> TrackSelection:
        """A copy with the message attribute ``name`` set (and the other one kept)."""
        copy = replace(self)
        for kept in ("_origin", "_options"):
            if kept in self.__dict__:
                object.__setattr__(copy, kept, self.__dict__[kept])
        object.__setattr__(copy, name, value)  # frozen: set once, on the new copy
        return copy

    @property
    def from_options(self) -> bool:
        """Whether the selection came from the command line's options (:meth:`on_command_line`)."""
        return bool(self.__dict__.get("_options", False))

    def on_command_line(self) -> TrackSelection:
        """This selection, its messages naming the command line's options (``--index``).

        Not a field either, like :meth:`with_origin`.
        """
        return self._marked("_options", True)

    def key(self, name: str) -> str:
        """How messages name one of the selection's keys (``identifiers``, ``indices``...)."""
        if self.from_options and name in _OPTIONS:
            return _OPTIONS[name]
        return f"{self.origin} {name}" if self.origin else f"track {name}"

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


def select_tracks(
    table: pd.DataFrame | Columns, selection: TrackSelection | None = None
) -> pd.DataFrame:
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
    return choose_tracks(as_columns(table), selection).to_frame()


def choose_tracks(table: Columns, selection: TrackSelection | None = None) -> Columns:
    """:func:`select_tracks` on :class:`~perturbscore.frame.Columns` (what a run does)."""
    sel = selection or TrackSelection()
    listed = _listed_order(table, sel)
    order = [i for i, _ in listed] if listed is not None else list(range(len(table)))
    if listed is not None:
        _refuse_repeats(table, sel, listed)
    chosen = table.rows(np.asarray(order, dtype=np.intp))
    prefix = f"{sel.key('where')}: " if sel.origin else ""
    for col, cond in sel.where.items():
        if col not in table.columns:
            near = _did_you_mean([col], table.columns)
            raise PerturbscoreError(
                f"{prefix}track query column {col} does not exist{near}; use one of "
                f"{listing(table.columns, 20)}."
            )
        chosen = chosen.rows(match_condition(chosen[col], cond))
    if not len(chosen):
        raise PerturbscoreError(
            f"{sel.origin + ': ' if sel.origin else ''}the track selection ({sel.summary()}) "
            "matched no track; run 'perturbscore tracks TARGETS' to see the table."
        )
    return chosen


def _refuse_repeats(
    table: Columns, sel: TrackSelection, listed: list[tuple[int, _Place | str]]
) -> None:
    """Refuse a track listed twice, naming both places (shortlist line, key and entry)."""
    counts = Counter(i for i, _ in listed)
    dupes = [i for i, n in counts.items() if n > 1]
    if not dupes:
        return
    first = dupes[0]
    places = [where for i, where in listed if i == first]
    more = len(dupes) - 1
    also = f" (and {more} more track{'s' if more > 1 else ''} listed twice)" if more else ""
    raise PerturbscoreError(
        f"track {first} ({table['identifier'][first]}) is selected more than once, "
        f"{_two_places(places[0], places[1])}{also}; list each track once, since each output "
        "column must be a distinct track."
    )


def _did_you_mean(wrong: Sequence[str], known: Iterable[object]) -> str:
    """`` (did you mean "X"?)`` for the first of ``wrong`` with a close match, or ``""``."""
    names = [str(k) for k in known]
    for w in map(str, wrong):
        best = closest(w, names)
        if best is not None:
            which = f" for {quote(w)}" if len(wrong) > 1 else ""
            return f" (did you mean {quote(best)}{which}?)"
    return ""


def _listed_order(
    table: Columns, sel: TrackSelection
) -> list[tuple[int, _Place | str]] | None:
    """Track numbers the shortlist, identifiers and indices name, in that order.

    Each comes with where it was named, for messages (``short.csv line 4``).  None when
    the selection lists no track (every track, before ``where``).
    """
    n = len(table)
    order: list[tuple[int, _Place | str]] | None = None
    if sel.shortlist is not None:
        order = list(shortlist_order(table, sel.shortlist))
    if sel.identifiers:
        pos = {ident: i for i, ident in enumerate(table["identifier"].tolist())}
        missing = [i for i in sel.identifiers if i not in pos]
        if missing:
            prefix = f"{sel.key('identifiers')}: " if sel.origin else ""
            raise PerturbscoreError(
                f"{prefix}track identifiers not in the track table: "
                f"{listing(missing, quoted=True)}{_did_you_mean(missing, pos)}; correct "
                f"{'them' if len(missing) > 1 else 'it'} ('perturbscore tracks TARGETS' lists "
                "the identifiers)."
            )
        key, opt = sel.key("identifiers"), sel.from_options
        order = (order or []) + [
            (pos[i], _Place(key, k, quote(i), opt)) for k, i in enumerate(sel.identifiers, 1)
        ]
    if sel.indices:
        bad = [i for i in sel.indices if not 0 <= int(i) < n]
        if bad:
            prefix = f"{sel.key('indices')}: " if sel.origin else ""
            raise PerturbscoreError(
                f"{prefix}track indices out of range 0..{n - 1}: {listing(bad)}; indices are "
                f"0-based, so the track table's {n} tracks are 0 to {n - 1}: correct or remove "
                f"{'them' if len(bad) > 1 else 'it'}."
            )
        key, opt = sel.key("indices"), sel.from_options
        order = (order or []) + [
            (int(i), _Place(key, k, str(int(i)), opt)) for k, i in enumerate(sel.indices, 1)
        ]
    return order


def selection_from_options(
    shortlist: str | Path | None = None,
    identifiers: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
    where: Iterable[str] | None = None,
    origin: str = "",
    command_line: bool = False,
) -> TrackSelection:
    """Build a :class:`TrackSelection` from CLI/TOML-style values (``where``: query strings).

    ``origin`` (``stablefm.toml [tracks]``) is where messages say the selection was written;
    ``command_line``: it came from the options ``--identifier``/``--index``, which messages
    then name (``the 2nd --index``).
    """
    conds = parse_where(where or [])
    selection = TrackSelection(
        shortlist=Path(shortlist) if shortlist else None,
        identifiers=tuple(identifiers) if identifiers else None,
        indices=tuple(int(i) for i in indices) if indices else None,
        where=conds,
    )
    if command_line:
        selection = selection.on_command_line()
    return selection.with_origin(origin) if origin else selection


def track_listing(
    targets: str | Path,
    *,
    shortlist: str | Path | None = None,
    identifiers: Sequence[str] = (),
    indices: Sequence[int] = (),
    where: Iterable[str] = (),
    columns: str | Sequence[str] = "all",
    command_line: bool = False,
) -> pd.DataFrame:
    """Parsed track table, selected and cut to ``columns`` (``"all"`` or names / comma list).

    ``command_line``: the selection came from the options (:func:`selection_from_options`).
    """
    table = read_targets(targets)
    selection = selection_from_options(
        shortlist, list(identifiers), list(indices), list(where), command_line=command_line
    )
    chosen = select_tracks(table, selection)
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
