"""Variant tables: the repeated-ID warning is one stable line per file (issue 7)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.variants import duplicate_report, id_columns_of, read_variants

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
