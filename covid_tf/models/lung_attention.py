"""Lung-attention pooling: a classifier that averages its last feature map over the lungs only.

A model built with ``BuildOptions(lung_attention=True)`` (``train --roi lungs-attention``) takes the image
and its lung mask as one tensor, (S, S, C + 1): the last channel is the mask (1 in the lungs, 0 outside;
all ones when an image has no plausible lungs, which pools the whole image). The backbone sees the
image channels only. Its last feature map ``F`` is multiplied by the mask averaged down to ``F``'s size and
thresholded at one half (a position counts when at least half of its cell is lung, so the heat of the
cells on the lungs' outline, mostly outside, is not pooled) (the layer :data:`LAYER_NAME`), and the head
pools the *masked average*
``sum(F * m) / sum(m)`` instead of the global average, so the decision is made from lung positions only
and the lung area is not a cue. Grad-CAM targets :data:`LAYER_NAME`, so a heatmap shows exactly where
the pooled evidence comes from: ``relu(sum_k w_k F_k m) = m * relu(sum_k w_k F_k)``.

What it does not do: a feature at a lung position still sees its receptive field (40 px at 128 px for
the baseline), which may reach just outside the lungs. Everything is built-in Keras layers and
``keras.ops``, so the model loads in plain Keras.
"""

from __future__ import annotations

import keras
from keras import layers, ops

LAYER_NAME = "lung_attention"
MASK_POOL_NAME = "lung_mask_pool"
AREA_NAME = "lung_mask_area"
POOL_NAME = "head_pool"
CELL_THRESHOLD = 0.5  # share of a feature cell that must be lung for the cell to be pooled
MIN_AREA = 1e-3  # of the feature map: an empty mask pools nothing rather than dividing by zero


def image_part(inputs: keras.KerasTensor, channels: int) -> keras.KerasTensor:
    """The image channels of an attention model's input."""
    return inputs[..., :channels]


def mask_part(inputs: keras.KerasTensor, channels: int) -> keras.KerasTensor:
    """The mask channel (the last) of an attention model's input."""
    return inputs[..., channels:]


def masked_average(features: keras.KerasTensor, mask: keras.KerasTensor) -> keras.KerasTensor:
    """``sum(F * m) / sum(m)`` over positions: (N, H, W, K) features and an (N, S, S, 1) mask -> (N, K)."""
    height, width = int(features.shape[1]), int(features.shape[2])
    size = int(mask.shape[1])
    if size % height == 0 and size % width == 0 and size // height == size // width:
        small = layers.AveragePooling2D(size // height, name=MASK_POOL_NAME)(mask)
    else:
        small = layers.Resizing(height, width, interpolation="area", name=MASK_POOL_NAME)(mask)
    small = ops.cast(ops.greater_equal(small, CELL_THRESHOLD), features.dtype)
    weighted = layers.Multiply(name=LAYER_NAME)([features, small])
    total = layers.GlobalAveragePooling2D(name=POOL_NAME)(weighted)
    area = layers.GlobalAveragePooling2D(name=AREA_NAME)(small)
    return ops.divide(total, ops.maximum(ops.cast(area, total.dtype), MIN_AREA))


def has_lung_attention(model: keras.Model) -> bool:
    """Whether ``model`` pools over a lung mask given as its input's last channel."""
    return any(layer.name == LAYER_NAME for layer in model.layers)


def image_channels(model: keras.Model) -> int:
    """The image channels ``model`` expects (its input's channels, less the mask channel of an attention model)."""
    channels = int(model.inputs[0].shape[-1])
    return channels - 1 if has_lung_attention(model) else channels
