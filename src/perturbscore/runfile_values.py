"""Checking one run-file value: :class:`Reject` and the checks the schema's keys use.

Each check takes a parsed TOML value and returns it checked (normalised: a tuple for
a list, lower case for a choice) or raises :class:`Reject`, with the TOML text the
user likely meant where one can be guessed; :data:`perturbscore.runfile_schema.SCHEMA`
words the message.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from typing import Any

from .messages import listing, quote, toml_value
from .names import is_safe_name
from .scoring import STATISTICS

TEMPLATE_FIELDS = {"group", "aggregation", "statistic"}
_AGGREGATION = re.compile(r"(tss|ave|sum|window:\d+)")


class Reject(Exception):
    """A value of the wrong type or content; ``guess`` is TOML text the user likely meant."""

    def __init__(self, guess: str | None = None, detail: str | None = None) -> None:
        super().__init__(detail or "")
        self.guess = guess
        self.detail = detail


def is_int(v: Any) -> bool:
    """An integer, and not a bool (TOML true/false are Python ints)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_guess(v: Any) -> str | None:
    """TOML text of the integer ≥ 0 that ``v`` (a string or whole float) spells, if any."""
    if isinstance(v, str) and v.strip().isdigit():
        return str(int(v.strip()))
    if isinstance(v, float) and v.is_integer() and v >= 0:
        return str(int(v))
    return None


def check_int(v: Any) -> int:
    if not is_int(v) or v < 0:
        raise Reject(_int_guess(v))
    return int(v)


def check_number(v: Any) -> float:
    if _is_number(v) and math.isfinite(v) and v >= 0:
        return float(v)
    guess = None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f >= 0:
            guess = repr(f)
    raise Reject(guess)


def check_path(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Reject()
    return v


def strings(v: Any) -> tuple[str, ...]:
    """A string or a non-empty list of non-empty strings, as a tuple."""
    if isinstance(v, str) and v.strip():
        return (v,)
    if isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v):
        return tuple(v)
    guess = None
    if isinstance(v, list) and v and all(_is_number(s) for s in v):
        guess = toml_value([str(s) for s in v])
    raise Reject(guess)


def _no_repeats(values: tuple[str, ...], norm: Callable[[str], str] = str) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for value in values:
        key = norm(value)
        if key in seen:
            # The advice keeps each value's first occurrence, in the user's order (the
            # order of identifiers is that of the output columns).
            first: dict[str, str] = {}
            for v in values:
                first.setdefault(norm(v), v)
            unique = list(first.values())
            raise Reject(toml_value(unique), detail=f"{quote(value)} is listed twice")
        seen[key] = value
    return values


def check_identifiers(v: Any) -> tuple[str, ...]:
    return _no_repeats(strings(v))


def check_indices(v: Any) -> tuple[int, ...]:
    if isinstance(v, list) and v and all(is_int(i) and i >= 0 for i in v):
        return tuple(int(i) for i in v)
    guess = None
    if is_int(v) and v >= 0:
        guess = f"[{v}]"
    elif isinstance(v, list) and v:
        fixed = [_int_guess(i) if not is_int(i) else str(i) for i in v]
        if all(f is not None for f in fixed):
            guess = "[" + ", ".join(str(f) for f in fixed) + "]"
    raise Reject(guess)


def check_aggregations(v: Any) -> tuple[str, ...]:
    values = strings(v)
    for a in values:
        if not _AGGREGATION.fullmatch(a.strip().lower()):
            # A mistyped window keeps its place in the suggestion (not the default list).
            fixed = [b if _AGGREGATION.fullmatch(b.strip().lower()) else "window:3" for b in values]
            guess = toml_value(fixed) if a.strip().lower().startswith("window") else None
            raise Reject(
                guess,
                detail=f"{quote(a)} is not one of tss, ave, sum or window:K, with K a number "
                "of central bins",
            )
    return _no_repeats(values, lambda a: a.strip().lower())


def check_statistics(v: Any) -> tuple[str, ...]:
    values = strings(v)
    for s in values:
        if s not in STATISTICS:
            raise Reject(detail=f"{quote(s)} is not one of {listing(STATISTICS)}")
    return _no_repeats(values)


def check_background(v: Any) -> str:
    path = check_path(v)
    if not path.lower().endswith(".npz"):
        raise Reject(detail=f"{quote(path)} does not end in .npz")
    return path


def check_normalised(v: Any) -> tuple[str, ...]:
    values = strings(v)
    for s in values:
        if s not in ("quantile", "robust_z"):
            raise Reject(detail=f"{quote(s)} is not one of quantile or robust_z")
    return _no_repeats(values)


def choice(options: Callable[[], Any]) -> Callable[[Any], str]:
    # ``options`` is called at check time: readers.FORMATS may be extended after import.
    def check(v: Any) -> str:
        allowed = [str(o) for o in options()]
        if isinstance(v, str) and v.strip().lower() in allowed:
            return v.strip().lower()
        raise Reject()

    return check


def _template_fields(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as exc:
        raise Reject(detail=f"it is not a valid template ({exc})") from None


def check_template_text(v: Any, file_name: bool) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Reject()
    for literal, name, spec, conversion in _template_fields(v):
        if name is not None:
            if name not in TEMPLATE_FIELDS:
                raise Reject(
                    detail=f"it names {{{name}}}; only {{group}}, {{aggregation}} and "
                    "{statistic} are filled in"
                )
            if spec or conversion:
                raise Reject(detail=f"{{{name}}} carries a format or conversion; write {{{name}}}")
        # Filled-in fields are safe names; the text around them must be too, or a
        # template such as "../{group}" would write outside the output folder.
        if file_name and literal and not re.fullmatch(r"[A-Za-z0-9_-]+", literal):
            raise Reject(
                detail=f"its text {quote(literal)} may hold only letters, digits, '_' and '-', "
                "since it becomes a file name"
            )
    return v


def check_id_columns(v: Any) -> tuple[str, ...] | str:
    if v == "all":
        return "all"
    return _no_repeats(strings(v))


def check_group_name(v: Any) -> str:
    # The content rule (names.check_name) is applied before, with its own message.
    if not isinstance(v, str) or not is_safe_name(v):
        raise Reject(toml_value(str(v)) if is_int(v) else None)
    return v
