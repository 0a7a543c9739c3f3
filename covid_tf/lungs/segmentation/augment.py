"""Joint image + mask augmentation for lung segmentation, in TensorFlow ops (runs inside ``tf.data``).

Geometry (scale, aspect ratio, rotation, shear, shift) is one projective transform applied to the
image and its mask together, so they stay aligned; exposure (contrast, gamma, brightness, a washed-out
or crushed grey range, histogram equalisation, blur, noise) changes the image only. The ranges are wide
on purpose: the segmenter must work on films from hospitals it never saw, framed and exposed
differently (JSRT's films are washed out: their black sits at mid-grey).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentationRanges:
    """Ranges of the random changes; ``scale`` and ``gamma`` are drawn log-uniformly."""

    scale: tuple[float, float] = (0.7, 1.35)
    aspect: float = 0.15  # log-aspect drawn in [-aspect, aspect]
    rotation_degrees: float = 12.0
    shear: float = 0.08
    shift: float = 0.10  # fraction of the image side
    contrast: tuple[float, float] = (0.5, 1.5)
    gamma: tuple[float, float] = (0.5, 2.0)
    brightness: float = 0.10
    washout_probability: float = 0.4  # map [0, 1] onto [low, high]: black lifted to grey (or white dimmed)
    washout_low: float = 0.45  # low drawn in [0, washout_low]
    washout_high: float = 0.25  # high drawn in [1 - washout_high, 1]
    equalize_probability: float = 0.25  # blend with the histogram-equalised image (weight drawn in [0, 1])
    noise: float = 0.04
    blur_probability: float = 0.25


def _uniform(low: float, high: float) -> tf.Tensor:
    return tf.random.uniform([], low, high)


def _log_uniform(low: float, high: float) -> tf.Tensor:
    return tf.exp(_uniform(math.log(low), math.log(high)))


def random_transform(height: tf.Tensor, width: tf.Tensor, ranges: AugmentationRanges) -> tf.Tensor:
    """An 8-vector output->input projective transform (as ``ImageProjectiveTransformV3`` wants)."""
    scale = _log_uniform(*ranges.scale)
    aspect = tf.exp(_uniform(-ranges.aspect, ranges.aspect))
    scale_x, scale_y = scale * aspect, scale / aspect
    angle = _uniform(-ranges.rotation_degrees, ranges.rotation_degrees) * math.pi / 180.0
    shear = _uniform(-ranges.shear, ranges.shear)
    width_f, height_f = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    shift_x = _uniform(-ranges.shift, ranges.shift) * width_f
    shift_y = _uniform(-ranges.shift, ranges.shift) * height_f
    centre_x, centre_y = (width_f - 1.0) / 2.0, (height_f - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Inverse map: input = centre + R(-angle) S^-1 H^-1 (output - centre - shift).
    a00, a01 = cos / scale_x, sin / scale_x
    a10, a11 = -sin / scale_y, cos / scale_y
    a01 = a01 - shear * a00
    a11 = a11 - shear * a10
    offset_x, offset_y = centre_x + shift_x, centre_y + shift_y
    b0 = centre_x - a00 * offset_x - a01 * offset_y
    b1 = centre_y - a10 * offset_x - a11 * offset_y
    zero = tf.zeros([])
    return tf.stack([a00, a01, b0, a10, a11, b1, zero, zero])


def _warp(stack: tf.Tensor, transform: tf.Tensor) -> tf.Tensor:
    """Warp an (H, W, C) float tensor with a projective transform, bilinear, zero outside."""
    shape = tf.shape(stack)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=stack[None], transforms=transform[None], output_shape=shape[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )[0]


def _blur(image: tf.Tensor) -> tf.Tensor:
    """A 3x3 binomial blur of an (H, W, 1) image."""
    kernel = tf.constant([1.0, 2.0, 1.0])
    kernel = tf.tensordot(kernel, kernel, axes=0) / 16.0
    return tf.nn.conv2d(image[None], kernel[:, :, None, None], strides=1, padding="SAME")[0]


def equalize(image: tf.Tensor, bins: int = 256) -> tf.Tensor:
    """Global histogram equalisation of an image in [0, 1]: each value replaced by its share of darker pixels."""
    histogram = tf.histogram_fixed_width(image, [0.0, 1.0], nbins=bins)
    cdf = tf.cast(tf.cumsum(histogram), tf.float32)
    cdf = (cdf - cdf[0]) / tf.maximum(cdf[-1] - cdf[0], 1.0)
    index = tf.clip_by_value(tf.cast(image * bins, tf.int32), 0, bins - 1)
    return tf.gather(cdf, index)


def washout(image: tf.Tensor, ranges: AugmentationRanges) -> tf.Tensor:
    """Map [0, 1] linearly onto a random [low, high]: a film whose black is grey (JSRT) or whose white is dim."""
    low, high = _uniform(0.0, ranges.washout_low), _uniform(1.0 - ranges.washout_high, 1.0)
    return low + image * (high - low)


def _sometimes(probability: float, change, image: tf.Tensor) -> tf.Tensor:
    return tf.cond(tf.random.uniform([]) < probability, lambda: change(image), lambda: image)


def random_exposure(image: tf.Tensor, ranges: AugmentationRanges) -> tf.Tensor:
    """Random contrast, gamma, brightness, washout, equalisation, blur and Gaussian noise on an (H, W, 1)
    image in [0, 1]."""
    mean = tf.reduce_mean(image)
    image = tf.clip_by_value((image - mean) * _uniform(*ranges.contrast) + mean, 0.0, 1.0)
    image = tf.pow(image + 1e-6, _log_uniform(*ranges.gamma))
    image = _sometimes(ranges.equalize_probability,
                       lambda x: x + _uniform(0.0, 1.0) * (equalize(x) - x), image)
    image = _sometimes(ranges.washout_probability, lambda x: washout(x, ranges), image)
    image = image + _uniform(-ranges.brightness, ranges.brightness)
    image = _sometimes(ranges.blur_probability, _blur, image)
    image = image + tf.random.normal(tf.shape(image)) * _uniform(0.0, ranges.noise)
    return tf.clip_by_value(image, 0.0, 1.0)


def augment_pair(
    image: tf.Tensor, mask: tf.Tensor, ranges: AugmentationRanges = AugmentationRanges()
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment an (H, W, 1) image and its (H, W, 1) {0, 1} mask together."""
    shape = tf.shape(image)
    transform = random_transform(shape[0], shape[1], ranges)
    warped = _warp(tf.concat([image, mask], axis=-1), transform)
    image, mask = warped[..., :1], tf.cast(warped[..., 1:] >= 0.5, tf.float32)
    return random_exposure(image, ranges), mask
