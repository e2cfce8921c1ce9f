"""Wide Parquet tables: row groups sized for buffer + footer, counted in the budget.

pyarrow's ``ParquetWriter`` keeps about 1 KB of footer metadata per column chunk until
the file is closed, so a table of thousands of columns written in small row groups
held gigabytes (issue: 5,313 tracks peaked at 2.1 GiB).  Row groups are now sized by
the table's rows alone (never by block size or budget, so the file's bytes do not
change with them), a group's tables are finished after its last block, and the memory
plan counts what the writers hold.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from perturbscore.writers import row_group_rows, table_group_rows

from .conftest import run_cli, write_targets


def test_row_group_rows_by_hand() -> None:
    # Narrow tables keep 4 MiB row groups (177 float64 columns: 2,962 rows).
    assert table_group_rows(177, 35_077) == 4 * 2**20 // (177 * 8) == row_group_rows(177)
    # Wide ones: sqrt(1100 * rows / 16) rows, the minimum of 16 g S + 1100 S rows / g.
    assert table_group_rows(5313, 35_077) == math.isqrt(1100 * 35_077 // 16) == 1552
    assert table_group_rows(5313, 20_007) == math.isqrt(1100 * 20_007 // 16) == 1172
    assert table_group_rows(5313, 10) == 1024  # never below row_group_rows
    assert table_group_rows(1, 10**9) == 65_536  # nor above ROW_GROUP_ROWS


def _wide_study(folder: Path, rows: int, tracks: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    write_targets(folder / "targets.txt", [f"W{i:05d}" for i in range(tracks)], "DNASE:GM12878")
    for name in ("ref", "alt"):
        np.save(folder / f"{name}.npy", rng.random((rows, 3, tracks), dtype=np.float32))
    pd.DataFrame({"rsID": [f"rs{i}" for i in range(rows)], "REF": "A", "ALT": "C"}).to_csv(
        folder / "v.csv", index=False
    )
    (folder / "run.toml").write_text(
        'targets = "targets.txt"\n'
        '[scores]\naggregations = ["ave", "tss"]\nstatistics = ["abs_diff"]\n'
        '[output]\nformat = "parquet"\nid_columns = ["rsID", "REF", "ALT"]\n'
        '[[groups]]\nname = "a"\nbatches = [{ ref = "ref.npy", alt = "alt.npy", '
        'variants = "v.csv" }]\n'
    )
    return folder / "run.toml"


def test_wide_tables_same_bytes_for_any_block_and_budget(tmp_path: Path) -> None:
    run_file = _wide_study(tmp_path / "s", rows=2500, tracks=3000)
    outs = []
    for i, extra in enumerate(
        (["--chunk-rows", "1", "--memory", "200MiB"], ["--chunk-rows", "7"], ["--memory", "1GiB"])
    ):
        out = tmp_path / f"out{i}"
        r = run_cli("-q", "run", run_file, "--out", out, *extra)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    names = sorted(p.name for p in outs[0].glob("*.parquet"))
    assert names == ["a_abs_diff_ave.parquet", "a_abs_diff_tss.parquet"]
    for name in names:
        first = (outs[0] / name).read_bytes()
        assert all((o / name).read_bytes() == first for o in outs[1:])
        meta = pq.ParquetFile(outs[0] / name).metadata
        g = table_group_rows(3000, 2500)
        assert meta.num_rows == 2500 and meta.row_group(0).num_rows == g
        assert meta.num_row_groups == -(-2500 // g)
    # The values: |ALT - REF| of the 3-bin mean, against numpy.
    ref = np.load(tmp_path / "s" / "ref.npy").astype(np.float64)
    alt = np.load(tmp_path / "s" / "alt.npy").astype(np.float64)
    got = pd.read_parquet(outs[0] / "a_abs_diff_ave.parquet")
    want = np.abs(alt.mean(axis=1) - ref.mean(axis=1))
    np.testing.assert_allclose(got[[f"W{i:05d}" for i in range(3000)]].to_numpy(), want,
                               rtol=1e-12, atol=0)  # fmt: skip


@pytest.mark.parametrize("memory", ["64MiB"])
def test_a_budget_too_small_for_the_writers_is_refused(tmp_path: Path, memory: str) -> None:
    # Two tables of 3,000 float64 columns in 1,024-row groups: 2 x 2 x 24.6 MB of row
    # groups alone, over 64 MiB: refused before anything is written, saying why.
    run_file = _wide_study(tmp_path / "s", rows=1100, tracks=3000)
    out = tmp_path / "out"
    r = run_cli("run", run_file, "--out", out, "--memory", memory)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert message.startswith("perturbscore: error: memory budget")
    assert "Parquet writers hold row groups and footer metadata" in message
    assert "3000 tracks" in message
    assert not out.exists()
