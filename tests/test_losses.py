"""Class weights, weighted cross-entropy and focal loss against hand-computed values; optimisers."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from covid_tf.errors import CovidTfError
from covid_tf.training import losses

Y_TRUE = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
Y_PRED = np.array([[0.8, 0.2], [0.3, 0.7]], dtype=np.float32)


def test_complement_frequency_class_weights():
    weights = losses.complement_frequency_class_weights({"Normal": 175, "Abnormal": 161})
    assert {name: round(value, 2) for name, value in weights.items()} == {"Normal": 0.48, "Abnormal": 0.52}
    by_index = losses.complement_frequency_class_weights([175, 161])
    assert list(by_index) == [0, 1]
    assert by_index[0] == pytest.approx(1 - 175 / 336)


def test_balanced_class_weights_match_sklearn_formula():
    weights = losses.balanced_class_weights([175, 161])
    assert weights[0] == pytest.approx(336 / (2 * 175))
    assert weights[1] == pytest.approx(336 / (2 * 161))


@pytest.mark.parametrize("counts", [[10], [10, 0], [10, -1], [10, 2.5], {"a": 3}])
def test_invalid_class_counts(counts):
    with pytest.raises(CovidTfError):
        losses.complement_frequency_class_weights(counts)


def test_weighted_cross_entropy_by_hand():
    loss = losses.weighted_categorical_crossentropy([0.48, 0.52])
    expected = (0.48 * -math.log(0.8) + 0.52 * -math.log(0.7)) / 2
    assert float(loss(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)
    # Equal weights of 1 give the plain cross-entropy.
    plain = keras.losses.CategoricalCrossentropy()(Y_TRUE, Y_PRED)
    unweighted = losses.weighted_categorical_crossentropy([1, 1])
    assert float(unweighted(Y_TRUE, Y_PRED)) == pytest.approx(float(plain))
    with pytest.raises(ValueError):
        losses.weighted_categorical_crossentropy([0.5, -1.0])


def test_weighted_cross_entropy_is_saved_with_the_model(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss=losses.get_loss("weighted", {"COVID": 161, "Normal": 175}))
    model.train_on_batch(np.ones((2, 3), dtype=np.float32), Y_TRUE)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=losses.custom_objects())  # registered where it loads
    assert isinstance(loaded.loss, losses.WeightedCategoricalCrossentropy)
    np.testing.assert_allclose(loaded.loss.class_weights, [1 - 161 / 336, 1 - 175 / 336])
    restored = keras.losses.deserialize(keras.losses.serialize(loaded.loss), custom_objects=losses.custom_objects())
    assert restored.get_config() == loaded.loss.get_config()


def test_focal_loss_by_hand():
    loss = losses.get_loss("focal", gamma=2.0, alpha=0.25)
    assert isinstance(loss, keras.losses.CategoricalFocalCrossentropy)
    expected = (-0.25 * 0.2**2 * math.log(0.8) - 0.25 * 0.3**2 * math.log(0.7)) / 2
    assert float(loss(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)
    # gamma = 0 and alpha = 1 is the plain cross-entropy.
    plain = (-math.log(0.8) - math.log(0.7)) / 2
    assert float(losses.focal_loss(gamma=0.0, alpha=1.0)(Y_TRUE, Y_PRED)) == pytest.approx(plain, rel=1e-5)


def test_get_loss_names():
    assert isinstance(losses.get_loss("ce"), keras.losses.CategoricalCrossentropy)
    weighted = losses.get_loss("weighted", [175, 161])
    assert weighted.class_weights == pytest.approx([1 - 175 / 336, 1 - 161 / 336])
    balanced = losses.get_loss("balanced", [175, 161])
    assert balanced.class_weights == pytest.approx([336 / 350, 336 / 322])
    with pytest.raises(CovidTfError, match="class_counts"):
        losses.get_loss("balanced")
    with pytest.raises(CovidTfError, match="unknown loss"):
        losses.get_loss("dice")


def test_get_optimizer():
    adam = losses.get_optimizer("adam", 1e-4)
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(1e-4)
    sgd = losses.get_optimizer("sgd", 0.01)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == pytest.approx(0.9)
    with pytest.raises(CovidTfError, match="unknown optimizer"):
        losses.get_optimizer("rmsprop", 1e-3)
    with pytest.raises(ValueError, match="learning_rate"):
        losses.get_optimizer("adam", 0.0)
