"""The package's shape: no module over 350 lines, no function over 60, every module in docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
import re
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


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` of ``path`` names (``from a import b``: ``a`` and ``a.b``), inside functions too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_every_command_imports_its_back_end_from_workflows():
    """``cli/commands/NAME.py`` parses and prints; its work is ``covid_tf.workflows.NAME``."""
    commands = [path for path in sorted((PACKAGE / "cli" / "commands").glob("*.py")) if path.stem != "__init__"]
    missing = [path.stem for path in commands if f"covid_tf.workflows.{path.stem}" not in imported_modules(path)]
    assert missing == [], "give these commands a back-end in covid_tf/workflows/<name>.py and import it"


def test_the_command_line_holds_only_the_parser_and_the_commands():
    assert sorted(path.name for path in (PACKAGE / "cli").glob("*.py")) == ["__init__.py"]


# What counts as reading a run file: a call of one of these functions (by its last name: json.load, pd.read_csv,
# np.load, Path.read_text, covid_tf's own readers) whose arguments name a run file, as a string ("split.csv") or as
# the run record's constant (SPLIT_FILE, record.SPLIT_FILE). A path first stored in a variable is not seen.
READERS = {"load", "loads", "read_csv", "read_text", "read_json", "read_json_object", "load_split", "load_predictions"}
WRITERS = {"atomic_write", "atomic_write_json", "atomic_write_text", "save_split", "to_csv", "write_text",
           "CSVLogger", "savez", "savez_compressed"}
# Writers excused: dicom2png's output is no run folder; it has a skipped.csv of its own.
WRITES_ELSEWHERE = {"covid_tf/ct/convert.py"}


def run_file_names() -> dict[str, str]:
    """The run record's file names (``config.json``, ...) and the names of its constants (``CONFIG_FILE``, ...)."""
    from covid_tf.runs import record

    return {name: value for name, value in vars(record).items() if name.endswith("_FILE") and isinstance(value, str)
            and value != record.MODEL_FILE}  # a model is loaded by runs.inference and models.loading


def run_file_calls(source: str, functions: set[str]) -> list[int]:
    """The lines of ``source`` with a call of ``functions`` whose arguments name a run file."""
    names = run_file_names()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        arguments = " ".join(ast.unparse(part) for part in [node.func, *node.args, *node.keywords])
        if function in functions and any(repr(value) in arguments or f'"{value}"' in arguments
                                         or re.search(rf"\b{name}\b", arguments) for name, value in names.items()):
            found.append(node.lineno)
    return sorted(set(found))


def calls_outside_the_record(functions: set[str]) -> list[str]:
    """``file:line`` of each such call in the modules (the record's own left out) and the notebook sources."""
    notebooks = sorted((ROOT / "notebooks" / "src").glob("*.py"))
    return [f"{path.relative_to(ROOT)}:{line}" for path in [*modules(), *notebooks]
            if path != PACKAGE / "runs" / "record.py"
            for line in run_file_calls(path.read_text(encoding="utf-8"), functions)]


def test_no_run_file_is_read_outside_the_run_record():
    assert run_file_calls('json.loads((run / "metrics.json").read_text())\npd.read_csv(run / record.SPLIT_FILE)\n'
                          'pd.read_csv(data / "metadata.csv")\n', READERS) == [1, 2]
    assert calls_outside_the_record(READERS) == []


def test_no_run_file_is_written_outside_the_run_record():
    assert run_file_calls('atomic_write_json(out / "audit.json", summary)\n', WRITERS) == [1]
    assert [call for call in calls_outside_the_record(WRITERS) if call.rsplit(":", 1)[0] not in WRITES_ELSEWHERE] == []
