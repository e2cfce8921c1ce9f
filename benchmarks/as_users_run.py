"""Make the processes a benchmark starts run Python as users do: with bytecode caches.

Python writes ``__pycache__/*.pyc`` on first import and reuses them.  A shell that sets
``PYTHONDONTWRITEBYTECODE`` (this project's sandbox does) makes every ``perturbscore``
process compile its ~70 modules from source again, about 0.1 s, while numpy's and
pandas' caches came compiled with their wheels: a cost no user's installed copy pays.
:func:`as_users_run` clears the setting for the child processes and compiles the
package once, before anything is timed.
"""

from __future__ import annotations

import os


def as_users_run() -> None:
    """Let child processes use and write bytecode caches; compile perturbscore's now."""
    # Imported here: bench_run's bare process imports this module and must stay bare.
    import compileall
    import importlib.util

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    spec = importlib.util.find_spec("perturbscore")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(folder, quiet=1)
