"""Adding a model is one Architecture record plus its builder: a toy model trains, fine-tunes, explains."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import layers

from covid_tf import explain
from covid_tf.cli import build_parser
from covid_tf.models import architectures, common
from covid_tf.runs.config import TrainConfig
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows.train import train_run


def build_toy(options: common.BuildOptions) -> keras.Model:
    """The builder: one Conv-ReLU block on the shared stem, and the shared head."""
    inputs, x = options.stem(rgb=False)
    x = layers.Conv2D(4, 3, padding="same", name="block1_conv")(x)
    x = layers.ReLU(name="block1_relu")(x)
    return keras.Model(inputs, options.head(x, inputs, dense_units=()), name=common.model_name("toy"))


# The record: everything else (CLI choices, learning rate, freezing, Grad-CAM layer) reads it.
TOY = architectures.Architecture(
    name="toy", builder=build_toy, last_conv_layer="block1_relu", transfer=True, learning_rate=3e-3,
    auto_normalization="dataset", block_patterns=architectures.CNN_BLOCKS,
)


@pytest.fixture
def toy():
    architectures.register(TOY)
    yield TOY
    architectures.unregister(TOY.name)


def test_a_registered_toy_model_trains_and_explains(toy, tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, classes=("COVID", "Normal"), per_class=8, size=32, patients_per_class=4, seed=0)
    assert "toy" in build_parser("train").parse_args(["train", str(data), "--out", "x", "--model", "toy"]).model

    cfg = TrainConfig(data=str(data), model="toy", image_size=32, epochs=1, fine_tune_epochs=1, batch_size=4,
                      n_bootstrap=0, precise_bn_images=0)
    assert cfg.learning_rate == toy.learning_rate  # the record's default
    result = train_run(cfg, tmp_path / "run", verbose=0)

    assert list(result.history["phase"]) == ["head", "fine_tune"]  # transfer=True: frozen, then fine-tuned
    assert json.loads((tmp_path / "run" / "config.json").read_text())["learning_rate"] == toy.learning_rate
    assert 0.0 <= result.metrics["val"]["accuracy"] <= 1.0
    images = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    heatmaps, _, _ = explain.explain(result.model, images, method="gradcam")
    assert heatmaps.shape == (2, 32, 32)
    assert explain.default_target_layer(result.model) == "block1_relu"
