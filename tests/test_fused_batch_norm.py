"""The fused batch-normalisation kernel trains exactly as Keras 3's own layer, and leaves the model plain Keras."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from covid_tf.models.fused_batch_norm import can_fuse, fuse_batch_norm


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # a bias before BN has no gradient
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3)(x)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="dense_bn")(x))  # 2-D: not fused


def test_fused_training_step_matches_keras_in_outputs_gradients_and_moving_statistics():
    images = tf.random.stateless_normal((5, 12, 12, 3), seed=(1, 2)) * 3.0 + 1.0
    plain, fused = _model(), _model()
    fused.set_weights(plain.get_weights())
    assert fuse_batch_norm(fused) == 1  # the 4-D layer; the one after Dense keeps Keras's path
    assert fuse_batch_norm(fused) == 0  # idempotent
    results = []
    for model in (plain, fused):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss = tf.reduce_sum(outputs**2)
        results.append((outputs, tape.gradient(loss, model.trainable_weights), model.get_weights()))
    (out_a, grads_a, weights_a), (out_b, grads_b, weights_b) = results
    np.testing.assert_allclose(out_a, out_b, rtol=1e-4, atol=1e-5)
    scale = max(float(np.abs(grad).max()) for grad in grads_a)  # some are zero but for rounding (shifts BN removes)
    for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(grad_a, grad_b, rtol=1e-3, atol=1e-5 * scale)
    for weight_a, weight_b in zip(weights_a, weights_b, strict=True):  # moving mean and (biased) variance
        np.testing.assert_allclose(weight_a, weight_b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights_a[3], 0.0)  # the moving mean did move
    np.testing.assert_allclose(plain(images, training=False), fused(images, training=False), rtol=1e-5, atol=1e-6)
    for model in (plain, fused):  # a frozen layer (transfer learning) uses its moving statistics in training too
        model.layers[2].trainable = False
    np.testing.assert_allclose(plain(images, training=True), fused(images, training=True), rtol=1e-5, atol=1e-6)


def test_a_fused_model_saves_as_plain_keras_and_covid_tf_loads_it_fused(tmp_path):
    from covid_tf.models.loading import load_keras_model

    model = _model()
    fuse_batch_norm(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert "call" not in vars(loaded.layers[2])
    assert "call" in vars(load_keras_model(tmp_path / "m.keras").layers[2])


def test_layers_the_kernel_cannot_match_are_left_alone():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    first = keras.layers.BatchNormalization(axis=1)(inputs)
    x = keras.layers.BatchNormalization(renorm=True)(first)
    model = keras.Model(inputs, x)
    assert [can_fuse(layer) for layer in model.layers[1:]] == [False, False]
    assert fuse_batch_norm(model) == 0
