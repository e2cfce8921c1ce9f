"""Background files: saving and reading backgrounds, checking them against a run.

A background file is an ``.npz`` read without pickles:

``meta``: a JSON string ``{"format": "perturbscore-background", "version": 1,
"tracks": [...], "entries": [{"aggregation", "statistic", "signed", "n", "mode",
"max_rank_error", "k", "grid"}, ...]}``; per entry ``i``: ``values_i`` (``# m S``
float64, sorted per track), ``median_i`` and ``mad_i`` (``# S``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import PerturbscoreError
from .normalise import FORMAT, VERSION, Background


def save_backgrounds(path: str | Path, backgrounds: Iterable[Background]) -> Path:
    """Write backgrounds (same tracks) to one ``.npz`` file, atomically (temp, rename).

    Refuses to replace an existing file (the user's files are not overwritten).
    """
    p = Path(path)
    items = list(backgrounds)
    if not items:
        raise PerturbscoreError(f"{p}: no backgrounds to save.")
    if p.suffix != ".npz":
        raise PerturbscoreError(f"{p}: a background file ends in .npz; rename it.")
    if p.exists():
        raise PerturbscoreError(f"{p} already exists; choose another name or remove it first.")
    tracks = items[0].tracks
    if any(b.tracks != tracks for b in items):
        raise PerturbscoreError(f"{p}: backgrounds of one file must share their tracks.")
    keys = [b.key for b in items]
    if len(set(keys)) != len(keys):
        raise PerturbscoreError(f"{p}: two backgrounds for the same aggregation and statistic.")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "tracks": list(tracks),
        "entries": [b.describe() for b in items],
    }
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for i, b in enumerate(items):
        arrays[f"values_{i}"] = b.values
        arrays[f"median_{i}"] = b.median
        arrays[f"mad_{i}"] = b.mad
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def is_background_file(path: str | Path) -> bool:
    """Whether ``path`` is a background file :func:`save_backgrounds` wrote (an ``.npz``
    whose ``meta`` names the format), the only kind ``--overwrite`` may replace."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            if not hasattr(z, "files") or "meta" not in z.files:
                return False
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def load_backgrounds(path: str | Path) -> dict[tuple[str, str], Background]:
    """Read a background file: ``{(aggregation, statistic): Background}``."""
    p = Path(path)
    if not p.is_file():
        raise PerturbscoreError(f"{p}: background file not found. Check the path.")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise PerturbscoreError(
                    f"{p}: not a perturbscore background file (version {VERSION})."
                )
            tracks = tuple(meta["tracks"])
            out: dict[tuple[str, str], Background] = {}
            for i, e in enumerate(meta["entries"]):
                b = Background(
                    e["aggregation"],
                    e["statistic"],
                    bool(e["signed"]),
                    tracks,
                    int(e["n"]),
                    e["mode"],
                    np.asarray(z[f"values_{i}"], np.float64),
                    np.asarray(z[f"median_{i}"], np.float64),
                    np.asarray(z[f"mad_{i}"], np.float64),
                    float(e["max_rank_error"]),
                    int(e["k"]),
                    int(e["grid"]),
                )
                out[b.key] = b
    except OSError as exc:
        raise PerturbscoreError(
            f"{p}: cannot read the background file ({exc.strerror or exc})."
        ) from exc
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        # numpy's own words for a file that is no .npz would advise loading it unsafely.
        raise PerturbscoreError(
            f"{p} is not a background file (an .npz written by 'perturbscore normalise "
            "--save-background'); give such a file, or build one with --background GROUP."
        ) from exc
    return out


def check_tracks(background: Background, tracks: Sequence[str], where: str) -> None:
    """Refuse a background whose tracks are not the run's selected tracks, in order."""
    if tuple(tracks) != background.tracks:
        missing = [t for t in tracks if t not in set(background.tracks)]
        hint = f"{len(missing)} selected tracks are not in it" if missing else "order differs"
        raise PerturbscoreError(
            f"{where}: the background's {len(background.tracks)} tracks are not the run's "
            f"{len(tracks)} selected tracks ({hint}); build the background with the same "
            "track selection."
        )


def pick_background(
    backgrounds: Mapping[tuple[str, str], Background], aggregation: str, statistic: str, where: str
) -> Background:
    """The background of one (aggregation, statistic), or a user error naming what exists."""
    try:
        return backgrounds[(aggregation, statistic)]
    except KeyError:
        have = ", ".join(f"{a}/{s}" for a, s in backgrounds) or "none"
        raise PerturbscoreError(
            f"{where}: no background for {aggregation}/{statistic} (it has {have}); build one "
            "with that aggregation and statistic."
        ) from None
