"""Grid search over batch size x learning rate x dropout, and grouped k-fold cross-validation, on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from covid_tf import figures
from covid_tf.data import discover as data
from covid_tf.data.splits import make_split
from covid_tf.runs.config import TrainConfig
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.training import tuning

CLASSES = ["COVID", "Normal"]


@pytest.fixture(scope="module")
def synthetic_index(tmp_path_factory) -> data.DatasetIndex:
    root = tmp_path_factory.mktemp("tuning") / "synthetic"
    generate_dataset(root, classes=tuple(CLASSES), per_class=12, size=32, seed=0)
    return data.discover(root, classes=CLASSES)


def _config(root: Path) -> TrainConfig:
    # The small CNN (no BatchNorm, so no precise-BN pass): the search and the folds are under test, not the model.
    return TrainConfig(data=str(root), model="small", image_size=32, epochs=1, batch_size=8, n_bootstrap=0, seed=0,
                       precise_bn_images=0)


def test_grid_search_tries_every_combination_and_ranks_best_first(synthetic_index, tmp_path):
    cfg = _config(synthetic_index.root)
    split = make_split(synthetic_index.frame, fractions=(0.6, 0.4, 0.0), seed=0)
    grid = {"batch_size": [4, 8], "learning_rate": [1e-3], "dropout": [0.2, 0.5]}

    result = tuning.grid_search(cfg, split, CLASSES, grid, epochs=1, directory=tmp_path / "tuner")

    table = result.table
    assert list(table.columns[:6]) == ["batch_size", "learning_rate", "dropout", "val_accuracy", "val_loss",
                                       "epochs_run"]
    tried = set(zip(table["batch_size"], table["learning_rate"], table["dropout"]))
    assert tried == {(4, 1e-3, 0.2), (4, 1e-3, 0.5), (8, 1e-3, 0.2), (8, 1e-3, 0.5)}
    assert len(table) == 4
    # Best first: validation accuracy descending, ties broken by the lower validation loss.
    keys = list(zip(-table["val_accuracy"], table["val_loss"]))
    assert keys == sorted(keys)
    assert result.best["val_accuracy"] == table["val_accuracy"].max()
    assert (result.best["batch_size"], result.best["dropout"]) == (table["batch_size"][0], table["dropout"][0])
    assert (table["epochs_run"] == 1).all()
    # The table is saved, and keras-tuner's files stay under the given directory.
    saved = pd.read_csv(result.table_path)
    assert len(saved) == 4 and saved["val_accuracy"].tolist() == pytest.approx(table["val_accuracy"].tolist())
    assert (tmp_path / "tuner" / tuning.PROJECT_NAME / "oracle.json").is_file()
    assert isinstance(figures.grid_search_figure(table), Figure)


def test_grid_search_refuses_unknown_parameters(synthetic_index, tmp_path):
    split = make_split(synthetic_index.frame, fractions=(0.6, 0.4, 0.0), seed=0)
    with pytest.raises(ValueError, match="momentum"):
        tuning.grid_search(_config(synthetic_index.root), split, CLASSES, {"momentum": [0.9]}, epochs=1,
                           directory=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        tuning.grid_search(_config(synthetic_index.root), split, CLASSES, {"dropout": []}, epochs=1,
                           directory=tmp_path)


def test_best_epoch_metrics_breaks_ties_by_validation_loss():
    history = {"val_accuracy": [0.5, 0.8, 0.8, 0.6], "val_loss": [0.9, 0.5, 0.4, 0.6], "loss": [1, 2, 3, 4]}
    metrics = tuning.best_epoch_metrics(history)
    assert metrics["best_epoch"] == 3 and metrics["epochs_run"] == 4
    assert metrics["val_loss"] == 0.4 and metrics["loss"] == 3


def test_grid_search_figure_frames_the_best_configuration():
    table = pd.DataFrame({
        "batch_size": [16, 16, 32, 32], "learning_rate": [1e-3, 3e-4, 1e-3, 3e-4], "dropout": [0.5] * 4,
        "val_accuracy": [0.9, 0.7, 0.6, 0.5], "val_loss": [0.3, 0.5, 0.6, 0.7],
    })
    fig = figures.grid_search_figure(table)
    heatmaps = [ax for ax in fig.axes if ax.get_title().startswith("batch size")]
    assert [ax.get_title() for ax in heatmaps] == ["batch size 16", "batch size 32"]
    assert len(heatmaps[0].patches) == 1 and not heatmaps[1].patches
    with pytest.raises(ValueError, match="dropout"):
        figures.grid_search_figure(table.drop(columns="dropout"))


def test_cross_validation_tests_every_image_once_and_keeps_groups_together(synthetic_index):
    frame = synthetic_index.frame.copy()
    # Two images per patient: a patient must never be split across test folds.
    frame["patient_id"] = [f"p{i // 2}" for i in range(len(frame))]
    cfg = _config(synthetic_index.root)

    result = tuning.cross_validate(cfg, frame, CLASSES, k=3, seed=0)

    predictions = result.predictions
    assert sorted(predictions["path"]) == sorted(frame["path"])  # every image tested exactly once
    assert (predictions.groupby("group")["fold"].nunique() == 1).all()
    by_patient = predictions.merge(frame[["path", "patient_id"]], on="path").groupby("patient_id")["fold"]
    assert (by_patient.nunique() == 1).all()
    assert sorted(predictions["fold"].unique()) == [0, 1, 2]
    folds = result.folds
    assert len(folds) == 3 and folds["n_test"].sum() == len(frame)
    assert ((folds["n_train"] + folds["n_val"] + folds["n_test"]) == len(frame)).all()
    assert (folds["n_val"] > 0).all()
    assert result.summary.loc["accuracy", "mean"] == pytest.approx(folds["accuracy"].mean())
    assert result.summary.loc["accuracy", "std"] == pytest.approx(folds["accuracy"].std(ddof=1))
    assert np.allclose(predictions[["p_COVID", "p_Normal"]].sum(axis=1), 1.0, atol=1e-5)


def test_cross_validation_refuses_too_few_groups(synthetic_index):
    frame = synthetic_index.frame.copy()
    frame["patient_id"] = "same"
    with pytest.raises(ValueError, match="groups"):
        tuning.cross_validate(_config(synthetic_index.root), frame, CLASSES, k=3)


@pytest.mark.parametrize("roi", ["lungs", "lungs-attention", "ct-lungs-attention"])
def test_the_grid_search_refuses_a_lung_roi(tmp_path, roi):
    """Asked of the ROI-mode table (an active mode), not by comparing names: every lung ROI is refused."""
    cfg = TrainConfig(data=str(tmp_path), model="small", image_size=32, roi=roi)
    with pytest.raises(ValueError, match=f"trains on full images.*not '{roi}'"):
        tuning.TrainConfigHyperModel(cfg, pd.DataFrame(columns=["path", "label", "split"]), CLASSES, {})
