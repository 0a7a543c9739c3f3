"""Benchmark: CT lung segmentation throughput (images per second), classical (``covid_tf.lungs.segmentation.ct_lungs``).

Synthetic CT slices of the phantom (``covid_tf.synthetic.ct_phantom``), Normal and COVID, in the lung window
(8-bit, as PNG slices are) and in Hounsfield units (as DICOM gives them), at ``--size`` px: the median of
``--repeats`` runs after one warm-up run of :func:`segment_ct_slices` on images already in memory (no file
reading: PNG decoding is the same for every segmenter, see bench_segmenter.py). Also the mean Dice against the
phantom's true lungs.

Usage: ``python benchmarks/bench_ct_lungs.py [--images 64] [--sizes 256 512] [--repeats 3]``
"""

from __future__ import annotations

import argparse

import numpy as np
from common import median_seconds, table, usable_cores, write_result

from covid_tf.ct.dicom import apply_window
from covid_tf.lungs.segmentation import ct_lungs
from covid_tf.synthetic.ct_phantom import Patient


def phantom_slices(count: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` HU slices (Normal and COVID patients, heights across the chest) and their true lungs."""
    slices, truths = [], []
    for index in range(count):
        patient = Patient(np.random.default_rng(index), ("Normal", "COVID")[index % 2], size)
        height = 0.1 + 0.8 * (index % 5) / 4
        slices.append(patient.slice_hu(height)[0])
        truths.append(patient.lung_mask(height))
    return slices, truths


def dice(found: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (found & truth).sum() / max(found.sum() + truth.sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="slices per run (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="slice sides (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default: %(default)s)")
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    rows = []
    for size in args.sizes:
        hu_slices, truths = phantom_slices(args.images, size)
        windowed = [apply_window(hu) for hu in hu_slices]
        for name, images, hounsfield in (("8-bit lung window", windowed, False), ("Hounsfield units", hu_slices, True)):
            seconds = median_seconds(lambda images=images, hu=hounsfield: ct_lungs.segment_ct_slices(images, hu=hu),
                                     args.repeats)
            masks = ct_lungs.segment_ct_slices(images, hu=hounsfield)
            mean_dice = np.mean([dice(mask, truth) for mask, truth in zip(masks, truths)])
            rows.append([f"{size} px, {name}", f"{seconds * 1000 / len(images):.1f}", f"{len(images) / seconds:.1f}",
                         f"{mean_dice:.3f}"])
            print("  ".join(rows[-1]), flush=True)
    result = {
        "title": "CT lung segmentation throughput",
        "summary": (f"covid_tf.lungs.segmentation.ct_lungs.segment_ct_slices on {args.images} synthetic CT slices "
                    "(Normal and COVID "
                    f"phantoms), in memory, one process, {usable_cores()} usable core(s); median of {args.repeats} "
                    "runs after one warm-up run."),
        "targets": [],
        "tables": [table("CT lung segmentation", ["slices", "ms per slice", "images/s", "Dice vs true lungs"], rows)],
        "notes": ["Classical (NumPy, SciPy, OpenCV on one core): no network, no download."],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
