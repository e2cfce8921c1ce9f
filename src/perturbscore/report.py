"""A comparison folder as one self-contained HTML page.

:func:`build_report` turns a folder written by :func:`.compare_outputs.write_comparison`
(``compare.json``, ``tests.parquet``, ``figures/``) into ``report.html``: parameters,
warnings, counts, the top tracks of every design and every figure, embedded as a data
URI so that the page opens anywhere without network access.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .compare_tests import by_significance, rank_of
from .errors import PerturbscoreError
from .messages import overwrite_hint
from .outputs import refuse_unfinished_commit, write_text_atomic
from .runtables import not_a_comparison

#: Marks the pages this module writes, so that ``compare --overwrite`` knows a
#: ``report.html`` it may replace from one a user put there.
GENERATOR = "perturbscore report"
REPORT_MARK = f'<meta name="generator" content="{GENERATOR}">'.encode()

TOP_TRACKS = 15
P_FLOOR = 1e-300


def _img(folder: Path, rel: str) -> str:
    data = base64.b64encode((folder / rel).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">'


def format_p(v: object) -> str:
    """p-values for people: ``NA``, ``< 1e-300`` (underflow included), else 3 digits."""
    if v is None or pd.isna(v):  # type: ignore[call-overload]
        return "NA"
    f = float(v)  # type: ignore[arg-type]
    return f"< {P_FLOOR:g}" if f < P_FLOOR else f"{f:.3g}"


def _kv_table(items: Sequence[tuple[str, object]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_text(v))}</td></tr>" for k, v in items
    )
    return f'<table class="kv">{rows}</table>'


def _text(v: object) -> str:
    if isinstance(v, list | tuple):
        return ", ".join(_text(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_text(x)}" for k, x in v.items())
    return "" if v is None else str(v)


def _frame_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def is_own_report(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (:data:`REPORT_MARK` near its start)."""
    try:
        with open(path, "rb") as fh:
            return REPORT_MARK in fh.read(512)
    except OSError:
        return False


def check_report_out(folder: Path, out: Path | None, overwrite: bool = False) -> Path:
    """The report's path: ``out`` or ``folder/report.html``.  A folder or a missing parent
    folder is refused; an existing file is replaced only with ``overwrite`` and only when
    it is a page this module wrote (:func:`is_own_report`), never anything else there
    (``compare.json``, a run's table, a page or link of the user's own)."""
    target = Path(out) if out else folder / "report.html"
    option = f"--out {target}" if out is not None else str(target)
    if target.is_dir():
        raise PerturbscoreError(f"--out {target} is a folder; give a file name like report.html.")
    if target.is_symlink() or (target.exists() and not is_own_report(target)):
        raise PerturbscoreError(
            f"{option} already exists and is not a report perturbscore wrote, so it is "
            "never replaced; give --out another file name, e.g. report.html."
        )
    if target.exists() and not overwrite:
        raise PerturbscoreError(
            f"{option} already exists; {overwrite_hint()} to replace it, or give --out "
            "another file name."
        )
    if not target.parent.is_dir():
        raise PerturbscoreError(
            f"--out {target}: folder {target.parent} does not exist; create it first."
        )
    return target


#: A whole PNG starts with its signature and ends with the IEND chunk (length 0, CRC).
_PNG_ENDS = (b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00IEND\xaeB`\x82")


def _figure_damage(path: Path) -> str | None:
    """Why ``path`` is not a whole figure, or None: a PNG (only its first and last bytes
    are read) needs the signature and the IEND chunk, an SVG to be XML with an ``svg``
    root element."""
    import xml.etree.ElementTree as ET  # only here: report alone needs it

    try:
        if path.suffix == ".svg":
            tag = ET.parse(path).getroot().tag.rsplit("}", 1)[-1]
            return None if tag == "svg" else f"its root element is {tag}, not svg"
        with open(path, "rb") as fh:
            head = fh.read(len(_PNG_ENDS[0]))
            fh.seek(max(0, fh.seek(0, 2) - len(_PNG_ENDS[1])))
            tail = fh.read()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except ET.ParseError as exc:
        return f"not XML: the parser stops at line {exc.position[0]}, column {exc.position[1] + 1}"
    if head != _PNG_ENDS[0]:
        return "it does not start with the PNG signature"
    return None if tail == _PNG_ENDS[1] else "it does not end with the PNG IEND chunk: cut short"


#: Keys of ``compare.json`` the page needs.
_SUMMARY_KEYS = ("group_a", "group_b", "run", "n_tests", "n_significant_two_sided_0.05", "figures")


def read_summary(folder: Path) -> dict[str, Any]:
    """``compare.json`` of a comparison folder, checked: readable, with the keys the page
    needs and every figure it lists present."""
    cpath = folder / "compare.json"
    redo = f"run 'perturbscore compare ... --out NEW_FOLDER' again (or restore {cpath})"
    try:
        summary = json.loads(cpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PerturbscoreError(
            f"{cpath} is damaged ({exc}), not what 'perturbscore compare' wrote; {redo}."
        ) from None
    missing = (
        [k for k in _SUMMARY_KEYS if k not in summary]
        if isinstance(summary, dict)
        else list(_SUMMARY_KEYS)
    )
    if missing or not isinstance(summary["figures"], list):
        raise PerturbscoreError(
            f"{cpath} lacks {', '.join(missing) or 'a list of figures'}, so it is not what "
            f"'perturbscore compare' wrote; {redo}."
        )
    redraw = f"rerun 'perturbscore compare' with --overwrite --out {folder} to draw it again"
    for entry in summary["figures"]:
        f = entry if isinstance(entry, dict) else {}
        # The page embeds the PNG; an SVG listed beside it is checked too (none: older).
        for rel in [f.get("png"), *([f["svg"]] if f.get("svg") else [])]:
            path = folder / str(rel)
            if not rel or not path.is_file():
                raise PerturbscoreError(f"{path}: a figure listed in {cpath} is missing; {redraw}.")
            damage = _figure_damage(path)
            if damage:
                raise PerturbscoreError(
                    f"{path}: a figure listed in {cpath} is damaged ({damage}); {redraw}."
                )
    return summary


def build_report(
    compare_dir: str | Path, out: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Assemble ``report.html`` from a folder written by :func:`.compare_outputs.write_comparison`.

    An existing ``out`` (by default ``COMPARE_DIR/report.html``) is replaced only with
    ``overwrite``, and only when it is a page perturbscore wrote.  Everything the page
    needs is checked before it is written: ``compare.json``, ``tests.parquet`` and every
    figure listed (each PNG whole, from its signature to its IEND chunk; each SVG XML
    with an ``svg`` root).
    """
    folder = Path(compare_dir)
    if folder.is_file() and folder.name == "compare.json":
        folder = folder.parent  # the comparison's own file: its folder is meant
    elif folder.is_file():
        raise PerturbscoreError(
            f"{folder} is a file, not a comparison folder; give the --out folder of "
            "'perturbscore compare' (the folder that holds compare.json)."
        )
    elif not folder.is_dir():
        raise PerturbscoreError(
            f"{folder}: comparison folder not found; give the --out folder of "
            "'perturbscore compare'."
        )
    cpath = folder / "compare.json"
    refuse_unfinished_commit(folder)
    if not cpath.is_file():
        raise PerturbscoreError(not_a_comparison(folder))
    target = check_report_out(folder, Path(out) if out else None, overwrite)
    summary = read_summary(folder)
    tests_path = folder / "tests.parquet"
    if not tests_path.is_file():
        raise PerturbscoreError(f"{tests_path} is missing; rerun 'perturbscore compare'.")
    try:
        tests = pd.read_parquet(tests_path)
    except (OSError, ValueError) as exc:
        raise PerturbscoreError(
            f"{tests_path} is damaged ({exc}); rerun 'perturbscore compare' with --overwrite "
            f"--out {folder}."
        ) from None
    manifest_path = Path(summary["run"]) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        manifest = {}  # the run's facts are context only; the page says they were not found
    if not isinstance(manifest, dict):
        manifest = {}
    page = _page(folder, summary, tests, manifest)
    write_text_atomic(target, page)
    return target


def _top_tables(tests: pd.DataFrame) -> str:
    cols = (
        "identifier assay target biosample aggregation statistic x y n_x n_y p_greater p_less "
        "p_two_sided p_adj_two_sided rank_biserial median_difference note"
    ).split()
    parts = []
    for key, part in tests.groupby(["design", "rank"], sort=False, dropna=False):
        design, rank = str(key[0]), rank_of(key[1])
        where = design if rank is None else f"{design}, rank {rank}"
        ok = part[part["p_adj_two_sided"].notna()]
        if ok.empty:
            parts.append(f"<h3>{html.escape(str(where))}</h3><p>No track could be tested.</p>")
            continue
        top = by_significance(ok).head(TOP_TRACKS)
        shown = top[[c for c in cols if c in top.columns]].copy()
        if design == "paired":
            shown.insert(list(shown.columns).index("n_y") + 1, "n_zero", top["n_zero"])
        for c in ("p_greater", "p_less", "p_two_sided", "p_adj_two_sided"):
            shown[c] = shown[c].map(format_p)
        for c in ("rank_biserial", "median_difference"):
            shown[c] = shown[c].map(lambda v: "NA" if pd.isna(v) else f"{v:.3g}")
        parts.append(
            f"<h3>{html.escape(str(where))}</h3><p>The {len(top)} most significant of "
            f"{len(ok)} tests (BH-adjusted two-sided p, ties by raw p).</p>{_frame_html(shown)}"
        )
    return "".join(parts)


def _counts_html(manifest: dict[str, Any]) -> str:
    """The run's tables (group, aggregation, statistic, rows, path), from its manifest."""
    outputs = pd.DataFrame(manifest.get("outputs", []))
    if outputs.empty:
        return "<p>The run's manifest.json was not found.</p>"
    cols = [
        c for c in ("group", "aggregation", "statistic", "rows", "path") if c in outputs.columns
    ]
    return _frame_html(outputs[cols])


def _units_html(units: dict[str, Any] | None) -> str:
    """The pairing units read, dropped and found (empty without a pairing)."""
    if not units:
        return ""
    items: list[tuple[str, object]] = [
        ("pairing files", units.get("files")),
        ("units read", units.get("read")),
        ("usable units (key fields present)", units.get("usable")),
        ("matching", units.get("matching")),
        ("non-matching", units.get("non_matching")),
    ]
    items += [(f"dropped: {k}", v) for k, v in units.get("dropped", {}).items()]
    items += list(units.get("variants", {}).items())
    out = "<h3>Pairing units</h3>" + _kv_table(items)
    if units.get("per_rank"):
        pr = pd.DataFrame(units["per_rank"]).T.reset_index(names="rank")
        out += "<h4>Per rank</h4>" + _frame_html(pr)
    return out


def _warnings_html(warn: Sequence[str]) -> str:
    if not warn:
        return ""
    return "<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warn) + "</ul>"


def _figures_html(folder: Path, figures: Sequence[dict[str, Any]]) -> str:
    return "".join(
        f"<figure>{_img(folder, f['png'])}<figcaption>{html.escape(f['title'])}</figcaption>"
        "</figure>"
        for f in figures
    )


def _manifest_html(manifest: dict[str, Any]) -> str:
    """The run's version, date, run file, parameters and inputs."""
    mparams = manifest.get("parameters") or {}
    m_items = [(k, v) for k, v in mparams.items() if not str(k).startswith("zscore_")]
    inputs = pd.DataFrame(
        [
            {
                "group": i.get("group"),
                "batch": i.get("batch"),
                "variants": (i.get("variants") or {}).get("path", i.get("path")),
                "rows": (i.get("variants") or {}).get("rows", i.get("rows")),
            }
            for i in manifest.get("inputs", [])
        ]
    )
    return _kv_table(
        [
            ("perturbscore", manifest.get("perturbscore_version")),
            ("created", manifest.get("created")),
            ("run file", manifest.get("run_file") or manifest.get("source")),
            *m_items,
        ]
    ) + (("<h3>Inputs</h3>" + _frame_html(inputs)) if not inputs.empty else "")


def _out_of_field_text(summary: dict[str, Any]) -> str:
    """The ``--out-of-field`` setting and the rows it concerns, per group."""
    rule = summary.get("out_of_field")
    if rule is None:
        return "not recorded (a comparison by an older perturbscore)"
    if rule == "exclude":
        counts = summary.get("left_out_out_of_field") or {}
        what = "left out of every test"
    else:
        counts = summary.get("out_of_field_rows") or {}
        what = "their 0 scores tested as 'no effect'"
    if not counts:
        return f"{rule} (the run recorded no such rows in these groups)"
    rows = ", ".join(f"{g} {n:,}" for g, n in counts.items())
    return f"{rule}: {what} ({rows} rows)"


_STYLE = """body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }
td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }
table.kv th { font-weight: normal; color: #555; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img { max-width: 560px; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 1px 4px; }
div.wide { overflow-x: auto; max-width: 100%; }"""


def _page(
    folder: Path, summary: dict[str, Any], tests: pd.DataFrame, manifest: dict[str, Any]
) -> str:
    a, b = summary["group_a"], summary["group_b"]
    params = [
        ("group A (--a)", a),
        ("group B (--b)", b),
        ("designs", summary.get("designs")),
        ("pairing keys", summary.get("keys")),
        ("duplicates", summary.get("duplicates")),
        ("BH family", summary.get("family")),
        ("per pairing rank", "yes" if summary.get("per_rank") else "no (ranks pooled)"),
        ("tracks", summary.get("n_tracks")),
        ("tables", "; ".join(str(t).replace(", ", "/") for t in summary.get("tables") or [])),
        ("out-of-field variants (--out-of-field)", _out_of_field_text(summary)),
    ]
    n_sig = summary["n_significant_two_sided_0.05"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">
<title>perturbscore report: {html.escape(b)} vs {html.escape(a)}</title>
<style>
{_STYLE}
</style></head><body>
<h1>Perturbation scores: {html.escape(b)} vs {html.escape(a)}</h1>
<p>Run <code>{html.escape(str(summary["run"]))}</code>; {summary["n_tests"]} tests,
{n_sig} with BH-adjusted two-sided p &lt; 0.05. Tests are R's <code>wilcox.test</code>
defaults; p-values below {P_FLOOR:g} are printed as "&lt; {P_FLOOR:g}".</p>
<h2>Parameters</h2>
{_kv_table(params)}
{_warnings_html(summary.get("warnings") or [])}
<h2>Groups and counts</h2>
{_counts_html(manifest)}
{_units_html(summary.get("units"))}
<h2>Top tracks</h2>
<p>Each test is x against y: <code>p_greater</code> means x tends to be larger. For
<em>unpaired</em> and <em>paired</em>, x is B ({html.escape(b)}) and y is A
({html.escape(a)}); the paired differences are x - y = B - A.</p>
{_top_tables(tests)}
<h2>Figures</h2>
{_figures_html(folder, summary["figures"])}
<h2>Run manifest</h2>
{_manifest_html(manifest)}
</body></html>
"""
