"""Pairing tables for the ``paired`` and ``matching`` designs, and where their variants sit.

A pairing table lists units (e.g. a gene and a credible-set rank), each pairing one
variant of group A with one of group B.  :func:`read_pairing` reads the fine-mapping
``*_all_pp_max.csv`` shape or a long ``unit``/``a_<key>``/``b_<key>`` table into one row
per unit; :func:`build_lookup` finds each unit's variant among a score table's rows by
the ``--keys`` columns, and :meth:`Lookup.take` turns a block of track columns
(``# T N``) into per-unit scores (``# T U``, units in pairing order).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import PerturbscoreError

DEFAULT_KEYS = ("GENE", "rsID", "ALT")
#: Score-table columns filled from a pairing table's variant description (pos:ref:alt).
_ALLELE_KEYS = {"REF": 1, "ALT": 2}
PAIRING_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


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
        part = _pairing_units(df, p, a_prefix, b_prefix)
        _check_key_columns(part, p, "unit" in df.columns, keys, a_prefix, b_prefix)
        frames.append(part)
    units = pd.concat(frames, ignore_index=True)
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


def _check_key_columns(
    units: pd.DataFrame,
    path: Path,
    long_shape: bool,
    keys: Sequence[str],
    a_prefix: str,
    b_prefix: str,
) -> None:
    """Refuse a pairing table that lacks the columns some ``--keys`` key needs: a long
    table an ``a_<key>`` or ``b_<key>`` column, the fine-mapping shape the
    ``<PREFIX>_k_VAR_HG19`` columns (REF, ALT) or any way to give the key at all."""
    lacking = [f"{s}_{k}" for k in keys for s in ("a", "b") if f"{s}_{k}" not in units]
    if not lacking:
        return
    usable = [c[2:] for c in units.columns if c.startswith("a_") and f"b_{c[2:]}" in units]
    usable = [k for k in usable if k != "VAR"] if not long_shape else usable
    choose = f"or choose --keys among {', '.join(usable)}" if usable else "or give other tables"
    if long_shape:
        raise PerturbscoreError(
            f"{path}: the pairing table lacks the column(s) {', '.join(lacking)}; --keys "
            f"{','.join(keys)} needs an a_<key> and a b_<key> column for every key (add "
            f"them, {choose})."
        )
    prefix = {"a": a_prefix, "b": b_prefix}
    var = sorted({f"{prefix[c[0]]}_k_VAR_HG19" for c in lacking if c[2:] in _ALLELE_KEYS})
    other = sorted({c[2:] for c in lacking if c[2:] not in _ALLELE_KEYS})
    needs = []
    if var:
        needs.append(f"REF and ALT come from the column(s) {', '.join(var)}, which it lacks")
    if other:
        needs.append(
            "this shape gives only GENE, rsID, REF and ALT (a long table with unit, "
            "a_<key> and b_<key> columns gives any key)"
        )
    missing = sorted({c[2:] for c in lacking}, key=list(keys).index)
    raise PerturbscoreError(
        f"{path}: the fine-mapping pairing table gives no value for --keys "
        f"{', '.join(missing)}: {'; '.join(needs)}; "
        f"{choose.removeprefix('or ')}."
    )


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
class Lookup:
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

    def found(self) -> np.ndarray:
        """``bool # U``: units whose variant has a score row (one, or a group of rows)."""
        out = self.rows >= 0
        for units, _ in self.groups:
            out[units] = True
        return out

    def left_out(self, exclude: np.ndarray | None) -> np.ndarray:
        """``bool # U``: units whose variant has score rows, every one of them marked in
        ``exclude`` (``bool # N``, the table's rows left out of every test): :meth:`take`
        gives them NaN, so no test uses them."""
        out = np.zeros(len(self.rows), bool)
        if exclude is None:
            return out
        ok = self.rows >= 0
        out[ok] = exclude[self.rows[ok]]
        for units, rows in self.groups:
            out[units] = bool(exclude[rows].all())  # mean/max skip the excluded rows
        return out


def build_lookup(
    table_keys: pd.DataFrame,
    wanted: pd.DataFrame,
    rule: str,
    where: str,
) -> Lookup:
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
            f"{where}: {len(multi)} pairing "
            f"{'variant matches' if len(multi) == 1 else 'variants match'} several score "
            "rows, e.g. "
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
    return Lookup(rows, rule, groups)
