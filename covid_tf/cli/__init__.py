"""The ``python -m covid_tf`` command line.

Each sub-command lives in ``covid_tf/cli/commands/<module>.py`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``, and is listed in ``COMMANDS`` with the same
help line. Only the module of the command being run is imported, and command modules import
TensorFlow inside ``run`` only, so ``--help`` answers at once.

Exit codes: 0 success; 1 the command ran but found problems it reports (for example skipped
files with ``--strict``); 2 a usage or input error, printed as one ``error:`` line; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from covid_tf import config
from covid_tf.errors import CovidTfError

# Command name -> (module under covid_tf.cli.commands, one-line help).
COMMANDS = {
    "inspect": ("inspect_data", "Summarise a dataset: classes, sizes, modes, skipped files, duplicates."),
    "synth": ("synth", "Generate synthetic chest X-rays in the Radiography Database layout."),
    "train": ("train", "Train a model and write a run directory (model, split, history, metrics)."),
    "dicom2png": ("dicom2png", "Convert DICOM CT slices to windowed 8-bit PNGs with an index.csv."),
    "ct-vote": ("ct_vote", "Vote slice predictions into one label per patient (and per test folder)."),
    "synth-ct": ("synth_ct", "Generate synthetic chest CT series as DICOM files."),
    "evaluate": ("evaluate", "Evaluate a saved model on labelled images: metrics, predictions and figures."),
    "predict": ("predict", "Predict new images (files or folders) with a saved model into a CSV."),
    "figures": ("export_figures", "Re-export a run's figures as PNG, PDF and/or SVG into another folder."),
    "report": ("report", "Write one self-contained HTML report comparing runs or evaluations."),
    "explain": ("explain", "Explain images with a saved model: a heatmap overlay PNG per image and explanations.csv."),
    "segment-train": ("segment_train", "Train a lung segmenter on the images that have masks: model.keras, "
                      "history.csv, metrics.json, figures."),
    "segment": ("segment", "Segment the lungs of images (files, folders or datasets): one mask PNG per image and "
                "lungs.csv."),
    "audit": ("audit", "Shortcut audit: one quick model on the full image, the lungs only and the lungs removed "
              "(same split); audit.json, audit.png and a verdict."),
    "occlusion": ("occlusion", "Counterfactual lung check: ROC-AUC of a saved model on the original images, with the "
                  "lungs filled and with the outside of the lungs filled; occlusion.json, occlusion.png, "
                  "occlusion.csv and a verdict."),
    "stress": ("stress", "Stress check: ROC-AUC of a saved model on the same images under acquisition shifts "
               "(exposure, contrast, blur, noise, JPEG, resolution, border crop and pad, burned-in text, inverted "
               "LUT); stress.json, stress.png and a one-line summary (mean drop, worst shift)."),
}


def help_with_default(action: argparse.Action) -> str:
    """An option's help text that says its default: as written when it mentions one, else with ``(default: X)``
    (``off`` for a flag, ``none`` when unset, ``required`` for a required option) appended."""
    text = action.help or ""
    if "default" in text.lower() or argparse.SUPPRESS in (action.help, action.default):  # also --help, --version
        return text
    if action.required:
        said = "required"
    elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        said = "default: off" if isinstance(action, argparse._StoreTrueAction) else "default: on"
    elif action.default is None:
        said = "default: none"
    else:
        said = "default: %(default)s"
    return f"{text} ({said})".strip()


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help says its default (:func:`help_with_default`)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return help_with_default(action) if action.option_strings else super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if action.option_strings and not action.help:
            action.help = help_with_default(action)  # argparse prints no help line for an option without help
        return super()._format_action(action)


def add_out_argument(parser: argparse.ArgumentParser, help: str, default: object = None) -> None:
    """``--out`` (a Path), plus the positional ``OUT`` it replaces, hidden and deprecated (see :func:`resolve_out`)."""
    parser.add_argument("deprecated_out", nargs="?", default=None, metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=help)
    parser.set_defaults(out_default=default)


def resolve_out(args: argparse.Namespace) -> None:
    """Fill ``args.out`` from the deprecated positional ``OUT`` (one warning; it must agree with ``--out``)
    or the command's default; no default means ``--out`` is required."""
    if "deprecated_out" not in vars(args):
        return
    old, default = vars(args).pop("deprecated_out"), vars(args).pop("out_default")
    if old is not None:
        print(f"warning: the positional OUT is deprecated, use --out {old}", file=sys.stderr)
        if args.out is not None and Path(old) != args.out:
            raise CovidTfError(f"OUT {old} and --out {args.out} differ: give --out only")
        args.out = Path(old)
    if args.out is None:
        if default is None:
            raise CovidTfError(f"{args.command}: --out is required")
        args.out = Path(str(default))


def add_synthetic_arguments(parser: argparse.ArgumentParser, out: Path, classes: Sequence[str],
                            classes_help: str) -> None:
    """``--out`` (default ``out``) and ``--classes`` (comma-separated, default ``classes``; ``classes_help`` says what
    each class gets): where a synthetic dataset goes and what it holds (``synth``, ``synth-ct``)."""
    add_out_argument(parser, f"output folder (default: {out})", default=out)
    parser.add_argument("--classes", default=",".join(classes),
                        help=f"comma-separated {classes_help} (default: %(default)s)")


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--split-file``, ``--subset``, ``--classes`` and ``--class-map``: which labelled images a check reads
    (``occlusion``, ``stress``), as ``evaluate`` selects them."""
    parser.add_argument("--split-file", help="a run's split.csv: check only the rows of --subset")
    parser.add_argument("--subset", metavar="NAME",
                        help="split of --split-file to check: train, val or test (default: test with --split-file, "
                        "else every image)")
    parser.add_argument("--classes", help="keep only these classes of the data, comma-separated, e.g. COVID,Normal")
    parser.add_argument("--class-map", help="rename folders, e.g. CT_COVID=COVID,CT_NonCOVID=NonCOVID")


def add_overlap_arguments(parser: argparse.ArgumentParser) -> None:
    """``--keep-overlap`` and ``--source-column``: the overlap check and the source-aware metrics of ``evaluate``
    and ``occlusion``."""
    parser.add_argument("--keep-overlap", action="store_true",
                        help="keep test images that copy a training or validation image of the model in the headline "
                             "numbers (default: left out; overlap.csv lists them)")
    parser.add_argument("--source-column", metavar="NAME",
                        help="column of the data's CSV (metadata.csv) naming each image's source (hospital, "
                             "collection), for the within-source ROC-AUC (default: 'source' when the CSV has it)")


class Renamed(argparse.Action):
    """A hidden old option name that is refused with a hint at its new name (``help`` holds the hint)."""

    def __init__(self, option_strings: list[str], dest: str, hint: str = "", **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.hint = hint

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        parser.error(f"{option_string} is not an option of this command: {self.hint}")


def program_name() -> str:
    """``covid-tf`` when run as the installed ``covid-tf`` script, else ``python -m covid_tf``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "covid-tf" if name.startswith("covid-tf") else "python -m covid_tf"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser; the options of ``command`` (or of all commands when None) are added.

    Every command also takes ``-q/--quiet``: the ``covid_tf`` logger shows warnings and errors only, and a
    command with a progress display (``train``, ``audit``) turns it off.
    """
    parser = argparse.ArgumentParser(
        prog=program_name(), formatter_class=DefaultsHelpFormatter,
        description="COVID-19 detection on chest X-rays and CT, explained with class activation maps.",
    )
    parser.add_argument("--version", action="version", version=f"covid_tf {config.VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter)
        if command is None or command == name:
            module = importlib.import_module(f"covid_tf.cli.commands.{module_name}")
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run)
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="less output: no progress display, covid_tf log messages below warnings hidden")
    return parser


class StderrLogHandler(logging.Handler):
    """The ``covid_tf`` logger's messages on the current ``sys.stderr``: ``warning: ...``, ``error: ...``, or the
    bare message below warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        print(f"{prefix}{record.getMessage()}", file=sys.stderr)


def configure_logging(quiet: bool) -> None:
    """Send the ``covid_tf`` logger to stderr (once), at INFO, or WARNING with ``-q/--quiet``."""
    logger = logging.getLogger("covid_tf")
    if not any(isinstance(handler, StderrLogHandler) for handler in logger.handlers):
        logger.addHandler(StderrLogHandler())
        logger.propagate = False  # the command line owns the output: no second copy through a root handler
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def os_error_text(error: OSError) -> str:
    """``<file>: <reason>`` of an ``OSError`` (both files of a failed rename)."""
    reason = error.strerror or str(error) or type(error).__name__
    files = [str(name) for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(files)}: {reason}" if files else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (``argv`` None: a program's, ``sys.argv``, with TensorFlow's known
    runtime noise filtered out of stderr for the process's life, :func:`covid_tf.tf_quiet.filter_stderr`)."""
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the output users need.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if argv is None:
        from covid_tf import tf_quiet

        tf_quiet.filter_stderr()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if arg in COMMANDS), "")
    args = build_parser(command).parse_args(argv)
    from covid_tf.io_utils import show_progress

    show_progress(not args.quiet)  # tqdm bars: off with --quiet, and drawn only when stderr is a terminal
    configure_logging(args.quiet)
    try:
        resolve_out(args)
        return int(args.handler(args) or 0)
    except CovidTfError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file system refusal the command did not foresee: still one line
        print(f"error: {os_error_text(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
