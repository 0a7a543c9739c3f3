"""ResNet18 (He et al. 2016, basic blocks), which ``keras.applications`` does not provide.

Layer names follow ``keras.applications.ResNet50`` (``conv1_conv``, ``conv2_block1_1_conv``, ...,
``conv5_block2_out``) and the padding follows torchvision, so ported PyTorch weights line up.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from covid_tf.errors import CovidTfError
from covid_tf.models import common

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
LAST_CONV_LAYER = "conv5_block2_out"
# torchvision's BatchNorm defaults (eps 1e-5, momentum 0.1 in PyTorch's convention).
_BN = {"epsilon": 1e-5, "momentum": 0.9}

NO_IMAGENET_WEIGHTS = (
    "Keras has no pretrained ResNet18 ImageNet weights, so weights='imagenet' cannot be downloaded. "
    "Pass weights='path/to/resnet18.weights.h5' instead: a file saved with "
    "covid_tf.models.resnet18_backbone(input_shape=(S, S, 3)).save_weights(...) after porting the "
    "torchvision weights into it (layer names as in keras.applications.ResNet50), or use "
    "'resnet50v2' / 'vgg16', whose ImageNet weights Keras provides"
)


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, then ReLU."""
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn", **_BN)(shortcut)
    else:
        shortcut = x
    x = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_1_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_1_bn", **_BN)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_2_bn", **_BN)(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet18_features(x: keras.KerasTensor) -> keras.KerasTensor:
    """Apply the ResNet18 convolutional layers (no pooling, no top) to ``x``; returns ``conv5_block2_out``."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(name="conv1_bn", **_BN)(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, BLOCKS_PER_STAGE), start=2):
        for block in range(1, blocks + 1):
            stride = 2 if block == 1 and stage > 2 else 1
            x = _basic_block(x, filters, stride, name=f"conv{stage}_block{block}")
    return x


def resnet18_backbone(
    input_shape: tuple[int, int, int] = (224, 224, 3), weights: str | Path | None = None
) -> keras.Model:
    """ResNet18 without its top, as ``keras.applications.ResNet50(include_top=False)``.

    Use it to prepare a ``.weights.h5`` file for ``build_resnet18(weights=...)``.
    """
    inputs = keras.Input(shape=input_shape, name="input_layer")
    backbone = keras.Model(inputs, resnet18_features(inputs), name="resnet18")
    if weights == "imagenet":
        raise CovidTfError(NO_IMAGENET_WEIGHTS)
    if weights is not None:
        backbone.load_weights(common.local_weights_file(weights, "resnet18"))
    return backbone


def build_resnet18(options: common.BuildOptions) -> keras.Model:
    """ResNet18 (seeds 000 and 004) with GAP, dropout and a softmax over ``num_classes``.

    Grayscale images are repeated to 3 channels; ``normalization='auto'`` is ImageNet mean/std
    (as seed 004). ``weights``: None, or a ``.weights.h5`` file of ``resnet18_backbone`` at 3 channels;
    ``'imagenet'`` raises ``CovidTfError`` (Keras has no ResNet18 weights).
    """
    if options.weights == "imagenet":
        raise CovidTfError(NO_IMAGENET_WEIGHTS)
    weights_file = None if options.weights is None else common.local_weights_file(options.weights, "resnet18")
    inputs, x = options.stem(rgb=True)
    outputs = options.head(resnet18_features(x), inputs, dense_units=())
    model = keras.Model(inputs, outputs, name=common.model_name("resnet18"))
    if weights_file is not None:
        pretrained = resnet18_backbone((options.image_size, options.image_size, 3), weights=weights_file)
        common.copy_weights(pretrained, model)
    return model
