"""The demo's record of the files it wrote, and how it tells its own files from the user's.

``perturbscore demo --overwrite`` replaces only files it can show are its own: those
its record (:data:`RECORD`, in the demo folder) lists by SHA-256, or those byte-identical
to what it writes now.  Both, because each covers what the other cannot: the record
survives a change of the demo's data between versions (whose old files differ from
today's), and byte identity covers folders written before the record existed, or whose
record was lost.  Neither can be fooled into replacing the user's content: a file the
user made or edited has other bytes than any the demo wrote.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .outputs import sweep, temp_path

#: The demo's record of what it wrote (name -> SHA-256 of every version it wrote there).
RECORD = Path("perturbscore-demo.json")
_RECORD_FORMAT = "perturbscore demo record"
#: Name of the fresh demo written to compare with (``.{REFERENCE}.perturbscore-{pid}.partial``
#: in the system's temporary folder).
REFERENCE = "perturbscore-demo-reference"

#: A folder holding a fresh demo, a function writing one into a folder, or None.
Fresh = Callable[[Path], object] | Path | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_record(folder: Path) -> dict[str, list[str]] | None:
    """The hashes the demo's record in ``folder`` lists per file; None without a record
    or when the file of that name is not one the demo wrote (then it is the user's)."""
    path = folder / RECORD
    if path.is_symlink() or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        files = record["files"] if record.get("format") == _RECORD_FORMAT else None
        if not isinstance(files, dict):
            return None
        return {str(k): [str(h) for h in v] for k, v in files.items() if isinstance(v, list)}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        return None


def _not_the_demos(folder: Path, existing: Sequence[Path], reference: Path | None) -> list[Path]:
    """Of the ``existing`` files (relative to ``folder``), those the demo cannot show it wrote.

    A file is the demo's when the demo's record lists its SHA-256, or when it is
    byte-identical to the file the demo writes now (``reference``, a folder holding a fresh
    demo); why both, the module docstring says.  A link is never the demo's (it writes
    none).
    """
    record = _read_record(folder)
    theirs = []
    for rel in existing:
        path = folder / rel
        if rel == RECORD:
            own = record is not None
        elif path.is_symlink() or not path.is_file():
            own = False
        elif record is not None and _sha256(path) in record.get(rel.as_posix(), []):
            own = True
        else:
            ref = None if reference is None else reference / rel
            own = ref is not None and ref.is_file() and filecmp.cmp(path, ref, shallow=False)
        if not own:
            theirs.append(rel)
    return theirs


def theirs_among(folder: Path, inputs: Sequence[Path], fresh: Fresh) -> list[Path]:
    """Of ``inputs`` (existing files, relative to ``folder``), those the demo cannot show
    are its own (:func:`_not_the_demos`).  ``fresh`` gives the demo's files to compare
    with; a function is called (into a temporary folder of the system's, never into
    ``folder``; a killed call's is swept by the next) only for files the record does not
    vouch for."""
    theirs = _not_the_demos(folder, inputs, None)
    if not theirs or fresh is None:
        return theirs
    if isinstance(fresh, Path):
        return _not_the_demos(folder, theirs, fresh)
    # In the system's temporary folder, under the one temporary-name form, so that the
    # copy a killed demo left there is swept by the next demo (only dead processes').
    base = Path(tempfile.gettempdir())
    sweep(base, REFERENCE)
    reference = temp_path(base / REFERENCE)
    try:
        reference.mkdir()
        fresh(reference)
        return _not_the_demos(folder, theirs, reference)
    finally:
        shutil.rmtree(reference, ignore_errors=True)


def record_text(folder: Path, staging: Path, relative: Sequence[Path]) -> str:
    """The demo's record after this write: every hash an earlier record listed (a kill
    between the renames may leave those files in place) and those of the new files."""
    files = {k: list(v) for k, v in (_read_record(folder) or {}).items()}
    for rel in relative:
        hashes = files.setdefault(rel.as_posix(), [])
        digest = _sha256(staging / rel)
        if digest not in hashes:
            hashes.append(digest)
    record = {
        "format": _RECORD_FORMAT,
        "about": "the files 'perturbscore demo' wrote here; --overwrite replaces only these",
        "files": files,
    }
    return json.dumps(record, indent=1, sort_keys=True) + "\n"
