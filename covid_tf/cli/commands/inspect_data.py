"""``inspect``: what a dataset holds: classes, sizes, modes, skipped files, duplicate groups; with ``--against``,
its images that are near-copies of images of other datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("Summarise a dataset: class counts, image sizes and modes, skipped files, duplicate groups; --against: "
        "its near-copies of other datasets' images.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder (any supported layout) or label CSV")
    parser.add_argument("--classes", help="keep only these classes, comma-separated (e.g. COVID,Normal)")
    parser.add_argument("--class-map", help="rename folders, e.g. CT_COVID=COVID,CT_NonCOVID=Normal")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true", help="exit with code 1 when any file was skipped")
    parser.add_argument("--against", nargs="+", metavar="OTHER",
                        help="list the images of DATA that are near-copies of images of these datasets (resized, "
                             "re-encoded, cropped, relabelled or mirrored copies count), e.g. a training set")
    parser.add_argument("--out", type=Path,
                        help="with --against: write copies.csv and a contact sheet of the pairs, copies.png, here")


def run_against(args: argparse.Namespace) -> int:
    """``inspect DATA --against OTHER...``: the near-copies, printed and (``--out``) written."""
    from covid_tf.data.discover import parse_class_list, parse_class_map
    from covid_tf.workflows.inspect_data import inspect_against

    result = inspect_against(args.data, args.against, args.out, classes=parse_class_list(args.classes),
                             class_map=parse_class_map(args.class_map))
    if args.json:
        print(json.dumps({"n_images": result.n_images, "n_reference": result.n_reference,
                          "n_copied": result.n_copied, "copies": result.copies.to_dict("records")}, indent=2))
        return 0
    print(f"{result.n_copied} of {result.n_images} images of {args.data} are near-copies of images among the "
          f"{result.n_reference} of {', '.join(map(str, args.against))}")
    for pair in result.copies.drop_duplicates("test_image").head(10).itertuples(index=False):
        print(f"  {pair.test_image}  =  {pair.matched_image}  (similarity {pair.similarity:.3f})")
    if result.n_copied > 10:
        print(f"  ... and {result.n_copied - 10} more")
    if result.files:
        print(f"written: {', '.join(str(path) for path in result.files)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import parse_class_list, parse_class_map
    from covid_tf.workflows.inspect_data import check_options, inspect_dataset

    check_options(args.against, args.out)
    if args.against:
        return run_against(args)
    summary, notes = inspect_dataset(args.data, classes=parse_class_list(args.classes),
                                     class_map=parse_class_map(args.class_map))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 1 if args.strict and summary["skipped"] else 0


def print_summary(summary: dict) -> None:
    """The summary as a short table."""
    print(f"{summary['root']}  (layout: {summary['layout']}, {summary['n_images']} images, "
          f"{summary['patients']} patients)")
    for name, count in summary["classes"].items():
        print(f"  {name:<20} {count:>7}")
    if summary["splits"]:
        print("splits: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    print("sizes:  " + ", ".join(f"{k} ({v})" for k, v in list(summary["sizes"].items())[:5]))
    print("modes:  " + ", ".join(f"{k} ({v})" for k, v in summary["modes"].items()))
    print(f"masks:  {summary['with_lung_masks']} lung, {summary['with_lesion_masks']} lesion")
    print(f"duplicate groups: {len(summary['duplicates'])}")
    for group in summary["duplicates"][:10]:
        print("  " + "  =  ".join(group))
    print(f"skipped: {len(summary['skipped'])}")
    for item in summary["skipped"]:
        print(f"  {item['path']}: {item['reason']}")
