"""Start-up: ``python -m covid_tf --help`` (and every ``COMMAND --help``) imports neither TensorFlow nor Keras."""

from __future__ import annotations

import json
import subprocess
import sys

from covid_tf.cli import COMMANDS

HEAVY_MODULES = ("tensorflow", "keras")

# Runs in a fresh interpreter, so modules imported by the test session do not count.
PROBE = """
import contextlib, io, json, sys
from covid_tf import cli
argv = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        cli.main(argv)
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "help": out.getvalue(),
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}))
"""


def probe(argv: list[str]) -> dict:
    completed = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                               check=True, timeout=120)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_no_tensorflow():
    result = probe(["--help"])
    assert result["code"] == 0
    assert all(name in result["help"] for name in COMMANDS)
    assert result["heavy"] == [], f"--help imported {result['heavy'][:5]}"


def test_every_command_help_imports_no_tensorflow():
    for name in COMMANDS:
        result = probe([name, "--help"])
        assert result["code"] == 0 and "usage:" in result["help"], name
        assert result["heavy"] == [], f"{name} --help imported {result['heavy'][:5]}"
