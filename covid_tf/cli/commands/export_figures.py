"""``figures``: redraw a run's figures in the formats a user needs (PNG, PDF, SVG) into another folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Re-export a run's figures as PNG, PDF and/or SVG into another folder."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", type=Path, help="a train --out or evaluate --out folder")
    parser.add_argument("--format", default="png,pdf", help="comma-separated: png, pdf, svg (default png,pdf)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder to write into (not inside the run or its data)")
    parser.add_argument("--subset", metavar="NAME", default="test",
                        help="train runs: the split whose predictions are drawn, test or val (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace figures already in --out")


def run(args: argparse.Namespace) -> int:
    from covid_tf.errors import CovidTfError
    from covid_tf.workflows.export_figures import export_figures, parse_formats

    if args.subset not in ("test", "val"):
        raise CovidTfError(f"--subset: test or val, got {args.subset!r}")
    formats = parse_formats(args.format)  # a bad --format fails before TensorFlow is imported
    written = export_figures(args.run, args.out, formats, split=args.subset, overwrite=args.overwrite)
    print(f"{len(written)} figure file(s) ({', '.join(formats)}) written to {args.out}")
    return 0
