"""Convolutional networks trained from scratch: the baseline of seed 001 and two readings of seed 004's small CNN."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from covid_tf.errors import CovidTfError
from covid_tf.models import common

BASELINE_FILTERS = (16, 32, 64)
BATCH_NORM_MOMENTUM = 0.9


def _load_full_weights(model: keras.Model, weights: str | Path | None, architecture: str) -> None:
    if weights is None:
        return
    if weights == "imagenet":
        raise CovidTfError(
            f"there are no ImageNet weights for the '{architecture}' CNN, which is trained from scratch; "
            "use weights=None or a '.weights.h5' file saved from the same model"
        )
    model.load_weights(common.local_weights_file(weights, architecture))


def build_baseline(options: common.BuildOptions) -> keras.Model:
    """The baseline CNN of seed 001: three blocks of two Conv(3x3)-BatchNorm-ReLU (max-pooled between
    blocks), global average pooling, Dense 128, Dropout, softmax.

    Global average pooling makes every position of the last feature map (``block3_relu2``, 1/4 of
    the input size) count alike, so Grad-CAM shows where the evidence is: a Flatten head gives each
    position its own weights, and its Grad-CAM points at the heart border and the clavicles rather
    than the lesions. Two convolutions per block give the last map a receptive field (40 px) wide
    enough to see a lesion against the lung around it; batch normalisation with a short memory
    (momentum 0.9: a few dozen steps per epoch on small data) lets the head learn fast.
    ``weights`` is None or a ``.weights.h5`` file of the whole model.
    """
    inputs, x = options.stem(rgb=options.normalization in ("imagenet", "vgg16"))
    for index, filters in enumerate(BASELINE_FILTERS, start=1):
        if index > 1:
            x = layers.MaxPooling2D(2, name=f"block{index - 1}_pool")(x)
        for conv in (1, 2):
            name = f"block{index}_"
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}conv{conv}")(x)
            x = layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"{name}bn{conv}")(x)
            x = layers.ReLU(name=f"{name}relu{conv}")(x)
    outputs = options.head(x, inputs, dense_units=(128,))
    model = keras.Model(inputs, outputs, name=common.model_name("baseline"))
    _load_full_weights(model, options.weights, "baseline")
    return model


def build_small(options: common.BuildOptions) -> keras.Model:
    """The small CNN of seed 004: Conv(6, 5x5) -> MaxPool(8) -> Conv(16, 5x5) -> Dense 100 -> Dense 50 -> out.

    Adapted so it works from 32 to 224 px: 'same' padding, and global average pooling after the
    second convolution (seed 004's ``Linear(16, 100)`` implies 16 features, i.e. one per channel).
    The last conv layer is ``block2_conv``. ``weights`` is None or a ``.weights.h5`` of the whole model.
    """
    inputs, x = options.stem(rgb=options.normalization in ("imagenet", "vgg16"))
    x = layers.Conv2D(6, 5, padding="same", activation="relu", name="block1_conv")(x)
    x = layers.MaxPooling2D(8, name="block1_pool")(x)
    x = layers.Conv2D(16, 5, padding="same", activation="relu", name="block2_conv")(x)
    outputs = options.head(x, inputs, dense_units=(100, 50))
    model = keras.Model(inputs, outputs, name=common.model_name("small"))
    _load_full_weights(model, options.weights, "small")
    return model


LENET_POOL = 8  # seed 004's MaxPool2d(kernel_size=8, stride=8)
LENET_KERNEL = 5


def lenet_pool_size(image_size: int) -> int:
    """Seed 004's pooling of 8, or less where 8 would leave the second 5x5 convolution under 5 pixels (inputs
    under 44 px): the pool that leaves it at least 5."""
    after_first = image_size - (LENET_KERNEL - 1)
    return max(1, min(LENET_POOL, after_first // LENET_KERNEL))


def build_lenet(options: common.BuildOptions) -> keras.Model:
    """The small CNN of seed 004 as the seed wrote it: Conv(6, 5x5, valid) -> MaxPool(8) -> Conv(16, 5x5, valid)
    -> Flatten -> Dense 100 -> Dense 50 -> softmax, on 3 channels (a grey image is repeated).

    LeNet-5's shape (Conv 6@5x5, Conv 16@5x5, FC layers). The seed's printout names no activation: ReLU after
    each convolution and hidden dense layer, as its PyTorch tutorial lineage does. Its ``Linear(16, 100)``
    cannot follow a 11x11x16 map at 128 px; the flattened map is used (the global-pooled reading of that line
    is ``small``). The last conv layer is ``block2_conv``; ``weights`` is None or a ``.weights.h5`` of the model.
    """
    inputs, x = options.stem(rgb=True)
    x = layers.Conv2D(6, LENET_KERNEL, padding="valid", activation="relu", name="block1_conv")(x)
    x = layers.MaxPooling2D(lenet_pool_size(options.image_size), name="block1_pool")(x)
    x = layers.Conv2D(16, LENET_KERNEL, padding="valid", activation="relu", name="block2_conv")(x)
    if options.lung_attention:  # the lung-masked average takes the place of the flattened map
        outputs = options.head(x, inputs, dense_units=(100, 50))
    else:
        outputs = common.classification_head(x, num_classes=options.num_classes, dropout=options.dropout,
                                             dense_units=(100, 50), pooling="flatten")
    model = keras.Model(inputs, outputs, name=common.model_name("lenet"))
    _load_full_weights(model, options.weights, "lenet")
    return model
