"""Write a notebook from a plain-text source: cells separated by lines `# %% [markdown]` / `# %%`.

The `.py` sources in ``notebooks/src/`` are the reviewable form; the `.ipynb` files are generated
with ``python tools/make_notebook.py notebooks/src/*.py`` (each into ``notebooks/``).
A code cell whose first line is ``# parameters`` is tagged ``parameters`` for papermill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def build(source: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.metadata["language_info"] = {"name": "python"}
    chunks = source.split("# %%")
    for chunk in chunks[1:]:
        header, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if header.strip() == "[markdown]":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            notebook.cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if body.startswith("# parameters"):
                cell.metadata["tags"] = ["parameters"]
            notebook.cells.append(cell)
    return notebook


def main() -> None:
    for source in sys.argv[1:]:
        source_path = Path(source)
        target = source_path.parent.parent / (source_path.stem + ".ipynb")
        nbformat.write(build(source_path.read_text()), target)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
