"""Models: one :class:`~covid_tf.models.architectures.Architecture` record per model, builders, freezing.

Every builder takes one :class:`~covid_tf.models.common.BuildOptions` and returns a flat functional
``keras.Model`` that takes float32 images in [0, 1] and ends in a softmax over the classes.
Importing this package is cheap: the names below are loaded (with Keras) on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ARCHITECTURES": "architectures", "Architecture": "architectures", "get_architecture": "architectures",
    "model_names": "architectures", "register": "architectures", "unregister": "architectures",
    "BuildOptions": "common", "save_model": "common",
    "build_model": "registry", "architecture_of": "registry", "last_conv_layer_name": "registry",
    "backbone_blocks": "freezing", "freeze_backbone": "freezing", "split_layers": "freezing",
    "unfreeze_top": "freezing",
    "resnet18_backbone": "resnet18", "imagenet_weights_path": "transfer", "resolve_weights": "transfer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'covid_tf.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"covid_tf.models.{_EXPORTS[name]}"), name)
