"""Background files: saving and reading backgrounds, checking them against a run.

A background file is an ``.npz`` read without pickles:

``meta``: a JSON string ``{"format": "perturbscore-background", "version": 1,
"tracks": [...], "entries": [{"aggregation", "statistic", "signed", "n", "mode",
"max_rank_error", "k", "grid", "basis"}, ...]}``; per entry ``i``: ``values_i``
(``# m S`` float64, sorted per track), ``median_i`` and ``mad_i`` (``# S``).

``basis`` (:func:`basis`) is what the values depend on beyond the aggregation and
statistic names: the aggregation's bins and reduction and, for ``log2fc``, the
pseudocount, as the source run's manifest recorded them.  A background is applied only
to a run whose recorded basis agrees (:func:`check_bases`); a file without ``basis``
(saved by an older perturbscore) is accepted with a warning, because its values are
right for every run made with the defaults and a refusal would leave its user no way
to use it, while the warning says how to have it checked (save it again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
                    _basis_entry(e.get("basis")),
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


def _basis_entry(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("basis is not a mapping")
    return value


def basis(
    statistic: str,
    bins: Sequence[int] | None,
    reduce: str | None,
    pseudocount: float | None,
) -> dict[str, Any]:
    """What a background's values depend on beyond the (aggregation, statistic) names:
    the aggregation's bins ``[start, stop)`` and reduction (``mean``, ``sum``), and for
    ``log2fc`` the pseudocount; None where unknown (a run that did not record it)."""
    out: dict[str, Any] = {
        "bins": [int(b) for b in bins] if bins is not None else None,
        "reduce": reduce,
    }
    if statistic == "log2fc":
        out["pseudocount"] = float(pseudocount) if pseudocount is not None else None
    return out


def run_basis(parameters: Mapping[str, Any], aggregation: str, statistic: str) -> dict[str, Any]:
    """:func:`basis` of one table of a run, from its manifest's ``parameters``
    (``aggregations[]``: spec, bins, reduce; ``pseudocount``)."""
    aggs = parameters.get("aggregations") or []
    a = next((x for x in aggs if isinstance(x, dict) and x.get("spec") == aggregation), {})
    bins = a.get("bins")
    ok = isinstance(bins, list) and len(bins) == 2
    return basis(statistic, bins if ok else None, a.get("reduce"), parameters.get("pseudocount"))


def _bins_text(bins: Sequence[int], reduce: str | None) -> str:
    start, stop = bins
    text = f"bin {start}" if stop - start == 1 else f"bins {start} to {stop - 1}"
    return f"{text} ({reduce})" if reduce else text


def check_bases(
    backgrounds: Mapping[tuple[str, str], Background],
    bases: Mapping[tuple[str, str], Mapping[str, Any]],
    where: str,
) -> str | None:
    """Refuse a background whose recorded basis differs from the run's (``bases``, per
    (aggregation, statistic)); returns one warning naming the backgrounds that record no
    basis (an older file), or None.  A value unknown on either side is not compared."""
    unrecorded = []
    for key, want in bases.items():
        b = backgrounds[key]
        if b.basis is None:
            unrecorded.append(f"{key[0]}/{key[1]}")
            continue
        have = b.basis
        what = f"{where}: its {key[0]}/{key[1]} background"
        hb, wb, hr, wr = (d.get(k) for k in ("bins", "reduce") for d in (have, want))
        if hb is not None and wb is not None and (list(hb) != list(wb) or hr and wr and hr != wr):
            old, new = _bins_text(hb, hr), _bins_text(wb, wr)
            raise PerturbscoreError(
                f"{what} reads {old} but this run's {key[0]} reads {new}; build the "
                "background from a run with the same geometry and center_bin, or rerun this "
                "one with those."
            )
        pc_have, pc_want = have.get("pseudocount"), want.get("pseudocount")
        if None not in (pc_have, pc_want) and pc_have != pc_want:
            raise PerturbscoreError(
                f"{what} was computed with pseudocount {pc_have} but this run uses "
                f"pseudocount {pc_want}; build the background from a run with pseudocount = "
                f"{pc_want}, or rerun this one with pseudocount = {pc_have} in [scores]."
            )
    if not unrecorded:
        return None
    return (
        f"{where}: the background file records no basis for {', '.join(unrecorded)} (the "
        "bins and, for log2fc, the pseudocount its values were computed with: saved by an "
        "older perturbscore), so they were not checked against this run's; save it again "
        "with --save-background to have them checked"
    )


def check_tracks(background: Background, tracks: Sequence[str], where: str) -> None:
    """Refuse a background whose tracks are not the run's selected tracks, in order."""
    if tuple(tracks) != background.tracks:
        missing = [t for t in tracks if t not in set(background.tracks)]
        extra = len(set(background.tracks) - set(tracks))
        if missing:
            n = len(missing)
            hint = f"{n} selected track{'s are' if n > 1 else ' is'} not in it"
        elif extra:
            hint = f"it has {extra} track{'s' if extra > 1 else ''} the run did not select"
        else:
            hint = "the same tracks in another order"
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
