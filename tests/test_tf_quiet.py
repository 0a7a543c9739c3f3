"""TensorFlow's C++ start-up lines stay out of stderr once covid_tf is imported; real errors do not."""

from __future__ import annotations

import os
import subprocess
import sys

from covid_tf import tf_quiet

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
