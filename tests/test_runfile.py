"""Run files: one typed schema; every wrong value is refused with a sentence (issue 7).

Errors are checked through the console script: exit code 2, one line naming the file,
the key and the fix, no traceback, no Python repr, and no output folder.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from perturbscore import readers
from perturbscore.errors import PerturbscoreError
from perturbscore.runfile import Batch, Group, load_run_file, parse_run_config
from perturbscore.runfile_schema import SCHEMA, schema_table

TOML = "stablefm.toml"
STAB_OLD = (
    '{ ref = "final_ref_preds_stab_snps_strand.npy", alt = "final_alt_preds_stab_snps_strand.npy", '
    'variants = "stab_snps_strand_final_variants.csv" }'
)
SHORTLIST = 'shortlist = "basenji_relevant_metadata.csv"'
AGGS = 'aggregations = ["ave", "tss"]'
FORMAT = 'format = "rdata"'
NAME = 'name = "{group}_diff_{aggregation}_relevant_comb"'
IDS = 'id_columns = ["GENE", "rsID", "REF", "ALT"]'
STAB = 'name = "stab"'
SCORES = "[scores]\n"


def _edit(study: Path, old: str | re.Pattern[str], new: str) -> Path:
    path = study / TOML
    text = path.read_text()
    if isinstance(old, re.Pattern):
        text, n = old.subn(new, text, count=1)
        assert n == 1, old
    else:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)
    return path


def CLI(*case: object) -> tuple[object, ...]:  # upper case: reads as a label in the table
    """A case also run through the console script (the ones issue 7 lists)."""
    return (*case, True)


BAD = [
    # Wrong TOML types, each with the fix in the message.
    CLI(
        SCORES,
        SCORES + 'center_bin = "1"\n',
        r"stablefm.toml \[scores\] center_bin: expected an integer ≥ 0 naming a bin, got the "
        r'string "1"; write center_bin = 1\.',
    ),
    CLI(
        SCORES,
        SCORES + 'pseudocount = "one"\n',
        r'\[scores\] pseudocount: expected a number ≥ 0, got the string "one"; write '
        r"pseudocount = 1\.0\.",
    ),
    CLI(
        SHORTLIST,
        'indices = ["a"]',
        r"\[tracks\] indices: expected a non-empty list of 0-based track numbers, integers ≥ 0, "
        r'got the list \["a"\]; write indices = \[12, 69\]\.',
    ),
    (SHORTLIST, 'indices = ["3", 4]', r"got the list \[\"3\", 4\]; write indices = \[3, 4\]\."),
    CLI(SCORES, SCORES + "center_bin = true\n", r"center_bin: .*got the boolean true"),
    CLI(SCORES, SCORES + "center_bin = 1.5\n", r"center_bin: .*got the number 1\.5"),
    CLI(SCORES, SCORES + "center_bin = -1\n", r"center_bin: .*got the integer -1"),
    (SCORES, SCORES + "pseudocount = -1\n", r"pseudocount: .*got the integer -1"),
    (SCORES, SCORES + "pseudocount = nan\n", r"pseudocount: .*got the number nan"),
    CLI(
        FORMAT,
        "format = 3",
        r'\[output\] format: expected one of "parquet", "csv", "rds", "rdata", got the integer 3',
    ),
    CLI(NAME, "name = 5", r"\[output\] name: expected a file-name template .*got the integer 5"),
    CLI(IDS, "id_columns = 3", r'\[output\] id_columns: expected .* or "all", got the integer 3'),
    (IDS, 'id_columns = ["GENE", "GENE"]', r'id_columns: .*\("GENE" is listed twice\)'),
    (SHORTLIST, "identifiers = []", r"\[tracks\] identifiers: .*got an empty list"),
    (SHORTLIST, "where = [1]", r"\[tracks\] where: .*got the list \[1\]"),
    (SHORTLIST, 'where = ["biosample"]', r'\[tracks\] where: track query "biosample": write'),
    # Trial 7, repro 12: an empty value selected 12 of the demo's 42 tracks, silently.
    CLI(
        SHORTLIST,
        'where = ["biosample="]',
        r'\[tracks\] where: track query "biosample=" gives no value after =; write '
        r"biosample=VALUE",
    ),
    # Trial 7, repro 10: the two places of a repeated track by their positions.
    CLI(
        SHORTLIST,
        "indices = [3, 5, 3]",
        r"selected more than once, by \S*stablefm.toml \[tracks\] indices entries 1 and 3;",
    ),
    (
        re.compile(r"\[tracks\]\n#.*\n" + re.escape(SHORTLIST)),
        "tracks = 5",
        r"stablefm.toml: tracks must be a TOML table, got the integer 5; write it as \[tracks\]",
    ),
    # Silently accepted before: an empty list meant no table at all.
    CLI(AGGS, "aggregations = []", r"\[scores\] aggregations: .*got an empty list; write"),
    CLI('statistics = ["abs_diff"]', "statistics = []", r"\[scores\] statistics: .*got an empty"),
    (
        AGGS,
        'aggregations = ["ave", "AVE"]',
        r'"AVE" is listed twice\); write aggregations = \["ave"\]\.',
    ),
    # Trial 7, repro 09: the advice kept the last occurrence, reordering the user's list
    # (identifiers are the output columns' order); first occurrences, in order, now.
    CLI(
        SHORTLIST,
        'identifiers = ["SYNTH0001", "SYNTH0002", "SYNTH0001"]',
        r'"SYNTH0001" is listed twice\); write identifiers = \["SYNTH0001", "SYNTH0002"\]\.',
    ),
    CLI(
        AGGS,
        'aggregations = ["ave", "tss", "ave"]',
        r'"ave" is listed twice\); write aggregations = \["ave", "tss"\]\.',
    ),
    (AGGS, 'aggregations = ["mean"]', r'\("mean" is not one of tss, ave, sum or window:K, with'),
    (
        AGGS,
        'aggregations = ["ave", "window:x"]',
        r'window:K, with K a number of central bins\); write aggregations = \["ave", "window:3"\]',
    ),
    (
        'statistics = ["abs_diff"]',
        'statistics = ["abs_diff", "abs_diff"]',
        r'statistics: .*"abs_diff" is listed twice',
    ),
    (SCORES, SCORES + "aggregation = 1\n", r"\[scores\]: unknown key aggregation \(did you mean"),
    # Batches and groups.
    CLI(
        re.compile(r'name = "stab"\nbatches = \[.*?\n\]', re.S),
        'name = "stab"\nbatches = "x"',
        r'group 1 "stab" batches: expected a non-empty list of tables .*got the string "x"',
    ),
    (
        re.compile(r'name = "stab"\nbatches = \[.*?\n\]', re.S),
        'name = "stab"\nbatches = []',
        r'group 1 "stab" batches: expected a non-empty list of tables .*got an empty list',
    ),
    CLI(
        STAB_OLD,
        STAB_OLD.replace(" }", ', format = "bogus" }'),
        r'group 1 "stab" batch 1 format: expected a prediction format, one of "npy", "npz", '
        r'"zip", "hdf5", "zarr".*got the string "bogus"',
    ),
    (
        STAB_OLD,
        STAB_OLD.replace(' alt = "final_alt_preds_stab_snps_strand.npy",', ""),
        r'group 1 "stab" batch 1: alt is missing; it must be a path string to the ALT',
    ),
    CLI(
        STAB_OLD,
        STAB_OLD.replace("final_alt_preds", "final_ref_preds"),
        r'group 1 "stab" batch 1: ref and alt are the same file .*final_ref_preds_stab_snps_'
        r"strand.npy; .*probably a typo",
    ),
    CLI(
        STAB_OLD,
        STAB_OLD + ",\n  " + STAB_OLD,
        r'stablefm.toml: group 1 "stab" batch 2 repeats group 1 "stab" batch 1, both with ref '
        r".*final_ref_preds_stab_snps_strand.npy and alt .*; list each batch once",
    ),
    CLI(
        'ref = "final_ref_preds_top_snps_strand.npy", alt = "final_alt_preds_top_snps_strand.npy"',
        'ref = "final_ref_preds_stab_snps_strand.npy", '
        'alt = "final_alt_preds_stab_snps_strand.npy"',
        r'group 2 "top" batch 1 repeats group 1 "stab" batch 1, both with ref .* and alt ',
    ),
    CLI(
        'ref = "final_ref_preds_top_snps_strand.npy", alt = "final_alt_preds_top_snps_strand.npy"'
        ', variants = "top_snps_strand_final_variants.csv"',
        'ref = "final_ref_preds_stab_snps_strand.npy", alt = "final_alt_preds_top_snps_strand.npy"'
        ', variants = "stab_snps_strand_final_variants.csv"',
        r'group 2 "top" batch 1 repeats group 1 "stab" batch 1, both with variants '
        r".*stab_snps_strand_final_variants.csv and ref ",
    ),
    CLI(STAB, 'name = "../escaped"', r"group 1 \"\.\./escaped\": group name .*is not allowed"),
    CLI(STAB, 'name = "v1.1"', r'group 1 "v1\.1": group name .*is not allowed: use letters'),
    (STAB, "name = 5", r"group 1 name: expected a name of at most 64 letters.*got the integer 5"),
    (STAB, 'name = "top"', r'group 2 "top": the group name "top" is also group 1\'s'),
    (
        re.compile(r"\[\[groups\]\]\nname = \"stab\".*", re.S),
        '[groups]\nname = "stab"\nbatches = []\n',
        r"stablefm.toml: groups must be one or more \[\[groups\]\] tables, got a table with "
        r"the keys name, batches; write \[\[groups\]\] \(double brackets\)",
    ),
    # Output names that would escape the folder or collide.
    (NAME, 'name = "../{group}_{aggregation}"', r'its text "\.\./" may hold only letters'),
    (NAME, 'name = "{group}_{aggregation:>9}"', r"\{aggregation\} carries a format"),
    (NAME, 'name = "{group}_{agg}"', r"it names \{agg\}; only \{group\}, \{aggregation\}"),
    (
        NAME,
        'name = "{group}"',
        r'\[output\] name: the template "\{group\}" has no \{aggregation\} but the run has 2 '
        r"\(ave, tss\), so their tables would share one file",
    ),
    ('targets = "targets_human.txt"', "", r"stablefm.toml: targets is missing"),
    ('targets = "targets_human.txt"', "targets = [", r"stablefm.toml: not valid TOML"),
]


CASES = [c if len(c) == 4 else (*c, False) for c in BAD]


@pytest.mark.parametrize(("old", "new", "message", "via_cli"), CASES)
def test_bad_run_file_values(study: Path, tmp_path: Path, cli, old, new, message, via_cli) -> None:
    run_file = _edit(study, old, new)
    if via_cli:
        out = tmp_path / "out"
        r = cli("run", run_file, "--out", out)
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("perturbscore: error: ") and r.stderr.count("\n") == 1
        text = r.stderr
        assert r.stdout == "" and not out.exists()
    else:
        # The same PerturbscoreError the console script turns into exit 2 (cases above).
        with pytest.raises(PerturbscoreError) as err:
            load_run_file(run_file)
        text = str(err.value)
        assert "\n" not in text
    assert re.search(message, text), text
    # People's notation only: no Python list/dict reprs, no None.
    assert not re.search(r"\['|\{'|None", text), text


def test_non_utf8_run_file(study: Path, tmp_path: Path, cli) -> None:
    (study / TOML).write_bytes(b'targets = "\xe9.txt"\n')
    r = cli("run", study / TOML, "--out", tmp_path / "out")
    assert r.returncode == 2 and "not a UTF-8 text file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_a_byte_order_mark_is_accepted(study: Path, tmp_path: Path, cli) -> None:
    # Notepad and Excel save UTF-8 with a BOM; tomllib called it "Invalid statement".
    plain = load_run_file(study / TOML)
    (study / TOML).write_bytes(b"\xef\xbb\xbf" + (study / TOML).read_bytes())
    assert load_run_file(study / TOML) == plain
    # A real mistake after the BOM is still reported at its own line and column.
    text = (study / TOML).read_text(encoding="utf-8-sig").replace("[scores]", "[scores", 1)
    (study / TOML).write_bytes(b"\xef\xbb\xbf" + text.encode())
    line = text[: text.index("[scores")].count("\n") + 1
    r = cli("run", study / TOML, "--out", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "not valid TOML" in r.stderr and f"line {line}," in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def _parse(text: str, base: Path = Path("/data")) -> object:
    return parse_run_config(tomllib.loads(text), base, Path("run.toml"))


GROUP = '[[groups]]\nname = "g"\nbatches = [{ ref = "r.npy", alt = "a.npy", variants = "v.csv" }]\n'


def test_the_shipped_run_files_still_parse(study: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    for path in (repo / "examples" / TOML, study / TOML):
        cfg = parse_run_config(tomllib.loads(path.read_text()), study, path)
        assert [g.name for g in cfg.groups] == ["stab", "top"]
        assert cfg.aggregations == ("ave", "tss") and cfg.statistics == ("abs_diff",)
        assert cfg.format == "rdata" and cfg.center_bin is None and cfg.pseudocount == 1.0
        assert cfg.id_columns == ("GENE", "rsID", "REF", "ALT")
        assert cfg.groups[0].batches[1] == Batch(
            study / "final_ref_preds_stab_snps_new_strand.npy",
            study / "final_alt_preds_stab_snps_new_strand.npy",
            study / "stab_snps_new_strand_final_variants.csv",
        )
        assert cfg.tracks.shortlist == study / "basenji_relevant_metadata.csv"
    assert load_run_file(study / TOML).source == study / TOML


def test_defaults_and_lenient_forms() -> None:
    cfg = _parse('targets = "t.txt"\n' + GROUP)
    assert (cfg.aggregations, cfg.statistics, cfg.format, cfg.name, cfg.object) == (
        ("ave", "tss"),
        ("abs_diff",),
        "parquet",
        "{group}_{statistic}_{aggregation}",
        None,
    )
    # A single string for a list, integers for numbers, format names in any case.
    cfg = _parse(
        'targets = "t.txt"\n[scores]\naggregations = "tss"\npseudocount = 2\ncenter_bin = 0\n'
        '[output]\nformat = "CSV"\nid_columns = "all"\n'
        + GROUP.replace('v.csv" }', 'v.csv", format = "NPY" }')
    )
    assert cfg.aggregations == ("tss",) and cfg.pseudocount == 2.0 and cfg.center_bin == 0
    assert cfg.format == "csv" and cfg.id_columns == "all"
    assert cfg.groups[0].batches[0].format == "npy"
    assert cfg.groups[0].batches[0].ref == Path("/data/r.npy")


def test_same_file_different_members_is_not_ref_equal_alt() -> None:
    cfg = _parse(
        'targets = "t.txt"\n'
        + GROUP.replace('"r.npy"', '"p.h5::ref"').replace('"a.npy"', '"./p.h5::alt"')
    )
    assert str(cfg.groups[0].batches[0].alt) == "/data/p.h5::alt"
    with pytest.raises(PerturbscoreError, match="ref and alt are the same file"):
        _parse(
            'targets = "t.txt"\n'
            + GROUP.replace('"r.npy"', '"p.h5::ref"').replace('"a.npy"', '"x/../p.h5::ref"')
        )


def test_one_variants_file_may_serve_many_batches() -> None:
    batches = ", ".join(
        f'{{ ref = "r{i}.npy", alt = "a{i}.npy", variants = "v.csv" }}' for i in range(16)
    )
    cfg = _parse(f'targets = "t.txt"\n[[groups]]\nname = "g"\nbatches = [{batches}]\n')
    assert len(cfg.groups[0].batches) == 16


def test_prediction_formats_are_read_when_checked(monkeypatch) -> None:
    # Another module may add a reader (e.g. "zip"); the run file accepts it at once.
    monkeypatch.setattr(readers, "FORMATS", (*readers.FORMATS, "zip"))
    cfg = _parse('targets = "t.txt"\n' + GROUP.replace('v.csv" }', 'v.csv", format = "zip" }'))
    assert cfg.groups[0].batches[0].format == "zip"
    assert '"zip"' in schema_table()


def test_group_names_are_checked_in_python_too() -> None:
    with pytest.raises(PerturbscoreError, match="not allowed"):
        Group("../escaped", ())


def test_schema_table_lists_every_key() -> None:
    table = schema_table()
    for keys in SCHEMA.values():
        for name in keys:
            assert f"`{name}`" in table
    assert "| [scores] | `center_bin` | an integer ≥ 0 naming a bin | none |" in table


def test_readme_key_table_is_the_schema() -> None:
    """The README's run-file key table is :func:`schema_table`'s, row for row."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    rows = [line for line in schema_table().splitlines() if line.startswith("| [") or
            line.startswith("| (top)")]  # fmt: skip
    missing = [row for row in rows if row not in readme]
    assert not missing, missing
    documented = [line for line in readme if line.startswith(("| [", "| (top) |"))]
    extra = [line for line in documented if line not in rows and "`" in line.split("|")[2]]
    assert not extra, extra
