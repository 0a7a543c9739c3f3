"""build_training_state: the optimizer's and metrics' variables exist before the first training step is traced."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from covid_tf.training.fit import auc_metric, build_training_state


class CountingModel(keras.Model):
    """Counts the traces of its training step (Python runs ``train_step`` once per trace)."""

    traces = 0

    def train_step(self, data):
        type(self).traces += 1
        return super().train_step(data)


def _fit(build_first: bool) -> tuple[int, list[np.ndarray]]:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = CountingModel(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="categorical_crossentropy",
                  metrics=["accuracy", auc_metric(["COVID", "Normal"])])
    features = np.random.default_rng(0).random((10, 3)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((features, np.eye(2, dtype="float32")[np.arange(10) % 2])).batch(4)
    if build_first:
        build_training_state(model, train.element_spec)
        assert model.optimizer.built
    CountingModel.traces = 0
    model.fit(train, epochs=2, verbose=0, shuffle=False)  # as training.fit: the tf.data pipeline shuffles
    return CountingModel.traces, model.get_weights()


def test_the_training_step_is_traced_once_and_training_is_unchanged() -> None:
    traces, weights = _fit(build_first=True)
    assert traces == 1
    _, lazily_built = _fit(build_first=False)
    for built, lazy in zip(weights, lazily_built):
        np.testing.assert_array_equal(built, lazy)
