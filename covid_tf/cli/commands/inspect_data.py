"""``inspect``: what a dataset holds: classes, sizes, modes, skipped files, duplicate groups."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

HELP = "Summarise a dataset: class counts, image sizes and modes, skipped files, duplicate groups."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="dataset folder (any supported layout) or label CSV")
    parser.add_argument("--classes", help="keep only these classes, comma-separated (e.g. COVID,Normal)")
    parser.add_argument("--class-map", help="rename folders, e.g. CT_COVID=COVID,CT_NonCOVID=Normal")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true", help="exit with code 1 when any file was skipped")


def summarize(index) -> dict:
    """The JSON summary of a ``DatasetIndex``."""
    frame = index.frame
    sizes = Counter(f"{w}x{h}" for w, h in zip(frame["width"], frame["height"]))
    return {
        "root": str(index.root),
        "layout": index.layout,
        "n_images": int(len(frame)),
        "classes": index.class_counts(),
        "splits": {str(k): int(v) for k, v in frame["split"].value_counts().items() if k},
        "patients": int(frame["patient_id"].nunique()),
        "sizes": dict(sizes.most_common()),
        "modes": {str(k): int(v) for k, v in frame["mode"].value_counts().items()},
        "with_lung_masks": int((frame["mask_path"] != "").sum()),
        "with_lesion_masks": int((frame["lesion_path"] != "").sum()),
        "skipped": [{"path": s.path, "reason": s.reason} for s in index.skipped],
        "duplicates": index.duplicate_groups,
    }


def run(args: argparse.Namespace) -> int:
    from covid_tf.data.discover import discover, parse_class_list, parse_class_map

    index = discover(args.data, classes=parse_class_list(args.classes), class_map=parse_class_map(args.class_map))
    for note in index.notes:
        print(f"warning: {note}", file=sys.stderr)
    summary = summarize(index)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
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
    return 1 if args.strict and summary["skipped"] else 0
