"""``python -m covid_tf dicom2png``: convert DICOM slices to windowed 8-bit PNGs (no TensorFlow)."""

from __future__ import annotations

import argparse
import sys

from covid_tf.cli import add_out_argument

HELP = "Convert DICOM CT slices to windowed 8-bit PNGs (or JPEGs) with an index.csv."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``dicom2png`` command."""
    parser.add_argument("dicom_dir", help="folder with DICOM files (searched recursively; never modified)")
    add_out_argument(parser, "output folder for PNGs, index.csv and skipped.csv (no default: required)")
    parser.add_argument(
        "--window", default="lung",
        help="lung (-600,1500), mediastinal (40,400) or CENTER,WIDTH in HU, e.g. --window=-600,1500 "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--labels", default=None,
        help="CSV patient_id,label for the index's label column (default: DICOM_DIR/labels.csv if present)",
    )  # fmt: skip
    # No argparse choices: --format means "the file format written" in every command (figures: png, pdf, ...).
    parser.add_argument("--format", default="png", dest="image_format",
                        help="png (lossless, default) or jpg (quality 95, as seed 002 converted its slices)")
    parser.add_argument("--size", type=int, default=None, metavar="PIXELS",
                        help="resize every slice to PIXELS x PIXELS (seed 002: 512; default: as stored)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert and print the counts of converted and skipped files."""
    from covid_tf.workflows.dicom2png import dicom_to_png

    converted = dicom_to_png(args.dicom_dir, args.out, window=args.window, labels=args.labels,
                             image_format=args.image_format, size=args.size, overwrite=args.overwrite,
                             progress=False if args.no_progress else None)
    result, window = converted.result, converted.window
    if result.num_converted == 0:
        found = f" ({result.num_skipped} file(s) skipped)" if result.num_skipped else " (the folder holds no files)"
        print(f"warning: no DICOM image converted from {args.dicom_dir}{found}", file=sys.stderr)
    index = result.index
    patients = index["patient_id"].nunique() if len(index) else 0
    series = index["series_uid"].nunique() if len(index) else 0
    print(
        f"converted {result.num_converted} slices ({patients} patients, {series} series; window "
        f"center {window[0]:g}, width {window[1]:g}) to {result.out_dir} in {converted.seconds:.1f} s"
    )
    print(
        f"skipped {result.num_skipped} files"
        + (f" (see {result.out_dir / 'skipped.csv'})" if result.num_skipped else "")
    )
    for row in result.skipped.head(5).itertuples():
        print(f"  {row.path}: {row.reason}")
    if result.num_skipped > 5:
        print(f"  ... and {result.num_skipped - 5} more")
    print(f"index: {result.out_dir / 'index.csv'}")
    return 0
