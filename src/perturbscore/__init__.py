"""perturbscore: per-variant perturbation scores from REF/ALT sequence-model predictions.

Prediction arrays are ``(variants, bins, tracks)`` (``N B T``); scores are
``(variants, tracks)``.  The public API::

    from perturbscore import load_run_file, run, RunOptions
    result = run(load_run_file("stablefm.toml"), "out", RunOptions(memory_bytes=512 * 2**20))
"""

from __future__ import annotations

# The one place the version is written (pyproject.toml reads it from here): looking it up
# with importlib.metadata costs ~30 ms at every start, a third of `perturbscore --version`.
__version__ = "0.1.0"

from .errors import PerturbscoreError  # noqa: E402

# The rest is imported on first use, so that ``import perturbscore`` (and the command
# line's --help) do not pay for numpy, pandas and pyarrow.
_LAZY = {
    "RunOptions": "pipeline",
    "RunResult": "pipeline",
    "run": "pipeline",
    "run_path": "pipeline",
    "PredictionReader": "readers",
    "open_predictions": "readers",
    "Batch": "runfile",
    "Group": "runfile",
    "RunConfig": "runfile",
    "load_run_file": "runfile",
    "parse_aggregation": "scoring",
    "score_block": "scoring",
    "TrackSelection": "tracks",
    "read_targets": "tracks",
    "select_tracks": "tracks",
    "selection_from_options": "tracks",
    "read_variants": "variants",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'perturbscore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


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
