"""The lung studies of notebook 06 (segmenter outlines, ROI inputs, Grad-CAM lung energy of full-image and
ROI runs) on tiny synthetic X-rays with lung masks."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.data.discover import discover
from covid_tf.runs.config import TrainConfig
from covid_tf.studies import lungs as studies
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows.train import train_run


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies") / "data"
    generate_dataset(root, classes=("COVID", "Normal"), per_class=20, size=32, seed=3)
    return root


def test_segmenter_panels_and_roi_inputs(small_data):
    frame = discover(small_data).frame.head(3)
    panels, titles, table = studies.segmenter_panels(frame["path"].tolist(), frame["mask_path"].tolist())
    assert len(panels) == 3 and panels[0].shape == (32, 32, 3) and panels[0].dtype == np.uint8
    assert table["dice_with_dataset_mask"].between(0, 1).all() and "Dice" in titles[0]
    rows = studies.roi_input_rows(frame["path"].tolist(), ["none", "lungs-masked", "lungs-removed"], 24)
    assert len(rows) == 3 and all(image.shape == (24, 24, 1) for image in rows[0])
    full, masked, removed = rows[0]
    assert (masked == 0).mean() > 0.2 and (removed == 0).mean() > 0.2  # something blacked out in both
    assert not np.array_equal(masked, removed)



@pytest.mark.slow
def test_lung_energy_is_measured_on_the_full_image(small_data, tmp_path):
    runs = {}
    for name, roi in (("full", "none"), ("box", "lungs")):
        cfg = TrainConfig(data=str(small_data), image_size=32, epochs=1, batch_size=8, roi=roi, n_bootstrap=50)
        train_run(cfg, tmp_path / roi, verbose=0)
        runs[name] = tmp_path / roi
    paths = studies.split_images(tmp_path / "none", "COVID", "test", count=3)
    assert len(paths) == 3
    energies = {name: studies.lung_energy(run, paths) for name, run in runs.items()}
    full, box = energies["full"], energies["box"]
    assert full.images.shape == (3, 32, 32, 1) and full.heatmaps.shape == (3, 32, 32)
    assert (full.table["lung_mask_source"] == "dataset").all() and full.table["prob_COVID"].between(0, 1).all()
    assert full.table["lung_area_fraction"].between(0.05, 0.8).all()
    assert np.allclose(full.table["lung_area_fraction"], box.table["lung_area_fraction"])  # the same lungs
    # A crop's heatmap is mapped back into its lung box: the image's border rows get no heat.
    assert np.allclose(box.heatmaps[:, 0, :], 0.0) and np.allclose(box.heatmaps[:, -1, :], 0.0)
    table = studies.compare_runs(runs, energies)
    assert table["roi"].tolist() == ["none", "lungs"] and table["test ROC-AUC"].notna().all()
    ratio = table["energy in lungs"] / table["lung area"]
    assert np.allclose(ratio, table["lung energy ratio"])


def test_the_shortcut_study_goes_through_the_runs_roi(small_data):
    """The shortcut study, lung_heatmaps (evaluate, notebook 06) and explain share one loop: a run's model with
    a lung-box ROI is explained on its crop and measured on the full image, the same numbers by every path."""
    from pathlib import Path

    from covid_tf.explain.lung_energy import lung_heatmaps
    from covid_tf.lungs.roi.modes import RoiSpec
    from covid_tf.models.registry import build_model
    from covid_tf.runs.inference import LoadedModel
    from covid_tf.studies.shortcuts import shortcut_study

    frame = discover(small_data).frame.head(4)
    model = build_model("small", image_size=32)
    loaded = LoadedModel(model, ["COVID", "Normal"], 32, 1, Path("model.keras"), RoiSpec(mode="lungs"))
    study = shortcut_study(loaded, frame, loaded.class_names, class_name="COVID", batch_size=3).images
    measured = lung_heatmaps(loaded, frame["path"].tolist(), 0, mask_paths=frame["mask_path"].tolist(),
                             use_segmenter=False, batch_size=3).table
    np.testing.assert_allclose(study["energy_in_lungs"], measured["energy_in_lungs"], atol=1e-6)
    np.testing.assert_allclose(study["lung_area_fraction"], measured["lung_area_fraction"], atol=1e-6)
    full_image = shortcut_study(model, frame, loaded.class_names, class_name="COVID").images  # no run: no ROI
    assert not np.allclose(full_image["energy_in_lungs"], study["energy_in_lungs"], atol=1e-3)
