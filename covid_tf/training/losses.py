"""Class weights, weighted cross-entropy, focal loss and optimisers.

Labels are one-hot and models output softmax probabilities (``from_logits=False``). Class counts
are given in class order, either as a sequence ``[n_0, n_1, ...]`` or a mapping ``{class: n}``
(its insertion order is the class order); weights come back as ``{key: weight}`` with the same keys
(indices for a sequence), ready for ``model.fit(class_weight=...)`` when the keys are indices.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import keras
import numpy as np
from keras import ops
from sklearn.utils.class_weight import compute_class_weight

from covid_tf.errors import CovidTfError

LOSS_NAMES = ("ce", "weighted", "balanced", "focal")
OPTIMIZER_NAMES = ("adam", "sgd")
SGD_MOMENTUM = 0.9

ClassCounts = Sequence[int] | Mapping[Hashable, int]


def _keys_and_counts(counts: ClassCounts) -> tuple[list[Hashable], np.ndarray]:
    if isinstance(counts, Mapping):
        keys = list(counts)
        values = [counts[key] for key in keys]
    else:
        values = list(counts)
        keys = list(range(len(values)))
    array = np.asarray(values)
    if array.ndim != 1 or len(array) < 2:
        raise CovidTfError(f"class counts need one count per class, at least two classes; got {counts!r}")
    if not np.issubdtype(array.dtype, np.number) or np.any(array != np.round(array)) or np.any(array <= 0):
        raise CovidTfError(f"every class needs a positive integer count of training images; got {counts!r}")
    return keys, array.astype("int64")


def complement_frequency_class_weights(counts: ClassCounts) -> dict[Hashable, float]:
    """``1 - n_class / n_total`` per class (175 normal / 161 abnormal -> 0.48 / 0.52): ``--loss weighted``."""
    keys, array = _keys_and_counts(counts)
    weights = 1.0 - array / array.sum()
    return {key: float(weight) for key, weight in zip(keys, weights)}


def balanced_class_weights(counts: ClassCounts) -> dict[Hashable, float]:
    """scikit-learn's ``compute_class_weight("balanced")``: ``n_total / (n_classes * n_class)``."""
    keys, array = _keys_and_counts(counts)
    classes = np.arange(len(array))
    labels = np.repeat(classes, array)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {key: float(weight) for key, weight in zip(keys, weights)}


class WeightedCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of one-hot labels where each sample counts with the weight of its true class.

    The batch loss is ``sum_i w[y_i] * CE_i / batch_size`` (Keras' ``sum_over_batch_size``), not
    PyTorch's ``sum_i w[y_i] * CE_i / sum_i w[y_i]``. Saved with the model (``get_config``).
    """

    def __init__(
        self,
        class_weights: Sequence[float],
        label_smoothing: float = 0.0,
        name: str = "weighted_categorical_crossentropy",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(weight) for weight in class_weights]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        weights = ops.convert_to_tensor(self.class_weights, dtype=y_pred.dtype)
        sample_weights = ops.sum(y_true * weights, axis=-1)
        cross_entropy = keras.losses.categorical_crossentropy(
            y_true, y_pred, from_logits=False, label_smoothing=self.label_smoothing
        )
        return sample_weights * cross_entropy

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"class_weights": self.class_weights, "label_smoothing": self.label_smoothing})
        return config


def weighted_categorical_crossentropy(
    weights: Sequence[float] | Mapping[Hashable, float], label_smoothing: float = 0.0
) -> WeightedCategoricalCrossentropy:
    """A serialisable weighted cross-entropy; ``weights`` in class order (a mapping: its value order)."""
    values = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if len(values) < 2 or any(not np.isfinite(value) or value < 0 for value in values):
        raise ValueError(f"class weights must be at least two finite non-negative numbers, got {weights!r}")
    return WeightedCategoricalCrossentropy(values, label_smoothing=label_smoothing)


def focal_loss(gamma: float = 2.0, alpha: float | Sequence[float] = 0.25) -> keras.losses.Loss:
    """Focal loss (Lin et al. 2017): ``-sum_c y_c * alpha_c * (1 - p_c) ** gamma * log(p_c)``."""
    alpha_value = [float(value) for value in alpha] if isinstance(alpha, Sequence) else float(alpha)
    return keras.losses.CategoricalFocalCrossentropy(alpha=alpha_value, gamma=float(gamma))


def get_loss(
    name: str,
    class_counts: ClassCounts | None = None,
    *,
    gamma: float = 2.0,
    alpha: float | Sequence[float] = 0.25,
    label_smoothing: float = 0.0,
) -> keras.losses.Loss:
    """Return loss ``name``: ``ce``, ``weighted`` (seed 000's weights), ``balanced`` (sklearn) or ``focal``.

    ``weighted`` and ``balanced`` need ``class_counts`` (training images per class, in class order).
    """
    if name not in LOSS_NAMES:
        raise CovidTfError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    if name == "ce":
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    if name == "focal":
        return focal_loss(gamma=gamma, alpha=alpha)
    if class_counts is None:
        raise CovidTfError(f"loss {name!r} needs the number of training images per class (class_counts)")
    weigh = complement_frequency_class_weights if name == "weighted" else balanced_class_weights
    weights = weigh(class_counts)
    return weighted_categorical_crossentropy(weights, label_smoothing=label_smoothing)


def get_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """``adam`` or ``sgd`` (momentum 0.9, as seed 004) at ``learning_rate``."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=SGD_MOMENTUM)
    raise CovidTfError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")


def custom_objects() -> dict[str, type]:
    """The loss classes of covid_tf, to pass as ``custom_objects`` where a compiled model with such a loss is
    loaded (``keras.models.load_model(path, custom_objects=custom_objects())``). Importing this module registers
    nothing; the toolkit's own model files are saved without their loss and need none of this."""
    return {"WeightedCategoricalCrossentropy": WeightedCategoricalCrossentropy}
