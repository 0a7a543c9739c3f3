"""Notebook 05 at demo settings learns: on the demo's synthetic CT set the slice model separates the classes
(ROC-AUC >= 0.95) and the majority vote gets every test patient right. The notebook's own smoke test
(tests/test_notebooks.py) only checks that it runs."""

from __future__ import annotations

import pytest

from covid_tf.notebook_runner import PROFILES, SYNTHETIC_CT_EXTENT
from covid_tf.synthetic import ct as synthetic_ct
from covid_tf.workflows import ct

DEMO = PROFILES["demo"]
CT_BATCH_SIZE = 8  # notebook 05's ct_batch_size
PATIENTS_PER_CLASS = 8  # notebook_runner.ensure_synthetic_data, demo profile


@pytest.mark.slow  # one 8-epoch training of the baseline CNN on 96 slices of 64 px: about 30 s on 2 cores
def test_demo_settings_slice_model_learns_and_votes_every_test_patient_right(tmp_path):
    synthetic_ct.generate_ct_dataset(tmp_path / "dicom", patients_per_class=PATIENTS_PER_CLASS, seed=42,
                                     extent=SYNTHETIC_CT_EXTENT)
    data_path, _ = ct.prepare_ct_data(tmp_path / "dicom", tmp_path / "png")
    result = ct.train_slices(data_path, tmp_path / "run", model="baseline", loss="focal",
                             image_size=DEMO["image_size"], epochs=DEMO["epochs"], batch_size=CT_BATCH_SIZE,
                             split_fractions=(0.5, 0.25, 0.25), seed=42, n_bootstrap=10, verbose=0, figures=False)
    test = result.metrics["test"]
    assert result.class_names == ["CAP", "COVID", "Normal"]
    assert test["roc_auc"] >= 0.95
    majority = test["patients"]["majority"]
    assert majority["n"] == 3 * PATIENTS_PER_CLASS // 4 and majority["accuracy"] == 1.0
