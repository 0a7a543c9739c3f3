"""Benchmark: a default training epoch (lung attention, masks cached) against the bare input pipeline.

Side by side in one process, on the real development data (``../shared/data/covid19-radiography-subset``,
COVID vs Normal, split as ``train`` splits it; synthetic X-rays with their ``masks/`` when it is absent):

- **bare pipeline**: ``make_dataset`` of the training images, decode + resize + batch, no cache, no model.
- **lungs-attention epoch**: the default ``train`` (``--roi auto`` resolves to ``lungs-attention`` on chest
  X-rays): the baseline CNN with the lung mask as a last input channel, fed by
  ``covid_tf.training.fit.make_datasets`` with the run's callbacks (PreciseBatchNorm over 1,024 images,
  best-model checkpoint, early stopping, learning-rate schedule) and its validation set, one epoch per
  ``model.fit``. Masks come from the segmenter cache (computed once beforehand, untimed).
- **full-image epoch**: the same with ``--roi none``.

Epoch 1 (fills the caches, traces the steps) is reported apart; then the three alternate for ``--repeats``
rounds (median reported, with the spread). images/s = training images / seconds; CPU s = CPU time of this
process (all threads), which other processes' load does not inflate.

Target: a steady lungs-attention epoch at >= 80 training images/s (2 cores, 128 px).

Usage: ``python benchmarks/bench_epoch.py [--images 0 (all 1,400)] [--size 128] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from common import quiet_tensorflow, synthetic_images, table, target, usable_cores, write_result

quiet_tensorflow()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from covid_tf import config  # noqa: E402
from covid_tf.data.pipeline import make_dataset  # noqa: E402
from covid_tf.lungs.roi.inputs import run_inputs  # noqa: E402
from covid_tf.models.fused_batch_norm import fuse_batch_norm  # noqa: E402
from covid_tf.models.registry import build_model  # noqa: E402
from covid_tf.runs.config import TrainConfig  # noqa: E402
from covid_tf.training import fit as fitting  # noqa: E402
from covid_tf.training.callbacks import BestModelCheckpoint  # noqa: E402
from covid_tf.workflows.train import prepare_split  # noqa: E402

warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
CLASSES = ["COVID", "Normal"]
# name -> (ROI mode, --roi-background, fused batch norm): the default epoch (`--roi auto`: lung attention with
# background randomisation 0.5), the same without the background fill, with Keras's unfused batch norm
# (as before covid_tf.models.fused_batch_norm), and the full image
VARIANTS = {"default epoch (lungs-attention + background 0.5)": ("lungs-attention", 0.5, True),
            "lungs-attention epoch": ("lungs-attention", 0.0, True),
            "lungs-attention epoch, Keras batch norm": ("lungs-attention", 0.0, False),
            "full-image epoch": ("none", 0.0, True)}
DEFAULT = "default epoch (lungs-attention + background 0.5)"
UNFUSED = "lungs-attention epoch, Keras batch norm"
BARE = "bare pipeline"


def load_split(args, tmp: Path) -> tuple[TrainConfig, pd.DataFrame, list[str], str]:
    """The split of the real data (or of synthetic X-rays when it is absent), ``--images`` training images."""
    data = Path(args.data)
    if (data / "COVID").is_dir() and (data / "Normal").is_dir():
        source = f"{data.name} (COVID vs Normal, masks from the segmenter cache)"
    else:
        data = tmp / "synthetic"
        synthetic_images(data, max(args.images, 64) * 10 // 7, 256)
        source = f"synthetic X-rays of 256 px ({args.data} absent; masks from the dataset)"
    base = TrainConfig(data=str(data), classes=CLASSES, image_size=args.size)
    split, names = prepare_split(base)
    if args.images:
        train = split[split["split"] == "train"].sample(n=min(args.images, (split["split"] == "train").sum()),
                                                        random_state=0)
        val = split[split["split"] == "val"]
        val = val.sample(n=min(len(val), max(32, args.images * 3 // 14)), random_state=0)
        split = pd.concat([train, val]).sort_index()
    return base, split, names, source


class Variant:
    """One training setup as ``fit`` builds it: datasets, model, compiled state and callbacks."""

    def __init__(self, base: TrainConfig, setting: tuple[str, float, bool], split: pd.DataFrame, names,
                 cache_dir: Path) -> None:
        mode, background, fused = setting
        self.cfg = dataclasses.replace(base, roi=mode, roi_resolved=mode, roi_background=background)
        fitting.set_seed(self.cfg.seed)
        inputs = run_inputs(self.cfg, split)
        self.train, self.val, statistics_data, parts = fitting.make_datasets(self.cfg, split, names, cache_dir, inputs)
        self.images = len(parts["train"][0])
        start = time.perf_counter()
        mean, std = fitting.normalization_statistics(self.cfg, parts["train"][0], inputs.loader)
        self.statistics_seconds = time.perf_counter() - start
        self.model = build_model(self.cfg.model, image_size=self.cfg.image_size, channels=self.cfg.channels,
                                 num_classes=len(names), weights=None, normalization=self.cfg.normalization,
                                 mean=mean, std=std, lung_attention=mode == "lungs-attention")
        if fused:
            fuse_batch_norm(self.model)
        fitting.compile_model(self.model, self.cfg, np.bincount(parts["train"][1], minlength=len(names)),
                              self.cfg.learning_rate, names)
        fitting.build_training_state(self.model, self.train.element_spec)
        best = BestModelCheckpoint(None, restore_at_end=False)
        self.callbacks = fitting._callbacks(self.cfg, None, best, "all", self.val is not None, statistics_data)

    def epoch(self) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        self.model.fit(self.train, epochs=1, validation_data=self.val, callbacks=self.callbacks, shuffle=False,
                       verbose=0)
        return time.perf_counter() - start, time.process_time() - cpu


def bare_pipeline(split: pd.DataFrame, names, size: int):
    """Decode + resize + batch of the training images (no cache, shuffle, augmentation or model)."""
    rows = split[split["split"] == "train"]
    dataset = make_dataset(rows["path"].tolist(), rows["label"].map(names.index).to_numpy(), num_classes=len(names),
                           image_size=size, batch_size=config.BATCH_SIZE, cache=False)

    def run() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in dataset:
            pass
        return time.perf_counter() - start, time.process_time() - cpu

    return run, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(config.RADIOGRAPHY_SUBSET_DIR))
    parser.add_argument("--images", type=int, default=0, help="training images (0: the whole training split)")
    parser.add_argument("--size", type=int, default=config.IMAGE_SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="covid_tf_bench_epoch_") as temp:
        tmp = Path(temp)
        base, split, names, source = load_split(args, tmp)
        started = time.perf_counter()
        for mode, *_ in VARIANTS.values():  # the masks once, before any timing (segmented now when not cached)
            run_inputs(dataclasses.replace(base, roi=mode, roi_resolved=mode), split)
        mask_seconds = time.perf_counter() - started
        variants = {name: Variant(base, setting, split, names, tmp / "-".join(map(str, setting)))
                    for name, setting in VARIANTS.items()}
        bare, n_bare = bare_pipeline(split, names, args.size)
        runs = {BARE: bare, **{name: variant.epoch for name, variant in variants.items()}}
        counts = {BARE: n_bare, **{name: variant.images for name, variant in variants.items()}}
        first = {name: run() for name, run in runs.items()}
        times = {name: [] for name in runs}
        for round_index in range(args.repeats):
            order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
            for name in order:
                times[name].append(runs[name]())
            print(f"round {round_index + 1}: " + ", ".join(f"{n} {counts[n] / times[n][-1][0]:.1f} images/s"
                                                         for n in runs), flush=True)
    result = report(args, source, counts, first, times, mask_seconds, variants)
    write_result(args.json, result)


def report(args, source: str, counts, first, times, mask_seconds: float, variants) -> dict:
    rate = {name: statistics.median(counts[name] / wall for wall, _ in runs) for name, runs in times.items()}
    rows = []
    for name, runs in times.items():
        rates = [counts[name] / wall for wall, _ in runs]
        cpu = statistics.median(cpu for _, cpu in runs)
        rows.append([name, counts[name], f"{counts[name] / first[name][0]:.1f}", f"{rate[name]:.1f}",
                     f"{min(rates):.1f}-{max(rates):.1f}", f"{rate[name] / rate[BARE]:.3f}",
                     f"{1000 * cpu / counts[name]:.1f}", f"{usable_cores() * counts[name] / cpu:.0f}"])
    for row in rows:
        print("  ".join(str(cell) for cell in row))
    default, attention, full = rate[DEFAULT], rate["lungs-attention epoch"], rate["full-image epoch"]
    summary = (f"{source}; {counts[DEFAULT]} training images, baseline CNN at {args.size} px, batch "
               f"{config.BATCH_SIZE}, default augmentation, PreciseBatchNorm and validation; median of "
               f"{args.repeats} steady rounds, the runs alternating.")
    print(summary)
    return {
        "title": "Default training epoch (lung attention, masks cached) against the bare input pipeline",
        "summary": summary,
        "targets": [target("steady default epoch (lungs-attention + background 0.5), training images/s", default, 80,
                           ">=", " images/s"),
                    target("steady lungs-attention epoch without the background fill, training images/s", attention,
                           80, ">=", " images/s"),
                    target("epoch with background randomisation / plain lungs-attention epoch (time)",
                           attention / default, 1.15, "<=", "x")],
        "tables": [table("Throughput", ["run", "images", "epoch 1, images/s", "steady, images/s (median)",
                                        "spread", "/ bare pipeline", "CPU ms per image",
                                        "CPU-bound images/s (cores / CPU per image)"], rows)],
        "notes": [f"lungs-attention epoch / full-image epoch: {attention / full:.2f}x the images/s.",
                  f"fused batch norm / Keras's own (lungs-attention epoch): {attention / rate[UNFUSED]:.2f}x "
                  "the images/s.",
                  "CPU-bound images/s: what the epoch would reach if it kept every usable core busy with no other "
                  "load (CPU time is not inflated by other processes' load, wall time is).",
                  f"Masks prepared for both variants in {mask_seconds:.1f} s before timing; the normalisation "
                  "statistics (once per run) took " + ", ".join(f"{variant.statistics_seconds:.1f} s ({name})"
                                                                for name, variant in variants.items()) + "."],
    }


if __name__ == "__main__":
    main()
