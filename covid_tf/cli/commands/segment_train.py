"""``segment-train``: train the lung U-Net on every image of a dataset that has a lung mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from covid_tf import config

HELP = ("Train a lung segmenter on the images that have masks, from one or several sources: model.keras, "
        "scores.csv, metrics.json (Dice per source), figures; --leave-one-source-out, --evaluate.")

# The defaults of covid_tf.lungs.segmentation.training.SegmenterOptions, spelled out: the parser imports no
# back-end (a test checks they agree).
DEFAULTS = {"image_size": 256, "epochs": 40, "batch_size": 16, "lr": 3e-3, "levels": 3, "base_filters": 16, "stem": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="[NAME=]SOURCE",
                        help="datasets whose images have lung masks: a dataset folder or label CSV (every image with "
                        "a mask is used), or a folder holding images/ and masks/ with the same file names; NAME "
                        "(default: the folder's name) labels the source in the tables. Each source is split "
                        "70/15/15 on its own, grouped by patient and near-duplicate image; masks of any size are "
                        "resized to the image")
    parser.add_argument("--out", required=True, type=Path,
                        help="run folder to write (model.keras, history.csv, split.csv, scores.csv, metrics.json, "
                        "figures/; loso.csv and without-<NAME>/ with --leave-one-source-out); never inside a source")
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
    parser.add_argument("--init", metavar="FILE", default=None,
                        help="start from this trained segmenter's weights (fine-tuning; 'shipped' for "
                        "covid_tf/lungs/lung_segmenter.keras) instead of random ones")
    parser.add_argument("--init-seen", default="", metavar="NAMES",
                        help="comma-separated sources --init was trained on: a --leave-one-source-out fold that "
                        "leaves one of them out starts from random weights instead, so that it stays honest")
    parser.add_argument("--leave-one-source-out", action="store_true",
                        help="first train one model per source without it and score it on all of that source's "
                        "images (loso.csv, without-<NAME>/), then the final model on every source")
    parser.add_argument("--folds", default="", metavar="NAMES",
                        help="with --leave-one-source-out: only leave out these sources (default: each in turn)")
    parser.add_argument("--no-final", action="store_true",
                        help="with --leave-one-source-out: stop after the folds (no final model)")
    parser.add_argument("--evaluate", metavar="FILE", default=None,
                        help="train nothing: score this segmenter ('shipped' for the shipped one) on every split of "
                        "every source (scores.csv, evaluation.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier segmenter run in --out (default: refuse)")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _print_summaries(by_source: dict) -> None:
    from covid_tf.lungs.segmentation.scoring import summary_line

    for source, parts in by_source.items():
        for split in (*config.SPLIT_NAMES, "all"):
            if split in parts:
                print(summary_line(f"{source} {split}", parts[split]))


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list
    from covid_tf.lungs.segmentation.scoring import summary_line
    from covid_tf.lungs.segmentation.training import SegmenterOptions
    from covid_tf.workflows.segment_train import SegmentTrainRequest, model_file, run_segment_train

    config.check_sizes(args.image_size, args.batch_size)
    classes = parse_class_list(args.classes)
    options = SegmenterOptions(image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                               lr=args.lr, levels=args.levels, base_filters=args.base_filters, stem=args.stem,
                               seed=args.seed, classes=tuple(classes) if classes else None,
                               init=model_file(args.init), init_seen=_names(args.init_seen))
    result = run_segment_train(SegmentTrainRequest(
        args.sources, args.out, options, overwrite=args.overwrite, evaluate=args.evaluate,
        leave_one_source_out=args.leave_one_source_out, folds=_names(args.folds), final=not args.no_final))
    for held_out, summary in (result.folds or {}).items():
        print(summary_line(f"left out: {held_out} (from {summary['started_from']})", summary))
    if result.sources is None:
        print(f"folds written to {args.out} (loso.csv)")
        return 0
    _print_summaries(result.sources)
    print(f"scores written to {args.out}" if args.evaluate else f"segmenter run written to {args.out}")
    return 0
