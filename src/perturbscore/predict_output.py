"""The files ``perturbscore predict`` publishes: names, the Zarr store, tables, the run file.

Two layouts of the arrays, both read by ``perturbscore run``:

* ``npy`` (default): ``ref.npy`` and ``alt.npy``, the partial files of the run renamed
  into place;
* ``zarr``: one store ``predictions.zarr`` holding the arrays ``ref`` and ``alt``
  (Zarr format 3, chunked along variants only, dimension names ``variant``, ``bin``,
  ``track``), named in the run file as ``predictions.zarr::ref`` / ``::alt``.

Either way the predictions grow in the same preallocated partial ``.npy`` files with the
same resume log (:mod:`perturbscore.predict_store`): rows are written in window order,
not row order, and a compressed chunk cannot be rewritten piecewise.  The Zarr store is
built from them once every batch is done, chunk by chunk (memory: one chunk of rows),
under a temporary name that the journalled commit renames into place.  A run killed
while building it leaves only that temporary folder, which the next command sweeps;
``--resume`` then builds it again from the verified partials.
"""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PerturbscoreError
from .extras import require
from .geometry import ENFORMER, Geometry, class_labels
from .targets_file import TARGET_COLUMNS
from .windows import Plan, Variants

if TYPE_CHECKING:
    from .predict import PredictOptions

#: Output files of the ``npy`` layout, in the order stdout lists them.
OUTPUTS = {
    "ref": "ref.npy",
    "alt": "alt.npy",
    "variants": "variants.csv",
    "targets": "targets.txt",
    "run": "predict.toml",
    "manifest": "predict_manifest.json",
}
ZARR_STORE = "predictions.zarr"
#: Output files of the ``zarr`` layout: one store instead of the two ``.npy`` files.
ZARR_OUTPUTS = {"predictions": ZARR_STORE,
                **{k: v for k, v in OUTPUTS.items() if k not in ("ref", "alt")}}
FORMATS = ("npy", "zarr")
#: Uncompressed bytes of one Zarr chunk aimed at when the chunk rows are not given.
CHUNK_BYTES = 8 << 20


def output_names(fmt: str) -> dict[str, str]:
    """The files of one layout (``npy`` or ``zarr``), keyed by role."""
    if fmt not in FORMATS:
        raise PerturbscoreError(f"--format {fmt}: use npy or zarr.")
    return OUTPUTS if fmt == "npy" else ZARR_OUTPUTS


def array_paths(fmt: str) -> tuple[str, str]:
    """REF and ALT as the written run file names them (relative to it)."""
    if fmt == "npy":
        return OUTPUTS["ref"], OUTPUTS["alt"]
    return f"{ZARR_STORE}::ref", f"{ZARR_STORE}::alt"


def chunk_rows(shape: tuple[int, int, int], dtype: str, rows: int | None) -> int:
    """Variants per Zarr chunk: ``rows`` (capped at N), or about :data:`CHUNK_BYTES`."""
    n, b, t = shape
    if rows is None:
        rows = max(1, CHUNK_BYTES // max(1, b * t * np.dtype(dtype).itemsize))
    return max(1, min(rows, n))


def check_zarr_options(fmt: str, rows: int | None) -> None:
    """Validate the Zarr options before any work (and that zarr is installed)."""
    output_names(fmt)
    if rows is not None and rows < 1:
        raise PerturbscoreError(f"--zarr-chunk-rows {rows} must be at least 1.")
    if fmt == "zarr":
        require("zarr", "--format zarr", extra="stores")


def write_zarr(parts: dict[str, Path], dest: Path, shape: tuple[int, int, int], dtype: str,
               rows: int | None, attributes: dict[str, Any]) -> None:
    """Copy the finished partial ``.npy`` files into a new Zarr store ``dest``.

    Parameters
    ----------
    parts : dict
        ``{"ref": path, "alt": path}``: the ``(N, B, T)`` partial files.  # N B T
    dest : Path
        The store to create (a temporary name; it must not exist).
    rows : int, optional
        Variants per chunk (:func:`chunk_rows`); the chunk size never changes the data.
    attributes : dict
        Stored as the group's attributes (provenance).
    """
    zarr = require("zarr", "--format zarr", extra="stores")
    step = chunk_rows(shape, dtype, rows)
    root = zarr.open_group(store=str(dest), mode="w-", zarr_format=3)
    root.attrs.update(attributes)
    for name, src in parts.items():
        data = np.load(src, mmap_mode="r")  # N B T, read one chunk of rows at a time
        arr = root.create_array(name, shape=shape, dtype=dtype, chunks=(step, *shape[1:]),
                                dimension_names=("variant", "bin", "track"))
        for a in range(0, shape[0], step):  # chunk-aligned: each chunk written once
            arr[a: a + step] = np.asarray(data[a: a + step])
        del data  # unmaps the file


def geometry_toml(geo: Geometry) -> str:
    """The ``[geometry]`` section that names ``geo`` in a run file."""
    if geo.window == ENFORMER.window and geo.name == "enformer":
        extra = "" if geo.centre_bin == ENFORMER.centre_bin else f"centre_bin = {geo.centre_bin}\n"
        return f'[geometry]\nmodel = "enformer"\n{extra}'
    return (f'[geometry]\nmodel = "custom"\nwindow = {geo.window}\ninput = {geo.input}\n'
            f"bins = {geo.bins}\nbin_size = {geo.bin_size}\ncentre_bin = {geo.centre_bin}\n")


def write_tables(v: Variants, plan: Plan, padded: np.ndarray, chosen: Any,
                 tmp: dict[str, Path], geo: Geometry, *, all_bins: bool, group: str,
                 fmt: str) -> None:
    """Write the variant table, the track table and the run file under their ``tmp`` names."""
    table = v.table.copy()
    start1 = plan.start + 1  # 1-based, like the study's enformer_start
    table["predict_chrom"] = [plan.windows[w][0] for w in plan.window]
    table["predict_window_start"] = start1.astype(str)
    table["predict_window_end"] = (start1 + geo.window).astype(str)  # exclusive
    table["predict_centre"] = (start1 + geo.centre_offset).astype(str)
    table["predict_variant_pos_in_window"] = plan.offset.astype(str)  # = pos - window_start
    table["predict_class"] = class_labels(plan.cls)
    table["predict_padded_bases"] = padded.astype(str)
    table.to_csv(tmp["variants"], index=False)
    t = chosen[TARGET_COLUMNS].copy()
    t["index"] = range(len(t))  # the kept tracks are columns 0..T-1 of the arrays
    t.to_csv(tmp["targets"], sep="\t", index=False)
    # an odd number of kept bins has a middle bin; all 896 bins need the centre named
    centre_line = f"center_bin = {geo.centre_bin}\n" if all_bins else ""
    ref, alt = array_paths(fmt)
    tmp["run"].write_text(
        "# Written by perturbscore predict: scores the predictions beside it.\n"
        "#   perturbscore run predict.toml --out results\n"
        f'targets = "{OUTPUTS["targets"]}"\n\n[scores]\naggregations = ["ave", "tss"]\n'
        f'statistics = ["abs_diff"]\n{centre_line}\n[output]\nformat = "parquet"\n'
        'name = "{group}_diff_{aggregation}"\nid_columns = "all"\n\n'
        f"{geometry_toml(geo)}\n[variants]\n"
        '# 0-based offset of the variant in its window (= position - predict_window_start)\n'
        'position = "predict_variant_pos_in_window"\n\n[[groups]]\n'
        f'name = "{group}"\nbatches = [\n  {{ ref = "{ref}", alt = '
        f'"{alt}", variants = "{OUTPUTS["variants"]}" }},\n]\n',
        encoding="utf-8",
    )


def summarise(plan: Plan, padded: np.ndarray, jobs: Sized, v: Variants,
              opts: PredictOptions, geo: Geometry, bins: np.ndarray, centre: int,
              replayed: int) -> dict[str, Any]:
    """The manifest's counts, geometry and options (``jobs``: the forward passes)."""
    strands = 2 if opts.reverse_complement else 1
    padded_windows = len({plan.window[i] for i in np.flatnonzero(padded)})
    classes = class_labels(plan.cls)
    return {
        "variants": plan.n_variants,
        "windows": len(plan.windows),
        "padded_windows": padded_windows,
        "padding": "windows past a chromosome end are filled with N (one-hot all zeros)",
        "geometry": {
            **geo.describe(), "kept_bins": bins.tolist(),
            "window_rule": (
                f"window_start = centre - {geo.centre_offset} (1-based; the centre is the "
                "variant, or --centre-column); the model is fed the bases at offsets "
                f"[{geo.input_start}, {geo.input_start + geo.input}); the centre base falls "
                f"in bin {centre} of {geo.bins}"
                + (" (Enformer: window_start = TSS - 196,608, the study's enformer_start)"
                   if geo.window == ENFORMER.window else "")),
        },
        "classes": {c: int((classes == c).sum()) for c in ("outside_input", "input_only",
                                                            "output")},
        "forward_passes": len(jobs) * strands,
        "forward_passes_naive": 2 * plan.n_variants * strands,
        "ref_cache": opts.ref_cache,
        "out_of_field": int((~plan.in_field).sum()),
        "out_of_field_skipped": int((~plan.in_field).sum()) if opts.skip_out_of_field else 0,
        "out_of_field_rule": ("class outside_input (no base in the input the model reads): "
                              "ALT row := REF row by construction"),
        "ref_mismatches_skipped": v.ref_mismatches,
        "reverse_complement": opts.reverse_complement,
        "device": opts.device, "precision": opts.precision, "dtype": opts.dtype,
        "batch_size": opts.batch_size, "resumed_batches": replayed,
    }
