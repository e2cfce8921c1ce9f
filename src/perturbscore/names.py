"""Names users give (groups, designs) that become parts of file names.

A group name ends up in table names, Zarr cube names and figure file names, so it must
not escape the output folder (``../x``, ``a/b``), hide files (``.x``) or confuse
extension handling (``v1.1`` makes ``v1.1_scores.zarr`` and figure stems ambiguous).
One rule for every command: letters, digits, ``_`` and ``-``, starting with a letter or
digit, at most 64 characters.
"""

from __future__ import annotations

import re

from .errors import PerturbscoreError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def is_safe_name(value: str) -> bool:
    """True if ``value`` may be used as a group name (see the module docstring)."""
    return bool(_SAFE.fullmatch(value))


def check_name(value: object, what: str, where: str = "") -> str:
    """Return ``value`` if it is a safe name, else raise a user error.

    Parameters
    ----------
    value : object
        The name as given (run file, option).
    what : str
        What it names, for the message (``"group name"``).
    where : str, optional
        The file or option it came from, for the message.
    """
    if not isinstance(value, str) or not is_safe_name(value):
        origin = f"{where}: " if where else ""
        raise PerturbscoreError(
            f"{origin}{what} {value!r} is not allowed: use letters, digits, '_' and '-' "
            "(starting with a letter or digit, at most 64 characters), since it becomes "
            "part of file names."
        )
    return value
