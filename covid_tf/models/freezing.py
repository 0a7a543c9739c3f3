"""Freeze the backbone, then unfreeze its top blocks, as the keras-io transfer-learning guide does.

The backbone is every layer from the first block up to the last conv layer (``last_conv_layer_name``);
the head is every layer after it. Blocks are read from the layer names, so this also works on a
model loaded from ``.keras``: ``conv1_*``/``pool1_*`` form the stem, ``conv<s>_block<b>_*`` one
residual block each (ResNet50V2, ResNet18), ``block<k>_*`` one block each (VGG16, the CNNs);
other layers (``post_bn``, ``post_relu``) belong to the block before them. BatchNormalization
layers stay frozen, so they run in inference mode (``trainable=False`` does that in Keras 3).
Recompile the model after every call.
"""

from __future__ import annotations

import re

import keras

from covid_tf.models.architectures import CNN_BLOCKS, RESNET_BLOCKS
from covid_tf.models.common import NORMALIZATION_NAME
from covid_tf.models.registry import architecture_of, last_conv_layer_name

STEM = "stem"


def block_patterns(model: keras.Model) -> tuple[str, ...]:
    """The block patterns of the model's architecture record (every known pattern for other models)."""
    architecture = architecture_of(model)
    return architecture.block_patterns if architecture is not None else (*RESNET_BLOCKS, *CNN_BLOCKS)


def _block_of(layer_name: str, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        match = re.match(pattern, layer_name)
        if match:
            return match.group(1) or STEM
    return None


def split_layers(model: keras.Model) -> tuple[list[keras.layers.Layer], list[keras.layers.Layer]]:
    """Return ``(backbone_layers, head_layers)``; input and normalisation layers are in neither."""
    layers = model.layers
    patterns = block_patterns(model)
    last_conv = last_conv_layer_name(model)
    boundary = next(index for index, layer in enumerate(layers) if layer.name == last_conv)
    start = next(
        (index for index, layer in enumerate(layers[: boundary + 1]) if _block_of(layer.name, patterns) is not None),
        boundary,
    )
    return list(layers[start : boundary + 1]), list(layers[boundary + 1 :])


def backbone_blocks(model: keras.Model) -> list[tuple[str, list[keras.layers.Layer]]]:
    """The backbone's blocks from input to output, as ``(block name, layers)``."""
    blocks: list[tuple[str, list[keras.layers.Layer]]] = []
    patterns = block_patterns(model)
    for layer in split_layers(model)[0]:
        block = _block_of(layer.name, patterns)
        if block is None or (blocks and blocks[-1][0] == block):
            if not blocks:
                blocks.append((STEM, []))
            blocks[-1][1].append(layer)
        else:
            blocks.append((block, [layer]))
    return blocks


def unfreeze_top(model: keras.Model, n_blocks: int | str) -> keras.Model:
    """Make the head and the top ``n_blocks`` backbone blocks trainable (``"all"``: every block).

    Every other backbone layer, and every BatchNormalization layer, is frozen. Returns the model.
    """
    if n_blocks != "all" and (isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0):
        raise ValueError(f"n_blocks must be a non-negative integer or 'all', got {n_blocks!r}")
    blocks = backbone_blocks(model)
    count = len(blocks) if n_blocks == "all" else min(n_blocks, len(blocks))
    head = split_layers(model)[1]
    model.trainable = True
    for layer in model.layers:
        if layer.name == NORMALIZATION_NAME:  # fixed weights (VGG16's caffe 1x1 conv): never trained
            layer.trainable = False
    for index, (_, block_layers) in enumerate(blocks):
        unfrozen = index >= len(blocks) - count
        for layer in block_layers:
            layer.trainable = unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
    for layer in head:
        layer.trainable = True
    return model


def freeze_backbone(model: keras.Model) -> keras.Model:
    """Freeze every backbone layer (BatchNorm in inference mode); the head stays trainable."""
    return unfreeze_top(model, 0)
