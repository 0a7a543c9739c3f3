"""One :class:`Architecture` record per model: the registry every other module reads.

A record says all the toolkit knows about a model: its builder, the layer Grad-CAM explains, whether
it has a pretrained backbone to freeze and then fine-tune, its default learning rate, what
``normalization="auto"`` means for it, and how its layer names group into blocks for unfreezing.
Every builder has one signature, ``builder(options: BuildOptions) -> keras.Model``
(:class:`covid_tf.models.common.BuildOptions`), and returns a flat functional model that takes
float32 images in [0, 1] and ends in a softmax. Adding a model is one :func:`register` call plus its
builder (``tests/test_models.py::test_a_registered_toy_model_trains_and_explains``).

This module imports no TensorFlow: builders are named as ``"module:function"`` until a model is built,
so the command line can list the models at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from covid_tf import config
from covid_tf.errors import CovidTfError

# How layer names group into blocks (group 1 names the block; an empty group is the stem).
CNN_BLOCKS = (r"^(block\d+)_",)  # VGG16 and the CNNs trained from scratch
RESNET_BLOCKS = (r"^(conv\d+_block\d+)_", r"^(?:conv1|pool1)_()")  # residual blocks, then the stem


@dataclass(frozen=True)
class Architecture:
    """Everything the toolkit knows about one model."""

    name: str
    builder: Callable[[Any], Any] | str  # a function of BuildOptions, or its "module:function" name
    last_conv_layer: str  # the layer Grad-CAM uses: post-ReLU, before global pooling
    transfer: bool  # a backbone to freeze while the head trains, then fine-tune
    learning_rate: float  # the default learning rate of a run that gives none
    # What normalization="auto" means: "dataset" (the training split's mean/std, per-image
    # standardisation without them) or a fixed convention ("imagenet", "resnet_v2", "vgg16").
    auto_normalization: str
    block_patterns: tuple[str, ...]  # layer-name patterns of the backbone's blocks, for unfreezing
    dataset_statistics: bool = True  # accepts normalisation "dataset" (the training split's mean/std)

    def build_function(self) -> Callable[[Any], Any]:
        """The builder itself (imported on first use when the record names it)."""
        if callable(self.builder):
            return self.builder
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)

    def normalization(self, requested: str, has_statistics: bool) -> str:
        """The normalisation used when ``requested`` (``"auto"`` or a kind) is asked for."""
        if requested != "auto":
            return requested
        if self.auto_normalization == "dataset":
            return "dataset" if has_statistics else "per_image"
        return self.auto_normalization

    def needs_statistics(self, requested: str) -> bool:
        """Whether a run measures the training split's mean/std for normalisation ``requested``."""
        return self.dataset_statistics and (
            requested == "dataset" or (requested == "auto" and self.auto_normalization == "dataset")
        )


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add (or replace) a record; training, the command line and the explainers see it at once."""
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def unregister(name: str) -> None:
    """Remove a record (for tests that register a toy model)."""
    ARCHITECTURES.pop(name, None)


def get_architecture(name: str) -> Architecture:
    """The record of ``name``; ``CovidTfError`` naming the choices when there is none."""
    if name not in ARCHITECTURES:
        raise CovidTfError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def model_names() -> tuple[str, ...]:
    """Every registered architecture, in registration order."""
    return tuple(ARCHITECTURES)


register(Architecture("baseline", "covid_tf.models.cnn:build_baseline", "block3_relu2", transfer=False,
                      learning_rate=config.SCRATCH_CNN_LEARNING_RATE, auto_normalization="dataset",
                      block_patterns=CNN_BLOCKS))
register(Architecture("small", "covid_tf.models.cnn:build_small", "block2_conv", transfer=False,
                      learning_rate=config.SCRATCH_CNN_LEARNING_RATE, auto_normalization="dataset",
                      block_patterns=CNN_BLOCKS))
register(Architecture("lenet", "covid_tf.models.cnn:build_lenet", "block2_conv", transfer=False,
                      learning_rate=config.SCRATCH_CNN_LEARNING_RATE, auto_normalization="dataset",
                      block_patterns=CNN_BLOCKS))
register(Architecture("resnet50v2", "covid_tf.models.transfer:build_resnet50v2", "post_relu", transfer=True,
                      learning_rate=config.LEARNING_RATE, auto_normalization="resnet_v2",
                      block_patterns=RESNET_BLOCKS, dataset_statistics=False))
register(Architecture("resnet18", "covid_tf.models.resnet18:build_resnet18", "conv5_block2_out", transfer=True,
                      learning_rate=config.LEARNING_RATE, auto_normalization="imagenet",
                      block_patterns=RESNET_BLOCKS))
register(Architecture("vgg16", "covid_tf.models.transfer:build_vgg16", "block5_conv3", transfer=True,
                      learning_rate=config.LEARNING_RATE, auto_normalization="vgg16",
                      block_patterns=CNN_BLOCKS, dataset_statistics=False))
