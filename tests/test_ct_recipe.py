"""The CT training recipe (issue 23): figure groups, strong augmentation, MixUp, label smoothing, a cosine
schedule, test-time augmentation, and ``train --recipe ct`` with explicit options winning."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from covid_tf.cli import build_parser
from covid_tf.cli.commands.train import config_from_args
from covid_tf.data.discover import discover
from covid_tf.data.pipeline import mix_labels
from covid_tf.data.preprocessing import augmentation_layers, mixup_layer
from covid_tf.data.splits import figure_group, make_split
from covid_tf.errors import CovidTfError
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import predict_paths
from covid_tf.runs.recipes import RECIPES, recipe_overrides
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.training.fit import cosine_schedule, fit

# Real names of the UCSD COVID-CT set and the figure each comes from.
UCSD_NAMES = {
    "CT_COVID/2020.02.10.20021584-p6-52%3.png": "CT_COVID/2020.02.10.20021584-p6-52",
    "CT_COVID/2020.02.10.20021584-p6-52%10.png": "CT_COVID/2020.02.10.20021584-p6-52",
    "CT_COVID/2020.03.22.20040782-p24-1533-2.png": "CT_COVID/2020.03.22.20040782-p24-1533",
    "CT_COVID/2020.03.01.20029769-p21-73_3.png": "CT_COVID/2020.03.01.20029769-p21-73",
    "CT_COVID/2020.03.13.20035212-p23-152.png": "CT_COVID/2020.03.13.20035212-p23-152",
    "CT_COVID/PIIS0140673620301549_2.png": "CT_COVID/PIIS0140673620301549",
    "CT_COVID/2019-novel-Coronavirus-severe-adult-respiratory-dist_2020_International-Jour-p3-89%1.png":
        "CT_COVID/2019-novel-Coronavirus-severe-adult-respiratory-dist_2020_International-Jour-p3-89",
    "CT_NonCOVID/1%2.jpg": "CT_NonCOVID/1",
    "CT_NonCOVID/1210.png": "CT_NonCOVID/1210",
}


@pytest.mark.parametrize("name", sorted(UCSD_NAMES))
def test_figure_group_keeps_the_slices_and_panels_of_one_figure(name):
    assert figure_group(f"/data/ucsd/{name}") == UCSD_NAMES[name]


def test_figure_group_by_page_joins_the_figures_of_one_page():
    first = figure_group("CT_COVID/2020.03.13.20035212-p23-152.png", level="page")
    assert first == figure_group("CT_COVID/2020.03.13.20035212-p23-163.png", level="page")
    assert first != figure_group("CT_COVID/2020.03.13.20035212-p24-152.png", level="page")
    assert figure_group("CT_NonCOVID/12.jpg", level="page") != figure_group("CT_COVID/12.jpg", level="page")
    with pytest.raises(ValueError, match="level"):
        figure_group("a.png", level="paper")


def test_ct_augmentation_is_the_identity_at_inference_and_keeps_the_range():
    images = np.random.default_rng(0).uniform(0.0, 1.0, (4, 32, 32, 1)).astype("float32")
    layer = augmentation_layers("ct", seed=1)
    assert np.allclose(layer(images, training=False), images)
    augmented = np.asarray(layer(images, training=True))
    assert augmented.shape == images.shape and not np.allclose(augmented, images)
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0


def test_mixup_blends_images_and_one_hot_labels():
    assert mixup_layer(0.0) is None
    with pytest.raises(ValueError, match="alpha"):
        mixup_layer(-1.0)
    images = np.concatenate([np.zeros((4, 8, 8, 1)), np.ones((4, 8, 8, 1))]).astype("float32")
    labels = np.eye(2, dtype="float32")[[0, 0, 0, 0, 1, 1, 1, 1]]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    assert mix_labels(dataset, None) is dataset
    mixed_images, mixed_labels = next(iter(mix_labels(dataset, mixup_layer(1.0, seed=3))))
    mixed_images, mixed_labels = mixed_images.numpy(), mixed_labels.numpy()
    assert np.allclose(mixed_labels.sum(axis=1), 1.0)
    # An image's grey (the share of the "ones" images in it) is its label's share of class 1.
    assert np.allclose(mixed_images.mean(axis=(1, 2, 3)), mixed_labels[:, 1], atol=1e-5)
    assert not np.allclose(mixed_labels, labels)


def test_cosine_schedule_decays_from_the_rate_to_zero():
    rate = cosine_schedule(1e-3, 4)
    assert [round(rate(epoch), 7) for epoch in range(5)] == [1e-3, 8.536e-4, 5e-4, 1.464e-4, 0.0]
    assert cosine_schedule(1e-4, 2, first_epoch=10)(10) == pytest.approx(1e-4)


def test_train_config_checks_the_new_fields_and_keeps_the_old_defaults(tmp_path):
    cfg = TrainConfig(data=str(tmp_path))
    assert (cfg.label_smoothing, cfg.mixup, cfg.lr_schedule, cfg.recipe) == (0.0, 0.0, "plateau", None)
    for bad, match in (({"label_smoothing": 1.0}, "label-smoothing"), ({"mixup": -0.1}, "mixup"),
                       ({"lr_schedule": "step"}, "lr-schedule"), ({"recipe": "xray"}, "recipe"),
                       ({"label_smoothing": 0.1, "loss": "focal"}, "focal")):
        with pytest.raises(CovidTfError, match=match):
            TrainConfig(data=str(tmp_path), **bad)


def _train_args(tmp_path, *options):
    parser = build_parser("train")
    return parser.parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"), *options])


def test_train_without_a_recipe_is_unchanged(tmp_path):
    cfg = config_from_args(_train_args(tmp_path))
    plain = TrainConfig(data=str(tmp_path), weights="auto", roi="auto")
    assert dataclasses.asdict(cfg) == dataclasses.asdict(plain)


def test_train_recipe_sets_its_defaults_and_explicit_options_win(tmp_path):
    overrides = recipe_overrides("ct")
    cfg = config_from_args(_train_args(tmp_path, "--recipe", "ct"))
    assert cfg.recipe == "ct"
    for name, value in overrides.items():
        assert getattr(cfg, name) == value, name
    explicit = config_from_args(_train_args(tmp_path, "--recipe", "ct", "--image-size", "64", "--epochs", "20",
                                            "--augmentation", "none", "--mixup", "0", "--lr-schedule", "plateau",
                                            "--label-smoothing", "0"))
    assert (explicit.image_size, explicit.epochs, explicit.augmentation) == (64, 20, "none")
    assert (explicit.mixup, explicit.lr_schedule, explicit.label_smoothing) == (0.0, "plateau", 0.0)
    python = TrainConfig.from_recipe("ct", data=str(tmp_path), epochs=3)
    assert python.epochs == 3 and python.recipe == "ct"
    assert {name: getattr(python, name) for name in overrides if name != "epochs"} == \
        {name: value for name, value in overrides.items() if name != "epochs"}
    recorded = python.to_dict()  # what config.json records
    assert recorded["recipe"] == "ct" and {"label_smoothing", "mixup", "lr_schedule"} <= set(recorded)
    assert "ct" in RECIPES
    with pytest.raises(ValueError, match="recipe"):
        recipe_overrides("xray")


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_recipe")
    generate_dataset(root, classes=("COVID", "Normal"), per_class=12, size=32, patients_per_class=6, seed=0)
    return root, make_split(discover(root).frame, seed=0)


def test_fit_with_mixup_label_smoothing_and_cosine(tiny_split):
    root, split = tiny_split
    cfg = TrainConfig(data=str(root), image_size=32, epochs=3, batch_size=8, roi="none", augmentation="ct",
                      mixup=0.2, label_smoothing=0.1, lr_schedule="cosine", patience=10, precise_bn_images=0)
    model, history = fit(cfg, split, ["COVID", "Normal"], verbose=0)
    assert history["learning_rate"].round(6).tolist() == [1e-3, 7.5e-4, 2.5e-4]
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    assert np.isfinite(history["loss"]).all()


def test_test_time_augmentation_averages_each_image_and_its_mirror(tmp_path):
    rng = np.random.default_rng(0)
    paths, mirrors = [], []
    for index in range(3):
        pixels = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        for name, array, bucket in (("a", pixels, paths), ("m", pixels[:, ::-1], mirrors)):
            path = tmp_path / f"{name}{index}.png"
            Image.fromarray(np.ascontiguousarray(array)).save(path)
            bucket.append(str(path))
    model = _left_right_model(16)
    plain = predict_paths(model, paths, 16, 1)
    mirrored = predict_paths(model, mirrors, 16, 1)
    assert not np.allclose(plain, mirrored)
    assert np.allclose(predict_paths(model, paths, 16, 1, tta=True), (plain + mirrored) / 2, atol=1e-6)



def _left_right_model(size: int) -> keras.Model:
    """Not mirror-symmetric: the share of brightness in the left half of the image."""
    inputs = keras.Input((size, size, 1))
    half = size // 2
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :half], axis=(1, 2)))(inputs)
    right = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, half:], axis=(1, 2)))(inputs)
    return keras.Model(inputs, keras.layers.Softmax()(keras.layers.Concatenate()([left, right]) * 20))


def test_cross_validation_with_tta_keeps_the_plain_predictions(tiny_split, monkeypatch):
    import pandas as pd

    from covid_tf.training import tuning

    root, split = tiny_split
    # The fold's training is not what is tested: a fixed model that a mirror changes.
    monkeypatch.setattr(tuning.train, "fit", lambda *args, **kwargs: (_left_right_model(32), pd.DataFrame({"a": [0]})))
    cfg = TrainConfig(data=str(root), image_size=32, epochs=1, batch_size=8, roi="none")
    predictions = tuning.cross_validate(cfg, split.drop(columns=["split", "group"]), ["COVID", "Normal"], k=2,
                                        tta=True).predictions
    plain = predictions[["plain_p_COVID", "plain_p_Normal"]].to_numpy()
    assert np.allclose(plain.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(plain, predict_paths(_left_right_model(32), predictions["path"], 32, 1), atol=1e-6)
    assert not np.allclose(predictions["p_COVID"], predictions["plain_p_COVID"])


def test_ct_slice_config_takes_the_recipe_under_the_options_given(tmp_path):
    from covid_tf.workflows.ct import slice_config

    plain = slice_config(tmp_path, model="baseline", loss="focal", epochs=3)
    recipe = slice_config(tmp_path, model="baseline", loss="focal", recipe="ct", epochs=3, label_smoothing=0.0)
    assert (plain.augmentation, plain.lr_schedule, plain.recipe) != (recipe.augmentation, recipe.lr_schedule, "ct")
    assert (recipe.augmentation, recipe.lr_schedule, recipe.recipe) == ("ct", "cosine", "ct")
    assert recipe.label_smoothing == 0.0 and recipe.epochs == 3  # what the caller gives wins
