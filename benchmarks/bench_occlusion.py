"""Benchmark: the occlusion check (``occlusion``) against ``evaluate`` on the same images, side by side.

Both run in this process, on the same model and the same images, alternately (``--repeats`` times each, after
one untimed warm-up of each), so a busy machine slows both alike; the median of each is compared:

- ``evaluate``: :func:`covid_tf.workflows.evaluate.evaluate_model` (discover, predict, metrics with 1000
  bootstrap resamples, figures);
- ``occlusion``: :func:`covid_tf.workflows.occlusion.run_occlusion` with ``--fills`` (default mean,blur: five
  forward passes per image), the same bootstrap, its JSON, CSV and figure.

The data: ``--data`` (default: the real Radiography subset in ``../shared/data`` when present, else synthetic
X-rays) with ``--images`` of its COVID and Normal images (half each), linked into a temporary folder. Lung masks
come from the dataset or the shipped segmenter's cache, filled before timing (as a second evaluation of the same
images finds them). The model is an untrained ``--model`` at ``--size`` px with ``--roi`` (the default
``lungs-attention`` is what ``train`` makes of chest X-rays; its ``evaluate`` reads the masks too): the time of a
forward pass does not depend on the weights.

Target: occlusion takes at most 1.5x the time of evaluate.

Also measured, for scale: the floor of any occlusion check of this model on these images, its forward passes alone
(one per variant and image, ``1 + 2 * len(fills)``) on inputs already in memory, timed on ``--floor-images`` images'
worth of inputs and scaled to all of them.

Usage: ``python benchmarks/bench_occlusion.py [--images 300] [--size 128] [--roi lungs-attention] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, quiet_tensorflow, synthetic_images, table, target, write_result

quiet_tensorflow()

REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "covid19-radiography-subset"
CLASSES = ("COVID", "Normal")


def link_images(source: Path, out: Path, count: int) -> None:
    """``out/<Class>/images/*`` (and ``masks/`` where the source has them): links to ``count`` images of COVID
    and Normal, half each, the first ones by name. Past the source's own images the links go round again under
    new names (``copy1_<name>``, ...): each is read, decoded and scored as a separate image, and its cached
    lung mask (keyed by the resolved path) is found once."""
    for name in CLASSES:
        available = sorted((source / name / "images").glob("*.png"))
        if not available:
            raise SystemExit(f"{source / name / 'images'}: no PNG images to link")
        (out / name / "images").mkdir(parents=True)
        for index in range(count // 2):
            image = available[index % len(available)]
            turn = index // len(available)
            link_name = image.name if turn == 0 else f"copy{turn}_{image.name}"
            os.symlink(image.resolve(), out / name / "images" / link_name)
            mask = source / name / "masks" / image.name
            if mask.is_file():
                (out / name / "masks").mkdir(exist_ok=True)
                os.symlink(mask.resolve(), out / name / "masks" / link_name)


def prepare(tmp: Path, args: argparse.Namespace) -> tuple[Path, Path, str]:
    """The data folder, the model file (in a run folder with its config.json) and where the data came from."""
    from covid_tf.data.discover import discover
    from covid_tf.lungs.roi.mask_table import prepare_masks
    from covid_tf.models.registry import build_model

    source = Path(args.data) if args.data else REAL_DATA
    data = tmp / "data"
    if source.is_dir():
        link_images(source, data, args.images)
        origin = str(source)
    else:
        synthetic_images(data, args.images, 256)
        origin = "synthetic X-rays, 256 px"
    frame = discover(data).frame
    prepare_masks(frame["path"].tolist(), frame["mask_path"].tolist())  # the segmenter's cache, filled once
    run = tmp / "run"
    run.mkdir()
    model = build_model(args.model, image_size=args.size, channels=1, num_classes=2,
                        lung_attention=args.roi == "lungs-attention", normalization="per_image")
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"class_names": list(CLASSES), "roi": args.roi, "model": args.model}))
    return data, run / "model.keras", origin


def forward_seconds(model_path: Path, inputs: int, batch_size: int = 32) -> float:
    """Seconds per model input of the saved model's forward pass (loaded as ``evaluate`` loads it) on random
    inputs already in memory, after one untimed batch."""
    import numpy as np
    import tensorflow as tf

    from covid_tf.runs.inference import load_model

    model = load_model(model_path).model
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    batch = tf.constant(np.random.default_rng(0).random((batch_size, *shape), dtype=np.float32))
    forward = tf.function(lambda x: model(x, training=False))
    forward(batch)
    batches = max(1, inputs // batch_size)
    started = time.perf_counter()
    for _ in range(batches):
        forward(batch).numpy()
    return (time.perf_counter() - started) / (batches * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--data", help="a dataset with COVID/ and Normal/ image folders (default: the real subset)")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--size", type=int, default=128, help="model input size")
    parser.add_argument("--roi", default="lungs-attention", help="the run's lung ROI (none, lungs, ...)")
    parser.add_argument("--fills", default="mean,blur")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--floor-images", type=int, default=400, help="images whose forward passes time the floor")
    parser.add_argument("--json")
    args = parser.parse_args()

    from covid_tf.workflows.evaluate import evaluate_model
    from covid_tf.workflows.occlusion import run_occlusion

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data, model, origin = prepare(tmp, args)
        runs = {
            "evaluate": lambda out: evaluate_model(model, data, out, overwrite=True),
            "occlusion": lambda out: run_occlusion(model, data, out, fills=args.fills, overwrite=True),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats + 1):  # the first round warms up, untimed
            for name, function in runs.items():
                started = time.perf_counter()
                result = function(tmp / f"out_{name}")
                if repeat:
                    times[name].append(time.perf_counter() - started)
        n = result.summary["n"]
        medians = {name: statistics.median(values) for name, values in times.items()}
        variants = 1 + 2 * len(result.summary["results"]["lungs_filled"])
        per_input = forward_seconds(model, args.floor_images * variants)
        floor = per_input * variants * n
    ratio = medians["occlusion"] / medians["evaluate"]
    print(f"{origin}: {args.images} images ({n} with plausible lungs), {args.model} at {args.size} px, "
          f"--roi {args.roi}, fills {args.fills}")
    for name, seconds in medians.items():
        print(f"{name:>10}: {seconds:.2f} s median of {args.repeats} ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"occlusion / evaluate: {ratio:.2f}x")
    print(f"floor (the {variants} forward passes of each of the {n} images alone, {1000 * per_input:.2f} ms per "
          f"input): {floor:.1f} s = {floor / medians['evaluate']:.2f}x evaluate")
    write_result(args.json, {
        "title": "Occlusion check against evaluate",
        "summary": f"occlusion takes {ratio:.2f}x the time of evaluate on the same {args.images} images",
        "targets": [target("occlusion / evaluate", ratio, 1.5, "<=")],
        "tables": [table("median seconds", ["command", "seconds"],
                         [*([k, round(v, 2)] for k, v in medians.items()),
                          [f"floor: {variants} forward passes per image alone", round(floor, 2)]])],
        "notes": [f"data: {origin}; model {args.model} at {args.size} px, --roi {args.roi}; fills {args.fills}",
                  f"floor / evaluate: {floor / medians['evaluate']:.2f}x ({1000 * per_input:.2f} ms per forward pass, "
                  f"inputs in memory)"],
    })


if __name__ == "__main__":
    main()
