"""Integrity checks that ride along a run, fed block by block.

Three findings expose predictions attached to the wrong variants (a table shifted by a
row, batches swapped, wrong window columns) and runs that do not agree with themselves:

``identical_in_field`` / ``differing_out_of_field``
    A variant outside the model's input (class 0, see :mod:`.geometry`) cannot change the
    prediction, so its REF and ALT rows must be bitwise identical over the selected
    tracks; a variant the model reads (class 1 or 2) should change something.  Either
    exception means the row does not belong to that variant or its position is wrong.
``duplicate_vectors``
    Distinct variants (different ID keys) whose score vectors are identical, bit for
    bit (on :data:`.integrity_keys.HASH_COLUMNS` evenly spaced tracks).  Rows whose
    REF and ALT are identical are left out: their vectors are all zero, and the first
    check already judges them (every out-of-field row is one).
``cross_group_mismatch``
    One variant (same ID key) scored in two groups with values that differ beyond
    ``|a - b| <= atol + rtol * |b|`` on some track (numpy's ``isclose``).

Exit code rule for pipelines: :data:`EXIT_CLEAN` (0) when nothing is flagged,
:data:`EXIT_FLAGGED` (3) otherwise; 2 stays "user error" and 1 "unexpected failure".

Memory (stated, and reported under ``memory_bytes``)
    28 bytes per row whose REF and ALT differ (64-bit vector hash, 64-bit ID-key hash,
    32-bit batch number, 64-bit row), plus ``4 * S`` bytes per ID key shared by several
    groups (its first score vector in float32, ``S`` score columns), plus the examples
    (at most ``max_examples`` per finding).  No prediction block is kept.  For the
    study (55,084 rows, 177 tracks): at most 1.5 MB of records plus 708 bytes per
    shared key.

Use (ID keys and hashes: :mod:`.integrity_keys`; the text: :mod:`.integrity_text`)::

    checker = IntegrityChecker(
        shared_keys=keys_in_several_groups(keys_by_group), key_of=lambda g, b, r: ...
    )
    for each block:           # ref, alt: n B S; scores: n S float64 (one table's block)
        same = row_identical(ref, alt)
        checker.update(group, batch, first_row, same, cls, scores, ids, table=path)
    result = checker.finish()      # JSON-able: manifest["integrity"]
    print(format_integrity(result)); sys.exit(result["exit_code"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import CLASS_LABELS, OUTSIDE_INPUT
from .integrity_keys import RECORD, colliding_runs, row_hashes, show_key, string_hashes

EXIT_CLEAN = 0
EXIT_FLAGGED = 3
FINDINGS = (
    "identical_in_field",
    "differing_out_of_field",
    "duplicate_vectors",
    "cross_group_mismatch",
)


def row_identical(ref: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """Rows whose REF and ALT are bitwise identical over all bins and selected tracks.

    Parameters
    ----------
    ref, alt : numpy.ndarray
        ``# n B S`` predictions of one block (same shape and dtype).

    Returns
    -------
    numpy.ndarray
        ``bool # n``.  Bitwise: NaN equals a NaN of the same bits, ``-0.0`` differs
        from ``0.0`` (the model gave different outputs).
    """
    if ref.shape != alt.shape or ref.dtype != alt.dtype:
        raise ValueError(f"REF {ref.shape} {ref.dtype} and ALT {alt.shape} {alt.dtype} differ")
    n = ref.shape[0]
    if n == 0:
        return np.zeros(0, bool)
    as_int = np.dtype(f"u{ref.dtype.itemsize}")
    r = np.ascontiguousarray(ref).reshape(n, -1).view(as_int)
    a = np.ascontiguousarray(alt).reshape(n, -1).view(as_int)
    return np.asarray((r == a).all(axis=1))


@dataclass
class _Batch:
    group: str
    batch: int
    table: str


KeyOf = Callable[[str, int, int], str]


@dataclass
class IntegrityChecker:
    """Streamed integrity checks; see the module docstring.

    Parameters
    ----------
    shared_keys : iterable of str, optional
        ID keys that occur in several groups (:func:`.integrity_keys.keys_in_several_groups`); the
        cross-group check compares only these.  None: no cross-group check.
    key_of : callable, optional
        ``key_of(group, batch, row) -> str``: the ID key of a 0-based row of a batch.
        With it, the duplicate-vector check looks keys up at :meth:`finish` for the
        few rows whose vectors collide; without it, it hashes every row's key as it
        goes (slower; 8 more bytes per row).
    rtol, atol : float
        Tolerance of the cross-group check.
    max_examples : int
        First offenders kept per finding.
    scores_of : str
        Which table's scores are fed (e.g. ``ave/abs_diff``), recorded in the result.
    track_names : sequence of str
        Identifiers of the score columns, to name a track in the examples.
    """

    shared_keys: Iterable[str] | None = field(default=None, repr=False)
    key_of: KeyOf | None = field(default=None, repr=False)
    rtol: float = 1e-5
    atol: float = 1e-6
    max_examples: int = 10
    scores_of: str = ""
    track_names: Sequence[str] = ()
    _batches: dict[tuple[str, int], int] = field(default_factory=dict)
    _batch_info: list[_Batch] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)
    _identical: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # per class + unknown
    _rows: int = 0
    _examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _hash_parts: list[np.ndarray] = field(default_factory=list)
    _index: dict[str, int] | None = None  # shared key -> its slot (sorted order)
    _vectors: np.ndarray | None = None
    _owner: np.ndarray | None = None  # group number of each slot's stored vector, -1: none
    _groups: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._counts = dict.fromkeys(FINDINGS, 0)
        self._examples = {f: [] for f in FINDINGS}
        if self.shared_keys is not None:
            self._index = {k: i for i, k in enumerate(sorted(set(self.shared_keys)))}
            self._owner = np.full(len(self._index), -1, np.int32)

    def slots(self, ids: Sequence[str]) -> np.ndarray:
        """Cross-group slot of each ID key (``int64 # n``, -1: not shared).

        The engine may compute these once per batch and pass them to :meth:`update`.
        """
        if self._index is None:
            return np.full(len(ids), -1, np.int64)
        index = self._index
        return np.fromiter((index.get(k, -1) for k in ids), np.int64, len(ids))

    # ------------------------------------------------------------------ feeding

    def update(
        self,
        group: str,
        batch: int,
        first_row: int,
        identical: np.ndarray,
        classes: np.ndarray | None,
        scores: np.ndarray,
        ids: Sequence[str],
        table: str = "",
        slots: np.ndarray | None = None,
    ) -> None:
        """Check one block of rows ``[first_row, first_row + n)`` of one batch.

        Parameters
        ----------
        group : str
            The group's name.
        batch : int
            1-based batch number within the group; ``(group, batch)`` is the batch key.
        first_row : int
            0-based row of the block's first row in the batch (its table line is
            ``first_row + 2``: the header is line 1).
        identical : numpy.ndarray
            ``bool # n`` from :func:`row_identical`.
        classes : numpy.ndarray or None
            ``int8 # n`` receptive-field classes; None when the run has no geometry
            (the identical-row findings are then not judged, only counted).
        scores : numpy.ndarray
            ``# n S`` float64 score rows: one (aggregation, statistic) table's block
            (e.g. the first), the same table in every call.
        ids : sequence of str
            ``# n`` ID keys (:func:`.integrity_keys.id_keys`); read only for reported
            rows, shared-key lookups (unless ``slots`` is given) and hashing (unless
            ``key_of`` is).
        table : str
            The batch's variant table, for messages.
        slots : numpy.ndarray, optional
            ``# n`` from :meth:`slots` for these rows, computed beforehand.
        """
        n = len(identical)
        if scores.shape[0] != n or len(ids) != n or (classes is not None and len(classes) != n):
            raise ValueError("identical, classes, scores and ids must have one entry per row")
        b = self._batches.get((group, batch))
        if b is None:
            b = self._batches[(group, batch)] = len(self._batch_info)
            self._batch_info.append(_Batch(group, batch, table))
        g = self._groups.setdefault(group, len(self._groups))
        self._rows += n
        same = np.asarray(identical, bool)

        if classes is None:
            self._identical[3] += int(same.sum())
        else:
            cls = np.asarray(classes, np.int8)
            counts = np.bincount(cls[same].astype(np.intp), minlength=3)
            for c in range(3):
                self._identical[c] += int(counts[c])
            out = cls == OUTSIDE_INPUT
            self._flag("identical_in_field", same & ~out, b, first_row, cls, ids)
            self._flag("differing_out_of_field", ~same & out, b, first_row, cls, ids)

        x = np.asarray(scores, np.float64)
        # REF == ALT rows score 0 everywhere; the first check judges them.
        rows = np.flatnonzero(~same)
        if rows.size:
            part = np.empty(rows.size, dtype=RECORD)
            part["h"] = row_hashes(x[rows])
            part["k"] = 0 if self.key_of else string_hashes([ids[int(i)] for i in rows])
            part["b"] = b
            part["r"] = first_row + rows
            self._hash_parts.append(part)

        if self._owner is not None:
            s = self.slots(ids) if slots is None else np.asarray(slots, np.int64)
            self._cross_group(g, b, first_row, x, ids, s)

    def _flag(
        self,
        finding: str,
        mask: np.ndarray,
        b: int,
        first_row: int,
        cls: np.ndarray,
        ids: Sequence[str],
    ) -> None:
        rows = np.flatnonzero(mask)
        if not rows.size:
            return
        self._counts[finding] += int(rows.size)
        room = self.max_examples - len(self._examples[finding])
        for i in rows[: max(room, 0)]:
            self._examples[finding].append(
                self._where(b, first_row + int(i))
                | {"id": show_key(ids[i]), "class": CLASS_LABELS[int(cls[i])]}
            )

    def _where(self, b: int, row: int) -> dict[str, Any]:
        info = self._batch_info[b]
        return {"group": info.group, "batch": info.batch, "table": info.table, "line": row + 2}

    def _cross_group(
        self, g: int, b: int, first_row: int, x: np.ndarray, ids: Sequence[str], slots: np.ndarray
    ) -> None:
        assert self._owner is not None
        rows = np.flatnonzero(slots >= 0)
        if not rows.size:
            return
        if self._vectors is None:
            self._vectors = np.zeros((len(self._owner), x.shape[1]), np.float32)
        s = slots[rows]
        owner = self._owner[s]
        # First sighting of a key: store its vector (a key seen twice in one block keeps
        # its first row, as a later block would).
        fresh = owner < 0
        if fresh.any():
            fs, first_idx = np.unique(s[fresh], return_index=True)
            self._vectors[fs] = x[rows[fresh][first_idx]]
            self._owner[fs] = g
            owner = self._owner[s]
        other = owner != g
        if not other.any():
            return
        r, ss = rows[other], s[other]
        stored = self._vectors[ss].astype(np.float64)
        # Compare as float32: the stored copy is float32, so round the new one alike.
        new = x[r].astype(np.float32).astype(np.float64)
        bad = ~np.all(np.isclose(new, stored, rtol=self.rtol, atol=self.atol, equal_nan=True), 1)
        if not bad.any():
            return
        self._counts["cross_group_mismatch"] += int(bad.sum())
        room = self.max_examples - len(self._examples["cross_group_mismatch"])
        groups = {v: k for k, v in self._groups.items()}
        for j in np.flatnonzero(bad)[: max(room, 0)]:
            diff = np.abs(new[j] - stored[j])
            t = int(np.argmax(diff))
            self._examples["cross_group_mismatch"].append(
                self._where(b, first_row + int(r[j]))
                | {
                    "id": show_key(ids[r[j]]),
                    "first_group": groups[int(self._owner[ss[j]])],
                    "column": t,
                    **({"track": self.track_names[t]} if t < len(self.track_names) else {}),
                    "difference": float(diff[t]),
                }
            )

    # ------------------------------------------------------------------ results

    def memory_bytes(self) -> int:
        """Bytes of state held now: row records and stored shared-key vectors."""
        held = sum(p.nbytes for p in self._hash_parts)
        if self._vectors is not None:
            held += self._vectors.nbytes
        return held

    def finish(self) -> dict[str, Any]:
        """Finish the duplicate-vector check and return the JSON-able result.

        Returns
        -------
        dict
            ``{"clean", "exit_code", "rows", "identical_rows", "findings",
            "duplicate_vector_sets", "cross_group_keys", "examples", "tolerance",
            "memory_bytes", "rules"}``; stored as ``manifest["integrity"]``.
        """
        memory = self.memory_bytes()
        dup_rows = dup_sets = 0
        if self._hash_parts:
            allp, runs = colliding_runs(self._hash_parts)
            for seg in runs:
                keys = self._keys_of(seg)
                if len(set(keys)) == 1:
                    continue  # one variant scored twice: the cross-group check judges it
                dup_sets += 1
                dup_rows += int(seg.size)
                if len(self._examples["duplicate_vectors"]) < self.max_examples:
                    self._examples["duplicate_vectors"].append(self._duplicate_example(seg, keys))
            self._hash_parts = [allp]
        self._counts["duplicate_vectors"] = dup_rows
        flagged = sum(self._counts.values())
        identical = {
            "total": int(sum(self._identical)),
            **{lab: int(self._identical[i]) for i, lab in enumerate(CLASS_LABELS)},
        }
        if self._identical[3]:
            identical["unclassified"] = int(self._identical[3])
        return {
            "clean": flagged == 0,
            "exit_code": EXIT_CLEAN if flagged == 0 else EXIT_FLAGGED,
            "rows": self._rows,
            "identical_rows": identical,
            "findings": dict(self._counts),
            "duplicate_vector_sets": dup_sets,
            "cross_group_keys": None if self._owner is None else len(self._owner),
            "examples": {k: v for k, v in self._examples.items() if v},
            "scores_of": self.scores_of,
            "tolerance": {"rtol": self.rtol, "atol": self.atol},
            "memory_bytes": memory,
            "rules": {
                "exit_codes": {"clean": EXIT_CLEAN, "flagged": EXIT_FLAGGED},
                "line": "1-based line of the variant table (header = line 1)",
            },
        }

    def _duplicate_example(self, seg: np.ndarray, keys: Sequence[Any]) -> dict[str, Any]:
        """A set of rows sharing one vector, for the examples: its size, its first 4 rows."""
        first = []
        for rec, key in list(zip(seg, keys, strict=True))[:4]:
            w = self._where(int(rec["b"]), int(rec["r"]))
            if isinstance(key, str):
                w["id"] = show_key(key)
            first.append(w)
        return {"rows": int(seg.size), "first": first}

    def _keys_of(self, seg: np.ndarray) -> list[Any]:
        """ID keys (via ``key_of``) or key hashes of a run of colliding records."""
        if self.key_of is None:
            return [int(k) for k in seg["k"]]
        out = []
        for rec in seg:
            info = self._batch_info[int(rec["b"])]
            out.append(self.key_of(info.group, info.batch, int(rec["r"])))
        return out
