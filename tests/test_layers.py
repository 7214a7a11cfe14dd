"""The layers of DESIGN.md §1, kept by parsing every import of every module.

A package imports only from the packages below it; packages of one layer do not import each
other; only ``stages/``, ``launch/`` and the entry scripts import ``arg_parser``. Function-local
imports count as well (an import dodging a cycle is still an import).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Bottom to top; a package may import from the strictly lower layers (and itself).
LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("models",),
    ("trainer",),
    ("memorization", "unlearn"),
    ("forget_sets",),
    ("evaluation",),
    ("results",),
    ("arg_parser",),
    ("stages", "launch"),
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
ENTRY_SCRIPTS = ("main_train", "main_memorization", "main_forget", "main_random", "main_rum", "main_rum_proxy",
                 "generate_mask", "analysis", "analysis_mia", "analysis_audit", "imagenet_mem_subset")
MAX_MODULE_LINES = 500
MAX_ENTRY_LINES = 30


def _modules() -> list[Path]:
    return sorted(p for name in LEVEL if (REPO / name).is_dir() for p in (REPO / name).rglob("*.py")) + \
        [REPO / "arg_parser.py"]


def _imported_tops(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            tops.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def _package_of(path: Path) -> str:
    rel = path.relative_to(REPO)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_only_from_lower_layers(path: Path) -> None:
    own = _package_of(path)
    bad = []
    for top in _imported_tops(path):
        if top == own or top not in LEVEL and top not in ENTRY_SCRIPTS:
            continue
        if top in ENTRY_SCRIPTS or LEVEL[top] >= LEVEL[own]:
            bad.append(top)
    assert not bad, f"{path.relative_to(REPO)} (layer {own}) imports from {sorted(bad)}: same or higher layer"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_module_size(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(REPO)}: {n} lines (limit {MAX_MODULE_LINES})"


@pytest.mark.parametrize("name", ENTRY_SCRIPTS)
def test_entry_scripts_are_thin(name: str) -> None:
    path = REPO / f"{name}.py"
    n = len(path.read_text().splitlines())
    assert n <= MAX_ENTRY_LINES, f"{name}.py: {n} lines (limit {MAX_ENTRY_LINES}): the work belongs in stages/"
    tops = _imported_tops(path) - {"__future__"}
    assert not tops & set(ENTRY_SCRIPTS), f"{name}.py imports another entry script"
    assert tops <= {"stages", "utils", "arg_parser", "sys"}, f"{name}.py imports {sorted(tops)}"


def test_functions_are_short() -> None:
    """At most 80 lines of code per function (its docstring not counted: formulas belong there)."""
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) and \
                    isinstance(getattr(node.body[0], "value", None), ast.Constant) and \
                    isinstance(node.body[0].value.value, str) else None
                if doc is not None:
                    n -= doc.end_lineno - doc.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines: " + "; ".join(long)


def test_namespace_stops_at_stages() -> None:
    """Library code never sees an argparse Namespace (only stages/, launch/ and the parser do)."""
    bad = []
    for path in _modules():
        if _package_of(path) in ("stages", "launch", "arg_parser"):
            continue
        text = path.read_text()
        if "argparse" in text and "import argparse" in text:
            bad.append(str(path.relative_to(REPO)))
    assert not bad, f"library modules importing argparse: {bad}"
