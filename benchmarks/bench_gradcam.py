"""Benchmark: batched Grad-CAM against one image at a time and against a plain forward pass.

Times, on a small CNN at 128 px with 64 images:

- **batched**: ``covid_tf.explain.GradCAM`` on the whole batch (one ``tf.function`` forward +
  backward pass, maps upsampled and normalised);
- **one at a time**: the keras-io recipe (``make_gradcam_heatmap``): for each image a fresh grad
  model and a fresh ``GradientTape``, no ``tf.function``; also the same loop with the grad model
  built once, to separate the cost of rebuilding it;
- **forward**: the model alone on the same batch, in a ``tf.function``.

Targets: batched >= 5x faster than one at a time; batched Grad-CAM <= 3x a forward pass.

Usage: ``python benchmarks/bench_gradcam.py [--images 64] [--size 128] [--repeats 9] [--json PATH]``
"""

from __future__ import annotations

import argparse
import warnings

from common import median_seconds, quiet_tensorflow, table, target, write_result

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from covid_tf.explain import GradCAM  # noqa: E402

# The keras-io recipe calls a one-input functional model with a tensor instead of a list.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")


def small_cnn(size: int) -> keras.Model:
    """A small functional CNN for grayscale images: four conv blocks, GAP, softmax over 2 classes."""
    inputs = keras.Input((size, size, 1))
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="bench_cnn")


def make_gradcam_heatmap(img_array, model, last_conv_layer_name, pred_index=None):
    """The keras-io example, unchanged apart from ``model.outputs[0]`` (Keras 3)."""
    grad_model = keras.models.Model(
        model.inputs, [model.get_layer(last_conv_layer_name).output, model.outputs[0]]
    )
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        if pred_index is None:
            pred_index = tf.argmax(preds[0])
        class_channel = preds[:, pred_index]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    last_conv_layer_output = last_conv_layer_output[0]
    heatmap = last_conv_layer_output @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy()


def gradcam_with_grad_model(img_array, grad_model):
    """The same recipe with the grad model built once (still eager, one tape per image)."""
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        class_channel = preds[:, tf.argmax(preds[0])]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
    return (tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = small_cnn(args.size)
    images = (
        np.random.default_rng(0).uniform(0.0, 1.0, (args.images, args.size, args.size, 1)).astype(np.float32)
    )
    batch = tf.constant(images)

    explainer = GradCAM(model, layer_name="last_conv", batch_size=args.images)
    forward = tf.function(lambda x: model(x, training=False))
    grad_model = keras.Model(model.inputs, [model.get_layer("last_conv").output, model.outputs[0]])

    batched = median_seconds(lambda: explainer.explain(images), args.repeats)
    plain = median_seconds(lambda: forward(batch).numpy(), args.repeats)
    loop_repeats = max(1, args.repeats // 2)
    one_by_one = median_seconds(
        lambda: [
            make_gradcam_heatmap(images[index : index + 1], model, "last_conv")
            for index in range(len(images))
        ],
        loop_repeats,
    )
    one_by_one_reused = median_seconds(
        lambda: [
            gradcam_with_grad_model(images[index : index + 1], grad_model) for index in range(len(images))
        ],
        loop_repeats,
    )

    devices = sorted({device.device_type for device in tf.config.list_logical_devices()})
    print(
        f"{args.images} images of {args.size} px, {model.count_params():,} parameters, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices {devices}"
    )
    print(f"forward pass (tf.function)           {1000 * plain:9.1f} ms")
    print(f"batched Grad-CAM (covid_tf.explain)  {1000 * batched:9.1f} ms")
    print(f"keras-io, one image at a time        {1000 * one_by_one:9.1f} ms")
    print(f"keras-io loop, grad model built once {1000 * one_by_one_reused:9.1f} ms")
    print(f"speed-up of batched over keras-io loop:            {one_by_one / batched:6.1f}x  (target >= 5x)")
    print(f"speed-up of batched over loop with reused model:   {one_by_one_reused / batched:6.1f}x")
    print(f"batched Grad-CAM / forward pass:                   {batched / plain:6.2f}x  (target <= 3x)")
    result = {
        "title": "Grad-CAM: batched against one image at a time",
        "summary": (
            f"{args.images} images of {args.size} px, a small functional CNN ({model.count_params():,} parameters), "
            f"devices {', '.join(devices)}; median of {args.repeats} runs (the one-at-a-time loops "
            f"{loop_repeats}), after one warm-up run each."
        ),
        "targets": [
            target("keras-io loop / batched Grad-CAM", one_by_one / batched, 5.0, ">="),
            target("batched Grad-CAM / forward pass", batched / plain, 3.0, "<="),
        ],
        "tables": [table("Wall time for the whole batch", ["method", "ms", "ms per image"], [
            [name, f"{1000 * seconds:.1f}", f"{1000 * seconds / args.images:.2f}"]
            for name, seconds in (
                ("forward pass (tf.function)", plain),
                ("batched Grad-CAM (covid_tf.explain.GradCAM)", batched),
                ("keras-io recipe, one image at a time", one_by_one),
                ("keras-io loop, grad model built once", one_by_one_reused),
            )
        ])],
        "notes": [f"Batched over the loop with the grad model built once: {one_by_one_reused / batched:.1f}x."],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
