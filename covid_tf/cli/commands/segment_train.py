"""``segment-train``: train the lung U-Net on every image of a dataset that has a lung mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from covid_tf import config

HELP = "Train a lung segmenter on the images that have masks: model.keras, history.csv, metrics.json, figures."

# The defaults of covid_tf.lungs.train_segmenter.SegmenterOptions (not imported here: it loads TensorFlow).
DEFAULTS = {"image_size": 256, "epochs": 40, "batch_size": 16, "lr": 3e-3, "levels": 3, "base_filters": 16, "stem": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder or label CSV; every image with a lung mask is used "
                        "(masks of any size are resized to the image)")
    parser.add_argument("--out", required=True, type=Path,
                        help="run folder to write (model.keras, history.csv, split.csv, metrics.json, figures/); "
                        "never inside DATA")
    parser.add_argument("--classes", default=None,
                        help="comma-separated classes to take masked images from (default: all)")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"],
                        help="training side in pixels, a multiple of 2 ** levels x stem (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                        help="initial Adam learning rate, cosine-decayed (default: %(default)s)")
    parser.add_argument("--levels", type=int, default=DEFAULTS["levels"],
                        help="U-Net down-sampling levels (default: %(default)s)")
    parser.add_argument("--base-filters", type=int, default=DEFAULTS["base_filters"],
                        help="filters of the first level, doubled per level (default: %(default)s)")
    parser.add_argument("--stem", type=int, default=DEFAULTS["stem"],
                        help="average-pooling factor before the U-Net (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=config.SEED,
                        help="seed of the split, the weights and the augmentation (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier segmenter run in --out (default: refuse)")


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list
    from covid_tf.lungs.train_segmenter import SegmenterOptions, train_segmenter

    config.check_sizes(args.image_size, args.batch_size)
    classes = parse_class_list(args.classes)
    options = SegmenterOptions(image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                               lr=args.lr, levels=args.levels, base_filters=args.base_filters, stem=args.stem,
                               seed=args.seed, classes=tuple(classes) if classes else None)
    metrics = train_segmenter(args.data, args.out, options, overwrite=args.overwrite)
    for split in config.SPLIT_NAMES:
        dice, iou = metrics[split]["dice"], metrics[split]["iou"]
        if not dice["n"]:
            continue
        print(f"{split}: Dice {dice['mean']:.4f} [{dice['ci95'][0]:.4f}, {dice['ci95'][1]:.4f}], "
              f"IoU {iou['mean']:.4f} [{iou['ci95'][0]:.4f}, {iou['ci95'][1]:.4f}] (n={dice['n']})")
    print(f"segmenter run written to {args.out}")
    return 0
