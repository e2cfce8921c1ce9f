"""The memory budget is a ceiling: a real process's peak RSS stays within budget + baseline.

Peak RSS is the kernel's ``VmHWM`` of the process that ran the command (read by a
small harness around the real console entry point just before it exits).  The
baseline is the same command on a tiny dataset: the interpreter, the libraries and
whatever they allocate once, which the budget does not cover.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import write_targets

BUDGET = 48 * 2**20

HARNESS = textwrap.dedent(
    """
    import os, sys
    from perturbscore.cli import main
    sys.argv = ["perturbscore", *sys.argv[1:]]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(os.environ["HWM_FILE"], "w").write(line.split()[1])
    sys.exit(code)
    """
)


def _study(folder: Path, rows: int, n_tracks: int = 2000, bins: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_targets(folder / "targets.txt", [f"M{i:04d}" for i in range(n_tracks)], "DNASE:GM12878")
    pd.DataFrame({"index": range(0, n_tracks, 4)}).to_csv(folder / "short.csv", index=False)
    for name in ("ref", "alt"):
        arr = np.lib.format.open_memmap(
            folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(rows, bins, n_tracks)
        )
        for s in range(0, rows, 256):
            arr[s : s + 256] = rng.random((min(256, rows - s), bins, n_tracks), dtype=np.float32)
        arr.flush()
        del arr
    pd.DataFrame(
        {"GENE": "G", "rsID": [f"rs{i}" for i in range(rows)], "REF": "A", "ALT": "C"}
    ).to_csv(folder / "v.csv", index=False)
    (folder / "run.toml").write_text(
        'targets = "targets.txt"\n[tracks]\nshortlist = "short.csv"\n'
        '[scores]\naggregations = ["ave", "tss"]\nstatistics = ["abs_diff", "diff"]\n'
        '[output]\nformat = "parquet"\n'
        '[[groups]]\nname = "g"\nbatches = [{ ref = "ref.npy", alt = "alt.npy", '
        'variants = "v.csv" }]\n'
    )
    return folder / "run.toml"


def _peak(run_file: Path, out: Path, threads: int) -> int:
    hwm = out.parent / f"{out.name}.hwm"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            HARNESS,
            "-q",
            "run",
            str(run_file),
            "--out",
            str(out),
            "--memory",
            str(BUDGET),
            "--threads",
            str(threads),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HWM_FILE": str(hwm)},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return int(hwm.read_text()) * 1024


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("rss")
    # 3,000 rows x 3 bins x 2,000 tracks: 72 MB per array, 144 MB of predictions.
    return _study(base / "tiny", 8), _study(base / "big", 3000)


@pytest.mark.parametrize("threads", [1, 8])
def test_peak_rss_within_budget_plus_baseline(
    studies: tuple[Path, Path], tmp_path: Path, threads: int
) -> None:
    tiny, big = studies
    baseline = _peak(tiny, tmp_path / "tiny", threads)
    peak = _peak(big, tmp_path / "big", threads)
    assert peak <= baseline + BUDGET, (
        f"peak {peak / 2**20:.0f} MiB > baseline {baseline / 2**20:.0f} MiB + budget "
        f"{BUDGET / 2**20:.0f} MiB at {threads} threads"
    )
