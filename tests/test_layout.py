"""The package's layout as the README describes it: modules by concern, none too long."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "perturbscore"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def test_no_module_or_function_too_long() -> None:
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.name}:{node.lineno} {node.name}: {lines}")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_readme_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Modules, by concern")
    paragraph = readme[start : readme.index("\n\n", readme.index("* plumbing", start))]
    named = set(re.findall(r"`([a-z_]+)`", paragraph))
    missing = [p.stem for p in _modules() if p.stem not in named]
    assert not missing, f"modules the README's Modules paragraph does not name: {missing}"


def test_overwrite_refusals_name_the_python_form() -> None:
    # Library callers meet these messages too: every "pass --overwrite" comes from
    # messages.overwrite_hint, which names the keyword argument when called from Python.
    offenders = []
    for path in _modules():
        if path.stem == "messages":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.search(r"(pass|use) --overwrite", node.value):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_overwrite_refusal_through_python(tmp_path: Path) -> None:
    from perturbscore.compare_outputs import check_out_folder
    from perturbscore.errors import PerturbscoreError

    (tmp_path / "compare.json").write_text("{}")
    try:
        check_out_folder(tmp_path, overwrite=False)
    except PerturbscoreError as exc:
        assert "pass overwrite=True" in str(exc) and "--overwrite" not in str(exc)
    else:
        raise AssertionError("an earlier comparison was not refused")
