"""A run killed (SIGKILL) in its last moments, or while its head phase is saved, resumes: never from scratch.

Each case kills ``python -m covid_tf train`` at a set point: a child script of the test (run by the
``ForkServer``, ``tests/forkserver.py``) wraps ``os.replace``, the last step of every atomic write in the run
folder, and sends itself SIGKILL just before (or after) the rename of a named file: ``history.csv`` (the fit
has ended, its backup is the only copy of the trained weights), ``model.keras`` (the final save),
``reliability_diagram.png`` (the figures), ``metrics.json``, and in a two-phase run (head, then fine-tuning)
``head.weights.h5`` and ``head_done.json``. Nothing of this is in the package: the hook lives in the test.

The same command then runs again, and must finish without training any epoch a second time: every epoch
appends one row to ``checkpoints/history.partial.csv`` (Keras's CSVLogger), so after the whole chain the
log holds exactly one row per epoch. The run ends with the full ``history.csv`` (every epoch, in order),
``model.keras``, ``metrics.json``, and no temporary file or backup.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from tests.forkserver import ForkServer
from tests.helpers import TINY_TRANSFER_SCRIPT

TRACEBACK = "Traceback (most recent call last)"
EPOCHS = 3  # one-phase runs
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 2, 2  # two-phase runs

# Registers a two-phase model that compiles in a fraction of a second (as tests/test_hostile_round2.py) and
# kills this process when the run folder's file named by KILL_AT is renamed into place: KILL_AT is
# "<path ending>[#<n-th rename of it>][:after]" (default: the first rename, killed just before it).
KILL_HOOK = '''
import os
import signal

target, _, when = os.environ.get("KILL_AT", "").partition(":")
target, _, nth = target.partition("#")
nth = int(nth or 1)
seen = 0
real_replace = os.replace


def replace(src, dst, *args, **kwargs):
    global seen
    hit = bool(target) and str(dst).endswith(target)
    if hit:
        seen += 1
    if hit and seen == nth and when != "after":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)
    if hit and seen == nth and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace
'''
SCRIPT = KILL_HOOK + TINY_TRANSFER_SCRIPT  # the hook first, then the tiny two-phase model and the command line


@pytest.fixture(scope="module")
def data(server, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"  # 2 classes x 6 images: 4 train, 1 val, 1 test each
    child = server.run(["synth", "--out", out, "--per-class", "6", "--size", "32", "--seed", "2"])
    assert child.code == 0, child.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("script") / "kill_at.py"
    path.write_text(SCRIPT)
    return path


def _argv(data: Path, run: Path, two_phase: bool) -> list:
    common = ["train", data, "--out", run, "--image-size", "32", "--batch-size", "4", "--patience", "100",
              "--precise-bn-images", "0", "--quiet"]
    if two_phase:
        return [*common, "--model", "tiny", "--epochs", str(HEAD_EPOCHS), "--fine-tune-epochs", str(FINE_TUNE_EPOCHS)]
    return [*common, "--model", "small", "--epochs", str(EPOCHS)]


def _logged_rows(run: Path) -> int:
    """Epoch rows in checkpoints/history.partial.csv: one per epoch trained, by every run into ``run``."""
    lines = (run / "checkpoints" / "history.partial.csv").read_text().splitlines()
    return sum(1 for line in lines[1:] if line.strip())


def _kill_chains(server: ForkServer, script: Path, data: Path, tmp_path: Path,
                 chains: dict[str, list[str]], two_phase: bool) -> dict[str, Path]:
    """Run each chain in its own run folder, two at a time (two cores): the command once per kill point of the
    chain (each run must die there), then once more to its end, which must succeed without a traceback."""
    runs = {name: tmp_path / name for name in chains}
    steps = {name: [*kills, None] for name, kills in chains.items()}  # None: the last run, not killed
    running: dict[str, tuple] = {}
    while any(steps.values()) or running:
        for name in [name for name in steps if steps[name] and name not in running][:2 - len(running)]:
            point = steps[name].pop(0)  # a chain's next run starts only once its run before has ended
            child = server.start(_argv(data, runs[name], two_phase), env={"KILL_AT": point} if point else {},
                                 script=script)
            running[name] = (point, child)
        for name, (point, child) in list(running.items()):
            code = server.poll(child)
            if code is None:
                continue
            del running[name]
            if point is not None:
                assert code == -9, f"{name}: the run was not killed at {point} (exit {code}):\n{child.stderr[-3000:]}"
            else:
                assert code == 0, f"{name}: the rerun after {chains[name]} failed:\n{child.stderr[-3000:]}"
                assert TRACEBACK not in child.stderr, child.stderr[-3000:]
        time.sleep(0.02)
    return runs


def _assert_finished_once(run: Path, epochs: int, phases: list[str], kills: list[str]) -> None:
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(epochs)), (kills, history)
    assert history["phase"].tolist() == phases, (kills, history)
    assert history["val_loss"].notna().all(), history
    assert _logged_rows(run) == epochs, f"after kills at {kills} some epochs were trained again"
    assert (run / "metrics.json").is_file() and (run / "model.keras").is_file()
    assert (run / "figures" / "reliability_diagram.png").is_file()
    assert not [p for p in run.rglob("*") if ".tmp" in p.name], list(run.rglob("*.tmp*"))
    assert not list((run / "checkpoints").glob("backup_*")), list((run / "checkpoints").iterdir())


def test_one_phase_run_killed_after_its_last_epoch_is_not_trained_again(server, script, data, tmp_path):
    chains = {
        # just after the fit: nothing of the run is saved yet, the last epoch's backup is all there is
        "after_the_fit": ["history.csv"],
        # killed in its last epoch's backup, then while saving the model, drawing the figures, writing metrics
        "four_kills": [f"backup_all/training_metadata.json#{EPOCHS}:after", "model.keras",
                       "reliability_diagram.png", "metrics.json"],
    }
    runs = _kill_chains(server, script, data, tmp_path, chains, two_phase=False)
    for name, run in runs.items():
        _assert_finished_once(run, EPOCHS, ["train"] * EPOCHS, chains[name])


def test_two_phase_run_killed_at_the_end_of_a_phase_keeps_its_epochs(server, script, data, tmp_path):
    chains = {
        # the head phase has ended; its weights are being kept for fine-tuning
        "head_weights": ["head.weights.h5"],
        # the head's weights are kept, its marker is being written; then fine-tuning ends, then the final save
        "head_marker_then_end": ["head_done.json", "history.csv", "model.keras"],
    }
    runs = _kill_chains(server, script, data, tmp_path, chains, two_phase=True)
    for name, run in runs.items():
        _assert_finished_once(run, HEAD_EPOCHS + FINE_TUNE_EPOCHS,
                              ["head"] * HEAD_EPOCHS + ["fine_tune"] * FINE_TUNE_EPOCHS, chains[name])
