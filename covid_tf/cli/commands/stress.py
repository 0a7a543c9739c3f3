"""``stress``: how a trained model's ROC-AUC holds up when the same films are acquired differently (exposure,
contrast, blur, noise, JPEG, resolution, framing, burned-in text; :mod:`covid_tf.workflows.stress`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covid_tf import config
from covid_tf.cli import add_selection_arguments
from covid_tf.data.shifts import SHIFTS

HELP = ("Stress check: ROC-AUC of a saved model on the same images under acquisition shifts (exposure, contrast, "
        "blur, noise, JPEG, resolution, border crop and pad, burned-in text, inverted LUT); stress.json, stress.png "
        "and a one-line summary (mean drop, worst shift).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shift_list = "; ".join(f"{name}: {shift.strength} ({', '.join(f'{s:g}' for s in shift.strengths)})"
                           for name, shift in SHIFTS.items())
    parser.add_argument("model", help="a .keras model file of any covid_tf run (its config.json gives the classes "
                        "and the lung ROI, applied after the shift)")
    parser.add_argument("data", help="labelled dataset folder (any supported layout) or label CSV; a lung-ROI "
                        "model's masks from its masks/ folders, else from the shipped segmenter (cached)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for stress.json and stress.png (not inside DATA or the model's run folder)")
    parser.add_argument("--shifts", default=None, metavar="NAME[:S[:S...]],...",
                        help="shifts to apply, comma-separated, each at its default strengths or at the strengths "
                        f"after colons (e.g. gamma:0.5:1,blur); default: all. Strength s means: {shift_list}")
    add_selection_arguments(parser)
    parser.add_argument("--max-images", type=int, default=None,
                        help="check a seeded sample of at most this many images, stratified by class (every image "
                        "goes through the model once per shift and strength)")
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE,
                        help="model inputs per batch (each image gives one per shift and strength, plus itself)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--seed", type=int, default=config.SEED,
                        help="seed of the shifts, the sample and the bootstrap")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="load models with Lambda layers (runs their code: only for models you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier stress check in --out")


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list, parse_class_map
    from covid_tf.evaluation.stress import interval, shift_label
    from covid_tf.workflows.stress import StressOptions, run_stress

    options = StressOptions(
        shifts=args.shifts, split_file=args.split_file, subset=args.subset, classes=parse_class_list(args.classes),
        class_map=parse_class_map(args.class_map), max_images=args.max_images, batch_size=args.batch_size,
        n_bootstrap=args.n_bootstrap, seed=args.seed, allow_unsafe=args.allow_unsafe, overwrite=args.overwrite)
    result = run_stress(args.model, args.data, args.out, options,
                        on_step=None if args.quiet else lambda line: print(line, file=sys.stderr))
    for note in result.notes:
        print(note)
    print(f"{result.summary['auc']} [95% CI], n={result.summary['n']}: original {interval(result.rows[0])}")
    for row in result.rows[1:]:
        drop = f"drop {row['drop']:+.3f}" if row["drop"] is not None else "drop undefined"
        print(f"  {shift_label(row)}: {interval(row)} ({drop})")
    print(result.line)
    print(f"stress.json and stress.png in {result.out_dir}")
    return 0
