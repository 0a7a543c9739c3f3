"""Scale-out: ``--strategy mirrored`` over two logical CPU devices matches single-device training.

What is compared and why: with a model without BatchNormalization or dropout (the small CNN of
seed 004, ``--dropout 0``, ``--augmentation none``; the baseline's BatchNormalization takes its
statistics per replica, so it cannot match exactly), a mirrored step computes each replica's mean loss over
its half of the global batch and sums the gradients, which equals the single-device gradient on
the whole batch up to float rounding. The batch size is the whole training split, so every epoch
is one step over the same images: the order in which the batches come does not matter (Keras
under a strategy was seen to draw a different shuffle order than without one, which changes the
batches of a multi-step epoch but not the result of a one-step epoch). After two epochs the
losses in history.csv and the predictions of the saved models must agree to 1e-4.

Logical devices must be configured before TensorFlow initialises, so the training runs in a
subprocess (``STRATEGY_SCRIPT``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.errors import CovidTfError
from covid_tf.training import distribute

STRATEGY_SCRIPT = r"""
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from covid_tf.cli import main
from covid_tf.training.distribute import get_strategy
from covid_tf.runs.inference import load_model

data, out = sys.argv[1], sys.argv[2]
common = ["--model", "small", "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--dropout", "0",
          "--augmentation", "none", "--roi-background", "0", "--seed", "7", "--quiet"]  # no random augmentation
codes = {
    "default": main(["train", data, "--out", out + "/default", *common]),
    "mirrored": main(["train", data, "--out", out + "/mirrored", *common, "--strategy", "mirrored",
                      "--devices", "/cpu:0,/cpu:1"]),
}
replicas = get_strategy("mirrored", ["/cpu:0", "/cpu:1"]).num_replicas_in_sync
import pandas as pd
paths = pd.read_csv(out + "/default/split.csv")["path"].tolist()
probabilities = {name: load_model(f"{out}/{name}/model.keras").predict_paths(paths).tolist() for name in codes}
print("RESULT " + json.dumps({"codes": codes, "replicas": replicas, "probabilities": probabilities}))
"""


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_matches_one_device(tmp_path):
    data = tmp_path / "data"
    # 12 per class -> 16 training images (70/15/15): one batch of 16 per epoch.
    assert main(["synth", "--out", str(data), "--per-class", "12", "--size", "32", "--seed", "2"]) == 0
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    result = subprocess.run([sys.executable, "-c", STRATEGY_SCRIPT, str(data), str(tmp_path / "runs")],
                            capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    found = json.loads(line.removeprefix("RESULT "))
    assert found["codes"] == {"default": 0, "mirrored": 0}
    assert found["replicas"] == 2
    runs = {name: tmp_path / "runs" / name for name in ("default", "mirrored")}
    split = {name: pd.read_csv(run / "split.csv") for name, run in runs.items()}
    assert (split["default"]["split"] == "train").sum() == 16
    pd.testing.assert_frame_equal(split["default"], split["mirrored"])
    history = {name: pd.read_csv(run / "history.csv") for name, run in runs.items()}
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(history["mirrored"][column], history["default"][column], rtol=1e-4, atol=1e-5)
    assert json.loads((runs["mirrored"] / "config.json").read_text())["strategy"] == "mirrored"
    np.testing.assert_allclose(found["probabilities"]["mirrored"], found["probabilities"]["default"], atol=1e-4)
    # Not trivially equal: training moved the predictions away from the untrained 50/50.
    assert np.abs(np.asarray(found["probabilities"]["default"]) - 0.5).max() > 1e-3


def test_strategy_names_and_tf_config_are_checked(monkeypatch):
    with pytest.raises(CovidTfError, match="unknown strategy"):
        distribute.get_strategy("tpu")
    with pytest.raises(CovidTfError, match="only be given with the 'mirrored'"):
        distribute.get_strategy("default", ["/cpu:0"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(CovidTfError, match="needs the TF_CONFIG"):
        distribute.get_strategy("multiworker")
    with pytest.raises(CovidTfError, match="not valid JSON"):
        distribute.parse_tf_config("{oops")
    with pytest.raises(CovidTfError, match="'worker' addresses"):
        distribute.parse_tf_config('{"cluster": {}, "task": {"type": "worker", "index": 0}}')
    with pytest.raises(CovidTfError, match="does not name one"):
        distribute.parse_tf_config('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    two = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.parse_tf_config(json.dumps(two)) == two
    assert distribute.is_chief(two) is False
    assert distribute.is_chief({**two, "task": {"type": "worker", "index": 0}}) is True
    assert distribute.is_chief() is True  # no TF_CONFIG: a single machine is its own chief
    assert distribute.get_strategy("default").num_replicas_in_sync == 1


def test_unknown_mirrored_device_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(CovidTfError, match="not found"):
        distribute.get_strategy("mirrored", ["/gpu:7"])


def test_cli_multiworker_without_tf_config_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--per-class", "6", "--size", "32"]) == 0
    capsys.readouterr()
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--image-size", "32", "--epochs", "1",
                 "--strategy", "multiworker", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --strategy multiworker needs the TF_CONFIG")


WORKER_SCRIPT = r"""
import sys
from covid_tf.cli import main
sys.exit(main(["train", sys.argv[1], "--out", sys.argv[2], "--model", "small", "--image-size", "32", "--epochs", "1",
               "--strategy", "multiworker", "--quiet"]))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_local_workers_train_or_fail_with_one_clear_error(tmp_path):
    """Two worker processes on this machine: each either trains or names the Keras limitation, never a traceback."""
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--per-class", "12", "--size", "32", "--seed", "2"]) == 0
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3",
               "CUDA_VISIBLE_DEVICES": "-1"}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(data), str(tmp_path / f"run{index}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ))
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert "Traceback" not in err, err[-3000:]
        if process.returncode == 2:
            assert "keras-team/keras#20585" in err and "--strategy mirrored" in err
        else:
            assert process.returncode == 0, err[-3000:]
