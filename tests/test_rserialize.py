"""The R writer against two independent readers: pyreadr (librdata) and R itself."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyreadr
import pytest

from perturbscore.rserialize import _strsxp, write_rdata, write_rds

VALUES = np.array([0.1, -2.5e-300, 1e300, np.nan, 0.0, 1 / 3])
TEXT = ["T", "F", None, "", "rs123", "Sox2-Δ"]  # T/F stay text; NA; empty; non-ASCII


def _columns() -> list:
    return [("ENCFF093VXI", VALUES), ("x.y", VALUES[::-1].copy()), ("REF", TEXT)]


def test_pyreadr_reads_rds_and_rdata(tmp_path: Path) -> None:
    with open(tmp_path / "a.rds", "wb") as fh:
        write_rds(fh, _columns())
    with open(tmp_path / "a.RData", "wb") as fh:
        write_rdata(fh, "stab_diff_ave", _columns())
    got_rds = pyreadr.read_r(tmp_path / "a.rds")[None]
    got_rdata = pyreadr.read_r(tmp_path / "a.RData")
    assert list(got_rdata) == ["stab_diff_ave"]
    for got in (got_rds, got_rdata["stab_diff_ave"]):
        assert list(got.columns) == ["ENCFF093VXI", "x.y", "REF"]
        np.testing.assert_array_equal(got["ENCFF093VXI"].to_numpy(), VALUES)
        assert [None if v is None or v != v else v for v in got["REF"]] == TEXT


def test_string_vector_bytes_by_hand() -> None:
    # STRSXP(16), n=3; CHARSXP(9) with ASCII level 64<<12, len 1, "T"; NA: 9, -1;
    # UTF-8 level 8<<12, len 2, "Δ".
    want = (
        b"\x00\x00\x00\x10\x00\x00\x00\x03"
        + b"\x00\x04\x00\x09\x00\x00\x00\x01T"
        + b"\x00\x00\x00\x09\xff\xff\xff\xff"
        + b"\x00\x00\x80\x09\x00\x00\x00\x02\xce\x94"
    )
    assert _strsxp(["T", None, "Δ"]) == want
    assert _strsxp([]) == b"\x00\x00\x00\x10\x00\x00\x00\x00"
    # Arrow arrays (how the writers pass ID columns) give the same bytes from their
    # buffers: both offset widths, a sliced array (non-zero offset), chunked arrays.
    for typ in (pa.string(), pa.large_string()):
        assert _strsxp(pa.array(["T", None, "Δ"], typ)) == want
        assert _strsxp(pa.array(["x", "T", None, "Δ"], typ)[1:]) == want
        assert _strsxp(pa.chunked_array([pa.array(["T"], typ), pa.array([None, "Δ"], typ)])) == want
    assert _strsxp(pa.array([], pa.large_string())) == _strsxp([])


def test_empty_table_and_mismatched_columns() -> None:
    fh = io.BytesIO()
    write_rds(fh, [("a", np.zeros(0)), ("b", [])])
    assert fh.getvalue().startswith(b"X\n\x00\x00\x00\x03")
    with pytest.raises(ValueError, match="column 'b' has 1 rows, expected 2"):
        write_rds(io.BytesIO(), [("a", np.zeros(2)), ("b", ["x"])])


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_r_reads_exact_values(tmp_path: Path) -> None:
    with open(tmp_path / "a.rds", "wb") as fh:
        write_rds(fh, _columns())
    with open(tmp_path / "a.RData", "wb") as fh:
        write_rdata(fh, "obj", _columns())
    script = f"""
    x <- readRDS('{tmp_path}/a.rds'); e <- new.env(); load('{tmp_path}/a.RData', envir = e)
    stopifnot(identical(x, e$obj), is.data.frame(x))
    stopifnot(identical(names(x), c('ENCFF093VXI', 'x.y', 'REF')))
    stopifnot(identical(x$ENCFF093VXI, c(0.1, -2.5e-300, 1e300, NaN, 0, 1/3)))
    stopifnot(identical(x$REF, c('T', 'F', NA, '', 'rs123', 'Sox2-\\u0394')))
    stopifnot(identical(rownames(x), as.character(1:6)))
    cat('ok')
    """
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    assert out.stdout == "ok", out.stderr


def test_an_empty_id_column_of_any_dtype_is_an_empty_character_vector(tmp_path: Path) -> None:
    """A group without rows: its ID columns come as empty (float64) pandas columns, which
    pyarrow turns into a chunked array mixing string and large_string chunks."""
    import pandas as pd

    from perturbscore.writers import arrow_text

    mixed = pa.array(pd.Series([], dtype=float), type=pa.large_string(), from_pandas=True)
    assert _strsxp(mixed) == _strsxp([])  # whatever pyarrow hands over
    column = arrow_text(pd.Series([], dtype=float))
    assert column.type == pa.large_string() and len(column) == 0
    with open(tmp_path / "e.rds", "wb") as fh:
        write_rds(fh, [("SYNTH0000", np.zeros(0)), ("rsID", column)])
    got = pyreadr.read_r(tmp_path / "e.rds")[None]
    assert got.shape == (0, 2) and list(got.columns) == ["SYNTH0000", "rsID"]
