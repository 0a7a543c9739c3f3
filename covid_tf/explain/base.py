"""The class activation map pipeline that every method shares.

One base class owns the whole pipeline, as in pytorch-grad-cam's ``BaseCAM``:

1. a forward pass through a model that returns the target layer's activations ``A`` (N, h, w, K),
   the class probabilities (N, C) and, for gradient methods, the input of the output Dense layer;
2. when the method needs them, the gradients of the target-class score with respect to ``A``,
   taken with ``tf.GradientTape`` for the whole batch in one pass (the class may differ per image:
   the score of row ``n`` is ``scores[n, class_indices[n]]``);
3. one weight per channel, ``weights`` (N, K): the only step that differs between methods
   (:meth:`BaseCAM.compute_weights`); a method may instead return one weight per activation,
   ``weights`` (N, h, w, K) (LayerCAM), which is multiplied element-wise with ``A``;
4. the weighted sum over channels, a ReLU, a bilinear upsampling to the input size, and a
   min-max normalisation of every map to [0, 1] by ``divide_no_nan``, so an all-zero map stays zeros
   instead of turning into NaN. (pytorch-grad-cam adds an epsilon of 1e-7 to the maximum instead; that
   shrinks maps whose raw values are small, such as the gradients of a saturated probability, and
   breaks the scale invariance that makes Grad-CAM equal CAM.)

**Target score.** Gradient methods differentiate the class logit by default (``score="logit"``), the
output Dense replayed without its softmax, or the softmax probability (``score="probability"``); see
:mod:`covid_tf.explain.target`.

Steps 1-4 run inside one ``tf.function``, traced once per explainer (its signature takes any number of
images of the model's input shape), for methods whose weights are tensor operations (every method of
:mod:`covid_tf.explain.methods`, Score-CAM's masked forward passes included), so a batch of a gradient method
costs about one forward pass plus a backward pass through the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from covid_tf.errors import CovidTfError
from covid_tf.explain.target import check_score, dense_logits, find_logit_layer
from covid_tf.models.registry import last_conv_layer_name


def find_target_layer(model: keras.Model) -> str:
    """The default Grad-CAM target: :func:`covid_tf.models.registry.last_conv_layer_name` (the record's last
    conv layer, else the last 4-D feature map before pooling). Raises ``ValueError`` when there is none."""
    try:
        return last_conv_layer_name(model)
    except CovidTfError as error:
        raise ValueError(str(error)) from None


default_target_layer = find_target_layer  # the name the explainers and notebooks use


def build_activation_model(
    model: keras.Model, layer_name: str, logit_layer: keras.layers.Dense | None = None
) -> keras.Model:
    """Build ``keras.Model(model.inputs, [target layer output, model output])``.

    With ``logit_layer`` (see :func:`find_logit_layer`) the outputs are ``[target layer output,
    logit_layer's input, model output]``, from which :func:`dense_logits` computes the logits.

    Works for flat functional models, Sequential models and models loaded from ``.keras``. A layer
    inside a nested base model cannot be reached (Keras 3 raises "not connected to inputs"): build
    the backbone flat with ``input_tensor=`` instead.
    """
    if len(model.outputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(model.outputs)} outputs; explanations need exactly one"
        )
    try:
        layer = model.get_layer(layer_name)
    except ValueError as error:
        raise ValueError(f"model {model.name!r} has no layer named {layer_name!r}") from error
    output_shape = tuple(layer.output.shape)
    if len(output_shape) != 4:
        raise ValueError(
            f"layer {layer_name!r} has output shape {output_shape}; a class activation map needs a 4-D "
            "(N, H, W, C) feature map"
        )
    try:
        extra = [] if logit_layer is None else [logit_layer.input]
        # One input tensor, not a list of one, so calling the model with a tensor raises no structure warning.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return keras.Model(inputs, [layer.output, *extra, model.outputs[0]], name=f"{model.name}_cam")
    except (ValueError, AttributeError, KeyError) as error:
        raise ValueError(
            f"cannot connect layer {layer_name!r} to the inputs of model {model.name!r} ({error}); "
            "build the backbone flat (input_tensor=) so its layers belong to the outer model"
        ) from error


def as_image_batch(images: np.ndarray | tf.Tensor) -> np.ndarray:
    """Return images as a float32 array (N, H, W, C) in [0, 1]; one image (H, W, C) becomes a batch of 1."""
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be float in [0, 1], got dtype {array.dtype}")
    if array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C) or (H, W, C), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("images is empty")
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(
            f"images must be float in [0, 1], got values in [{array.min()}, {array.max()}] "
            "(divide 8-bit images by 255)"
        )
    return array.astype(np.float32, copy=False)


def resolve_class_indices(
    class_index: int | Sequence[int] | np.ndarray | None, count: int, num_classes: int
) -> np.ndarray:
    """Return an int32 array (N,) of requested classes; -1 means "the predicted class"."""
    if class_index is None:
        return np.full(count, -1, dtype=np.int32)
    indices = np.asarray(class_index)
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"class_index must be an int or a sequence of ints, got {class_index!r}")
    if indices.ndim == 0:
        indices = np.full(count, int(indices), dtype=np.int32)
    if indices.shape != (count,):
        raise ValueError(
            f"class_index must be one int or {count} ints (one per image), got shape {indices.shape}"
        )
    if indices.min() < 0 or indices.max() >= num_classes:
        raise ValueError(f"class_index must lie in [0, {num_classes}), got {indices.tolist()}")
    return indices.astype(np.int32)


class BaseCAM:
    """A class activation map method; subclasses only say how channel weights are computed.

    Args:
        model: a Keras model taking float32 images in [0, 1] (N, H, W, C) and returning class
            probabilities (N, C).
        layer_name: the target layer (a 4-D output); default :func:`default_target_layer`.
        batch_size: images per forward/backward pass (for Score-CAM: masked images per pass).
        score: what gradient methods differentiate: ``"logit"`` (default, the pre-softmax class
            score) or ``"probability"`` (the softmax output); see the module docstring.

    Call :meth:`explain` (or the instance itself) with a batch of images.
    """

    #: The name used by :func:`covid_tf.explain.get_explainer`.
    name = "base"
    #: Whether :meth:`compute_weights` needs the gradients of the target score.
    uses_gradients = True
    #: Whether :meth:`compute_weights` is made of tensor operations that can run inside the graph.
    weights_in_graph = True
    #: Whether the method reads one layer of its own (CAM: the layer feeding the pooling): no ``layer_name`` to choose.
    layer_fixed = False

    def __init__(
        self, model: keras.Model, layer_name: str | None = None, batch_size: int = 32, score: str = "logit"
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.score = check_score(score)
        self.layer_name = layer_name if layer_name is not None else default_target_layer(model)
        # Only gradient methods need the logits; the others read probabilities (Score-CAM) or weights.
        self._logit_layer = find_logit_layer(model) if self.uses_gradients and score == "logit" else None
        self.activation_model = build_activation_model(model, self.layer_name, self._logit_layer)
        self.batch_size = int(batch_size)
        self.num_classes = int(self.activation_model.outputs[-1].shape[-1])
        # Any number of images of the model's input shape: each graph is traced once, whatever the batch sizes.
        self.input_shape = (None, *self.activation_model.inputs[0].shape[1:])
        signature = (tf.TensorSpec(self.input_shape, tf.float32), tf.TensorSpec((None,), tf.int32))
        self._explain_graph = tf.function(self._explain_batch, input_signature=signature)
        self._forward_graph = tf.function(self._forward_batch, input_signature=signature)
        self._combine_graph = tf.function(self._combine, reduce_retracing=True)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model.name!r}, layer_name={self.layer_name!r}, "
            f"score={self.score!r})"
        )

    # The one method a subclass writes.
    def compute_weights(
        self, activations: tf.Tensor, gradients: tf.Tensor | None, images: tf.Tensor, class_indices: tf.Tensor
    ) -> tf.Tensor:
        """Return weights from activations (N, h, w, K) and gradients of the same shape.

        Either channel weights (N, K), one per feature map, or per-pixel weights (N, h, w, K) of the
        activations' shape; :meth:`_combine` sums ``weights * activations`` over the channels either way.
        """
        raise NotImplementedError

    # The shared pipeline.
    def _forward_batch(
        self, images: tf.Tensor, requested: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor, tf.Tensor]:
        """Forward pass (and gradients when needed): activations, gradients, probabilities, classes."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            # Watching the input records every operation after it, also in a model whose weights are
            # all frozen (watching trainable variables would miss those).
            tape.watch(images)
            outputs = self.activation_model(images, training=False)
            activations, probabilities = outputs[0], outputs[-1]
            predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            class_indices = tf.where(requested < 0, predicted, requested)
            # The logits are the output Dense replayed without its softmax (see the module docstring).
            targets = probabilities if self._logit_layer is None else dense_logits(self._logit_layer, outputs[1])
            # Row n's score is the logit (or probability) of its own target class.
            scores = tf.gather(targets, class_indices, axis=1, batch_dims=1)
        gradients = tape.gradient(scores, activations) if self.uses_gradients else None
        if gradients is not None:
            gradients = tf.cast(gradients, tf.float32)
        activations = tf.cast(activations, tf.float32)
        return activations, gradients, tf.cast(probabilities, tf.float32), class_indices

    def _combine(self, activations: tf.Tensor, weights: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
        """Weighted sum over channels, ReLU, upsampling to the input size, normalisation to [0, 1].

        ``weights`` is (N, K), one weight per channel, or (N, h, w, K), one weight per activation.
        """
        weights = tf.cast(weights, tf.float32)
        if weights.shape.rank == 4:
            cam = tf.reduce_sum(activations * weights, axis=-1)
        elif weights.shape.rank == 2:
            cam = tf.einsum("nhwk,nk->nhw", activations, weights)
        else:
            raise ValueError(
                f"compute_weights must return (N, K) or (N, h, w, K) weights, got shape {weights.shape}"
            )
        cam = tf.nn.relu(cam)
        cam = tf.image.resize(cam[..., tf.newaxis], tf.shape(images)[1:3], method="bilinear")[..., 0]
        cam = cam - tf.reduce_min(cam, axis=[1, 2], keepdims=True)
        return tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=[1, 2], keepdims=True))

    def _explain_batch(
        self, images: tf.Tensor, requested: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        activations, gradients, probabilities, class_indices = self._forward_batch(images, requested)
        weights = self.compute_weights(activations, gradients, images, class_indices)
        return self._combine(activations, weights, images), class_indices, probabilities

    def explain(
        self, images: np.ndarray | tf.Tensor, class_index: int | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Explain a batch of images.

        Args:
            images: float32 (N, H, W, C) in [0, 1], or one image (H, W, C).
            class_index: the class to explain: None (the predicted class of each image), one int for
                all images, or one int per image.

        Returns:
            ``(heatmaps, class_indices, probabilities)``: heatmaps float32 (N, H, W) in [0, 1], the
            explained class of each image int64 (N,), and the model's probabilities float32 (N, C).
        """
        batch = as_image_batch(images)
        if not tf.TensorShape(self.input_shape).is_compatible_with(batch.shape):
            raise ValueError(f"images of shape {batch.shape} do not fit the input {self.input_shape} of model "
                             f"{self.model.name!r}")
        requested = resolve_class_indices(class_index, len(batch), self.num_classes)
        heatmaps, classes, probabilities = [], [], []
        for start in range(0, len(batch), self.batch_size):
            chunk = tf.constant(batch[start : start + self.batch_size])
            wanted = tf.constant(requested[start : start + self.batch_size])
            if self.weights_in_graph:
                heatmap, chunk_classes, chunk_probabilities = self._explain_graph(chunk, wanted)
            else:
                activations, gradients, chunk_probabilities, chunk_classes = self._forward_graph(
                    chunk, wanted
                )
                weights = self.compute_weights(activations, gradients, chunk, chunk_classes)
                heatmap = self._combine_graph(activations, tf.convert_to_tensor(weights, tf.float32), chunk)
            heatmaps.append(heatmap.numpy())
            classes.append(chunk_classes.numpy())
            probabilities.append(chunk_probabilities.numpy())
        return (
            np.concatenate(heatmaps).astype(np.float32),
            np.concatenate(classes).astype(np.int64),
            np.concatenate(probabilities).astype(np.float32),
        )

    def __call__(
        self, images: np.ndarray | tf.Tensor, class_index: int | Sequence[int] | None = None
    ) -> np.ndarray:
        """Return only the heatmaps (N, H, W) of :meth:`explain`."""
        return self.explain(images, class_index)[0]
