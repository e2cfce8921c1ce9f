"""``--memory`` from the refusal's own minimum upward: every budget runs, same tables.

Under a tight budget the memory plan shrinks each thread's scratch buffers (whole rows
read before the selected tracks are copied out) below what a block holds; the reader
must then read a block in several scratch-sized pieces.  It used to step by its
default 4 MiB scratch instead, so budgets just above the minimum crashed with
``ValueError: buffer (16, 3, 5313) float32 does not fit (65, 3, 5313) float32``.

The dataset has few rows and many tracks, of which few are selected: a row read is
large, a selected row small, so the budget sets the scratch size and blocks of many rows.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from perturbscore.demo import write_demo_dataset
from perturbscore.errors import PerturbscoreError
from perturbscore.pipeline import RunOptions, run_path
from perturbscore.readers import open_predictions

N_TRACKS = 4000  # a read row: 3 bins x 4,000 tracks x 4 bytes = 48 KB
SELECTED = list(range(0, N_TRACKS, 200))  # 20 tracks
MIB = 2**20


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo layout (133 rows in 4 batches) with 4,000 tracks, 20 selected, CSV tables."""
    folder = tmp_path_factory.mktemp("wide")
    write_demo_dataset(folder, n_tracks=N_TRACKS)
    run_file = folder / "stablefm.toml"
    text = run_file.read_text()
    text = text.replace('shortlist = "basenji_relevant_metadata.csv"', f"indices = {SELECTED}")
    run_file.write_text(text.replace('format = "rdata"', 'format = "csv"'))
    return folder


def _tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


def _minimum(message: str) -> tuple[int, int]:
    """The bytes and the MiB a refusal names: '... at least N bytes ... --memory to MMiB'."""
    need = re.search(r"needs at least ([\d,]+) bytes", message)
    mib = re.search(r"raise --memory to (\d+)MiB or more", message)
    assert need and mib, message
    return int(need.group(1).replace(",", "")), int(mib.group(1))


@pytest.fixture(scope="module")
def reference(wide: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    run_path(wide / "stablefm.toml", out, RunOptions(threads=2, progress=False))
    tables = _tables(out)
    assert len(tables) == 4
    return tables


def test_cli_budgets_from_the_named_minimum_upward(
    wide: Path, tmp_path: Path, cli, reference: dict[str, bytes]
) -> None:
    """Below the minimum: exit 2, one sentence, nothing written; from the MiB the refusal
    names and a few MiB above it (all of which crashed): exit 0 and the same tables as under
    the default budget (the in-process sweep below takes the small steps)."""
    out = tmp_path / "out"
    r = cli("run", wide / "stablefm.toml", "--out", out, "--memory", "1000", "--threads", "2")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("perturbscore: error: memory budget"), r.stderr
    assert not out.exists()
    _, first = _minimum(lines[0])
    for mib in (first, first + 1, first + 3):
        shutil.rmtree(out, ignore_errors=True)
        r = cli(
            "run", wide / "stablefm.toml", "--out", out, "--memory", f"{mib}MiB", "--threads", "2"
        )
        assert r.returncode == 0, (mib, r.stderr[-2000:])
        assert _tables(out) == reference, f"--memory {mib}MiB changed the tables"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_budget_from_the_exact_minimum_gives_the_same_tables(
    wide: Path,
    tmp_path: Path,
    threads: int,
    reference: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In 1 MiB steps from the exact byte count of the refusal, for 0, 1 and 2 reading
    threads (each has its own scratch buffers): one byte less is refused."""
    caplog.set_level(logging.ERROR, logger="perturbscore")  # 50 runs' warnings
    out = tmp_path / "out"

    def run(budget: int) -> None:
        shutil.rmtree(out, ignore_errors=True)
        opts = RunOptions(memory_bytes=budget, threads=threads, progress=False)
        run_path(wide / "stablefm.toml", out, opts)

    with pytest.raises(PerturbscoreError) as refused:
        run(1)
    need, _ = _minimum(str(refused.value))
    with pytest.raises(PerturbscoreError, match="too small"):
        run(need - 1)
    assert not out.exists()
    for budget in range(need, need + 8 * MIB, MIB):
        run(budget)
        assert _tables(out) == reference, f"--memory {budget} bytes changed the tables"


def test_a_block_is_read_through_a_smaller_scratch_buffer(tmp_path: Path) -> None:
    """read_selected steps by the buffer it is given, whatever its default would be."""
    arr = np.random.default_rng(1).random((11, 3, 50)).astype(np.float32)  # N B T
    np.save(tmp_path / "a.npy", arr)
    cols = np.array([49, 0, 7])
    with open_predictions(tmp_path / "a.npy") as r:
        assert r.scratch_rows() > 11  # the default buffer would hold the whole block
        for rows in (1, 2, 3, 11):
            scratch = np.empty((rows, 3, 50), np.float32)
            got = r.read_selected(1, 11, cols, scratch)
            np.testing.assert_array_equal(got, arr[1:11][:, :, cols])


def test_chunk_rows_beyond_the_largest_batch_is_all_rows_in_one_block(
    wide: Path, tmp_path: Path, cli, reference: dict[str, bytes]
) -> None:
    """Trial 7, repro 15: --chunk-rows 100000 on 133 rows (batches of 40, 17, 53, 23) was
    refused as needing ~689 MB; a block never holds more rows than the largest batch, so it
    runs, and (chunk size never changes a result) writes the same tables as 1, a prime, all."""
    for rows in ("100000", "1000000000000", "1", "7", "53"):
        out = tmp_path / f"out{rows}"
        r = cli("run", wide / "stablefm.toml", "--out", out, "--chunk-rows", rows, "-q")
        assert r.returncode == 0, (rows, r.stderr[-2000:])
        assert _tables(out) == reference, f"--chunk-rows {rows} changed the tables"
