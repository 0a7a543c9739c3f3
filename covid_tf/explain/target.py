"""The score a gradient method differentiates: the class logit (default) or the class probability.

Gradient methods differentiate the *class logit* ``z_c``, the pre-softmax score,
by default (``score="logit"``), as Selvaraju et al., the keras-io Grad-CAM example and
pytorch-grad-cam do. The models of this project end in ``Dense(classes, activation="softmax",
dtype="float32")``, so the logit is no layer's output: :func:`find_logit_layer` finds that last
Dense (behind any Softmax, Activation or Dropout layers) and the pipeline replays it, ``z = x W + b``
from its input ``x``, inside the tape. This works the same on a model loaded back from ``.keras``.
On a ``GlobalAveragePooling -> Dense`` head the logit gradient of channel ``k`` is ``W[k, c] / (h w)``
at every position, so Grad-CAM equals CAM. ``score="probability"`` differentiates the softmax output
``p_c`` instead: ``dp_c/dA = p_c (dz_c/dA - sum_j p_j dz_j/dA)`` subtracts the evidence for the other
classes (with two classes the map becomes "this class minus the other") and vanishes as ``p_c``
saturates.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from covid_tf.explain.cam_methods import SCORES

# Layers between the output Dense and the model output that do not change the logit at inference.
PASS_THROUGH_TYPES = frozenset(
    {"Activation", "Softmax", "Dropout", "GaussianDropout", "GaussianNoise", "AlphaDropout", "Identity"}
)


def producer(tensor: keras.KerasTensor) -> keras.layers.Layer:
    """The layer that produced a symbolic tensor of a functional graph."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ValueError("cannot walk the model graph: the tensor has no Keras history")
    return history.operation


def skip_pass_through(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The first layer at or before ``layer`` that is not a Softmax, Activation or Dropout layer."""
    while type(layer).__name__ in PASS_THROUGH_TYPES:
        layer = producer(layer.input)
    return layer


def find_logit_layer(model: keras.Model) -> keras.layers.Dense:
    """Return the Dense layer whose pre-activation output is the model's class logits.

    The output may come from the Dense itself (``activation="softmax"`` fused into it) or from
    Softmax, Activation and Dropout layers behind it. Raises ``ValueError`` for any other output
    (pass ``score="probability"`` to explain such a model).
    """
    try:
        layer = skip_pass_through(producer(model.outputs[0]))
    except (ValueError, AttributeError) as error:
        raise ValueError(f"cannot find the output layer of model {model.name!r}: {error}") from error
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"cannot find the class logits of model {model.name!r}: its output comes from "
            f"{type(layer).__name__} {layer.name!r}, not from a Dense layer; pass score='probability'"
        )
    if int(layer.units) != int(model.outputs[0].shape[-1]):
        raise ValueError(
            f"the last Dense layer {layer.name!r} of model {model.name!r} has {layer.units} units for "
            f"{model.outputs[0].shape[-1]} outputs; pass score='probability'"
        )
    return layer


def dense_logits(dense: keras.layers.Dense, inputs: tf.Tensor) -> tf.Tensor:
    """Replay a Dense layer without its activation: ``inputs @ kernel + bias`` in float32."""
    kernel = tf.cast(tf.convert_to_tensor(dense.kernel), tf.float32)
    logits = tf.tensordot(tf.cast(inputs, tf.float32), kernel, axes=1)
    if dense.use_bias:
        logits = logits + tf.cast(tf.convert_to_tensor(dense.bias), tf.float32)
    return logits


def check_score(score: str) -> str:
    """Return ``score`` if it is one of :data:`~covid_tf.explain.cam_methods.SCORES`, else raise ``ValueError``."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    return score
