"""Compare two variant groups track by track (Wilcoxon tests, BH, effect sizes).

Inputs are the tables a run wrote (found through its ``manifest.json``), two group
names A and B, and designs:

``unpaired``
    every score of B against every score of A, per track (rank-sum);
``paired``
    per unit of a pairing table (e.g. a gene and a credible-set rank), the difference
    B - A of the unit's two variants, per track (signed rank).  Units whose two
    variants are the same ("matching") are left out;
``matching``
    scores of matching units against those of non-matching units of A, and of B
    (rank-sum; two tests per track).

Every test row says which sample is ``x`` and which is ``y``: ``p_greater`` is
R's ``alternative = "greater"``, i.e. ``x`` tends to be larger (for ``paired``, the
differences ``x - y`` = B - A tend to be positive).  Missing scores drop out of a
track's test; ``n_x``/``n_y`` report what was used.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .tracks import _split_description

log = logging.getLogger("perturbscore")

DESIGNS = ("unpaired", "paired", "matching")
DUPLICATE_RULES = ("error", "first", "mean", "max")
FAMILIES = ("all", "design", "table")
DEFAULT_KEYS = ("GENE", "rsID", "ALT")
#: Score-table columns filled from a pairing table's variant description (pos:ref:alt).
_ALLELE_KEYS = {"REF": 1, "ALT": 2}


@dataclass
class ScoreSet:
    """One group's score table for one (aggregation, statistic)."""

    group: str
    aggregation: str
    statistic: str
    table: pd.DataFrame
    path: Path


@dataclass
class RunTables:
    """The tables and track metadata of a finished run."""

    folder: Path
    manifest: dict[str, Any]
    tracks: pd.DataFrame  # identifier, index, description, assay, target, biosample
    sets: list[ScoreSet] = field(default_factory=list)

    def groups(self) -> list[str]:
        return sorted({s.group for s in self.sets})

    def get(self, group: str, aggregation: str, statistic: str) -> ScoreSet:
        for s in self.sets:
            if (s.group, s.aggregation, s.statistic) == (group, aggregation, statistic):
                return s
        raise KeyError((group, aggregation, statistic))


def read_score_table(path: Path, score_columns: Sequence[str]) -> pd.DataFrame:
    """Read a table written by ``perturbscore run`` (Parquet, CSV, RDS or RData).

    ``score_columns`` (the run's track identifiers) are read as float, the rest as text.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        head = pd.read_csv(path, nrows=0).columns
        scores = set(score_columns)
        dtypes = {c: ("float64" if c in scores else "str") for c in head}
        return pd.read_csv(
            path,
            dtype=dtypes,
            keep_default_na=False,
            na_values={c: ["", "NaN", "nan"] for c in scores},
        )
    if suffix in {".rds", ".rdata"}:
        import pyreadr

        objs = pyreadr.read_r(str(path))
        return next(iter(objs.values())).reset_index(drop=True)
    raise PerturbscoreError(f"{path}: unknown score table format {suffix!r}.")


def load_run(folder: str | Path) -> RunTables:
    """Find a run's tables and selected tracks through its ``manifest.json``."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise PerturbscoreError(
            f"{folder}: no manifest.json; give the --out folder of 'perturbscore run'."
        )
    manifest = json.loads(mpath.read_text())
    sel = pd.DataFrame(manifest["tracks"]["selected"])
    split = [_split_description(d) for d in sel["description"]]
    for i, col in enumerate(("assay", "target", "biosample")):
        sel[col] = [s[i] for s in split]
    run = RunTables(folder, manifest, sel)
    for o in manifest["outputs"]:
        path = folder / o["path"]
        if not path.is_file():
            raise PerturbscoreError(f"{path}: listed in {mpath} but missing.")
        run.sets.append(
            ScoreSet(o["group"], o["aggregation"], o["statistic"], pd.DataFrame(), path)
        )
    return run


def _loaded(s: ScoreSet, score_columns: Sequence[str]) -> pd.DataFrame:
    if s.table.empty:
        s.table = read_score_table(s.path, score_columns)
    return s.table


def read_pairing(paths: Sequence[str | Path], a_prefix: str, b_prefix: str) -> pd.DataFrame:
    """Read pairing tables into one row per unit.

    Two shapes are understood:

    * the fine-mapping ``*_all_pp_max.csv`` shape: ``GENE`` (``chrN_<Ensembl id>``) and,
      for ranks k = 1, 2, ..., ``<PREFIX>_k`` (rsID) and ``<PREFIX>_k_VAR_HG19``
      (``pos:ref:alt``), for both prefixes (e.g. STAB and TOP);
    * a long table with ``unit`` and ``a_<key>`` / ``b_<key>`` columns.

    A folder in ``paths`` stands for every ``.csv``/``.tsv`` file in it.

    Returns
    -------
    pandas.DataFrame
        ``unit``, ``a_GENE``, ``a_rsID``, ``a_REF``, ``a_ALT`` (and ``b_`` alike, as far
        as the input tells them) and ``matching`` (both sides name the same variant).
        Units with a missing (``NA``) variant on either side are dropped.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        # A folder stands for every table in it (e.g. fine_mapping/ with one per chromosome).
        files += (
            sorted(f for f in p.iterdir() if f.suffix.lower() in {".csv", ".tsv"})
            if p.is_dir()
            else [p]
        )
    frames = []
    for p in files:
        if not p.is_file():
            raise PerturbscoreError(f"{p}: pairing table not found.")
        sep = "\t" if p.suffix.lower() in {".tsv", ".txt"} else ","
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
        frames.append(_pairing_units(df, p, a_prefix, b_prefix))
    units = pd.concat(frames, ignore_index=True)
    if units["unit"].duplicated().any():
        dup = units.loc[units["unit"].duplicated(), "unit"].iloc[0]
        raise PerturbscoreError(f"pairing unit {dup!r} appears more than once across {paths}.")
    return units


def _pairing_units(df: pd.DataFrame, path: Path, a_prefix: str, b_prefix: str) -> pd.DataFrame:
    if "unit" in df.columns:
        if not any(c.startswith("a_") for c in df.columns):
            raise PerturbscoreError(f"{path}: long pairing table needs a_<key>/b_<key> columns.")
        out = df.copy()
    else:
        ranks = sorted(
            int(m.group(1)) for c in df.columns if (m := re.fullmatch(rf"{a_prefix}_(\d+)", c))
        )
        if "GENE" not in df.columns or not ranks:
            raise PerturbscoreError(
                f"{path}: pairing table has neither 'unit' nor GENE and {a_prefix}_k columns "
                f"(columns: {list(df.columns)[:8]}...); check --a-prefix/--b-prefix."
            )
        parts = []
        gene = df["GENE"].str.replace(r"^chr[^_]+_", "", regex=True)
        for k in ranks:
            need = [f"{a_prefix}_{k}", f"{b_prefix}_{k}"]
            missing = [c for c in need if c not in df.columns]
            if missing:
                raise PerturbscoreError(f"{path}: pairing columns {missing} are missing.")
            part = pd.DataFrame(
                {
                    "unit": df["GENE"] + f":{k}",
                    "rank": k,
                    "a_GENE": gene,
                    "b_GENE": gene,
                    "a_rsID": df[need[0]],
                    "b_rsID": df[need[1]],
                }
            )
            for side, prefix in (("a", a_prefix), ("b", b_prefix)):
                var = df.get(f"{prefix}_{k}_VAR_HG19")
                if var is not None:
                    fields = var.str.split(":", expand=True).reindex(columns=range(3))
                    part[f"{side}_VAR"] = var
                    for key, i in _ALLELE_KEYS.items():
                        part[f"{side}_{key}"] = fields[i].fillna("")
            parts.append(part)
        out = pd.concat(parts, ignore_index=True)
    a_cols = sorted(c for c in out.columns if c.startswith("a_"))
    b_cols = ["b_" + c[2:] for c in a_cols]
    present = [c for c in b_cols if c in out.columns]
    usable = ~(out[a_cols + present].isin(["NA", ""])).any(axis=1)
    out = out[usable].reset_index(drop=True)
    same = np.ones(len(out), bool)
    for a, b in zip(a_cols, b_cols, strict=True):
        if b in out.columns:
            same &= (out[a] == out[b]).to_numpy()
    out["matching"] = same
    return out


def _index_scores(
    table: pd.DataFrame,
    keys: Sequence[str],
    tracks: list[str],
    rule: str,
    where: str,
    wanted: pd.DataFrame,
) -> pd.DataFrame:
    """Score rows indexed by ``keys``, duplicates resolved by ``rule``."""
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise PerturbscoreError(
            f"{where}: pairing keys {missing} are not columns of the score table "
            f"(it has {[c for c in table.columns if c not in tracks]}); choose --keys."
        )
    t = table[list(keys) + tracks]
    dup = t.duplicated(subset=list(keys), keep=False)
    if dup.any():
        if rule == "error":
            dkeys = t.loc[dup, list(keys)].drop_duplicates()
            hit = dkeys.merge(wanted, on=list(keys))
            if not hit.empty:
                first = hit.iloc[0]
                rows = t.index[(t[list(keys)] == first[list(keys)].to_numpy()).all(axis=1)]
                raise PerturbscoreError(
                    f"{where}: {len(hit)} pairing variants match several score rows, e.g. "
                    f"{dict(first[list(keys)])} at rows {list(rows + 1)}; add a key column "
                    "(--keys) or choose --duplicates first|mean|max."
                )
        elif rule == "first":
            t = t.drop_duplicates(subset=list(keys), keep="first")
        else:
            t = t.groupby(list(keys), sort=False, as_index=False)[tracks].agg(rule)
    return t.drop_duplicates(subset=list(keys)).set_index(list(keys))


def _lookup(
    indexed: pd.DataFrame, units: pd.DataFrame, side: str, keys: Sequence[str], tracks: list[str]
) -> np.ndarray:
    """``(units, tracks)`` scores of one side of every unit (NaN where not found)."""
    idx = (
        pd.MultiIndex.from_frame(units[[f"{side}_{k}" for k in keys]])
        if len(keys) > 1
        else pd.Index(units[f"{side}_{keys[0]}"])
    )
    return indexed.reindex(idx)[tracks].to_numpy(dtype=float)


@dataclass
class CompareResult:
    """Tidy test table plus what is needed to draw the figures."""

    tests: pd.DataFrame
    samples: dict[tuple[str, str], dict[str, np.ndarray]]  # (agg, stat) -> label -> (n, T)
    tracks: pd.DataFrame
    summary: dict[str, Any]


def _block_tests(design: str, x: np.ndarray, y: np.ndarray | None) -> dict[str, np.ndarray]:
    from .stats import rank_sum, signed_rank

    if design == "paired":
        assert y is not None
        d = x - y
        r = signed_rank(d)
        med = np.full(d.shape[1], np.nan)
        ok = ~np.isnan(d).all(axis=0)
        med[ok] = np.nanmedian(d[:, ok], axis=0)
    else:
        assert y is not None
        r = rank_sum(x, y)
        med = np.full(x.shape[1], np.nan)
        ok = ~np.isnan(x).all(axis=0) & ~np.isnan(y).all(axis=0)
        med[ok] = np.nanmedian(x[:, ok], axis=0) - np.nanmedian(y[:, ok], axis=0)
    return {
        "n_x": r.n_x,
        "n_y": r.n_y,
        "test_statistic": r.statistic,
        "exact": r.exact,
        "p_greater": r.p_greater,
        "p_less": r.p_less,
        "p_two_sided": r.p_two_sided,
        "rank_biserial": r.effect,
        "median_difference": med,
    }


def _run_tests(
    design: str, x: np.ndarray, y: np.ndarray, block: int = 256
) -> dict[str, np.ndarray]:
    """Tests over track columns in blocks, so memory stays bounded for 5,313 tracks."""
    from concurrent.futures import ThreadPoolExecutor

    # Blocks of tracks are independent; numpy's sorts release the GIL, so threads use
    # every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        parts = list(
            pool.map(
                lambda j: _block_tests(design, x[:, j : j + block], y[:, j : j + block]),
                range(0, x.shape[1], block),
            )
        )
    res: dict[str, Any] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # Fewer than 2 usable values: reported as NA with a note, never a p-value.
    nx, ny = res["n_x"], res["n_y"]
    few = (nx - ny < 2) if design == "paired" else ((nx < 2) | (ny < 2))
    for k in ("p_greater", "p_less", "p_two_sided", "rank_biserial", "test_statistic"):
        res[k] = np.where(few, np.nan, res[k])
    notes = []
    for i in range(len(nx)):
        if few[i]:
            notes.append(
                f"fewer than 2 usable non-zero differences ({nx[i] - ny[i]})"
                if design == "paired"
                else f"fewer than 2 usable values (x {nx[i]}, y {ny[i]})"
            )
        else:
            notes.append("all values tied" if np.isnan(res["p_two_sided"][i]) else "")
    res["note"] = notes
    return res


def compare_groups(
    run_folder: str | Path,
    group_a: str,
    group_b: str,
    designs: Sequence[str] = ("unpaired",),
    pairing: Sequence[str | Path] = (),
    a_prefix: str | None = None,
    b_prefix: str | None = None,
    keys: Sequence[str] = DEFAULT_KEYS,
    duplicates: str = "error",
    tracks: Sequence[str] | None = None,
    family: str = "all",
) -> CompareResult:
    """Test group B against group A on every track of every (aggregation, statistic).

    Parameters
    ----------
    run_folder : path
        ``--out`` folder of ``perturbscore run`` (with ``manifest.json``).
    group_a, group_b : str
        Group names of the run (e.g. ``stab`` and ``top``).
    designs : sequence of {"unpaired", "paired", "matching"}
    pairing : paths
        Pairing tables, required by ``paired`` and ``matching``.
    a_prefix, b_prefix : str, optional
        Column prefixes of the groups in pp_max-shaped pairing tables (default: the
        group names upper-cased, e.g. STAB and TOP).
    keys : columns
        Score-table columns a pairing variant is looked up by (default GENE, rsID, ALT:
        the allele tells multi-allelic sites apart).
    duplicates : {"error", "first", "mean", "max"}
        What to do when a pairing variant matches several score rows.
    tracks : identifiers, optional
        Restrict to these tracks.
    family : {"all", "design", "table"}
        BH family: every test in the output, per design, or per (design, aggregation,
        statistic).

    Returns
    -------
    CompareResult
    """
    for d in designs:
        if d not in DESIGNS:
            raise PerturbscoreError(f"unknown design {d!r}; use {', '.join(DESIGNS)}.")
    if duplicates not in DUPLICATE_RULES:
        raise PerturbscoreError(f"--duplicates must be one of {DUPLICATE_RULES}.")
    if family not in FAMILIES:
        raise PerturbscoreError(f"--family must be one of {FAMILIES}.")
    run = load_run(run_folder)
    for g in (group_a, group_b):
        if g not in run.groups():
            raise PerturbscoreError(
                f"group {g!r} is not in the run at {run.folder}; it has {run.groups()}."
            )
    track_meta = run.tracks
    if tracks:
        unknown = [t for t in tracks if t not in set(track_meta["identifier"])]
        if unknown:
            raise PerturbscoreError(
                f"tracks {unknown[:5]} are not in the run's tables; see manifest.json."
            )
        track_meta = track_meta.set_index("identifier").loc[list(tracks)].reset_index()
    ids = list(track_meta["identifier"])
    needs_pairing = [d for d in designs if d != "unpaired"]
    units = None
    if needs_pairing:
        if not pairing:
            raise PerturbscoreError(f"designs {needs_pairing} need --pairing tables.")
        units = read_pairing(pairing, a_prefix or group_a.upper(), b_prefix or group_b.upper())
        absent = [k for k in keys if f"a_{k}" not in units or f"b_{k}" not in units]
        if absent:
            have = sorted(c[2:] for c in units.columns if c.startswith("a_"))
            raise PerturbscoreError(
                f"pairing tables give no value for key(s) {absent}; they give {have}. "
                "Choose --keys among those."
            )
    rows: list[pd.DataFrame] = []
    samples: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    summary: dict[str, Any] = {
        "group_a": group_a,
        "group_b": group_b,
        "designs": list(designs),
        "keys": list(keys),
        "duplicates": duplicates,
        "family": family,
        "run": str(run.folder),
    }
    combos = sorted(
        {(s.aggregation, s.statistic) for s in run.sets if s.group == group_a}
        & {(s.aggregation, s.statistic) for s in run.sets if s.group == group_b}
    )
    for agg, stat in combos:
        all_ids = list(run.tracks["identifier"])
        ta = _loaded(run.get(group_a, agg, stat), all_ids)
        tb = _loaded(run.get(group_b, agg, stat), all_ids)
        a_all = ta[ids].to_numpy(dtype=float)
        b_all = tb[ids].to_numpy(dtype=float)
        sets: dict[str, np.ndarray] = {group_a: a_all, group_b: b_all}
        tests: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []
        if "unpaired" in designs:
            tests.append(("unpaired", group_b, group_a, b_all, a_all))
        if units is not None:
            wanted_a = units[[f"a_{k}" for k in keys]].set_axis(list(keys), axis=1)
            wanted_b = units[[f"b_{k}" for k in keys]].set_axis(list(keys), axis=1)
            ia = _index_scores(
                ta, keys, ids, duplicates, f"group {group_a} ({agg}, {stat})", wanted_a
            )
            ib = _index_scores(
                tb, keys, ids, duplicates, f"group {group_b} ({agg}, {stat})", wanted_b
            )
            ua = _lookup(ia, units, "a", keys, ids)
            ub = _lookup(ib, units, "b", keys, ids)
            match = units["matching"].to_numpy()
            found = ~np.isnan(ua).all(axis=1) & ~np.isnan(ub).all(axis=1)
            # A matching unit's variant is the same on both sides: take A's score, else B's.
            matched = np.where(np.isnan(ua[match]), ub[match], ua[match])
            summary.setdefault(
                "units",
                {
                    "total": len(units),
                    "matching": int(match.sum()),
                    "non_matching": int((~match).sum()),
                    "matching_with_scores": int((~np.isnan(matched).all(axis=1)).sum()),
                    "non_matching_with_both_scores": int((found & ~match).sum()),
                },
            )
            sets.update(
                {
                    "matching": matched,
                    f"non-matching {group_a}": ua[~match],
                    f"non-matching {group_b}": ub[~match],
                }
            )
            if "paired" in designs:
                tests.append(("paired", group_b, group_a, ub[~match], ua[~match]))
            if "matching" in designs:
                tests.append(
                    ("matching", "matching", f"non-matching {group_a}", matched, ua[~match])
                )
                tests.append(
                    ("matching", "matching", f"non-matching {group_b}", matched, ub[~match])
                )
        samples[(agg, stat)] = sets
        for design, xname, yname, x, y in tests:
            res = _run_tests(design, x, y)
            df = track_meta[["identifier", "index", "assay", "target", "biosample"]].copy()
            df.insert(1, "aggregation", agg)
            df.insert(2, "statistic", stat)
            df.insert(3, "design", design)
            df.insert(4, "x", xname)
            df.insert(5, "y", yname)
            for k, v in res.items():
                df[k] = v
            rows.append(df)
    if not rows:
        raise PerturbscoreError("nothing to compare: the groups share no table.")
    out = pd.concat(rows, ignore_index=True)
    _adjust(out, family)
    return CompareResult(out, samples, track_meta, summary)


def _adjust(tests: pd.DataFrame, family: str) -> None:
    from .stats import p_adjust_bh

    groups = {"all": [], "design": ["design"], "table": ["design", "aggregation", "statistic"]}
    by = groups[family]
    for alt in ("greater", "less", "two_sided"):
        col = f"p_{alt}"
        adj = np.full(len(tests), np.nan)
        parts = [tests.index] if not by else [g.index for _, g in tests.groupby(by, sort=False)]
        for idx in parts:
            adj[idx] = p_adjust_bh(tests.loc[idx, col].to_numpy(dtype=float))
        tests[f"p_adj_{alt}"] = adj
