"""Integrity checks: REF == ALT by class, shifted tables, duplicate vectors, cross-group."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.check import check_run_file
from perturbscore.integrity import IntegrityChecker, row_identical
from perturbscore.integrity_keys import id_keys, row_hashes

from .conftest import _entry_point, write_targets

N_TRACKS, N_BINS = 6, 3
# Distances from the centre covering every class and both sides of each edge.
DISTANCES = [
    -150_000,
    -98_305,
    -98_304,
    -60_000,
    -57_345,
    -57_344,
    -1_000,
    0,
    500,
    57_343,
    57_344,
    90_000,
    98_303,
    98_304,
    120_000,
    196_000,
]


def _cls(d: int) -> int:
    if -57_344 <= d < 57_344:
        return 2
    return 1 if -98_304 <= d < 98_304 else 0


def make_dataset(
    folder: Path,
    rows: tuple[int, int] = (40, 28),
    shift: bool = False,
    shared_same: bool = True,
    copy_vector: bool = False,
    seed: int = 3,
) -> Path:
    """Two groups of one batch each; out-of-field rows have ALT == REF exactly.

    Group b's row 0 is group a's row 0 again (same ID key); its predictions equal a's
    (``shared_same``) or differ.  ``shift`` rolls a's variant table by one row against
    its predictions.  ``copy_vector`` gives a's in-field row 7 the predictions of row 6.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_targets(
        folder / "targets.txt",
        [f"T{i}" for i in range(N_TRACKS)],
        [f"DNASE:cell{i}" for i in range(N_TRACKS)],
        file="x",
    )
    first: dict[str, object] = {}
    for g, n in zip("ab", rows, strict=True):
        d = np.array([DISTANCES[i % len(DISTANCES)] for i in range(n)])
        if g == "b":
            d = d[::-1].copy()
        cls = np.array([_cls(int(x)) for x in d])
        ref = rng.gamma(2.0, 1.5, size=(n, N_BINS, N_TRACKS)).astype(np.float32)
        alt = (ref * rng.lognormal(0, 0.2, size=ref.shape)).astype(np.float32)
        alt[cls == 0] = ref[cls == 0]
        genes = [f"ENSG{g}{i:03d}" for i in range(n)]
        rsids = [f"rs{g}{i}" for i in range(n)]
        if g == "a":
            first = {"d": d[0], "gene": genes[0], "rs": rsids[0], "ref": ref[0], "alt": alt[0]}
            if copy_vector:
                assert cls[6] == 2 and cls[7] == 2
                ref[7], alt[7] = ref[6], alt[6]
        else:
            d[0], genes[0], rsids[0] = first["d"], first["gene"], first["rs"]  # type: ignore[assignment]
            cls[0] = _cls(int(d[0]))
            if shared_same:
                ref[0], alt[0] = first["ref"], first["alt"]  # type: ignore[assignment]
        np.save(folder / f"ref_{g}.npy", ref)
        np.save(folder / f"alt_{g}.npy", alt)
        table = pd.DataFrame(
            {
                "GENE": genes,
                "rsID": rsids,
                "REF": "A",
                "ALT": "G",
                "PHYSICAL": 1_000_000 + d,
                "TSS": 1_000_000,
                "variant_pos_in_window": 196_608 + d,
            }
        )
        if shift and g == "a":
            table = table.iloc[np.roll(np.arange(n), 1)].reset_index(drop=True)
        table.to_csv(folder / f"variants_{g}.csv", index=False)
    run = folder / "run.toml"
    run.write_text(
        'targets = "targets.txt"\n\n[geometry]\nmodel = "enformer"\n\n[variants]\n'
        'position = "variant_pos_in_window"\n\n[scores]\naggregations = ["ave", "tss"]\n'
        'statistics = ["abs_diff", "diff"]\n\n'
        + "".join(
            f'[[groups]]\nname = "{g}"\nbatches = [{{ ref = "ref_{g}.npy", alt = "alt_{g}.npy", '
            f'variants = "variants_{g}.csv" }}]\n\n'
            for g in "ab"
        ),
        encoding="utf-8",
    )
    return run


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_entry_point(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_row_identical_is_bitwise():
    ref = np.zeros((4, 2, 3), np.float32)
    alt = ref.copy()
    ref[1, 0, 0], alt[1, 0, 0] = np.nan, np.nan  # same NaN bits: identical
    alt[2, 1, 2] = -0.0  # -0.0 is not the +0.0 the model gave for REF
    alt[3, 1, 1] = np.float32(1e-30)
    assert row_identical(ref, alt).tolist() == [True, True, False, False]
    assert row_identical(ref.astype(np.float16), ref.astype(np.float16)).all()


def test_row_hashes():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [-0.0, 0.0], [0.0, 0.0]])
    h = row_hashes(x)
    assert h[0] == h[1] and h[0] != h[2] and h[3] == h[4]


def test_aligned_dataset_is_clean(tmp_path):
    run = make_dataset(tmp_path / "ok")
    rep = check_run_file(run)
    res = rep.integrity
    assert res is not None and res["clean"] and res["exit_code"] == 0, res
    # Oracle: REF == ALT exactly on the class-0 rows the builder made identical.
    va = pd.read_csv(tmp_path / "ok" / "variants_a.csv")
    vb = pd.read_csv(tmp_path / "ok" / "variants_b.csv")
    d = pd.concat([va, vb])["variant_pos_in_window"] - 196_608
    n0 = int(((d < -98_304) | (d >= 98_304)).sum())
    assert res["identical_rows"]["total"] == res["identical_rows"]["outside_input"] == n0
    assert res["rows"] == 68 and res["cross_group_keys"] == 1
    counts = rep.geometry["classes"]["total"]  # type: ignore[index]
    assert counts["outside_input"] == n0 and sum(counts.values()) == 68
    done = _cli("check", str(run))
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout and "outside_input" in done.stdout


def test_shifted_table_is_flagged(tmp_path):
    run = make_dataset(tmp_path / "shifted", shift=True)
    res = check_run_file(run).integrity
    assert res is not None and not res["clean"] and res["exit_code"] == 3
    f = res["findings"]
    assert f["identical_in_field"] > 0 and f["differing_out_of_field"] > 0
    # The first offender's line: table row i is line i + 2; check it against the files.
    ex = res["examples"]["differing_out_of_field"][0]
    va = pd.read_csv(tmp_path / "shifted" / "variants_a.csv")
    row = ex["line"] - 2
    assert ex["id"].split()[:2] == [va["GENE"][row], va["rsID"][row]]
    assert abs(va["variant_pos_in_window"][row] - 196_608) >= 98_304
    ref, alt = (np.load(tmp_path / "shifted" / f"{k}_a.npy") for k in ("ref", "alt"))
    assert not np.array_equal(ref[row], alt[row])
    done = _cli("check", str(run))
    assert done.returncode == 3, done.stderr
    assert "FLAG" in done.stdout and f"line {ex['line']}" in done.stdout


def test_duplicate_vectors_and_cross_group(tmp_path):
    res = check_run_file(make_dataset(tmp_path / "dup", copy_vector=True)).integrity
    assert res is not None
    assert res["findings"]["duplicate_vectors"] == 2 and res["duplicate_vector_sets"] == 1
    lines = [r["line"] for r in res["examples"]["duplicate_vectors"][0]["first"]]
    assert lines == [8, 9]  # rows 6 and 7 of group a
    res = check_run_file(make_dataset(tmp_path / "mis", shared_same=False)).integrity
    assert res is not None and res["findings"]["cross_group_mismatch"] == 1
    ex = res["examples"]["cross_group_mismatch"][0]
    assert (ex["group"], ex["line"], ex["first_group"]) == ("b", 2, "a")
    # People read the track's identifier, not a column number of unstated base.
    tracks = pd.read_csv(tmp_path / "mis" / "targets.txt", sep="\t")["identifier"]
    assert ex["track"] == tracks[ex["column"]]
    done = _cli("check", str(tmp_path / "mis" / "run.toml"))
    assert f"track {ex['track']} differs by" in done.stdout, done.stdout
    assert "1 set\n" in _cli("check", str(tmp_path / "dup" / "run.toml")).stdout


def test_block_size_never_changes_the_result(tmp_path):
    run = make_dataset(tmp_path / "c", shift=True, copy_vector=True)
    row = 2 * N_BINS * N_TRACKS * 4
    results = [check_run_file(run, block_bytes=b).integrity for b in (1, 7 * row, 10**9)]
    assert results[0] == results[1] == results[2]


def test_checker_without_classes_counts_only():
    c = IntegrityChecker()
    same = np.array([True, False])
    c.update("g", 1, 0, same, None, np.array([[0.0, 0.0], [1.0, 2.0]]), ["x", "y"])
    res = c.finish()
    assert res["clean"] and res["identical_rows"]["unclassified"] == 1
    json.dumps(res)


def test_id_keys():
    df = pd.DataFrame({"GENE": ["g1", "g2"], "rsID": ["rs1", "rs2"]})
    assert list(id_keys(df, ["GENE", "rsID"])) == ["g1\x1frs1", "g2\x1frs2"]


def test_missing_predictions_geometry_only(tmp_path):
    run = make_dataset(tmp_path / "m")
    for p in (tmp_path / "m").glob("*.npy"):
        p.unlink()
    done = _cli("check", str(run))
    assert done.returncode == 0, done.stderr
    assert "not checked: 4 prediction files not found (ref_a.npy, " in done.stdout
    assert "outside_input" in done.stdout
    # One of them missing is a wrong path, not this mode (tests/test_check.py).


def test_run_dir(tmp_path):
    run = make_dataset(tmp_path / "s", shift=True)
    rep = check_run_file(run)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(
        json.dumps({"geometry": rep.geometry, "integrity": rep.integrity})
    )
    done = _cli("check", str(out))
    assert done.returncode == 3 and "FLAG" in done.stdout and "outside_input" in done.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _cli("check", str(empty))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no manifest.json" in done.stderr and list(empty.iterdir()) == []


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("variant_pos_in_window", "no_such_column"), 'no column "no_such_column"'),
        (('model = "enformer"', 'model = "basenji"'), 'unknown model "basenji"'),
    ],
)
def test_user_errors_exit_2(tmp_path, edit, needle):
    run = make_dataset(tmp_path / "e")
    before = sorted(p.name for p in (tmp_path / "e").iterdir())
    run.write_text(run.read_text().replace(*edit), encoding="utf-8")
    done = _cli("check", str(run))
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("perturbscore: error:")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == before


def test_nan_predictions_are_flagged_as_run_would_refuse_them(tmp_path):
    # check said "clean" (exit 0) for predictions that 'perturbscore run' refuses.
    run = make_dataset(tmp_path / "nan")
    alt = np.load(tmp_path / "nan" / "alt_a.npy")
    alt[5, 1, 0] = np.nan
    np.save(tmp_path / "nan" / "alt_a.npy", alt)
    done = _cli("check", str(run))
    assert done.returncode == 3, done.stderr
    assert "FLAG 1 NaN or Inf value in" in done.stdout and "alt_a.npy" in done.stdout
    assert "flagged: NaN or Inf in the predictions" in done.stdout
    assert _cli("run", str(run), "--out", str(tmp_path / "o")).returncode == 2
