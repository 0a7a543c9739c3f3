"""Normalisation and augmentation as Keras preprocessing layers.

Normalisation layers go inside the model (so a saved model takes [0, 1] images); augmentation
runs in the ``tf.data`` pipeline after the cache. Every random layer is the identity when
``training=False``. Every normalisation is a built-in Keras layer, so a saved model loads with
plain ``keras.saving.load_model`` in a process that never imports covid_tf; the two custom layers
below are kept only to load models saved by earlier versions, which name them ``covid_tf>ClassName``: they are
handed to Keras where models load (:func:`covid_tf.models.loading.custom_objects`), never registered by an import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import layers, ops

from covid_tf import config

NORMALIZATION_KINDS = config.NORMALIZATION_KINDS
# Caffe-style means of the ImageNet training set, in BGR order and 0-255 units.
VGG16_BGR_MEANS = (103.939, 116.779, 123.68)
# Variance floor of per-image standardisation: a std floor of 0.01 in [0, 1] units.
PER_IMAGE_EPSILON = 1e-4


class PerImageStandardization(layers.Layer):
    """Legacy (models saved before 0.1.1): per-image standardisation, now a ``LayerNormalization``."""

    def call(self, inputs):
        mean = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        n_values = ops.cast(ops.prod(ops.shape(inputs)[1:]), inputs.dtype)
        return (inputs - mean) / ops.maximum(std, 1.0 / ops.sqrt(n_values))


class CaffeNormalization(layers.Layer):
    """Legacy (models saved before 0.1.1): the caffe convention, now :func:`caffe_normalization`."""

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(VGG16_BGR_MEANS, dtype=inputs.dtype)


def _per_channel(values: float | Sequence[float], channels: int) -> list[float]:
    array = np.atleast_1d(np.asarray(values, dtype="float64"))
    if array.size == 1:
        return [float(array[0])] * channels
    if array.size == channels:
        return [float(v) for v in array]
    if channels == 1:
        return [float(array.mean())]
    raise ValueError(f"got {array.size} normalisation values for {channels} channels")


def normalization_layer(
    kind: str,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    *,
    channels: int = 3,
    name: str = "normalization",
) -> layers.Layer:
    """Return the layer that normalises [0, 1] images for one convention.

    ``dataset`` uses ``mean``/``std`` measured on the training split; ``imagenet`` the ImageNet
    statistics (averaged over channels for grayscale); ``per_image`` standardises each image;
    ``resnet_v2`` scales to [-1, 1]; ``vgg16`` applies the caffe convention; ``none`` passes through.
    """
    if kind == "dataset":
        if mean is None or std is None:
            raise ValueError("normalization 'dataset' needs the training split's mean and std")
        return _normalization(mean, std, channels, name)
    if kind == "imagenet":
        return _normalization(config.IMAGENET_MEAN, config.IMAGENET_STD, channels, name)
    if kind == "per_image":
        # Built-in LayerNormalization over (H, W, C) without scale or offset is (x - mean) / sqrt(var + eps);
        # eps bounds the gain on a near-constant image as tf.image.per_image_standardization's std floor does.
        return layers.LayerNormalization(axis=(1, 2, 3), epsilon=PER_IMAGE_EPSILON, center=False, scale=False,
                                         name=name)
    if kind == "resnet_v2":
        return layers.Rescaling(scale=2.0, offset=-1.0, name=name)
    if kind == "vgg16":
        if channels != 3:
            raise ValueError("normalization 'vgg16' needs 3 channels")
        return caffe_normalization(name)
    if kind == "none":
        return layers.Identity(name=name)
    raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(NORMALIZATION_KINDS)}")


def caffe_normalization(name: str = "normalization") -> layers.Conv2D:
    """VGG16's caffe convention as a fixed, non-trainable 1x1 ``Conv2D``: RGB to BGR, 0-255, minus the BGR means.

    Output channel ``c`` is ``255 * x[2 - c] - VGG16_BGR_MEANS[c]``: the kernel is 255 times the channel
    permutation and the bias the negated means (built here, saved with the model as any weights are).
    """
    layer = layers.Conv2D(3, 1, trainable=False, name=name)
    layer.build((None, None, None, 3))
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for output_channel in range(3):
        kernel[0, 0, 2 - output_channel, output_channel] = 255.0
    layer.set_weights([kernel, -np.asarray(VGG16_BGR_MEANS, dtype="float32")])
    return layer


def _normalization(mean, std, channels: int, name: str) -> layers.Layer:
    means = _per_channel(mean, channels)
    stds = _per_channel(std, channels)
    if min(stds) <= 0:
        raise ValueError(f"normalisation std must be positive, got {stds}")
    return layers.Normalization(mean=means, variance=[s * s for s in stds], name=name)


@dataclass(frozen=True)
class AugmentationConfig:
    """Parameters of random augmentation; angles in degrees, shifts and zoom as fractions."""

    rotation_degrees: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    contrast: float = 0.0  # RandomContrast factor: contrast scaled by a random factor in [1 - c, 1 + c]
    # Keras' ImageDataGenerator (seed 001) fills with the nearest edge pixel: no black borders that
    # exist only in training (they shift batch-norm statistics away from those of unaugmented images).
    fill_mode: str = "nearest"

    def to_dict(self) -> dict:
        return asdict(self)


# Named presets; README ("Augmentation presets") maps each to the paper it comes from.
# Horizontal flip is off by default for chest X-rays (the heart is on one side).
AUGMENTATION_PRESETS = {
    "none": AugmentationConfig(),
    "rotate": AugmentationConfig(rotation_degrees=30.0),
    "width-shift-rotate-zoom": AugmentationConfig(rotation_degrees=15.0, width_shift=0.1, zoom=0.2),
    "shift-rotate-zoom": AugmentationConfig(rotation_degrees=15.0, width_shift=0.1, height_shift=0.1, zoom=0.2),
    "rotate-flip": AugmentationConfig(rotation_degrees=10.0, horizontal_flip=True),
    "shift-rotate-zoom-flip": AugmentationConfig(rotation_degrees=15.0, width_shift=0.1, height_shift=0.1, zoom=0.2,
                                                 horizontal_flip=True),
    # Axial CT slices are near mirror-symmetric; figure crops vary in framing and window: stronger zoom, contrast.
    "ct": AugmentationConfig(rotation_degrees=15.0, width_shift=0.1, height_shift=0.1, zoom=0.3,
                             horizontal_flip=True, contrast=0.3),
}
AUGMENTATION_PRESETS["default"] = AUGMENTATION_PRESETS["shift-rotate-zoom"]
# The names of the first versions (after the seed documents), still accepted but not listed.
PRESET_ALIASES = {"seed000": "rotate", "seed001": "shift-rotate-zoom", "seed004": "rotate-flip"}


def augmentation_config(preset: str | AugmentationConfig | dict | None) -> AugmentationConfig:
    """Resolve a preset name, a dict of parameters or a config into an ``AugmentationConfig``."""
    if preset is None:
        return AUGMENTATION_PRESETS["none"]
    if isinstance(preset, AugmentationConfig):
        return preset
    if isinstance(preset, dict):
        return AugmentationConfig(**preset)
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in AUGMENTATION_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(AUGMENTATION_PRESETS)}")
    return AUGMENTATION_PRESETS[preset]


def augmentation_layers(
    preset: str | AugmentationConfig | dict | None = "default", *, seed: int = config.SEED
) -> keras.Sequential:
    """Build the random augmentation as a ``keras.Sequential`` of preprocessing layers."""
    params = augmentation_config(preset)
    steps: list[layers.Layer] = []
    if params.rotation_degrees:
        steps.append(
            layers.RandomRotation(params.rotation_degrees / 360.0, fill_mode=params.fill_mode, seed=seed)
        )
    if params.width_shift or params.height_shift:
        steps.append(
            layers.RandomTranslation(
                params.height_shift, params.width_shift, fill_mode=params.fill_mode, seed=seed + 1
            )
        )
    if params.zoom:
        steps.append(layers.RandomZoom(params.zoom, params.zoom, fill_mode=params.fill_mode, seed=seed + 2))
    if params.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 3))
    if params.contrast:
        steps.append(layers.RandomContrast(params.contrast, value_range=(0.0, 1.0), seed=seed + 4))
    return keras.Sequential(steps or [layers.Identity()], name="augmentation")


def mixup_layer(alpha: float, *, seed: int = config.SEED) -> layers.Layer | None:
    """Keras's ``MixUp`` (Zhang et al., 2018) with Beta(``alpha``, ``alpha``) weights, or ``None`` when ``alpha`` is 0.

    Called on ``{"images": x, "labels": y}`` batches (one-hot labels) in the training pipeline, after augmentation:
    each image and its label are blended with those of another image of the batch.
    """
    if not alpha:
        return None
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"mixup alpha must be a number above 0, got {alpha}")
    return layers.MixUp(alpha=float(alpha), seed=seed + 5)
