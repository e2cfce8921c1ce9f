"""Reading one section of a run file against the schema.

:func:`read_section` checks every key of a TOML table against
:data:`perturbscore.runfile_schema.SCHEMA` (unknown keys, with the closest known one;
missing required keys; each value's check) and fills in the defaults; every message
names the file, the section, the key and the fix.
"""

from __future__ import annotations

from typing import Any

from .errors import PerturbscoreError
from .messages import closest, describe_value, listing
from .runfile_schema import SCHEMA, Key
from .runfile_values import Reject


def missing_key(where: str, name: str, key: Key) -> PerturbscoreError:
    """The error for a required key that is absent, with what to add."""
    if key.example.startswith("["):  # a table: show what to add, not "key = [table]"
        return PerturbscoreError(
            f"{where}: {name} is missing; it must be {key.rule()}: add {key.example}."
        )
    return PerturbscoreError(
        f"{where}: {name} is missing; it must be {key.rule()}, e.g. {name} = {key.example}."
    )


def refuse_unknown_keys(
    table: Any, keys: Any, where: str, limit: int = 10, shown: Any = None
) -> None:
    """A key of ``table`` not among ``keys``: the first, the closest known one, the list
    (``shown``, when some keys are aliases not worth listing)."""
    unknown = [k for k in table if k not in keys]
    if unknown:
        close = closest(str(unknown[0]), keys)
        hint = f" (did you mean {close}?)" if close else ""
        listed = listing(keys if shown is None else shown, limit)
        raise PerturbscoreError(
            f"{where}: unknown key {unknown[0]}{hint}; the keys here are {listed}."
        )


def read_section(table: Any, section: str, where: str, required: bool = True) -> dict[str, Any]:
    """Check every key of ``table`` against ``SCHEMA[section]``; absent keys get defaults.

    ``required=False`` leaves missing required keys to :func:`missing_key` later, so that a
    typo in a later section is reported before the absence it may explain.
    """
    keys = SCHEMA[section]
    refuse_unknown_keys(table, keys, where)
    out: dict[str, Any] = {}
    for name, key in keys.items():
        if name not in table:
            if key.required and required:
                raise missing_key(where, name, key)
            out[name] = key.default
            continue
        value = table[name]
        try:
            out[name] = key.check(value)
        except Reject as exc:
            got = describe_value(value)
            if exc.detail:
                got += f" ({exc.detail})"
            fix = exc.guess or key.example
            raise PerturbscoreError(
                f"{where} {name}: expected {key.rule()}, got {got}; write {name} = {fix}."
            ) from None
    return out


def as_table(value: Any, what: str, where: str) -> dict[str, Any]:
    """``value`` if it is a TOML table (``[what]``), else a user error."""
    if not isinstance(value, dict):
        raise PerturbscoreError(
            f"{where}: {what} must be a TOML table, got {describe_value(value)}; write it as "
            f"[{what}] followed by its keys."
        )
    return value
