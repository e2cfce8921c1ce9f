"""Calico-style scores files: re-select, normalise, compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore.calico import import_scores
from perturbscore.compare import compare_groups
from perturbscore.errors import PerturbscoreError
from perturbscore.tracks import selection_from_options

h5py = pytest.importorskip("h5py")


def _scores_file(path: Path, n: int, n_tracks: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sad = (rng.normal(0, 1, size=(n, n_tracks)) + shift).astype(np.float16)
    with h5py.File(path, "w") as f:
        f["SAD"] = sad
        f["logSAD"] = np.log1p(np.abs(sad))
        f["snp"] = np.array([f"rs{seed}{i}".encode() for i in range(n)])
        f["chr"] = np.array([b"chr22"] * n)
        f["pos"] = np.arange(1000, 1000 + n)
        f["ref_allele"] = np.array([b"T"] * n)
        f["alt_allele"] = np.array([b"F" if i % 2 else b"C" for i in range(n)])
    return sad


@pytest.fixture()
def scores(study: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    return {
        "stab": _scores_file(tmp_path / "stab.h5", 300, 42, 0.0, 1),
        "top": _scores_file(tmp_path / "top.h5", 500, 42, 0.4, 2),
    }


def test_reselect_and_zscore(study: Path, tmp_path: Path, scores: dict) -> None:
    sel = selection_from_options(where=["biosample=GM12878"])
    res = import_scores(
        {g: tmp_path / f"{g}.h5" for g in scores},
        "SAD",
        study / "targets_human.txt",
        tmp_path / "o",
        sel,
        normalise="zscore",
    )
    top = pd.read_parquet(res.tables["top"])
    targets = pd.read_csv(study / "targets_human.txt", sep="\t")
    idx = targets.index[targets["description"].str.contains("GM12878")].to_numpy()
    both = np.vstack([scores["stab"], scores["top"]]).astype(np.float64)[:, idx]
    want = (scores["top"].astype(np.float64)[:, idx] - both.mean(0)) / both.std(0, ddof=1)
    np.testing.assert_allclose(top.iloc[:, : len(idx)].to_numpy(), want, rtol=1e-10, atol=1e-12)
    assert list(top.columns[len(idx) :]) == ["rsID", "chr", "pos", "REF", "ALT"]
    assert set(top["ALT"]) == {"C", "F"} and top["pos"].iloc[0] == "1000"
    # ... and the folder compares like a run's.
    tests = compare_groups(tmp_path / "o", "stab", "top").tests
    assert len(tests) == len(idx) and (tests["aggregation"] == "none").all()
    assert (tests["p_adj_greater"] < 1e-4).all()  # top was shifted up on every track


def test_bad_scores_inputs(study: Path, tmp_path: Path, scores: dict, cli) -> None:
    with pytest.raises(
        PerturbscoreError, match=r"no statistic 'SAR'; it holds SAD, logSAD\."
    ):
        import_scores(
            {"stab": tmp_path / "stab.h5"}, "SAR", study / "targets_human.txt", tmp_path / "o"
        )
    _scores_file(tmp_path / "small.h5", 10, 40, 0, 3)
    r = cli(
        "import-scores",
        f"x={tmp_path / 'small.h5'}",
        "--statistic",
        "SAD",
        "--targets",
        study / "targets_human.txt",
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 2 and "SAD has 40 tracks, but the track table" in r.stderr
    assert not (tmp_path / "o").exists()
    r = cli(
        "import-scores",
        str(tmp_path / "stab.h5"),
        "--statistic",
        "SAD",
        "--targets",
        study / "targets_human.txt",
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 2 and "write GROUP=FILE" in r.stderr


def test_cli_import_then_compare(study: Path, tmp_path: Path, scores: dict, cli) -> None:
    r = cli(
        "import-scores",
        f"stab={tmp_path / 'stab.h5'}",
        f"top={tmp_path / 'top.h5'}",
        "--statistic",
        "logSAD",
        "--targets",
        study / "targets_human.txt",
        "--index",
        4,
        "--index",
        0,
        "--out",
        tmp_path / "o",
        "--format",
        "rds",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith("stab_logSAD.rds")
    r = cli("compare", tmp_path / "o", "--a", "stab", "--b", "top", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "c" / "tests.csv")) == 2


@pytest.mark.parametrize("renames", [1, 2])
def test_import_killed_while_replacing_an_earlier_one(
    study: Path, tmp_path: Path, scores: dict, cli, renames: int
) -> None:
    """SIGKILL between two renames of the commit (the harness of tests.test_resume: no
    cleanup runs): no reader mixes the two imports, and the next command finishes it."""
    import signal

    from perturbscore.outputs import JOURNAL

    from .test_resume import kill_in_commit

    def args(out: Path, statistic: str, *extra: str) -> list[str]:
        return ["import-scores", f"stab={tmp_path / 'stab.h5'}", f"top={tmp_path / 'top.h5'}",
                "--statistic", statistic, "--targets", str(study / "targets_human.txt"),
                "--index", "0", "--index", "3", "--out", str(out), *extra]  # fmt: skip

    def tables(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".parquet"}

    clean = tmp_path / "clean"
    assert cli(*args(clean, "SAD")).returncode == 0
    out = tmp_path / "o"
    assert cli(*args(out, "logSAD")).returncode == 0
    killed = kill_in_commit(args(out, "SAD", "--overwrite"), renames)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / JOURNAL).is_file() and not (out / "manifest.json").exists()
    r = cli("compare", out, "--a", "stab", "--b", "top", "--out", tmp_path / "c")
    assert r.returncode == 2 and "killed while it published" in r.stderr, r.stderr
    again = cli(*args(out, "SAD"))
    assert again.returncode == 2 and "finished the commit of an interrupted run" in again.stderr
    assert tables(out) == tables(clean)  # the new import whole, none of the earlier one
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", ["parquet", "rdata"])
def test_import_memory_budget_is_a_ceiling(
    study: Path, tmp_path: Path, scores: dict, cli, fmt: str
) -> None:
    """Trial 7, repro 17: --memory 1KB was accepted; like run and normalise, a budget below
    what the import needs is refused up front (exit 2, one sentence, nothing written), and
    the minimum it names runs, writing the tables a default budget writes."""
    import re

    base = [
        "import-scores",
        f"stab={tmp_path / 'stab.h5'}",
        f"top={tmp_path / 'top.h5'}",
        "--statistic",
        "SAD",
        "--targets",
        study / "targets_human.txt",
        "--format",
        fmt,
    ]
    small = tmp_path / "small"
    r = cli(*base, "--out", small, "--memory", "1KB")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.startswith(
        "perturbscore: error: memory budget 1,000 bytes is too small: import-scores needs at "
        "least "
    ) and r.stderr.count("\n") == 1, r.stderr
    assert not small.exists()
    found = re.search(r"at least ([\d,]+) bytes .*raise --memory to (\d+)MiB or more\.$", r.stderr)
    assert found, r.stderr
    need = int(found.group(1).replace(",", ""))
    r = cli(*base, "--out", small, "--memory", str(need - 1))
    assert r.returncode == 2 and "too small" in r.stderr and not small.exists(), r.stderr
    r = cli(*base, "--out", small, "--memory", str(need))  # one row per block
    assert r.returncode == 0, r.stderr
    r = cli(*base, "--out", tmp_path / "default")
    assert r.returncode == 0, r.stderr
    for g in ("stab", "top"):
        name = f"{g}_SAD{'.parquet' if fmt == 'parquet' else '.RData'}"
        assert (small / name).read_bytes() == (tmp_path / "default" / name).read_bytes(), name
