"""Values written for people in error messages and warnings.

Messages must never show Python reprs (``['a', 'b']``, ``{'shortlist': None}``): a
user who wrote a TOML file or a CSV should read their own values back, in the
notation they used.  These helpers render strings in double quotes, lists as
comma-separated words, and run-file values in TOML syntax.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any


def quote(text: object, limit: int = 80) -> str:
    """``text`` in double quotes, tabs shown as ``<TAB>``, cut to ``limit`` characters."""
    s = str(text).replace("\t", "<TAB>").replace("\r", "<CR>").replace("\n", "<LF>")
    if len(s) > limit:
        s = s[: limit - 3] + "..."
    return f'"{s}"'


def listing(items: Iterable[object], limit: int = 10, quoted: bool = False) -> str:
    """``a, b, c`` (``... and 4 more`` beyond ``limit``); ``quoted`` puts each in quotes."""
    values = [quote(i) if quoted else str(i) for i in items]
    if len(values) > limit:
        return ", ".join(values[:limit]) + f" and {len(values) - limit} more"
    return ", ".join(values)


def toml_value(value: Any, limit: int = 80) -> str:
    """A parsed TOML value written back in TOML syntax (``["a", 1]``, ``true``, ``{ k = 1 }``)."""
    text = _toml(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\t", "\\t").replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_toml(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def describe_value(value: Any) -> str:
    """What a parsed TOML value is, for 'expected X, got Y' (``the string "1"``)."""
    if isinstance(value, bool):
        return f"the boolean {_toml(value)}"
    if isinstance(value, str):
        return "an empty string" if not value else f"the string {toml_value(value)}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {_toml(value)}"
    if isinstance(value, (datetime, date, time)):
        return f"the date/time {value.isoformat()}"
    if isinstance(value, dict):
        if not value:
            return "an empty table"
        return f"a table with the keys {listing(value)}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "an empty list"
        return f"the list {toml_value(value)}"
    return f"a value of type {type(value).__name__}"


#: Whether messages are for the console script (set by :func:`perturbscore.cli.main`)
#: or for a caller of the library (the default).
_FOR_CLI = False


def for_cli() -> None:
    """Word the fixes messages suggest as options of the console script."""
    global _FOR_CLI
    _FOR_CLI = True


def overwrite_hint(python: str = "overwrite=True") -> str:
    """The fix for an existing output: ``pass --overwrite`` on the command line,
    ``pass overwrite=True`` (the keyword argument named) from Python."""
    return "pass --overwrite" if _FOR_CLI else f"pass {python}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,234 rows``: a count read as words (``plural`` when the
    noun does not take an ``s``)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def closest(word: str, known: Iterable[object], cutoff: float = 0.6) -> str | None:
    """The known name a user most likely meant by ``word``, or None (for "did you mean").

    A match ignoring case wins (``synth0003``: ``SYNTH0003``); among difflib's close
    matches of equal score, the one with most characters in the same places.
    """
    import difflib  # only when a message needs it: the CLI imports this module at start

    names = [str(k) for k in known]
    folded = {n.casefold(): n for n in names}
    if word.casefold() in folded:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word, names, n=50, cutoff=cutoff)
    if not close:
        return None
    return max(
        close,
        key=lambda c: (
            difflib.SequenceMatcher(None, word, c).ratio(),
            sum(x == y for x, y in zip(word, c, strict=False)) - abs(len(word) - len(c)),
        ),
    )


def not_utf8(path: Path, what: str) -> str:
    """The sentence for a text file that is not UTF-8, naming the first bad byte's line.

    ``what`` names the file's role (``the variant table``).  Only on that error path is
    the file read whole, to find the line.
    """
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
        where = ""
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f" (byte 0x{data[exc.start]:02x} on line {line} is not UTF-8)"
    return (
        f"{path}: {what} is not UTF-8 text{where}, probably Latin-1 or Windows-1252; "
        'save it as UTF-8 (Excel: "CSV UTF-8"; or iconv -f latin1 -t utf-8).'
    )
