"""``segment``: lung masks (PNG) and ``lungs.csv`` for chest X-rays, with the shipped segmenter by default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covid_tf import config
from covid_tf.cli import Renamed
from covid_tf.lungs.roi.modes import MODALITIES

HELP = "Segment the lungs of images (files, folders or datasets): one mask PNG per image and lungs.csv."

# covid_tf.workflows.segment's defaults, spelled out: the parser imports no back-end (tests/test_lungs_cli.py
# checks that they agree).
DEFAULT_SIZE = 256
DEFAULT_BATCH_SIZE = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files, folders of images or datasets (<Class>/images/ layout and others)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for <Class>/masks/<name>.png (masks/<name>.png for loose images) and lungs.csv; "
                        "never inside an input folder")
    parser.add_argument("--segmenter", type=Path, default=None, metavar="FILE",
                        help="segmenter .keras file, loaded in safe mode (default: the shipped "
                        "covid_tf/lungs/lung_segmenter.keras)")
    parser.add_argument("--model", action=Renamed, hint="the segmenter file is --segmenter FILE "
                        "(--model is an architecture name in train and audit)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="side the images are resized to for the network; masks come back at each image's own "
                        "size (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--modality", choices=MODALITIES, default="xray",
                        help="xray: chest X-rays, the U-Net; ct: axial CT slices (8-bit PNG), the classical CT lung "
                        "segmenter (body, air inside it, two lungs; --segmenter and --size do not apply) "
                        "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    config.check_sizes(args.size, args.batch_size, image_option="--size")
    from covid_tf.workflows.segment import segment_images

    def report(item) -> None:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)

    result = segment_images(args.inputs, args.out, model_path=args.segmenter, size=args.size,
                            batch_size=args.batch_size, on_skipped=report, modality=args.modality)
    count = len(result.table)
    print(f"segmented {count} image(s) in {result.seconds:.1f} s ({count / max(result.seconds, 1e-9):.1f} images/s); "
          f"{result.implausible} implausible mask(s) (see the reason column); table: {result.csv_path}")
    return 0
