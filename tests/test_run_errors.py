"""Ordinary mistakes around ``run`` and ``import-scores``: exit 2, a sentence, nothing written.

Each goes through the installed console script in a subprocess, so the exit code, the
message and the absence of a traceback are what a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import _entry_point

TOML = "stablefm.toml"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threads", "0"], "--threads must be at least 1, not 0."),
        (["--chunk-rows", "0"], "--chunk-rows must be at least 1, not 0."),
        (["--engine", "dask", "--workers", "0"], "--workers must be at least 1, not 0."),
        (["--workers", "2"], "--scheduler and --workers belong to --engine dask."),
        (["--memory", "lots"], "memory size 'lots' not understood"),
    ],
)
def test_bad_options(study: Path, tmp_path: Path, cli, extra: list[str], message: str) -> None:
    before = _listing(study)
    r = cli("run", study / TOML, "--out", tmp_path / "o", *extra)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() and _listing(study) == before


def test_out_naming_an_existing_file(study: Path, tmp_path: Path, cli) -> None:
    target = tmp_path / "results.csv"
    target.write_text("the user's file")
    r = cli("run", study / TOML, "--out", target)
    assert r.returncode == 2 and "is an existing file, not a folder" in r.stderr
    assert target.read_text() == "the user's file"


def test_overwrite_replaces_a_dask_style_table_folder(study: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "o"
    assert cli("run", study / TOML, "--out", out, "--format", "parquet").returncode == 0
    # A partitioned table (a folder of parts, as older Dask runs wrote) under a table's name.
    table = out / "stab_diff_ave_relevant_comb.parquet"
    table.unlink()
    table.mkdir()
    (table / "part.000000.parquet").write_bytes(b"old")
    r = cli("run", study / TOML, "--out", out, "--format", "parquet", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert table.is_file() and not [p for p in out.iterdir() if p.name.startswith(".")]


MISSING = textwrap.dedent(
    """
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None  # as if the extra were not installed
    from perturbscore.cli import main
    sys.argv = ["perturbscore", *sys.argv[2:]]
    main()
    """
)


@pytest.mark.parametrize(
    ("modules", "extra", "wanted"),
    [
        ("dask,dask.array", ["--zarr"], "pip install 'perturbscore[dask]'"),
        ("zarr", ["--zarr"], "pip install 'perturbscore[stores]'"),
        ("distributed", ["--engine", "dask"], "pip install 'perturbscore[dask]'"),
    ],
)
def test_missing_extra_is_a_user_error(
    study: Path, tmp_path: Path, modules: str, extra: list[str], wanted: str
) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            MISSING,
            modules,
            "run",
            str(study / TOML),
            "--out",
            str(tmp_path / "o"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert wanted in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_verbosity_after_the_subcommand(study: Path, tmp_path: Path, cli) -> None:
    quiet = cli("run", study / TOML, "--out", tmp_path / "q", "-q")
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr
    loud = cli("run", study / TOML, "--out", tmp_path / "v", "-v", "--chunk-rows", "50")
    assert loud.returncode == 0 and "DEBUG: block 1 of" in loud.stderr
    normal = cli("run", study / TOML, "--out", tmp_path / "n")
    assert "INFO" in normal.stderr and "DEBUG" not in normal.stderr
    # stdout lists only the files written, one per line.
    lines = normal.stdout.splitlines()
    assert lines and all(Path(x).exists() for x in lines)
    assert (tmp_path / "n" / "manifest.json") in [Path(x) for x in lines]


def test_multi_allelic_warning_said_once_per_file(study: Path, tmp_path: Path, cli) -> None:
    import shutil

    text = (study / TOML).read_text()
    # One variant table named by 16 batches (16 prediction shards of the same variants).
    batches = []
    for i in range(16):
        for kind in ("ref", "alt"):
            shutil.copy(
                study / f"final_{kind}_preds_stab_snps_strand.npy", study / f"{kind}{i}.npy"
            )
        batches.append(
            f'{{ ref = "ref{i}.npy", alt = "alt{i}.npy", '
            'variants = "stab_snps_strand_final_variants.csv" }'
        )
    start = text.index("\n[[groups]]") + 1
    (study / "many.toml").write_text(
        text[:start]
        + '[[groups]]\nname = "stab"\nbatches = [\n  '
        + ",\n  ".join(batches)
        + ",\n]\n"
    )
    r = cli("run", study / "many.toml", "--out", tmp_path / "o", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("share an rsID") == 1


def test_import_scores_group_given_twice(tmp_path: Path, cli) -> None:
    r = cli(
        "import-scores",
        "stab=a.h5",
        "stab=b.h5",
        "--statistic",
        "SAD",
        "--targets",
        "t.txt",
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 2 and "group stab is given twice (a.h5 and b.h5)" in r.stderr


def test_import_scores_is_all_or_nothing(study: Path, tmp_path: Path, cli) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    def scores_file(path: Path, n: int, n_tracks: int) -> None:
        with h5py.File(path, "w") as f:
            f["SAD"] = np.ones((n, n_tracks), np.float16)
            for key, value in (
                ("snp", b"rs1"),
                ("chr", b"chr1"),
                ("ref_allele", b"A"),
                ("alt_allele", b"G"),
            ):
                f[key] = np.array([value] * n)
            f["pos"] = np.arange(n)

    scores_file(tmp_path / "a.h5", 30, 42)
    scores_file(tmp_path / "b.h5", 20, 41)  # the wrong model: fails after a.h5 was read
    r = cli(
        "import-scores",
        f"stab={tmp_path / 'a.h5'}",
        f"top={tmp_path / 'b.h5'}",
        "--statistic",
        "SAD",
        "--targets",
        study / "targets_human.txt",
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 2 and "41 tracks" in r.stderr
    assert not (tmp_path / "o").exists()
    # Every HDF5 handle was closed: the files can be rewritten at once.
    with h5py.File(tmp_path / "a.h5", "w"):
        pass


def test_sigterm_leaves_no_temporaries_in_a_users_folder(study: Path, tmp_path: Path) -> None:
    # The folder exists and holds the user's files: a failed run removes only its own.
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    env = {**os.environ}
    r = subprocess.run(
        [
            *_entry_point(),
            "run",
            str(study / TOML),
            "--out",
            str(out),
            "--nan",
            "error",
            "--center-bin",
            "99",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_every_missing_prediction_file_is_named(study: Path, tmp_path: Path, cli) -> None:
    """Predictions not there (the study's run file before the download): one message
    listing them all, not one per attempt."""
    gone = sorted(study.glob("final_*_preds_top_*.npy"))
    assert len(gone) == 4
    for p in gone:
        p.unlink()
    out = tmp_path / "o"
    r = cli("run", study / "stablefm.toml", "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert "4 prediction files not found: " in message
    assert all(p.name in message for p in gone) and not out.exists()


def test_a_mistyped_variant_table_names_its_batch_and_the_near_miss(
    study: Path, tmp_path: Path, cli
) -> None:
    """A variant-table path one letter off: the run file, group, batch and key, and the
    file that is there (the message named the path alone)."""
    toml = study / "stablefm.toml"
    text = toml.read_text()
    name = "stab_snps_new_strand_final_variants.csv"
    assert f'variants = "{name}"' in text
    toml.write_text(text.replace(name, "stab_snps_new_strand_final_variant.csv", 1))
    out = tmp_path / "o"
    r = cli("run", toml, "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert message == (
        f"perturbscore: error: {toml} group stab batch 2: variants "
        f"{study / 'stab_snps_new_strand_final_variant.csv'} not found (did you mean "
        f"{study / name}?). Check the paths (relative to the run file)."
    )
    assert not out.exists()
    toml.write_text(text.replace("_final_variants.csv", "_final_variants.tsv"))
    r = cli("run", toml, "--out", out)
    assert r.returncode == 2 and "the variant tables of 3 other batches are missing too" in r.stderr


def _digests(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_output_named_like_an_input_is_refused_even_with_overwrite(
    study: Path, tmp_path: Path, cli
) -> None:
    # A name template that gives a variant table's name, written into the study folder:
    # --overwrite replaces earlier outputs, never the run's inputs.
    text = (study / "stablefm.toml").read_text()
    text = text.replace(
        'name = "{group}_diff_{aggregation}_relevant_comb"',
        'name = "{group}_snps_strand_final_variants"',
    ).replace('aggregations = ["ave", "tss"]', 'aggregations = ["ave"]')
    (study / "collide.toml").write_text(text)
    before = _digests(study)
    r = cli("run", study / "collide.toml", "--out", study, "--format", "csv", "--overwrite")
    assert r.returncode == 2, r.stderr
    assert "would replace the run's input" in r.stderr
    assert "stab_snps_strand_final_variants.csv" in r.stderr and "Traceback" not in r.stderr
    assert _digests(study) == before
    assert not [p.name for p in study.iterdir() if p.name.startswith(".")]


def test_overwrite_replaces_only_earlier_outputs(study: Path, tmp_path: Path, cli) -> None:
    # --overwrite replaces what an earlier run (its manifest.json) wrote, never a
    # user's file under an output's name, a manifest.json of the user's, or another
    # command's outputs.
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text('{"my": "notes"}\n')
    r = cli("run", study / "stablefm.toml", "--out", out, "--overwrite")
    assert r.returncode == 2 and "which no earlier 'perturbscore run' wrote there" in r.stderr
    assert "manifest.json is not one perturbscore wrote" in r.stderr
    assert (out / "manifest.json").read_text() == '{"my": "notes"}\n'
    (out / "manifest.json").unlink()
    mine = out / "stab_diff_ave_relevant_comb.RData"
    mine.write_bytes(b"the user's own table")
    r = cli("run", study / "stablefm.toml", "--out", out, "--overwrite")
    assert r.returncode == 2 and "stab_diff_ave_relevant_comb.RData" in r.stderr
    assert mine.read_bytes() == b"the user's own table"
    # Without --overwrite the refusal says the same, rather than advise --overwrite,
    # which would only lead to the refusal above.
    r = cli("run", study / "stablefm.toml", "--out", out)
    assert r.returncode == 2 and "which no earlier 'perturbscore run' wrote there" in r.stderr
    assert "pass --overwrite" not in r.stderr and mine.read_bytes() == b"the user's own table"
    mine.unlink()
    assert cli("-q", "run", study / "stablefm.toml", "--out", out).returncode == 0
    again = cli("-q", "run", study / "stablefm.toml", "--out", out, "--overwrite")
    assert again.returncode == 0, again.stderr  # an earlier run's outputs: replaced
    # normalise --overwrite into that run's folder would replace its manifest.
    n = cli("normalise", out, "--background", "stab", "--out", tmp_path / "n")
    assert n.returncode == 0, n.stderr
    # A user's file under an output name in an earlier normalise's folder: the reason
    # given is the true one (that manifest.json is there, but does not list the file).
    theirs = tmp_path / "n" / "stab_abs_diff_quantile_ave.RData"
    kept = theirs.read_bytes()
    (tmp_path / "n" / "manifest.json").write_text(
        (tmp_path / "n" / "manifest.json").read_text().replace(theirs.name, "gone.RData")
    )
    r = cli("normalise", out, "--background", "stab", "--out", tmp_path / "n", "--overwrite")
    assert r.returncode == 2 and "(not listed in its manifest.json)" in r.stderr, r.stderr
    assert theirs.read_bytes() == kept
    into_run = cli("normalise", tmp_path / "n", "--background", "stab", "--out", out)
    assert into_run.returncode == 2  # (normalised tables are not a run to normalise)
    other = tmp_path / "other"
    assert cli("-q", "run", study / "stablefm.toml", "--out", other).returncode == 0
    before = (other / "manifest.json").read_bytes()
    r = cli("normalise", out, "--background", "stab", "--out", other, "--overwrite")
    assert r.returncode == 2 and "manifest.json is that of a run output" in r.stderr, r.stderr
    assert (other / "manifest.json").read_bytes() == before



def test_overwrite_leaves_only_the_new_outputs(study: Path, tmp_path: Path, cli) -> None:
    """An earlier output the new command does not write again is removed with the commit
    (run, normalise): a table beside a manifest that does not list it would be taken
    for part of the new output.  A file of the user's in the folder stays."""
    out = tmp_path / "o"
    assert cli("-q", "run", study / TOML, "--out", out).returncode == 0
    (out / "notes.txt").write_text("mine")
    ave_only = study / "ave.toml"
    text = (study / TOML).read_text()
    ave_only.write_text(text.replace('aggregations = ["ave", "tss"]', 'aggregations = ["ave"]'))
    r = cli("-q", "run", ave_only, "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {o["path"] for o in manifest["outputs"]}
    assert listed == {"stab_diff_ave_relevant_comb.RData", "top_diff_ave_relevant_comb.RData"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*listed, "manifest.json", "notes.txt"])
    norm = tmp_path / "n"
    assert cli("-q", "normalise", out, "--background", "stab", "--out", norm).returncode == 0
    r = cli(
        "-q", "normalise", out, "--background", "stab", "--out", norm, "--overwrite",
        "--statistic", "quantile",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    listed = {o["path"] for o in json.loads((norm / "manifest.json").read_text())["outputs"]}
    assert listed and all("quantile" in name for name in listed)
    assert sorted(p.name for p in norm.iterdir()) == sorted([*listed, "manifest.json"])


def test_a_comparison_folder_is_not_an_output_folder(study: Path, tmp_path: Path, cli) -> None:
    """run and normalise into compare's folder would mix its report with other tables."""
    run = tmp_path / "r"
    assert cli("-q", "run", study / TOML, "--out", run).returncode == 0
    comp = tmp_path / "c"
    assert cli("-q", "compare", run, "--a", "stab", "--b", "top", "--out", comp).returncode == 0
    before = _digests(comp)
    for args in (
        ["run", study / TOML, "--out", comp],
        ["normalise", run, "--background", "stab", "--out", comp, "--overwrite"],
    ):
        r = cli("-q", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "holds the outputs of 'perturbscore compare' (compare.json)" in r.stderr
    assert _digests(comp) == before
