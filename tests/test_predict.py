"""perturbscore predict: windows, REF cache, out-of-field skipping, RC, padding, errors, resume.

Oracles come from the test itself: a synthetic genome held as a Python string, a probe
model whose outputs are base counts per bin (computed again here with numpy), and a tiny
random-initialised Enformer saved with ``save_pretrained`` and loaded through
``from_pretrained`` as users do.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyfaidx")

from perturbscore.genome import Genome  # noqa: E402
from perturbscore.geometry import ENFORMER, Geometry  # noqa: E402
from perturbscore.predict import (  # noqa: E402
    OUTPUTS,
    STATE_DIR,
    PredictOptions,
    job_sequence,
    run_predict,
)

CLI = str(Path(sys.executable).with_name("perturbscore"))
L, BIN, NB = 512, 16, 16  # tiny geometry: 512-bp input, 16-bp bins, 16 output bins
#: The tiny models' geometry: a 1,024-bp window (twice the input, as Enformer's), of which
#: the model reads the central 512 bp; the centre base at offset 512 (448-style: bin 8).
TINY = Geometry("custom", 2 * L, L, NB, BIN, NB // 2)
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), not exported by Python < 3.10
CHROMS = {"chr1": 3000, "chr2": 1000}


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(11)
    seqs = {c: "".join(rng.choice(list("ACGT"), n)) for c, n in CHROMS.items()}
    fa = d / "genome.fa"
    with open(fa, "w") as fh:
        for c, s in seqs.items():
            fh.write(f">{c} synthetic\n")
            fh.writelines(s[i : i + 60] + "\n" for i in range(0, len(s), 60))
    import pyfaidx

    pyfaidx.Faidx(str(fa)).close()  # builds genome.fa.fai (the test's own file)
    targets = d / "targets.txt"
    rows = ["index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription"]
    descs = ["DNASE:GM12878", "CHIP:H3K27ac:GM12878", "CAGE:K562", "ATAC:GM12878"]
    rows += [f"{i}\t0\tT{i:02d}\tf{i}.w5\t32\t2\tmean\t{descs[i % 4]}" for i in range(8)]
    targets.write_text("\n".join(rows) + "\n")
    # variants: several per window (shared TSS), one outside the input, one near chr2's end
    s1 = seqs["chr1"]
    var = pd.DataFrame(
        {
            "chrom": ["1", "1", "1", "1", "2", "1"],
            "pos": [1500, 1510, 1480, 1900, 990, 1200],
            "TSS": [1500, 1500, 1500, 1500, 900, 1205],
            "rsID": [f"rs{i}" for i in range(6)],
        }
    )
    var["REF"] = [seqs["chr" + c][p - 1] for c, p in zip(var.chrom, var.pos, strict=True)]
    var["ALT"] = ["T" if r != "T" else "G" for r in var.REF]
    vcsv = d / "variants.csv"
    var.to_csv(vcsv, index=False)
    assert s1[1499] == var.REF[0]
    return {"dir": d, "fa": fa, "targets": targets, "variants": vcsv, "seqs": seqs, "var": var}


#: Test processes run torch on one thread: two threads on a shared 2-core machine made
#: the tiny model ten times slower (thread contention); results do not depend on it.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    torch = pytest.importorskip("torch")
    ep = pytest.importorskip("enformer_pytorch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ep.Enformer.from_hparams(
        dim=48,
        depth=1,
        heads=2,
        output_heads={"human": 8},
        target_length=NB,
        num_downsamples=4,
        dim_divisible_by=8,
        sequence_length=L,
    )
    folder = tmp_path_factory.mktemp("tiny") / "enformer"
    model.save_pretrained(folder, safe_serialization=False)  # Enformer shares its trunk
    yield folder
    torch.set_num_threads(threads)


class Probe:
    """Known outputs: tracks 0-3 count A C G T per bin, 4 counts N, 5-7 position-weighted."""

    def __init__(self) -> None:
        self.geometry = TINY
        self.n_tracks = 8

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return probe_oracle(x)

    def describe(self) -> dict:
        return {"model": "probe"}


def probe_oracle(x: np.ndarray) -> np.ndarray:
    off = (L - NB * BIN) // 2
    crop = x[:, off : off + NB * BIN].reshape(len(x), NB, BIN, 4)
    counts = crop.sum(axis=2)
    n = BIN - counts.sum(axis=2, keepdims=True)
    w = (crop * np.arange(1, BIN + 1)[None, None, :, None]).sum(axis=2)[..., :3]
    return np.concatenate([counts, n, w], axis=2).astype(np.float32)


def fed_start(window_start: str | int) -> int:
    """0-based first base fed to the model, from the 1-based window start written."""
    return int(window_start) - 1 + L // 2


def window_onehot(seqs: dict, chrom: str, start: int) -> np.ndarray:
    """Oracle input: the genome string sliced by hand from 0-based ``start``, N past ends."""
    s = seqs[chrom]
    bases = "".join(s[p] if 0 <= p < len(s) else "N" for p in range(start, start + L))
    table = {"A": 0, "C": 1, "G": 2, "T": 3}
    out = np.zeros((L, 4), dtype=np.float32)
    for i, b in enumerate(bases):
        if b in table:
            out[i, table[b]] = 1
    return out


def opts(world: dict, out: Path, **kw) -> PredictOptions:
    base = dict(
        variants=world["variants"],
        genome=world["fa"],
        model="probe",
        targets=world["targets"],
        out=out,
        centre_column="TSS",
        bins=None,
        progress=False,
    )
    base.update(kw)
    return PredictOptions(**base)


def load(out: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    table = pd.read_csv(out / "variants.csv", dtype=str, keep_default_na=False)
    manifest = json.loads((out / "predict_manifest.json").read_text())
    return np.load(out / "ref.npy"), np.load(out / "alt.npy"), table, manifest


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "-q", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD, **(env or {})},
        timeout=300,
    )


# --- probe-model tests (exact oracles) -------------------------------------------------
def test_ref_and_alt_windows_against_the_fasta(world: dict, tmp_path: Path) -> None:
    run_predict(opts(world, tmp_path / "o"), predictor=Probe())
    ref, alt, table, man = load(tmp_path / "o")
    var = world["var"]
    assert ref.shape == (6, NB, 8) and list(table.rsID) == list(var.rsID)
    for i, row in table.iterrows():
        chrom, start = row.predict_chrom, int(row.predict_window_start)
        # the study's rule: window_start = centre - window/2 (1-based, like enformer_start)
        assert start == int(var.TSS[i]) - L and int(row.predict_centre) == int(var.TSS[i])
        assert int(row.predict_window_end) == start + 2 * L
        assert int(row.predict_variant_pos_in_window) == int(var.pos[i]) - start
        x = window_onehot(world["seqs"], chrom, fed_start(start))
        np.testing.assert_array_equal(ref[i], probe_oracle(x[None])[0])
        off = int(var.pos[i]) - 1 - fed_start(start)
        if 0 <= off < L:
            xa = x.copy()
            xa[off] = 0
            xa[off, "ACGT".index(var.ALT[i])] = 1
            np.testing.assert_array_equal(alt[i], probe_oracle(xa[None])[0])
            assert row.predict_class in ("input_only", "output")
        else:
            assert row.predict_class == "outside_input"
    assert man["windows"] == 3 and man["variants"] == 6
    assert man["geometry"]["centre_bin"] == NB // 2
    assert man["geometry"]["window_bp"] == 2 * L and man["geometry"]["input_bp"] == L
    # every variant but rs3 (outside the input) is in the field: 3 windows + 5 ALT passes
    assert man["forward_passes"] == 8 and man["forward_passes_naive"] == 12
    assert man["out_of_field_skipped"] == 1


def test_alt_sequence_differs_exactly_at_the_variant(world: dict) -> None:
    from perturbscore.predict import Job
    from perturbscore.windows import load_variants, plan_windows

    g = Genome(world["fa"])
    v = load_variants(world["variants"], centre_column="TSS")
    v.chrom = np.array([g.resolve(c) for c in v.chrom], dtype=object)
    plan = plan_windows(v.chrom, v.pos0, np.ones(6, int), v.centre0, TINY)
    ref = job_sequence(g, plan, v, Job(0, None, (), ()), {})
    alt = job_sequence(g, plan, v, Job(0, 1, (), ()), {})
    diff = [i for i in range(L) if ref[i] != alt[i]]
    assert diff == [int(plan.offset[1]) - L // 2] and chr(alt[diff[0]]) == v.alt[1]
    start = int(plan.start[0]) + L // 2
    assert ref.decode() == world["seqs"]["chr1"][start : start + L]
    g.close()


def test_out_of_field_variant_has_identical_ref_and_alt(world: dict, tmp_path: Path) -> None:
    run_predict(opts(world, tmp_path / "o"), predictor=Probe())
    ref, alt, table, _ = load(tmp_path / "o")
    i = list(table.rsID).index("rs3")
    assert table.predict_class[i] == "outside_input"
    np.testing.assert_array_equal(ref[i], alt[i])


def test_centre_bin_447_moves_the_window_one_base_right(world: dict, tmp_path: Path) -> None:
    run_predict(opts(world, tmp_path / "o", centre_bin=NB // 2 - 1), predictor=Probe())
    ref, _, table, man = load(tmp_path / "o")
    assert list(table.predict_window_start.astype(int)) == list(world["var"].TSS - L + 1)
    assert man["geometry"]["centre_bin"] == NB // 2 - 1
    x = window_onehot(world["seqs"], "chr1", fed_start(table.predict_window_start[0]))
    np.testing.assert_array_equal(ref[0], probe_oracle(x[None])[0])
    toml = tomllib.loads((tmp_path / "o" / "predict.toml").read_text())
    assert toml["geometry"]["centre_bin"] == NB // 2 - 1
    from perturbscore.errors import PerturbscoreError

    with pytest.raises(PerturbscoreError, match="447/448 convention"):
        run_predict(opts(world, tmp_path / "x", centre_bin=3), predictor=Probe())
    assert not (tmp_path / "x").exists()


def test_reverse_complement_flips_bins_back(world: dict, tmp_path: Path) -> None:
    run_predict(opts(world, tmp_path / "o", reverse_complement=True), predictor=Probe())
    ref, _, table, man = load(tmp_path / "o")
    x = window_onehot(world["seqs"], "chr1", fed_start(table.predict_window_start[0]))
    rc = x[::-1, ::-1]  # oracle: reversed positions, complemented bases
    expected = (probe_oracle(x[None])[0] + probe_oracle(rc[None])[0][::-1]) / 2
    np.testing.assert_allclose(ref[0], expected, rtol=1e-6)
    # the RC's A count of a flipped-back bin is the forward T count of the same bases
    off = (L - NB * BIN) // 2
    counts = x[off : off + NB * BIN].reshape(NB, BIN, 4).sum(axis=1)
    np.testing.assert_allclose(ref[0][:, 0], (counts[:, 0] + counts[:, 3]) / 2)
    assert man["forward_passes"] == 16


def test_chromosome_end_is_padded_with_n(world: dict, tmp_path: Path) -> None:
    run_predict(opts(world, tmp_path / "o"), predictor=Probe())
    ref, _, table, man = load(tmp_path / "o")
    i = list(table.rsID).index("rs4")  # chr2 (1,000 bp), window centred at 900
    assert int(table.predict_padded_bases[i]) == 900 - 1 + L // 2 - 1000
    assert man["padded_windows"] == 1
    # probe track 4 counts N: the bins past the end are all N
    x = window_onehot(world["seqs"], "chr2", fed_start(table.predict_window_start[i]))
    np.testing.assert_array_equal(ref[i], probe_oracle(x[None])[0])
    assert ref[i][-1, 4] == BIN


def test_kept_bins_and_tracks(world: dict, tmp_path: Path) -> None:
    from perturbscore.tracks import selection_from_options

    full = tmp_path / "full"
    run_predict(opts(world, full), predictor=Probe())
    sub = tmp_path / "sub"
    sel = selection_from_options(where=["biosample=GM12878"])
    run_predict(opts(world, sub, bins=3, selection=sel, dtype="float16"), predictor=Probe())
    ref_full, _, _, _ = load(full)
    ref_sub, _, _, man = load(sub)
    keep = [i for i in range(8) if i % 4 != 2]  # not the K562 CAGE tracks
    assert ref_sub.dtype == np.float16 and ref_sub.shape == (6, 3, 6)
    c = NB // 2
    np.testing.assert_array_equal(ref_sub, ref_full[:, c - 1 : c + 2][:, :, keep].astype("f2"))
    assert man["tracks"]["source_index"] == keep
    t = pd.read_csv(sub / "targets.txt", sep="\t")
    assert list(t["index"]) == list(range(6)) and list(t.identifier) == [f"T{i:02d}" for i in keep]


# --- the tiny Enformer ----------------------------------------------------------------
def test_cache_and_skipping_match_computing_everything(
    world: dict, tiny_model: Path, tmp_path: Path
) -> None:
    common = dict(model=str(tiny_model), batch_size=1)
    run_predict(opts(world, tmp_path / "fast", **common))
    run_predict(opts(world, tmp_path / "all", ref_cache=False, skip_out_of_field=False, **common))
    fr, fa, _, fm = load(tmp_path / "fast")
    ar, aa, _, am = load(tmp_path / "all")
    np.testing.assert_array_equal(fr, ar)  # one pass per batch: bit-identical
    np.testing.assert_array_equal(fa, aa)
    assert (fm["forward_passes"], am["forward_passes"]) == (8, 12)
    # bigger batches only reorder float sums inside the model
    run_predict(opts(world, tmp_path / "b5", model=str(tiny_model), batch_size=5))
    br, ba, _, _ = load(tmp_path / "b5")
    np.testing.assert_allclose(br, fr, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ba, fa, rtol=1e-5, atol=1e-7)


def test_predictions_go_through_perturbscore_run(
    world: dict, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p"
    run_predict(opts(world, out, model=str(tiny_model), bins=3))
    ref, alt, table, man = load(out)
    assert man["model"]["model"] == str(tiny_model) and man["device"] == "cpu"
    r = cli("run", str(out / "predict.toml"), "--out", str(tmp_path / "scores"))
    assert r.returncode == 0, r.stderr
    got = pd.read_parquet(tmp_path / "scores" / "predicted_diff_ave.parquet")
    expected = np.abs(alt.astype(np.float64).mean(axis=1) - ref.astype(np.float64).mean(axis=1))
    np.testing.assert_allclose(
        got[[f"T{i:02d}" for i in range(8)]].to_numpy(), expected, rtol=1e-12
    )
    assert list(got.rsID) == list(world["var"].rsID)
    tss = pd.read_parquet(tmp_path / "scores" / "predicted_diff_tss.parquet")
    np.testing.assert_allclose(
        tss[[f"T{i:02d}" for i in range(8)]].to_numpy(),
        np.abs(alt[:, 1].astype(float) - ref[:, 1]),
        rtol=1e-12,
    )
    # REF against REF scores exactly zero
    cfg = tomllib.loads((out / "predict.toml").read_text())
    import shutil

    shutil.copy(out / "ref.npy", out / "ref_copy.npy")  # run refuses one file as both
    text = (out / "predict.toml").read_text().replace('alt = "alt.npy"', 'alt = "ref_copy.npy"')
    assert cfg["groups"][0]["batches"][0]["alt"] == "alt.npy"
    (out / "refref.toml").write_text(text)
    r = cli("run", str(out / "refref.toml"), "--out", str(tmp_path / "zero"))
    assert r.returncode == 0, r.stderr
    z = pd.read_parquet(tmp_path / "zero" / "predicted_diff_ave.parquet")
    assert (z[[f"T{i:02d}" for i in range(8)]].to_numpy() == 0).all()


@pytest.fixture(scope="module")
def many(world: dict, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """240 variants around 4 TSSs (244 batches of one pass) and their uninterrupted run."""
    d = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(5)
    s1 = world["seqs"]["chr1"]
    tss = rng.choice([1000, 1400, 1800, 2200], 240)
    pos = tss + rng.integers(-200, 200, 240)
    ref = [s1[p - 1] for p in pos]
    var = pd.DataFrame(
        {
            "chrom": "1",
            "pos": pos,
            "TSS": tss,
            "rsID": [f"r{i}" for i in range(240)],
            "REF": ref,
            "ALT": ["G" if r != "G" else "A" for r in ref],
        }
    )
    variants = d / "many.csv"
    var.to_csv(variants, index=False)
    clean = d / "clean"
    run_predict(opts(world, clean, variants=variants, model=str(tiny_model), batch_size=1))
    return {"variants": variants, "clean": load(clean)}


def predict_argv(
    world: dict,
    variants: Path,
    model: Path | str,
    out: Path,
    *extra: str,
    genome: Path | None = None,
) -> list[str]:
    """``perturbscore predict`` on ``variants`` with the world's genome and targets."""
    return [
        "predict", str(variants), "--genome", str(genome or world["fa"]), "--model", str(model),
        "--targets", str(world["targets"]), "--out", str(out), *extra,
    ]  # fmt: skip


def _args(world: dict, many: dict, model: Path, out: Path, *extra: str) -> list[str]:
    return predict_argv(
        world, many["variants"], model, out,
        "--centre-column", "TSS", "--bins", "all", "--batch-size", "1", *extra,
    )  # fmt: skip


def _kill_after(args: list[str], batches: int, sig: int) -> subprocess.CompletedProcess:
    """Start ``perturbscore -v ARGS``, send ``sig`` once ``batches`` batches are logged.

    The child logs a line per finished batch to a pipe that is read only this far: once
    the pipe (shrunk to one page, about 100 lines) is full the child waits, so the signal
    always lands mid-run, from outside, as a user's would.
    """
    # unbuffered: the parent reads exactly up to the kill point, never ahead of it
    proc = subprocess.Popen(
        [CLI, "-v", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, **ONE_THREAD},
    )
    assert proc.stderr is not None
    fcntl.fcntl(proc.stderr.fileno(), F_SETPIPE_SZ, 4096)
    seen = 0
    for raw in iter(proc.stderr.readline, b""):  # one byte at a time up to each newline
        line = raw.decode()
        if line.startswith("perturbscore: DEBUG: batch") and line.rstrip().endswith(" done"):
            seen += 1
            if seen >= batches:
                break
    assert seen >= batches, "the run ended before the kill point"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


def _same(out: Path, clean: tuple) -> dict:
    ref, alt, table, man = load(out)
    np.testing.assert_array_equal(ref, clean[0])
    np.testing.assert_array_equal(alt, clean[1])
    pd.testing.assert_frame_equal(table, clean[2])
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS.values())  # nothing else
    return man


@pytest.mark.parametrize("seed", [3, 29])
def test_resume_after_sigkill_gives_identical_arrays(
    world: dict, tiny_model: Path, many: dict, tmp_path: Path, seed: int
) -> None:
    out = tmp_path / "killed"
    args = _args(world, many, tiny_model, out, "--resume")
    point = random.Random(seed).randint(2, 60)
    killed = _kill_after(args, point, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "ref.npy").exists()  # nothing final before the end
    logged = len((out / STATE_DIR / "batches.log").read_text().splitlines())
    assert point <= logged < 244
    if seed == 3:  # through the console script: stdout lists the files written, only them
        r = cli(*args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(out / n) for n in OUTPUTS.values()]
    else:  # the same library call (saves a torch start-up)
        run_predict(
            opts(
                world,
                out,
                variants=many["variants"],
                model=str(tiny_model),
                batch_size=1,
                resume=True,
            )
        )
    man = _same(out, many["clean"])
    assert man["resumed_batches"] == logged


def test_sigint_keeps_the_recorded_batches_and_says_how_to_continue(
    world: dict, tiny_model: Path, many: dict, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    killed = _kill_after(_args(world, many, tiny_model, out, "--resume"), 20, signal.SIGINT)
    assert killed.returncode == 130, killed.stderr[-2000:]
    last = killed.stderr.strip().splitlines()[-1]
    assert last.startswith("perturbscore: interrupted by SIGINT: ") and "--resume" in last
    assert "run the same command again" in last and "Traceback" not in killed.stderr
    # cleanup ran: no temporary file, no lock; only the recorded batches stay
    assert sorted(p.name for p in out.iterdir()) == [STATE_DIR]
    run_predict(
        opts(
            world, out, variants=many["variants"], model=str(tiny_model), batch_size=1, resume=True
        )
    )
    assert _same(out, many["clean"])["resumed_batches"] >= 20


def test_sigterm_without_resume_writes_nothing(
    world: dict, tiny_model: Path, many: dict, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    killed = _kill_after(_args(world, many, tiny_model, out), 10, signal.SIGTERM)
    assert killed.returncode == 143, killed.stderr[-2000:]
    last = killed.stderr.strip().splitlines()[-1]
    assert last == (
        "perturbscore: interrupted by SIGTERM: nothing was written. Start long "
        "runs with --resume so that an interrupted run can continue where it "
        "stopped."
    )
    assert "Traceback" not in killed.stderr
    assert not out.exists()  # the folder it created is gone again


class Crash(Probe):
    """Dies (as an unexpected error) at its n-th call."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.calls, self.n = 0, n

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("simulated crash")
        return super().__call__(x)


def test_resume_refuses_other_options_and_changed_partials(world: dict, tmp_path: Path) -> None:
    from perturbscore.errors import PerturbscoreError

    out = tmp_path / "o"
    with pytest.raises(RuntimeError):
        run_predict(opts(world, out, batch_size=2, resume=True), predictor=Crash(3))
    state = out / ".perturbscore-predict"
    assert len((state / "batches.log").read_text().splitlines()) == 2
    with pytest.raises(PerturbscoreError, match="batch_size"):
        run_predict(opts(world, out, batch_size=3, resume=True), predictor=Probe())
    partial = state / "ref.npy.partial"
    data = bytearray(partial.read_bytes())
    data[-(NB * 8 * 4) * 6] ^= 1  # flip a bit in row 0, written by batch 0
    partial.write_bytes(bytes(data))
    with pytest.raises(PerturbscoreError, match="does not match its log"):
        run_predict(opts(world, out, batch_size=2, resume=True), predictor=Probe())
    # without --resume the failed run leaves nothing behind
    with pytest.raises(RuntimeError):
        run_predict(opts(world, tmp_path / "fresh", batch_size=2), predictor=Crash(2))
    assert not (tmp_path / "fresh").exists()


class Killed(BaseException):
    """Stands in for a process killed while publishing its outputs."""


def test_a_commit_cut_short_is_finished_and_resumable(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perturbscore import outputs

    run_predict(opts(world, tmp_path / "clean"), predictor=Probe())
    clean = load(tmp_path / "clean")
    out = tmp_path / "o"
    real, calls = outputs._replace, []

    def replace_then_die(tmp: Path, final: Path) -> None:
        calls.append(final.name)
        if len(calls) == 3:
            raise Killed  # two files published, four promised by the journal
        real(tmp, final)

    monkeypatch.setattr(outputs, "_replace", replace_then_die)
    with pytest.raises(Killed):
        run_predict(opts(world, out, resume=True), predictor=Probe())
    monkeypatch.undo()
    journal = out / outputs.JOURNAL
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the journal's writer "died"
    journal.write_text(json.dumps({**json.loads(journal.read_text()), "pid": gone.pid}))
    assert (out / "ref.npy").exists() and not (out / "variants.csv").exists()
    # the same command again: the commit is finished, the run resumed (nothing left to
    # compute) and published again; nothing else is left in the folder
    res = run_predict(opts(world, out, resume=True), predictor=Probe())
    got = load(out)
    np.testing.assert_array_equal(got[0], clean[0])
    np.testing.assert_array_equal(got[1], clean[1])
    pd.testing.assert_frame_equal(got[2], clean[2])
    assert res.summary["resumed_batches"] == -(-res.summary["forward_passes"] // 4)  # all
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS.values())


def test_a_folder_in_use_is_refused_and_left_alone(world: dict, tmp_path: Path) -> None:
    from perturbscore.errors import PerturbscoreError

    out = tmp_path / "o"
    (out / STATE_DIR).mkdir(parents=True)
    (out / STATE_DIR / "batches.log").write_text("0 00000000\n")  # another run's state
    from perturbscore.locks import folder_lock

    with folder_lock(out):  # held (an flock) as by a live process
        with pytest.raises(PerturbscoreError, match="another perturbscore process"):
            run_predict(opts(world, out), predictor=Probe())
        assert (out / STATE_DIR / "batches.log").read_text() == "0 00000000\n"
        assert sorted(p.name for p in out.iterdir()) == [STATE_DIR, ".perturbscore.lock"]


@pytest.mark.skipif(
    "torch" not in sys.modules and not __import__("importlib").util.find_spec("torch"),
    reason="torch not installed",
)
def test_cuda_matches_cpu(world: dict, tiny_model: Path, tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    run_predict(opts(world, tmp_path / "cpu", model=str(tiny_model)))
    run_predict(opts(world, tmp_path / "gpu", model=str(tiny_model), device="cuda"))
    np.testing.assert_allclose(
        load(tmp_path / "gpu")[0], load(tmp_path / "cpu")[0], rtol=1e-3, atol=1e-5
    )


# --- inputs and errors -------------------------------------------------------------------
def test_vcf_and_bgzipped_fasta(world: dict, tmp_path: Path) -> None:
    bgzf = pytest.importorskip("Bio.bgzf")
    import pyfaidx

    gz = tmp_path / "genome.fa.gz"
    with bgzf.BgzfWriter(str(gz), "wb") as fh:
        fh.write(world["fa"].read_bytes())
    pyfaidx.Faidx(str(gz)).close()  # the test's own .fai and .gzi
    var = world["var"]
    vcf = tmp_path / "v.vcf"
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"chr1\t{var.pos[0]}\trs0\t{var.REF[0]}\t{var.ALT[0]},A\t.\t.\t."]
    lines += [f"chr1\t{var.pos[3]}\trs3\t{var.REF[3]}\t{var.ALT[3]}\t.\t.\t."]
    vcf.write_text("\n".join(lines) + "\n")
    if var.REF[0] == "A":
        pytest.skip("seeded REF is A")
    run_predict(
        opts(world, tmp_path / "o", variants=vcf, genome=gz, centre_column=None), predictor=Probe()
    )
    ref, alt, table, _ = load(tmp_path / "o")
    assert list(table.ID) == ["rs0", "rs0", "rs3"] and list(table.ALT)[1] == "A"
    start = int(var.pos[0]) - 1 - L // 2  # centred on the variant
    np.testing.assert_array_equal(
        ref[0], probe_oracle(window_onehot(world["seqs"], "chr1", start)[None])[0]
    )
    assert not (alt[0] == alt[1]).all()


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    p = tmp_path / "bad.csv"
    df.to_csv(p, index=False)
    return p


def _cli_error(
    world: dict, tmp_path: Path, variants: Path, *extra: str, genome: Path | None = None
) -> str:
    out = tmp_path / "never"
    no_model = tmp_path / "no-model"
    r = cli(
        *predict_argv(
            world, variants, no_model, out, "--centre-column", "TSS", *extra, genome=genome
        )
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()
    return r.stderr


def test_ref_mismatch_is_an_error_or_skipped_and_counted(world: dict, tmp_path: Path) -> None:
    df = world["var"].copy()
    df.loc[2, "REF"] = "A" if df.REF[2] != "A" else "C"
    found = world["var"].REF[2]
    bad = _write(tmp_path, df)
    msg = _cli_error(world, tmp_path, bad)
    assert f"rs2 (line 4) expected {df.REF[2]}, found {found}" in msg
    assert "--skip-ref-mismatch" in msg
    run_predict(
        opts(world, tmp_path / "o", variants=bad, skip_ref_mismatch=True), predictor=Probe()
    )
    _, _, table, man = load(tmp_path / "o")
    assert man["ref_mismatches_skipped"] == 1 and "rs2" not in list(table.rsID)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.assign(ALT=["TT"] + list(d.ALT[1:])), "1 variant is an indel (line 2"),
        (lambda d: d.drop(columns=["REF"]), "no ref allele column"),
        (lambda d: d.assign(chrom=["7"] + list(d.chrom[1:])), "chromosome 7"),
        (lambda d: d.assign(pos=["x"] + list(d.pos[1:])), "not a whole number"),
    ],
)
def test_input_errors_exit_2_before_anything(
    world: dict, tmp_path: Path, change, needle: str
) -> None:
    msg = _cli_error(world, tmp_path, _write(tmp_path, change(world["var"].astype(str))))
    assert needle in msg


def test_missing_index_is_refused_not_built(world: dict, tmp_path: Path) -> None:
    fa = tmp_path / "noindex.fa"
    fa.write_bytes(world["fa"].read_bytes())
    msg = _cli_error(world, tmp_path, world["variants"], genome=fa)
    assert f"samtools faidx {fa}" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noindex.fa"]  # nothing beside it


def test_existing_outputs_are_not_replaced(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "ref.npy").write_bytes(b"user's")
    r = cli(*predict_argv(world, world["variants"], "x", out, "--centre-column", "TSS"))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (out / "ref.npy").read_bytes() == b"user's"


# --- the study's plan ------------------------------------------------------------------------
def test_study_plan_counts_match_a_pandas_oracle(shared: Path) -> None:
    tables = sorted(shared.glob("*_variants.csv"))
    r = cli(
        "predict",
        "--plan-only",
        *map(str, tables),
        "--centre-column",
        "Transcription start site (TSS)",
    )
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.strip().splitlines()]
    got = dict(zip(rows[0][1:], map(int, rows[-1][1:]), strict=True))
    d = pd.concat([pd.read_csv(t) for t in tables])
    windows = d.groupby(["Chromosome", "enformer_start"]).ngroups
    # outside what Enformer reads: the central 196,608 bp of the 393,216-bp window
    out = int((~d.variant_pos_in_window.between(98_304, 196_608 + 98_304 - 1)).sum())
    assert got["variants"] == len(d) == 55_084
    assert got["windows"] == windows and got["out_of_field"] == out
    assert got["forward_passes_naive"] == 2 * len(d)
    assert got["forward_passes"] == windows + len(d) - out


def test_enformer_geometry_from_its_config() -> None:
    from perturbscore.predict_model import plan_geometry

    g = plan_geometry()  # enformer-pytorch defaults: 196,608 bp in, 896 bins of 128 bp
    assert g == ENFORMER  # perturbscore.geometry's preset: a 393,216-bp window
    assert (g.window, g.input, g.bins, g.bin_size, g.input_start) == (
        393_216,
        196_608,
        896,
        128,
        98_304,
    )
    # the centre base (offset 196,608 of the window) lies in bin 448
    assert g.centre_bin == 448 == (196_608 - g.output_start) // 128
    assert plan_geometry(centre_bin=447).centre_offset == 196_607


def test_plan_only_with_a_hub_id_or_a_wrong_folder(shared: Path, tmp_path: Path) -> None:
    """--plan-only never downloads: a hub id (no such local folder) plans with Enformer's
    geometry, the same counts as no --model; a folder that is no saved model is refused."""
    table = shared / "stab_snps_new_strand_final_variants.csv"
    base = [
        "predict",
        "--plan-only",
        str(table),
        "--centre-column",
        "Transcription start site (TSS)",
    ]
    plain = cli(*base)
    hub = cli(*base, "--model", "EleutherAI/enformer-official-rough")
    assert plain.returncode == hub.returncode == 0, hub.stderr
    assert hub.stdout == plain.stdout  # (the test's cli runs -q: the INFO line is not shown)
    (tmp_path / "notamodel").mkdir()
    bad = cli(*base, "--model", str(tmp_path / "notamodel"))
    assert bad.returncode == 2 and "not one written by save_pretrained" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("bins", ["4", "0", "abc", "-1"])
def test_plan_only_checks_bins_by_the_run_files_rule(shared: Path, bins: str) -> None:
    """Trial 7, repro 07: --plan-only accepted --bins 4 and 0 (exit 0), which --help and
    the run file's [predict] bins refuse; one rule for both now, one message."""
    table = shared / "stab_snps_new_strand_final_variants.csv"
    r = cli("predict", "--plan-only", str(table), "--bins", bins)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr == (
        f'perturbscore: error: --bins {bins}: expected an odd number of central bins, or "all" '
        "(1, 3, 5, ...); write e.g. --bins 3.\n"
    )
    assert r.stdout == ""
    ok = cli("predict", "--plan-only", str(table), "--bins", "5")
    assert ok.returncode == 0, ok.stderr


def test_study_windows_are_reproduced_from_their_tss(shared: Path) -> None:
    from perturbscore.predict_model import plan_geometry
    from perturbscore.windows import load_variants, plan_windows

    tss = "Transcription start site (TSS)"
    for t in sorted(shared.glob("*_variants.csv")):
        v = load_variants(t, centre_column=tss)
        plan = plan_windows(v.chrom, v.pos0, np.ones(len(v.pos0), int), v.centre0, plan_geometry())
        d = pd.read_csv(t)
        # the study's own columns, from its TSS alone: start, end and offset
        np.testing.assert_array_equal(plan.start + 1, d.enformer_start)
        np.testing.assert_array_equal(plan.start + 1 + 393_216, d.enformer_end)
        np.testing.assert_array_equal(plan.offset, d.variant_pos_in_window)
        assert (d.enformer_start == d[tss] - 196_608).all()


def test_the_run_file_geometry_is_the_models() -> None:
    from perturbscore.geometry_tables import parse_geometry_section
    from perturbscore.predict_output import geometry_toml

    for geo in (ENFORMER, ENFORMER.with_centre_bin(447), TINY):
        got = parse_geometry_section(tomllib.loads(geometry_toml(geo))["geometry"])
        keys = ("name", "window", "input", "bins", "bin_size", "centre_bin")
        assert [getattr(got, k) for k in keys] == [getattr(geo, k) for k in keys]


def test_a_typod_centre_column_suggests_the_right_one(shared: Path) -> None:
    table = shared / "stab_snps_new_strand_final_variants.csv"
    r = cli("predict", "--plan-only", str(table), "--centre-column", "Transcription start site")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert '(did you mean "Transcription start site (TSS)"?)' in r.stderr
