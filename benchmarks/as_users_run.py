"""Make the processes a benchmark starts run Python as users do: with bytecode caches.

Python writes ``__pycache__/*.pyc`` on first import and reuses them.  A shell that sets
``PYTHONDONTWRITEBYTECODE`` (this project's sandbox does) makes every ``perturbscore``
process compile its ~70 modules from source again, about 0.1 s, while numpy's and
pandas' caches came compiled with their wheels: a cost no user's installed copy pays.
:func:`as_users_run` clears the setting for the child processes and compiles the
package once, before anything is timed.  It also gives every child process one OpenBLAS
thread, as the ``perturbscore`` console script gives itself
(:func:`perturbscore.cli_common.single_threaded_blas`), so that the floors a benchmark
compares against (a bare numpy process, a plain pyarrow script, the old pipeline) do
not pay for the spinning thread pool perturbscore is spared.
"""

from __future__ import annotations

import os


def as_users_run() -> None:
    """Let child processes use and write bytecode caches, and run one OpenBLAS thread;
    compile perturbscore's caches now."""
    # Imported here: bench_run's bare process imports this module and must stay bare.
    import compileall
    import importlib.util

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    spec = importlib.util.find_spec("perturbscore")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(folder, quiet=1)
