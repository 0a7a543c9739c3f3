"""``predict``: class probabilities of a saved model for new, unlabelled images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covid_tf import config
from covid_tf.config import check_sizes

HELP = "Predict new images (files or folders) with a saved model into a CSV of probabilities."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file (its run's config.json names the classes)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, type=Path,
                        help="CSV to write: path,predicted,probability,prob_<Class>...")
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="images per batch")
    parser.add_argument("--threshold", type=float,
                        help="binary models: predict positive iff p(positive) >= this (default: the argmax)")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="load models with Lambda layers (runs their code: only for models you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs, run_folder_of
    from covid_tf.workflows.predict import predict_images

    check_sizes(batch_size=args.batch_size)
    refuse_output_inside_inputs(args.out, [*args.inputs, args.model], folder=False,
                                read_folders=[run_folder_of(args.model)])
    check_writable_output(args.out, folder=False)

    def report(item) -> None:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)

    result = predict_images(args.model, args.inputs, args.out, batch_size=args.batch_size,
                            allow_unsafe=args.allow_unsafe, overwrite=args.overwrite, threshold=args.threshold,
                            on_skipped=report)
    if result.roi_note:
        print(result.roi_note)
    skipped = f", {len(result.skipped)} file(s) skipped" if result.skipped else ""
    print(f"{result.n_predicted} image(s) predicted into {result.out_path}{skipped}")
    return 0
