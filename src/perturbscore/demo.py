"""A small synthetic dataset in the stable fine-mapping study's file layout.

Everything here is made up and labelled so: the track table's identifiers are
``SYNTH0000``..., its ``file`` column points to ``synthetic/perturbscore-demo``,
and variants are ``rsDEMO...`` on made-up genes.  It exists so that a fresh clone
can run the study's run file end to end in a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tomllib
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from .demo_record import RECORD, Fresh, record_text, theirs_among
from .errors import PerturbscoreError
from .messages import listing, overwrite_hint
from .outputs import check_out_folder, output_folder, temp_path
from .outputs_earlier import earlier_outputs
from .pipeline import MANIFEST, RunOptions, RunResult, run_path
from .runfile import parse_run_config
from .scoring import parse_aggregation
from .writers import FORMATS as OUTPUT_FORMATS

#: (group, batch suffix, rows) of the demo, in the study's order.
DEMO_BATCHES = (("stab", "", 40), ("stab", "_new", 17), ("top", "", 53), ("top", "_new", 23))
DEMO_BINS = 3
RESULTS = "results"  # run_demo's output folder, inside the demo folder

_DESCRIPTIONS = [
    "DNASE:GM12878",
    "DNASE:K562",
    "DNASE:liver male adult (32 years)",
    "ATAC:BM0106-Day0 / Bone Marrow CD34+ / pDC",
    "CHIP:CTCF:GM12878",
    "CHIP:H3K27ac:GM12878",
    "CHIP:H3K4me3:GM12878",
    "CHIP:H3K27me3:GM12878",
    "CHIP:H3K27ac:K562",
    "CHIP:H3K27me3:HepG2",
    "CHIP:POLR2A:GM12878",
    "CHIP:CTCF:HepG2",
    "CAGE:B lymphoblastoid cell line: GM12878 ENCODE, biol_",
    "CAGE:liver, adult, pool1",
]


def demo_run_file() -> str:
    """Text of the study's run file shipped with the package (``examples/stablefm.toml``)."""
    return files("perturbscore").joinpath("data/stablefm.toml").read_text(encoding="utf-8")


def _targets(n_tracks: int) -> pd.DataFrame:
    rows = []
    for i in range(n_tracks):
        desc = _DESCRIPTIONS[i % len(_DESCRIPTIONS)]
        assay = desc.split(":")[0].lower()
        rows.append(
            {
                "index": i,
                "genome": 0,
                "identifier": f"SYNTH{i:04d}",
                "file": f"synthetic/perturbscore-demo/{assay}/SYNTH{i:04d}.w5",
                "clip": 32,
                "scale": 2,
                "sum_stat": "sum" if assay == "cage" else "mean",
                "description": desc,
            }
        )
    return pd.DataFrame(rows)


def write_demo_dataset(
    folder: str | Path, n_tracks: int = 42, seed: int = 7, overwrite: bool = False
) -> list[Path]:
    """Write synthetic predictions, variant tables, track table, shortlist and run file.

    All or nothing: the files are written under temporary names in ``folder`` and
    renamed into place at the end, and only if none of them exists yet (or
    ``overwrite``); files of ``folder`` that the demo does not write are never touched.

    Parameters
    ----------
    folder : str or Path
        Created if missing.
    n_tracks : int
        Tracks per prediction row.
    seed : int
        Seed of the random generator; the same seed writes the same files.
    overwrite : bool
        Replace demo files already in ``folder`` (only those the demo writes).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    PerturbscoreError
        ``folder`` is a file, or holds a file the demo would write and not ``overwrite``.
    """
    return _write_staged(Path(folder), n_tracks, seed, overwrite)


def _write_files(out: Path, n_tracks: int, seed: int) -> list[Path]:
    """Write every demo file under ``out`` (a fresh staging folder); returns their paths."""
    rng = np.random.default_rng(seed)
    written: list[Path] = []

    targets = _targets(n_tracks)
    p = out / "targets_human.txt"
    targets.to_csv(p, sep="\t", index=False)
    written.append(p)
    # The study's shortlist: GM12878 tracks with a leading unnamed row-number column.
    short = targets[targets["description"].str.contains("GM12878")].reset_index(drop=True)
    short.index = short.index + 1
    p = out / "basenji_relevant_metadata.csv"
    short.to_csv(p)
    written.append(p)

    site = 0
    variants: dict[str, list[pd.DataFrame]] = {}
    for group, suffix, n in DEMO_BATCHES:
        # Enformer outputs are non-negative coverage; ALT perturbs REF multiplicatively.
        ref = rng.gamma(2.0, 1.5, size=(n, DEMO_BINS, n_tracks)).astype(np.float32)
        alt = (ref * rng.lognormal(0.0, 0.15, size=ref.shape)).astype(np.float32)
        arrays = []
        for kind, arr in (("ref", ref), ("alt", alt)):
            p = out / f"final_{kind}_preds_{group}_snps{suffix}_strand.npy"
            arrays.append((p, arr))
            written.append(p)
        alleles = rng.choice(np.array(["A", "C", "G", "T"]), size=(n, 2))
        rows: list[dict[str, object]] = []
        for i in range(n):
            ref_a, alt_a = alleles[i]
            if ref_a == alt_a:
                alt_a = {"A": "G", "C": "T", "G": "A", "T": "C"}[ref_a]
            pos = 1_000_000 + 997 * site
            rsid = f"rsDEMO{site:05d}"
            if i % 11 == 5:
                # A multi-allelic site: same rsID as the previous row, another ALT.
                prev = rows[-1]
                rsid, pos, ref_a = str(prev["rsID"]), int(str(prev["PHYSICAL"])), str(prev["REF"])
                alt_a = next(b for b in "TACG" if b not in (ref_a, prev["ALT"]))
            site += 1
            # As in the study (31%), about a fifth of the variants lie more than 98,304 bp from
            # their gene's TSS: outside what Enformer reads, so ALT = REF there (below).
            tss = pos - int(rng.integers(-143_000, 143_000))
            rows.append(
                {
                    "Chromosome": 22,
                    "GENE": f"ENSGDEMO{(site // 3):05d}.1",
                    "Transcription start site (TSS)": tss,
                    "Variant": f"chr22-{pos}-{ref_a}-{alt_a}",
                    "rsID": rsid,
                    "Strand": 1 if site % 2 else -1,
                    "REF": ref_a,
                    "ALT": alt_a,
                    "PHYSICAL": pos,
                    "distance_from_TSS": pos - tss,
                    "enformer_start": tss - 196_608,
                    "enformer_end": tss + 196_608,
                    "variant_pos_in_window": pos - tss + 196_608,
                }
            )
        table = pd.DataFrame(rows)
        unseen = (table["variant_pos_in_window"] - 196_608).abs().to_numpy() > 98_304
        alt[unseen] = ref[unseen]  # the model never saw these variants: bitwise equal
        for p, arr in arrays:
            np.save(p, arr)
        p = out / f"{group}_snps{suffix}_strand_final_variants.csv"
        table.to_csv(p, index=False)
        variants.setdefault(group, []).append(table)
        written.append(p)

    p = out / "pairing" / "demo_pairs.csv"
    p.parent.mkdir(exist_ok=True)
    _demo_pairing(variants).to_csv(p, index=False)
    written.append(p)

    p = out / "stablefm.toml"
    p.write_text(demo_run_file(), encoding="utf-8")
    written.append(p)
    return written


def _demo_pairing(variants: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """A long pairing table (``unit``, ``rank``, ``a_``/``b_`` keys) for the demo.

    Made up like the rest: 36 units of ranks 1-3 pairing a stab variant with a top
    variant, every fourth one "matching" (both sides the same stab variant), so that
    ``--design paired`` and ``--design matching`` can be tried on the demo.
    """
    stab = pd.concat(variants["stab"], ignore_index=True)
    top = pd.concat(variants["top"], ignore_index=True)
    rows = []
    for u in range(36):
        a = stab.iloc[u]
        b = a if u % 4 == 0 else top.iloc[u]
        rows.append(
            {
                "unit": f"DEMO{u:03d}",
                "rank": 1 + u % 3,
                "a_GENE": a["GENE"],
                "a_rsID": a["rsID"],
                "a_ALT": a["ALT"],
                "b_GENE": b["GENE"],
                "b_rsID": b["rsID"],
                "b_ALT": b["ALT"],
            }
        )
    return pd.DataFrame(rows)


def demo_files() -> list[Path]:
    """The demo dataset's files, relative to its folder (what :func:`_write_files` writes,
    and the demo's record), known without writing anything, so that a refusal leaves the
    folder untouched."""
    names = [Path("targets_human.txt"), Path("basenji_relevant_metadata.csv")]
    for group, suffix, _ in DEMO_BATCHES:
        names += [Path(f"final_{k}_preds_{group}_snps{suffix}_strand.npy") for k in ("ref", "alt")]
        names.append(Path(f"{group}_snps{suffix}_strand_final_variants.csv"))
    return [*names, Path("pairing") / "demo_pairs.csv", Path("stablefm.toml"), RECORD]


def _refuse_existing(
    folder: Path,
    relative: Sequence[Path],
    overwrite: bool,
    reserved: Sequence[Path],
    fresh: Fresh = None,
) -> None:
    """Refuse files (or folders) where the demo writes ``relative`` (and ``reserved``).

    With ``overwrite``, existing files must be the demo's own (:func:`_not_the_demos`;
    ``fresh`` is a folder holding the demo's files, or a function writing them into a
    folder, called only when needed) and existing ``reserved`` results an earlier run's.
    """
    targets = [folder / r for r in relative]
    in_the_way = [t for t in targets if t.is_dir() and not t.is_symlink()]
    if in_the_way:
        raise PerturbscoreError(
            f"{folder}: the demo writes the file {in_the_way[0].relative_to(folder)}, but "
            "a folder of that name is there; move it or choose another folder."
        )
    # ... and the reverse: a file where the demo writes into a folder (pairing/, results/).
    inner = {p for t in [*targets, *reserved] for p in t.relative_to(folder).parents[:-1]}
    for sub in sorted(inner):
        if (folder / sub).exists() and not (folder / sub).is_dir():
            raise PerturbscoreError(
                f"{folder}: the demo writes into the folder {sub}, but a file of that name "
                "is there; nothing was changed: move it or choose another folder."
            )
    existing = [t for t in [*targets, *reserved] if t.exists() or t.is_symlink()]
    if not existing:
        return
    if not overwrite:
        names = [str(e.relative_to(folder)) for e in existing]
        raise PerturbscoreError(
            f"{folder} already holds {len(existing)} of the files the demo writes "
            f"({listing(names, 4)}); nothing was changed: {overwrite_hint()} to replace "
            "only the demo's own files, or choose a new folder."
        )
    inputs = [t.relative_to(folder) for t in existing if t in targets]
    theirs = theirs_among(folder, inputs, fresh)
    results = folder / RESULTS
    ours, _ = earlier_outputs(results, "run")
    for t in existing:
        if t not in targets and t.relative_to(results).as_posix() not in ours:
            theirs.append(t.relative_to(folder))
    if theirs:
        names = [r.as_posix() for r in theirs]
        it, they = ("it", "it differs") if len(names) == 1 else ("them", "they differ")
        raise PerturbscoreError(
            f"{folder} holds {listing(names, 4)}, which the demo did not write there "
            f"({they} from the demo's files and no record of the demo's lists {it}); nothing "
            "was changed: the demo replaces only its own files, even with --overwrite, so "
            f"move {it} away or choose a new folder."
        )


def _write_staged(
    folder: Path, n_tracks: int, seed: int, overwrite: bool, reserved: Sequence[Path] = ()
) -> list[Path]:
    """Stage the demo files in ``folder``, check for existing ones, then rename them in.

    ``reserved`` are further paths the demo will write (its results): they must not
    exist either unless ``overwrite``, so that a refusal happens before anything moves.
    """
    if folder.exists() and not folder.is_dir():
        raise PerturbscoreError(
            f"{folder} is a file, not a folder; give the demo a folder to write into."
        )
    # Folders this call creates (innermost first), removed again if it fails.
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    check_out_folder(folder, "demo folder")

    def fresh(out: Path) -> None:
        _write_files(out, n_tracks, seed)

    # Before anything is written in ``folder``.
    _refuse_existing(folder, demo_files(), overwrite, reserved, fresh)
    # The folder lock and sweep every writing command shares: a killed demo's staging
    # folder (.perturbscore-demo.perturbscore-{pid}.partial) is removed by the next command there.
    staging = temp_path(folder / "perturbscore-demo")
    try:
        with output_folder(folder, "demo folder"):
            try:
                staging.mkdir()
                staged = _write_files(staging, n_tracks, seed)
                relative = [p.relative_to(staging) for p in staged]
                # Again, for what was really staged: files may have appeared since.
                _refuse_existing(folder, [*relative, RECORD], overwrite, reserved, staging)
                (staging / RECORD).write_text(
                    record_text(folder, staging, relative), encoding="utf-8"
                )
                # The record first: killed between two renames, every file in place is
                # one the record lists (an earlier demo's or this one's).
                relative = [RECORD, *relative]
                targets = [folder / r for r in relative]
                for r in relative:
                    (folder / r).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / r, folder / r)
                return targets
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for d in created:  # only folders this call made, and only while empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def demo_results(folder: str | Path) -> list[Path]:
    """The files :func:`run_demo` writes under ``folder/results`` (tables and manifest)."""
    out = Path(folder)
    config = parse_run_config(tomllib.loads(demo_run_file()), out)
    labels = [parse_aggregation(a, DEMO_BINS, config.center_bin).label for a in config.aggregations]
    ext = OUTPUT_FORMATS[config.format]
    tables = [
        out / RESULTS / (config.table_name(g.name, label, stat) + ext)
        for g in config.groups
        for label in labels
        for stat in config.statistics
    ]
    return [*tables, out / RESULTS / MANIFEST]


def run_demo(folder: str | Path, overwrite: bool = False, progress: bool = True) -> RunResult:
    """Write the demo dataset into ``folder``; run its ``stablefm.toml`` into ``folder/results``.

    Refuses, before writing anything, when ``folder`` holds any file the demo would
    write (inputs or results), unless ``overwrite``; then only those files are replaced.
    """
    out = Path(folder)
    _write_staged(out, 42, 7, overwrite, reserved=demo_results(out))
    return run_path(
        out / "stablefm.toml", out / RESULTS, RunOptions(overwrite=overwrite, progress=progress)
    )
