"""PreciseBatchNorm: BatchNormalization statistics recomputed on training images, before validation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from covid_tf.training.callbacks import PreciseBatchNorm, trainable_batch_norm_layers


def _bn_model(momentum: float = 0.99) -> keras.Model:
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def _images(n: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4, 4, 2)) * [1.0, 3.0] + [5.0, -2.0]).astype("float32")


def test_recompute_gives_the_mean_of_the_batch_statistics_and_keeps_the_momentum():
    model = _bn_model()
    images = _images()
    callback = PreciseBatchNorm(tf.data.Dataset.from_tensor_slices(images).batch(8), max_batches=10)
    callback.set_model(model)
    callback.recompute()
    bn = model.get_layer("bn")
    batches = images.reshape(3, 8 * 4 * 4, 2)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-4)
    assert bn.momentum == 0.99
    # The default moving averages would still be near their initial 0 and 1.
    assert abs(bn.moving_mean.numpy()[0] - 5.0) < 0.5


def test_max_batches_limits_the_images_read():
    model = _bn_model()
    images = np.concatenate([_images(8), _images(8) + 100.0])
    callback = PreciseBatchNorm(tf.data.Dataset.from_tensor_slices(images).batch(8), max_batches=1)
    callback.set_model(model)
    callback.recompute()
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), images[:8].mean(axis=(0, 1, 2)),
                               rtol=1e-5)


def test_frozen_batch_norm_is_left_alone():
    model = _bn_model()
    model.get_layer("bn").trainable = False
    assert trainable_batch_norm_layers(model) == []
    outer = keras.Sequential([keras.Input((4, 4, 2)), _bn_model()])
    assert [layer.name for layer in trainable_batch_norm_layers(outer)] == ["bn"]  # nested models are searched
    callback = PreciseBatchNorm(tf.data.Dataset.from_tensor_slices(_images()).batch(8), max_batches=10)
    callback.set_model(model)
    callback.recompute()
    np.testing.assert_array_equal(model.get_layer("bn").moving_mean.numpy(), [0.0, 0.0])


class _Recorder(keras.callbacks.Callback):
    """Records the BN moving mean that each validation run sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def on_test_begin(self, logs=None):
        self.seen.append(self.model.get_layer("bn").moving_mean.numpy().copy())


@pytest.mark.parametrize("validating", [True, False])
def test_fit_recomputes_once_per_epoch_before_validation(validating):
    model = _bn_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    images = _images(32)
    targets = np.eye(2, dtype="float32")[np.arange(32) % 2]
    train = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    callback = PreciseBatchNorm(train, max_batches=4)
    recorder = _Recorder()
    model.fit(train, validation_data=train if validating else None, epochs=3, verbose=0, shuffle=False,
              callbacks=[callback, recorder])
    assert callback.updates == 3
    if validating:
        assert len(recorder.seen) == 3
        for seen in recorder.seen:  # momentum 0.99 alone would leave the mean near 0 after 12 steps
            np.testing.assert_allclose(seen, images.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(model.get_layer("bn").moving_mean.numpy(), images.mean(axis=(0, 1, 2)), rtol=1e-4)


def test_forward_pass_is_traced_once_for_every_batch_size():
    model = _bn_model()
    callback = PreciseBatchNorm(tf.data.Dataset.from_tensor_slices(_images(20)).batch(8), max_batches=10)
    callback.set_model(model)
    callback.recompute()  # batches of 8, 8 and 4 images
    callback.recompute()
    assert callback._forward.experimental_get_tracing_count() == 1
