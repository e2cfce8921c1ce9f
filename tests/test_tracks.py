"""Track table parsing (both file forms) and selection."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.tracks import (
    TARGET_COLUMNS,
    TrackSelection,
    read_targets,
    select_tracks,
    selection_from_options,
)


@pytest.fixture(scope="module")
def damaged(shared: Path) -> pd.DataFrame:
    return read_targets(shared / "targets_human.txt")


def _write_canonical(table: pd.DataFrame, path: Path) -> Path:
    """One record per line, as in the basenji repository."""
    lines = ["\t".join(TARGET_COLUMNS)]
    for rec in table[TARGET_COLUMNS].itertuples(index=False):
        lines.append("\t".join(str(v) for v in rec))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_damaged_copy_loads_5313_records(damaged: pd.DataFrame, shared: Path) -> None:
    assert len(damaged) == 5313
    assert list(damaged["index"]) == list(range(5313))
    assert set(damaged["sum_stat"]) == {"mean", "sum"}
    assert not damaged["description"].str.contains("\n").any()
    assert damaged["identifier"].is_unique
    # Two of the 19 descriptions that carried an extra line break, repaired:
    assert damaged.loc[159, "description"].endswith("afimoxifene for 72 hours")
    assert damaged.loc[4659, "description"].endswith(
        "osteosarcoma cell line U2OS stably expressing Bmal1:Luc"
    )
    # The raw file really is wrapped (this test would be vacuous otherwise).
    assert len((shared / "targets_human.txt").read_text().splitlines()) == 1 + 2 * 5313 + 19


def test_canonical_form_loads_identically(damaged: pd.DataFrame, tmp_path: Path) -> None:
    canonical = read_targets(_write_canonical(damaged, tmp_path / "targets_human.txt"))
    pd.testing.assert_frame_equal(canonical, damaged)


def test_descriptions_match_the_shortlist(damaged: pd.DataFrame, shared: Path) -> None:
    short = pd.read_csv(shared / "basenji_relevant_metadata.csv")
    rows = damaged.iloc[short["index"]]
    assert list(rows["identifier"]) == list(short["identifier"])
    assert list(rows["description"]) == list(short["description"])
    assert list(rows["file"]) == list(short["file"])


def test_description_split(damaged: pd.DataFrame) -> None:
    assert damaged["assay"].value_counts().to_dict() == {
        "CHIP": 3991,
        "DNASE": 674,
        "CAGE": 638,
        "ATAC": 10,
    }
    chip = damaged[damaged["description"] == "CHIP:H3K27ac:GM12878"].iloc[0]
    assert (chip["assay"], chip["target"], chip["biosample"]) == ("CHIP", "H3K27ac", "GM12878")
    dnase = damaged.loc[12]
    assert (dnase["assay"], dnase["target"], dnase["biosample"]) == ("DNASE", "", "GM12878")
    assert (damaged.loc[damaged["assay"] != "CHIP", "target"] == "").all()


def test_gm12878_query_is_the_study_shortlist(damaged: pd.DataFrame, shared: Path) -> None:
    by_query = select_tracks(damaged, selection_from_options(where=["biosample=GM12878"]))
    by_list = select_tracks(
        damaged, selection_from_options(shortlist=shared / "basenji_relevant_metadata.csv")
    )
    assert len(by_query) == 177
    assert list(by_query["index"]) == list(by_list["index"])
    assert list(by_list["index"]) == list(
        pd.read_csv(shared / "basenji_relevant_metadata.csv")["index"]
    )
    # Exact match leaves out the CAGE track whose biosample is a longer phrase.
    exact = select_tracks(damaged, selection_from_options(where=["biosample==GM12878"]))
    assert len(exact) == 176


def test_chip_target_query(damaged: pd.DataFrame) -> None:
    got = select_tracks(damaged, selection_from_options(where=["assay=CHIP", "target=H3K27me3"]))
    assert len(got) > 50
    assert set(got["target"]) == {"H3K27me3"}
    regex = select_tracks(damaged, selection_from_options(where=["target~^H3K27(ac|me3)$"]))
    # Matching is case-insensitive: the table spells H3K27ac both ways.
    assert set(regex["target"].str.casefold()) == {"h3k27ac", "h3k27me3"}
    assert {"H3K27ac", "H3K27Ac"} <= set(regex["target"])


def test_selection_keeps_the_order_given(damaged: pd.DataFrame) -> None:
    got = select_tracks(damaged, selection_from_options(indices=[69, 12, 5312]))
    assert list(got["index"]) == [69, 12, 5312]
    ids = ["ENCFF915DFR", "ENCFF093VXI"]
    got = select_tracks(damaged, selection_from_options(identifiers=ids))
    assert list(got["identifier"]) == ids
    assert len(select_tracks(damaged, TrackSelection())) == 5313


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (dict(indices=[5313]), r"out of range 0..5312: \[5313\]"),
        (dict(indices=[-1]), "out of range"),
        (dict(identifiers=["ENCFFNOPE"]), r"not in the track table: \['ENCFFNOPE'\]"),
        (dict(indices=[3, 3]), "more than once"),
        (dict(where=["organ=liver"]), "column 'organ' does not exist"),
        (dict(where=["biosample=nowhere-cell-line"]), "matched no track"),
        (dict(where=["biosample"]), "write field=value"),
    ],
)
def test_bad_selections(damaged: pd.DataFrame, selection: dict, message: str) -> None:
    with pytest.raises(PerturbscoreError, match=message):
        select_tracks(damaged, selection_from_options(**selection))


def test_shortlist_disagreeing_with_table(
    damaged: pd.DataFrame, shared: Path, tmp_path: Path
) -> None:
    short = pd.read_csv(shared / "basenji_relevant_metadata.csv", index_col=0)
    short.loc[short.index[2], "identifier"] = "ENCFFWRONG"
    path = tmp_path / "short.csv"
    short.to_csv(path)
    with pytest.raises(PerturbscoreError, match=r"short.csv: line 4: index 686 is 'ENCFFWRONG'"):
        select_tracks(damaged, selection_from_options(shortlist=path))


def test_shortlist_without_index_column(damaged: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("track\n1\n")
    with pytest.raises(PerturbscoreError, match="no 'index' column"):
        select_tracks(damaged, selection_from_options(shortlist=path))


HEADER = "\t".join(TARGET_COLUMNS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0\t0\tA\tf\t32\t2\tmean\tDNASE:x\textra\n", "line 2: record starting on line 2 has more"),
        (
            "0\t0\tA\tf\t32\t2\tmean\tDNASE:x\n2\t0\tB\tf\t32\t2\tmean\tDNASE:y\n",
            "line 3: track index '2', expected 1",
        ),
        ("0\t0\tA\tf\t32\t2\t\n", "line 2: record has 7 tab-separated fields"),
        ("garbage line\n", "line 2: expected a record starting with a track index"),
        ("", "no track records"),
    ],
)
def test_damaged_beyond_repair_names_the_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(HEADER + "\n" + body)
    with pytest.raises(PerturbscoreError, match=message):
        read_targets(path)


def test_wrong_header(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(PerturbscoreError, match="line 1: header"):
        read_targets(path)


def test_wrapped_record_in_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(
        HEADER + "\n0\t0\tA\tf\t32\t2\t\nmean\tCHIP:CTCF:some very long \n"
        "cell name\n1\t0\tB\tf\t32\t2\tsum\tCAGE:x\n"
    )
    t = read_targets(path)
    assert list(t["description"]) == ["CHIP:CTCF:some very long cell name", "CAGE:x"]
    assert list(t["biosample"]) == ["some very long cell name", "x"]
