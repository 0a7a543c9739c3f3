"""Pieces shared by every builder: argument checks, the input stem and the classification head.

Every model built here is one flat functional graph:

    image (S, S, C) in [0, 1] -> [grayscale_to_rgb] -> normalization -> backbone -> head -> softmax

The input layer is called ``image``, the optional channel repeat ``grayscale_to_rgb``, the
normalisation ``normalization``; head layers start with ``head_`` and the softmax is ``predictions``.
The model itself is called ``covid_<architecture>`` so the architecture is known after
``keras.models.load_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from covid_tf import config
from covid_tf.data.preprocessing import NORMALIZATION_KINDS, normalization_layer
from covid_tf.errors import CovidTfError
from covid_tf.models import lung_attention

MODEL_NAME_PREFIX = "covid_"
INPUT_NAME = "image"
REPEAT_NAME = "grayscale_to_rgb"
NORMALIZATION_NAME = "normalization"
HEAD_PREFIX = "head_"
OUTPUT_NAME = "predictions"
MIN_IMAGE_SIZE = config.MIN_IMAGE_SIZE


@dataclass(frozen=True)
class BuildOptions:
    """The arguments every builder takes, checked once (``ValueError`` for what no builder accepts).

    ``normalization`` reaches a builder already resolved by its architecture record (never ``"auto"``),
    ``mean``/``std`` are the training split's statistics for normalisation ``dataset``.
    """

    image_size: int = 128
    channels: int = 1
    num_classes: int = 2
    weights: str | Path | None = None
    dropout: float = 0.5
    normalization: str = "auto"
    mean: float | Sequence[float] | None = None
    std: float | Sequence[float] | None = None
    # Lung-attention pooling (covid_tf.models.lung_attention): the input gets a last, mask channel and
    # the head averages over the lungs (head() takes the mask from the model's input it is given).
    lung_attention: bool = False

    def __post_init__(self) -> None:
        image_size, num_classes, normalization = self.image_size, self.num_classes, self.normalization
        if int(image_size) != image_size or image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(
                f"num_classes must be an integer >= 2 (binary tasks use 2 softmax outputs), got {num_classes!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if normalization != "auto" and normalization not in NORMALIZATION_KINDS:
            choices = ", ".join(("auto", *NORMALIZATION_KINDS))
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {choices}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std (the training split's statistics), or neither")
        if self.mean is not None and normalization not in ("auto", "dataset"):
            raise ValueError(f"mean/std are only used by normalization 'dataset', not {normalization!r}")

    def stem(self, rgb: bool) -> tuple[keras.KerasTensor, keras.KerasTensor]:
        """The input and normalisation layers of these options (see :func:`input_stem`)."""
        if not self.lung_attention:
            return input_stem(image_size=self.image_size, channels=self.channels, normalization=self.normalization,
                              mean=self.mean, std=self.std, rgb=rgb)
        inputs = keras.Input(shape=(self.image_size, self.image_size, self.channels + 1), name=INPUT_NAME)
        image = lung_attention.image_part(inputs, self.channels)
        return inputs, normalize(image, normalization=self.normalization, mean=self.mean, std=self.std, rgb=rgb)

    def head(self, features: keras.KerasTensor, inputs: keras.KerasTensor,
             dense_units: Sequence[int] = (128,)) -> keras.KerasTensor:
        """The classification head of these options on ``features`` of the model whose input is ``inputs``
        (see :func:`classification_head`; with lung attention it pools over the mask channel of ``inputs``)."""
        mask = lung_attention.mask_part(inputs, self.channels) if self.lung_attention else None
        return classification_head(features, num_classes=self.num_classes, dropout=self.dropout,
                                   dense_units=dense_units, mask=mask)


def input_stem(
    *,
    image_size: int,
    channels: int,
    normalization: str,
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
    rgb: bool,
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Return ``(inputs, normalised)``: the [0, 1] image input and the normalised tensor.

    With ``rgb=True`` a grayscale input is repeated to 3 channels (a ``Concatenate`` layer, so the
    model stays serialisable) before normalisation, as ImageNet backbones expect.
    """
    inputs = keras.Input(shape=(image_size, image_size, channels), name=INPUT_NAME)
    return inputs, normalize(inputs, normalization=normalization, mean=mean, std=std, rgb=rgb)


def normalize(image: keras.KerasTensor, *, normalization: str, mean: float | Sequence[float] | None,
              std: float | Sequence[float] | None, rgb: bool) -> keras.KerasTensor:
    """The optional grayscale-to-RGB repeat and the normalisation layer on a [0, 1] image tensor."""
    x = image
    if rgb and image.shape[-1] == 1:
        x = layers.Concatenate(axis=-1, name=REPEAT_NAME)([x, x, x])
    kwargs = {"mean": mean, "std": std} if normalization == "dataset" else {}
    return normalization_layer(normalization, channels=x.shape[-1], name=NORMALIZATION_NAME, **kwargs)(x)


def classification_head(
    features: keras.KerasTensor,
    *,
    num_classes: int,
    dropout: float,
    dense_units: Sequence[int] = (128,),
    pooling: str = "avg",
    mask: keras.KerasTensor | None = None,
) -> keras.KerasTensor:
    """Pooling (global average, ``"flatten"``, or the masked average over ``mask``'s lungs when given:
    :func:`covid_tf.models.lung_attention.masked_average`), ReLU dense layers, dropout and the softmax."""
    if mask is not None:
        x = lung_attention.masked_average(features, mask)
    elif pooling == "flatten":
        x = layers.Flatten(name=f"{HEAD_PREFIX}flatten")(features)
    else:
        x = layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(features)
    for index, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"{HEAD_PREFIX}dense{index}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(x)
    # float32 output: a float16 softmax saturates near 0 and 1 under mixed precision (Keras guide).
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)


def model_name(architecture: str) -> str:
    """The name given to the ``keras.Model`` of one architecture."""
    return f"{MODEL_NAME_PREFIX}{architecture}"


def local_weights_file(weights: str | Path, architecture: str) -> Path:
    """Check that ``weights`` names an existing ``.h5`` weights file and return it."""
    path = Path(weights).expanduser()
    if not path.name.endswith(".h5"):
        raise CovidTfError(
            f"{path}: weights for {architecture} must be None, 'imagenet' or a '.weights.h5' / '.h5' file"
        )
    if not path.is_file():
        raise CovidTfError(f"{path}: weights file for {architecture} not found")
    return path


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy the weights of every layer of ``source`` into the layer of the same name in ``target``."""
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save ``model`` as a portable ``.keras`` file: layers and weights only, no optimizer, loss or metrics.

    The file loads with plain ``keras.saving.load_model(path)`` in a process that never imports covid_tf
    (every layer is built in); a run keeps its loss in ``config.json``. A functional twin that shares the
    model's layers is saved, since Keras writes the compile configuration of a compiled model.
    """
    # One input as a tensor, not a one-item list: a model saved with a list warns "The structure of `inputs`
    # doesn't match the expected structure" at every first call with a batch (and so does its clone).
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    twin = keras.Model(inputs, model.outputs, name=model.name)
    twin.save(path)
