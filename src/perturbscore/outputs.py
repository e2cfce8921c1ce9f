"""Output files: one temporary-name rule, all-or-nothing commits, recovery and sweeping.

Every file or folder perturbscore writes first exists under a hidden temporary name
beside its final one, ``.{name}.perturbscore-{pid}.partial``, and is renamed into place
only when everything of the command succeeded.  The name is what makes leftovers of
dead processes recognisable: :func:`sweep` removes those whose process no longer runs
(a ``kill -9`` leaves them behind; nothing else can).  The word ``perturbscore`` in it
keeps a user's own file out of reach: a bare ``.{name}.{pid}.partial`` is a form other
programs use too.

Renaming several tables is not atomic, so a commit is journalled: before the first
rename, ``OUT/.perturbscore-commit.json`` lists the earlier outputs to remove (files an
``--overwrite`` replaces by other names), every ``(temporary, final)`` pair (paths
relative to ``OUT``) and the manifest text, written and fsynced under a temporary name
and renamed.  A process
killed halfway through the renames leaves the journal; the next command on that folder
(:func:`recover`) finishes the renames the journal promised and writes the manifest, so
a commit is never left half done.  The journal is removed last.

A folder lock (``.perturbscore.lock``: an ``flock`` held for the command's lifetime; the
file names ``pid host``) keeps two commands from writing into one folder at the same
time; the kernel releases it when its process dies, so a dead process's lock is taken
over, but not a lock file written on another host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PerturbscoreError
from .locks import LOCK, folder_lock, pid_alive
from .messages import quote

log = logging.getLogger("perturbscore")

JOURNAL = ".perturbscore-commit.json"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.perturbscore-(?P<pid>\d+)\.partial$")


def temp_path(path: Path, role: str = "") -> Path:
    """Hidden sibling of ``path`` used until commit: ``.{name}.perturbscore-{pid}.partial``.

    ``role`` tells apart two temporaries of one name (``old``: the earlier output moved
    aside while a folder is replaced); its leftovers are swept all the same.
    """
    name = f"{path.name}.{role}" if role else path.name
    return path.with_name(f".{name}.perturbscore-{os.getpid()}.partial")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _dead_partial(name: str) -> re.Match[str] | None:
    """The match of a temporary's name (:func:`temp_path`) whose process no longer runs."""
    m = _PARTIAL.match(name)
    return m if m is not None and not pid_alive(int(m["pid"])) else None


def is_own_leftover(path: Path) -> bool:
    """Whether ``path`` is perturbscore's own bookkeeping in an output folder: its lock,
    a commit journal, or a temporary of a process that no longer runs."""
    return path.name in (LOCK, JOURNAL) or _dead_partial(path.name) is not None


def sweep(folder: Path, name: str | None = None) -> list[Path]:
    """Remove ``.*.perturbscore-{pid}.partial`` leftovers of processes that no longer run.

    Only names of exactly that form are touched, so a user's files never are; with
    ``name``, only the leftovers of that one output (``.{name}.perturbscore-{pid}.partial``),
    for a file written into a folder that is not the command's output folder.

    Returns
    -------
    list of Path
        What was removed.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _dead_partial(entry.name)
        if m is not None and (name is None or m["name"] == name):
            _remove(entry)
            removed.append(entry)
    if removed:
        log.info(
            "removed %d temporary file(s) left by interrupted runs in %s", len(removed), folder
        )
    return removed


def check_out_folder(path: Path, option: str = "--out") -> None:
    """A folder a command may create or write into, or a user error saying why not."""
    if path.exists() and not path.is_dir():
        raise PerturbscoreError(
            f"{option} {path} is an existing file, not a folder; name a folder for the outputs."
        )
    parent = next((p for p in (path, *path.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise PerturbscoreError(
            f"{option} {path}: {parent} is a file, so no folder can be made inside it; name "
            "another folder."
        )
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise PerturbscoreError(
            f"{option} {path}: {parent} cannot be written; name a folder you can write to."
        )


def make_folder(path: Path, option: str = "--out") -> list[Path]:
    """Create ``path`` (and parents); returns the folders created, innermost first.

    An OSError is a user error.
    """
    created = [d for d in (path, *path.parents) if not d.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PerturbscoreError(
            f"{option} {path}: cannot create the folder ({exc.strerror or exc}); name another "
            "folder."
        ) from exc
    return created


def write_text_atomic(path: Path, text: str, durable: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary name (fsynced when ``durable``)."""
    tmp = temp_path(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a no-op where directories can't be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def output_folder(path: Path, option: str = "--out") -> Iterator[dict[str, Any] | None]:
    """The start every writing command shares: its output folder, ready to write into.

    Creates ``path`` if missing, holds its lock, finishes a commit a killed run left
    halfway (:func:`recover`, before sweeping: its temporaries are in the journal) and
    sweeps dead processes' leftovers (:func:`sweep`).  Yields the journal that was
    finished, or None.  If the command fails, the folders this call created (``path``
    and any missing parents) are removed again while they are empty.
    """
    created = make_folder(path, option)
    try:
        with folder_lock(path):
            journal = recover(path)
            sweep(path)
            yield journal
    except BaseException:
        for folder in created:  # innermost first, each only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def finish_commit(folder: Path) -> None:
    """Finish a commit a killed command left halfway in ``folder``, if it holds one.

    Commands that judge what a folder holds before they write (``--overwrite`` or not)
    call this first, so that they judge it as the journal promised to leave it; the
    same happens under :func:`output_folder` for those that judge it there.
    """
    if (folder / JOURNAL).is_file():
        with output_folder(folder):
            pass


def _replace(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, replacing a file or a folder of the same name."""
    if final.is_dir() and not final.is_symlink():
        # A folder under a table's name: a Dask run's partitioned table or an older cube.
        old = temp_path(final, "old")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, final)
    except OSError as exc:  # a file where a folder is (or the reverse)
        if exc.errno not in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY):
            raise
        _remove(final)
        os.replace(tmp, final)


@dataclass
class Commit:
    """The renames that publish a command's outputs, journalled (see the module docstring).

    Parameters
    ----------
    folder : Path
        The output folder (holds the journal).
    fingerprint : dict, optional
        What identifies the run, kept in the journal so that ``--resume`` can tell a
        finished commit of the same run.
    """

    folder: Path
    fingerprint: dict[str, Any] | None = None
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    removals: list[Path] = field(default_factory=list)

    def add(self, tmp: Path, final: Path) -> None:
        """Publish ``tmp`` (complete, closed) as ``final`` (both inside ``folder``)."""
        self.moves.append((tmp, final))

    def remove(self, path: Path) -> None:
        """Remove ``path``, an earlier output inside ``folder``, before the renames."""
        self.removals.append(path)

    def run(self, manifest: Path, manifest_text: str) -> None:
        """Journal, remove, rename everything, write the manifest, drop the journal."""
        journal = {
            "pid": os.getpid(),
            "fingerprint": self.fingerprint,
            "remove": [self._inside(p) for p in self.removals],
            "moves": [[self._inside(t), self._inside(f)] for t, f in self.moves],
            "manifest": [self._inside(manifest), manifest_text],
        }
        for tmp, _ in self.moves:
            _fsync_tree(tmp)
        write_text_atomic(self.folder / JOURNAL, json.dumps(journal), durable=True)
        _apply(self.folder, journal)

    def _inside(self, path: Path) -> str:
        """``path`` relative to the folder (a ValueError for anything outside it)."""
        return Path(path).relative_to(self.folder).as_posix()


def _fsync_tree(path: Path) -> None:
    paths = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for p in paths:
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())


class EarlySync:
    """Flushes finished temporaries to disk in threads while a run goes on (a run's
    tables are finished a group at a time): the later groups' scoring hides the disk's
    time, and :meth:`Commit.run`'s fsync, the durable one, finds the files clean."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def start(self, path: Path) -> None:
        """Begin flushing ``path`` (a closed temporary file or folder)."""
        t = threading.Thread(target=self._sync, args=(path,), name="perturbscore-fsync")
        t.daemon = True  # a killed run must not wait for it
        t.start()
        self._threads.append(t)

    @staticmethod
    def _sync(path: Path) -> None:
        with contextlib.suppress(OSError):  # reported by the commit's own fsync
            _fsync_tree(path)

    def wait(self) -> None:
        """Wait for every flush begun so far."""
        for t in self._threads:
            t.join()
        self._threads.clear()


def inside_folder(folder: Path, name: str) -> bool:
    """Whether ``name`` (relative, as journals write them) stays inside ``folder``, its
    parent folders resolved (a linked subfolder could lead out of it)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return False
    root = folder.resolve()
    parent = (folder / rel).parent.resolve()
    return parent == root or root in parent.parents


def _apply(folder: Path, journal: dict[str, Any]) -> list[Path]:
    """Carry out a journal: removals, renames whose temporary still exists, the manifest.

    Every step can be repeated, so a journal is carried out again after any crash.
    """
    done: list[Path] = []
    name, text = journal["manifest"]
    # The earlier manifest goes first: a folder caught between two renames holds no
    # manifest, so no reader takes a mix of old and new outputs for either.
    # Every name is inside the folder: Commit.run writes them relative to it, and
    # recover() refuses a journal naming anything else (inside_folder).
    for rm in [*journal.get("remove", []), name]:
        path = folder / rm
        if path.is_file() or path.is_symlink():
            path.unlink()
        elif path.is_dir():  # an earlier Dask table's part files, a Zarr cube
            shutil.rmtree(path)
    for tmp_name, final_name in journal["moves"]:
        tmp, final = folder / tmp_name, folder / final_name
        if tmp.exists():
            final.parent.mkdir(parents=True, exist_ok=True)  # a subfolder of outputs
            _replace(tmp, final)
            log.debug("committed %s", final)
        done.append(final)
    write_text_atomic(folder / name, text, durable=True)
    done.append(folder / name)
    fsync_dir(folder)
    (folder / JOURNAL).unlink()
    return done


def refuse_unfinished_commit(folder: Path) -> None:
    """For readers of an output folder: refuse one whose commit a killed command left
    halfway (it holds a mix of earlier and new outputs, and no manifest)."""
    if (folder / JOURNAL).is_file():
        raise PerturbscoreError(
            f"{folder}: a perturbscore command was killed while it published its outputs "
            "there; run that command again (a run with --resume) to finish it, then retry."
        )


def recover(folder: Path) -> dict[str, Any] | None:
    """Finish a commit a dead process left halfway (see the module docstring).

    Returns
    -------
    dict or None
        The journal that was carried out (its ``fingerprint`` tells whose run it was),
        or None when there was none.

    Raises
    ------
    PerturbscoreError
        A live process is committing into ``folder``, or the journal is unreadable.
    """
    path = folder / JOURNAL
    if not path.is_file():
        return None
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        pid = int(journal["pid"])
        names = [
            *map(str, journal.get("remove", [])),
            *(str(n) for move in journal["moves"] for n in move),
            str(journal["manifest"][0]),
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise PerturbscoreError(
            f"{path}: commit journal is unreadable ({exc}); move it away and check the tables "
            "beside it."
        ) from exc
    outside = [n for n in names if not inside_folder(folder, n)]
    if outside:
        # perturbscore journals name only paths inside their folder: this one was edited
        # or written by something else, and carrying it out could touch other files.
        raise PerturbscoreError(
            f"{path}: commit journal names {quote(outside[0])}, outside {folder}; it is not "
            "one perturbscore wrote: move it away and check the tables beside it."
        )
    if pid_alive(pid):
        raise PerturbscoreError(
            f"{folder}: perturbscore process {pid} is publishing its outputs here; wait for it."
        )
    done = _apply(folder, journal)
    log.warning(
        "finished the commit of an interrupted run (pid %d) in %s: %s",
        pid,
        folder,
        ", ".join(p.name for p in done),
    )
    return journal
