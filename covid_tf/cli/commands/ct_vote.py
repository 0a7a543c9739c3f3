"""``python -m covid_tf ct-vote``: patient-level labels from slice predictions (no TensorFlow)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Vote slice predictions into one label per patient (and per test folder)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``ct-vote`` command."""
    parser.add_argument(
        "predictions",
        help="CSV with path,predicted and prob_<Class> columns (patient_id, label, folder optional)",
    )
    parser.add_argument("--out", required=True, type=Path, help="patients CSV to write (one row per patient)")
    parser.add_argument(
        "--rule", choices=("majority", "mean"), default="majority",
        help="majority: most slice votes, ties to the highest mean probability, then class order; "
        "mean: highest mean probability, ties to class order (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--classes", default=None,
        help="comma-separated class order (default: the order of the prob_<Class> columns)",
    )  # fmt: skip
    parser.add_argument(
        "--patient-level", type=int, default=1,
        help="without a patient_id column, the patient is the folder this many levels above each file "
        "(1: parent folder; 2 for dicom2png's <patient>/<series>/slice.png) (default: %(default)s)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Vote, write the patients CSV (and per-folder CSVs) and print a summary."""
    from covid_tf.evaluation import patients as patient_votes
    from covid_tf.evaluation import tables
    from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs, run_folder_of

    # Predictions inside an evaluate or train folder (metrics.json, config.json): that folder is read too.
    folder = run_folder_of(args.predictions)
    read_folders = [folder] if any((folder / name).is_file() for name in ("metrics.json", "config.json")) else []
    refuse_output_inside_inputs(args.out, [args.predictions], folder=False, read_folders=read_folders)
    check_writable_output(args.out, folder=False)

    classes = None
    if args.classes:
        classes = [name.strip() for name in str(args.classes).split(",") if name.strip()]
    table = tables.load_predictions(args.predictions)
    patients = patient_votes.vote(
        table, classes, rule=args.rule, patient_level=args.patient_level, source=str(args.predictions)
    )
    for note in patients.attrs.get("notes", []):
        print(f"note: {note}")
    written = tables.write_patient_csvs(patients, args.out, [args.predictions], read_folders)
    counts = patients["predicted"].value_counts()
    summary = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in patients.attrs["class_names"])
    ties = int(patients["tie"].sum())
    print(f"{len(patients)} patients from {len(table)} slices (rule {args.rule}): {summary}; {ties} tie(s) broken")
    if "correct" in patients.columns:
        labelled = patients[patients["label"] != ""]
        if len(labelled):
            print(f"patient accuracy {labelled['correct'].mean():.3f} on {len(labelled)} labelled patients")
    for path in written:
        print(f"wrote {path}")
    return 0
