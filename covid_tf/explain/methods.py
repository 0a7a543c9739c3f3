"""The CAM family: each method is a small subclass that only says how channel weights are computed.

| method | channel weight ``w[n, k]`` | reference |
| --- | --- | --- |
| :class:`CAM` | the output Dense kernel ``W[k, c]`` read after GlobalAveragePooling | Zhou et al. 2016 |
| :class:`GradCAM` | spatial mean of ``d p_c / d A_k`` | Selvaraju et al. 2017, keras-io example |
| :class:`GradCAMPlusPlus` | ``sum_ij alpha_ij relu(d p_c / d A_k)`` | Chattopadhay et al. 2018 |
| :class:`ScoreCAM` | ``p_c(x * mask_k)`` minus its mean over channels | Wang et al. 2020 |
| :class:`LayerCAM` | per pixel: ``relu(d p_c / d A_k[i, j])`` (no spatial pooling) | Jiang et al. 2021 |

``p_c`` is the output probability of the target class (see :mod:`covid_tf.explain.base`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from covid_tf.explain.base import BaseCAM

# Layers between the pooling and the output that do not change what CAM computes at inference.
_PASS_THROUGH_TYPES = frozenset(
    {"Activation", "Softmax", "Dropout", "GaussianDropout", "GaussianNoise", "AlphaDropout", "Identity"}
)


def _producer(tensor: keras.KerasTensor) -> keras.layers.Layer:
    """The layer that produced a symbolic tensor of a functional graph."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise ValueError("cannot walk the model graph: the tensor has no Keras history")
    return history.operation


def find_cam_head(model: keras.Model) -> tuple[str, keras.layers.Dense]:
    """Return ``(feature layer name, output Dense layer)`` of a ``features -> GAP -> Dense`` head.

    Dropout and activation layers in between are allowed. Raises ``ValueError`` for any other head,
    in particular for one with an extra hidden Dense layer (e.g. Dense(128) + Dropout): CAM is only
    defined exactly when the class score is linear in the pooled features.
    """
    layer = _producer(model.outputs[0])
    while type(layer).__name__ in _PASS_THROUGH_TYPES:
        layer = _producer(layer.input)
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"CAM needs a model ending in GlobalAveragePooling2D -> Dense; the output of {model.name!r} "
            f"comes from {type(layer).__name__} {layer.name!r}. Use 'gradcam' instead."
        )
    dense = layer
    layer = _producer(dense.input)
    while type(layer).__name__ in _PASS_THROUGH_TYPES:
        layer = _producer(layer.input)
    if isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"CAM is not defined for model {model.name!r}: its head has the hidden Dense layer "
            f"{layer.name!r} between the pooling and the output layer {dense.name!r}, so the class score "
            "is not a weighted sum of the pooled feature maps. Use 'gradcam', which generalises CAM "
            "to any head."
        )
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D) or layer.keepdims:
        raise ValueError(
            f"CAM needs GlobalAveragePooling2D before the output Dense {dense.name!r}; model {model.name!r} "
            f"has {type(layer).__name__} {layer.name!r}. Use 'gradcam' instead."
        )
    return _producer(layer.input).name, dense


class CAM(BaseCAM):
    """Class Activation Mapping: the weights of the output Dense layer that follows GlobalAveragePooling.

    Needs no gradients. Only defined for a ``features -> GlobalAveragePooling2D -> [Dropout] -> Dense``
    head; any other head raises ``ValueError`` (use :class:`GradCAM`). The target layer is always the
    one feeding the pooling; passing another ``layer_name`` raises ``ValueError``. The Dense bias is
    ignored (it shifts every pixel equally, which the normalisation removes).
    """

    name = "cam"
    uses_gradients = False

    def __init__(self, model: keras.Model, layer_name: str | None = None, batch_size: int = 32) -> None:
        feature_layer, self._dense = find_cam_head(model)
        if layer_name is not None and layer_name != feature_layer:
            raise ValueError(
                f"CAM reads the layer that feeds the pooling ({feature_layer!r}), not {layer_name!r}"
            )
        super().__init__(model, feature_layer, batch_size)

    def compute_weights(self, activations, gradients, images, class_indices):
        kernel = tf.cast(tf.convert_to_tensor(self._dense.kernel), tf.float32)  # (K, C)
        return tf.gather(tf.transpose(kernel), class_indices)


class GradCAM(BaseCAM):
    """Grad-CAM (keras-io recipe): each channel weighted by the spatial mean of its gradient."""

    name = "gradcam"

    def compute_weights(self, activations, gradients, images, class_indices):
        return tf.reduce_mean(gradients, axis=[1, 2])


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: positive gradients weighted per pixel by ``alpha``.

    Uses the closed form of Chattopadhay et al. (as pytorch-grad-cam does), which assumes an
    exponential score, so second and third derivatives are powers of the first; with the softmax
    probability as the score this is the usual approximation.
    """

    name = "gradcam++"

    def compute_weights(self, activations, gradients, images, class_indices):
        grads_2 = tf.square(gradients)
        grads_3 = grads_2 * gradients
        sum_activations = tf.reduce_sum(activations, axis=[1, 2], keepdims=True)
        alpha = tf.math.divide_no_nan(grads_2, 2.0 * grads_2 + sum_activations * grads_3)
        alpha = tf.where(tf.not_equal(gradients, 0.0), alpha, tf.zeros_like(alpha))
        return tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=[1, 2])


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021): each activation weighted by its own positive gradient.

    ``map[i, j] = relu(sum_k relu(d p_c / d A_k[i, j]) * A_k[i, j])``. The weights are per pixel
    (N, h, w, K), not per channel: Grad-CAM averages a channel's gradient over space, which loses
    *where* the evidence is when the head gives each position its own weights (a Flatten -> Dense
    head); LayerCAM keeps it. On a GlobalAveragePooling head the gradient of a
    channel is the same at every position, and LayerCAM is Grad-CAM with the negative channels dropped.
    """

    name = "layercam"

    def compute_weights(self, activations, gradients, images, class_indices):
        return tf.nn.relu(gradients)


class ScoreCAM(BaseCAM):
    """Score-CAM: a channel's weight is how much the target probability rises when the image is
    masked by that channel's upsampled, min-max normalised activation map.

    Weight ``w[n, k] = p_c(x_n * mask_k) - b_n``: the target probability of the masked image minus a
    baseline (Wang et al. 2020 "increase of confidence"). The paper's baseline is the score of a
    black image, which wrongly penalises every channel for a class whose evidence is darkness; here
    ``b_n`` is the mean of ``p_c(x_n * mask_k)`` over the image's channels, so a channel counts when
    it raises the probability more than the average channel does, and a model that ignores its input
    gives an all-zero map. (Any baseline is one constant subtracted from all weights of an image.)
    Needs no gradients but one forward pass per image and channel: the masked images go through the
    model ``batch_size`` at a time. Channels whose activation map is constant give an all-zero mask
    and are skipped (weight 0).
    """

    name = "scorecam"
    uses_gradients = False
    weights_in_graph = False

    def __init__(self, model: keras.Model, layer_name: str | None = None, batch_size: int = 32) -> None:
        super().__init__(model, layer_name, batch_size)
        self._predict = tf.function(lambda images: model(images, training=False), reduce_retracing=True)

    def compute_weights(self, activations, gradients, images, class_indices):
        activations = np.asarray(activations)
        images = tf.convert_to_tensor(images)
        class_indices = np.asarray(class_indices)
        count, _, _, channels = activations.shape
        size = tf.shape(images)[1:3]
        weights = np.zeros((count, channels), dtype=np.float32)
        for row in range(count):
            maps = activations[row]
            spread = maps.max(axis=(0, 1)) - maps.min(axis=(0, 1))
            live = np.flatnonzero(spread > 0)
            for start in range(0, len(live), self.batch_size):
                chosen = live[start : start + self.batch_size]
                # (k, h, w, 1) -> upsampled (k, H, W, 1), each normalised to [0, 1].
                masks = tf.image.resize(
                    np.transpose(maps[:, :, chosen], (2, 0, 1))[..., np.newaxis], size, method="bilinear"
                )
                masks = masks - tf.reduce_min(masks, axis=[1, 2, 3], keepdims=True)
                masks = masks / (tf.reduce_max(masks, axis=[1, 2, 3], keepdims=True) + 1e-7)
                probabilities = np.asarray(self._predict(images[row : row + 1] * masks))
                weights[row, chosen] = probabilities[:, class_indices[row]]
            if len(live):
                weights[row, live] -= weights[row, live].mean()
        return weights
