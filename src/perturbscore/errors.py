"""Exceptions raised for problems the user can fix.

Every :class:`PerturbscoreError` message names the file, the offending value
and the fix; the command-line interface turns it into exit code 2.
"""

from __future__ import annotations


class PerturbscoreError(Exception):
    """A user error: bad input, bad option, or an output that would be overwritten."""
