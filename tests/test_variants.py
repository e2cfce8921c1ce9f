"""Variant tables: the repeated-ID warning is one stable line per file (issue 7)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perturbscore.errors import PerturbscoreError
from perturbscore.variants import (
    check_ids_against_tracks,
    duplicate_report,
    id_columns_of,
    read_variants,
)

IDS = ["GENE", "rsID", "REF", "ALT"]
# Line 1 is the header: rs2 sits on lines 3 and 4 (two ALT alleles), and lines 5 and 7
# repeat every ID column.
CSV = "GENE,rsID,REF,ALT\nG1,rs1,A,C\nG1,rs2,A,G\nG1,rs2,A,T\nG2,rs3,C,T\nG2,rs4,G,A\nG2,rs3,C,T\n"


def test_one_line_per_file_with_ids_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text(CSV)
    notes = duplicate_report(read_variants(path), IDS, str(path))
    assert notes == [
        f"{path}: 4 rows share an rsID with another row (2 rsIDs, e.g. rs2 on lines 3 and 4: "
        "multi-allelic sites or several genes per variant); 2 rows repeat all ID columns "
        "(GENE, rsID, REF, ALT), e.g. GENE G2, rsID rs3, REF C, ALT T on lines 5 and 7, so "
        "they cannot be told apart by ID; all rows are kept."
    ]
    assert "\n" not in notes[0]


def test_the_same_file_gives_the_same_line(tmp_path: Path) -> None:
    # A pipeline that reads one variant table for 16 batches can report it once.
    path = tmp_path / "v.csv"
    path.write_text(CSV)
    notes = [n for _ in range(16) for n in duplicate_report(read_variants(path), IDS, str(path))]
    assert len(notes) == 16 and len(dict.fromkeys(notes)) == 1


def test_parquet_rows_and_quiet_tables(tmp_path: Path) -> None:
    path = tmp_path / "v.parquet"
    pd.read_csv(io.StringIO(CSV), dtype=str).to_parquet(path)
    (note,) = duplicate_report(read_variants(path), ["rsID"], str(path))
    # With rsID as the only ID column the two clauses would say the same: said once.
    assert note == (
        f"{path}: 4 rows repeat all ID columns (rsID), e.g. rsID rs2 on rows 2 and 3, so they "
        "cannot be told apart by ID; all rows are kept."
    )
    clean = pd.DataFrame({"GENE": ["a", "b"], "rsID": ["rs1", "rs2"]})
    assert duplicate_report(clean, ["GENE", "rsID"], "x.csv") == []


def test_messages_name_columns_for_people(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text(CSV)
    with pytest.raises(PerturbscoreError) as err:
        read_variants(path, ["GENE", "Gene name"])
    assert str(err.value) == (
        f'{path}: ID columns "Gene name" are not in the variant table (its columns: "GENE", '
        '"rsID", "REF", "ALT"); choose others with id_columns, or id_columns = "all".'
    )
    with pytest.raises(PerturbscoreError, match='not "some"'):
        id_columns_of(read_variants(path), "some", str(path))
    (tmp_path / "v.xlsx").write_text("x")
    with pytest.raises(PerturbscoreError, match=r'unknown variant table format "\.xlsx"'):
        read_variants(tmp_path / "v.xlsx")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # pandas made "a" and "b" an index and shifted every ID; with usecols it said nothing.
        ("GENE,rsID\na,b,c,d\ne,f\n", "line 2: 4 fields, but the header has 2"),
        ("GENE,rsID\na,b\ne,f,g\n", "line 3: 3 fields, but the header has 2"),
        ("GENE,rsID\na\ne,f\n", "line 2: 1 field, but the header has 2"),
        ("GENE,rsID,GENE\na,b,c\n", 'line 1: the header names the column "GENE" more than once'),
        ("", "the variant table is empty"),
    ],
)
def test_ragged_rows_are_refused_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "v.csv"
    path.write_text(text)
    for columns in (None, ["GENE"]):
        with pytest.raises(PerturbscoreError, match=message):
            read_variants(path, columns)


def test_quoted_separators_and_blank_lines_at_the_end_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text('GENE,rsID\n"a,x",b\n"multi\nline",c\ne,f\n\n\r\n')
    assert read_variants(path).values.tolist() == [["a,x", "b"], ["multi\nline", "c"], ["e", "f"]]


TRICKY = [
    # quotes, separators and line breaks inside values, CRLF, text that looks like
    # numbers, booleans or missing values, an empty field, trailing blank lines
    b'GENE,rsID,REF,ALT\r\n"a,x",01,T,F\r\n"two\nlines",NA,"say ""hi""",\r\n'
    b"G3, rs3 ,nan,1e5\r\n\r\n",
    b"\xef\xbb\xbfGENE,rsID,REF,ALT\nG1,rs1,A,C\n",  # a byte order mark (Excel)
    b"GENE,,REF,ALT\nG1,rs1,A,C\nG2,rs2,G,T",  # a column with no name; no final newline
    b"GENE,rsID,REF,ALT\n",  # a header and no rows
]


@pytest.mark.parametrize("data", TRICKY)
@pytest.mark.parametrize("columns", [None, ["ALT", "GENE"], ["REF"], []])
def test_text_tables_read_as_pandas_reads_them(
    tmp_path: Path, data: bytes, columns: list[str] | None
) -> None:
    """One csv-module pass checks and keeps the values: the frame is pandas.read_csv's."""
    path = tmp_path / "v.csv"
    path.write_bytes(data)
    header = list(pd.read_csv(path, nrows=0).columns)
    usecols = None if columns is None else [c for c in columns if c in header]
    expected = pd.read_csv(
        path, dtype=str, keep_default_na=False, na_filter=False, usecols=usecols
    )
    got = read_variants(path, usecols)
    pd.testing.assert_frame_equal(got, expected, check_index_type=False)
    assert got.attrs["header"] == header


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        # pandas skipped the blank line: every later row moved up against the predictions.
        ("v.csv", b"GENE,rsID\na,b\n\ne,f\n", "line 3 is blank, but rows follow it"),
        ("v.tsv", b"GENE\trsID\na\tb\r\n\r\ne\tf\n", "line 3 is blank, but rows follow it"),
        (
            "v.csv",
            b'GENE,rsID\na,b\n"c,d\ne,f\ng,h\n',
            r"line 3: a quote \(\"\) opened on line 3 is not closed, so lines 3 to 5 were read",
        ),
        ("v.csv", b'GENE,rsID\na,b\n"c,d\n', r"line 3: a quote .* is not closed; close the"),
        # ... on the last line, with no line break after it to swallow
        ("v.csv", b'GENE,rsID\na,b\nc,"d', r"line 3: a quote .* opened on line 3 is not closed;"),
        ("v.csv", b'GENE,"rsID', r"line 1: a quote .* opened on line 1 is not closed;"),
        ("v.csv", b"\nGENE,rsID\na,b\n", "line 1 is blank; the first line must be the header"),
        # a stray quote the csv module reads as a character, pandas as an open quote
        (
            "v.csv",
            b"GENE,rsID,ALT\n\"\"',x,\"\n",
            r"can be read two ways at its quotes: its quotes .* quote each such value whole",
        ),
        ("v.csv", b"GENE,rsID\na,b\nc\xe9,d\n", r"not UTF-8 text \(byte 0xe9 on line 3 is"),
        ("v.csv", b"GENE\trsID\na\tb\n", "line 1 has no comma but holds tabs"),
        ("v.tsv", b"GENE,rsID\na,b\n", "line 1 has no tab but holds commas .*rename it v.csv"),
        ("v.csv", b"GENE;rsID\na;b\n", "looks semicolon-separated"),
    ],
)
def test_misread_text_is_named(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for columns in (None, ["GENE"]):
        with pytest.raises(PerturbscoreError, match=message):
            read_variants(path, columns)


def test_a_ragged_variant_table_stops_the_run(study: Path, tmp_path: Path, cli) -> None:
    path = study / "top_snps_strand_final_variants.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[7] = lines[7].replace(",", ",,", 1)
    path.write_text("".join(lines))
    r = cli("run", study / "stablefm.toml", "--out", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "top_snps_strand_final_variants.csv: line 8: 14 fields, but the header has 13" in (
        r.stderr
    )
    assert not (tmp_path / "out").exists()


def test_id_columns_named_like_tracks() -> None:
    check_ids_against_tracks(["GENE", "rsID"], ["T1", "T2"], "run.toml", ["GENE", "rsID"])
    with pytest.raises(PerturbscoreError) as err:
        check_ids_against_tracks(["GENE", "T2"], ["T1", "T2"], "run.toml", ["GENE", "T2"])
    assert str(err.value) == (
        'run.toml [output] id_columns: the ID column "T2" is also the identifier of a selected '
        "track, and a table cannot hold two columns of one name; leave it out of id_columns, "
        "or rename it in the variant table, or leave the track out of [tracks]."
    )
    with pytest.raises(PerturbscoreError, match=r'"all" keeps the variant table\'s columns "T1", '):
        check_ids_against_tracks(["T1", "GENE", "T2"], ["T1", "T2"], "run.toml", "all")


_TOKENS = ["a", "b", " ", "1", "0", "NA", "'", "\\", "#", "é", '"', '""', "nan", ",", "\n", "\r\n"]


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(
    rows=st.lists(
        st.lists(st.lists(st.sampled_from(_TOKENS), max_size=4).map("".join), min_size=3,
                 max_size=3),
        max_size=4,
    ),
    quoted=st.lists(st.booleans(), min_size=12, max_size=12),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    last=st.booleans(),
)  # fmt: skip
def test_a_table_is_read_as_pandas_reads_it_or_refused(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[list[str]],
    quoted: list[bool],
    eol: str,
    last: bool,
) -> None:
    """Generated tables with quotes, separators and line breaks in values: read_variants
    gives pandas.read_csv's frame, or refuses the table with a sentence."""
    flat = iter(quoted)
    lines = ["A,B,C"] + [
        ",".join('"' + v.replace('"', '""') + '"' if next(flat) else v for v in row)
        for row in rows
    ]
    path = tmp_path_factory.mktemp("fuzz") / "v.csv"
    path.write_bytes((eol.join(lines) + (eol if last else "")).encode())
    try:
        got = read_variants(path)
    except PerturbscoreError:
        return
    expected = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    pd.testing.assert_frame_equal(got, expected, check_index_type=False)


def test_a_long_allele_is_read_as_pandas_reads_it(tmp_path: Path) -> None:
    """A field longer than the csv module's default limit (131,072 characters)."""
    allele = "ACGT" * 50_000  # 200,000 bases: a long deletion written out
    path = tmp_path / "v.csv"
    path.write_text(f"GENE,rsID,REF,ALT\nG1,rs1,{allele},A\nG2,rs2,C,{allele}\n")
    expected = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    pd.testing.assert_frame_equal(read_variants(path), expected, check_index_type=False)


@pytest.mark.parametrize("quoted", [False, True])
def test_a_nameless_column_beside_its_stand_in_name_is_refused(
    tmp_path: Path, quoted: bool
) -> None:
    """``a,,Unnamed: 1``: both columns would be called "Unnamed: 1" (quotes or not)."""
    path = tmp_path / "v.csv"
    row = '"x",y,z' if quoted else "x,y,z"
    path.write_text(f"GENE,,Unnamed: 1\n{row}\n")
    for columns in (None, ["GENE"]):
        with pytest.raises(
            PerturbscoreError,
            match=r'line 1: column 2 has no name, and column 3 is named "Unnamed: 1"',
        ):
            read_variants(path, columns)


_PLAIN = ["a", "", " ", "1", "NA", "é", "#", "\\", "nan", "x y", ";", "\t", "\x00"]


@settings(max_examples=800, deadline=None, derandomize=True)
@given(
    width=st.integers(2, 4),
    rows=st.lists(st.lists(st.sampled_from(_PLAIN), min_size=1, max_size=5), max_size=5),
    last=st.sampled_from(["", "\n", "\n\n"]),
    bom=st.booleans(),
)
def test_a_plain_table_is_split_as_pandas_reads_it(
    tmp_path_factory: pytest.TempPathFactory,
    width: int,
    rows: list[list[str]],
    last: str,
    bom: bool,
) -> None:
    """Quote-free tables (split with str.split when every row is as wide as the header):
    pandas.read_csv's frame, or a ragged row refused naming its line."""
    lines = [",".join(f"c{i}" for i in range(width))] + [",".join(r) for r in rows]
    path = tmp_path_factory.mktemp("plain") / "v.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + ("\n".join(lines) + last).encode())
    try:
        got = read_variants(path)
    except PerturbscoreError as exc:
        assert any(len(r) != width for r in rows) or "\n\n" in last, exc
        assert "line" in str(exc)
        return
    expected = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    pd.testing.assert_frame_equal(got, expected, check_index_type=False)


def test_plain_tables_are_split_and_large_or_crlf_ones_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which pass reads a quote-free table: str.split for a plain one, the csv module for
    CRLF, a ragged row or a file over SPLIT_MAX_BYTES (the values are the same)."""
    from perturbscore import variants_text

    calls: list[str] = []
    real = variants_text._check_rows

    def csv_pass(*args: object, **kwargs: object) -> object:
        calls.append("csv")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(variants_text, "_check_rows", csv_pass)
    path = tmp_path / "v.csv"
    text = "GENE,rsID,REF\nG1,rs1,A\nG2,,C\n"
    path.write_text(text)
    want = pd.DataFrame({"GENE": ["G1", "G2"], "rsID": ["rs1", ""], "REF": ["A", "C"]})
    pd.testing.assert_frame_equal(read_variants(path), want, check_dtype=False)
    assert calls == []
    assert read_variants(path, []).shape == (0, 0) and calls == []  # as pandas' usecols=[]
    path.write_bytes(text.replace("\n", "\r\n").encode())
    pd.testing.assert_frame_equal(read_variants(path), want, check_dtype=False)
    assert calls == ["csv"]
    path.write_text(text)
    monkeypatch.setattr(variants_text, "SPLIT_MAX_BYTES", len(text) - 1)
    pd.testing.assert_frame_equal(read_variants(path), want, check_dtype=False)
    assert calls == ["csv", "csv"]
