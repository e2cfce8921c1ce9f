"""The run path's tables without pandas (perturbscore.frame), checked against pandas.

A run holds its track and variant tables as numpy columns, so that it never imports
pandas (0.3 s of every run).  Each replacement of a pandas operation is checked here
against pandas itself, which stays the oracle; the console script's run is checked to
import neither pandas nor pyarrow (nor tqdm, without a progress bar).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.frame import Columns
from perturbscore.geometry import ENFORMER
from perturbscore.geometry_tables import offsets_of_table, parse_position_section
from perturbscore.targets_file import _read_shortlist
from perturbscore.variants import duplicate_report
from perturbscore.writers import open_writer

_HEAVY = """
import json, sys
from perturbscore.cli import main
sys.argv = ["perturbscore", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
# _hashlib (OpenSSL) and socket: a few ms of every start, needed only for a Zarr
# store's fingerprint and never for a lock's host name (os.uname gives it).
heavy = sorted(
    {m.split(".")[0] for m in sys.modules} & {"pandas", "pyarrow", "tqdm", "_hashlib", "socket"}
)
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("fmt", ["rdata", "rds", "csv"])
def test_a_run_imports_neither_pandas_nor_pyarrow(study: Path, fmt: str) -> None:
    """The study's recipe (shortlist, geometry, integrity checks, R tables) through the
    console's main(), in a fresh interpreter: pandas, pyarrow and tqdm stay unimported
    (and OpenSSL's hashlib and socket, which a run on plain files does not need)."""
    r = subprocess.run(
        [sys.executable, "-c", _HEAVY, "-q", "run", "stablefm.toml", "--out", "results",
         "--format", fmt],
        cwd=study, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert found == {"code": 0, "heavy": []}, r.stderr
    suffix = {"rdata": "RData", "rds": "rds", "csv": "csv"}[fmt]
    assert len(list((study / "results").glob(f"*.{suffix}"))) == 4


def test_columns_rows_pick_concat_match_pandas() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "rsID": [f"rs{i}" for i in rng.integers(0, 50, 40)],
            "pos": rng.integers(0, 10**6, 40),
            "score": rng.normal(size=40),
        }
    )
    t = Columns.from_frame(df)
    assert len(t) == 40 and t.columns == ["rsID", "pos", "score"]
    mask = rng.random(40) < 0.5
    for which, expected in [
        (slice(3, 17), df.iloc[3:17]),
        (mask, df[mask]),
        (np.array([5, 1, 1, 39]), df.iloc[[5, 1, 1, 39]]),
    ]:
        got = t.rows(which).to_frame()
        pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_dtype=False)
    both = Columns.concat([t.rows(slice(0, 7)), t.rows(slice(30, 40))], ["score", "rsID"])
    expected = pd.concat([df.iloc[:7], df.iloc[30:]], ignore_index=True)[["score", "rsID"]]
    pd.testing.assert_frame_equal(both.to_frame(), expected, check_dtype=False)
    assert t.row(2) == df.iloc[2].tolist()
    assert t.pick(["pos"]).records() == df[["pos"]].to_dict("records")
    # No column, some rows: the row count is kept (a table of ID columns = []).
    assert len(Columns({}, rows=5).rows(slice(1, 3))) == 2


def _pandas_duplicates(df: pd.DataFrame, cols: list[str], where: str) -> list[str]:
    """The oracle: duplicate_report's message computed with pandas' duplicated()."""
    parts = []

    def lines(mask: pd.Series) -> str:
        return "lines " + " and ".join(str(k + 2) for k in np.flatnonzero(mask.to_numpy())[:2])

    full = df.duplicated(subset=cols, keep=False)
    dup = df["rsID"].duplicated(keep=False)
    if dup.any() and not full.equals(dup):
        ex = df.loc[dup, "rsID"].iloc[0]
        distinct = df.loc[dup, "rsID"].nunique()
        parts.append(
            f"{int(dup.sum())} rows share an rsID with another row ({distinct} "
            f"rsIDs, e.g. {ex} on {lines(df['rsID'] == ex)}: multi-allelic sites or several "
            "genes per variant)"
        )
    if full.any():
        first = df.loc[full, cols].iloc[0]
        same = (df[cols] == first).all(axis=1)
        ids = ", ".join(f"{c} {first[c]}" for c in cols)
        parts.append(
            f"{int(full.sum())} rows repeat all ID columns ({', '.join(cols)}), e.g. {ids} on "
            f"{lines(same)}, so they cannot be told apart by ID"
        )
    return [f"{where}: " + "; ".join(parts) + "; all rows are kept."] if parts else []


@pytest.mark.parametrize("seed", range(12))
def test_duplicate_report_matches_pandas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    df = pd.DataFrame(
        {
            "GENE": rng.choice(["A", "B", "C"], n),
            "rsID": [f"rs{i}" for i in rng.integers(0, max(2, n // (1 + seed % 4)), n)],
            "ALT": rng.choice(["A", "C", "G", "T"], n),
        }
    ).astype(str)
    cols = ["GENE", "rsID", "ALT"][: 1 + seed % 3]
    cols = cols if "rsID" in cols else [*cols, "rsID"]
    assert duplicate_report(Columns.from_frame(df), cols, "v.csv") == _pandas_duplicates(
        df, cols, "v.csv"
    )


@pytest.mark.parametrize(
    "text",
    [
        "index,identifier\n3,ENCFF1\n1,ENCFF2\n",
        "\ufeffindex,identifier\r\n3,ENCFF1\r\n\r\n1,ENCFF2\r\n",  # BOM, CRLF, a blank line
        'index,"identifier, quoted",x\n3,"a,b",\n1,"c ""d""",z\n',
        "a,index\n,0\nx,\n",  # empty cells stay empty text
        # Lines of spaces and tabs are blank lines to pandas, skipped like empty ones.
        "index,identifier\n   \n3,ENCFF1\n \t \n1,ENCFF2\n\t\n",
    ],
)
def test_shortlist_reads_as_pandas_does(tmp_path: Path, text: str) -> None:
    path = tmp_path / "short.csv"
    path.write_bytes(text.encode())
    expected = pd.read_csv(path, dtype=str, keep_default_na=False)
    got = _read_shortlist(path)
    assert list(got) == list(expected.columns)
    assert {k: list(v) for k, v in got.items()} == {c: list(expected[c]) for c in expected}


def test_shortlist_rows_longer_than_the_header_are_refused(tmp_path: Path) -> None:
    """pandas would silently take the first column as an index."""
    path = tmp_path / "short.csv"
    path.write_text("index,identifier\n3,ENCFF1,extra\n")
    with pytest.raises(PerturbscoreError, match=r"short.csv: cannot read the track .*line 2 "):
        _read_shortlist(path)
    # The line named is the file's line, blank lines counted (as pandas named it).
    path.write_text("index,identifier\n\n3,ENCFF1\n\n1,ENCFF2,extra\n")
    with pytest.raises(PerturbscoreError, match=r"\(line 5 has 3 fields, the header 2\)"):
        _read_shortlist(path)
    # The csv module's own errors (an unclosed quote) name the line too.
    path.write_text('index,identifier\n3,ENCFF1\n1,"ENCFF2\n')
    with pytest.raises(PerturbscoreError, match=r"\(line 3: unexpected end of data\)"):
        _read_shortlist(path)


def test_shortlist_tsv_lines_of_spaces_are_blank(tmp_path: Path) -> None:
    path = tmp_path / "short.tsv"
    path.write_text("index\tidentifier\n  \n3\tENCFF1\n \n")
    expected = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    got = _read_shortlist(path)
    assert {k: list(v) for k, v in got.items()} == {c: list(expected[c]) for c in expected}


@pytest.mark.parametrize("header", ["index,index,identifier", "index,identifier,identifier"])
def test_shortlist_repeated_column_names_read_the_first(tmp_path: Path, header: str) -> None:
    """pandas renames a repeated name (index.1) and reads the first column of that name."""
    path = tmp_path / "short.csv"
    path.write_text(f"{header}\n0,5,A\n")
    expected = pd.read_csv(path, dtype=str, keep_default_na=False)
    got = _read_shortlist(path)
    for name in ("index", "identifier"):
        assert got[name] == list(expected[name])


@pytest.mark.parametrize(
    ("cells", "bad_line"),
    [
        (["12", "7", "0"], None),
        (["12.0", "1e3", " 7"], None),  # whole numbers however written, as pandas reads them
        (["12", "", "3"], 3),
        (["12", "x", "3"], 3),
        (["1.5", "2"], 2),
        (["3", "inf"], 3),  # pandas read inf as a number (then an arbitrary integer)
        (["nan"], 2),
        # Python's int() and float() read these; pandas (and a person) do not.
        (["3", "1_000"], 3),
        (["1_0.0"], 2),
        (["\u0661\u0662"], 2),  # Arabic-Indic digits 12
        (["\uff11"], 2),  # a full-width 1
    ],
)
def test_position_columns_hold_whole_numbers(cells: list[str], bad_line: int | None) -> None:
    table = Columns({"pos": cells})
    spec = parse_position_section({"position": "pos"}, "run.toml")
    if bad_line is None:
        expected = pd.to_numeric(pd.Series(cells)).to_numpy(np.int64)
        assert offsets_of_table(table, spec, ENFORMER).tolist() == expected.tolist()
        return
    with pytest.raises(PerturbscoreError, match=f"line {bad_line} has"):
        offsets_of_table(table, spec, ENFORMER)


def test_csv_tables_are_the_bytes_pandas_writes(tmp_path: Path) -> None:
    """The csv-module writer against pandas' to_csv: round-trip floats of every size, NaN
    as empty, inf, -0.0; text needing quotes; missing text; blocks of any size."""
    rng = np.random.default_rng(5)
    n, tracks = 257, ["T1", "T,2", 'T"3']
    scores = np.abs(rng.normal(size=(n, 3))) * 10.0 ** rng.integers(-300, 300, (n, 3))
    scores[:6, 0] = [np.nan, np.inf, -0.0, 1e16, 0.1, 5e-324]
    ids = pd.DataFrame(
        {
            "rsID": [f"rs{i}" for i in range(n)],
            "ALT": rng.choice(["A", "a,b", 'say "x"', "line\nbreak", "", "é", "NA"], n),
        }
    )
    ids.loc[3, "ALT"] = None
    path = tmp_path / "t.csv"
    w = open_writer("csv", path, tracks, ["rsID", "ALT"], "t", n)
    for lo, hi in [(0, 1), (1, 8), (8, 200), (200, n)]:
        w.write(scores[lo:hi], Columns.from_frame(ids.iloc[lo:hi]))
    w.commit()
    expected = pd.DataFrame(scores, columns=tracks)
    expected[["rsID", "ALT"]] = ids
    assert path.read_text(encoding="utf-8") == expected.to_csv(index=False)


def test_nbytes_counts_held_objects_once() -> None:
    """The memory plan's size of the ID tables: a text object held by many rows (a
    one-letter allele, which CPython shares, or a class label) is held once, and batches
    of one variant table share its arrays, so they are counted once."""
    n = 5000
    allele = "A"
    rsids = [f"rs{i}" for i in range(n)]
    t = Columns({"ALT": [allele] * n, "rsID": rsids})
    per_row = 8 * n  # the object arrays' pointers
    expected = 2 * per_row + sys.getsizeof(allele) + sum(map(sys.getsizeof, rsids))
    assert abs(t.nbytes() - expected) <= 0.02 * expected
    small = Columns({"ALT": [allele] * 100})
    assert small.nbytes() == 8 * 100 + sys.getsizeof(allele)
    seen: dict[int, int] = {}
    a, b = t.pick(["rsID"]), t.pick(["rsID", "ALT"])
    assert a.nbytes(seen) + b.nbytes(seen) == t.nbytes()
