"""Names the command line offers as choices, kept free of heavy imports.

``perturbscore --help`` imports only this, click and the standard library, so it stays
instant; the modules that implement each choice import their names from here.
"""

from __future__ import annotations

#: Output formats and their file extensions.
OUTPUT_FORMATS = {"parquet": ".parquet", "csv": ".csv", "rds": ".rds", "rdata": ".RData"}
#: What a run does with NaN/Inf in the selected predictions.
NAN_POLICIES = ("error", "propagate")
#: Where spans are scored.
ENGINES = ("local", "dask")
#: What a run does with variants outside the model's input (see perturbscore.geometry).
OUT_OF_FIELD = ("keep", "na", "drop")
