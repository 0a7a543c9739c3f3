"""The ``python -m covid_tf`` command line.

Each sub-command lives in ``covid_tf/commands/<name>.py`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import TensorFlow inside
``run`` only, so ``--help`` answers at once.

Exit codes: 0 success; 1 the command ran but found problems it reports (for example skipped
files with ``--strict``); 2 a usage or input error, printed as one ``error:`` line; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from covid_tf import __version__
from covid_tf.errors import CovidTfError

# Command name -> module under covid_tf.commands.
COMMANDS = {
    "inspect": "inspect_data",
    "synth": "synth",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m covid_tf",
        description="COVID-19 detection on chest X-rays and CT, explained with class activation maps.",
    )
    parser.add_argument("--version", action="version", version=f"covid_tf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"covid_tf.commands.{module_name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CovidTfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
