"""The R writer against two independent readers: pyreadr (librdata) and R itself."""

from __future__ import annotations

import io
import shutil
import struct
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


def _strsxp_by_hand(values: list[str | None]) -> bytes:
    """R's character vector written item by item (R Internals, CHARSXP): the oracle."""
    out = [struct.pack(">2i", 16, len(values))]
    for v in values:
        if v is None:
            out.append(struct.pack(">2i", 9, -1))
            continue
        raw = v.encode("utf-8")
        level = 64 if raw.isascii() else 8
        out.append(struct.pack(">2i", 9 | (level << 12), len(raw)) + raw)
    return b"".join(out)


def test_character_vectors_match_an_item_by_item_writer() -> None:
    rng = np.random.default_rng(7)
    pieces = ["", "A", "rs1", "ENSG00000099974.7", "Δ", "é", "日本", "\x00", "x" * 300]
    for _ in range(200):
        n = int(rng.integers(0, 40))
        values: list[str | None] = [
            None if rng.random() < 0.1 else "".join(rng.choice(pieces, int(rng.integers(0, 4))))
            for _ in range(n)
        ]
        assert _strsxp(values) == _strsxp_by_hand(values), values


def test_a_groups_tables_serialise_their_id_columns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers sharing a SharedText write the bytes of writers that do not, and each ID
    column is serialised once for all of them."""
    from perturbscore import rserialize
    from perturbscore.frame import Columns
    from perturbscore.rserialize import SharedText
    from perturbscore.writers import open_writer

    calls: list[int] = []
    real = rserialize._strsxp

    def counted(values: object) -> bytes:
        calls.append(1)
        return real(values)

    blocks = [
        (
            np.arange(6.0).reshape(3, 2),
            Columns({"GENE": ["g1", "g2", None], "REF": ["A", "Δ", ""]}),
        ),  # noqa: E501
        (np.ones((1, 2)), Columns({"GENE": ["g4"], "REF": ["T"]})),
    ]
    shared = SharedText()
    for name, text in (("alone", None), ("shared_a", shared), ("shared_b", shared)):
        w = open_writer(
            "rdata", tmp_path / f"{name}.RData", ["T1", "T2"], ["GENE", "REF"], "x",
            expected_rows=4, shared=text,
        )  # fmt: skip
        for scores, ids in blocks:
            w.write(scores, ids)
        monkeypatch.setattr(rserialize, "_strsxp", counted)
        w.commit()
        monkeypatch.setattr(rserialize, "_strsxp", real)
    alone = (tmp_path / "alone.RData").read_bytes()
    assert (tmp_path / "shared_a.RData").read_bytes() == alone
    assert (tmp_path / "shared_b.RData").read_bytes() == alone
    # names and class of each table, and the two ID columns: once alone, once shared
    assert len(calls) == 3 * 2 + 2 + 2
    got = pyreadr.read_r(tmp_path / "shared_b.RData")["x"]
    assert got["REF"].tolist() == ["A", "Δ", "", "T"]
