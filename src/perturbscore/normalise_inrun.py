"""Background-normalised statistics inside ``perturbscore run``, against a saved background.

A run file's ``[normalise]`` section::

    [normalise]
    background = "stab-background.npz"     # saved by perturbscore normalise --save-background
    statistics = ["quantile", "robust_z"]  # optional; default both

adds, for every raw statistic ``s`` of ``[scores]`` and every normalised statistic
``n`` (:data:`perturbscore.normalise.NORMALISED`), the statistic ``{s}_{n}``
(``abs_diff_quantile``) to the run's outputs: one table per group and aggregation, named
by the run's name template with ``{statistic}`` filled in as ``{s}_{n}`` (the default
template gives the names ``perturbscore normalise`` writes), with the rows and ID
columns of the raw table.  The values are computed per block, in the span pipeline
(:func:`perturbscore.spans.score_span`), from the raw block's float64 scores, so every
engine, ``--resume`` and every block size give the values that ``perturbscore normalise
--background-file`` gives for the plain run's tables.  The ``--out-of-field`` policy
applies to them as to the raw scores.

Validated before any work (:func:`prepare_normaliser`): the file exists and is a
background file, its tracks are the run's selected tracks in order, it has a background
for every aggregation and raw statistic of the run, and what their values depend on
(:func:`perturbscore.normalise_files.check_bases`: log2fc's pseudocount, then, once the
predictions' bins are known, :meth:`RunNormaliser.check_bins`: each aggregation's bins)
is the run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import normalise as nz
from .errors import PerturbscoreError
from .normalise_files import basis, check_bases, check_tracks, load_backgrounds

if TYPE_CHECKING:
    from .scoring import Aggregation


@dataclass(frozen=True)
class NormaliseConfig:
    """The run file's ``[normalise]`` section.

    Attributes
    ----------
    background : Path
        Background file (``.npz``), resolved against the run file's folder.
    statistics : tuple of {"quantile", "robust_z"}
    """

    background: Path
    statistics: tuple[str, ...] = nz.NORMALISED

    def names(self, raw: Sequence[str]) -> tuple[str, ...]:
        """Output statistics ``{raw}_{normalised}``, per raw statistic, then normalised."""
        return tuple(f"{s}_{n}" for s in raw for n in self.statistics)


@dataclass(frozen=True, eq=False)
class RunNormaliser:
    """The loaded backgrounds and what to add to each block; small and picklable.

    Attributes
    ----------
    config : NormaliseConfig
    backgrounds : dict
        ``(aggregation spec, raw statistic) -> Background``, exactly the run's pairs.
    """

    config: NormaliseConfig
    backgrounds: dict[tuple[str, str], nz.Background]
    #: Prefix of messages (the run file's ``[normalise] background`` and the path).
    label: str = ""
    #: Warnings of the checks (a file that records no basis).
    notes: tuple[str, ...] = ()

    def check_bins(self, aggregations: Sequence[Aggregation]) -> None:
        """Refuse a background built from other bins than the run's aggregations read
        (known once the predictions' bin count is); raises PerturbscoreError."""
        bases = {
            (a.spec, stat): basis(stat, (a.start, a.stop), "mean" if a.mean else "sum", None)
            for a in aggregations
            for agg, stat in self.backgrounds
            if agg == a.spec
        }
        check_bases(self.backgrounds, bases, self.label)

    def apply(
        self, scores: Mapping[tuple[str, str], np.ndarray]
    ) -> dict[tuple[str, str], np.ndarray]:
        """Normalised statistics of one block: ``(aggregation, raw) -> # n S`` scores in,
        ``(aggregation, "{raw}_{normalised}") -> # n S`` float64 out."""
        out: dict[tuple[str, str], np.ndarray] = {}
        for (agg, stat), values in scores.items():
            bg = self.backgrounds[(agg, stat)]
            for n in self.config.statistics:
                out[(agg, f"{stat}_{n}")] = nz.normalise(n, values, bg)
        return out

    def warnings(self) -> list[str]:
        """Warnings about the backgrounds for the statistics asked for (a MAD that may be
        rounding, when ``robust_z`` is one)."""
        if "robust_z" not in self.config.statistics:
            return list(self.notes)
        found = (
            nz.unresolved_mad(bg, f"background {agg}/{stat} ({self.config.background.name})")
            for (agg, stat), bg in self.backgrounds.items()
        )
        return [*self.notes, *(w for w in found if w)]

    @property
    def nbytes(self) -> int:
        """Bytes the backgrounds hold (every thread shares them)."""
        return sum(
            b.values.nbytes + b.median.nbytes + b.mad.nbytes for b in self.backgrounds.values()
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the run manifest."""
        return {
            "background_file": str(self.config.background),
            "statistics": list(self.config.statistics),
            "quantile": "mid-rank (ties count half); signed statistics: sign(x) * q(|x|) among |b|",
            "robust_z": "(x - median) / (mad_scale * MAD)",
            "mad_scale": nz.MAD_SCALE,
            "max_rank_error": max(b.max_rank_error for b in self.backgrounds.values()),
            "entries": [b.describe() for b in self.backgrounds.values()],
        }


def prepare_normaliser(
    config: NormaliseConfig,
    aggregations: Sequence[str],
    statistics: Sequence[str],
    tracks: Sequence[str],
    where: str,
    pseudocount: float | None = None,
) -> RunNormaliser:
    """Load and check the background file of a run's ``[normalise]`` section.

    Parameters
    ----------
    config : NormaliseConfig
    aggregations : sequence of str
        The run's aggregation specs (``ave``, ``window:3``).
    statistics : sequence of str
        The run's raw statistics.
    tracks : sequence of str
        The run's selected track identifiers, in output order.
    where : str
        Prefix of messages (``stablefm.toml [normalise] background``).
    pseudocount : float, optional
        The run's log2fc pseudocount, checked against the backgrounds'.

    Raises
    ------
    PerturbscoreError
        A missing or unreadable file, other tracks, no background for one of the run's
        (aggregation, statistic) pairs, or one computed with another pseudocount.
    """
    path = config.background
    label = f"{where} {path}"
    if path.is_dir():
        raise PerturbscoreError(f"{label} is a folder; name a background file (.npz).")
    if not path.is_file():
        raise PerturbscoreError(
            f"{label}: background file not found; save one with 'perturbscore normalise RUN "
            "--background GROUP --save-background FILE.npz' or check the path."
        )
    try:
        loaded = load_backgrounds(path)
    except PerturbscoreError as exc:
        raise PerturbscoreError(f"{where}: {exc}") from None
    pairs = [(a, s) for a in aggregations for s in statistics]
    missing = [f"{a}/{s}" for a, s in pairs if (a, s) not in loaded]
    if missing:
        have = ", ".join(f"{a}/{s}" for a, s in loaded) or "none"
        raise PerturbscoreError(
            f"{label} has no background for {', '.join(missing)} (it has {have}); build it "
            "from a run with every aggregation and statistic of this one, or remove them "
            "from [scores]."
        )
    backgrounds = {k: loaded[k] for k in pairs}
    for b in backgrounds.values():
        check_tracks(b, tracks, label)
    bases = {(a, s): basis(s, None, None, pseudocount) for a, s in pairs}
    note = check_bases(backgrounds, bases, label)
    return RunNormaliser(config, backgrounds, label, (note,) if note else ())
