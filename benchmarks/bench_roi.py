"""Benchmark: a lung-ROI training epoch against a full-image epoch, with the lung masks cached.

The same baseline CNN is trained one epoch at a time on the same synthetic X-rays (with their
``masks/``), fed by ``covid_tf.training.fit.make_datasets`` exactly as ``train`` feeds it: the full
image (``--roi none``), ``--roi lungs``, ``--roi lungs-masked``, ``--roi lungs-masked --roi-jitter 3`` and
``--roi lungs-attention`` (its own model: the mask as a second input channel, pooled over the lungs).
The masks are prepared once beforehand (``covid_tf.lungs.roi.inputs.run_inputs``, as ``train`` does
before its first epoch); the first epoch of each variant fills the pipeline's cache and is reported
apart; the steady-state epochs alternate between the variants, median of ``--repeats``.

Target: a steady-state ROI epoch (the costliest variant) takes at most 1.15x a full-image epoch.

Usage: ``python benchmarks/bench_roi.py [--images 256] [--source-size 256] [--size 128] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from common import quiet_tensorflow, synthetic_images, table, target, write_result

quiet_tensorflow()

import pandas as pd  # noqa: E402

from covid_tf.lungs.roi.inputs import run_inputs  # noqa: E402
from covid_tf.models.registry import build_model  # noqa: E402
from covid_tf.runs.config import TrainConfig  # noqa: E402
from covid_tf.training.fit import compile_model, make_datasets  # noqa: E402

warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
VARIANTS = {"full image": ("none", 0), "lungs": ("lungs", 0), "lungs-masked": ("lungs-masked", 0),
            "lungs-masked, jitter 3": ("lungs-masked", 3), "lungs-attention": ("lungs-attention", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--source-size", type=int, default=256, help="size of the synthetic images on disk")
    parser.add_argument("--size", type=int, default=128, help="model input size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels, classes = synthetic_images(Path(tmp) / "data", args.images, args.source_size)
        split = pd.DataFrame({"path": paths, "label": [classes[i] for i in labels], "split": "train"})
        split["mask_path"] = [str(Path(p).parent.parent / "masks" / Path(p).name) for p in paths]
        base = TrainConfig(data=str(Path(tmp) / "data"), image_size=args.size, batch_size=32, precise_bn_images=0)
        started = time.perf_counter()
        datasets = {}
        for name, (mode, jitter) in VARIANTS.items():
            cfg = dataclasses.replace(base, roi=mode, roi_jitter=jitter)
            datasets[name] = make_datasets(cfg, split, classes, Path(tmp) / name, run_inputs(cfg, split))[0]
        prepare_seconds = time.perf_counter() - started
        models = {}
        for attention in (False, True):
            models[attention] = build_model("baseline", image_size=args.size, channels=1, num_classes=2,
                                            weights=None, lung_attention=attention)
            compile_model(models[attention], base, [args.images // 2, args.images // 2], 1e-3, classes)
        first, steady = {}, {name: [] for name in VARIANTS}
        for name, dataset in datasets.items():  # epoch 1: decode (and the ROI) into the cache
            start = time.perf_counter()
            models[VARIANTS[name][0] == "lungs-attention"].fit(dataset, epochs=1, verbose=0)
            first[name] = time.perf_counter() - start
        for _ in range(args.repeats):
            for name, dataset in datasets.items():
                start = time.perf_counter()
                models[VARIANTS[name][0] == "lungs-attention"].fit(dataset, epochs=1, verbose=0)
                steady[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(times) for name, times in steady.items()}
    full = medians["full image"]
    rows = [[name, f"{first[name]:.2f}", f"{medians[name]:.2f}", f"{medians[name] / full:.2f}"] for name in VARIANTS]
    worst = max(medians[name] / full for name in VARIANTS if name != "full image")
    summary = (f"{args.images} synthetic images of {args.source_size} px with their masks, baseline CNN at "
               f"{args.size} px, batch 32; median of {args.repeats} steady-state epochs, variants alternating.")
    result = {
        "title": "Lung-ROI training epoch against the full image (masks cached)",
        "summary": summary,
        "targets": [target("steady ROI epoch / full-image epoch (worst variant)", worst, 1.15, "<=")],
        "tables": [table("Epoch wall time (s)", ["input", "epoch 1 (fills the cache)", "steady epoch",
                                                  "steady / full image"], rows)],
        "notes": [f"Masks prepared and pipelines built for the {len(VARIANTS)} variants in {prepare_seconds:.1f} s "
                  "(dataset masks read once; the segmenter is not needed here).",
                  "The ROI is computed once per image as it enters the pipeline's cache; later epochs read the "
                  "cache. The jitter (random dilation/erosion of the mask) runs on every batch, after the cache."],
    }
    print(summary)
    for row in rows:
        print("  ".join(row))
    write_result(args.json, result)


if __name__ == "__main__":
    main()
