"""Benchmark ``perturbscore predict``: REF cache and out-of-field skipping vs computing all.

Study-shaped work with a tiny random-initialised Enformer on CPU: windows centred on a
"TSS", several variants per window, about 31% of them outside the model's input (as in
the study).  Both runs use the same model, genome, variants and batch size, side by side:

    python benchmarks/bench_predict.py [--windows 12 --per-window 4 --input-length 4096]

It prints forward passes, variants per second and the speed-up, checks that both runs
wrote the same arrays (within float tolerance: batches differ in composition), and, when
the study's variant tables are beside the clone (``../shared/stablefm``), the forward
passes its 55,084 rows need with and without the cache, counted by the tool, with a
projection for the full Enformer on one GPU (FLOPs counted on PyTorch's meta device; the
sustained GPU throughput is an assumption, printed with the result).  Last, the cost of
``--format zarr``: building the Zarr store from the finished partial files (the ``.npy``
layout only renames them), timed on study-shaped rows (3 bins x 5,313 tracks, float16).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

STUDY = Path(__file__).resolve().parents[2] / "shared" / "stablefm"


def make_inputs(
    folder: Path, n_windows: int, per_window: int, length: int, seed: int
) -> tuple[Path, Path, Path]:
    import pyfaidx

    rng = np.random.default_rng(seed)
    chrom_len = n_windows * 2 * length + 2 * length
    seq = "".join(rng.choice(list("ACGT"), chrom_len))
    fa = folder / "genome.fa"
    fa.write_text(">chr1\n" + "\n".join(seq[i : i + 80] for i in range(0, chrom_len, 80)) + "\n")
    pyfaidx.Faidx(str(fa)).close()
    rows = []
    for w in range(n_windows):
        tss = length + w * 2 * length
        # offsets uniform in +-0.725 L around the TSS: about 69% inside the L-bp input
        for k in range(per_window):
            pos = tss + int(rng.integers(-int(0.725 * length), int(0.725 * length)))
            ref = seq[pos - 1]
            rows.append(
                {
                    "chrom": "chr1",
                    "pos": pos,
                    "TSS": tss,
                    "rsID": f"rs{w}_{k}",
                    "REF": ref,
                    "ALT": "A" if ref != "A" else "G",
                }
            )
    variants = folder / "variants.csv"
    pd.DataFrame(rows).to_csv(variants, index=False)
    targets = folder / "targets.txt"
    lines = ["index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription"]
    lines += [f"{i}\t0\tB{i}\tf\t32\t2\tmean\tDNASE:GM12878" for i in range(8)]
    targets.write_text("\n".join(lines) + "\n")
    return fa, variants, targets


def tiny_model(folder: Path, length: int) -> Path:
    import torch
    from enformer_pytorch import Enformer

    torch.manual_seed(0)
    model = Enformer.from_hparams(
        dim=96,
        depth=1,
        heads=2,
        output_heads={"human": 8},
        target_length=16,
        dim_divisible_by=8,
        sequence_length=length,
    )
    out = folder / "tiny"
    model.save_pretrained(out, safe_serialization=False)
    return out


def enformer_flops() -> float | None:
    """FLOPs of one full-size Enformer forward pass (196,608 bp), on the meta device."""
    try:
        import torch
        from enformer_pytorch import Enformer
        from torch.utils.flop_counter import FlopCounterMode

        with torch.device("meta"):
            model = Enformer.from_hparams().eval()
            x = torch.zeros(1, 196_608, 4)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x, head="human")
        return float(counter.get_total_flops())
    except Exception as exc:  # the projection is optional
        print(f"(FLOP count on the meta device failed: {exc})")
        return None


def bench_zarr(folder: Path, rows: int, tracks: int = 5313, bins: int = 3) -> None:
    """Time :func:`perturbscore.predict_output.write_zarr` on ``(rows, bins, tracks)`` arrays."""
    from perturbscore.predict_output import chunk_rows, write_zarr

    rng = np.random.default_rng(1)
    shape = (rows, bins, tracks)
    parts = {}
    for name in ("ref", "alt"):
        # smooth positive profiles like coverage predictions, not white noise
        base = np.exp(rng.normal(0, 1, (1, 1, tracks)))
        data = (base * np.exp(rng.normal(0, 0.05, shape))).astype(np.float16)
        parts[name] = folder / f"{name}.npy"
        np.save(parts[name], data)
        del data
    raw = sum(p.stat().st_size for p in parts.values())
    t0 = time.perf_counter()
    write_zarr(parts, folder / "p.zarr", shape, "float16", None, {})
    wall = time.perf_counter() - t0
    stored = sum(f.stat().st_size for f in (folder / "p.zarr").rglob("*") if f.is_file())
    print(
        f"\n--format zarr: {rows} rows x {bins} bins x {tracks} tracks (float16, chunks of "
        f"{chunk_rows(shape, 'float16', None)} rows): {raw / 1e6:.0f} MB of partials -> "
        f"{stored / 1e6:.0f} MB store in {wall:.2f} s ({raw / 1e6 / wall:.0f} MB/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--per-window", type=int, default=4)
    ap.add_argument("--input-length", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument(
        "--zarr-rows", type=int, default=2000, help="rows of the --format zarr timing (0 skips it)"
    )
    ap.add_argument(
        "--gpu-tflops",
        type=float,
        default=50.0,
        help="assumed sustained TF32/BF16 throughput of one GPU for the projection",
    )
    args = ap.parse_args()

    from perturbscore.predict import PredictOptions, run_predict

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        fa, variants, targets = make_inputs(
            d, args.windows, args.per_window, args.input_length, seed=5
        )
        model = str(tiny_model(d, args.input_length))
        results = {}
        for name, cache in (("cached", True), ("naive", False)):
            opts = PredictOptions(
                variants=variants,
                genome=fa,
                model=model,
                targets=targets,
                out=d / name,
                centre_column="TSS",
                bins=3,
                batch_size=args.batch_size,
                ref_cache=cache,
                skip_out_of_field=cache,
                progress=False,
            )
            t0 = time.perf_counter()
            res = run_predict(opts)
            results[name] = (time.perf_counter() - t0, res.summary)
        n = results["cached"][1]["variants"]
        print(
            f"{n} variants in {results['cached'][1]['windows']} windows, "
            f"{results['cached'][1]['out_of_field']} outside the {args.input_length}-bp input;"
            f" tiny Enformer on CPU, batch {args.batch_size}"
        )
        print(f"{'run':<8} {'passes':>7} {'wall s':>8} {'variants/s':>11}")
        for name, (wall, s) in results.items():
            print(f"{name:<8} {s['forward_passes']:>7} {wall:>8.2f} {n / wall:>11.1f}")
        speed = results["naive"][0] / results["cached"][0]
        ratio = results["naive"][1]["forward_passes"] / results["cached"][1]["forward_passes"]
        print(f"speed-up {speed:.2f}x (forward passes {ratio:.2f}x fewer)")
        for arr in ("ref.npy", "alt.npy"):
            a, b = np.load(d / "cached" / arr), np.load(d / "naive" / arr)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        print("cached and naive arrays agree (rtol 1e-4)")
        if args.zarr_rows:
            bench_zarr(d, args.zarr_rows)

    tables = sorted(STUDY.glob("*_variants.csv"))
    if tables:
        from perturbscore.windows import plan_tables

        plan = plan_tables(tables, centre_column="Transcription start site (TSS)")["all"]
        print(
            f"\nstudy: {plan['variants']} rows, {plan['windows']} distinct windows, "
            f"{plan['out_of_field']} outside the 196,608-bp input"
        )
        print(
            f"forward passes: {plan['forward_passes_naive']} naive, "
            f"{plan['forward_passes']} with the REF cache and skipping "
            f"({plan['forward_passes_naive'] / plan['forward_passes']:.2f}x fewer)"
        )
        flops = enformer_flops()
        if flops:
            per_pass = flops / (args.gpu_tflops * 1e12)
            print(
                f"full Enformer: {flops / 1e12:.2f} TFLOP per pass; at an assumed "
                f"{args.gpu_tflops:.0f} TFLOP/s sustained on one GPU: "
                f"{plan['forward_passes_naive'] * per_pass / 60:.1f} min naive, "
                f"{plan['forward_passes'] * per_pass / 60:.1f} min cached"
            )


if __name__ == "__main__":
    main()
