"""Resuming a killed run: the finished head phase, Keras's restored start epoch, the epochs logged before.

``keras.callbacks.BackupAndRestore`` (one folder per phase, :mod:`covid_tf.training.fit`) restores the
model, the optimizer and the epoch of an interrupted ``fit``. This module adds what it does not cover:
a fine-tuning run killed after its head phase keeps that phase (``checkpoints/head.weights.h5`` and
``head_done.json``), and the history of the resumed run is completed with the epochs logged before.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pandas as pd

from covid_tf.io_utils import atomic_write, atomic_write_json

HEAD_MARKER = "head_done.json"
HEAD_WEIGHTS = "head.weights.h5"


def head_marker(run_dir: Path | None) -> Path | None:
    """The file that marks a finished head phase in ``run_dir`` (None without a run folder)."""
    return run_dir / "checkpoints" / HEAD_MARKER if run_dir is not None else None


def load_finished_head(model: keras.Model, marker: Path | None) -> int | None:
    """Load the weights of a finished head phase and return the epoch fine-tuning starts at, or None."""
    if marker is None or not marker.is_file():
        return None
    model.load_weights(marker.with_name(HEAD_WEIGHTS))
    return int(json.loads(marker.read_text())["fine_tune_start"])


def save_finished_head(model: keras.Model, marker: Path | None, fine_tune_start: int) -> None:
    """Keep the weights at the end of the head phase, then the marker (so the marker means they are there)."""
    if marker is None:
        return
    atomic_write(marker.with_name(HEAD_WEIGHTS), model.save_weights)
    atomic_write_json(marker, {"fine_tune_start": fine_tune_start})


def forget_restored_epoch(model: keras.Model) -> None:
    """Let the next ``fit`` start at its own ``initial_epoch=``.

    ``BackupAndRestore`` stores the epoch it restored on the model, and Keras 3's ``fit`` prefers it to
    ``initial_epoch=`` and never clears it (``keras/src/backend/tensorflow/trainer.py``); there is no
    public way to reset it, so this one place does.
    """
    model._initial_epoch = None


def complete_history(history: pd.DataFrame, partial_log: Path, head_epochs: int | None) -> pd.DataFrame:
    """Add the epochs that a killed run logged before this (resumed) run, one row per epoch."""
    if not partial_log.is_file() or partial_log.stat().st_size == 0:
        return history
    try:
        logged = pd.read_csv(partial_log)
    except (OSError, ValueError, pd.errors.ParserError):
        return history
    if "epoch" not in logged:
        return history
    earlier = logged[~logged["epoch"].isin(history["epoch"])].drop_duplicates("epoch", keep="last")
    if earlier.empty:
        return history
    earlier = earlier.copy()
    default_phase = history["phase"].iloc[0] if len(history) else "train"
    earlier.insert(1, "phase", [
        "fine_tune" if head_epochs is not None and epoch >= head_epochs else
        ("head" if head_epochs is not None else default_phase) for epoch in earlier["epoch"]
    ])
    merged = pd.concat([earlier, history], ignore_index=True)
    columns = [*history.columns, *(c for c in merged.columns if c not in history.columns)]
    return merged.sort_values("epoch", kind="stable").reset_index(drop=True).reindex(columns=columns)
