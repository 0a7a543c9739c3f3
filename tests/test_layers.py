"""The package's layers: no import circle, and at most a few imports from a lower layer to a higher one.

The layers are named in docs/ARCHITECTURE.md ("## Layers", a table of layer number, name and module
prefixes); every import statement of the package counts, at module level or inside a function (an
import deferred for speed is still a dependency), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "covid_tf"
MAX_UPWARD_IMPORTS = 4


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, imported module of covid_tf) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if node.lineno in skipped if hasattr(node, "lineno") else False:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("covid_tf")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if not base.startswith("covid_tf"):
                continue
            for alias in node.names:  # ``from covid_tf.lungs.roi import geometry``: a module
                found.append((node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base))
    return [(line, target) for line, target in found if target in modules and target != name]


def layers() -> list[tuple[int, str, list[str]]]:
    """(number, name, module prefixes) from the table under "## Layers" in docs/ARCHITECTURE.md."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], re.findall(r"`(covid_tf[\w.]*)`", cells[2])))
    return rows


def layer_of(module: str, table: list[tuple[int, str, list[str]]]) -> int:
    """The layer of the longest prefix that names ``module`` or a package above it."""
    best, number = -1, None
    for layer, _, prefixes in table:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, number = len(prefix), layer
    assert number is not None, f"{module} is in no layer of docs/ARCHITECTURE.md"
    return number


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: {target for _, target in imports_of(name, path, modules)} for name, path in modules.items()}


def upward_imports() -> list[str]:
    table, modules = layers(), module_names()
    found = []
    for name, path in modules.items():
        for line, target in imports_of(name, path, modules):
            if layer_of(target, table) > layer_of(name, table):
                found.append(f"{name}:{line} -> {target}")
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    table = layers()
    assert len(table) >= 5
    for name in module_names():
        layer_of(name, table)


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_few_imports_climb_a_layer():
    upward = upward_imports()
    assert len(upward) <= MAX_UPWARD_IMPORTS, "\n".join(upward)


def test_training_and_evaluation_do_not_import_figures():
    graph = import_graph()
    offenders = [f"{name} -> {target}" for name, targets in graph.items() for target in targets
                 if name.startswith(("covid_tf.training", "covid_tf.evaluation"))
                 and target.startswith("covid_tf.figures")]
    assert offenders == []


def test_package_imports_are_read_as_modules():
    """``from covid_tf.lungs.roi import geometry`` is an import of covid_tf.lungs.roi.geometry, not of the package."""
    modules = module_names()
    found = dict(imports_of("covid_tf.lungs.roi.inputs", modules["covid_tf.lungs.roi.inputs"], modules))
    assert "covid_tf.lungs.roi.geometry" in found.values() and "covid_tf.lungs.roi" not in found.values()
    per_package = defaultdict(int)
    for target in found.values():
        per_package[target.split(".")[1]] += 1
    assert per_package["lungs"] >= 2


FOUNDATION = {"covid_tf", "covid_tf.config", "covid_tf.errors", "covid_tf.io_utils", "covid_tf.tf_quiet"}


def unit(module: str) -> str | None:
    """The box of ``module`` in the drawn graph: its subpackage, or the top-level module (foundation: none)."""
    if module in FOUNDATION or module == "covid_tf.__main__":
        return None
    return module.split(".")[1]


def package_edges() -> set[tuple[str, str]]:
    edges = set()
    for name, targets in import_graph().items():
        for target in targets:
            source, sink = unit(name), unit(target)
            if source and sink and source != sink:
                edges.add((source, sink))
    return edges


def drawn_edges() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    return set(re.findall(r"^\s*(\w+) --> (\w+)\s*$", block, flags=re.MULTILINE))


def test_the_drawn_import_graph_is_the_real_one():
    """docs/ARCHITECTURE.md draws every import between packages, and no other (`python tests/test_layers.py`
    prints the graph)."""
    real, drawn = package_edges(), drawn_edges()
    assert drawn == real, f"missing: {sorted(real - drawn)}; not in the code: {sorted(drawn - real)}"


if __name__ == "__main__":
    print("\n".join(f"    {source} --> {sink}" for source, sink in sorted(package_edges())))
