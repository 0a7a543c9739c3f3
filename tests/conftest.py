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
