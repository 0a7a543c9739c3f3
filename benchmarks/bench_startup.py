"""Benchmark: start-up time of the command line, which must not import TensorFlow for ``--help``.

Times fresh interpreters (median of ``--repeats``) running ``python -m covid_tf --help``, a
command's ``--help`` and, for scale, ``python -c "import tensorflow"``; and lists the heavy
modules (TensorFlow, Keras) each help command imported. ``tests/test_startup.py`` asserts the
same imports without timing.

Target: ``python -m covid_tf --help`` answers in under 1 s.

Usage: ``python benchmarks/bench_startup.py [--repeats 7]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import PROJECT_ROOT, table, target, write_result

HEAVY = ("tensorflow", "keras")
# Prints the heavy top-level modules that running the command line with argv imported.
PROBE = (
    "import contextlib, io, sys\n"
    "from covid_tf import cli\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n"
    "        cli.main(sys.argv[1:])\n"
    "    except SystemExit:\n"
    "        pass\n"
    f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
)


def wall_seconds(command: list[str], repeats: int) -> float:
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def heavy_imports(argv: list[str]) -> str:
    completed = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, check=True)
    return completed.stdout.strip() or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the result here (for run_all.py)")
    args = parser.parse_args()

    python = sys.executable
    cases = [
        ("python -m covid_tf --help", [python, "-m", "covid_tf", "--help"], ["--help"]),
        ("python -m covid_tf train --help", [python, "-m", "covid_tf", "train", "--help"], ["train", "--help"]),
        ("python -m covid_tf predict --help", [python, "-m", "covid_tf", "predict", "--help"],
         ["predict", "--help"]),
        ("python -c 'import tensorflow' (for scale)", [python, "-c", "import tensorflow"], None),
    ]
    rows = []
    seconds = {}
    for label, command, argv in cases:
        repeats = args.repeats if argv is not None else 1
        seconds[label] = wall_seconds(command, repeats)
        imported = heavy_imports(argv) if argv is not None else "-"
        rows.append([f"`{label}`", f"{seconds[label]:.3f}", imported])
        print(f"{label:45s} {seconds[label]:.3f} s  heavy imports: {imported}")
    help_seconds = seconds[cases[0][0]]
    result = {
        "title": "Start-up of the command line",
        "summary": f"Fresh interpreter each time, median of {args.repeats} runs (`import tensorflow`: one run).",
        "targets": [target("python -m covid_tf --help", help_seconds, 1.0, "<=", unit=" s")],
        "tables": [table("Start-up", ["command", "seconds", "TensorFlow / Keras imported"], rows)],
        "notes": ["`tests/test_startup.py` asserts that `--help` and every `COMMAND --help` import neither "
                  "TensorFlow nor Keras."],
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
