"""Benchmark: training and prediction throughput (images per second) of every architecture.

For each model of ``covid_tf.models.build_model`` (``weights=None``, grayscale) and each image
size, one compiled train step (``train_on_batch``, Adam, cross-entropy) and one compiled
prediction (``predict_on_batch``) run on a batch of random images already in memory: one
untimed warm-up call (tracing), then timed calls until ``--min-seconds`` have passed (at least
``--min-steps``, at most ``--max-steps``); the median step time gives images per second.

``--mixed-precision`` sets ``keras.mixed_precision.set_global_policy("mixed_float16")`` before the
models are built (worth it on a GPU with tensor cores; on a CPU float16 is emulated and slow).
Every run also builds each model under ``mixed_float16`` and checks that the softmax output is
float32 (a float16 softmax loses precision near 0 and 1 and makes the loss unstable).

Usage: ``python benchmarks/bench_throughput.py [--models ...] [--sizes 128 224] [--mixed-precision]``
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

from covid_tf.models.architectures import model_names  # noqa: E402
from covid_tf.models.registry import build_model  # noqa: E402


def step_seconds(function, min_seconds: float, min_steps: int, max_steps: int) -> tuple[float, int]:
    """Median seconds of ``function()`` after one warm-up call, and the number of timed calls."""
    function()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_steps and (len(times) < min_steps or time.perf_counter() - started < min_seconds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def output_dtypes_under_mixed_precision(names, size: int) -> dict[str, str]:
    """The dtype of each model's output when built under ``mixed_float16`` (policy restored after)."""
    previous = keras.mixed_precision.global_policy()
    try:
        dtypes = {}
        for name in names:
            keras.backend.clear_session()  # clears the global policy too: set it after
            keras.mixed_precision.set_global_policy("mixed_float16")
            dtypes[name] = str(build_model(name, image_size=size).outputs[0].dtype)
        return dtypes
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(model_names()), choices=model_names())
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--min-steps", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--mixed-precision", action="store_true", help="train and predict under mixed_float16")
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    mixed_dtypes = output_dtypes_under_mixed_precision(args.models, min(args.sizes))
    policy = "mixed_float16" if args.mixed_precision else "float32"
    devices = ", ".join(sorted({device.device_type for device in tf.config.list_logical_devices()}))
    rng = np.random.default_rng(0)
    rows = []
    for name in args.models:
        for size in args.sizes:
            keras.backend.clear_session()  # also resets the global dtype policy
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            model = build_model(name, image_size=size)
            model.compile(optimizer="adam", loss="categorical_crossentropy")
            images = rng.uniform(0.0, 1.0, (args.batch_size, size, size, 1)).astype("float32")
            labels = np.eye(2, dtype="float32")[rng.integers(0, 2, args.batch_size)]
            predict, predict_steps = step_seconds(
                lambda model=model, images=images: model.predict_on_batch(images),
                args.min_seconds, args.min_steps, args.max_steps,
            )
            train, train_steps = step_seconds(
                lambda model=model, images=images, labels=labels: model.train_on_batch(images, labels),
                args.min_seconds, args.min_steps, args.max_steps,
            )
            row = [
                name, size, f"{model.count_params():,}", f"{args.batch_size / train:.1f}",
                f"{args.batch_size / predict:.1f}", f"{train_steps} / {predict_steps}",
            ]
            rows.append(row)
            print("  ".join(str(cell) for cell in row), flush=True)
            del model

    float32_outputs = all(dtype == "float32" for dtype in mixed_dtypes.values())
    result = {
        "title": "Throughput per architecture",
        "summary": (
            f"Random images in memory, batch {args.batch_size}, grayscale, weights=None, policy {policy}, "
            f"devices: {devices}. Median step time after one warm-up step."
        ),
        "targets": [target("models whose output is float32 under mixed_float16", sum(
            dtype == "float32" for dtype in mixed_dtypes.values()), len(mixed_dtypes), ">=", unit="")],
        "tables": [table(
            "Images per second",
            ["model", "size (px)", "parameters", "train images/s", "predict images/s", "timed steps train / predict"],
            rows,
        )],
        "notes": [
            "Output dtype of each model built under mixed_float16: "
            + ", ".join(f"{name} {dtype}" for name, dtype in mixed_dtypes.items())
            + (" (all float32: the softmax stays in full precision)." if float32_outputs
               else ". A float16 softmax saturates near 0 and 1 (probabilities, log-loss and AUC lose precision); "
               "the output layer needs dtype='float32' (as in the Keras mixed precision guide)."),
        ],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
