"""The package's shape: no module over 350 lines, no function over 60, every module in docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "covid_tf"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def long_functions(path: Path) -> list[str]:
    too_long = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name, lines = f"{dotted(path)}.{node.name}", node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                too_long.append(f"{name} ({lines} lines)")
    return too_long


def test_no_module_is_over_the_line_limit():
    too_long = [f"{dotted(path)} ({n} lines)" for path in modules()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert too_long == []


def test_no_function_is_over_the_line_limit():
    assert [entry for path in modules() for entry in long_functions(path)] == []


def test_every_module_is_in_the_architecture_document():
    document = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [dotted(path) for path in modules() if f"`{dotted(path)}`" not in document]
    assert missing == [], "add these modules (with their job) to docs/ARCHITECTURE.md"


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("covid_tf"):
                offenders += [f"{dotted(path)}: {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_") and alias.name != "__version__"]
    assert offenders == []


def class_assignments(source: str) -> list[int]:
    """Lines of ``source`` that assign an object's ``__class__`` (``sys.modules[__name__].__class__ = ...``)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
            and any(isinstance(target, ast.Attribute) and target.attr == "__class__"
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target]))]


def test_no_module_swaps_a_class_at_import():
    """No module makes itself callable (or anything else) by assigning ``__class__``: packages are plain modules."""
    assert class_assignments("import sys\nsys.modules[__name__].__class__ = type\n") == [2]
    assert [f"{dotted(path)}:{line}" for path in modules()
            for line in class_assignments(path.read_text(encoding="utf-8"))] == []
