"""perturbscore: per-variant perturbation scores from REF/ALT sequence-model predictions.

Prediction arrays are ``(variants, bins, tracks)`` (``N B T``); scores are
``(variants, tracks)``.  The public API::

    from perturbscore import load_run_file, run, RunOptions
    result = run(load_run_file("stablefm.toml"), "out", RunOptions(memory_bytes=512 * 2**20))
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("perturbscore")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

from .errors import PerturbscoreError  # noqa: E402
from .pipeline import RunOptions, RunResult, run, run_path  # noqa: E402
from .readers import PredictionReader, open_predictions  # noqa: E402
from .runfile import Batch, Group, RunConfig, load_run_file  # noqa: E402
from .scoring import parse_aggregation, score_block  # noqa: E402
from .tracks import TrackSelection, read_targets, select_tracks, selection_from_options  # noqa: E402
from .variants import read_variants  # noqa: E402

__all__ = [
    "__version__",
    "Batch",
    "Group",
    "PerturbscoreError",
    "PredictionReader",
    "RunConfig",
    "RunOptions",
    "RunResult",
    "TrackSelection",
    "load_run_file",
    "open_predictions",
    "parse_aggregation",
    "read_targets",
    "read_variants",
    "run",
    "run_path",
    "score_block",
    "select_tracks",
    "selection_from_options",
]
