"""Geometry: presets, hand-worked boundaries, bins, run-file sections, the study's tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perturbscore.errors import PerturbscoreError
from perturbscore.geometry import (
    BORZOI,
    CLASS_LABELS,
    ENFORMER,
    offsets_from_centre,
    offsets_from_start,
    place,
)
from perturbscore.geometry_tables import (
    GeometryConfig,
    PositionSpec,
    parse_geometry_config,
    parse_geometry_section,
    place_table,
)

TABLES = [
    "stab_snps_strand_final_variants.csv",
    "stab_snps_new_strand_final_variants.csv",
    "top_snps_strand_final_variants.csv",
    "top_snps_new_strand_final_variants.csv",
]

# Hand-worked: (distance from the centre, class, bin) with the centre base at offset
# 196,608 (448-centred).  Output window = offsets [139,264, 253,952): bin = (o - 139,264) // 128.
CASES_448 = [
    (-196_608, 0, -1),  # the window's first base
    (-98_305, 0, -1),
    (-98_304, 1, -1),  # first base the model reads: offset 98,304
    (-57_345, 1, -1),
    (-57_344, 2, 0),  # offset 139,264: first base of bin 0
    (-129, 2, 446),
    (-128, 2, 447),
    (-1, 2, 447),
    (0, 2, 448),  # the centre base opens bin 448
    (127, 2, 448),
    (128, 2, 449),
    (57_343, 2, 895),  # offset 253,951: last base of bin 895
    (57_344, 1, -1),
    (98_303, 1, -1),  # offset 294,911: last base the model reads
    (98_304, 0, -1),
    (196_607, 0, -1),  # the window's last base
]
# 447-centred: the centre base sits at offset 196,607, so every edge is one base further right
# in distance, while the offsets (and so classes and bins) stay where the model puts them.
CASES_447 = [
    (-98_304, 0, -1),  # offset 98,303
    (-98_303, 1, -1),
    (-57_344, 1, -1),  # offset 139,263
    (-57_343, 2, 0),
    (-1, 2, 447),
    (0, 2, 447),  # the centre base closes bin 447
    (1, 2, 448),
    (57_344, 2, 895),  # offset 253,951
    (57_345, 1, -1),
    (98_304, 1, -1),  # offset 294,911
    (98_305, 0, -1),
]


def test_presets():
    assert (ENFORMER.window, ENFORMER.input, ENFORMER.bins, ENFORMER.bin_size) == (
        393_216,
        196_608,
        896,
        128,
    )
    assert ENFORMER.output_bp == 114_688
    assert (ENFORMER.input_start, ENFORMER.output_start, ENFORMER.centre_offset) == (
        98_304,
        139_264,
        196_608,
    )
    assert ENFORMER.with_centre_bin(447).centre_offset == 196_607
    assert (BORZOI.window, BORZOI.input, BORZOI.bins, BORZOI.bin_size) == (
        524_288,
        524_288,
        6144,
        32,
    )
    assert BORZOI.output_bp == 196_608 and BORZOI.output_start == 163_840
    assert "params.json" in BORZOI.source


@pytest.mark.parametrize(("centre", "cases"), [(448, CASES_448), (447, CASES_447)])
def test_boundaries_hand_worked(centre, cases):
    geo = ENFORMER.with_centre_bin(centre)
    d = np.array([c[0] for c in cases])
    offset = (196_608 if centre == 448 else 196_607) + d
    p = place(offset, geo)
    assert p.distance.tolist() == d.tolist()
    assert p.cls.tolist() == [c[1] for c in cases]
    assert p.bin.tolist() == [c[2] for c in cases]
    assert list(p.labels) == [CLASS_LABELS[c[1]] for c in cases]
    assert not p.outside_window.any()


def test_centre_column_convention_moves_the_bin():
    pos = np.array([5_000_000, 5_000_000 + 128, 5_000_000 - 1])
    centre = np.full(3, 5_000_000)
    b448 = place(offsets_from_centre(pos, centre, ENFORMER), ENFORMER)
    e447 = ENFORMER.with_centre_bin(447)
    b447 = place(offsets_from_centre(pos, centre, e447), e447)
    assert b448.bin.tolist() == [448, 449, 447]
    assert b447.bin.tolist() == [447, 448, 447]  # the centre base is bin 447's last
    assert b448.distance.tolist() == b447.distance.tolist() == [0, 128, -1]
    # From a window start the convention changes the distance, never the bin.
    start = np.full(3, 5_000_000 - 196_608)
    o = offsets_from_start(pos, start)
    assert place(o, ENFORMER).bin.tolist() == place(o, e447).bin.tolist() == [448, 449, 447]
    assert place(o, e447).distance.tolist() == [1, 129, 0]


def test_outside_window_is_class_0_and_marked():
    p = place(np.array([-1, 0, 393_215, 393_216]), ENFORMER)
    assert p.cls.tolist() == [0, 0, 0, 0]
    assert p.outside_window.tolist() == [True, False, False, True]


def test_run_file_sections():
    cfg = parse_geometry_config(
        {"geometry": {"model": "enformer"}, "variants": {"position": "variant_pos_in_window"}}
    )
    assert cfg == GeometryConfig(ENFORMER, PositionSpec("variant_pos_in_window"))
    cfg = parse_geometry_config(
        {
            "geometry": {"model": "Enformer", "center_bin": 447},
            "variants": {"position": "PHYSICAL", "window_centre": "TSS"},
        }
    )
    assert cfg is not None
    assert cfg.geometry.centre_bin == 447 and cfg.position.window_centre == "TSS"
    custom = parse_geometry_section({"window": 1000, "input": 800, "bins": 10, "bin_size": 20})
    assert (custom.name, custom.output_start, custom.input_start, custom.centre_bin) == (
        "custom",
        400,
        100,
        5,
    )
    assert parse_geometry_config({"targets": "t.txt"}) is None


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"geometry": {"model": "basenji"}, "variants": {"position": "p"}}, "unknown model"),
        ({"geometry": {"model": "enformer", "bins": 3}, "variants": {"position": "p"}}, "preset"),
        ({"geometry": {"model": "enformer"}}, "needs the variants' positions"),
        (
            {"geometry": {"model": "enformer", "centre_bins": 447}, "variants": {"position": "p"}},
            "[geometry]: unknown key centre_bins (did you mean centre_bin?); the keys here are",
        ),
        ({"variants": {"position": "p"}}, "no [geometry]"),
        (
            {
                "geometry": {"model": "enformer"},
                "variants": {"position": "p", "window_start": "s", "window_centre": "c"},
            },
            "not both",
        ),
        (
            {"geometry": {"model": "enformer", "centre_bin": 446}, "variants": {"position": "p"}},
            "447 or 448",
        ),
        ({"geometry": {"model": "custom", "window": 100}, "variants": {"position": "p"}}, "needs"),
        (
            {
                "geometry": {"window": 100, "input": 200, "bins": 1, "bin_size": 10},
                "variants": {"position": "p"},
            },
            "longer than the window",
        ),
        (
            {
                "geometry": {"window": "393216", "input": 196608, "bins": 896, "bin_size": 128},
                "variants": {"position": "p"},
            },
            'window: expected a whole number of bp, got the string "393216"; write window = '
            "393216 (no quotes).",
        ),
        (
            {
                "geometry": {"window": 1000, "input": 800, "bins": 1.5, "bin_size": 20},
                "variants": {"position": "p"},
            },
            "bins: expected a whole number of bins, got",
        ),
    ],
)
def test_run_file_section_errors(data, needle):
    with pytest.raises(PerturbscoreError, match=None) as err:
        parse_geometry_config(data, "run.toml")
    assert needle in str(err.value) and "run.toml" in str(err.value)


def test_non_integer_position_names_the_line():
    df = pd.DataFrame({"p": ["10", "x", "12"]})
    with pytest.raises(PerturbscoreError, match="line 3"):
        place_table(df, GeometryConfig(ENFORMER, PositionSpec("p")), "v.csv")
    with pytest.raises(PerturbscoreError, match='no column "q"'):
        place_table(df, GeometryConfig(ENFORMER, PositionSpec("q")), "v.csv")


@pytest.mark.parametrize("name", TABLES)
def test_study_tables(shared, name):
    from perturbscore.variants import read_variants

    raw = pd.read_csv(shared / name)
    tss = raw["Transcription start site (TSS)"]
    # The study's window facts, checked on the real table.
    assert (raw["enformer_start"] + 196_608 == tss).all()
    assert (raw["enformer_end"] - raw["enformer_start"] == 393_216).all()
    assert (raw["PHYSICAL"] - raw["enformer_start"] == raw["variant_pos_in_window"]).all()
    # Oracle: distance to the TSS straight from PHYSICAL and TSS, pandas only.
    d = raw["PHYSICAL"] - tss
    oracle = pd.Series(0, index=raw.index)
    oracle[(d >= -98_304) & (d < 98_304)] = 1
    oracle[(d >= -57_344) & (d < 57_344)] = 2
    oracle_bins = ((d + 57_344) // 128).where(oracle == 2, -1)

    text = read_variants(shared / name)  # as the tool reads it: every column text
    for spec in (
        PositionSpec("variant_pos_in_window"),
        PositionSpec("PHYSICAL", window_start="enformer_start"),
        PositionSpec("PHYSICAL", window_centre="Transcription start site (TSS)"),
    ):
        p = place_table(text, GeometryConfig(ENFORMER, spec), name)
        assert p.cls.tolist() == oracle.tolist()
        assert p.bin.tolist() == oracle_bins.tolist()
        assert p.distance.tolist() == d.tolist()
        assert not p.outside_window.any()


def test_check_prints_the_study_class_counts(shared, tmp_path):
    """``perturbscore check`` on the example run file, pointed at the real tables."""
    import subprocess

    from .conftest import REPO, _entry_point

    text = (REPO / "examples" / "stablefm.toml").read_text(encoding="utf-8")
    for name in ["targets_human.txt", "basenji_relevant_metadata.csv", *TABLES]:
        text = text.replace(f'"{name}"', f'"{shared / name}"')
    run = tmp_path / "stablefm.toml"
    run.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [*_entry_point(), "check", str(run)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "8 prediction files not found" in done.stdout
    for name in TABLES:
        raw = pd.read_csv(shared / name)
        d = raw["PHYSICAL"] - raw["Transcription start site (TSS)"]
        out = int(((d < -98_304) | (d >= 98_304)).sum())
        inner = int(((d >= -57_344) & (d < 57_344)).sum())
        line = next(x for x in done.stdout.splitlines() if name in x)
        cells = line.split()
        assert int(cells[2]) == len(raw)
        assert [int(cells[3]), int(cells[5]), int(cells[7])] == [out, len(raw) - out - inner, inner]
    assert "55084   17142 31.1%    9915 18.0%   28027 50.9%" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stablefm.toml"]


def test_out_of_field_policies():
    from perturbscore.geometry import apply_out_of_field

    scores = np.array([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
    cls = np.array([0, 2, 0], np.int8)
    x, keep = apply_out_of_field("keep", scores, cls)
    assert x is scores and keep.all()
    x, keep = apply_out_of_field("na", scores, cls)
    assert np.isnan(x[[0, 2]]).all() and x[1].tolist() == [1.0, 2.0] and keep.all()
    assert scores[0, 0] == 0.0  # the input is not modified
    x, keep = apply_out_of_field("drop", scores, cls)
    assert keep.tolist() == [False, True, False]
    with pytest.raises(PerturbscoreError, match="keep, na, drop"):
        apply_out_of_field("zero", scores, cls)
