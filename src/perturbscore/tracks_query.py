"""Track queries: ``field=value`` (word), ``field==value`` (exact), ``field~regex``.

:func:`parse_where` reads the strings of ``--where`` and of a run file's ``where``;
:func:`match_condition` evaluates one condition on a column of the track table
(:mod:`perturbscore.tracks`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import PerturbscoreError
from .messages import quote


def match_condition(values: Sequence[Any] | np.ndarray, condition: str) -> np.ndarray:
    """Evaluate one ``where`` condition on a column; case-insensitive throughout.

    ``value`` matches a whole word or phrase in the field (``GM12878`` matches
    ``B lymphoblastoid cell line: GM12878 ENCODE, biol_`` but not ``GM128780``);
    ``=value`` (written ``field==value``) requires the whole field to equal it;
    ``~regex`` searches with a regular expression.  Returns which values match
    (``bool # n``).
    """
    text = [str(v) for v in values]
    if condition.startswith("="):
        want = condition[1:].casefold()
        return np.array([t.casefold() == want for t in text], dtype=bool)
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
    return np.array([rx.search(t) is not None for t in text], dtype=bool)


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
        if not value.strip():
            # An empty value is no condition the user meant: as a word it matched the
            # fields holding any non-word boundary (an arbitrary-looking subset), as a
            # regular expression every track.
            raise PerturbscoreError(
                f"track query {quote(item)} gives no value after {op}; write "
                f"{name}{op}VALUE (e.g. biosample{op}GM12878), or leave the query out to keep "
                "every track."
            )
        if op == "=" and value.strip()[0] in "=~":
            # Conditions keep their kind as a first character (= exact, ~ regex), so such
            # a word would be read as the other kind: biosample=~K5 as the regex K5.
            raise PerturbscoreError(
                f"track query {quote(item)}: a word to match cannot start with "
                f"{value.strip()[0]}; write {name}~REGEX for a regular expression or "
                f"{name}==VALUE for an exact match."
            )
        cond = {"=": "", "==": "=", "~": "~"}[op] + value.strip()
        if name in out:
            raise PerturbscoreError(
                f"track queries name the field {name} twice; use {name}~a|b for either."
            )
        out[name] = cond
    return out
