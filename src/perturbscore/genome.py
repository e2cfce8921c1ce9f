"""Reference genomes: indexed FASTA (plain or bgzipped), chromosome names, one-hot windows.

Sequences are read through ``pyfaidx`` (installed with the ``predict`` extra) from an
*existing* index: ``FASTA.fai``, and for a bgzipped FASTA also ``FASTA.gzi``.  Nothing is
ever written next to the user's FASTA: a missing index is a user error that names the
``samtools faidx`` command that builds it.

Coordinates here are 0-based, half-open (``[start, end)``), as in BED; variant tables use
1-based positions and are converted once, in :mod:`perturbscore.windows`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PerturbscoreError
from .extras import require

#: one-hot row per byte: A C G T (either case) -> unit vectors, anything else (N) -> zeros,
#: the convention of enformer-pytorch's ``str_to_one_hot``.
_ONE_HOT = np.zeros((256, 4), dtype=np.float32)
for _i, _b in enumerate(b"ACGT"):
    _ONE_HOT[_b, _i] = 1.0
    _ONE_HOT[_b + 32, _i] = 1.0  # lower case (soft-masked repeats) is the same base

_GZIP_MAGIC = b"\x1f\x8b"


def one_hot(seq: bytes) -> np.ndarray:
    """One-hot encode a sequence: ``(L, 4)`` float32, columns A C G T; N -> all zeros."""
    return _ONE_HOT[np.frombuffer(seq, dtype=np.uint8)]


def chromosome_aliases(name: str) -> list[str]:
    """Names a chromosome may carry in another naming scheme (``1`` <-> ``chr1``, M <-> MT)."""
    base = name[3:] if name.lower().startswith("chr") else name
    out = [name, base, f"chr{base}"]
    if base.upper() in {"M", "MT"}:
        out += ["MT", "M", "chrM", "chrMT"]
    return list(dict.fromkeys(out))


class Genome:
    """An indexed FASTA opened read-only.

    Parameters
    ----------
    path : str or Path
        FASTA file, plain or bgzipped (``bgzip``), with ``PATH.fai`` (and ``PATH.gzi`` when
        bgzipped) beside it.

    Raises
    ------
    PerturbscoreError
        Missing file or index (the message gives the ``samtools faidx`` command), a gzip
        file that is not bgzip, or the ``predict`` extra not installed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise PerturbscoreError(f"{self.path}: genome FASTA not found. Check the path.")
        with open(self.path, "rb") as fh:
            self.compressed = fh.read(2) == _GZIP_MAGIC
        fai = Path(f"{self.path}.fai")
        gzi = Path(f"{self.path}.gzi")
        if not fai.is_file() or (self.compressed and not gzi.is_file()):
            missing = fai if not fai.is_file() else gzi
            raise PerturbscoreError(
                f"{self.path}: the FASTA index {missing.name} is missing; build it with "
                f"'samtools faidx {self.path}' (perturbscore never writes next to your genome)."
            )
        if self.compressed:
            require("Bio", f"reading the bgzipped FASTA {self.path}", extra="predict")
        pyfaidx = require("pyfaidx", f"reading the genome {self.path}", extra="predict")
        try:
            self._fa = pyfaidx.Faidx(
                str(self.path),
                indexname=str(fai),
                gzi_indexname=str(gzi) if self.compressed else None,
                build_index=False,
                rebuild=False,
                as_raw=True,
                one_based_attributes=False,
                sequence_always_upper=True,
            )
        except Exception as exc:  # pyfaidx raises several types for damaged files
            raise PerturbscoreError(
                f"{self.path}: cannot open the FASTA with its index ({exc}); a gzip file must "
                f"be compressed with 'bgzip' and indexed with 'samtools faidx {self.path}'."
            ) from exc
        self.lengths: dict[str, int] = {k: int(v.rlen) for k, v in self._fa.index.items()}

    def resolve(self, name: str) -> str | None:
        """The genome's name for chromosome ``name`` (``1`` finds ``chr1``), or None."""
        for alias in chromosome_aliases(name):
            if alias in self.lengths:
                return alias
        return None

    def fetch(self, chrom: str, start: int, end: int) -> tuple[bytes, int]:
        """Bases ``[start, end)`` (0-based) of ``chrom``, upper case, padded with N.

        Returns
        -------
        (bytes, int)
            The ``end - start`` bases, and how many of them are padding (window past a
            chromosome end).
        """
        length = self.lengths[chrom]
        lo, hi = max(start, 0), min(end, length)
        body = b""
        left = end - start  # a window wholly off the chromosome is all padding
        if hi > lo:
            got = self._fa.fetch(chrom, lo + 1, hi)  # pyfaidx.fetch is 1-based, closed
            body = str(got).upper().encode("ascii")
            left = lo - start
        right = (end - start) - left - len(body)
        return b"N" * left + body + b"N" * right, left + right

    def close(self) -> None:
        """Close the FASTA file."""
        self._fa.close()
