"""Benchmark: batched Score-CAM against one image at a time, and the check that the numbers are the same.

Times, on the small CNN of ``bench_gradcam.py`` (its 128-channel last conv layer) with N images:

- **batched**: ``covid_tf.explain.ScoreCAM`` on the whole batch: one traced graph per explainer, the
  masked images of every image and channel going through the model ``--batch-size`` at a time;
- **one image at a time, one channel at a time**: Score-CAM as Wang et al.'s official code computes it
  (the reference of ``tests/test_explain.py``): per image its activation maps, then for each channel one
  eager forward pass of the image masked by the channel's upsampled, min-max scaled map;
- **one image at a time, its channels batched**: what ``ScoreCAM`` did before it moved into the traced
  graph (and what pytorch-grad-cam's ``ScoreCAM`` does): per image, its masked images through a
  ``tf.function`` of the model ``--batch-size`` at a time, weights gathered in NumPy.

Each is timed for every N of ``--images``; the heatmaps of the batched explainer are compared with both
references (largest absolute difference), and the tracing count of its graph is reported.

Target: batched >= 10x the official one-channel-at-a-time loop at 16 images and more.

Usage: ``python benchmarks/bench_scorecam.py [--images 16 32] [--size 64] [--repeats 3] [--json PATH]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import quiet_tensorflow, table, target, write_result

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_gradcam import small_cnn  # noqa: E402

from covid_tf.explain.methods import ScoreCAM  # noqa: E402

LAYER = "last_conv"


def normalised(saliency: np.ndarray) -> np.ndarray:
    """ReLU, then min-max scaled to [0, 1] (an all-zero map stays zeros) as the explainer does."""
    saliency = np.maximum(saliency, 0.0)
    return (saliency - saliency.min()) / max(saliency.max() - saliency.min(), 1e-12)


def official_loop(model: keras.Model, features: keras.Model, image: np.ndarray, class_index: int) -> np.ndarray:
    """Score-CAM of one image as the official code writes it: one masked forward pass per channel."""
    maps = features(image[np.newaxis]).numpy()[0]
    size = image.shape[:2]
    weights = np.zeros(maps.shape[-1], np.float32)
    for channel in range(maps.shape[-1]):
        upsampled = tf.image.resize(maps[np.newaxis, :, :, channel, np.newaxis], size).numpy()[0, :, :, 0]
        if upsampled.max() == upsampled.min():
            continue
        mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min())
        weights[channel] = float(model(image[np.newaxis] * mask[np.newaxis, :, :, np.newaxis])[0, class_index])
    return heatmap_of(maps, weights, size)


def heatmap_of(maps: np.ndarray, weights: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``relu(sum_k w_k A_k)`` upsampled bilinearly to ``size`` and min-max scaled."""
    cam = np.maximum(maps @ weights, 0.0)
    return normalised(tf.image.resize(cam[np.newaxis, :, :, np.newaxis], size).numpy()[0, :, :, 0])


def channels_batched(predict, features: keras.Model, image: np.ndarray, class_index: int,
                     batch_size: int) -> np.ndarray:
    """Score-CAM of one image, its masked images ``batch_size`` at a time through a ``tf.function``."""
    maps = features(image[np.newaxis]).numpy()[0]
    size = image.shape[:2]
    weights = np.zeros(maps.shape[-1], np.float32)
    live = np.flatnonzero(maps.max(axis=(0, 1)) > maps.min(axis=(0, 1)))
    for start in range(0, len(live), batch_size):
        chosen = live[start : start + batch_size]
        masks = tf.image.resize(np.transpose(maps[:, :, chosen], (2, 0, 1))[..., np.newaxis], size)
        masks -= tf.reduce_min(masks, axis=[1, 2, 3], keepdims=True)
        masks /= tf.reduce_max(masks, axis=[1, 2, 3], keepdims=True) + 1e-7
        weights[chosen] = predict(image[np.newaxis] * masks).numpy()[:, class_index]
    return heatmap_of(maps, weights, size)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(model: keras.Model, count: int, size: int, batch_size: int, repeats: int) -> dict:
    """Times (s) and largest differences for ``count`` images. The batched explainer and the per-image loop are
    timed in turns, ``repeats`` times each, and the batched one again right after the official loop (one run):
    the machine's load then weighs on all of them alike."""
    images = np.random.default_rng(count).uniform(0.0, 1.0, (count, size, size, 1)).astype(np.float32)
    explainer = ScoreCAM(model, layer_name=LAYER, batch_size=batch_size)
    features = keras.Model(model.inputs[0], model.get_layer(LAYER).output)
    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    heatmaps, classes, _ = explainer.explain(images)  # the warm-up traces the graph
    references = {}

    def official() -> None:
        references["official"] = [official_loop(model, features, image, int(k)) for image, k in zip(images, classes)]

    def per_image() -> None:
        references["per image"] = [channels_batched(predict, features, image, int(k), batch_size)
                                   for image, k in zip(images, classes)]

    per_image()  # its warm-up
    batched, per_image_times = [], []
    for _ in range(repeats):
        batched.append(timed(lambda: explainer.explain(images)))
        per_image_times.append(timed(per_image))
    official_time = timed(official)
    batched.append(timed(lambda: explainer.explain(images)))
    return {
        "count": count, "batched": statistics.median(batched), "batched_range": (min(batched), max(batched)),
        "official": official_time, "per image": statistics.median(per_image_times),
        "official_diff": float(np.abs(heatmaps - np.stack(references["official"])).max()),
        "per_image_diff": float(np.abs(heatmaps - np.stack(references["per image"])).max()),
        "traces": explainer._explain_graph.experimental_get_tracing_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="masked images per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = small_cnn(args.size)
    results = [measure(model, count, args.size, args.batch_size, args.repeats) for count in args.images]
    devices = sorted({device.device_type for device in tf.config.list_logical_devices()})
    rows = []
    for item in results:
        speedup = item["official"] / item["batched"]
        print(f"{item['count']} images: batched {item['batched']:.2f} s, official loop {item['official']:.2f} s "
              f"({speedup:.1f}x), one image at a time with its channels batched {item['per image']:.2f} s "
              f"({item['per image'] / item['batched']:.2f}x); largest difference {item['official_diff']:.1e} / "
              f"{item['per_image_diff']:.1e}; traced {item['traces']}x")
        low, high = item["batched_range"]
        rows.append([item["count"], f"{item['batched']:.2f} ({low:.2f}-{high:.2f})", f"{item['official']:.2f}",
                     f"{speedup:.1f}x",
                     f"{item['per image']:.2f}", f"{item['per image'] / item['batched']:.2f}x",
                     f"{item['official_diff']:.1e}", f"{item['per_image_diff']:.1e}", item["traces"]])
    result = {
        "title": "Score-CAM: batched against one image at a time",
        "summary": (
            f"{args.size} px images, the small CNN of bench_gradcam ({model.count_params():,} parameters, 128 "
            f"channels on {LAYER!r}), {args.batch_size} masked images per pass, devices {', '.join(devices)}; "
            f"batched: median of {args.repeats + 1} runs after a warm-up, timed in turns with the per-image loop "
            f"(median of {args.repeats}) and once right after the official loop (one run)."
        ),
        "targets": [target(f"official loop / batched Score-CAM, {item['count']} images",
                           item["official"] / item["batched"], 10.0, ">=") for item in results],
        "tables": [table("Wall time for the whole batch (s) and the largest difference of the heatmaps", [
            "images", "batched", "official loop", "speed-up", "per image, channels batched", "speed-up",
            "max diff official", "max diff per image", "traces"], rows)],
        "notes": ["The batched explainer's graph is traced once for every batch size (its input signature "
                  "takes any number of images)."],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
