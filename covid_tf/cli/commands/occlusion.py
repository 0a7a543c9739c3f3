"""``occlusion``: does a trained model decide from the lungs? ROC-AUC with the lungs filled and with their
surroundings filled (the counterfactual lung check, :mod:`covid_tf.workflows.occlusion`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covid_tf import config
from covid_tf.cli import add_overlap_arguments, add_selection_arguments
from covid_tf.lungs.roi.modes import MODALITIES

HELP = ("Counterfactual lung check: ROC-AUC of a saved model on the original images, with the lungs filled and "
        "with the outside of the lungs filled; occlusion.json, occlusion.png, occlusion.csv and a verdict.")
# covid_tf.lungs.roi.fills's and roi.inputs's values, spelled out here: the parser imports no TensorFlow.
FILLS = ("mean", "blur", "noise")
DEFAULT_FILLS = "mean,blur"
DEFAULT_DILATION = 0.03


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file of any covid_tf run (its config.json gives the classes "
                        "and the lung ROI, applied after the filling)")
    parser.add_argument("data", help="labelled dataset folder (any supported layout) or label CSV; lung masks from "
                        "its masks/ folders, else from the shipped segmenter (cached)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for occlusion.json, occlusion.png and occlusion.csv (not inside DATA or the "
                        "model's run folder)")
    parser.add_argument("--fills", default=DEFAULT_FILLS,
                        help=f"fills, comma-separated, of {', '.join(FILLS)}: the image's mean grey, a Gaussian blur "
                        "of the image (sigma 8%% of its longer side), Gaussian noise (default: %(default)s)")
    parser.add_argument("--dilation", type=float, default=DEFAULT_DILATION,
                        help="grow the lung mask by this fraction of the image's longer side before filling "
                        "(default: %(default)s)")
    parser.add_argument("--no-segmenter", action="store_true",
                        help="use the dataset's lung masks only, never the lung segmenter (images without a mask "
                        "are left out)")
    add_selection_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE,
                        help="model inputs per batch (each image gives 1 + 2 x fills of them)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--seed", type=int, default=config.SEED, help="seed of the bootstrap and the noise fill")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="load models with Lambda layers (runs their code: only for models you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier occlusion check in --out")
    add_overlap_arguments(parser)
    parser.add_argument("--modality", choices=MODALITIES, default=None,
                        help="whose lung segmenter finds the lungs: xray (the U-Net) or ct (axial CT slices); "
                             "default: the run's (ct for --roi ct-lungs-attention, else xray)")


def _interval(entry: dict) -> str:
    if entry["auc"] is None:
        return "undefined"
    low, high = entry["ci95"]
    return f"{entry['auc']:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list, parse_class_map
    from covid_tf.workflows.occlusion import OcclusionOptions, run_occlusion

    options = OcclusionOptions(
        fills=args.fills, dilation=args.dilation, use_segmenter=not args.no_segmenter, split_file=args.split_file,
        subset=args.subset, classes=parse_class_list(args.classes), class_map=parse_class_map(args.class_map),
        batch_size=args.batch_size, n_bootstrap=args.n_bootstrap, seed=args.seed, allow_unsafe=args.allow_unsafe,
        overwrite=args.overwrite, modality=args.modality, keep_overlap=args.keep_overlap,
        source_column=args.source_column)
    result = run_occlusion(args.model, args.data, args.out, options,
                           on_step=None if args.quiet else lambda line: print(line, file=sys.stderr))
    for note in result.notes:
        print(note)
    summary = result.summary
    results = summary["results"]
    print(f"{summary['auc']} [95% CI], n={summary['n']}: original {_interval(results['original'])}")
    for variant, title in (("lungs_filled", "lungs filled"), ("outside_filled", "outside lungs filled")):
        for fill, entry in results[variant].items():
            print(f"  {title} ({fill}): {_interval(entry)}")
    for fill_key, entry in ((summary.get("sources") or {}).get("within_source") or {}).items():
        print(f"  within-source ({fill_key.replace('_', ' ')}): {_interval(entry)} ({entry['n_pairs']} pairs)")
    print(result.line)
    print(f"occlusion.json, occlusion.png, occlusion.csv and overlap.csv in {result.out_dir}")
    return 0
