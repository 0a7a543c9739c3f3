"""``python -m covid_tf ct-vote``: patient-level labels from slice predictions (no TensorFlow)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Vote slice predictions into one label per patient (and per test folder)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``ct-vote`` command."""
    parser.add_argument("predictions",
                        help="CSV with path,predicted and prob_<Class> columns (patient_id, label, folder optional)")
    parser.add_argument("--out", required=True, type=Path, help="patients CSV to write (one row per patient)")
    parser.add_argument("--rule", choices=("majority", "mean"), default="majority",
                        help="majority: most slice votes, ties to the highest mean probability, then class order; "
                        "mean: highest mean probability, ties to class order (default: %(default)s)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class order (default: the order of the prob_<Class> columns)")
    parser.add_argument("--patient-level", type=int, default=1,
                        help="without a patient_id column, the patient is the folder this many levels above each "
                        "file (1: parent folder; 2 for dicom2png's <patient>/<series>/slice.png) "
                        "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Vote, write the patients CSV (and per-folder CSVs) and print a summary."""
    from covid_tf.data.discover import parse_class_list
    from covid_tf.workflows.ct_vote import vote_predictions

    votes = vote_predictions(args.predictions, args.out, classes=parse_class_list(args.classes), rule=args.rule,
                             patient_level=args.patient_level)
    for note in votes.notes:
        print(f"note: {note}")
    summary = ", ".join(f"{name} {count}" for name, count in votes.counts.items())
    ties = int(votes.patients["tie"].sum())
    print(f"{len(votes.patients)} patients from {votes.n_slices} slices (rule {args.rule}): {summary}; "
          f"{ties} tie(s) broken")
    if len(votes.labelled):
        print(f"patient accuracy {votes.labelled['correct'].mean():.3f} on {len(votes.labelled)} labelled patients")
    for path in votes.written:
        print(f"wrote {path}")
    return 0
