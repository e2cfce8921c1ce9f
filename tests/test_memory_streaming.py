"""Memory plan, size parsing, the prefetch thread, and less common inputs."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perturbscore import RunOptions, load_run_file, run
from perturbscore.errors import PerturbscoreError
from perturbscore.memory import TARGET_BLOCK_BYTES, parse_size, plan_memory
from perturbscore.readers import SCRATCH_BYTES
from perturbscore.streaming import prefetch


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512MB", 512_000_000),
        ("512MiB", 536_870_912),
        ("2GiB", 2**31),
        ("1000", 1000),
        ("1.5 kb", 1500),
        (7, 7),
    ],
)
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


def test_plan_by_hand() -> None:
    # Study shape: B=3, T=5313, 177 selected float32 tracks, 2 aggregations, 2 outputs/group.
    kw = dict(
        n_bins=3, n_tracks=5313, n_selected=177, itemsize=4, n_aggregations=2, n_outputs_per_group=2
    )
    # Per block in flight: selected REF/ALT (2 B S 4), aggregates (2 A S 8), scores (O S 8);
    # for the block being written: writer and resume copies (2 O S 8).
    per_row = 3 * (2 * 3 * 177 * 4 + 2 * 2 * 177 * 8 + 2 * 177 * 8) + 2 * 2 * 177 * 8
    plan = plan_memory(budget=2**30, blocks_in_flight=3, **kw)
    assert plan.per_row_bytes == per_row
    scratch = SCRATCH_BYTES // (3 * 5313 * 4) * (3 * 5313 * 4)  # whole rows
    assert plan.fixed_bytes == 2 * scratch
    assert plan.chunk_rows == TARGET_BLOCK_BYTES // (3 * 177 * 4)  # cache-sized, not budget
    tight = plan_memory(budget=2 * scratch + 100 * per_row, blocks_in_flight=3, **kw)
    assert tight.chunk_rows == 100 and tight.estimated_bytes <= tight.budget
    r_format = plan_memory(budget=2**30, blocks_in_flight=3, in_memory_rows=1000, **kw)
    assert r_format.fixed_bytes == 2 * scratch + 1000 * 2 * 177 * 8
    assert plan_memory(budget=2**30, max_rows=7, **kw).chunk_rows == 7
    with pytest.raises(PerturbscoreError) as err:
        plan_memory(
            budget=2 * scratch + 100 * per_row, blocks_in_flight=3, chunk_rows=101, **kw
        )
    # Byte counts with thousands separators and units, never raw (trial 7, repro 15).
    need, budget = 2 * scratch + 101 * per_row, 2 * scratch + 100 * per_row
    assert (
        f"--chunk-rows 101 needs about {need:,} bytes ({need / 2**20:.0f} MiB), over the budget "
        f"of {budget:,} bytes ({budget / 2**20:.0f} MiB) (at most 100 rows fit)"
    ) in str(err.value)
    # More rows than the largest batch holds: clamped to it before the check, so a budget
    # that fits the batch is enough (trial 7, repro 15: refused as needing ~689 MB).
    for forced in (101, 10**5, 10**12):
        clamped = plan_memory(
            budget=2 * scratch + 100 * per_row, blocks_in_flight=3, chunk_rows=forced,
            max_rows=57, **kw,
        )  # fmt: skip
        assert clamped.chunk_rows == 57
    with pytest.raises(PerturbscoreError, match="rdata format keeps whole tables in memory"):
        plan_memory(budget=2**24, in_memory_rows=10**6, fmt="rdata", **kw)


def test_plan_counts_every_threads_scratch() -> None:
    kw = dict(
        n_bins=3, n_tracks=5313, n_selected=177, itemsize=4, n_aggregations=2, n_outputs_per_group=2
    )
    eight = plan_memory(budget=2**30, blocks_in_flight=9, scratch_threads=8, **kw)
    row = 3 * 5313 * 4
    scratch = SCRATCH_BYTES // row * row
    assert eight.fixed_bytes == 8 * 2 * scratch and eight.scratch_bytes == scratch
    # A tight budget shrinks the scratch buffers (whole rows) rather than exceed it.
    tight = plan_memory(budget=40 * 2**20, blocks_in_flight=9, scratch_threads=8, **kw)
    assert tight.scratch_bytes < SCRATCH_BYTES and tight.scratch_bytes % row == 0
    assert tight.estimated_bytes <= tight.budget
    with pytest.raises(PerturbscoreError, match="or give fewer --threads"):
        plan_memory(budget=8 * 2 * row, blocks_in_flight=9, scratch_threads=8, **kw)


def test_prefetch_keeps_order_and_carries_errors() -> None:
    assert list(prefetch(iter(range(100)), depth=2)) == list(range(100))
    assert list(prefetch(iter(range(5)), depth=0)) == list(range(5))

    def failing():
        yield 1
        raise ValueError("boom at 2")

    got = []
    with pytest.raises(ValueError, match="boom at 2"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]


def test_prefetch_stops_the_producer_when_the_consumer_stops() -> None:
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    gen = prefetch(endless(), depth=1)
    assert next(gen) == 0
    gen.close()
    assert threading.active_count() == before
    assert len(produced) <= 4


def test_threads_change_nothing(study: Path, tmp_path: Path) -> None:
    cfg = load_run_file(study / "stablefm.toml")
    for depth in (1, 4):
        run(
            cfg,
            tmp_path / str(depth),
            RunOptions(format="parquet", threads=depth, chunk_rows=3, progress=False),
        )
    for p in (tmp_path / "1").glob("*.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(p), pd.read_parquet(tmp_path / "4" / p.name), check_exact=True
        )


def test_npz_inputs_parquet_variants_and_all_id_columns(study: Path, tmp_path: Path) -> None:
    cfg = load_run_file(study / "stablefm.toml")
    groups = []
    for g in cfg.groups:
        batches = []
        for i, b in enumerate(g.batches):
            npz = study / f"{g.name}{i}.npz"
            np.savez_compressed(npz, ref=np.load(b.ref), alt=np.load(b.alt))
            pq_path = b.variants.with_suffix(".parquet")
            pd.read_csv(b.variants, dtype=str).to_parquet(pq_path)
            batches.append(
                replace(b, ref=Path(f"{npz}::ref"), alt=Path(f"{npz}::alt"), variants=pq_path)
            )
        groups.append(replace(g, batches=tuple(batches)))
    run(cfg, tmp_path / "npy", RunOptions(format="parquet", progress=False))
    run(
        replace(cfg, groups=tuple(groups), id_columns="all"),
        tmp_path / "npz",
        RunOptions(format="parquet", chunk_rows=4, progress=False),
    )
    a = pd.read_parquet(tmp_path / "npy" / "top_diff_ave_relevant_comb.parquet")
    b = pd.read_parquet(tmp_path / "npz" / "top_diff_ave_relevant_comb.parquet")
    assert list(b.columns[-13:])[:2] == ["Chromosome", "GENE"]
    pd.testing.assert_frame_equal(a, b[a.columns], check_exact=True)
    assert b["PHYSICAL"].dtype == object or str(b["PHYSICAL"].dtype) in {"str", "string"}


def test_ordered_map_keeps_order_bounds_work_and_carries_errors() -> None:
    import time

    from perturbscore.streaming import ordered_map

    def slow_square(i: int) -> int:
        time.sleep(0.001 * (i % 3))
        return i * i

    assert list(ordered_map(slow_square, range(50), workers=3)) == [i * i for i in range(50)]
    assert list(ordered_map(slow_square, range(5), workers=0)) == [0, 1, 4, 9, 16]
    started: list[int] = []

    def record(i: int) -> int:
        started.append(i)
        if i == 4:
            raise ValueError("bad block 4")
        return i

    with pytest.raises(ValueError, match="bad block 4"):
        list(ordered_map(record, range(100), workers=2, ahead=2))
    assert max(started) < 10  # never ran far ahead of the consumer
