"""What the model could see: window geometry and each variant's receptive-field class.

Position convention (stated once, used everywhere in perturbscore)
    A variant's **offset** is its 0-based position inside the model's input window,
    counted from the window's first base: ``offset = position - window_start`` with both
    numbers in the same coordinate system (both 1-based, as in the study's tables, or
    both 0-based).  The first base of the window has offset 0, the last ``window - 1``.
    The **window centre** is the base at offset ``window // 2`` (the first base of the
    right half) in the default, *448-centred* convention, or at offset
    ``window // 2 - 1`` (the last base of the left half) in the *447-centred* one; the
    **distance** of a variant is ``offset - centre`` (negative: left of the centre).

    The two conventions exist because a window of even length has no middle base.  A
    tool that builds the window as ``start = centre - window // 2`` (kipoiseq's
    ``Interval.resize``, the study's ``enformer_start = TSS - 196,608``) puts the centre
    base at offset ``window // 2``; with Enformer's 896 output bins of 128 bp it falls in
    bin 448, so that tool's "TSS bin" is 448.  A tool that writes a 0-based window start
    against 1-based positions (or ``start = centre - window // 2 + 1``) puts it one base
    to the left, at offset ``window // 2 - 1``, in bin 447.  The model itself does not
    care: which bases it reads and which bin covers which base are fixed by the offset,
    so the *class* and the *bin* of a variant depend on its offset only, while its
    distance to "the centre" (and an offset computed from a window-centre column)
    depend on the convention.

Geometry of a model
    ``window``   bp of sequence the user gives the model (its input length);
    ``input``    bp the model actually reads: the central part of the window it keeps
                 (Enformer crops 393,216 bp to 196,608 bp before its first layer);
    ``bins`` x ``bin_size``  the output window, centred in the window.

Classes (one ``int8`` per variant)
    ``0`` ``outside_input``  outside the bases the model reads: REF and ALT predictions
                             are bitwise identical and every score is exactly 0, which
                             means "not measured", not "no effect";
    ``1`` ``input_only``     read by the model but outside the output window: it changes
                             the predictions through the model's long-range layers;
    ``2`` ``output``         inside the output window; :func:`place` also gives its bin.

For Enformer, 448-centred: class 2 for ``-57,344 <= distance <= 57,343``, class 1
for ``-98,304 <= distance <= 98,303`` otherwise, class 0 beyond.  447-centred, both
ends move up by one: ``-57,343 <= distance <= 57,344`` and ``-98,303 <= ... <= 98,304``.

The run file's ``[geometry]``/``[variants]`` settings, placing whole variant tables and
counting their classes are in :mod:`.geometry_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import OUT_OF_FIELD
from .errors import PerturbscoreError

OUTSIDE_INPUT, INPUT_ONLY, OUTPUT = 0, 1, 2
#: String labels of the classes, indexed by class number.
CLASS_LABELS: tuple[str, str, str] = ("outside_input", "input_only", "output")
#: One sentence for manifests and README: the convention above.
POSITION_CONVENTION = (
    "offset = position - window_start, 0-based from the window's first base (position and "
    "window_start in the same coordinate system); window centre at offset window//2 "
    "(448-centred) or window//2 - 1 (447-centred); distance = offset - centre"
)


@dataclass(frozen=True)
class Geometry:
    """The window a model reads and the window it predicts.

    Attributes
    ----------
    name : str
        ``enformer``, ``borzoi`` or ``custom``.
    window : int
        Input length in bp (what the user supplies).
    input : int
        Central bp the model reads (``<= window``).
    bins, bin_size : int
        Output bins and their width in bp; the output window (``bins * bin_size`` bp) is
        centred in the window.
    centre_bin : int
        The convention (see the module docstring): the output bin that holds the
        window's centre base; ``bins // 2`` or ``bins // 2 - 1`` for an even number of
        bins (448 or 447 for Enformer), ``bins // 2`` for an odd one.
    source : str
        Where the numbers come from.
    """

    name: str
    window: int
    input: int
    bins: int
    bin_size: int
    centre_bin: int
    source: str = ""

    def __post_init__(self) -> None:
        where = f"geometry {self.name!r}"
        for key in ("window", "input", "bins", "bin_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PerturbscoreError(f"{where}: {key} must be a positive integer, not {value}.")
        if self.input > self.window:
            raise PerturbscoreError(
                f"{where}: input ({self.input} bp) is longer than the window ({self.window} bp)."
            )
        if self.output_bp > self.input:
            raise PerturbscoreError(
                f"{where}: the output window ({self.bins} x {self.bin_size} = {self.output_bp} "
                f"bp) is longer than the input the model reads ({self.input} bp)."
            )
        # Centred crops need the same parity as the window, or "centred" is ambiguous.
        if (self.window - self.input) % 2 or (self.window - self.output_bp) % 2:
            raise PerturbscoreError(
                f"{where}: window ({self.window}), input ({self.input}) and output "
                f"({self.output_bp}) lengths must all be even or all odd to be centred."
            )
        allowed = centre_bins(self.bins)
        if self.centre_bin not in allowed:
            raise PerturbscoreError(
                f"{where}: centre_bin {self.centre_bin} is not a centre of {self.bins} bins; "
                f"use {' or '.join(str(b) for b in allowed)}."
            )
        if self.bins % 2 == 0 and self.window % 2 and self.centre_bin == self.bins // 2 - 1:
            raise PerturbscoreError(
                f"{where}: an odd window has a middle base; use centre_bin {self.bins // 2}."
            )

    @property
    def output_bp(self) -> int:
        """Length of the output window in bp."""
        return self.bins * self.bin_size

    @property
    def input_start(self) -> int:
        """Offset of the first base the model reads."""
        return (self.window - self.input) // 2

    @property
    def output_start(self) -> int:
        """Offset of the first base of output bin 0."""
        return (self.window - self.output_bp) // 2

    @property
    def centre_offset(self) -> int:
        """Offset of the window's centre base under this geometry's convention."""
        return self.window // 2 - (self.bins // 2 - self.centre_bin)

    def with_centre_bin(self, centre_bin: int) -> Geometry:
        """The same geometry under the other centre convention."""
        return Geometry(
            self.name, self.window, self.input, self.bins, self.bin_size, centre_bin, self.source
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for the run manifest (key ``geometry``)."""
        return {
            "model": self.name,
            "window_bp": self.window,
            "input_bp": self.input,
            "output_bins": self.bins,
            "bin_bp": self.bin_size,
            "output_bp": self.output_bp,
            "centre_bin": self.centre_bin,
            "centre_offset": self.centre_offset,
            "input_offsets": [self.input_start, self.input_start + self.input],
            "output_offsets": [self.output_start, self.output_start + self.output_bp],
            "position_convention": POSITION_CONVENTION,
            "source": self.source,
        }


def centre_bins(bins: int) -> tuple[int, ...]:
    """The bins that can hold the window centre: two for an even count, one for odd."""
    return (bins // 2 - 1, bins // 2) if bins % 2 == 0 else (bins // 2,)


ENFORMER = Geometry(
    "enformer",
    window=393_216,
    input=196_608,
    bins=896,
    bin_size=128,
    centre_bin=448,
    source=(
        "Avsec et al. 2021, Nat Methods 18:1196 (Enformer): 196,608-bp input, 896 output "
        "bins of 128 bp (114,688 bp); the released TF-Hub/PyTorch model takes 393,216 bp "
        "and crops it to the central 196,608 bp"
    ),
)
BORZOI = Geometry(
    "borzoi",
    window=524_288,
    input=524_288,
    bins=6_144,
    bin_size=32,
    centre_bin=3_072,
    source=(
        "Linder et al. 2025, Nat Genet 57:949 (Borzoi); github.com/calico/borzoi "
        "examples/params.json: seq_length 524288, 7 poolings by 2 then 2 U-Net upsamplings "
        "(16,384 bins of 32 bp), Cropping1D 5120 bins per side -> 6,144 bins x 32 bp = "
        "196,608 bp; the whole 524,288-bp input is read (no input crop)"
    ),
)
PRESETS: dict[str, Geometry] = {"enformer": ENFORMER, "borzoi": BORZOI}


@dataclass(frozen=True)
class Placement:
    """Per-variant geometry, each array ``# n``.

    Attributes
    ----------
    offset : numpy.ndarray
        int64, 0-based offset in the window.
    cls : numpy.ndarray
        int8 class: 0 outside the input, 1 input only, 2 output.
    distance : numpy.ndarray
        int64, signed distance to the window centre (bp).
    bin : numpy.ndarray
        int32 output bin holding the variant, -1 outside the output window.
    outside_window : numpy.ndarray
        bool, offset outside ``[0, window)`` (class 0 too): a wrong position or window
        column, never a real variant of that window.
    """

    offset: np.ndarray
    cls: np.ndarray
    distance: np.ndarray
    bin: np.ndarray
    outside_window: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """The classes as strings (``outside_input``, ``input_only``, ``output``)."""
        return class_labels(self.cls)


def class_labels(cls: np.ndarray) -> np.ndarray:
    """Map class numbers (``# n``) to their string labels (``# n`` object array)."""
    return np.asarray(CLASS_LABELS, dtype=object)[np.asarray(cls, dtype=np.intp)]


def offsets_from_start(position: np.ndarray, window_start: np.ndarray) -> np.ndarray:
    """Offsets from genomic positions and window starts (same coordinate system), ``# n``."""
    return np.asarray(position, dtype=np.int64) - np.asarray(window_start, dtype=np.int64)


def offsets_from_centre(
    position: np.ndarray, window_centre: np.ndarray, geometry: Geometry
) -> np.ndarray:
    """Offsets from genomic positions and window centres, ``# n``.

    The centre base sits at :attr:`Geometry.centre_offset`, so this is where the
    447/448 convention changes a result: the same centre column gives offsets one base
    apart under the two conventions.
    """
    pos = np.asarray(position, dtype=np.int64)
    return pos - np.asarray(window_centre, dtype=np.int64) + geometry.centre_offset


def place(offset: np.ndarray, geometry: Geometry) -> Placement:
    """Class, distance to the centre and output bin of each offset (``# n`` arrays).

    Parameters
    ----------
    offset : numpy.ndarray
        0-based offsets in the window (see the module docstring), any integer dtype.
    geometry : Geometry

    Returns
    -------
    Placement
    """
    o = np.asarray(offset, dtype=np.int64)
    g = geometry
    in_input = (o >= g.input_start) & (o < g.input_start + g.input)
    rel = o - g.output_start
    in_output = (rel >= 0) & (rel < g.output_bp)
    cls = np.where(in_output, OUTPUT, np.where(in_input, INPUT_ONLY, OUTSIDE_INPUT)).astype(np.int8)
    bins = np.where(in_output, rel // g.bin_size, -1).astype(np.int32)
    outside = (o < 0) | (o >= g.window)
    return Placement(o, cls, o - g.centre_offset, bins, outside)


def class_counts(cls: np.ndarray) -> dict[str, int]:
    """``{label: count}`` over the three classes, every label present."""
    counts = np.bincount(np.asarray(cls, dtype=np.intp), minlength=3)
    return {label: int(c) for label, c in zip(CLASS_LABELS, counts, strict=True)}


#: ``--out-of-field``: keep the exact zeros, write NaN instead, or leave the rows out.
OUT_OF_FIELD_POLICIES = OUT_OF_FIELD


def apply_out_of_field(
    policy: str, scores: np.ndarray, cls: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an out-of-field policy to one block.

    Parameters
    ----------
    policy : {"keep", "na", "drop"}
    scores : numpy.ndarray
        ``# n S`` float64 scores of the block.
    cls : numpy.ndarray
        ``# n`` classes of its rows.

    Returns
    -------
    scores, keep : numpy.ndarray, numpy.ndarray
        The scores (``na``: a copy with NaN on class-0 rows) and ``bool # n``, the rows to
        write (``drop``: all but class 0).
    """
    out = np.asarray(cls) == OUTSIDE_INPUT
    if policy == "keep":
        return scores, np.ones(out.size, bool)
    if policy == "na":
        x = np.array(scores, dtype=np.float64)
        x[out] = np.nan
        return x, np.ones(out.size, bool)
    if policy == "drop":
        return scores, ~out
    raise PerturbscoreError(
        f"--out-of-field must be one of {', '.join(OUT_OF_FIELD_POLICIES)}, not {policy!r}."
    )
