"""Input files a new user gets slightly wrong: one sentence naming the file, the value and
the fix, exit 2, before any work, nothing written; and spellings that should just work.

Every case runs the installed console script in a subprocess on the demo dataset, so the
exit code, the single ``perturbscore: error:`` line and the absence of a traceback are
what a user sees (trial 3, items 14 to 16).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from perturbscore.demo import write_demo_dataset

from .conftest import run_cli

TOML = "stablefm.toml"
STAB = "stab_snps_strand_final_variants.csv"
REF = "final_ref_preds_stab_snps_strand.npy"
ALT = "final_alt_preds_stab_snps_strand.npy"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, written once; tests change copies of it."""
    folder = tmp_path_factory.mktemp("demo") / "study"
    write_demo_dataset(folder)
    return folder


@pytest.fixture(scope="module")
def baseline(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The demo's CSV tables from the unchanged inputs: what equivalent inputs must give."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    r = run_cli("run", demo / TOML, "--out", out, "--format", "csv", "-q")
    assert r.returncode == 0, r.stderr
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


@pytest.fixture()
def study(demo: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    shutil.copytree(demo, folder)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(study: Path, tmp_path: Path, *patterns: str, args: tuple[str, ...] = ()) -> str:
    """Run the demo's run file; expect one error line matching every pattern."""
    before = _snapshot(study)
    out = tmp_path / "out"
    r = run_cli("run", study / TOML, "--out", out, "-q", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perturbscore: error: "), r.stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert "['" not in lines[0] and "{'" not in lines[0], lines[0]
    assert not out.exists(), "nothing may be written"
    assert _snapshot(study) == before, "inputs must be left as they were"
    return lines[0]


def _tables(study: Path, tmp_path: Path, *args: str) -> dict[str, bytes]:
    out = tmp_path / "out"
    r = run_cli("run", study / TOML, "--out", out, "--format", "csv", "-q", *args)
    assert r.returncode == 0, r.stderr
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


def _edit_run_file(study: Path, old: str, new: str) -> None:
    path = study / TOML
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --- variant tables ----------------------------------------------------------------


def _lines(study: Path) -> list[str]:
    return (study / STAB).read_text(encoding="utf-8").splitlines(keepends=True)


def test_a_latin1_variant_table_is_named_not_utf8(study: Path, tmp_path: Path) -> None:
    lines = _lines(study)
    lines[3] = lines[3].replace("ENSG", "ENSGé", 1)
    (study / STAB).write_bytes("".join(lines).encode("latin-1"))
    _refused(
        study,
        tmp_path,
        re.escape(f"{study / STAB}: the variant table is not UTF-8 text"),
        r"byte 0xe9 on line 4",
        "save it as UTF-8",
    )


@pytest.mark.parametrize(
    ("sep", "word", "fix"),
    [
        ("\t", "tab", f"rename it {Path(STAB).stem}.tsv"),
        (";", "semicolon", r"save it comma-separated \(\.csv\) or tab-separated \(\.tsv\)"),
    ],
)
def test_another_separator_in_a_csv_is_named(
    study: Path, tmp_path: Path, sep: str, word: str, fix: str
) -> None:
    (study / STAB).write_text("".join(x.replace(",", sep) for x in _lines(study)))
    _refused(
        study,
        tmp_path,
        re.escape(f"{study / STAB}: line 1 has no comma but holds {word}s"),
        f"looks {word}-separated; {fix}",
    )


def test_a_blank_line_inside_a_variant_table_is_named(study: Path, tmp_path: Path) -> None:
    lines = _lines(study)
    (study / STAB).write_text("".join([*lines[:5], "\n", *lines[5:]]))
    _refused(
        study,
        tmp_path,
        re.escape(f"{study / STAB}: line 6 is blank, but rows follow it"),
        "delete the blank line",
    )


def test_blank_lines_at_the_end_are_fine(
    study: Path, tmp_path: Path, baseline: dict[str, bytes]
) -> None:
    (study / STAB).write_text("".join([*_lines(study), "\n", "\r\n"]))
    assert _tables(study, tmp_path) == baseline


@pytest.mark.parametrize(
    ("line", "spans"), [(5, ", so lines 5 to 41 were read as one row"), (41, "")]
)
def test_an_open_quote_is_named_where_it_opens(
    study: Path, tmp_path: Path, line: int, spans: str
) -> None:
    lines = _lines(study)
    assert len(lines) == 41  # header and 40 rows
    lines[line - 1] = '"' + lines[line - 1]
    (study / STAB).write_text("".join(lines))
    _refused(
        study,
        tmp_path,
        re.escape(
            f'{study / STAB}: line {line}: a quote (") opened on line {line} is not '
            f"closed{spans}; close the quote, or remove it"
        ),
    )


# --- the run file ------------------------------------------------------------------


def test_a_run_file_with_a_byte_order_mark_runs(
    study: Path, tmp_path: Path, baseline: dict[str, bytes]
) -> None:
    path = study / TOML
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Windows Notepad saves it
    assert _tables(study, tmp_path) == baseline


# --- track selection ---------------------------------------------------------------

SHORTLIST = 'shortlist = "basenji_relevant_metadata.csv"'


def test_an_unknown_identifier_names_the_key_and_the_closest(study: Path, tmp_path: Path) -> None:
    _edit_run_file(study, SHORTLIST, 'identifiers = ["SYNTH0000", "synth0003"]')
    _refused(
        study,
        tmp_path,
        re.escape(
            f"{study / TOML} [tracks] identifiers: track identifiers not in the track "
            'table: "synth0003" (did you mean "SYNTH0003"?); correct it'
        ),
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (  # out-of-range indices: the key, the range and that they are 0-based
            "indices = [0, 99, 42]",
            "{toml} [tracks] indices: track indices out of range 0..41: 99, 42; indices are "
            "0-based, so the track table's 42 tracks are 0 to 41",
        ),
        (  # a shortlist and indices naming one track: both places
            SHORTLIST + "\nindices = [1, 4]",
            "track 4 (SYNTH0004) is selected more than once, by {shortlist} line 3 and by "
            "{toml} [tracks] indices entry 2 (4); list each track once",
        ),
        (  # a misspelt query column: the closest one
            'where = ["biosampel=GM12878"]',
            "{toml} [tracks] where: track query column biosampel does not exist (did you mean "
            '"biosample"?); use one of',
        ),
    ],
    ids=["indices-out-of-range", "shortlist-and-indices", "misspelt-where"],
)
def test_track_selection_messages_name_the_key(
    study: Path, tmp_path: Path, edit: str, expected: str
) -> None:
    _edit_run_file(study, SHORTLIST, edit)
    shortlist = study / "basenji_relevant_metadata.csv"
    _refused(study, tmp_path, re.escape(expected.format(toml=study / TOML, shortlist=shortlist)))


def test_a_repeated_shortlist_row_names_both_lines(study: Path, tmp_path: Path) -> None:
    path = study / "basenji_relevant_metadata.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines, lines[1]]))  # the first track again, on the last line
    last = len(lines) + 1
    _refused(
        study,
        tmp_path,
        re.escape(
            f"track 0 (SYNTH0000) is selected more than once, by {path} line 2 and by "
            f"{path} line {last}; list each track once"
        ),
    )


def test_an_id_column_named_like_a_track_names_the_key(study: Path, tmp_path: Path) -> None:
    # Track 0 renamed GENE in the track table: the ID column GENE now clashes.
    path = study / "targets_human.txt"
    path.write_text(path.read_text().replace("\tSYNTH0000\t", "\tGENE\t", 1))
    _edit_run_file(study, SHORTLIST, "indices = [0, 1]")
    _refused(
        study,
        tmp_path,
        re.escape(
            f'{study / TOML} [output] id_columns: the ID column "GENE" is also the '
            "identifier of a selected track"
        ),
        "leave it out of id_columns",
    )


# --- format names and archive members ----------------------------------------------


@pytest.mark.parametrize("spelling", ["RData", "RDATA", "Rdata"])
def test_format_names_in_any_case_on_both_sides(study: Path, tmp_path: Path, spelling: str) -> None:
    names = sorted(
        [
            "manifest.json",
            *(f"{g}_diff_{a}_relevant_comb.RData" for g in ("stab", "top") for a in ("ave", "tss")),
        ]
    )
    r = run_cli("run", study / TOML, "--out", tmp_path / "cli", "--format", spelling, "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == names
    _edit_run_file(study, 'format = "rdata"', f'format = "{spelling}"')
    r = run_cli("run", study / TOML, "--out", tmp_path / "file", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "file").iterdir()) == names
    for name in names[1:]:  # the tables; manifests differ in the settings recorded
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "file" / name).read_bytes()


def _npz_batch(study: Path, member_ref: str, member_alt: str, **arrays: np.ndarray) -> None:
    np.savez(study / "preds.npz", **arrays)
    _edit_run_file(
        study,
        f'ref = "{REF}", alt = "{ALT}"',
        f'ref = "preds.npz::{member_ref}", alt = "preds.npz::{member_alt}"',
    )


@pytest.mark.parametrize("suffix", [".npy", ""])
def test_an_npz_member_named_with_or_without_npy(
    study: Path, tmp_path: Path, baseline: dict[str, bytes], suffix: str
) -> None:
    _npz_batch(
        study, f"ref{suffix}", f"alt{suffix}", ref=np.load(study / REF), alt=np.load(study / ALT)
    )
    assert _tables(study, tmp_path) == baseline


def test_an_npz_member_spelling_naming_two_arrays_is_refused(study: Path, tmp_path: Path) -> None:
    ref, alt = np.load(study / REF), np.load(study / ALT)
    # Members ref.npy and ref.npy.npy: "ref.npy" could mean either.
    _npz_batch(study, "ref.npy", "alt", **{"ref": ref, "ref.npy": ref, "alt": alt})
    npz = study / "preds.npz"
    _refused(
        study,
        tmp_path,
        re.escape(
            f"{npz}::ref.npy: names two arrays of the archive, ref.npy and ref; write "
            f"'{npz}::ref.npy' or '{npz}::ref' exactly."
        ),
    )


def test_an_unknown_npz_member_says_how_members_are_named(study: Path, tmp_path: Path) -> None:
    _npz_batch(study, "reff.npy", "alt", ref=np.load(study / REF), alt=np.load(study / ALT))
    npz = study / "preds.npz"
    _refused(
        study,
        tmp_path,
        re.escape(
            f"{npz}::reff.npy: no array named reff.npy in the archive; it holds alt, ref; "
            f"name an .npz member as numpy.load does, e.g. '{npz}::alt'."
        ),
    )


# --- byte order --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["npy", "npz-deflated"])
def test_big_endian_predictions_give_the_native_tables(
    study: Path, tmp_path: Path, baseline: dict[str, bytes], where: str
) -> None:
    ref, alt = np.load(study / REF), np.load(study / ALT)
    big_ref, big_alt = ref.astype(">f4"), alt.astype(">f4")
    assert big_ref.tobytes() != ref.tobytes()  # really another byte order on disk
    if where == "npy":
        np.save(study / REF, big_ref)
        np.save(study / ALT, big_alt)
        assert np.load(study / REF).dtype.str == ">f4"
    else:
        np.savez_compressed(study / "preds.npz", ref=big_ref, alt=big_alt)
        _edit_run_file(
            study, f'ref = "{REF}", alt = "{ALT}"', 'ref = "preds.npz::ref", alt = "preds.npz::alt"'
        )
    assert _tables(study, tmp_path, "--chunk-rows", "7") == baseline


def test_a_big_endian_integer_array_names_its_dtype(study: Path, tmp_path: Path) -> None:
    np.save(study / REF, np.load(study / REF).astype(">i4"))
    _refused(
        study,
        tmp_path,
        re.escape(f"{study / REF}: dtype >i4 is not a float16/float32/float64 prediction array"),
    )


@pytest.mark.parametrize("store", ["hdf5", "zarr"])
def test_big_endian_stores_read_as_native(tmp_path: Path, store: str) -> None:
    from perturbscore.readers import open_predictions

    native = np.random.default_rng(5).standard_normal((9, 3, 4)).astype(np.float32)
    big = native.astype(">f4")
    if store == "hdf5":
        h5py = pytest.importorskip("h5py")
        path = tmp_path / "p.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("ref", data=big, chunks=(2, 3, 4))
        name = f"{path}::ref"
    else:
        zarr = pytest.importorskip("zarr")
        path = tmp_path / "p.zarr"
        arr = zarr.create_array(
            str(path), shape=big.shape, dtype=">f4", chunks=(2, 3, 4), zarr_format=2
        )
        arr[:] = big
        name = str(path)
    with open_predictions(name) as r:
        assert r.dtype == np.float32
        got = r.read_rows(2, 9, np.empty((8, 3, 4), np.float32))
        np.testing.assert_array_equal(got, native[2:9])


def test_a_table_name_too_long_for_a_file_is_refused_first(study: Path, tmp_path: Path) -> None:
    # Was an OSError traceback (File name too long) at the first write.
    _edit_run_file(
        study,
        'name = "{group}_diff_{aggregation}_relevant_comb"',
        'name = "{group}_' + "x" * 230 + '_{aggregation}"',
    )
    _refused(
        study,
        tmp_path,
        re.escape(f"{study / TOML} [output] name: the template "),
        r"table name \"stab_x+\.\.\.\" of 239 characters, but table names may have at most 213",
        "shorten the template",
    )
    # The longest name that fits is written, with its temporary name beside it first.
    _edit_run_file(study, "x" * 230, "x" * (213 - len("stab__ave")))
    r = run_cli("run", study / TOML, "--out", tmp_path / "ok", "--format", "parquet", "-q")
    assert r.returncode == 0, r.stderr
    assert max(len(p.name) for p in (tmp_path / "ok").iterdir()) == 213 + len(".parquet")
