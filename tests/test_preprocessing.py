"""Normalisation and augmentation layers against answers known exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from covid_tf import config
from covid_tf.data.preprocessing import (
    AUGMENTATION_PRESETS,
    augmentation_config,
    augmentation_layers,
    normalization_layer,
)


def test_dataset_normalization_uses_given_statistics():
    images = np.full((1, 2, 2, 1), 0.75, np.float32)
    out = np.asarray(normalization_layer("dataset", 0.5, 0.25, channels=1)(images))
    np.testing.assert_allclose(out, 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="mean and std"):
        normalization_layer("dataset")


def test_imagenet_resnet_v2_per_image_and_vgg16():
    rgb = np.zeros((1, 1, 1, 3), np.float32) + np.array(config.IMAGENET_MEAN, np.float32)
    np.testing.assert_allclose(np.asarray(normalization_layer("imagenet")(rgb)), 0.0, atol=1e-5)
    gray = np.array([0.0, 0.5, 1.0], np.float32).reshape(1, 1, 3, 1)
    np.testing.assert_allclose(np.asarray(normalization_layer("resnet_v2")(gray)).ravel(), [-1, 0, 1])
    standardized = np.asarray(normalization_layer("per_image")(np.random.default_rng(0).random((2, 8, 8, 1))))
    np.testing.assert_allclose(standardized.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    red = np.zeros((1, 1, 1, 3), np.float32)
    red[..., 0] = 1.0
    np.testing.assert_allclose(np.asarray(normalization_layer("vgg16")(red)).ravel(),
                               [-103.939, -116.779, 255 - 123.68], atol=1e-3)


def test_per_image_standardization_of_a_constant_image_is_zero_not_nan():
    out = np.asarray(normalization_layer("per_image")(np.full((1, 4, 4, 1), 0.3, np.float32)))
    assert np.isfinite(out).all() and np.abs(out).max() < 1e-5


@pytest.mark.parametrize("preset", sorted(AUGMENTATION_PRESETS))
def test_augmentation_is_identity_when_not_training(preset):
    images = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    layer = augmentation_layers(preset)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)


def test_augmentation_changes_images_when_training_and_is_seeded():
    images = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    first = np.asarray(augmentation_layers("shift-rotate-zoom", seed=5)(images, training=True))
    again = np.asarray(augmentation_layers("shift-rotate-zoom", seed=5)(images, training=True))
    assert np.abs(first - images).max() > 0.1
    np.testing.assert_allclose(first, again, atol=1e-6)


def test_rotation_by_180_degrees_of_a_known_image():
    image = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    layer = keras.layers.RandomRotation(factor=(0.5, 0.5), fill_mode="constant", interpolation="nearest")
    np.testing.assert_allclose(np.asarray(layer(image, training=True))[0, ..., 0], np.rot90(image[0, ..., 0], 2),
                               atol=1e-4)


def test_chest_xray_presets_do_not_flip():
    assert not AUGMENTATION_PRESETS["shift-rotate-zoom"].horizontal_flip
    assert not AUGMENTATION_PRESETS["default"].horizontal_flip
    assert AUGMENTATION_PRESETS["rotate-flip"].horizontal_flip
    shift_rotate_zoom = AUGMENTATION_PRESETS["shift-rotate-zoom"]
    assert shift_rotate_zoom.rotation_degrees == 15 and shift_rotate_zoom.zoom == 0.2
    assert augmentation_config("seed001") == shift_rotate_zoom  # the old name still works
