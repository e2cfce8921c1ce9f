"""Exceptions raised for problems the user can fix.

Every :class:`PerturbscoreError` message names the file, the offending value
and the fix; the command-line interface turns it into exit code 2.
"""

from __future__ import annotations

import errno

#: Errors of the output folder's file system, not of the command: full, over quota,
#: read-only.  A user error (exit 2) with a sentence saying what to do.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def full_disk(exc: OSError) -> str:
    """``disk is full`` or ``disk quota is exceeded``: what an ENOSPC/EDQUOT says."""
    return "disk quota is exceeded" if exc.errno == errno.EDQUOT else "disk is full"


class PerturbscoreError(Exception):
    """A user error: bad input, bad option, or an output that would be overwritten."""


class Interrupted(BaseException):  # noqa: N818 - reads as "the run was interrupted"
    """A run stopped by a signal (SIGINT, SIGTERM): cleanup ran, the message says what next.

    Derives from BaseException, like KeyboardInterrupt, so that ``except Exception``
    blocks do not swallow it.

    Attributes
    ----------
    signal_name : str
        ``SIGINT`` or ``SIGTERM``.
    exit_code : int
        ``128 + signal number``, what a shell reports for a process ended by it.
    """

    def __init__(self, signal_name: str, exit_code: int, message: str = "") -> None:
        super().__init__(message or f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code
