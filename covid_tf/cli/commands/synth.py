"""``python -m covid_tf synth``: write a synthetic chest X-ray dataset (no TensorFlow)."""

from __future__ import annotations

import argparse

from covid_tf import config
from covid_tf.cli import add_synthetic_arguments

HELP = "Write synthetic chest X-rays (images, lung and lesion masks, metadata.csv) in the Radiography layout."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``synth`` command."""
    add_synthetic_arguments(parser, config.SYNTHETIC_DIR, config.BINARY_CLASSES,
                            "class names; COVID, Normal, Viral Pneumonia and Lung Opacity have their own lesions, "
                            "any other name gets small nodules")
    parser.add_argument("--per-class", type=int, default=100, help="images per class (default: %(default)s)")
    parser.add_argument("--size", type=int, default=config.IMAGE_SIZE,
                        help="image side in pixels (default: %(default)s)")
    parser.add_argument("--patients-per-class", type=int, default=None,
                        help="patients per class; their images share anatomy (default: one image per patient)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--difficulty", type=float, default=None,
                        help="0 (obvious lesions) to 1 (subtle lesions) (default: 0.2)")
    parser.add_argument("--shortcut-class", default=None,
                        help="class whose images carry a burned-in corner marker with --shortcut-probability "
                        "(other classes: 1 - that probability)")
    parser.add_argument("--shortcut-probability", type=float, default=None,
                        help="probability of the marker on --shortcut-class images (default: 0.9 with "
                        "--shortcut-class)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder not made by this command (nothing there is deleted)")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print a short summary."""
    from covid_tf.workflows.synth import synthesize

    made = synthesize(args.out, classes=args.classes, per_class=args.per_class, size=args.size,
                      patients_per_class=args.patients_per_class, seed=args.seed, difficulty=args.difficulty,
                      shortcut_class=args.shortcut_class, shortcut_probability=args.shortcut_probability,
                      overwrite=args.overwrite)
    metadata = made.metadata
    counts = metadata["label"].value_counts()
    per_class = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in made.classes)
    patients = metadata["patient_id"].nunique()
    print(f"wrote {len(metadata)} images ({per_class}; {patients} patients; {args.size} px) to {args.out}")
    if args.shortcut_class:
        print(f"marker on {int(metadata['has_marker'].sum())} images (shortcut class {args.shortcut_class})")
    rate = len(metadata) / max(made.seconds, 1e-9)
    print(f"{made.seconds:.1f} s ({rate:.0f} images/s); metadata: {args.out}/metadata.csv")
    return 0
