"""``build_model(name, ...)`` over every architecture, and ``last_conv_layer_name`` for Grad-CAM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import keras

from covid_tf.errors import CovidTfError
from covid_tf.models import common
from covid_tf.models.cnn import build_baseline, build_small
from covid_tf.models.resnet18 import build_resnet18
from covid_tf.models.transfer import build_resnet50v2, build_vgg16

MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "baseline": build_baseline,
    "small": build_small,
    "resnet50v2": build_resnet50v2,
    "resnet18": build_resnet18,
    "vgg16": build_vgg16,
}
MODEL_NAMES = tuple(MODEL_BUILDERS)
# The layer whose activations Grad-CAM uses, per architecture (post-ReLU, before global pooling).
LAST_CONV_LAYERS = {
    "baseline": "block3_relu2",
    "small": "block2_conv",
    "resnet50v2": "post_relu",
    "resnet18": "conv5_block2_out",
    "vgg16": "block5_conv3",
}


def build_model(
    name: str,
    *,
    image_size: int = 128,
    channels: int = 1,
    num_classes: int = 2,
    weights: str | Path | None = None,
    dropout: float = 0.5,
    normalization: str = "auto",
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> keras.Model:
    """Build architecture ``name`` (one of ``MODEL_NAMES``): [0, 1] images in, softmax over classes out."""
    if name not in MODEL_BUILDERS:
        raise CovidTfError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return MODEL_BUILDERS[name](
        image_size=image_size, channels=channels, num_classes=num_classes, weights=weights,
        dropout=dropout, normalization=normalization, mean=mean, std=std,
    )


def architecture_of(model: keras.Model) -> str | None:
    """The architecture a model was built as (from its name ``covid_<architecture>``), or None."""
    prefix = common.MODEL_NAME_PREFIX
    if model.name.startswith(prefix) and model.name[len(prefix):] in MODEL_BUILDERS:
        return model.name[len(prefix):]
    return None


def _output_rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called more than once
        return None


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the layer Grad-CAM should use: the last convolutional feature map before pooling.

    Models from ``build_model`` are recognised by their name and answer the layer listed in
    ``LAST_CONV_LAYERS``; any other model answers the last layer with a 4-D output that comes
    before the first layer that drops to rank 2 (global pooling or flatten).
    """
    architecture = architecture_of(model)
    names = {layer.name for layer in model.layers}
    if architecture is not None and LAST_CONV_LAYERS[architecture] in names:
        return LAST_CONV_LAYERS[architecture]
    candidate = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        rank = _output_rank(layer)
        if rank == 4:
            candidate = layer.name
        elif candidate is not None and rank is not None and rank < 4:
            break
    if candidate is None:
        raise CovidTfError(f"model {model.name!r} has no layer with a 4-D (convolutional) output")
    return candidate
