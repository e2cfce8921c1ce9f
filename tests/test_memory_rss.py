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


def _peak_of(hwm: Path, *args: object) -> tuple[int, str]:
    """Peak RSS (bytes) and stderr of ``perturbscore ARGS`` run through the harness."""
    r = subprocess.run(
        [sys.executable, "-c", HARNESS, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HWM_FILE": str(hwm)},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return int(hwm.read_text()) * 1024, r.stderr


def _peak(run_file: Path, out: Path, threads: int) -> int:
    hwm = out.parent / f"{out.name}.hwm"
    args = ("-q", "run", run_file, "--out", out, "--memory", BUDGET, "--threads", threads)
    return _peak_of(hwm, *args)[0]


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


def _r_run(folder: Path, rows: dict[str, int], n_tracks: int) -> Path:
    """A finished run of R tables (written by the package's writer, checked by R loads
    elsewhere): two aggregations of ``abs_diff`` per group, random scores."""
    from perturbscore.manifest import build_manifest, manifest_text
    from perturbscore.writers import open_writer

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    tracks = [f"T{i:04d}" for i in range(n_tracks)]
    outputs = []
    for g, n in rows.items():
        ids = pd.DataFrame({"rsID": [f"rs{g}{i}" for i in range(n)], "ALT": "A"})
        for agg in ("ave", "tss"):
            name = f"{g}_abs_diff_{agg}"
            w = open_writer("rdata", folder / f"{name}.RData", tracks, ["rsID", "ALT"], name, n)
            w.write(rng.random((n, n_tracks)), ids)
            w.commit()
            outputs.append(
                {"group": g, "aggregation": agg, "statistic": "abs_diff", "rows": n,
                 "path": f"{name}.RData", "object": name, "columns": n_tracks + 2}
            )  # fmt: skip
    table = pd.DataFrame(
        {"index": range(n_tracks), "identifier": tracks, "description": "DNASE:GM12878"}
    )
    manifest = build_manifest(
        source="run", run_file=None, parameters={"format": "rdata"}, targets={},
        selection={}, tracks=table, inputs=[], outputs=outputs, warnings=[],
    )  # fmt: skip
    (folder / "manifest.json").write_text(manifest_text(manifest))
    return folder


def test_compare_counts_tables_it_reads_whole_in_its_budget(tmp_path: Path) -> None:
    """R tables have no partial reads: compare holds a pair whole (two while the next is
    read ahead), so blocks get what the budget leaves; below that it says so first."""
    tiny = _r_run(tmp_path / "tiny", {"stab": 20, "top": 35}, 150)
    # stab 20,007 and top 35,077 rows as in the study, 150 tracks: 66 MB of scores a pair
    big = _r_run(tmp_path / "big", {"stab": 20_007, "top": 35_077}, 150)
    budget = 300 * 2**20

    def compare(run: Path, name: str, memory: int) -> tuple[int, str]:
        out = tmp_path / name
        args = ("compare", run, "--a", "stab", "--b", "top", "--out", out, "--memory", memory)
        return _peak_of(tmp_path / f"{name}.hwm", *args)

    baseline, _ = compare(tiny, "c-tiny", budget)
    peak, stderr = compare(big, "c-big", budget)
    assert "cannot be kept" not in stderr
    assert peak <= baseline + budget, (
        f"peak {peak / 2**20:.0f} MiB > baseline {baseline / 2**20:.0f} MiB + budget 300 MiB"
    )
    _, stderr = compare(big, "c-small", 64 * 2**20)
    notes = [line for line in stderr.splitlines() if "cannot be kept" in line]
    assert len(notes) == 1, stderr
    assert notes[0].startswith(
        "perturbscore: WARNING: --memory 67,108,864 bytes (64 MiB) cannot be kept: compare reads "
        "R and CSV tables "
        "whole, and these hold about "
    )
    assert "(the largest pair: stab_abs_diff_ave.RData and top_abs_diff_ave.RData)" in notes[0]
    assert "write the run's tables as Parquet (perturbscore run --format parquet)" in notes[0]
