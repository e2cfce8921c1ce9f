"""Track table parsing (both file forms) and selection."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.targets_file import TARGET_COLUMNS
from perturbscore.tracks import (
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
        (dict(indices=[5313]), r"out of range 0..5312: 5313;"),
        (dict(indices=[-1]), "out of range"),
        (dict(identifiers=["ENCFFNOPE"]), 'not in the track table: "ENCFFNOPE"'),
        (dict(indices=[3, 3]), "more than once"),
        (dict(where=["organ=liver"]), "column organ does not exist; use one of index, genome"),
        (
            dict(where=["biosample=nowhere-cell-line", "assay==DNASE"]),
            r"selection \(where biosample=nowhere-cell-line and assay==DNASE\) matched no track",
        ),
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
    with pytest.raises(PerturbscoreError, match='short.csv: line 4: index 686 is "ENCFFWRONG"'):
        select_tracks(damaged, selection_from_options(shortlist=path))


def test_shortlist_without_index_column(damaged: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("track\n1\n")
    with pytest.raises(PerturbscoreError, match="no 'index' column"):
        select_tracks(damaged, selection_from_options(shortlist=path))


def test_messages_name_where_the_selection_was_written(
    damaged: pd.DataFrame, tmp_path: Path
) -> None:
    where = "run.toml [tracks]"
    with pytest.raises(PerturbscoreError) as err:
        select_tracks(damaged, selection_from_options(identifiers=["encff093vxi"], origin=where))
    assert str(err.value).startswith(
        "run.toml [tracks] identifiers: track identifiers not in the track table: "
        '"encff093vxi" (did you mean "ENCFF093VXI"?); correct it'
    )
    with pytest.raises(PerturbscoreError, match=r"^run.toml \[tracks\] indices: track indices "):
        select_tracks(damaged, selection_from_options(indices=[5313], origin=where))
    with pytest.raises(PerturbscoreError) as err:
        select_tracks(damaged, selection_from_options(indices=[7, 12, 7, 12], origin=where))
    assert str(err.value).startswith(
        f"track 7 ({damaged['identifier'][7]}) is selected more than once, by run.toml "
        "[tracks] indices entries 1 and 3 (and 1 more track listed twice); list each track once"
    )
    ident = damaged["identifier"][12]
    with pytest.raises(
        PerturbscoreError,
        match=f'identifiers entry 1 \\("{ident}"\\) and by run.toml \\[tracks\\] indices entry 1 '
        r"\(12\);",
    ):
        select_tracks(
            damaged, selection_from_options(identifiers=[ident], indices=[12], origin=where)
        )
    # Without an origin (the command line, Python) the messages stay general.
    with pytest.raises(PerturbscoreError, match=r"^track identifiers not in the track table"):
        select_tracks(damaged, selection_from_options(identifiers=["NOPE"]))


def test_a_shortlist_line_repeated_is_named(damaged: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(
        "index,identifier\n5,{0}\n9,{1}\n5,{0}\n".format(*damaged["identifier"][[5, 9]])
    )
    with pytest.raises(
        PerturbscoreError, match=f"by {re.escape(str(path))} line 2 and by .* line 4"
    ):
        select_tracks(damaged, selection_from_options(shortlist=path))


HEADER = "\t".join(TARGET_COLUMNS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "0\t0\tA\tf\t32\t2\tmean\tDNASE:x\textra\n",
            "line 2: expected a track record of 8 tab-separated fields .*found 9 field",
        ),
        (
            "0\t0\tA\tf\t32\t2\tmean\tDNASE:x\n2\t0\tB\tf\t32\t2\tmean\tDNASE:y\n",
            'line 3: track index "2", expected 1',
        ),
        (
            "0\t0\tA\tf\t32\t2\t\n",
            "line 3: expected the rest of the record begun on line 2, sum_stat<TAB>description"
            ".*found an empty line",
        ),
        ("garbage line\n", "line 2: expected a track record of 8 tab-separated fields"),
        ("", "no track records"),
        # Issue 7: stray lines were absorbed into the description or into sum_stat.
        (
            "0\t0\tA\tf\t32\t2\tmean\tDNASE:AG04449\ngarbage line here\n",
            'line 3: "garbage line here" is not a track record .*on line 2 does not end in a space',
        ),
        (
            "0\t0\tA\tf\t32\t2\t\ngarbage line here\nmean\tDNASE:AG04449\n",
            "line 3: expected the rest of the record begun on line 2, sum_stat<TAB>description",
        ),
        (
            "0\t0\tA\tf\t32\t2\t\nmean\tDNASE:a long \nname broken \ntwice\n",
            'line 5: "twice" is not a track record',
        ),
        ("0\t0\tA\tf\t32\t2\tmaen\tDNASE:x\n", 'line 2: sum_stat "maen" is not a summary'),
        ("0\t0\tA\tf\t32\t2\t\nmaen\tDNASE:x\n", 'line 3: sum_stat "maen" is not'),
        ("0\t0\tA\tf\tbig\t2\tmean\tDNASE:x\n", 'line 2: clip "big" is not a number'),
        ("0\t0\tA\tf\t32\tnan\tmean\tDNASE:x\n", 'line 2: scale "nan" is not a number'),
        ("0\thuman\tA\tf\t32\t2\tmean\tDNASE:x\n", 'line 2: genome "human" is not an'),
        ("0\t0\t\tf\t32\t2\tmean\tDNASE:x\n", 'line 2: identifier "" is not a track'),
        ("0\t0\tA\tf\t32\t2\tmean\t \n", 'line 2: description " " is not a description'),
        ("x\t0\tA\tf\t32\t2\tmean\tDNASE:x\n", 'line 2: track index "x", expected 0'),
        (
            "0\t0\tA\tf\t32\t2\tmean\tDNASE:x\n1\t0\tA\tf\t32\t2\tsum\tCAGE:y\n",
            'line 3: identifier "A" is also the identifier on line 2',
        ),
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


def test_a_stray_line_in_the_real_damaged_copy_is_named(shared: Path, tmp_path: Path) -> None:
    lines = (shared / "targets_human.txt").read_text().splitlines(keepends=True)
    assert lines[4].startswith("mean\tDNASE:frontal cortex")  # record 1's second half
    path = tmp_path / "targets_human.txt"
    path.write_text("".join([*lines[:5], "garbage line here\n", *lines[5:]]))
    with pytest.raises(PerturbscoreError, match='line 6: "garbage line here" is not a track'):
        read_targets(path)
    path.write_text("".join([*lines[:4], "garbage line here\n", *lines[4:]]))
    with pytest.raises(PerturbscoreError, match="line 5: expected the rest of the record begun"):
        read_targets(path)


def test_the_known_damage_in_canonical_records_is_repaired(tmp_path: Path) -> None:
    # A broken description also occurs in one-record-per-line copies; CRLF and a BOM too.
    path = tmp_path / "targets.txt"
    path.write_text(
        "\ufeff" + HEADER + "\r\n0\t0\tA\tf\t32\t2\tmean\tDNASE:long \r\nname\r\n"
        "1\t0\tB\tf\t384\t1\tsum\tCAGE:x\r\n"
    )
    t = read_targets(path)
    assert list(t["description"]) == ["DNASE:long name", "CAGE:x"]
    assert list(t["clip"]) == [32, 384]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.txt"], "missing.txt: track table not found"),
        (["bad.txt"], 'bad.txt: line 3: "garbage" is not a track record'),
        (["latin1.txt"], "latin1.txt: not a UTF-8 text file"),
        (["good.txt", "--where", "biosample"], 'track query "biosample": write field=value'),
        (["good.txt", "--where", "organ=x"], "track query column organ does not exist"),
        # Trial 7, repro 12: an empty value matched an arbitrary-looking subset.
        *[
            (
                ["good.txt", "--where", f"biosample{op}"],
                f'"biosample{op}" gives no value after {op}',
            )
            for op in ("=", "==", "~")
        ],
        # A word starting with ~ or = was read as the other kind: "biosample=~K5" as the
        # regular expression K5, "biosample= =K562" as an exact match.
        (["good.txt", "--where", "biosample=~K5"], "a word to match cannot start with ~;"),
        (["good.txt", "--where", "biosample= =K562"], "a word to match cannot start with =;"),
        # Trial 7, repro 10: a repeated track by the positions of the options, not the value.
        (["good.txt", "--index", "1", "--index", "1"], "by the 1st and 2nd --index;"),
        (
            ["good.txt", "--identifier", "B", "--index", "0", "--index", "1"],
            r'by the 1st --identifier \("B"\) and by the 2nd --index \(1\);',
        ),
        (["good.txt", "--where", "description~(("], r'"\(\(" is not a valid regular expression'),
        (["good.txt", "--index", "7"], "track indices out of range 0..1: 7;"),
        (["good.txt", "--identifier", "Z"], 'track identifiers not in the track table: "Z";'),
        (["good.txt", "--columns", "nope"], 'unknown columns "nope"; choose from index, genome'),
        (["good.txt", "--shortlist", "none.csv"], "none.csv: track shortlist not found"),
        (["good.txt", "--shortlist", "short.csv"], "short.csv: shortlist has no 'index' column"),
        (["good.txt", "--shortlist", "empty.csv"], "empty.csv: cannot read the track shortlist"),
        (["good.txt", "--shortlist", "latin1.csv"], "latin1.csv: the track shortlist is not UTF-8"),
    ],
)
def test_tracks_command_errors(tmp_path: Path, cli, args: list[str], message: str) -> None:
    (tmp_path / "good.txt").write_text(
        HEADER + "\n0\t0\tA\tf\t32\t2\tmean\tDNASE:x\n1\t0\tB\tf\t32\t2\tsum\tCAGE:y\n"
    )
    (tmp_path / "bad.txt").write_text(HEADER + "\n0\t0\tA\tf\t32\t2\tmean\tDNASE:x\ngarbage\n")
    (tmp_path / "latin1.txt").write_bytes(
        (HEADER + "\n0\t0\tA\tf\t32\t2\tmean\t\xe9\n").encode("latin-1")
    )
    (tmp_path / "short.csv").write_text("track\n1\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "latin1.csv").write_bytes("index,description\n0,caf\xe9\n".encode("latin-1"))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("tracks", *args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert re.search(message, r.stderr), r.stderr
    assert "['" not in r.stderr and "{'" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_clip_and_scale_beyond_int64_are_read_as_numbers(tmp_path: Path, cli) -> None:
    """pandas.to_numeric reads 99999999999999999999 (the targets file's check accepts it);
    the track table and the tracks command must not fail on it."""
    (tmp_path / "t.txt").write_text(
        HEADER + "\n0\t0\tA\tf\t99999999999999999999\t2\tmean\tDNASE:x\n"
        "1\t0\tB\tf\t32\t-99999999999999999999\tsum\tCAGE:y\n"
    )
    table = read_targets(tmp_path / "t.txt")
    raw = pd.read_csv(tmp_path / "t.txt", sep="\t", dtype=str)
    for col in ("clip", "scale"):
        expected = pd.to_numeric(raw[col]).astype(float).tolist()
        assert table[col].astype(float).tolist() == expected
    r = cli("tracks", "t.txt", "--columns", "index,clip,scale", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 3
