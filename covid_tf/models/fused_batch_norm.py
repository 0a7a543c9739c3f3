"""TensorFlow's fused batch-normalisation kernel for Keras 3 ``BatchNormalization`` layers.

Keras 3 computes a batch normalisation from separate ops (``moments``, then ``batch_normalization``) and
differentiates each: on a CPU the baseline CNN's training step spends about a third of its time there, and
its inference about a third more than it needs. TensorFlow's ``FusedBatchNormV3`` (what Keras 2 used) does
the same arithmetic, and its gradient, in one pass, and TensorFlow's graph optimiser can merge it with the
convolution before it. :func:`fuse_batch_norm` gives a model's layers that kernel: the layers stay plain
``keras.layers.BatchNormalization`` (a saved model loads in any Keras, and its weights and configuration
are unchanged), and the numbers follow Keras 3 exactly (in training the batch mean and *biased* batch
variance and the same moving averages; in inference the moving statistics). Layers the kernel cannot stand
in for (other axes or ranks, masks, renormalisation, synchronised statistics, reduced precision) keep
Keras's path.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

_FUSED = "_covid_tf_fused"


def _fused_call(layer: keras.layers.BatchNormalization, keras_call, inputs, training=None, mask=None):
    """``layer.call`` with the fused kernel for a float32 NHWC batch; Keras's call otherwise."""
    if mask is not None or inputs.dtype != tf.float32:
        return keras_call(inputs, training=training, mask=mask)
    gamma = layer.gamma if layer.scale else tf.ones_like(layer.moving_mean)
    beta = layer.beta if layer.center else tf.zeros_like(layer.moving_mean)
    if not (training and layer.trainable):  # inference, or a frozen layer: the moving statistics (as Keras)
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=layer.moving_mean, variance=layer.moving_variance,
            epsilon=layer.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=False,
        )
        return outputs
    outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=gamma, offset=beta, mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
        epsilon=layer.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
    )
    # The kernel returns the unbiased (n - 1) variance for the moving average; Keras 3 averages the biased one.
    count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
    variance = variance * tf.maximum(count - 1.0, 0.0) / count
    layer.moving_mean.assign(layer.moving_mean * layer.momentum + mean * (1.0 - layer.momentum))
    layer.moving_variance.assign(layer.moving_variance * layer.momentum + variance * (1.0 - layer.momentum))
    return outputs


def can_fuse(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a batch normalisation over the channels of 4-D float32 inputs that the kernel matches."""
    if not isinstance(layer, keras.layers.BatchNormalization) or keras.backend.backend() != "tensorflow":
        return False
    shape = getattr(layer, "input", None) is not None and layer.input.shape
    return (bool(shape) and len(shape) == 4 and layer.axis in (3, -1) and not layer.renorm
            and not layer.synchronized and layer.compute_dtype == "float32" and layer.epsilon >= 1.001e-5)


def fuse_batch_norm(model: keras.Model) -> int:
    """Run ``model``'s batch-normalisation layers (nested models included) with the fused kernel.

    Returns how many layers it changed; calling it again changes nothing. The outputs, gradients and
    moving statistics differ from Keras's own only by floating-point rounding.
    """
    changed = 0
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            changed += fuse_batch_norm(layer)
        elif can_fuse(layer) and not getattr(layer, _FUSED, False):
            object.__setattr__(layer, "call", functools.partial(_fused_call, layer, layer.call))
            object.__setattr__(layer, _FUSED, True)
            changed += 1
    return changed
