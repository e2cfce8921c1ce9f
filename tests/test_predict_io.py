"""perturbscore predict: BCF input, Zarr output (with resume after SIGKILL), the [predict] section.

Oracles: the VCF text the test writes (a BCF of the same records must give the same
tables and arrays), the arrays read back with zarr itself and numpy means, and the .npy
run of the same options.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyfaidx")

from perturbscore.errors import PerturbscoreError  # noqa: E402
from perturbscore.predict import STATE_DIR, ZARR_OUTPUTS, run_predict  # noqa: E402

from .test_predict import (  # noqa: E402
    NB,
    Probe,
    _args,
    _kill_after,
    cli,
    load,
    many,
    opts,
    predict_argv,
    tiny_model,
    world,
)

__all__ = ["many", "tiny_model", "world"]  # fixtures, used by name


# --- VCF and BCF ----------------------------------------------------------------------
def _records(world: dict) -> list[tuple[str, int, str | None, str, tuple[str, ...]]]:
    """Records of both files: a multi-allelic one, one without an ID, one outside the input."""
    var = world["var"]
    other = "A" if var.REF[0] != "A" else "C"
    return [
        ("chr1", int(var.pos[0]), "rs0", var.REF[0], (var.ALT[0], other)),
        ("chr1", int(var.pos[1]), None, var.REF[1], (var.ALT[1],)),
        ("chr1", int(var.pos[3]), "rs3", var.REF[3], (var.ALT[3],)),
    ]


def _write_vcf(path: Path, records: list) -> None:
    lines = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=chr1,length=3000>",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    lines += [f"{c}\t{p}\t{i or '.'}\t{r}\t{','.join(a)}\t.\t.\t." for c, p, i, r, a in records]
    path.write_text("\n".join(lines) + "\n")


def _write_bcf(path: Path, records: list, compressed: bool = True) -> None:
    pysam = pytest.importorskip("pysam")
    header = pysam.VariantHeader()
    header.add_line("##contig=<ID=chr1,length=3000>")
    with pysam.VariantFile(str(path), "wb", header=header) as fh:  # BGZF, as bcftools -Ob
        for chrom, pos, ident, ref, alts in records:
            fh.write(fh.new_record(contig=chrom, start=pos - 1, alleles=(ref, *alts), id=ident))
    if not compressed:  # bcftools -Ou: the raw BCF bytes
        path.write_bytes(gzip.decompress(path.read_bytes()))
        assert path.read_bytes()[:3] == b"BCF"


@pytest.mark.parametrize("compressed", [True, False])
def test_bcf_gives_the_tables_and_arrays_of_the_same_vcf(
    world: dict, tmp_path: Path, compressed: bool
) -> None:
    records = _records(world)
    vcf, bcf = tmp_path / "v.vcf", tmp_path / "v.bcf"
    _write_vcf(vcf, records)
    _write_bcf(bcf, records, compressed)
    for name, path in (("vcf", vcf), ("bcf", bcf)):
        run_predict(
            opts(world, tmp_path / name, variants=path, centre_column=None), predictor=Probe()
        )
    vr, va, vt, vm = load(tmp_path / "vcf")
    br, ba, bt, bm = load(tmp_path / "bcf")
    # the oracle: the records as written, one row per ALT allele, '.' for the missing ID
    expected = [(c, str(p), i or ".", r, a) for c, p, i, r, alts in records for a in alts]
    assert [tuple(row) for row in vt[["CHROM", "POS", "ID", "REF", "ALT"]].to_numpy()] == expected
    pd.testing.assert_frame_equal(bt, vt)
    np.testing.assert_array_equal(br, vr)
    np.testing.assert_array_equal(ba, va)
    assert bm["forward_passes"] == vm["forward_passes"] and bm["variants"] == 4


def test_bcf_without_pysam_exits_2_with_the_pip_line(world: dict, tmp_path: Path) -> None:
    bcf = tmp_path / "v.bcf"
    _write_bcf(bcf, _records(world))
    shim = tmp_path / "shim" / "pysam"
    shim.mkdir(parents=True)  # found before the installed pysam: as if it were missing
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'pysam'\")\n")
    out = tmp_path / "never"
    r = cli(*predict_argv(world, bcf, "x", out), env={"PYTHONPATH": str(shim.parent)})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert f"reading the BCF file {bcf} needs the Python package 'pysam'" in r.stderr
    assert "pip install 'perturbscore[vcf]'" in r.stderr
    assert not out.exists()


# --- Zarr output ----------------------------------------------------------------------
def _zarr_arrays(out: Path) -> tuple[np.ndarray, np.ndarray, tuple]:
    zarr = pytest.importorskip("zarr")
    root = zarr.open_group(str(out / "predictions.zarr"), mode="r")
    return root["ref"][:], root["alt"][:], root["ref"].chunks


@pytest.mark.parametrize("rows", [1, 5, None])  # one row, a prime, all (6 rows, small)
def test_zarr_holds_the_npy_arrays_whatever_the_chunks(
    world: dict, tmp_path: Path, rows: int | None
) -> None:
    run_predict(opts(world, tmp_path / "npy", bins=3, dtype="float16"), predictor=Probe())
    run_predict(
        opts(world, tmp_path / "z", bins=3, dtype="float16", format="zarr", zarr_chunk_rows=rows),
        predictor=Probe(),
    )
    ref, alt, table, _ = load(tmp_path / "npy")
    zref, zalt, chunks = _zarr_arrays(tmp_path / "z")
    assert zref.dtype == np.float16 and chunks == (rows or 6, 3, 8)
    np.testing.assert_array_equal(zref, ref)
    np.testing.assert_array_equal(zalt, alt)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "z" / "variants.csv", dtype=str, keep_default_na=False), table
    )
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == sorted(ZARR_OUTPUTS.values())
    man = json.loads((tmp_path / "z" / "predict_manifest.json").read_text())
    assert man["format"] == "zarr" and man["zarr_chunk_rows"] == (rows or 6)


def test_the_zarr_run_file_scores_through_perturbscore_run(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "z"
    run_predict(opts(world, out, bins=3, format="zarr", zarr_chunk_rows=4), predictor=Probe())
    cfg = tomllib.loads((out / "predict.toml").read_text())
    batch = cfg["groups"][0]["batches"][0]
    assert (batch["ref"], batch["alt"]) == ("predictions.zarr::ref", "predictions.zarr::alt")
    r = cli("run", str(out / "predict.toml"), "--out", str(tmp_path / "scores"))
    assert r.returncode == 0, r.stderr
    ref, alt, _ = _zarr_arrays(out)
    got = pd.read_parquet(tmp_path / "scores" / "predicted_diff_ave.parquet")
    expected = np.abs(alt.astype(np.float64).mean(axis=1) - ref.astype(np.float64).mean(axis=1))
    np.testing.assert_allclose(
        got[[f"T{i:02d}" for i in range(8)]].to_numpy(), expected, rtol=1e-12
    )
    assert list(got.rsID) == list(world["var"].rsID)


class Killed(BaseException):
    """Stands in for a process killed while it builds the Zarr store."""


def test_a_run_stopped_while_building_the_store_resumes(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perturbscore import predict

    run_predict(opts(world, tmp_path / "npy"), predictor=Probe())
    real = predict.write_zarr

    def build_then_die(parts: dict, dest: Path, *a: object) -> None:
        real(parts, dest, *a)  # the temporary store exists, complete or not
        raise Killed

    out = tmp_path / "z"
    monkeypatch.setattr(predict, "write_zarr", build_then_die)
    with pytest.raises(Killed):
        run_predict(opts(world, out, format="zarr", resume=True), predictor=Probe())
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR]  # its temporary store went
    res = run_predict(opts(world, out, format="zarr", resume=True), predictor=Probe())
    assert res.summary["resumed_batches"] == -(-res.summary["forward_passes"] // 4)  # all
    ref, alt, _, _ = load(tmp_path / "npy")
    zref, zalt, _ = _zarr_arrays(out)
    np.testing.assert_array_equal(zref, ref)
    np.testing.assert_array_equal(zalt, alt)


def test_zarr_resume_after_sigkill_gives_identical_arrays(
    world: dict, tiny_model: Path, many: dict, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    args = _args(
        world, many, tiny_model, out, "--resume", "--format", "zarr", "--zarr-chunk-rows", "7"
    )
    point = random.Random(7).randint(2, 60)
    killed = _kill_after(args, point, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "predictions.zarr").exists()  # nothing final before the end
    logged = len((out / STATE_DIR / "batches.log").read_text().splitlines())
    assert point <= logged < 244
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(out / n) for n in ZARR_OUTPUTS.values()]
    ref, alt, chunks = _zarr_arrays(out)
    clean_ref, clean_alt, clean_table, _ = many["clean"]
    np.testing.assert_array_equal(ref, clean_ref)
    np.testing.assert_array_equal(alt, clean_alt)
    table = pd.read_csv(out / "variants.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(table, clean_table)
    assert chunks == (7, NB, 8)
    assert sorted(p.name for p in out.iterdir()) == sorted(ZARR_OUTPUTS.values())
    man = json.loads((out / "predict_manifest.json").read_text())
    assert man["resumed_batches"] == logged


# --- the [predict] section ------------------------------------------------------------
def _run_file(world: dict, folder: Path, extra: str = "") -> Path:
    """A run file in ``folder`` naming the world's files relatively (as users write them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rel = {k: os.path.relpath(world[k], folder) for k in ("variants", "fa", "targets")}
    path = folder / "run.toml"
    path.write_text(
        f'targets = "{rel["targets"]}"\n\n[predict]\nvariants = "{rel["variants"]}"\n'
        f'genome = "{rel["fa"]}"\nmodel = "probe"\nout = "pred"\ncentre_column = "TSS"\n'
        f'bins = "all"\nbatch_size = 2\nwhere = ["biosample=GM12878"]\n{extra}'
    )
    return path


def test_predict_section_gives_the_options_and_the_command_line_wins(
    world: dict, tmp_path: Path
) -> None:
    from perturbscore.predict_config import predict_options, read_predict_section

    path = _run_file(world, tmp_path / "cfg", 'dtype = "float16"\n')
    values = read_predict_section(path)
    o = predict_options({**values, "batch_size": 3}, path, progress=False)  # typed: wins
    assert o.variants.resolve() == world["variants"].resolve()
    assert o.targets.resolve() == world["targets"].resolve()  # the top-level targets
    assert o.out == tmp_path / "cfg" / "pred"  # relative to the run file
    assert (o.batch_size, o.bins, o.dtype, o.centre_column) == (3, None, "float16", "TSS")
    run_predict(o, predictor=Probe())
    run_predict(
        opts(world, tmp_path / "direct", batch_size=3, dtype="float16", selection=o.selection),
        predictor=Probe(),
    )
    got, want = load(o.out), load(tmp_path / "direct")
    assert got[0].shape == (6, NB, 6)  # the section's where = kept 6 of 8 tracks
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_a_run_file_with_a_predict_section_still_runs() -> None:
    from perturbscore.runfile import parse_run_config

    text = (
        'targets = "t.txt"\n[predict]\nvariants = "v.csv"\n[[groups]]\nname = "g"\n'
        'batches = [{ ref = "r.npy", alt = "a.npy", variants = "v.csv" }]\n'
    )
    cfg = parse_run_config(tomllib.loads(text), Path("."))
    assert cfg.groups[0].name == "g"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("bach_size = 2\n", "[predict]: unknown key bach_size (did you mean batch_size?);"),
        ('device = 3\nresume = "yes"\n', "[predict] device: expected a device string"),
        (
            'reverse_complement = "true"\n',
            '[predict] reverse_complement: expected true or false, got the string "true"; '
            "write reverse_complement = true.",
        ),
        (
            'format = "hdf5"\n',
            '[predict] format: expected one of "npy", "zarr", got the string "hdf5"',
        ),
    ],
)
def test_predict_section_errors_exit_2_naming_file_and_key(
    world: dict, tmp_path: Path, extra: str, needle: str
) -> None:
    path = _run_file(world, tmp_path / "cfg", extra)
    r = cli("predict", str(path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"perturbscore: error: {path} [predict]")
    assert needle in r.stderr
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.toml"]  # nothing written


def test_a_bad_track_query_names_the_file_and_key(world: dict, tmp_path: Path) -> None:
    from perturbscore.predict_config import read_predict_section

    path = _run_file(world, tmp_path / "cfg")
    path.write_text(path.read_text().replace('"biosample=GM12878"', '"biosample"'))
    with pytest.raises(PerturbscoreError, match=r"run.toml \[predict\] where: track query"):
        read_predict_section(path)


def test_run_file_without_predict_section_or_keys(world: dict, tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('targets = "t.txt"\n')
    with pytest.raises(PerturbscoreError, match=r"reads a \[predict\] table .* got none"):
        from perturbscore.predict_config import read_predict_section

        read_predict_section(path)
    path.write_text('[predict]\nvariants = "v.csv"\n')
    r = cli("predict", str(path))
    assert r.returncode == 2 and "needs --genome, --model, --targets, --out" in r.stderr
    assert f"([predict] of {path} or the command line)" in r.stderr


def test_the_cli_reads_the_section_and_overrides_it(
    world: dict, tiny_model: Path, tmp_path: Path
) -> None:
    path = _run_file(world, tmp_path / "cfg")
    text = path.read_text().replace('model = "probe"', f'model = "{tiny_model}"')
    path.write_text(text.replace('bins = "all"', "bins = 5"))
    r = cli("predict", str(path), "--format", "zarr", "--bins", "3")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "cfg" / "pred"
    assert r.stdout.split() == [str(out / n) for n in ZARR_OUTPUTS.values()]
    man = json.loads((out / "predict_manifest.json").read_text())
    assert man["format"] == "zarr" and man["batch_size"] == 2  # the CLI's, the file's
    assert man["geometry"]["kept_bins"] == [NB // 2 - 1, NB // 2, NB // 2 + 1]
    run_predict(
        opts(
            world,
            tmp_path / "lib",
            model=str(tiny_model),
            bins=3,
            batch_size=2,
            selection=None,
            format="npy",
        )
    )
    zref, _, _ = _zarr_arrays(out)
    lib = load(tmp_path / "lib")[0]
    keep = [i for i in range(8) if i % 4 != 2]  # the section's biosample=GM12878 tracks
    np.testing.assert_array_equal(zref, lib[:, :, keep])


def test_a_predict_section_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Notepad and Excel save UTF-8 with a BOM: the run file's [predict] reads as without.
    from perturbscore.predict_config import read_predict_section

    text = "[predict]\nbatch_size = 8\n"
    (tmp_path / "plain.toml").write_text(text, encoding="utf-8")
    (tmp_path / "bom.toml").write_text(text, encoding="utf-8-sig")
    plain = read_predict_section(tmp_path / "plain.toml")
    assert read_predict_section(tmp_path / "bom.toml") == plain and plain
