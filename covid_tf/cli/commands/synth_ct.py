"""``python -m covid_tf synth-ct``: write a small synthetic DICOM CT dataset (no TensorFlow)."""

from __future__ import annotations

import argparse

from covid_tf import config
from covid_tf.cli import add_synthetic_arguments

HELP = "Generate synthetic chest CT series as DICOM files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``synth-ct`` command."""
    add_synthetic_arguments(parser, config.SYNTHETIC_CT_DIR, config.CT_CLASSES,
                            "classes; COVID gets ground-glass opacities, CAP a consolidation, any other name none")
    parser.add_argument("--patients-per-class", type=int, default=3, help="patients per class (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=8, help="slices per patient (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="slice side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty folder (the .dcm files of OUT/<Class>/<patient>/ are replaced)")


def run(args: argparse.Namespace) -> int:
    """Generate the series and print a short summary."""
    from covid_tf.workflows.synth_ct import synthesize_ct

    made = synthesize_ct(args.out, classes=args.classes, patients_per_class=args.patients_per_class,
                         slices=args.slices, size=args.size, seed=args.seed, overwrite=args.overwrite)
    patients = made.metadata["patient_id"].nunique()
    print(
        f"wrote {len(made.metadata)} DICOM slices ({patients} patients, {args.slices} slices of {args.size} px; "
        f"classes {', '.join(made.classes)}) to {args.out}; labels: {args.out}/labels.csv"
    )
    return 0
