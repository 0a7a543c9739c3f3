"""Model builders: ``build_model(name, ...)`` for every architecture, Grad-CAM's layer, freezing.

All builders share one signature (``image_size``, ``channels``, ``num_classes``, ``weights``,
``dropout``, ``normalization``, ``mean``, ``std``) and return a flat functional ``keras.Model``
that takes float32 images in [0, 1] and ends in a softmax over the classes.
"""

from covid_tf.models.cnn import build_baseline, build_small
from covid_tf.models.freezing import backbone_blocks, freeze_backbone, split_layers, unfreeze_top
from covid_tf.models.registry import (
    LAST_CONV_LAYERS,
    MODEL_BUILDERS,
    MODEL_NAMES,
    architecture_of,
    build_model,
    last_conv_layer_name,
)
from covid_tf.models.resnet18 import build_resnet18, resnet18_backbone
from covid_tf.models.transfer import build_resnet50v2, build_vgg16, imagenet_weights_path

__all__ = [
    "LAST_CONV_LAYERS",
    "MODEL_BUILDERS",
    "MODEL_NAMES",
    "architecture_of",
    "backbone_blocks",
    "build_baseline",
    "build_model",
    "build_resnet18",
    "build_resnet50v2",
    "build_small",
    "build_vgg16",
    "freeze_backbone",
    "imagenet_weights_path",
    "last_conv_layer_name",
    "resnet18_backbone",
    "split_layers",
    "unfreeze_top",
]
