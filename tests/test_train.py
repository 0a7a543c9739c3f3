"""Training runs: run directory, two-phase fine-tuning, best-epoch tie-break, retraining, CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.models import get_architecture
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import load_model
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.training.callbacks import BestModelCheckpoint
from covid_tf.training.fit import fit
from covid_tf.workflows.train import prepare_split, retrain_on_train_and_val, train_run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    generate_dataset(root, classes=("COVID", "Normal"), per_class=16, size=32, patients_per_class=8, seed=0)
    return root


def test_best_checkpoint_breaks_ties_by_training_accuracy():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = BestModelCheckpoint()
    callback.set_model(model)
    logs = [
        {"val_accuracy": 0.8, "accuracy": 0.7},
        {"val_accuracy": 0.9, "accuracy": 0.7},
        {"val_accuracy": 0.9, "accuracy": 0.95},  # same validation accuracy, better training accuracy
        {"val_accuracy": 0.9, "accuracy": 0.8},
        {"val_accuracy": 0.85, "accuracy": 1.0},
    ]
    for epoch, values in enumerate(logs):
        callback.on_epoch_end(epoch, values)
    assert callback.best_epoch == 2


def test_train_run_writes_the_run_directory(tiny_data, tmp_path):
    cfg = TrainConfig(data=str(tiny_data), model="baseline", image_size=32, epochs=2, batch_size=8, n_bootstrap=20)
    result = train_run(cfg, tmp_path / "run", verbose=0)
    for name in ("config.json", "split.csv", "history.csv", "model.keras", "metrics.json"):
        assert (tmp_path / "run" / name).is_file(), name
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0
        assert "roc_auc" in metrics[split]
    split = pd.read_csv(tmp_path / "run" / "split.csv", dtype=str)
    assert split.groupby("patient_id")["split"].nunique().max() == 1  # patients never straddle splits
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2
    loaded = load_model(tmp_path / "run" / "model.keras")
    assert loaded.class_names == result.class_names == ["COVID", "Normal"]
    assert loaded.image_size == 32 and loaded.channels == 1


def test_finished_run_is_not_overwritten(tiny_data, tmp_path, capsys):
    args = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1",
            "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_transfer_model_trains_frozen_then_fine_tuned(tiny_data, tmp_path):
    """The two phases on ResNet18, the cheapest transfer architecture to trace (ResNet50V2's are run by notebook
    03; every architecture's build, step, save, load and Grad-CAM layer by test_models)."""
    cfg = TrainConfig(data=str(tiny_data), model="resnet18", image_size=32, epochs=1, fine_tune_epochs=1,
                      batch_size=8, n_bootstrap=0)
    result = train_run(cfg, tmp_path / "run", verbose=0)
    assert result.history["phase"].tolist() == ["head", "fine_tune"]
    loaded = load_model(tmp_path / "run" / "model.keras").model
    layer = get_architecture("resnet18").last_conv_layer
    grad_model = keras.Model(loaded.inputs[0], [loaded.get_layer(layer).output, loaded.outputs[0]])
    activations, _ = grad_model(np.zeros((1, 32, 32, 1), "float32"))
    assert activations.shape[-1] == 512


def test_retraining_on_train_and_val_uses_no_validation(tiny_data):
    cfg = TrainConfig(data=str(tiny_data), model="small", image_size=32, epochs=1, batch_size=8)
    split, class_names = prepare_split(cfg)
    model = retrain_on_train_and_val(cfg, split, class_names, epochs=2, verbose=0)
    assert model.outputs[0].shape[-1] == 2


def test_bad_options_are_clear_errors(tiny_data, tmp_path, capsys):
    assert main(["train", str(tiny_data), "--out", str(tmp_path / "r"), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["train", str(tiny_data), "--out", str(tmp_path / "r"), "--classes", "COVID"]) == 2
    assert "two classes" in capsys.readouterr().err
    assert main(["train", str(tiny_data), "--out", str(tmp_path / "r"), "--weights", "/nope.h5"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", str(tiny_data), "--out", str(tmp_path / "r"), "--precise-bn-images", "-1"]) == 2
    assert "--precise-bn-images must be 0 or more" in capsys.readouterr().err


def test_mixed_precision_keeps_a_float32_softmax_and_restores_the_policy(tiny_data):
    cfg = TrainConfig(data=str(tiny_data), model="baseline", image_size=32, epochs=1, batch_size=8,
                      mixed_precision=True)
    split, class_names = prepare_split(cfg)
    model, history = fit(cfg, split, class_names, verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's policy is back
    assert model.get_layer("block1_conv1").compute_dtype == "float16"
    assert model.outputs[0].dtype == "float32"  # a float16 softmax saturates near 0 and 1
    assert np.isfinite(history["loss"]).all()
    probabilities = model.predict(np.zeros((2, 32, 32, 1), "float32"), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
