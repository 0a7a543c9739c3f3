"""Shared fixtures: quiet TensorFlow, real data that skips when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests never touch the network: weights="auto" never tries a download (covid_tf.models.transfer).
os.environ["COVID_TF_OFFLINE"] = "1"

from covid_tf import config  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One ``ForkServer`` per test process (``tests/forkserver.py``): ``python -m covid_tf`` children that start
    in a fraction of a second, for every test that runs, kills and reruns commands."""
    from tests.forkserver import ForkServer

    built = ForkServer(tmp_path_factory.mktemp("forkserver"))
    yield built
    built.close()


@pytest.fixture(scope="session")
def radiography_dir() -> Path:
    """The real Radiography Database subset, or skip."""
    if not config.RADIOGRAPHY_SUBSET_DIR.is_dir():
        pytest.skip("real data ../shared/data/covid19-radiography-subset is absent")
    return config.RADIOGRAPHY_SUBSET_DIR


@pytest.fixture(scope="session")
def ct_dir() -> Path:
    """The real UCSD COVID-CT subset, or skip."""
    if not config.CT_UCSD_SUBSET_DIR.is_dir():
        pytest.skip("real data ../shared/data/covid-ct-ucsd-subset is absent")
    return config.CT_UCSD_SUBSET_DIR


# ------------------------------------------------------------------------------------ pytest-xdist (-n 2)
# `make test` runs `pytest -n 2` with `--dist loadgroup` (pyproject.toml addopts). Module-scoped fixtures live
# once per worker: a test that needs one of the costly ones below (a trained model, an audit, a forked
# server's finished run) is put in its module's xdist group, so that fixture is built on one worker only,
# once. Every other test is scheduled on its own (as with --dist load).
COSTLY_MODULE_FIXTURES = frozenset({
    "trained", "evaluation", "trained_run", "finished_run", "segmenter_run", "roi_run", "attention_run",
    "shortcut_audit",
    # The notebooks run in order on one worker: 03 and 04 reuse the runs 02 and 03 saved (as in `make demo`).
    "notebook_environment",
})
# Modules with the longest tests go first, so that no long test starts last while the other worker idles.
# (Whole modules move: a module's tests stay together, and its module fixtures are built once.)
LONG_MODULES_FIRST = ("test_hostile_round2", "test_notebooks", "test_lungs_audit", "test_portable_models",
                      "test_tuning", "test_hostile_inputs", "test_resume", "test_train", "test_lungs_cli")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: index for index, name in enumerate(LONG_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.nodeid.split("::")[0]).stem, len(rank)))  # stable
    for item in items:
        if COSTLY_MODULE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(Path(item.nodeid.split("::")[0]).stem))
