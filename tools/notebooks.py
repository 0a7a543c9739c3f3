"""Generate ``notebooks/NN_*.ipynb`` from their jupytext sources ``notebooks/src/NN_*.py``.

The sources are jupytext "percent" scripts (``# %%`` starts a code cell, ``# %% [markdown]`` a
markdown cell, ``# %% tags=["parameters"]`` papermill's parameters cell) and are the reviewable form.
The notebooks are written without outputs, with the ``covid_tf`` kernel, and with cell ids derived
from each cell's content, so regenerating an unchanged source gives the same file byte for byte and
editing one cell changes only that cell's id.

    python tools/notebooks.py            # regenerate every notebook (make notebooks)
    python tools/notebooks.py --check    # exit 1 when a notebook differs from its source
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
KERNELSPEC = {"display_name": "covid_tf", "language": "python", "name": "covid_tf"}


def source_paths(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebook sources, in order."""
    return sorted((notebooks_dir / "src").glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    """Where the notebook of ``notebooks/src/NAME.py`` goes: ``notebooks/NAME.ipynb``."""
    return source.parent.parent / f"{source.stem}.ipynb"


def cell_id(cell: nbformat.NotebookNode, seen: set[str]) -> str:
    """An id from the cell's type and text (first 8 hex digits of SHA-1), made unique with a suffix."""
    digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:8]
    candidate, copy = digest, 1
    while candidate in seen:
        copy += 1
        candidate = f"{digest}-{copy}"
    seen.add(candidate)
    return candidate


def build(text: str) -> nbformat.NotebookNode:
    """The notebook of a percent-format source: no outputs, kernel ``covid_tf``, content-derived ids."""
    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata = nbformat.from_dict(
        {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    )
    seen: set[str] = set()
    for cell in notebook.cells:
        cell.id = cell_id(cell, seen)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(notebook)
    return notebook


def render(text: str) -> str:
    """The ``.ipynb`` text of a source, exactly as :func:`main` writes it."""
    return nbformat.writes(build(text)) + "\n"


def out_of_sync(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks that are missing or differ from what their sources generate."""
    stale = []
    for source in source_paths(notebooks_dir):
        target = notebook_path(source)
        if not target.is_file() or target.read_text(encoding="utf-8") != render(source.read_text(encoding="utf-8")):
            stale.append(target)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of sync")
    args = parser.parse_args(argv)
    stale = out_of_sync()
    if args.check:
        for target in stale:
            print(f"{target.relative_to(ROOT)} is out of sync with its source; run `make notebooks`")
        return 1 if stale else 0
    for target in stale:
        source = target.parent / "src" / f"{target.stem}.py"
        target.write_text(render(source.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
