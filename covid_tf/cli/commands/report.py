"""``report``: one self-contained HTML page comparing training runs and evaluations."""

from __future__ import annotations

import argparse
from pathlib import Path

from covid_tf.cli import Renamed

HELP = "Write a self-contained HTML report comparing run folders (train runs or evaluate outputs)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders: train --out folders or evaluate --out folders")
    parser.add_argument("--out", required=True, type=Path, help="HTML file to write")
    parser.add_argument("--title", default="covid_tf report", help="the page's title")
    parser.add_argument("--subset", metavar="NAME", default="test",
                        help="which split of train runs to show, test or val (evaluate folders hold one) "
                        "(default: %(default)s)")
    parser.add_argument("--split", action=Renamed, hint="the split to show is --subset test|val "
                        "(--split is train,val,test fractions in train and audit)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from covid_tf.workflows.report import write_report

    path = write_report(args.runs, args.out, title=args.title, subset=args.subset, overwrite=args.overwrite)
    print(f"report on {len(args.runs)} run(s) written to {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
