"""Benchmark: input pipeline overhead of one training epoch, PNGs on disk against tensors in memory.

One shared baseline CNN (``build_model("baseline", image_size=128)``) is trained one epoch at a
time on the same synthetic PNGs fed four ways (make_dataset and tensors alternating which goes
first, so that any load from other processes falls on both alike):

- **make_dataset**: ``covid_tf.data.pipeline.make_dataset`` with its defaults (decode with PIL in
  parallel, ``cache="auto"``, shuffle, batch, augmentation, prefetch). Epoch 1 decodes and fills
  the cache; later epochs read the cache.
- **tensors**: the images decoded beforehand, ``tf.data.Dataset.from_tensor_slices(arrays)`` with
  the same shuffle buffer, batch, augmentation and prefetch (the lower bound).
- **image_dataset_from_directory**: Keras' loader with its defaults (no cache; ``image_size``,
  grayscale and categorical labels set to fit the model), then the same augmentation.
- **Python loader**: a ``keras.utils.PyDataset`` that opens every file with PIL and resizes it
  with OpenCV in ``__getitem__`` and augments the batch eagerly (the seed notebooks' pattern).

Target: a steady-state epoch of ``make_dataset`` takes at most 1.10x the epoch from tensors.

Usage: ``python benchmarks/bench_pipeline.py [--images 640] [--size 128] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from common import quiet_tensorflow, synthetic_images, table, target, write_result

quiet_tensorflow()

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from covid_tf import config  # noqa: E402
from covid_tf.data.pipeline import SHUFFLE_BUFFER, load_images, make_dataset  # noqa: E402
from covid_tf.data.preprocessing import augmentation_layers  # noqa: E402
from covid_tf.models.registry import build_model  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE
# Keras warns that fit's default shuffle=True is ignored for a tf.data.Dataset (which shuffles itself).
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")


class PerImageLoader(keras.utils.PyDataset):
    """The seed-code loader: every batch opens its files with PIL, resizes with OpenCV, augments eagerly."""

    def __init__(self, paths, labels, *, batch_size, image_size, augmentation, seed, **kwargs):
        super().__init__(**kwargs)
        self.paths = np.asarray(paths)
        self.targets = np.eye(2, dtype="float32")[np.asarray(labels)]
        self.batch_size = batch_size
        self.image_size = image_size
        self.augmentation = augmentation
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(paths))

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def _load(self, path: str) -> np.ndarray:
        with Image.open(path) as image:
            array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        array = cv2.resize(array, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return array[..., None]

    def __getitem__(self, index: int):
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = np.stack([self._load(path) for path in self.paths[chosen]])
        images = keras.ops.convert_to_numpy(self.augmentation(images, training=True))
        return images, self.targets[chosen]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.paths))


def class_folders(data_dir: Path, flat_dir: Path, classes) -> Path:
    """``flat_dir/<Class>`` links to ``data_dir/<Class>/images`` (Keras would also read masks and lesions)."""
    flat_dir.mkdir(parents=True, exist_ok=True)
    for name in classes:
        (flat_dir / name).symlink_to(data_dir / name / "images", target_is_directory=True)
    return flat_dir


def build_variants(paths, labels, classes, data_dir: Path, work_dir: Path, args) -> dict:
    augmentation = augmentation_layers("default", seed=config.SEED)
    variants = {}
    variants["make_dataset"] = make_dataset(
        paths, labels, num_classes=len(classes), image_size=args.size, batch_size=args.batch_size, shuffle=True,
        augmentation=augmentation, cache_dir=work_dir / "cache",
    )
    arrays = load_images(paths, args.size)
    targets = np.eye(len(classes), dtype="float32")[np.asarray(labels)]
    variants["tensors"] = (
        tf.data.Dataset.from_tensor_slices((arrays, targets))
        .shuffle(min(len(paths), SHUFFLE_BUFFER), seed=config.SEED, reshuffle_each_iteration=True)
        .batch(args.batch_size)
        .map(lambda x, y: (augmentation(x, training=True), y), num_parallel_calls=AUTOTUNE)
        .prefetch(AUTOTUNE)
    )
    if not args.skip_others:
        folders = class_folders(data_dir, work_dir / "flat", classes)
        keras_dataset = keras.utils.image_dataset_from_directory(
            folders, label_mode="categorical", class_names=list(classes), color_mode="grayscale",
            image_size=(args.size, args.size), batch_size=args.batch_size, seed=config.SEED, verbose=False,
        )
        variants["image_dataset_from_directory"] = keras_dataset.map(
            lambda x, y: (augmentation(x / 255.0, training=True), y), num_parallel_calls=AUTOTUNE
        )
        variants["python_loader"] = PerImageLoader(
            paths, labels, batch_size=args.batch_size, image_size=args.size, augmentation=augmentation,
            seed=config.SEED,
        )
    return variants, arrays, targets


def timed_epoch(model: keras.Model, data) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of one training epoch."""
    start, start_cpu = time.perf_counter(), time.process_time()
    model.fit(data, epochs=1, verbose=0)
    return time.perf_counter() - start, time.process_time() - start_cpu


def pipeline_alone(data) -> float:
    """Seconds to iterate one epoch of the input pipeline without a model."""
    start = time.perf_counter()
    if isinstance(data, keras.utils.PyDataset):
        for index in range(len(data)):
            data[index]
        data.on_epoch_end()
    else:
        for _ in data:
            pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=7, help="steady-state epochs per variant after epoch 1")
    parser.add_argument("--skip-others", action="store_true", help="only make_dataset and tensors")
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="covid_tf_bench_pipeline_") as temp:
        work_dir = Path(temp)
        data_dir = work_dir / "data"
        start = time.perf_counter()
        paths, labels, classes = synthetic_images(data_dir, args.images, args.size)
        print(f"generated {len(paths)} images of {args.size} px in {time.perf_counter() - start:.1f} s")

        keras.utils.set_random_seed(config.SEED)
        model = build_model("baseline", image_size=args.size, num_classes=len(classes))
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        variants, arrays, targets = build_variants(paths, labels, classes, data_dir, work_dir, args)
        # Trace the train step (full and partial batches, fed by a tf.data.Dataset) before any timing.
        warmup = args.batch_size * 2 + 3
        model.fit(tf.data.Dataset.from_tensor_slices((arrays[:warmup], targets[:warmup])).batch(args.batch_size),
                  epochs=1, verbose=0)
        model.fit(PerImageLoader(paths[:warmup], labels[:warmup], batch_size=args.batch_size,
                                 image_size=args.size, augmentation=augmentation_layers("none"), seed=0),
                  epochs=1, verbose=0)

        names = list(variants)
        first = {name: timed_epoch(model, variants[name])[0] for name in names}
        steady = {name: [] for name in names}
        steady_cpu = {name: [] for name in names}
        ratios, cpu_ratios = [], []
        for round_index in range(args.repeats):
            # The compared pair alternates which goes first; the secondary loaders (no cache) need one
            # steady epoch only.
            order = ["make_dataset", "tensors"] if round_index % 2 == 0 else ["tensors", "make_dataset"]
            order += [name for name in names if name not in order and not steady[name]]
            for name in order:
                if name in ("make_dataset", "tensors") or not steady[name]:
                    wall, cpu = timed_epoch(model, variants[name])
                    steady[name].append(wall)
                    steady_cpu[name].append(cpu)
            ratios.append(steady["make_dataset"][-1] / steady["tensors"][-1])
            cpu_ratios.append(steady_cpu["make_dataset"][-1] / steady_cpu["tensors"][-1])
            print(f"round {round_index + 1}: " + ", ".join(f"{n} {steady[n][-1]:.2f} s" for n in names))
        alone = {name: pipeline_alone(variants[name]) for name in names}

    median = {name: statistics.median(steady[name]) for name in names}
    median_cpu = {name: statistics.median(steady_cpu[name]) for name in names}
    reference = median["tensors"]
    rows = []
    for name in names:
        rows.append([
            name, f"{first[name]:.2f}", f"{median[name]:.2f}", f"{median[name] / reference:.2f}x",
            f"{median_cpu[name]:.1f}", f"{args.images / median[name]:.0f}", f"{args.images / alone[name]:.0f}",
        ])
    for row in rows:
        print("  ".join(str(cell) for cell in row))
    overhead = statistics.median(ratios)
    first_ratio = first["make_dataset"] / reference
    result = {
        "title": "Input pipeline overhead (training epoch)",
        "summary": (
            f"{args.images} synthetic PNGs at {args.size} px, baseline CNN, batch {args.batch_size}, default "
            f"augmentation; median of {args.repeats} steady-state epochs per variant (the secondary loaders, "
            "which have no cache, one steady epoch); the two compared inputs alternate which goes first."
        ),
        "targets": [target("make_dataset steady epoch / tensors epoch (wall time)", overhead, 1.10, "<=")],
        "tables": [table(
            "Epoch times",
            ["input", "epoch 1 (s)", "steady epoch (s)", "vs tensors", "steady epoch CPU (s)", "train images/s",
             "pipeline alone, images/s"],
            rows,
        )],
        "notes": [
            f"make_dataset epoch 1 (decode + fill the cache) takes {first['make_dataset']:.2f} s, the first "
            f"tensors epoch {first['tensors']:.2f} s ({first['make_dataset'] / first['tensors']:.2f}x), a steady "
            f"tensors epoch {reference:.2f} s ({first_ratio:.2f}x): the first epoch of every input also pays a "
            "one-off start-up (tf.data functions, thread pools), so decoding adds little; "
            f"per-round steady ratios (wall): {', '.join(f'{r:.3f}' for r in ratios)}; in CPU time of this "
            f"process (insensitive to other processes' load): median {statistics.median(cpu_ratios):.3f}x.",
            "'pipeline alone' iterates one more epoch of each input without the model (cache already filled).",
        ],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
