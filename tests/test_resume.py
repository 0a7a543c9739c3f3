"""A training run killed with SIGKILL resumes where it stopped, and a finished run is never overwritten.

The run is ``python -m covid_tf train`` in a child process (a ``ForkServer`` child, ``tests/forkserver.py``: the
same command line, started without importing TensorFlow again) on tiny synthetic data. It is killed as soon
as ``checkpoints/backup_all/training_metadata.json`` (written by Keras' ``BackupAndRestore`` after
each finished epoch) exists, then the same command runs again: it must start after the epochs that
were done, write one ``history.csv`` row per epoch (the killed run's rows come from
``checkpoints/history.partial.csv``), and leave no temporary files.
"""

from __future__ import annotations

import json
import re
import time

import pandas as pd
import pytest

from covid_tf.cli import main
from tests.helpers import TINY_TRANSFER_SCRIPT

EPOCHS = 6
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    assert main(["synth", "--out", str(out), "--per-class", "12", "--size", "32", "--seed", "1"]) == 0
    return out


def _command(data, run):
    return ["train", str(data), "--out", str(run), "--image-size", "32", "--epochs", str(EPOCHS), "--batch-size", "4",
            "--patience", "100"]


def _kill_when_done(server, child, metadata) -> None:
    """Wait until ``metadata`` says an epoch is finished (or the child ended), then SIGKILL the child."""
    deadline = time.monotonic() + 240
    while not _finished_epochs(metadata) and server.poll(child) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill(child)


def _finished_epochs(metadata) -> int:
    """Epochs done according to BackupAndRestore's metadata (0 while absent or half-written)."""
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_killed_run_resumes_after_the_finished_epochs(server, tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    metadata = run / "checkpoints" / "backup_all" / "training_metadata.json"
    _kill_when_done(server, server.start(_command(tiny_data, run)), metadata)
    assert metadata.exists(), "the first run never finished an epoch"
    assert not (run / "metrics.json").exists(), "the first run finished before it could be killed"
    partial = pd.read_csv(run / "checkpoints" / "history.partial.csv")
    done = len(partial)
    assert 1 <= done < EPOCHS

    second = server.run(_command(tiny_data, run))
    assert second.code == 0, second.stderr[-3000:]
    assert TRACEBACK not in second.stderr
    first_epoch = re.search(r"Epoch (\d+)/(\d+)", second.stdout)
    assert first_epoch is not None, second.stdout
    # The resumed run starts after the epochs that were done (Keras numbers epochs from 1).
    assert int(first_epoch.group(1)) >= done + 1 > 1 and int(first_epoch.group(2)) == EPOCHS

    for name in ("model.keras", "metrics.json", "history.csv", "split.csv", "config.json", "skipped.csv"):
        assert (run / name).is_file(), name
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(EPOCHS))
    assert history["val_loss"].notna().all() and set(history["phase"]) == {"train"}
    # The best epoch survives the kill: best.json names it and history.csv marks exactly that epoch.
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert history.loc[history["best"], "epoch"].tolist() == [best["best_epoch"]]
    assert not (run / "checkpoints" / "backup_all").exists()  # removed when training ended normally
    leftovers = [p for p in run.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers

    # A finished run is not overwritten without --overwrite: exit 2, one error line, files untouched.
    before = {p: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    code = main(["train", str(tiny_data), "--out", str(run), "--image-size", "32", "--epochs", str(EPOCHS),
                 "--batch-size", "4", "--patience", "100", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "--overwrite" in err and "finished run" in err
    assert {p: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_run_killed_while_fine_tuning_resumes_without_retraining_the_head(server, tiny_data, tmp_path):
    """The two-phase machinery (head_done.json, backup_fine_tune) is the same for every transfer model: the
    tiny one of ``tests.helpers`` runs it in seconds where resnet18 took a minute or more to compile."""
    run = tmp_path / "run"
    script = tmp_path / "tiny_transfer.py"
    script.write_text(TINY_TRANSFER_SCRIPT)
    command = [*_command(tiny_data, run), "--model", "tiny", "--fine-tune-epochs", "3"]
    command[command.index("--epochs") + 1] = "2"
    metadata = run / "checkpoints" / "backup_fine_tune" / "training_metadata.json"
    _kill_when_done(server, server.start(command, script=script), metadata)
    assert (run / "checkpoints" / "head_done.json").is_file(), "the first run never finished its head phase"
    assert not (run / "metrics.json").exists(), "the first run finished before it could be killed"

    second = server.run(command, script=script)
    assert second.code == 0, second.stderr[-3000:]
    epochs = [int(number) for number in re.findall(r"Epoch (\d+)/\d+", second.stdout)]
    # Keras numbers epochs from 1: the head phase was epochs 1-2, and the resumed run trains none of them.
    assert epochs and min(epochs) >= 4, second.stdout[-2000:]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(5))
    assert history["phase"].tolist() == ["head"] * 2 + ["fine_tune"] * 3
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_unfinished_run_with_other_settings_is_refused(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(tiny_data), "epochs": 99}))
    code = main(["train", str(tiny_data), "--out", str(run), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unfinished run with other settings" in err and "epochs" in err
    assert json.loads((run / "config.json").read_text())["epochs"] == 99


def test_an_unfinished_run_of_an_older_version_without_newer_settings_resumes(tiny_data, tmp_path):
    """A config.json written before a setting existed lacks its key: that means the setting's default."""
    from covid_tf.errors import CovidTfError
    from covid_tf.runs.config import TrainConfig
    from covid_tf.workflows.train import _check_run_dir

    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(data=str(tiny_data), epochs=2)
    older = {key: value for key, value in cfg.to_dict().items() if key not in ("mixup", "label_smoothing")}
    (run / "config.json").write_text(json.dumps(older))
    _check_run_dir(run, cfg, overwrite=False)  # resumes: no error
    with pytest.raises(CovidTfError, match="other settings \\(label_smoothing\\)"):
        _check_run_dir(run, TrainConfig(data=str(tiny_data), epochs=2, label_smoothing=0.1), overwrite=False)


def test_best_checkpoint_state_survives_a_new_callback(tmp_path):
    """What a resumed run sees: a fresh callback takes over the best key and epoch from best.json."""
    import keras
    import numpy as np

    from covid_tf.training.callbacks import BestModelCheckpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    path = tmp_path / "best.weights.h5"
    first = BestModelCheckpoint(path)
    first.set_model(model)
    first.on_train_begin()
    first.on_epoch_end(0, {"val_accuracy": 0.5, "accuracy": 0.4})
    best_weights = [w.copy() for w in model.get_weights()]
    first.on_epoch_end(1, {"val_accuracy": 0.4, "accuracy": 0.9})
    assert json.loads((tmp_path / "best.json").read_text())["best_epoch"] == 0

    model.set_weights([w + 1.0 for w in model.get_weights()])  # training went on after the kill
    resumed = BestModelCheckpoint(path)
    resumed.set_model(model)
    resumed.on_train_begin()
    assert resumed.best_epoch == 0 and resumed.best_key == (0.5, 0.4)
    resumed.on_epoch_end(2, {"val_accuracy": 0.45, "accuracy": 1.0})  # worse than epoch 0: not taken
    assert resumed.best_epoch == 0
    resumed.on_train_end()
    for restored, expected in zip(model.get_weights(), best_weights):
        np.testing.assert_array_equal(restored, expected)
