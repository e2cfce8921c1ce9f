"""Benchmark: cost of the integrity checks and background normalisation per block.

On study-shaped data held in memory (55,084 rows of ``(3, 177)`` float32 REF/ALT at
``--scale 1.0``: the 177 selected tracks, two aggregations ``ave``/``tss``, statistic
``abs_diff``), measures side by side, over the same blocks:

* ``score``      :func:`perturbscore.scoring.score_block` alone (the run's own work per
                 block, without reading or writing);
* ``integrity``  :func:`~perturbscore.integrity.row_identical` + one
                 :meth:`~perturbscore.integrity.IntegrityChecker.update` per block, then
                 ``finish``;
* ``background`` building the per-track sketches of every (aggregation, statistic) from
                 the background group's blocks (the stable group: 20,007 rows);
* ``normalise``  ``quantile`` and ``robust_z`` of every (aggregation, statistic) block;
* ``robust_z``   ``robust_z`` alone.

Prints each phase's seconds (best of ``--repeat``) and its ratio to ``score``.  The
overhead target of issue 9 is against ``bench_run.py`` at scale 1.0, whose run also
reads 6.7 GB and writes tables: pass its measured wall time with ``--run-seconds`` to
print the overhead against it as well (the ratio to ``score`` alone is a strict upper
bound on that overhead).

Usage::

    python benchmarks/bench_checks.py --scale 1.0 [--chunk 4096] [--run-seconds 14.2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from perturbscore.geometry import ENFORMER, place
from perturbscore.integrity import IntegrityChecker, row_identical
from perturbscore.integrity_keys import keys_in_several_groups
from perturbscore.normalise_sketch import BackgroundBuilder
from perturbscore.scoring import parse_aggregation, score_block

STUDY_ROWS = {"stab": 14189 + 5818, "top": 25049 + 10028}
BINS, TRACKS = 3, 177


def make(scale: float, seed: int = 0) -> dict[str, dict[str, np.ndarray | list[str]]]:
    """Study-shaped groups: REF/ALT ``# n 3 177``, classes like the study's (31% out)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray | list[str]]] = {}
    for g, rows in STUDY_ROWS.items():
        n = max(1, round(rows * scale))
        d = rng.integers(-196_608, 196_608, n)
        cls = place(196_608 + d, ENFORMER).cls
        ref = rng.gamma(2.0, 1.5, size=(n, BINS, TRACKS)).astype(np.float32)
        alt = (ref * rng.lognormal(0, 0.1, size=ref.shape)).astype(np.float32)
        alt[cls == 0] = ref[cls == 0]
        # Half the stable variants are also in the top group (shared ID keys).
        keys = [f"G{i % 7000}\x1frs{i}\x1fA\x1fG" for i in range(n)]
        out[g] = {"ref": ref, "alt": alt, "cls": cls, "keys": keys}
    return out


def blocks(n: int, chunk: int):
    for s in range(0, n, chunk):
        yield s, min(s + chunk, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--chunk", type=int, default=4096, help="rows per block")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--run-seconds", type=float, default=None, help="bench_run.py wall time")
    ap.add_argument(
        "--run-data",
        type=Path,
        default=None,
        help="a bench_run.py data folder: time its perturbscore run here, interleaved",
    )
    args = ap.parse_args()

    data = make(args.scale)
    aggs = [parse_aggregation(a, BINS) for a in ("ave", "tss")]
    stats = ["abs_diff"]
    tracks = [f"T{i}" for i in range(TRACKS)]
    n_rows = sum(len(g["keys"]) for g in data.values())

    def run_score() -> None:
        for g in data.values():
            ref, alt = g["ref"], g["alt"]
            assert isinstance(ref, np.ndarray) and isinstance(alt, np.ndarray)
            for s, e in blocks(len(ref), args.chunk):
                score_block(ref[s:e], alt[s:e], aggs, stats)

    scored = {}
    for name, g in data.items():
        ref, alt = g["ref"], g["alt"]
        assert isinstance(ref, np.ndarray) and isinstance(alt, np.ndarray)
        scored[name] = [
            (s, e, score_block(ref[s:e], alt[s:e], aggs, stats))
            for s, e in blocks(len(ref), args.chunk)
        ]

    shared = keys_in_several_groups({k: v["keys"] for k, v in data.items()})  # type: ignore[misc]

    def key_of(group: str, batch: int, row: int) -> str:
        keys = data[group]["keys"]
        assert isinstance(keys, list)
        return keys[row]

    first = (aggs[0].spec, stats[0])

    def run_integrity() -> None:
        # As the engine would: shared keys and slots once per batch, then one update per
        # block with the first table's scores.
        checker = IntegrityChecker(shared_keys=shared, key_of=key_of)
        for name, g in data.items():
            ref, alt, cls, keys = g["ref"], g["alt"], g["cls"], g["keys"]
            assert isinstance(ref, np.ndarray) and isinstance(alt, np.ndarray)
            assert isinstance(cls, np.ndarray) and isinstance(keys, list)
            slots = checker.slots(keys)
            for s, e, sc in scored[name]:
                same = row_identical(ref[s:e], alt[s:e])
                checker.update(name, 1, s, same, cls[s:e], sc[first], keys[s:e], slots=slots[s:e])
        checker.finish()

    backgrounds = {}

    def run_background() -> None:
        cls = data["stab"]["cls"]
        assert isinstance(cls, np.ndarray)
        for a in aggs:
            for st in stats:
                b = BackgroundBuilder(tracks, a.spec, st)
                for s, e, sc in scored["stab"]:
                    b.update(sc[(a.spec, st)], mask=cls[s:e] != 0)
                backgrounds[(a.spec, st)] = b.finish()

    def run_normalise() -> None:
        for name in data:
            for _, _, sc in scored[name]:
                for key, bg in backgrounds.items():
                    bg.quantile(sc[key])
                    bg.robust_z(sc[key])

    def best_once(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    def run_pipeline() -> None:
        from perturbscore import RunOptions, run_path

        assert args.run_data is not None
        out = Path(tempfile.mkdtemp(prefix="bench-checks-"))
        try:
            run_path(args.run_data / "stablefm.toml", out, RunOptions(progress=False))
        finally:
            shutil.rmtree(out)

    timing = {"score": best(run_score)}
    extras: list[float] = []
    if args.run_data:
        run_pipeline()  # warm the page cache
        runs = []
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            runs.append(best_once(run_pipeline))
            extras.append(best_once(run_integrity))
        args.run_seconds = min(runs)
        print(f"  perturbscore run on {args.run_data}: {min(runs):.3f} s (best of {len(runs)})")
    timing["integrity"] = best(run_integrity)
    if args.run_data:
        timing["integrity"] = min(timing["integrity"], *extras)
    timing["background"] = best(run_background)
    timing["normalise"] = best(run_normalise)

    def run_robust_z() -> None:
        for name in data:
            for _, _, sc in scored[name]:
                for key, bg in backgrounds.items():
                    bg.robust_z(sc[key])

    timing["robust_z"] = best(run_robust_z)
    base = timing["score"]
    print(
        f"{n_rows} rows x {BINS} bins x {TRACKS} tracks, blocks of {args.chunk} rows, "
        f"{len(aggs)} aggregations x {len(stats)} statistic; best of {args.repeat}"
    )
    for k, v in timing.items():
        print(f"  {k:<11} {v:8.3f} s   {v / base:6.2f} x score")
    extra = timing["integrity"] + timing["background"] + timing["normalise"]
    rz = timing["integrity"] + timing["background"] + timing["robust_z"]
    print(f"  checks + normalisation: {extra:.3f} s = {100 * extra / base:.1f}% of score alone")
    print(f"  checks + robust_z only: {rz:.3f} s = {100 * rz / base:.1f}% of score alone")
    print(f"  integrity alone: {100 * timing['integrity'] / base:.1f}% of score alone")
    if args.run_seconds:
        r = args.run_seconds
        print(
            f"  against bench_run.py's {r:.2f} s run: checks + normalisation "
            f"+{100 * extra / r:.1f}%, checks + robust_z +{100 * rz / r:.1f}%, "
            f"integrity alone +{100 * timing['integrity'] / r:.1f}%"
        )


if __name__ == "__main__":
    main()
