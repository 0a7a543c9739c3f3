"""``build_model(name, ...)`` over every registered architecture, and ``last_conv_layer_name`` for Grad-CAM."""

from __future__ import annotations

import dataclasses

import keras

from covid_tf.errors import CovidTfError
from covid_tf.models import common, lung_attention
from covid_tf.models.architectures import ARCHITECTURES, Architecture, get_architecture
from covid_tf.models.transfer import AUTO, resolve_weights


def build_model(name: str, **options) -> keras.Model:
    """Build architecture ``name``: [0, 1] images in, softmax over classes out.

    ``options`` are the fields of :class:`~covid_tf.models.common.BuildOptions` (``image_size``,
    ``channels``, ``num_classes``, ``weights``, ``dropout``, ``normalization``, ``mean``, ``std``),
    checked once; ``normalization="auto"`` is resolved by the architecture's record, ``weights="auto"`` by
    :func:`covid_tf.models.transfer.resolve_weights` (ImageNet when available, else random and said so).
    """
    architecture = get_architecture(name)
    if options.get("weights") == AUTO:
        options["weights"] = resolve_weights(name, AUTO)
    checked = common.BuildOptions(**options)
    resolved = architecture.normalization(checked.normalization, has_statistics=checked.mean is not None)
    return architecture.build_function()(dataclasses.replace(checked, normalization=resolved))


def architecture_of(model: keras.Model) -> Architecture | None:
    """The record a model was built from (its name is ``covid_<architecture>``), or None."""
    prefix = common.MODEL_NAME_PREFIX
    if model.name.startswith(prefix):
        return ARCHITECTURES.get(model.name[len(prefix):])
    return None


# Layers that never make a useful Grad-CAM target: inputs, normalisation and augmentation.
PREPROCESSING_LAYER_TYPES = frozenset(
    {"InputLayer", "Rescaling", "Normalization", "Resizing", "CenterCrop", "RandAugment", "AutoContrast"}
)


def is_preprocessing_layer(layer: keras.layers.Layer) -> bool:
    """Whether a layer only prepares the input (normalisation, resizing, augmentation)."""
    class_name = type(layer).__name__
    return (class_name in PREPROCESSING_LAYER_TYPES or class_name.startswith("Random")
            or ".preprocessing" in type(layer).__module__)


def _output_rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called more than once
        return None


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the layer Grad-CAM should use: the last convolutional feature map before pooling.

    The one search of the toolkit (fine-tuning, Grad-CAM and the ``explain`` command all use it). Models of a
    registered architecture answer their record's ``last_conv_layer``; any other model answers the last layer
    with a 4-D output (not an input, normalisation or augmentation layer) that comes before the first layer
    that drops to rank 2 (global pooling or flatten). A lung-attention model answers its masked feature map
    (:data:`covid_tf.models.lung_attention.LAYER_NAME`).
    """
    if lung_attention.has_lung_attention(model):  # the feature map as the head pools it: over the lungs
        return lung_attention.LAYER_NAME
    architecture = architecture_of(model)
    if architecture is not None and architecture.last_conv_layer in {layer.name for layer in model.layers}:
        return architecture.last_conv_layer
    candidate = None
    for layer in model.layers:
        if is_preprocessing_layer(layer):
            continue
        rank = _output_rank(layer)
        if rank == 4:
            candidate = layer.name
        elif candidate is not None and rank is not None and rank < 4:
            break
    if candidate is None:
        raise CovidTfError(f"model {model.name!r} has no layer with a 4-D output (N, H, W, C), a convolutional "
                           "feature map, to explain; pass the layer name explicitly")
    return candidate


def backbone_layer_name(model: keras.Model) -> str:
    """The backbone's own last convolutional layer: the same as :func:`last_conv_layer_name`, except for a
    lung-attention model, where it is the feature map *before* the lungs mask it (its Grad-CAM shows what the
    backbone responds to anywhere on the film, not only what the head pools)."""
    if not lung_attention.has_lung_attention(model):
        return last_conv_layer_name(model)
    names = [layer.name for layer in model.layers]
    architecture = architecture_of(model)
    if architecture is not None and architecture.last_conv_layer in names:
        return architecture.last_conv_layer
    candidate = None
    for layer in model.layers[: names.index(lung_attention.LAYER_NAME)]:
        skipped = is_preprocessing_layer(layer) or layer.name == lung_attention.MASK_POOL_NAME
        if not skipped and _output_rank(layer) == 4:
            candidate = layer.name
    if candidate is None:
        raise CovidTfError(f"model {model.name!r} has no convolutional feature map before its lung attention")
    return candidate
