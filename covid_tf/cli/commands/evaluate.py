"""``evaluate``: metrics, predictions and figures of a saved model on a labelled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from covid_tf import config
from covid_tf.cli import Renamed, add_overlap_arguments
from covid_tf.errors import CovidTfError

HELP = "Evaluate a saved model on labelled images: metrics.json, predictions.csv and figures."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file (its run's config.json names the classes)")
    parser.add_argument("data", help="dataset folder (any supported layout) or label CSV")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the evaluation into")
    parser.add_argument("--split-file", help="a run's split.csv: evaluate only the rows of --subset")
    parser.add_argument("--subset", metavar="NAME",
                        help="split of --split-file to evaluate: train, val or test (default: test with --split-file, "
                        "else every image)")
    parser.add_argument("--split", action=Renamed, hint="the split to evaluate is --subset NAME "
                        "(--split is train,val,test fractions in train and audit)")
    parser.add_argument("--classes", help="keep only these classes of the data, comma-separated, e.g. COVID,Normal")
    parser.add_argument("--class-map", help="rename folders, e.g. CT_COVID=COVID,CT_NonCOVID=NonCOVID")
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument("--threshold", type=float,
                           help="binary models: predict positive iff p(positive) >= this (default 0.5)")
    threshold.add_argument("--threshold-from-val", action="store_true",
                           help="binary models: choose the threshold on the split file's val rows (Youden)")
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="images per batch")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--lungs", action="store_true",
                        help="report the Grad-CAM lung energy of the positive class's images with lung masks from "
                             "the lung segmenter where the data has none (without it: only when the data has masks)")
    add_overlap_arguments(parser)
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="load models with Lambda layers (runs their code: only for models you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --out")


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def overlap_and_source_lines(metrics: dict) -> list[str]:
    """The console lines of ``metrics.json``'s ``all_images`` and ``sources`` (the overlap warning is a note)."""
    lines = []
    everything = metrics.get("all_images")
    if everything:
        lines.append(f"with the {metrics['overlap']['n_copies']} copies of training images: ROC-AUC "
                     f"{_number(everything['roc_auc'])}, accuracy {_number(everything['accuracy'])} "
                     f"(n={everything['n']})")
    sources = metrics.get("sources")
    if sources:
        low, high = sources["within_source_ci95"]
        interval = f" [{_number(low)}, {_number(high)}]" if low is not None else ""
        lines.append(f"within-source ROC-AUC {_number(sources['within_source_roc_auc'])}{interval} "
                     f"({sources['within_source_pairs']} positive-negative pairs of the same source, "
                     f"{sources['n_sources']} sources)")
    return lines


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list, parse_class_map
    from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs, run_folder_of
    from covid_tf.workflows.evaluate import evaluate_model, print_skipped

    config.check_sizes(batch_size=args.batch_size)
    refuse_output_inside_inputs(args.out, [args.data, args.model, *([args.split_file] if args.split_file else [])],
                                read_folders=[run_folder_of(args.model)])
    check_writable_output(args.out, folder=True)
    if args.n_bootstrap < 0:
        raise CovidTfError(f"--n-bootstrap must be 0 or more, got {args.n_bootstrap}")
    result = evaluate_model(
        args.model, args.data, args.out, split_file=args.split_file, split=args.subset,
        classes=parse_class_list(args.classes), class_map=parse_class_map(args.class_map),
        threshold=args.threshold, threshold_from_val=args.threshold_from_val, batch_size=args.batch_size,
        allow_unsafe=args.allow_unsafe, overwrite=args.overwrite, n_bootstrap=args.n_bootstrap, lungs=args.lungs,
        keep_overlap=args.keep_overlap, source_column=args.source_column,
    )
    print_skipped(result.skipped, limit=20)
    for note in result.notes:
        print(note)
    metrics = result.metrics
    threshold = metrics.get("threshold")
    copies = (metrics.get("overlap") or {}).get("n_copies") if "all_images" in metrics else 0
    scope = (result.split or "all images") + (f" without the {copies} copies of training images" if copies else "")
    print(f"{scope}: accuracy {_number(metrics['accuracy'])}, balanced accuracy "
          f"{_number(metrics['balanced_accuracy'])}, ROC-AUC {_number(metrics['roc_auc'])}, ECE "
          f"{_number(metrics['ece'])} (n={metrics['n']}"
          + (f", threshold {threshold:.3f}" if threshold is not None else "") + ")")
    for line in overlap_and_source_lines(metrics):
        print(line)
    for rule, values in (metrics.get("patients") or {}).items():
        print(f"patients ({rule}): accuracy {_number(values['accuracy'])}, ROC-AUC {_number(values['roc_auc'])} "
              f"(n={values['n']})")
    from covid_tf.lungs.energy import summary_line

    energy = metrics.get("lung_energy")
    if energy is not None:
        print(summary_line(energy, f" of {energy['class']} (Grad-CAM on {energy['layer']})"))
        if energy.get("backbone"):  # lung attention: the pooled layer has no heat outside the lungs by construction
            print(summary_line(energy["backbone"], f" of {energy['class']} (Grad-CAM on the backbone's own last "
                                                   f"convolutional layer, {energy['backbone']['layer']})"))
    skipped_note = f", {len(result.skipped)} skipped (skipped.csv)" if result.skipped else ""
    print(f"evaluation written to {result.out_dir} ({len(result.figures)} figures{skipped_note})")
    return 0
