"""Every numbered notebook runs top to bottom with smoke parameters and writes its figures."""

from __future__ import annotations

import os

import pytest

from covid_tf import config
from covid_tf.notebook_runner import PROFILES, ensure_synthetic_data, list_notebooks, run_notebook

NOTEBOOKS = list_notebooks()


@pytest.fixture(scope="session")
def notebook_environment(tmp_path_factory):
    """Synthetic data plus report and model folders outside the repository."""
    root = tmp_path_factory.mktemp("notebooks")
    saved = {name: os.environ.get(name) for name in ("COVID_TF_REPORTS_DIR", "COVID_TF_MODELS_DIR")}
    os.environ["COVID_TF_REPORTS_DIR"] = str(root / "reports")
    os.environ["COVID_TF_MODELS_DIR"] = str(root / "models")
    data = ensure_synthetic_data("smoke", root / "data")
    yield root, {**PROFILES["smoke"], **data}
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_every_notebook_is_numbered_and_has_a_source():
    assert NOTEBOOKS, "no notebooks found"
    for notebook in NOTEBOOKS:
        assert (config.NOTEBOOKS_DIR / "src" / (notebook.stem + ".py")).is_file(), notebook.name


def test_every_profile_parameter_is_declared_by_a_notebook():
    """papermill passes a notebook only the parameters it declares: a profile key no notebook declares (a typo) would
    change nothing without a word."""
    import papermill

    declared = set().union(*(papermill.inspect_notebook(str(notebook)) for notebook in NOTEBOOKS))
    for name, profile in PROFILES.items():
        assert set(profile) <= declared, f"profile {name!r}: no notebook declares {sorted(set(profile) - declared)}"


@pytest.mark.xdist_group("test_notebooks")
def test_xdist_groups_take_effect(request):
    """Under `make test` (-n 2 --dist loadgroup) a grouped test's id carries its group: the module fixtures and the
    notebooks' shared runs are built once. pytest 9.2 with pytest-xdist 3.8 silently dropped it (constraints.txt)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None or not request.config.getoption("loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@test_notebooks"), request.node.nodeid


@pytest.mark.notebook
@pytest.mark.xdist_group("test_notebooks")  # in order, on one worker: 03 and 04 reuse the runs of 02 and 03
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_and_writes_figures(notebook, notebook_environment):
    root, parameters = notebook_environment
    output = run_notebook(notebook, root / "executed", parameters)
    assert output.is_file()
    prefix = notebook.name[:2]
    figures = list((root / "reports" / "figures").glob(f"{prefix}_*.png"))
    assert figures, f"{notebook.name} wrote no figure {prefix}_*.png"
    assert all(figure.stat().st_size > 1000 for figure in figures)
    # Every report figure is also a PDF (figures.save_report_figure).
    missing = [figure.name for figure in figures if not figure.with_suffix(".pdf").is_file()]
    assert missing == [], f"{notebook.name}: no PDF beside {missing}"
    assert all(figure.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-" for figure in figures)
