"""TensorFlow's C++ start-up lines stay out of stderr once covid_tf is imported; real errors do not."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys

from covid_tf import tf_quiet
from covid_tf.cli import main

START_UP_MARKERS = ("I0000", "E0000", "absl::InitializeLog", "oneDNN", "cuInit", "cpu_feature_guard")

PROBE = """
import covid_tf.tf_quiet
import keras
import tensorflow as tf
print(float(tf.constant(1.0) + 1.0))
raise ValueError("a real error")
"""


def test_importing_tensorflow_prints_no_start_up_lines_but_errors_show():
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                               env=environment)
    assert completed.stdout.strip() == "2.0"
    assert completed.returncode == 1 and "ValueError: a real error" in completed.stderr
    noise = [line for line in completed.stderr.splitlines() if any(m in line for m in START_UP_MARKERS)]
    assert not noise, noise


def test_captured_lines_that_are_not_noise_are_replayed(capfd):
    with tf_quiet.quiet_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796051378.525341   12691 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1796051392.581872   12691 cuda_platform.cc:52] failed call to cuInit: ...\n")
        os.write(2, b"E0000 00:00:1796051392.581872   12691 op_kernel.cc:1] a kernel failed to load\n")
        os.write(2, b"Traceback (most recent call last):\n")
    stderr = capfd.readouterr().err
    assert stderr == (
        "E0000 00:00:1796051392.581872   12691 op_kernel.cc:1] a kernel failed to load\n"
        "Traceback (most recent call last):\n"
    )


def test_noise_classification():
    assert tf_quiet.is_noise("I0000 00:00:17.5   1 cudart_stub.cc:31] Could not find cuda drivers on your machine")
    assert tf_quiet.is_noise("To enable the following instructions: AVX2 FMA, in other operations, rebuild")
    assert not tf_quiet.is_noise("F0000 00:00:17.5   1 cuda_dnn.cc:1] Check failed: status")
    assert not tf_quiet.is_noise("UserWarning: something in Python")


NODE_DEF = ("E0000 00:00:1796065353.381083    1035 node_def_util.cc:682] NodeDef mentions attribute "
            "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; ...> Unknown attributes "
            "will be ignored. NodeDef: {{node ParallelMapDatasetV2/_3}}")
ONE_DNN = ("E0000 00:00:1796065377.392859    1035 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512. "
           "Falling back to the default Eigen-based implementation if present.")
CUDA_ERROR = "E0000 00:00:1796065377.392859    1035 cuda_driver.cc:1] CUDA error: out of memory"
FILTERED = f"""
import os, sys
from covid_tf import tf_quiet
print(tf_quiet.filter_stderr(), os.isatty(2), flush=True)
os.write(2, {NODE_DEF!r}.encode() + b"\\n")
os.write(2, {CUDA_ERROR!r}.encode() + b"\\n")
os.write(2, b"45%|####")  # a progress bar: the rest of its line comes later
os.write(2, b"    |\\n")
os.write(2, {ONE_DNN!r}.encode() + b"\\n")
print("a Python line", file=sys.stderr)
"""


def _environment(**changes: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    return {**environment, **changes}


def test_runtime_noise_is_the_two_known_lines_only():
    assert tf_quiet.is_runtime_noise(NODE_DEF) and tf_quiet.is_runtime_noise(ONE_DNN)
    assert tf_quiet.is_noise(NODE_DEF) and tf_quiet.is_noise(ONE_DNN)
    assert not tf_quiet.is_runtime_noise(CUDA_ERROR)  # start-up noise, a real error later
    assert not tf_quiet.is_runtime_noise(NODE_DEF.replace("use_unbounded_threadpool", "another_attribute"))
    assert not tf_quiet.is_runtime_noise("")
    assert not tf_quiet.is_runtime_noise("I0000 00:00:17.5   1 port.cc:153] oneDNN custom operations are on.")


def test_filter_drops_the_known_lines_and_passes_the_rest_in_order():
    completed = subprocess.run([sys.executable, "-c", FILTERED + "raise ValueError('a real error')"],
                               capture_output=True, text=True, timeout=120, env=_environment())
    assert completed.stdout == "True False\n" and completed.returncode == 1
    lines = completed.stderr.splitlines()
    assert lines[:3] == [CUDA_ERROR, "45%|####    |", "a Python line"]
    assert lines[3].startswith("Traceback") and lines[-1] == "ValueError: a real error"
    assert "NodeDef" not in completed.stderr and "DT_BOOL" not in completed.stderr


def test_filter_passes_on_the_last_lines_before_a_crash():
    completed = subprocess.run([sys.executable, "-c", FILTERED + "os.abort()"], capture_output=True, text=True,
                               timeout=120, env=_environment())
    assert completed.returncode < 0 and completed.stderr.endswith("a Python line\n")


def test_filter_keeps_a_terminal_a_terminal():
    reader, writer = pty.openpty()
    completed = subprocess.run([sys.executable, "-c", FILTERED], stdout=subprocess.PIPE, stderr=writer, text=True,
                               timeout=120, env=_environment())
    os.close(writer)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once everything is read
        while chunk := os.read(reader, 1 << 16):
            seen += chunk
    os.close(reader)
    assert completed.stdout == "True True\n"  # progress bars and isatty checks still see a terminal
    assert seen.decode().replace("\r\n", "\n") == f"{CUDA_ERROR}\n45%|####    |\na Python line\n"


def test_full_logging_leaves_stderr_unfiltered():
    completed = subprocess.run([sys.executable, "-c", FILTERED], capture_output=True, text=True, timeout=120,
                               env=_environment(TF_CPP_MIN_LOG_LEVEL="0"))
    assert completed.stdout == "False False\n" and NODE_DEF in completed.stderr and ONE_DNN in completed.stderr


def test_main_called_with_arguments_leaves_stderr_alone(tmp_path):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert not tf_quiet._FILTER


def test_ctrl_c_interrupts_the_command_and_its_last_words_still_show():
    # A terminal's Ctrl-C state, whatever the test process left to its children (a blocked or ignored SIGINT is
    # inherited through exec: a flaky 60 s hang in one `make test`).
    terminal = ("import signal\nsignal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n")
    probe = terminal + FILTERED + ("import time\ntry:\n    print('waiting', flush=True)\n    time.sleep(60)\n"
                                   "except KeyboardInterrupt:\n    print('interrupted', file=sys.stderr)\n")
    process = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_environment(), start_new_session=True)
    assert process.stdout.readline() == "True False\n" and process.stdout.readline() == "waiting\n"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the parent and its filter both receive it
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and stderr.endswith("a Python line\ninterrupted\n")
