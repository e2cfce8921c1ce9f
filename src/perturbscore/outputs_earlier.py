"""Earlier outputs in a folder: which a command may replace, and which it removes.

An output folder may hold what an earlier command of the same kind published there
(listed by its ``manifest.json``, a comparison's ``compare.json``, or a commit
journal).  :func:`refuse_existing_outputs` lets ``--overwrite`` replace exactly those
and refuses anything else; :func:`stale_outputs` names those the new command does not
write again, which its commit removes; :func:`uncache_replaced` readies those it
replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from .errors import PerturbscoreError
from .messages import listing, overwrite_hint
from .outputs import JOURNAL, finish_commit, inside_folder


def earlier_outputs(folder: Path, source: str) -> tuple[set[str], str]:
    """Names that an earlier command of this kind published in ``folder``: what its
    ``manifest.json`` (``"source": source``) lists, or for ``source="compare"`` its
    ``compare.json`` (:func:`compare_listing`), the listing itself, and what a commit
    journal left there promises.  Also, when there are none, why (for messages).
    """
    names: set[str] = set()
    why = "there is no perturbscore manifest.json there"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        journal = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
        names |= {str(final) for _, final in journal["moves"]} | {str(journal["manifest"][0])}
    if source == "compare":
        return names | compare_listing(folder), "there is no compare.json there"
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return names, why
    except (OSError, ValueError):
        return names, "its manifest.json is not one perturbscore wrote"
    if not isinstance(manifest, dict) or "perturbscore_version" not in manifest:
        return names, "its manifest.json is not one perturbscore wrote"
    if manifest.get("source") != source:
        return names, f"its manifest.json is that of a {manifest.get('source')} output"
    for entry in [*manifest.get("outputs", []), *manifest.get("zarr_cubes", [])]:
        names.add(str(entry.get("path") if isinstance(entry, dict) else entry))
    return names | {"manifest.json"}, "not listed in its manifest.json"


def compare_listing(folder: Path) -> set[str]:
    """The files (relative to ``folder``) the comparison there wrote, from its
    ``compare.json`` (its figures and files, and itself); empty without one.

    Raises
    ------
    PerturbscoreError
        A damaged ``compare.json``: its files cannot be told from the user's.
    """
    path = folder / "compare.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        figures = [str(f[k]) for f in summary.get("figures", []) for k in ("png", "svg") if k in f]
        return {*figures, *(str(f) for f in summary.get("files", [])), "compare.json"}
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as exc:
        raise PerturbscoreError(
            f"{path} is damaged ({exc}), so the files of the earlier comparison cannot be "
            "told from yours; choose a new --out folder."
        ) from None


def unlisted_outputs(folder: Path, planned: Sequence[Path], source: str) -> tuple[list[str], str]:
    """Of the ``planned`` paths that exist, those (relative to ``folder``) no earlier command
    of this kind wrote there (:func:`earlier_outputs`), and why, for messages."""
    existing = [p for p in planned if p.exists() or p.is_symlink()]
    if not existing:
        return [], ""
    ours, why = earlier_outputs(folder, source)
    relative = [p.relative_to(folder).as_posix() for p in existing]
    return [r for r in relative if r not in ours], why


def stale_outputs(folder: Path, source: str, planned: Sequence[Path]) -> list[Path]:
    """Earlier outputs of this command in ``folder`` that it does not write again.

    ``--overwrite`` hands them to :meth:`Commit.remove`, so that the folder holds this
    command's outputs only and no table of an earlier one is left beside a manifest
    that does not list it.  Only what an earlier manifest (``"source": source``) or
    commit journal names, inside ``folder``, is ever returned.
    """
    ours, _ = earlier_outputs(folder, source)
    listing_name = "compare.json" if source == "compare" else "manifest.json"
    again = {p.relative_to(folder).as_posix() for p in planned} | {listing_name}
    root = folder.resolve()
    stale = []
    for name in sorted(ours - again):
        path = folder / name
        # Not a link leading out either: an output replaced by one is the user's.
        inside = inside_folder(folder, name) and root in path.resolve().parents
        if inside and (path.exists() or path.is_symlink()):
            stale.append(path)
    return stale


def refuse_existing_outputs(
    folder: Path,
    planned: list[Path],
    overwrite: bool,
    source: str,
    what: str,
    python: str = "overwrite=True",
) -> list[Path]:
    """Existing outputs need ``overwrite``, which replaces earlier outputs of the same
    command and nothing else; returns those the command will replace.

    Parameters
    ----------
    folder : Path
        The output folder.
    planned : list of Path
        Every path the command publishes there (those that exist are checked).
    overwrite : bool
    source : str
        The manifest ``source`` of the command (``run``, ``normalise``).
    what : str
        The command, for the message (``perturbscore run``).
    python : str
        The keyword argument to name to a library caller (:func:`.messages.overwrite_hint`).

    Returns
    -------
    list of Path
        The planned paths that exist (empty unless ``overwrite``: otherwise they are
        refused).
    """
    if (folder / "compare.json").is_file():
        # A comparison's folder: its report and figures describe other tables, and
        # compare refuses a run's folder likewise.
        raise PerturbscoreError(
            f"{folder} holds the outputs of 'perturbscore compare' (compare.json); '{what}' "
            "writes into a folder of its own: choose another --out folder."
        )
    finish_commit(folder)  # a killed command's commit: judge the folder as it promised
    existing = [p for p in planned if p.exists() or p.is_symlink()]
    if not existing:
        return []
    others, why = unlisted_outputs(folder, existing, source)
    if others:
        # With or without --overwrite: advising it would only lead to this refusal.
        raise PerturbscoreError(
            f"{folder} holds {listing(others, 4)}, "
            f"which no earlier '{what}' wrote there ({why}); --overwrite replaces only earlier "
            "outputs: move those away or choose another --out folder."
        )
    if not overwrite:
        raise PerturbscoreError(
            f"{folder} already holds {listing([p.name for p in existing], 4)}; "
            f"{overwrite_hint(python)} to replace them, or choose another --out folder."
        )
    return existing


def uncache_replaced(paths: Sequence[Path]) -> threading.Thread | None:
    """Drop from the page cache, in a thread, the earlier outputs a command will replace.

    The commit renames each new table over its earlier one, and the kernel frees the
    earlier file's cached pages inside that rename: 12-19 ms per study table, the
    largest part of a rerun's last, single-threaded step.  Dropping them while the
    command still scores moves that work beside it.  The files' bytes never change
    (``POSIX_FADV_DONTNEED`` forgets cached pages and starts writing back dirty ones;
    the files stay until the commit replaces them).  Only a regular file with one link
    is touched (a file linked elsewhere keeps its pages after the rename anyway), checked
    before it is opened, so no FIFO or device is ever opened; nothing happens where the
    call does not exist.  The thread is not waited for: reaching a path after the commit
    renamed a new table there forgets that table's clean, fsynced pages, which is
    harmless.

    Parameters
    ----------
    paths : sequence of Path
        The outputs the command will replace.

    Returns
    -------
    threading.Thread or None
        The (daemon) thread, None when there is nothing to do.
    """
    if not paths or not hasattr(os, "posix_fadvise"):
        return None
    thread = threading.Thread(
        target=_uncache, args=(list(paths),), name="perturbscore-uncache", daemon=True
    )
    thread.start()
    return thread


def _uncache(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            before = os.lstat(path)
            if not stat.S_ISREG(before.st_mode) or before.st_nlink != 1:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                now = os.fstat(fd)  # the same file, not one put there since the lstat
                if (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
