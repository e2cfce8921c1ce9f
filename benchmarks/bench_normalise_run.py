"""Benchmark: ``perturbscore normalise`` on a study-shaped run, beside a plain pyarrow copy.

Writes a run folder shaped like the study's at ``--scale 1.0``: groups ``stab`` (20,007
rows) and ``top`` (35,077 rows; 55,084 in all), the 177 selected tracks, aggregations
``ave`` and ``tss`` of ``abs_diff`` (4 tables), about 31% of the rows exactly 0 (the
study's out-of-field share).  Then measures, as whole processes (interpreter and
imports included, as a user runs them):

* ``normalise``  ``perturbscore normalise RUN --background stab --out OUT`` (quantile and
                 robust_z: 8 tables), Parquet in and out, and with ``--format`` of the run;
* ``floor``      a plain pyarrow script that reads every table and writes it twice
                 (the same bytes in and out, no arithmetic).

Prints seconds (best of ``--repeat``) and the ratio normalise / floor.

``--with-run`` measures normalisation as part of a run instead, on the predictions of
``benchmarks/bench_run.py`` (generated into ``--data`` unless already there; only
``--work`` is written to), with its study recipe (``examples/stablefm.toml``: 177
tracks, ``ave`` and ``tss`` of ``abs_diff``) and the name template
``{group}_{statistic}_{aggregation}``, as whole processes:

* ``run``        ``perturbscore run`` (4 tables);
* ``normalise``  ``perturbscore normalise`` of that run against the background saved
                 from its group ``stab`` (8 tables);
* ``run+norm``   ``perturbscore run`` with ``[normalise] background = ...`` (the same
                 background file): the 4 tables and the 8 normalised ones in one pass;
* ``run12``      ``perturbscore run`` writing as many tables without normalising
                 (aggregations ave, tss and sum of abs_diff and diff): what the 8 added
                 tables cost as tables, whatever fills them.

and prints what the in-run normalisation adds to the run (target <= 10%) and the
standalone command against the run.

Usage::

    python benchmarks/bench_normalise_run.py [--scale 1.0] [--format parquet|rdata] [--repeat 1]
    python benchmarks/bench_normalise_run.py --with-run --scale 1.0 --data DIR --work DIR
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from as_users_run import as_users_run

from perturbscore.manifest import build_manifest, manifest_text
from perturbscore.writers import FORMATS, open_writer

GROUPS = {"stab": 20_007, "top": 35_077}
N_TRACKS = 177
ZERO_SHARE = 0.31

FLOOR = """
import sys, pyarrow.parquet as pq
run, out = sys.argv[1], sys.argv[2]
import json, pathlib
m = json.loads(pathlib.Path(run, "manifest.json").read_text())
for o in m["outputs"]:
    t = pq.read_table(pathlib.Path(run, o["path"]))
    for k in range(2):
        pq.write_table(t, pathlib.Path(out, f"{k}_{o['path']}"))
"""


def write_run(folder: Path, scale: float, fmt: str) -> None:
    rng = np.random.default_rng(1)
    tracks = [f"T{i:04d}" for i in range(N_TRACKS)]
    folder.mkdir()
    outputs = []
    for g, n_full in GROUPS.items():
        n = max(10, int(n_full * scale))
        ids = pd.DataFrame(
            {
                "GENE": [f"ENSG{i // 3:08d}" for i in range(n)],
                "rsID": [f"rs{g}{i}" for i in range(n)],
                "REF": "A",
                "ALT": "G",
            }
        )
        for agg in ("ave", "tss"):
            scores = rng.gamma(0.5, 0.02, (n, N_TRACKS))
            scores[rng.random(n) < ZERO_SHARE] = 0.0
            name = f"{g}_abs_diff_{agg}"
            path = folder / f"{name}{FORMATS[fmt]}"
            w = open_writer(fmt, path, tracks, list(ids.columns), name, n)
            w.write(scores, ids)
            w.commit()
            outputs.append(
                {
                    "group": g,
                    "aggregation": agg,
                    "statistic": "abs_diff",
                    "path": path.name,
                    "object": name,
                    "rows": n,
                    "columns": N_TRACKS + 4,
                }
            )
    selected = pd.DataFrame(
        {
            "index": range(N_TRACKS),
            "identifier": tracks,
            "description": [f"CHIP:H3K27ac:GM12878 {i}" for i in range(N_TRACKS)],
        }
    )
    m = build_manifest(
        source="run",
        run_file=None,
        parameters={"format": fmt},
        targets={},
        selection={},
        tracks=selected,
        inputs=[],
        outputs=outputs,
        warnings=[],
    )
    (folder / "manifest.json").write_text(manifest_text(m))


def _cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], repeat: int) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds of ``repeat`` runs of ``cmd``.

    CPU time is printed too: on a shared machine other processes stretch wall times.
    """
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        out = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else Path(cmd[-1])
        shutil.rmtree(out, ignore_errors=True)
        if "--out" not in cmd:
            out.mkdir()
        t0, c0 = time.perf_counter(), _cpu()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, _cpu() - c0)
    return best, best_cpu


def _run_files(data: Path, work: Path, fmt: str, background: Path) -> tuple[Path, Path, Path]:
    """bench_run's study run file, with absolute batch paths, written into ``work``:
    plain, with ``[normalise]`` against ``background``, and plain with as many tables as
    that (aggregations ave, tss, sum of abs_diff and diff: 12, raw arithmetic only)."""
    text = (data / "stablefm.toml").read_text()
    for key in ("ref", "alt", "variants"):
        text = text.replace(f'{key} = "', f'{key} = "{data}/')
    text = text.replace(
        'name = "{group}_diff_{aggregation}_relevant_comb"',
        'name = "{group}_{statistic}_{aggregation}"',
    )
    text = text.replace('format = "rdata"', f'format = "{fmt}"')
    plain, norm, twelve = work / "plain.toml", work / "norm.toml", work / "twelve.toml"
    plain.write_text(text)
    section = f'[normalise]\nbackground = "{background}"\n\n[geometry]'
    norm.write_text(text.replace("[geometry]", section, 1))
    more = text.replace('aggregations = ["ave", "tss"]', 'aggregations = ["ave", "tss", "sum"]')
    more = more.replace('statistics = ["abs_diff"]', 'statistics = ["abs_diff", "diff"]')
    if more.count('"sum"') != 1 or '"abs_diff", "diff"' not in more:
        raise SystemExit(f"{data / 'stablefm.toml'}: [scores] is not the study recipe's")
    twelve.write_text(more)
    return plain, norm, twelve


def with_run(args: argparse.Namespace) -> None:
    """Normalisation added to a run vs the plain run vs the standalone command."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_run

    # Absolute: the run files written into --work name the predictions by this path.
    data = (args.data or bench_run.REPO / "bench-data" / f"scale-{args.scale}").resolve()
    bench_run.generate(data, args.scale)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    background = work / "stab-background.npz"
    plain, norm, twelve = _run_files(data, work, args.format, background)
    exe = [sys.executable, "-c", bench_run.CLI_HARNESS, "-q"]
    best: dict[str, dict[str, float]] = {}

    def measure(name: str, cmd: list[str], out: Path) -> None:
        shutil.rmtree(out, ignore_errors=True)
        c0 = _cpu()
        r = {**bench_run._whole([*exe, *cmd]), "cpu_s": 0.0}
        r["cpu_s"] = _cpu() - c0
        b = best.setdefault(name, r)
        b["wall_s"] = min(b["wall_s"], r["wall_s"])
        b["cpu_s"] = min(b["cpu_s"], r["cpu_s"])
        b["peak_rss_bytes"] = max(b["peak_rss_bytes"], r["peak_rss_bytes"])

    for _ in range(args.repeat):
        background.unlink(missing_ok=True)
        measure("run", ["run", str(plain), "--out", str(work / "run")], work / "run")
        measure(
            "normalise",
            [
                "normalise",
                str(work / "run"),
                "--background",
                "stab",
                "--save-background",
                str(background),
                "--out",
                str(work / "norm"),
            ],
            work / "norm",
        )
        measure("run+norm", ["run", str(norm), "--out", str(work / "inrun")], work / "inrun")
        measure("run12", ["run", str(twelve), "--out", str(work / "run12")], work / "run12")
    rows = sum(max(1, round(n * args.scale)) for n in bench_run.STUDY_ROWS.values())
    print(f"{rows} rows, 177 tracks, ave and tss of abs_diff, format {args.format}")
    print("whole processes (interpreter start and imports included), warm page cache:")
    for name, r in best.items():
        print(
            f"{name:<10}{r['wall_s']:>8.2f} s {r['cpu_s']:>7.2f} CPU s  peak RSS "
            f"{r['peak_rss_bytes'] / 2**20:6.0f} MiB"
        )
    for what in ("wall_s", "cpu_s"):
        run, inrun, alone = (best[k][what] for k in ("run", "run+norm", "normalise"))
        print(
            f"{what[:-2]:>4}: in-run normalisation adds {100 * (inrun - run) / run:.1f}% to the "
            f"run ({inrun - run:+.2f} s; target <= 10%); standalone normalise / run "
            f"{alone / run:.2f}x; run then normalise {run + alone:.2f} s against {inrun:.2f} s"
        )
        twelve_s = best["run12"][what]
        print(
            f"{'':>4}  a plain run writing as many tables (12, raw scores) adds "
            f"{100 * (twelve_s - run) / run:.1f}% ({twelve_s - run:+.2f} s): the tables' own cost; "
            f"normalisation beyond it {100 * (inrun - twelve_s) / run:.1f}% of the run"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--format", default="parquet", choices=["parquet", "rdata"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--with-run", action="store_true", help="normalisation added to a run")
    ap.add_argument("--data", type=Path, default=None, help="bench_run.py's data folder")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-norm")
    args = ap.parse_args()
    as_users_run()
    if args.with_run:
        with_run(args)
        return
    exe = str(Path(sys.executable).parent / "perturbscore")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        write_run(run, args.scale, args.format)
        rows = sum(max(10, int(n * args.scale)) for n in GROUPS.values())
        norm = timed(
            [
                exe,
                "-q",
                "normalise",
                str(run),
                "--background",
                "stab",
                "--out",
                str(Path(tmp) / "norm"),
            ],
            args.repeat,
        )
        print(f"rows {rows} x {N_TRACKS} tracks x 2 aggregations, format {args.format}")
        print(f"normalise  {norm[0]:8.2f} s  {norm[1]:6.2f} CPU s  (8 tables: quantile, robust_z)")
        if args.format == "parquet":
            floor = timed(
                [sys.executable, "-c", FLOOR, str(run), str(Path(tmp) / "floor")], args.repeat
            )
            print(f"floor      {floor[0]:8.2f} s  {floor[1]:6.2f} CPU s  (read 4, write 8)")
            print(f"ratio      {norm[0] / floor[0]:8.2f}    {norm[1] / floor[1]:6.2f} (CPU)")


if __name__ == "__main__":
    main()
