"""The AUC logged while training (history, TensorBoard) is the ROC AUC that metrics.json reports."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from covid_tf.training.fit import auc_metric


def _fixed_set(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(60) % n_classes
    # Scores on a 0.05 grid: ties across classes, which scikit-learn and Keras both count as half.
    logits = rng.integers(0, 20, size=(60, n_classes)) + 6 * np.eye(n_classes)[labels]
    # Rounded to 0.01 (rows then sum to 1 only roughly): each distinct score in its own Keras threshold bin.
    probabilities = np.round(logits / logits.sum(axis=1, keepdims=True), 2)
    if n_classes == 2:
        probabilities[:, 1] = (rng.integers(0, 15, 60) + 6 * labels) / 20
        probabilities[:, 0] = 1.0 - probabilities[:, 1]
    return labels, probabilities.astype("float32")


def _keras_auc(metric: keras.metrics.Metric, labels: np.ndarray, probabilities: np.ndarray) -> float:
    metric.update_state(np.eye(probabilities.shape[1])[labels], probabilities)
    return float(metric.result())


@pytest.mark.parametrize(("class_names", "positive"), [(["COVID", "Normal"], 0), (["Normal", "Viral Pneumonia"], 1)])
def test_binary_training_auc_is_the_positive_class_auc_of_sklearn(class_names, positive) -> None:
    labels, probabilities = _fixed_set(2)
    metric = auc_metric(class_names)
    expected = roc_auc_score(labels == positive, probabilities[:, positive])
    assert metric.name == f"auc_{class_names[positive].replace(' ', '_')}"
    assert _keras_auc(metric, labels, probabilities) == pytest.approx(expected, abs=1e-6)


def test_multiclass_training_auc_is_the_macro_one_vs_rest_auc_and_differs_from_keras_default() -> None:
    labels, probabilities = _fixed_set(3, seed=1)
    # metrics.json's macro AUC: the mean of the one-vs-rest AUCs of the classes.
    expected = np.mean([roc_auc_score(labels == index, probabilities[:, index]) for index in range(3)])
    metric = auc_metric(["COVID", "Normal", "Viral Pneumonia"])
    assert metric.name == "macro_auc"
    assert _keras_auc(metric, labels, probabilities) == pytest.approx(expected, abs=1e-6)
    micro = _keras_auc(keras.metrics.AUC(), labels, probabilities)  # what the history showed before
    assert abs(micro - expected) > 1e-3


def test_history_names_the_positive_class_auc() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=[auc_metric(["COVID", "Normal"])])
    features = np.random.default_rng(0).random((8, 3)).astype("float32")
    targets = np.eye(2)[np.arange(8) % 2]
    history = model.fit(features, targets, validation_data=(features, targets), epochs=1, verbose=0)
    assert {"auc_COVID", "val_auc_COVID"} <= set(history.history)
