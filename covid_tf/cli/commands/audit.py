"""``audit``: does the data carry shortcuts outside the lungs? Full image vs lungs only vs lungs removed."""

from __future__ import annotations

import argparse
from pathlib import Path

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.models.architectures import model_names

HELP = ("Shortcut audit: one quick model on the full image, the lungs only and the lungs removed "
        "(same split); audit.json, audit.png and a verdict.")
# covid_tf.workflows.audit's defaults, spelled out here: the parser imports no TensorFlow.
DEFAULT_IMAGE_SIZE = 96
DEFAULT_EPOCHS = 6
DEFAULT_THRESHOLD = 0.80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder (any supported layout); lung masks from its masks/ folders, "
                        "else from the shipped segmenter (cached)")
    parser.add_argument("--out", required=True, type=Path,
                        help="audit folder: split.csv, runs/<roi>/, audit.json, audit.png (never inside DATA)")
    parser.add_argument("--classes", help="classes to use, comma-separated, e.g. COVID,Normal")
    parser.add_argument("--model", choices=model_names(), default="baseline",
                        help="the quick model trained three times (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs per run (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                        help="side of the model's input in pixels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="images per batch")
    parser.add_argument("--split", default="0.7,0.15,0.15",
                        help="train,val,test fractions of the one grouped split (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="seed of the split and the runs")
    parser.add_argument("--shortcut-auc", dest="threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="lungs-removed test ROC-AUC from which the data is said to carry shortcuts outside "
                        "the lungs (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train the three runs again (default: reuse finished runs with the same settings)")


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or values[2] <= 0:
        raise CovidTfError(f"--split expects three fractions train,val,test (train and test above 0), got {text!r}")
    from covid_tf.runs.config import check_fractions_add_up

    return check_fractions_add_up(values)


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list
    config.check_sizes(args.image_size, args.batch_size)  # before TensorFlow is imported or anything read
    from covid_tf.workflows.audit import auc_interval, run_audit

    result = run_audit(args.data, args.out, classes=parse_class_list(args.classes), model=args.model,
                       image_size=args.image_size, epochs=args.epochs, seed=args.seed, threshold=args.threshold,
                       batch_size=args.batch_size, split_fractions=_fractions(args.split), overwrite=args.overwrite,
                       verbose=0 if args.quiet else 2, on_step=print)
    for row in result.table.to_dict("records"):
        fallbacks = f" ({row['roi_fallbacks']} image(s) without plausible lungs used whole)" \
            if row["roi_fallbacks"] else ""
        print(f"{row['variant']:>14} (--roi {row['roi']}): test ROC-AUC {auc_interval(row)}{fallbacks}")
    source = result.source or {}
    if source.get("available"):
        print(f"{'image source':>14}: predicted from simple features with ROC-AUC {auc_interval(source)} "
              f"({len(source['sources'])} sources)")
    else:
        print(f"{'image source':>14}: not probed ({source.get('reason', 'no sources')})")
    print(result.verdict)
    check = result.occlusion or {}
    print(f"occlusion check of the full-image model: {check.get('verdict_line') or check.get('error', 'not run')}")
    print(f"audit.json and audit.png in {result.out_dir} ({result.seconds:.0f} s)")
    return 0
