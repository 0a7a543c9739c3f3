"""Benchmark: peak memory of training one epoch and of predicting, on 1,000 against 10,000 images.

Each measurement runs in its own Python process, which reports its own peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) at the end:

- **train**: ``make_dataset`` exactly as ``covid_tf.training.fit`` builds the training set (shuffle,
  default augmentation, ``cache="auto"`` with a cache folder), one epoch of ``model.fit``;
- **predict**: ``covid_tf.runs.inference.predict_paths`` over the same files (no cache, streamed);
- **idle**: TensorFlow imported and the model built, nothing else (the floor).

The 1,000 images are distinct synthetic X-rays; the 10,000 are 10,000 files, hard links (or copies)
of those 1,000 in turn, since rendering 10,000 distinct ones takes minutes on two cores and peak
memory does not depend on which pixels the files hold (``--unique`` renders them all). Targets:
peak RSS on 10,000 images at most 1.2x that on 1,000, for train and for predict.

Usage: ``python benchmarks/bench_memory.py [--images 1000 10000] [--size 128] [--model small] [--unique]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_mib, quiet_tensorflow, synthetic_images, table, target, write_result

TARGET_RATIO = 1.2


def child(args) -> None:
    """Run one measurement in this process and print ``{"peak_rss_mib": ..., "seconds": ...}``."""
    quiet_tensorflow()
    import keras
    import numpy as np

    from covid_tf import config
    from covid_tf.data.pipeline import make_dataset
    from covid_tf.data.preprocessing import augmentation_layers
    from covid_tf.models.registry import build_model
    from covid_tf.runs.inference import predict_paths

    lines = Path(args.list).read_text().splitlines()
    paths = [line.rsplit("\t", 1)[0] for line in lines]
    labels = [int(line.rsplit("\t", 1)[1]) for line in lines]
    keras.utils.set_random_seed(config.SEED)
    model = build_model(args.model, image_size=args.size)
    start = time.perf_counter()
    if args.child == "train":
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        dataset = make_dataset(
            paths, labels, num_classes=2, image_size=args.size, batch_size=args.batch_size, shuffle=True,
            augmentation=augmentation_layers("default", seed=config.SEED), cache_dir=args.cache_dir,
        )
        model.fit(dataset, epochs=1, verbose=0)
    elif args.child == "predict":
        probabilities = predict_paths(model, paths, args.size, 1, batch_size=args.batch_size)
        if probabilities.shape != (len(paths), 2) or not np.isfinite(probabilities).all():
            raise SystemExit(f"unexpected predictions {probabilities.shape}")
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "seconds": time.perf_counter() - start}))


def measure(kind: str, list_file: Path, cache_dir: Path, args) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", kind, "--list", str(list_file),
        "--cache-dir", str(cache_dir), "--size", str(args.size), "--model", args.model,
        "--batch-size", str(args.batch_size),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{kind} on {list_file.name} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def replicate(paths: list[str], labels: list[int], count: int, out_dir: Path) -> tuple[list[str], list[int]]:
    """``count`` files in ``out_dir/<label>/``: hard links (copies where links fail) of ``paths`` in turn."""
    new_paths, new_labels = [], []
    for index in range(count):
        source = paths[index % len(paths)]
        destination = out_dir / str(labels[index % len(paths)]) / f"image-{index:06d}.png"
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copyfile(source, destination)
        new_paths.append(str(destination))
        new_labels.append(labels[index % len(paths)])
    return new_paths, new_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs=2, default=(1000, 10000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--model", default="small", help="architecture trained and used to predict")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--unique", action="store_true", help="render every large-run image (slow)")
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    parser.add_argument("--child", choices=("train", "predict", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    small_count, large_count = args.images
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="covid_tf_bench_memory_") as temp:
        work_dir = Path(temp)
        start = time.perf_counter()
        paths, labels, _ = synthetic_images(work_dir / "data", large_count if args.unique else small_count, args.size)
        if args.unique:  # the small run reads the first half of each class
            half = small_count // 2
            chosen = [i for i, label in enumerate(labels) if label == 0][:half]
            chosen += [i for i, label in enumerate(labels) if label == 1][: small_count - half]
            runs = {small_count: ([paths[i] for i in chosen], [labels[i] for i in chosen]),
                    large_count: (paths, labels)}
        else:
            runs = {small_count: (paths, labels),
                    large_count: replicate(paths, labels, large_count, work_dir / "replicated")}
        print(f"prepared {small_count} and {large_count} images of {args.size} px in "
              f"{time.perf_counter() - start:.1f} s")
        lists = {}
        for count, (run_paths, run_labels) in runs.items():
            lists[count] = work_dir / f"list_{count}.tsv"
            lists[count].write_text("".join(f"{path}\t{label}\n" for path, label in zip(run_paths, run_labels)))
        for kind in ("idle", "train", "predict"):
            for count in ((small_count,) if kind == "idle" else (small_count, large_count)):
                results[kind, count] = measure(kind, lists[count], work_dir / f"cache_{kind}_{count}", args)
                print(f"{kind:8s} {count:6d} images: peak RSS {results[kind, count]['peak_rss_mib']:.0f} MiB, "
                      f"{results[kind, count]['seconds']:.1f} s")
        cache_files = sorted(p.name for p in (work_dir / f"cache_train_{large_count}").glob("*"))

    idle = results["idle", small_count]["peak_rss_mib"]
    rows = [["idle (TensorFlow + model)", "-", f"{idle:.0f}", "-", "-", "-"]]
    targets = []
    for kind in ("train", "predict"):
        low, high = results[kind, small_count], results[kind, large_count]
        ratio = high["peak_rss_mib"] / low["peak_rss_mib"]
        rows.append([
            kind, f"{small_count:,} / {large_count:,}", f"{low['peak_rss_mib']:.0f}", f"{high['peak_rss_mib']:.0f}",
            f"{ratio:.2f}x", f"{low['seconds']:.1f} / {high['seconds']:.1f}",
        ])
        targets.append(target(f"peak RSS {kind}, {large_count:,} / {small_count:,} images", ratio, TARGET_RATIO, "<="))
    origin = "all distinct" if args.unique else f"{small_count:,} distinct, the {large_count:,} linked to them in turn"
    decoded_mib = large_count * args.size * args.size * 4 / 2**20
    result = {
        "title": "Memory (peak RSS)",
        "summary": (
            f"Synthetic PNGs at {args.size} px ({origin}), model '{args.model}', batch {args.batch_size}; one "
            f"process per measurement. {large_count:,} decoded float32 images take {decoded_mib:.0f} MiB."
        ),
        "targets": targets,
        "tables": [table(
            "Peak resident set size",
            ["run", "images", f"peak RSS {small_count:,} (MiB)", f"peak RSS {large_count:,} (MiB)", "ratio",
             "seconds"],
            rows,
        )],
        "notes": [f"Cache folder of the {large_count:,}-image training run held: {', '.join(cache_files) or 'nothing'} "
                  "(a file cache means the decoded images went to disk, not memory)."],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
