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
