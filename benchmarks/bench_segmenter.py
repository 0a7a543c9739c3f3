"""Benchmark: lung segmenter throughput (images per second) at 256 px, as ``python -m covid_tf segment`` runs it.

The shipped segmenter (``covid_tf/lungs/lung_segmenter.keras``) segments synthetic 256 px X-rays
written to disk. Two numbers, each the median of ``--repeats`` runs after one warm-up run:

- *network*: the U-Net alone on a batch already in memory (``covid_tf.lungs.segmentation.segmenter.predict_masks``
  without the file reading and writing: resize, forward pass, resize back, clean-up);
- *end to end*: ``covid_tf.workflows.segment.segment_paths``: read the PNGs, segment, post-process, write one
  mask PNG per image and ``lungs.csv`` (what a user of ``segment`` gets).

The target (>= 50 images/s on 2 cores) is on the end-to-end number. ``--compare FILE`` times another
segmenter (a candidate to ship) the same way in the same run, the two interleaved run by run, so that both
see the same load.

Usage: ``python benchmarks/bench_segmenter.py [--images 128] [--size 256] [--batch-size 32] [--repeats 3]
[--compare FILE]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import quiet_tensorflow, synthetic_images, table, target, usable_cores, write_result

quiet_tensorflow()

from covid_tf.data.images import load_image  # noqa: E402
from covid_tf.lungs.segmentation import segmenter  # noqa: E402
from covid_tf.workflows import segment  # noqa: E402

TARGET_IMAGES_PER_SECOND = 50.0


def time_segmenter(model, images, paths, out: Path, size: int, batch_size: int) -> tuple[float, float]:
    """Seconds of one network-only pass and one end-to-end pass."""
    started = time.perf_counter()
    segmenter.predict_masks(model, images, size, batch_size)
    network = time.perf_counter() - started
    started = time.perf_counter()
    segment.segment_paths(model, paths, out, size=size, batch_size=batch_size)
    return network, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="images to segment per run (default: %(default)s)")
    parser.add_argument("--size", type=int, default=segmenter.DEFAULT_SIZE, help="image side (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=segment.DEFAULT_BATCH_SIZE,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default: %(default)s)")
    parser.add_argument("--compare", type=Path, default=None, metavar="FILE",
                        help="also time this segmenter .keras, interleaved with the shipped one")
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    models = {"shipped": segmenter.load_segmenter()}
    if args.compare is not None:
        models[args.compare.name] = segmenter.load_segmenter(args.compare)
    with tempfile.TemporaryDirectory(prefix="covid_tf_bench_seg_") as temp:
        paths, _, _ = synthetic_images(Path(temp) / "data", args.images, args.size)
        images = [load_image(path, channels=1) for path in paths]
        out = Path(temp) / "masks"
        timings: dict[str, list] = {name: [] for name in models}
        for repeat in range(args.repeats + 1):  # the first run warms up (traces the graph) and is not kept
            for name, model in models.items():
                measured = time_segmenter(model, images, paths, out, args.size, args.batch_size)
                if repeat:
                    timings[name].append(measured)
        model = models["shipped"]
        cpu_started = time.process_time()
        segmenter.predict_masks(model, images, args.size, args.batch_size)
        network_cpu = time.process_time() - cpu_started
        plausible = int(segment.segment_paths(model, paths[:16], Path(temp) / "check")["plausible"].sum())
    count = len(paths)
    rows = []
    for name, measured in timings.items():
        network, end_to_end = (float(np.median([m[i] for m in measured])) for i in (0, 1))
        label = "" if len(models) == 1 else f"{name}: "
        rows += [[f"{label}network (in memory: resize, U-Net, resize back, clean-up)", f"{network * 1000:.0f}",
                  f"{count / network:.1f}"],
                 [f"{label}end to end (read PNG, segment, write mask PNG + lungs.csv)", f"{end_to_end * 1000:.0f}",
                  f"{count / end_to_end:.1f}"]]
    shipped_end_to_end = float(np.median([m[1] for m in timings["shipped"]]))
    cores = usable_cores()
    for row in rows:
        print("  ".join(row), flush=True)
    result = {
        "title": "Lung segmenter throughput",
        "summary": (f"The shipped segmenter{f' and {args.compare}' if args.compare else ''} on {count} synthetic "
                    f"{args.size} px X-rays, batch {args.batch_size}, {cores} usable core(s); median of {args.repeats} "
                    "runs after one warm-up run" + (", the two segmenters interleaved run by run." if args.compare
                                                    else ".")),
        "targets": [target(f"segment images/s at {args.size} px, end to end", count / shipped_end_to_end,
                           TARGET_IMAGES_PER_SECOND, ">=", unit=" images/s")],
        "tables": [table("Segmentation speed", ["stage", f"ms for {count} images", "images/s"], rows)],
        "notes": [f"{plausible} of 16 synthetic images got a plausible lung mask (the segmenter was trained on "
                  "real adults' and children's X-rays, not on the phantoms: a sanity check, not an accuracy figure).",
                  f"CPU time of the network stage: {network_cpu * 1000 / count:.1f} ms per image, so "
                  f"{count * cores / network_cpu:.0f} images/s if all {cores} cores were ours; the wall-clock numbers "
                  "above drop when other processes share the cores (check the load average)."],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
