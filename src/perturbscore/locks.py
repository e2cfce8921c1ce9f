"""The output folder's lock: one writing command per folder, released when it dies.

``OUT/.perturbscore.lock`` is an ``flock`` held for the command's lifetime, so the kernel
releases it when the process dies, however it dies; the file names the holder
(``pid host``) for messages.  :func:`pid_alive` tells whether a process still runs (a
zombie does not): the sweep of temporary files uses it (:mod:`.outputs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import PerturbscoreError

LOCK = ".perturbscore.lock"

#: This machine's name, as lock files record it (``socket.gethostname()``'s value, from
#: the same uname call, without importing socket at every start).
_HOST = os.uname().nodename or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (ours counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    # A process killed with SIGKILL stays a zombie until its parent reaps it, which a
    # container's init or a crashed job runner may never do: it holds its pid but runs
    # nothing, so its lock and temporaries are leftovers.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): the pid exists, count it as alive
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] not in ("Z", "X")


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.perturbscore.lock`` while a command writes there.

    The lock is an ``flock`` on that file, held for the command's lifetime, so the
    kernel releases it when the process dies, however it dies (a zombie, a reused pid
    or a process in another pid namespace cannot keep or fake it).  The file names the
    holder (``pid host``) for messages; a lock file written on another host is not
    taken over, since a lock there may not reach this machine (say NFS): the message
    says to delete it once nothing runs there.

    Raises
    ------
    PerturbscoreError
        Another live perturbscore process holds the folder, or another host's lock file.
    """
    path = folder / LOCK
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid, host = _lock_owner(path)
            raise PerturbscoreError(
                f"{folder}: another perturbscore process ({_holder(pid, host)}) is writing into "
                "this folder; wait for it to finish or choose another output folder."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # its holder removed it just before we locked it
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - only under a lock race with several processes
        raise PerturbscoreError(f"{folder}: could not take the folder lock {path}.")
    mine = False
    try:
        pid, host = _lock_owner(path)
        stale = host is None and pid and pid != os.getpid() and pid_alive(pid)
        if (host is not None and host != _HOST) or stale:
            raise PerturbscoreError(
                f"{folder}: {path} says perturbscore process {_holder(pid, host)} writes there; "
                "if no perturbscore command runs there any more, delete that file and try again."
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_HOST}\n".encode(), 0)
        mine = True
        yield
    finally:
        with contextlib.suppress(OSError):
            # Ours, or empty (made by this call, whose first write failed: a full disk).
            st = os.fstat(fd)
            if (mine or st.st_size == 0) and st.st_ino == os.stat(path).st_ino:
                path.unlink()  # while still locked: the next command makes a fresh one
        os.close(fd)


def _lock_owner(path: Path) -> tuple[int, str | None]:
    """``(pid, host)`` a lock file names (host None in files of older versions)."""
    try:
        parts = path.read_text(encoding="utf-8", errors="replace").split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return 0, None


def _holder(pid: int, host: str | None) -> str:
    return f"pid {pid}" + (f" on {host}" if host and host != _HOST else "")
