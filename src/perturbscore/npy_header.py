"""The ``.npy`` header of a prediction array: parsed and checked before any row is read.

Shared by plain ``.npy`` files (:mod:`.readers`) and the members of zip/npz archives
(:mod:`.archives`): the layout must be C-ordered ``(N, B, T)`` of a floating dtype, in
either byte order (big-endian blocks are byte-swapped once read).
"""

from __future__ import annotations

from typing import IO, Any

import numpy as np

from .errors import PerturbscoreError

#: Floating dtypes accepted for predictions.
ALLOWED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def parse_npy_header(fp: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """Read the ``.npy`` magic and header from ``fp``; return shape, dtype, fortran_order."""
    try:
        version = np.lib.format.read_magic(fp)
    except (ValueError, OSError, EOFError) as exc:
        raise PerturbscoreError(
            f"{where}: not a .npy array (it does not start with the .npy magic bytes). Save "
            "predictions with numpy.save()."
        ) from exc
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            # Version 3.0 differs only in allowing a UTF-8 header; numpy exposes no
            # public reader for it.
            shape, fortran, dtype = np.lib.format._read_array_header(fp, version)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds
        # numpy's messages quote the raw header bytes: no use to a person.
        raise PerturbscoreError(
            f"{where}: the .npy header (shape and dtype) is damaged and cannot be read; the "
            "file is corrupt or was cut short. Save or download it again."
        ) from exc
    return tuple(shape), np.dtype(dtype), bool(fortran)


def validate_layout(
    where: str, shape: tuple[int, ...], dtype: np.dtype[Any], fortran: bool
) -> tuple[int, int, int]:
    # Either byte order: readers convert big-endian (``>f4``) rows as they read them.
    if dtype.newbyteorder("=") not in ALLOWED_DTYPES:
        raise PerturbscoreError(
            f"{where}: dtype {dtype} is not a float16/float32/float64 prediction array. "
            "Convert it with arr.astype('float32') before saving."
        )
    if len(shape) != 3:
        raise PerturbscoreError(
            f"{where}: shape {shape} has {len(shape)} axes; predictions must be "
            "(variants, bins, tracks). Add a bins axis with arr[:, None, :] if you saved one bin."
        )
    if fortran:
        raise PerturbscoreError(
            f"{where}: array is stored in Fortran order, which cannot be streamed by rows. "
            "Re-save it with numpy.save(path, numpy.ascontiguousarray(arr))."
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def native_dtype(dtype: np.dtype[Any]) -> tuple[np.dtype[Any], bool]:
    """The native-byte-order form of ``dtype``, and whether stored bytes need swapping."""
    return dtype.newbyteorder("="), not dtype.isnative
