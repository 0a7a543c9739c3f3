"""The committed notebooks are what their jupytext sources generate: in sync, without outputs, with
the ``covid_tf`` kernel and with cell ids that stay the same between regenerations."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("notebook_tool", ROOT / "tools" / "notebooks.py")
notebook_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_tool)

SOURCES = notebook_tool.source_paths()
SAMPLE = """# %% [markdown]
# # Title

# %% tags=["parameters"]
size = 8

# %%
print(size)

# %%
print(size)
"""


def cell_ids(text: str) -> list[str]:
    return [cell["id"] for cell in json.loads(text)["cells"]]


def test_every_source_has_a_notebook_in_sync():
    assert SOURCES, "no notebook sources found"
    stale = [path.name for path in notebook_tool.out_of_sync()]
    assert not stale, f"{stale} differ from notebooks/src/*.py: run `make notebooks` and commit the result"
    notebooks = sorted(path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks == [source.stem for source in SOURCES], "a notebook without a source (or the reverse)"


@pytest.mark.parametrize("source", SOURCES, ids=[source.stem for source in SOURCES])
def test_committed_notebook_has_no_outputs_and_the_project_kernel(source: Path):
    notebook = json.loads(notebook_tool.notebook_path(source).read_text(encoding="utf-8"))
    assert notebook["metadata"]["kernelspec"]["name"] == "covid_tf"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters' (papermill)"


def test_cell_ids_are_stable_between_regenerations():
    first = notebook_tool.render(SAMPLE)
    assert notebook_tool.render(SAMPLE) == first  # byte for byte
    ids = cell_ids(first)
    assert len(set(ids)) == len(ids)  # two identical cells still get distinct ids
    edited = cell_ids(notebook_tool.render(SAMPLE.replace("size = 8", "size = 16")))
    assert [a == b for a, b in zip(ids, edited)] == [True, False, True, True]  # only the edited cell
    inserted = cell_ids(notebook_tool.render(SAMPLE.replace("# %%\nprint", "# %%\nsize += 1\n\n# %%\nprint", 1)))
    assert inserted[:2] == ids[:2] and inserted[3:] == ids[2:]  # a new cell does not renumber the others


def test_the_check_mode_reports_a_stale_notebook(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "01_sample.py").write_text(SAMPLE, encoding="utf-8")
    assert notebook_tool.out_of_sync(tmp_path) == [tmp_path / "01_sample.ipynb"]  # missing
    (tmp_path / "01_sample.ipynb").write_text(notebook_tool.render(SAMPLE), encoding="utf-8")
    assert notebook_tool.out_of_sync(tmp_path) == []
    (tmp_path / "src" / "01_sample.py").write_text(SAMPLE + "\n# %%\nprint('new')\n", encoding="utf-8")
    assert notebook_tool.out_of_sync(tmp_path) == [tmp_path / "01_sample.ipynb"]
