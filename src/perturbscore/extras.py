"""Optional dependencies: import them lazily and fail as a user error when missing.

Heavy pieces (scipy, matplotlib, h5py, zarr, xarray, dask, torch) live in extras so that
``perturbscore --help`` stays instant and a base install stays small.  Every place that
needs one calls :func:`require`, so a missing extra always ends in exit code 2 with the
``pip install`` line that fixes it, never in a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PerturbscoreError

#: Which extra provides each optional top-level module.
EXTRA_OF = {
    "scipy": "compare",
    "matplotlib": "compare",
    "h5py": "stores",
    "zarr": "stores",
    "xarray": "stores",
    "dask": "dask",
    "distributed": "dask",
    "torch": "predict",
    "enformer_pytorch": "predict",
}


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise a :class:`PerturbscoreError` naming the extra to install.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"dask.array"``.
    purpose : str
        What needs it, for the message (``"--zarr"``, ``"reading HDF5"``).
    extra : str, optional
        The extra that provides it; default from :data:`EXTRA_OF` by top-level name.

    Returns
    -------
    ModuleType
        The imported module.
    """
    top = module.split(".")[0]
    name = extra or EXTRA_OF.get(top, top)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PerturbscoreError(
            f"{purpose} needs the Python package {top!r}, which is not installed "
            f"({exc}); install it with: pip install 'perturbscore[{name}]'"
        ) from exc
