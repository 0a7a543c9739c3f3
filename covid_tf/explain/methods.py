"""The CAM family: each method is a small subclass that only says how channel weights are computed.

| method | channel weight ``w[n, k]`` | reference |
| --- | --- | --- |
| :class:`CAM` | the output Dense kernel ``W[k, c]`` read after GlobalAveragePooling | Zhou et al. 2016 |
| :class:`GradCAM` | spatial mean of ``d z_c / d A_k`` | Selvaraju et al. 2017, keras-io example |
| :class:`GradCAMPlusPlus` | ``sum_ij alpha_ij relu(d z_c / d A_k)`` | Chattopadhay et al. 2018 |
| :class:`ScoreCAM` | ``p_c(x * mask_k)``, the softmax probability of the masked image | Wang et al. 2020 |
| :class:`LayerCAM` | per pixel: ``relu(d z_c / d A_k[i, j])`` (no spatial pooling) | Jiang et al. 2021 |

``z_c`` is the class logit (or, with ``score="probability"``, the softmax output ``p_c``; see
:mod:`covid_tf.explain.base`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from covid_tf.explain.base import BaseCAM
from covid_tf.explain.cam_methods import CAM_METHODS, method_name
from covid_tf.explain.target import producer, skip_pass_through
from covid_tf.models.lung_attention import image_channels


def find_cam_head(model: keras.Model) -> tuple[str, keras.layers.Dense]:
    """Return ``(feature layer name, output Dense layer)`` of a ``features -> GAP -> Dense`` head.

    Dropout and activation layers in between are allowed. Raises ``ValueError`` for any other head,
    in particular for one with an extra hidden Dense layer (e.g. Dense(128) + Dropout): CAM is only
    defined exactly when the class score is linear in the pooled features.
    """
    layer = skip_pass_through(producer(model.outputs[0]))
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            f"CAM needs a model ending in GlobalAveragePooling2D -> Dense; the output of {model.name!r} "
            f"comes from {type(layer).__name__} {layer.name!r}. Use 'gradcam' instead."
        )
    dense = layer
    layer = skip_pass_through(producer(dense.input))
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
    return producer(layer.input).name, dense


class CAM(BaseCAM):
    """Class Activation Mapping: the weights of the output Dense layer that follows GlobalAveragePooling.

    Needs no gradients. Only defined for a ``features -> GlobalAveragePooling2D -> [Dropout] -> Dense``
    head; any other head raises ``ValueError`` (use :class:`GradCAM`). The target layer is always the
    one feeding the pooling; passing another ``layer_name`` raises ``ValueError``. The Dense bias is
    ignored (it shifts every pixel equally, which the normalisation removes).
    """

    name = "cam"
    uses_gradients = False
    layer_fixed = True

    def __init__(
        self, model: keras.Model, layer_name: str | None = None, batch_size: int = 32, score: str = "logit"
    ) -> None:
        feature_layer, self._dense = find_cam_head(model)
        if layer_name is not None and layer_name != feature_layer:
            raise ValueError(
                f"CAM reads the layer that feeds the pooling ({feature_layer!r}), not {layer_name!r}"
            )
        super().__init__(model, feature_layer, batch_size, score)

    def compute_weights(self, activations, gradients, images, class_indices):
        kernel = tf.cast(tf.convert_to_tensor(self._dense.kernel), tf.float32)  # (K, C)
        return tf.gather(tf.transpose(kernel), class_indices)


class GradCAM(BaseCAM):
    """Grad-CAM (keras-io recipe): each channel weighted by the spatial mean of its logit gradient.

    On a ``GlobalAveragePooling -> Dense`` head this is CAM (the gradient of ``z_c`` with respect to
    ``A_k`` is ``W[k, c] / (h w)`` everywhere).
    """

    name = "gradcam"

    def compute_weights(self, activations, gradients, images, class_indices):
        return tf.reduce_mean(gradients, axis=[1, 2])


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: positive gradients weighted per pixel by ``alpha``.

    Uses the closed form of Chattopadhay et al. (as pytorch-grad-cam does): the score is taken to be
    ``exp(z_c)``, so its second and third derivatives are powers of the logit gradient; with
    ``score="probability"`` the same formula is applied to the probability gradient.
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

    ``map[i, j] = relu(sum_k relu(d z_c / d A_k[i, j]) * A_k[i, j])``. The weights are per pixel
    (N, h, w, K), not per channel: Grad-CAM averages a channel's gradient over space, which loses
    *where* the evidence is when the head gives each position its own weights (a Flatten -> Dense
    head); LayerCAM keeps it. On a GlobalAveragePooling head the gradient of a
    channel is the same at every position, and LayerCAM is Grad-CAM with the negative channels dropped.
    """

    name = "layercam"

    def compute_weights(self, activations, gradients, images, class_indices):
        return tf.nn.relu(gradients)


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., CVPR-W 2020): a channel's weight is the target probability of the image
    masked by that channel's upsampled, min-max normalised activation map.

    ``w[n, k] = p_c(x_n * mask_k)``, the softmax probability (not the logit) of the masked image, as in
    the paper and its official code; the map is ``relu(sum_k w[n, k] A_k)``, upsampled and normalised
    like every other method. ``subtract_baseline=True`` uses the paper's "increase of confidence"
    ``p_c(x_n * mask_k) - p_c(0)``, the score of a black image subtracted (the official code omits it;
    it removes ``p_c(0)`` times the summed activations from the map). Needs no gradients but one forward
    pass per image and channel: inside the explainer's traced graph, the masked images of every image of
    the batch go through the model ``batch_size`` at a time. Channels whose activation map is constant give
    no mask and weight 0. ``score`` is not used.
    """

    name = "scorecam"
    uses_gradients = False

    def __init__(
        self,
        model: keras.Model,
        layer_name: str | None = None,
        batch_size: int = 32,
        score: str = "logit",
        subtract_baseline: bool = False,
    ) -> None:
        super().__init__(model, layer_name, batch_size, score)
        self.subtract_baseline = bool(subtract_baseline)
        self._image_channels = image_channels(model)

    def _perturb(self, images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
        """``images * factors`` on the image channels; a lung-attention model's mask channel is kept as it is
        (masking it would change where the model pools, not what it sees)."""
        channels = self._image_channels
        if channels == images.shape[-1]:
            return images * factors
        masked = images[..., :channels] * factors  # one image and several factors broadcast as well
        kept = images[..., channels:]
        return tf.concat([masked, tf.broadcast_to(kept, tf.concat([tf.shape(masked)[:-1], tf.shape(kept)[-1:]], 0))],
                         axis=-1)

    def _target_probability(self, images: tf.Tensor, class_indices: tf.Tensor) -> tf.Tensor:
        """The probability of each image's own target class (n,)."""
        probabilities = tf.cast(self.model(images, training=False), tf.float32)
        return tf.gather(probabilities, class_indices, axis=1, batch_dims=1)

    def _masked_scores(self, maps: tf.Tensor, images: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
        """Target probabilities (m,) of ``images`` (m, H, W, C) masked by activation maps (m, h, w): each map
        upsampled bilinearly, then scaled to [0, 1]."""
        masks = tf.image.resize(maps[..., tf.newaxis], tf.shape(images)[1:3], method="bilinear")
        masks = masks - tf.reduce_min(masks, axis=[1, 2, 3], keepdims=True)
        masks = masks / (tf.reduce_max(masks, axis=[1, 2, 3], keepdims=True) + 1e-7)
        return self._target_probability(self._perturb(images, masks), classes)

    def compute_weights(self, activations, gradients, images, class_indices):
        spread = tf.reduce_max(activations, axis=[1, 2]) - tf.reduce_min(activations, axis=[1, 2])  # (N, K)
        live = tf.where(spread > 0)  # (L, 2): the (image, channel) pairs that give a mask
        maps = tf.gather_nd(tf.transpose(activations, [0, 3, 1, 2]), live)  # (L, h, w), small
        chunks = (tf.shape(live)[0] + self.batch_size - 1) // self.batch_size

        def score_chunk(chunk: tf.Tensor, scores: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            window = tf.range(chunk * self.batch_size, tf.minimum((chunk + 1) * self.batch_size, tf.shape(live)[0]))
            rows = tf.gather(live[:, 0], window)  # masked images are made chunk by chunk: memory stays bounded
            chosen = self._masked_scores(tf.gather(maps, window), tf.gather(images, rows),
                                         tf.gather(class_indices, rows))
            return chunk + 1, scores.write(chunk, chosen)

        scores = tf.TensorArray(tf.float32, size=chunks, element_shape=tf.TensorShape([None]), infer_shape=False)
        _, scores = tf.while_loop(lambda chunk, _: chunk < chunks, score_chunk, (tf.constant(0), scores))
        weights = tf.scatter_nd(live, scores.concat(), tf.shape(spread, out_type=tf.int64))
        if self.subtract_baseline:
            black = self._target_probability(self._perturb(images, tf.zeros_like(images[..., :1])), class_indices)
            weights -= tf.where(spread > 0, black[:, tf.newaxis], 0.0)
        return weights


# Each row of the method table (covid_tf.explain.cam_methods) with its explainer class, defined above.
METHODS: dict[str, type[BaseCAM]] = {name: globals()[explainer] for name, explainer in CAM_METHODS.items()}


def get_explainer(
    name: str, model: keras.Model, layer_name: str | None = None, batch_size: int = 32, score: str = "logit"
) -> BaseCAM:
    """Return the explainer ``name`` (a method of :data:`~covid_tf.explain.cam_methods.CAM_METHODS`: "gradcam",
    "gradcam++", "scorecam", "cam", "layercam").

    ``layer_name`` defaults to the last layer with a 4-D output (for "cam": the layer feeding the
    GlobalAveragePooling2D). ``score`` is what gradient methods differentiate: "logit" (the pre-softmax
    class score, default) or "probability". Raises ``ValueError`` for an unknown name or a model the
    method cannot explain (e.g. "cam" on a head with a hidden Dense layer).
    """
    return METHODS[method_name(name)](model, layer_name=layer_name, batch_size=batch_size, score=score)
