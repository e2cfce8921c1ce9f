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
track's test; ``n_x``/``n_y`` report the sample sizes used (for ``paired``, both are
the number of pairs, and ``n_zero`` how many of their differences are zero).

Score tables are read a block of track columns at a time (Parquet reads only those
columns), so memory follows ``memory`` rather than the number of tracks; CSV and R
tables are read whole, once per table.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import PerturbscoreError
from .names import check_name
from .tracks import split_description

log = logging.getLogger("perturbscore")

DESIGNS = ("unpaired", "paired", "matching")
DUPLICATE_RULES = ("error", "first", "mean", "max")
FAMILIES = ("all", "design", "table", "rank")
DEFAULT_KEYS = ("GENE", "rsID", "ALT")
DEFAULT_MEMORY = 1 << 30
#: Score-table columns filled from a pairing table's variant description (pos:ref:alt).
_ALLELE_KEYS = {"REF": 1, "ALT": 2}
PAIRING_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
#: float64 arrays of one track column's length held while testing it (the values of
#: both groups, the combined sample, its sort order, sorted values, ranks, masks and
#: temporaries, and the next block being read), measured on the study-size tables;
#: sizes the column blocks.
_COPIES_PER_VALUE = 16


@dataclass
class ScoreSet:
    """One group's score table for one (aggregation, statistic)."""

    group: str
    aggregation: str
    statistic: str
    path: Path
    rows: int | None = None
    #: ``bool # N``: rows left out of every test (``--out-of-field exclude``), read as NaN.
    exclude: np.ndarray | None = None
    _cache: pd.DataFrame | None = None
    _files: list[Any] | None = None

    @property
    def columnar(self) -> bool:
        """Whether columns can be read on their own (Parquet file or dataset folder)."""
        return self.path.suffix.lower() == ".parquet"

    def _parquet_files(self) -> list[Any]:
        """Open Parquet files (one, or the Dask engine's part files), footers read once."""
        if self._files is None:
            import pyarrow.parquet as pq

            if self.path.is_dir():
                # The Dask engine's partitioned dataset: part files in name order = row order.
                parts = sorted(p for p in self.path.glob("*.parquet") if p.is_file())
            else:
                parts = [self.path]
            self._files = [pq.ParquetFile(str(p)) for p in parts]
        return self._files

    def _read_parquet(self, columns: Sequence[str]) -> Any:
        import pyarrow as pa

        tables = [f.read(columns=list(columns)) for f in self._parquet_files()]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def read(self, columns: Sequence[str], score_columns: Sequence[str]) -> pd.DataFrame:
        """These columns of the table (Parquet: only these are read)."""
        if self.columnar:
            return self._read_parquet(columns).to_pandas()
        return self._full(score_columns)[list(columns)]

    def read_scores(self, columns: Sequence[str], score_columns: Sequence[str]) -> np.ndarray:
        """``(len(columns), rows)`` float64 scores, track-major (``# T N``), NaN if missing.

        Track-major because every test sorts one track's values: each row is then
        contiguous, and a Parquet column is copied in without a strided write.
        """
        if self.columnar:
            table = self._read_parquet(columns)
            out = np.empty((len(columns), table.num_rows))
            for j, c in enumerate(columns):
                out[j] = table.column(c).to_numpy(zero_copy_only=False)
        else:
            out = np.ascontiguousarray(self.read(columns, score_columns).to_numpy(dtype=float).T)
        if self.exclude is not None:
            out[:, self.exclude] = np.nan  # missing values drop out of a track's test
        return out

    def column_names(self, score_columns: Sequence[str]) -> list[str]:
        """The table's column names (Parquet: from the schema, nothing else read)."""
        if self.columnar:
            return list(self._parquet_files()[0].schema_arrow.names)
        if self.path.suffix.lower() == ".csv":
            return list(pd.read_csv(self.path, nrows=0).columns)
        return list(self._full(score_columns).columns)

    def _full(self, score_columns: Sequence[str]) -> pd.DataFrame:
        if self._cache is None:
            self._cache = read_score_table(self.path, score_columns)
        return self._cache

    def release(self) -> None:
        self._cache = None
        self._files = None


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
            na_values={c: ["", "NaN", "nan", "NA"] for c in scores},
        )
    if suffix in {".rds", ".rdata"}:
        import pyreadr

        objs = pyreadr.read_r(str(path))
        return next(iter(objs.values())).reset_index(drop=True)
    raise PerturbscoreError(f"{path}: unknown score table format {suffix!r}.")


def load_run(folder: str | Path) -> RunTables:
    """Find a run's tables and selected tracks through its ``manifest.json``.

    Track metadata (``assay``, ``target``, ``biosample``) comes from the manifest's
    selected-track records when it has them, else from splitting the description.
    A table may be a file or (Dask engine) a folder of Parquet part files.
    """
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise PerturbscoreError(
            f"{folder}: no manifest.json; give the --out folder of 'perturbscore run'."
        )
    try:
        manifest = json.loads(mpath.read_text())
        sel = pd.DataFrame(manifest["tracks"]["selected"])
        outputs = manifest["outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PerturbscoreError(
            f"{mpath}: not a manifest written by 'perturbscore run' ({exc}); rerun the run."
        ) from exc
    split = [split_description(str(d)) for d in sel["description"]]
    for i, col in enumerate(("assay", "target", "biosample")):
        if col not in sel.columns:
            sel[col] = [s[i] for s in split]
        else:
            sel[col] = sel[col].fillna("").astype(str)
    sel["identifier"] = sel["identifier"].astype(str)
    run = RunTables(folder, manifest, sel)
    for o in outputs:
        path = folder / o["path"]
        ok = path.is_file() or (
            path.is_dir() and path.suffix.lower() == ".parquet" and any(path.glob("*.parquet"))
        )
        if not ok:
            raise PerturbscoreError(
                f"{path}: listed in {mpath} but missing (or a folder without Parquet parts); "
                "rerun 'perturbscore run' into this folder."
            )
        run.sets.append(ScoreSet(o["group"], o["aggregation"], o["statistic"], path, o.get("rows")))
    return run


# --- Pairing tables --------------------------------------------------------------------


@dataclass
class Pairing:
    """Pairing units and what was left out of them.

    ``units`` has ``unit``, ``rank`` (when the table tells it), ``a_<key>`` and
    ``b_<key>`` for every key and ``matching``; ``dropped`` counts units left out per
    reason (a key field missing).
    """

    units: pd.DataFrame
    dropped: dict[str, int]
    files: list[str]


def pairing_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand folders to their ``.csv``/``.tsv``/``.txt`` tables; check every file."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in PAIRING_SUFFIXES)
            if not found:
                raise PerturbscoreError(
                    f"{p}: pairing folder has no .csv, .tsv or .txt table; give the folder of "
                    "*_all_pp_max.csv files or a table."
                )
            files += found
        elif not p.is_file():
            raise PerturbscoreError(f"{p}: pairing table not found.")
        elif p.suffix.lower() not in PAIRING_SUFFIXES:
            raise PerturbscoreError(
                f"{p}: a pairing table must be .csv, .tsv or .txt (not {p.suffix or 'no suffix'})."
            )
        else:
            files.append(p)
    return files


def read_pairing(
    paths: Sequence[str | Path],
    a_prefix: str,
    b_prefix: str,
    keys: Sequence[str] = DEFAULT_KEYS,
) -> Pairing:
    """Read pairing tables into one row per unit.

    Two shapes are understood:

    * the fine-mapping ``*_all_pp_max.csv`` shape: ``GENE`` (``chrN_<Ensembl id>``) and,
      for ranks k = 1, 2, ..., ``<PREFIX>_k`` (rsID) and ``<PREFIX>_k_VAR_HG19``
      (``pos:ref:alt``), for both prefixes (e.g. STAB and TOP);
    * a long table with ``unit`` and ``a_<key>`` / ``b_<key>`` columns (and optionally
      ``rank``).

    A folder in ``paths`` stands for every ``.csv``/``.tsv``/``.txt`` file in it.
    Only the ``keys`` fields decide: a unit is left out when one of its key fields is
    missing (``NA`` or empty) on either side, and it is matching when both sides have the
    same key fields.  Other fields (e.g. an unparseable ``VAR_HG19`` when ``ALT`` is not a
    key) do not matter.

    Returns
    -------
    Pairing
    """
    frames = []
    files = pairing_files(paths)
    for p in files:
        sep = PAIRING_SUFFIXES[p.suffix.lower()]
        try:
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PerturbscoreError(f"{p}: cannot be read as a table ({exc}).") from exc
        frames.append(_pairing_units(df, p, a_prefix, b_prefix))
    units = pd.concat(frames, ignore_index=True)
    absent = [k for k in keys if f"a_{k}" not in units or f"b_{k}" not in units]
    if absent:
        have = sorted(c[2:] for c in units.columns if c.startswith("a_"))
        raise PerturbscoreError(
            f"pairing tables give no value for key(s) {', '.join(absent)}; they give "
            f"{', '.join(have)}. Choose --keys among those."
        )
    if units["unit"].duplicated().any():
        dup = units.loc[units["unit"].duplicated(), "unit"].iloc[0]
        raise PerturbscoreError(
            f"pairing unit {dup} appears more than once across the pairing tables "
            f"({', '.join(map(str, files[:3]))}); give each table once."
        )
    dropped: dict[str, int] = {}
    keep = np.ones(len(units), bool)
    for side, name in (("a", "A"), ("b", "B")):
        for k in keys:
            col = units[f"{side}_{k}"]
            miss = col.isin(["NA", ""]).to_numpy()
            new = miss & keep
            if new.any():
                dropped[f"{k} missing (NA or empty) on {name}'s side"] = int(new.sum())
            keep &= ~miss
    units = units[keep].reset_index(drop=True)
    same = np.ones(len(units), bool)
    for k in keys:
        same &= (units[f"a_{k}"] == units[f"b_{k}"]).to_numpy()
    units["matching"] = same
    return Pairing(units, dropped, [str(f) for f in files])


def _pairing_units(df: pd.DataFrame, path: Path, a_prefix: str, b_prefix: str) -> pd.DataFrame:
    if "unit" in df.columns:
        if not any(c.startswith("a_") for c in df.columns):
            raise PerturbscoreError(f"{path}: long pairing table needs a_<key>/b_<key> columns.")
        out = df.copy()
        if "rank" in out.columns:
            try:
                out["rank"] = out["rank"].astype(int)
            except ValueError as exc:
                raise PerturbscoreError(
                    f"{path}: column 'rank' must hold whole numbers ({exc})."
                ) from exc
        return out
    ranks = sorted(
        int(m.group(1)) for c in df.columns if (m := re.fullmatch(rf"{a_prefix}_(\d+)", c))
    )
    if "GENE" not in df.columns or not ranks:
        raise PerturbscoreError(
            f"{path}: pairing table has neither 'unit' nor GENE and {a_prefix}_k columns "
            f"(columns: {', '.join(list(df.columns)[:8])}, ...); check --a-prefix/--b-prefix."
        )
    parts = []
    gene = df["GENE"].str.replace(r"^chr[^_]+_", "", regex=True)
    for k in ranks:
        need = [f"{a_prefix}_{k}", f"{b_prefix}_{k}"]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise PerturbscoreError(
                f"{path}: pairing column(s) {', '.join(missing)} missing; "
                "check --a-prefix/--b-prefix."
            )
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
    return pd.concat(parts, ignore_index=True)


@dataclass
class _Lookup:
    """Where each unit's variant sits in one score table.

    ``rows[u]`` is the table row of unit ``u`` (-1: not found).  With ``--duplicates
    mean|max`` a variant may stand for several rows: then ``groups`` lists
    ``(unit positions, table rows)`` of those, reduced per block.
    """

    rows: np.ndarray
    rule: str
    groups: list[tuple[np.ndarray, np.ndarray]]

    def take(self, values: np.ndarray) -> np.ndarray:
        """``(T, units)`` scores from a table block ``values`` (``# T N``)."""
        out = np.full((values.shape[0], len(self.rows)), np.nan)
        ok = self.rows >= 0
        out[:, ok] = values[:, self.rows[ok]]
        for units, rows in self.groups:
            with np.errstate(all="ignore"):
                v = values[:, rows]
                red = np.nanmean(v, axis=1) if self.rule == "mean" else np.nanmax(v, axis=1)
            out[:, units] = red[:, None]
        return out


def _build_lookup(
    table_keys: pd.DataFrame,
    wanted: pd.DataFrame,
    rule: str,
    where: str,
) -> _Lookup:
    """Positions of the ``wanted`` key tuples among a score table's key columns."""
    keys = list(wanted.columns)
    t = table_keys[keys].astype(str).reset_index(drop=True)
    t["_row"] = np.arange(len(t))
    w = wanted.reset_index(drop=True).copy()
    w["_unit"] = np.arange(len(w))
    hits = w.merge(t, on=keys, how="inner")
    rows = np.full(len(w), -1, dtype=np.int64)
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    counts = hits.groupby("_unit", sort=False)["_row"].size()
    multi = counts.index[counts.to_numpy() > 1]
    if len(multi) and rule == "error":
        first = hits[hits["_unit"] == multi[0]]
        example = ", ".join(f"{k}={first[k].iloc[0]}" for k in keys)
        raise PerturbscoreError(
            f"{where}: {len(multi)} pairing variants match several score rows, e.g. "
            f"{example} at rows {', '.join(str(r + 1) for r in first['_row'])}; add a key "
            "column (--keys) or choose --duplicates first|mean|max."
        )
    single = hits.drop_duplicates("_unit", keep="first")  # first table row per unit
    rows[single["_unit"].to_numpy()] = single["_row"].to_numpy()
    if len(multi) and rule in ("mean", "max"):
        sub = hits[hits["_unit"].isin(multi)]
        # Units sharing the same key tuple share their rows: one group per tuple.
        for _, g in sub.groupby(keys, sort=False):
            us = np.unique(g["_unit"].to_numpy())
            rs = np.unique(g["_row"].to_numpy())
            rows[us] = -1
            groups.append((us, rs))
    return _Lookup(rows, rule, groups)


# --- Tests ------------------------------------------------------------------------------


@dataclass
class _Take:
    """Select a test's two samples from a block: ``block[x][x_rows]``, ``block[y][y_rows]``."""

    x: str
    y: str
    x_rows: np.ndarray | None = None
    y_rows: np.ndarray | None = None

    def __call__(self, block: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x, y = block[self.x], block[self.y]
        if self.x_rows is not None:
            x = x[:, self.x_rows]
        if self.y_rows is not None:
            y = y[:, self.y_rows]
        return x, y


@dataclass
class _Spec:
    """One test per track: which design, which samples."""

    design: str
    rank: int | None
    x: str
    y: str
    kind: str  # "ranksum" or "signed"
    take: _Take


@dataclass
class CompareResult:
    """Tidy test table plus what is needed to draw the figures."""

    tests: pd.DataFrame
    tracks: pd.DataFrame
    summary: dict[str, Any]
    #: (aggregation, statistic, track identifiers) -> {(design, rank): {label: (n, T)}}
    sample_reader: Callable[[str, str, Sequence[str]], dict[tuple[str, Any], dict[str, Any]]]
    warnings: list[str] = field(default_factory=list)

    def samples(
        self, aggregation: str, statistic: str, tracks: Sequence[str]
    ) -> dict[tuple[str, Any], dict[str, np.ndarray]]:
        """Samples each design tested, for the figures: ``{(design, rank): {label: (n, T)}}``.

        Only these tracks' columns are read again from the run's tables.
        """
        return self.sample_reader(aggregation, statistic, tracks)


def _median(v: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (``# T N`` -> ``T``); plain median when nothing is NaN."""
    if not np.isnan(v).any():
        return np.median(v, axis=1)
    return np.nanmedian(v, axis=1)


def _block_tests(kind: str, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Tests of one block of tracks; ``x``, ``y`` are ``(T, n)`` (``# T N``)."""
    from .stats import rank_sum_rows, signed_rank_rows

    if kind == "signed":
        both = ~np.isnan(x) & ~np.isnan(y)
        d = np.where(both, x - y, np.nan)  # a pair is usable only with both scores
        r = signed_rank_rows(d)
        med = np.full(d.shape[0], np.nan)
        ok = both.any(axis=1)
        with np.errstate(all="ignore"):
            med[ok] = _median(d[ok])
    else:
        r = rank_sum_rows(x, y)
        med = np.full(x.shape[0], np.nan)
        ok = ~np.isnan(x).all(axis=1) & ~np.isnan(y).all(axis=1)
        med[ok] = _median(x[ok]) - _median(y[ok])
    return {
        "n_x": r.n_x,
        "n_y": r.n_y,
        "n_zero": r.n_zero,
        "test_statistic": r.statistic,
        "exact": r.exact,
        "p_greater": r.p_greater,
        "p_less": r.p_less,
        "p_two_sided": r.p_two_sided,
        "rank_biserial": r.effect,
        "median_difference": med,
    }


def _finish(kind: str, res: dict[str, np.ndarray]) -> dict[str, Any]:
    """NA (with a note) where a test has fewer than 2 usable values; notes for ties."""
    nx, ny, nzero = res["n_x"], res["n_y"], res["n_zero"]
    few = ((nx - nzero) < 2) if kind == "signed" else ((nx < 2) | (ny < 2))
    out: dict[str, Any] = dict(res)
    for k in ("p_greater", "p_less", "p_two_sided", "rank_biserial", "test_statistic"):
        out[k] = np.where(few, np.nan, res[k])
    out["exact"] = res["exact"] & ~few
    notes = []
    for i in range(len(nx)):
        if few[i]:
            notes.append(
                f"fewer than 2 usable non-zero differences ({nx[i] - nzero[i]})"
                if kind == "signed"
                else f"fewer than 2 usable values (x {nx[i]}, y {ny[i]})"
            )
        else:
            notes.append("all values tied" if np.isnan(out["p_two_sided"][i]) else "")
    out["note"] = notes
    return out


def block_columns(rows: int, memory: int, n_tracks: int) -> int:
    """Track columns per block so that one block's working set fits ``memory`` bytes."""
    per_column = max(rows, 1) * 8 * _COPIES_PER_VALUE
    return int(max(1, min(n_tracks, memory // per_column)))


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
    per_rank: bool = False,
    memory: int = DEFAULT_MEMORY,
    progress: bool = False,
    workers: int | None = None,
    out_of_field: str = "keep",
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
        the allele tells multi-allelic sites apart).  Only these decide whether a unit
        is usable and whether it is matching.
    duplicates : {"error", "first", "mean", "max"}
        What to do when a pairing variant matches several score rows.
    tracks : identifiers, optional
        Restrict to these tracks.
    family : {"all", "design", "table", "rank"}
        BH family: every test in the output, per design, per (design, aggregation,
        statistic), or per (design, aggregation, statistic, rank).
    per_rank : bool
        Test the units of each pairing rank (potential set 1, 2, 3) separately, as the
        study does, instead of pooling them; the ``rank`` column says which.
    memory : int
        Bytes the blocks of track columns may take (Parquet tables).
    progress : bool
        Progress bar on stderr.
    workers : int, optional
        Threads testing blocks (default: CPU count).
    out_of_field : {"keep", "exclude"}
        ``exclude``: leave variants outside the model's input (their scores are 0, "not
        measured") out of every test, read from the run's class column; the summary
        counts them.

    Returns
    -------
    CompareResult
    """
    from .extras import require

    require("scipy", "perturbscore compare")
    plan = plan_comparison(
        run_folder,
        group_a,
        group_b,
        designs,
        pairing,
        a_prefix,
        b_prefix,
        keys,
        duplicates,
        tracks,
        family,
        per_rank,
        out_of_field,
    )
    return plan.execute(memory=memory, progress=progress, workers=workers)


@dataclass
class ComparisonPlan:
    """Everything checked and looked up; :meth:`execute` runs the tests."""

    run: RunTables
    group_a: str
    group_b: str
    designs: list[str]
    track_meta: pd.DataFrame
    combos: list[tuple[str, str]]
    pairing: Pairing | None
    lookups: dict[tuple[str, str, str], _Lookup]
    family: str
    per_rank: bool
    summary: dict[str, Any]
    warnings: list[str]

    @property
    def ids(self) -> list[str]:
        return list(self.track_meta["identifier"])

    def specs(self) -> list[_Spec]:
        """The tests of every track, in output order."""
        a, b = self.group_a, self.group_b
        out = []
        if "unpaired" in self.designs:
            out.append(_Spec("unpaired", None, b, a, "ranksum", _Take("B", "A")))
        if self.pairing is None:
            return out
        units = self.pairing.units
        ranks: list[int | None] = [None]
        if self.per_rank:
            ranks = [int(r) for r in sorted(units["rank"].unique())]
        match = units["matching"].to_numpy()
        for r in ranks:
            sel = np.ones(len(units), bool) if r is None else (units["rank"] == r).to_numpy()
            m, nm = np.flatnonzero(sel & match), np.flatnonzero(sel & ~match)
            if "paired" in self.designs:
                out.append(
                    _Spec(
                        "paired",
                        r,
                        b,
                        a,
                        "signed",
                        _Take("uB", "uA", nm, nm),
                    )
                )
            if "matching" in self.designs:
                for side, name in (("A", a), ("B", b)):
                    out.append(
                        _Spec(
                            "matching",
                            r,
                            "matching",
                            f"non-matching {name}",
                            "ranksum",
                            _Take("matched", "u" + side, m, nm),
                        )
                    )
        return out

    def _block(self, agg: str, stat: str, cols: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores of one block of tracks: whole groups and per unit (``# T N``)."""
        all_ids = list(self.run.tracks["identifier"])
        sa = self.run.get(self.group_a, agg, stat)
        sb = self.run.get(self.group_b, agg, stat)
        out = {"A": sa.read_scores(cols, all_ids), "B": sb.read_scores(cols, all_ids)}
        if self.pairing is not None:
            ua = self.lookups[(self.group_a, agg, stat)].take(out["A"])
            ub = self.lookups[(self.group_b, agg, stat)].take(out["B"])
            out["uA"], out["uB"] = ua, ub
            # A matching unit's variant is the same on both sides: A's score, else B's.
            out["matched"] = np.where(np.isnan(ua), ub, ua)
        if "unpaired" not in self.designs:
            out.pop("A")
            out.pop("B")
        return out

    def read_samples(
        self, agg: str, stat: str, cols: Sequence[str]
    ) -> dict[tuple[str, Any], dict[str, np.ndarray]]:
        """The samples each (design, rank) tested, for the figures (these tracks only)."""
        s = self._block(agg, stat, cols)
        out: dict[tuple[str, Any], dict[str, np.ndarray]] = {}
        for spec in self.specs():
            x, y = (v.T for v in spec.take(s))  # figures take (n, T)
            d = out.setdefault((spec.design, spec.rank), {})
            if spec.kind == "signed":
                both = ~np.isnan(x) & ~np.isnan(y)  # the pairs tested
                d[spec.x] = np.where(both, x, np.nan)
                d[spec.y] = np.where(both, y, np.nan)
            else:
                d.setdefault(spec.x, x)
                d.setdefault(spec.y, y)
        return out

    def execute(
        self, memory: int = DEFAULT_MEMORY, progress: bool = False, workers: int | None = None
    ) -> CompareResult:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        specs = self.specs()
        ids = self.ids
        rows = 0
        for agg, stat in self.combos:
            for g in (self.group_a, self.group_b):
                ss = self.run.get(g, agg, stat)
                rows += ss.rows if ss.rows is not None else 50_000
        rows = max(rows // max(len(self.combos), 1), 1)
        width = block_columns(rows, memory, len(ids))
        nthreads = workers or os.cpu_count() or 1
        blocks = [ids[j : j + width] for j in range(0, len(ids), width)]
        log.info(
            "%d tests per track x %d tracks x %d tables, %d tracks per block",
            len(specs),
            len(ids),
            len(self.combos),
            width,
        )
        parts: dict[tuple[str, str, int], list[dict[str, np.ndarray]]] = {}
        bar = tqdm(
            total=len(blocks) * len(self.combos),
            desc="compare",
            unit="block",
            disable=not progress,
            file=None,
        )
        jobs = [(agg, stat, cols) for agg, stat in self.combos for cols in blocks]
        # One reader thread reads the next block (pyarrow releases the GIL) while the
        # pool tests the current one: reading and sorting overlap.
        with (
            ThreadPoolExecutor(max_workers=1) as reader,
            ThreadPoolExecutor(max_workers=nthreads) as pool,
        ):
            ahead = reader.submit(self._block, *jobs[0])
            for n, (agg, stat, cols) in enumerate(jobs):
                block = ahead.result()
                if n + 1 < len(jobs):
                    ahead = reader.submit(self._block, *jobs[n + 1])
                # Sub-blocks of tracks are independent; numpy's sorts release the GIL,
                # so threads use every core.
                step = max(1, -(-len(cols) // nthreads))
                for i, spec in enumerate(specs):
                    x, y = spec.take(block)
                    subs = list(
                        pool.map(
                            lambda j, x=x, y=y, spec=spec, step=step: _block_tests(
                                spec.kind, x[j : j + step], y[j : j + step]
                            ),
                            range(0, len(cols), step),
                        )
                    )
                    parts.setdefault((agg, stat, i), []).extend(subs)
                del block
                bar.update(1)
                if n + 1 == len(jobs) or jobs[n + 1][:2] != (agg, stat):
                    # Last block of this table: whole-table caches (CSV, R) are let go.
                    for g in (self.group_a, self.group_b):
                        self.run.get(g, agg, stat).release()
        bar.close()
        frames = []
        meta = self.track_meta[["identifier", "index", "assay", "target", "biosample"]]
        for agg, stat in self.combos:
            for i, spec in enumerate(specs):
                got = parts[(agg, stat, i)]
                res = {k: np.concatenate([p[k] for p in got]) for k in got[0]}
                res = _finish(spec.kind, res)
                df = meta.copy()
                df.insert(1, "aggregation", agg)
                df.insert(2, "statistic", stat)
                df.insert(3, "design", spec.design)
                df.insert(4, "rank", pd.Series([spec.rank] * len(df), dtype="Int64"))
                df.insert(5, "x", spec.x)
                df.insert(6, "y", spec.y)
                for k, v in res.items():
                    df[k] = v
                df["n_x"] = df["n_x"].astype("int64")
                df["n_y"] = df["n_y"].astype("int64")
                df["n_zero"] = pd.array(
                    res["n_zero"] if spec.kind == "signed" else [None] * len(df), dtype="Int64"
                )
                df["exact"] = df["exact"].astype(bool)
                frames.append(df)
        out = pd.concat(frames, ignore_index=True)
        _adjust(out, self.family)
        warnings = list(self.warnings)
        for key, part in out.groupby(["design", "rank"], dropna=False, sort=False):
            design, rank = key
            if part["p_two_sided"].isna().all():
                is_rank = isinstance(rank, (int, np.integer))
                where = f"{design}, rank {rank}" if is_rank else str(design)
                why = str(part["note"].iloc[0]) or "no usable values"
                msg = (
                    f"design {where}: no track could be tested ({why}); its figures are not drawn."
                )
                warnings.append(msg)
                log.warning("%s", msg)
        return CompareResult(out, self.track_meta, self.summary, self.read_samples, warnings)


def plan_comparison(
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
    per_rank: bool = False,
    out_of_field: str = "keep",
) -> ComparisonPlan:
    """Check every option and input and look the pairing variants up; no test is run.

    Raises :class:`PerturbscoreError` for anything the user can fix, before any work.
    """
    designs = list(dict.fromkeys(designs))
    if not designs:
        raise PerturbscoreError("no design given; use --design unpaired|paired|matching.")
    for d in designs:
        if d not in DESIGNS:
            raise PerturbscoreError(f"unknown design {d}; use {', '.join(DESIGNS)}.")
    if duplicates not in DUPLICATE_RULES:
        raise PerturbscoreError(f"--duplicates must be one of {', '.join(DUPLICATE_RULES)}.")
    if family not in FAMILIES:
        raise PerturbscoreError(f"--family must be one of {', '.join(FAMILIES)}.")
    check_name(group_a, "group name", "--a")
    check_name(group_b, "group name", "--b")
    if group_a == group_b:
        raise PerturbscoreError(
            f"--a and --b are both {group_a}; compare two different groups of the run."
        )
    keys = [k for k in keys if k]
    if not keys:
        raise PerturbscoreError("--keys is empty; name score-table columns, e.g. GENE,rsID,ALT.")
    if out_of_field not in OUT_OF_FIELD_RULES:
        raise PerturbscoreError(
            f"--out-of-field must be one of {', '.join(OUT_OF_FIELD_RULES)}, not {out_of_field}."
        )
    run = load_run(run_folder)
    for g, opt in ((group_a, "--a"), (group_b, "--b")):
        if g not in run.groups():
            raise PerturbscoreError(
                f"{opt}: group {g} is not in the run at {run.folder}; it has "
                f"{', '.join(run.groups())}."
            )
    left_out = _exclude_out_of_field(run, (group_a, group_b)) if out_of_field == "exclude" else {}
    track_meta = run.tracks
    if tracks:
        known = set(track_meta["identifier"])
        unknown = [t for t in tracks if t not in known]
        if unknown:
            raise PerturbscoreError(
                f"--track: {', '.join(unknown[:5])} not among the run's tracks "
                f"(see {run.folder / 'manifest.json'})."
            )
        track_meta = track_meta.set_index("identifier").loc[list(tracks)].reset_index()
    combos = sorted(
        {(s.aggregation, s.statistic) for s in run.sets if s.group == group_a}
        & {(s.aggregation, s.statistic) for s in run.sets if s.group == group_b}
    )
    if not combos:
        raise PerturbscoreError(
            f"nothing to compare: groups {group_a} and {group_b} share no "
            "(aggregation, statistic) table."
        )
    summary: dict[str, Any] = {
        "group_a": group_a,
        "group_b": group_b,
        "designs": list(designs),
        "keys": list(keys),
        "duplicates": duplicates,
        "family": family,
        "per_rank": per_rank,
        "run": str(run.folder),
        "n_tracks": len(track_meta),
        "tables": [f"{a}, {s}" for a, s in combos],
        "out_of_field": out_of_field,
    }
    warnings: list[str] = []
    if left_out:
        summary["left_out_out_of_field"] = left_out
        note = (
            "left out of every test, as outside the model's input: "
            + ", ".join(f"{g} {n:,} variants" for g, n in left_out.items())
        )
        warnings.append(note)
        log.warning("%s", note)
    needs_pairing = [d for d in designs if d != "unpaired"]
    pair: Pairing | None = None
    lookups: dict[tuple[str, str, str], _Lookup] = {}
    if not needs_pairing:
        if per_rank:
            raise PerturbscoreError("--per-rank needs the paired or matching design.")
    else:
        if not pairing:
            raise PerturbscoreError(
                f"design(s) {', '.join(needs_pairing)} need --pairing tables "
                "(e.g. the fine_mapping/ folder)."
            )
        pair = read_pairing(pairing, a_prefix or group_a.upper(), b_prefix or group_b.upper(), keys)
        if per_rank and "rank" not in pair.units.columns:
            raise PerturbscoreError(
                "--per-rank needs ranks: the pairing tables have no 'rank' column "
                "(the fine-mapping shape has them)."
            )
        units = pair.units
        all_ids = list(run.tracks["identifier"])
        unit_counts: dict[str, Any] = {
            "files": len(pair.files),
            "read": int(len(units) + sum(pair.dropped.values())),
            "dropped": dict(pair.dropped),
            "usable": int(len(units)),
            "matching": int(units["matching"].sum()),
            "non_matching": int((~units["matching"]).sum()),
        }
        for agg, stat in combos:
            found = {}
            for g, side in ((group_a, "a"), (group_b, "b")):
                s = run.get(g, agg, stat)
                names = s.column_names(all_ids)
                missing = [k for k in keys if k not in names]
                if missing:
                    have = [c for c in names if c not in set(all_ids)]
                    raise PerturbscoreError(
                        f"{s.path}: pairing key(s) {', '.join(missing)} are not columns of the "
                        f"score table (it has {', '.join(have)}); choose --keys."
                    )
                wanted = units[[f"{side}_{k}" for k in keys]].set_axis(list(keys), axis=1)
                lk = _build_lookup(
                    s.read(keys, all_ids), wanted, duplicates, f"{s.path} (group {g})"
                )
                lookups[(g, agg, stat)] = lk
                found[side] = (lk.rows >= 0) | _in_groups(lk, len(units))
            if "variants" not in unit_counts:
                m = units["matching"].to_numpy()
                unit_counts["variants"] = {
                    "matching units without a score row": int(
                        (m & ~found["a"] & ~found["b"]).sum()
                    ),
                    f"non-matching {group_a} variants without a score row": int(
                        (~m & ~found["a"]).sum()
                    ),
                    f"non-matching {group_b} variants without a score row": int(
                        (~m & ~found["b"]).sum()
                    ),
                    "non-matching units with both variants scored": int(
                        (~m & found["a"] & found["b"]).sum()
                    ),
                }
                if "rank" in units.columns:
                    unit_counts["per_rank"] = {
                        str(r): {
                            "matching": int((m & (units["rank"] == r)).sum()),
                            "non_matching": int((~m & (units["rank"] == r)).sum()),
                        }
                        for r in sorted(units["rank"].unique())
                    }
        summary["units"] = unit_counts
        nf = {k: v for k, v in unit_counts["variants"].items() if "without" in k and v}
        if nf:
            msg = "pairing variants not found in the score tables: " + "; ".join(
                f"{k.replace(' without a score row', '')}: {v}" for k, v in nf.items()
            )
            log.info("%s", msg)
    return ComparisonPlan(
        run,
        group_a,
        group_b,
        designs,
        track_meta,
        combos,
        pair,
        lookups,
        family,
        per_rank,
        summary,
        warnings,
    )


#: What compare does with variants outside the model's input (needs the run's class column).
OUT_OF_FIELD_RULES = ("keep", "exclude")


def _exclude_out_of_field(run: RunTables, groups: Sequence[str]) -> dict[str, int]:
    """Mark the rows of ``outside_input`` variants in every table of ``groups``.

    The class comes from the class column the run wrote (``class_column`` in the run
    file's ``[output]``, recorded in the manifest); returns rows left out per group.
    """
    geo = run.manifest.get("geometry") or {}
    column = geo.get("class_column")
    if not column:
        raise PerturbscoreError(
            f"--out-of-field exclude needs each variant's class in the tables, but the run at "
            f"{run.folder} wrote none; rerun 'perturbscore run' with class_column = \"field\" "
            "in [output] (or with --out-of-field na, whose missing scores drop out of every "
            "test anyway)."
        )
    all_ids = list(run.tracks["identifier"])
    counts: dict[str, int] = {}
    for s in run.sets:
        if s.group not in groups:
            continue
        cls = s.read([column], all_ids)[column].astype(str).to_numpy()
        s.exclude = cls == "outside_input"
        counts[s.group] = int(s.exclude.sum())
    return counts


def _in_groups(lk: _Lookup, n: int) -> np.ndarray:
    out = np.zeros(n, bool)
    for units, _ in lk.groups:
        out[units] = True
    return out


def _adjust(tests: pd.DataFrame, family: str) -> None:
    from .stats import p_adjust_bh

    groups = {
        "all": [],
        "design": ["design"],
        "table": ["design", "aggregation", "statistic"],
        "rank": ["design", "aggregation", "statistic", "rank"],
    }
    by = groups[family]
    for alt in ("greater", "less", "two_sided"):
        col = f"p_{alt}"
        adj = np.full(len(tests), np.nan)
        parts = (
            [tests.index]
            if not by
            else [g.index for _, g in tests.groupby(by, sort=False, dropna=False)]
        )
        for idx in parts:
            adj[idx] = p_adjust_bh(tests.loc[idx, col].to_numpy(dtype=float))
        tests[f"p_adj_{alt}"] = adj
