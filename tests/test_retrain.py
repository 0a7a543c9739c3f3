"""Seed 001's last steps: the head tuned on a frozen backbone, the best settings retrained on train + val."""

from __future__ import annotations

import keras_tuner as kt
import pytest

from covid_tf import models
from covid_tf.data.discover import discover
from covid_tf.data.splits import make_split
from covid_tf.models.common import HEAD_PREFIX
from covid_tf.runs.config import TrainConfig
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.training import retrain, tuning

CLASSES = ["COVID", "Normal"]
BEST_ROW = {"batch_size": 4, "learning_rate": 3e-4, "dropout": 0.2, "best_epoch": 2, "val_accuracy": 0.9}


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    generate_dataset(root, classes=tuple(CLASSES), per_class=12, size=32, patients_per_class=6, seed=0)
    return root, make_split(discover(root, classes=CLASSES).frame, fractions=(0.5, 0.25, 0.25), seed=0)


def _config(root, model: str, **options) -> TrainConfig:
    return TrainConfig(data=str(root), model=model, image_size=32, batch_size=8, n_bootstrap=0, seed=0,
                       precise_bn_images=0, **options)


def test_best_settings_take_the_grid_search_row(tiny_split):
    cfg = _config(tiny_split[0], "resnet18", epochs=9, fine_tune_epochs=3, learning_rate=1e-3, dropout=0.5)
    chosen = retrain.best_settings(cfg, BEST_ROW)
    assert (chosen.batch_size, chosen.learning_rate, chosen.dropout) == (4, 3e-4, 0.2)
    assert (chosen.epochs, chosen.fine_tune_epochs) == (2, 3)  # the head's epochs from the search, fine-tuning kept
    assert (cfg.batch_size, cfg.epochs) == (8, 9)  # the given config is not changed
    assert retrain.best_settings(cfg, BEST_ROW, fine_tune_epochs=1).fine_tune_epochs == 1
    with pytest.raises(ValueError, match="fine_tune_epochs"):
        retrain.best_settings(cfg, BEST_ROW, fine_tune_epochs=-1)
    with pytest.raises(ValueError, match="best_epoch"):
        retrain.best_settings(cfg, {key: value for key, value in BEST_ROW.items() if key != "best_epoch"})


def test_transfer_model_retrains_head_then_whole_network_without_validation(tiny_split):
    root, split = tiny_split
    cfg = retrain.best_settings(_config(root, "resnet18", fine_tune_epochs=1), BEST_ROW)
    final = retrain.fit_on_train_and_val(cfg, split, CLASSES, verbose=0)
    assert final.history["phase"].tolist() == ["head", "head", "fine_tune"]
    assert len(final.phase("head")) == 2 and len(final.phase("fine_tune")) == 1
    assert not [column for column in final.history.columns if column.startswith("val_")]  # nothing held out
    assert final.model.outputs[0].shape[-1] == len(CLASSES)
    assert final.config is cfg
    with pytest.raises(ValueError, match="no 'train' phase"):
        final.phase("train")


def test_model_without_backbone_retrains_in_one_phase(tiny_split):
    root, split = tiny_split
    final = retrain.fit_on_train_and_val(_config(root, "small", epochs=2), split, CLASSES, verbose=0)
    assert final.history["phase"].tolist() == ["train", "train"]
    with pytest.raises(ValueError, match="no 'train' or 'val' rows"):
        retrain.fit_on_train_and_val(_config(root, "small", epochs=1), split[split["split"] == "test"], CLASSES)


def test_grid_search_trials_of_a_transfer_model_train_only_the_head(tiny_split):
    root, split = tiny_split
    hypermodel = tuning.TrainConfigHyperModel(_config(root, "resnet18", fine_tune_epochs=1), split, CLASSES,
                                              {"dropout": [0.3]})
    model = hypermodel.build(kt.HyperParameters())
    backbone, head = models.split_layers(model)
    assert backbone and not any(layer.trainable for layer in backbone)  # seed 001: the backbone stays as it came
    assert any(layer.trainable_weights for layer in head)
    assert model.get_layer(f"{HEAD_PREFIX}dropout").rate == pytest.approx(0.3)
