"""``python -m covid_tf synth-ct``: write a small synthetic DICOM CT dataset (no TensorFlow)."""

from __future__ import annotations

import argparse

from covid_tf import config
from covid_tf.cli import add_out_argument
from covid_tf.errors import CovidTfError

HELP = "Generate synthetic chest CT series as DICOM files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``synth-ct`` command."""
    add_out_argument(parser, f"output folder (default: {config.SYNTHETIC_CT_DIR})", default=config.SYNTHETIC_CT_DIR)
    parser.add_argument(
        "--classes", default=",".join(config.CT_CLASSES),
        help="comma-separated classes; COVID gets ground-glass opacities, CAP a consolidation, "
        "any other name none (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--patients-per-class", type=int, default=3, help="patients per class (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=8, help="slices per patient (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="slice side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=config.SEED, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="write into a non-empty folder (the .dcm files of OUT/<Class>/<patient>/ are replaced)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Generate the series and print a short summary."""
    from covid_tf.io_utils import check_writable_output
    from covid_tf.synthetic import ct as synthetic_ct

    check_writable_output(args.out, folder=True, option="the output folder")

    classes = [name.strip() for name in str(args.classes).split(",") if name.strip()]
    if not classes:
        raise CovidTfError("--classes: give at least one class name, e.g. --classes COVID,CAP,Normal")
    slices = synthetic_ct.generate_ct_dataset(
        args.out,
        classes=classes,
        patients_per_class=args.patients_per_class,
        slices=args.slices,
        size=args.size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    patients = slices["patient_id"].nunique()
    print(
        f"wrote {len(slices)} DICOM slices ({patients} patients, {args.slices} slices of {args.size} px; "
        f"classes {', '.join(classes)}) to {args.out}; labels: {args.out}/labels.csv"
    )
    return 0
