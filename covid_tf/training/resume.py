"""Resuming a killed run: the finished head phase, Keras's restored start epoch, the epochs logged before.

``SafeBackupAndRestore`` (one folder per phase, ``checkpoints/backup_<phase>``, :mod:`covid_tf.training.fit`)
restores the model, the optimizer and the epoch of an interrupted ``fit``. This module adds what it does not
cover: a fine-tuning run killed after its head phase keeps that phase (``checkpoints/head.weights.h5`` and
``head_done.json``), and the history of the resumed run is completed with the epochs logged before.

A phase's backup outlives its fit and is deleted (:func:`discard_backups`) only once what the fit produced
is saved: the head phase's weights and marker, or the run's ``model.keras`` and ``history.csv``. A kill at
any instant in between finds the backup of the last epoch, and the rerun trains no epoch again.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import pandas as pd

from covid_tf.io_utils import atomic_write, atomic_write_json

HEAD_MARKER = "head_done.json"
HEAD_WEIGHTS = "head.weights.h5"
PARTIAL_LOG = "history.partial.csv"  # Keras's CSVLogger, appended to by every (resumed) run


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


def discard_backups(run_dir: Path | None, phase: str = "*") -> None:
    """Delete the backups of ``phase`` (all phases by default) once what they kept is saved elsewhere."""
    if run_dir is None:
        return
    for folder in sorted((run_dir / "checkpoints").glob(f"backup_{phase}")):
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def forget_restored_epoch(model: keras.Model) -> None:
    """Let the next ``fit`` start at its own ``initial_epoch=``.

    ``BackupAndRestore`` stores the epoch it restored on the model, and Keras 3's ``fit`` prefers it to
    ``initial_epoch=`` and never clears it (``keras/src/backend/tensorflow/trainer.py``); there is no
    public way to reset it, so this one place does.
    """
    model._initial_epoch = None


def _epoch_of(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def read_partial_log(partial_log: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """The epochs a killed run logged (one row per epoch, the last logged wins) and what was wrong in the file.

    Two runs appending to one log (before the run folder had a lock), a kill in the middle of a line or a
    hand edit leave a second header, rows of the wrong length or epochs that are not numbers: those lines are
    left out and named, never a crash.
    """
    try:
        lines = partial_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None, []
    if not lines:
        return None, []
    header = next(csv.reader([lines[0]]), [])
    if "epoch" not in header:
        return None, [f"line 1 is not a header with an 'epoch' column ({lines[0][:60]!r})"]
    records: dict[int, list[str]] = {}
    problems = []
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        if not fields:
            continue
        epoch = _epoch_of(fields[header.index("epoch")]) if len(fields) == len(header) else None
        if fields == header:
            problems.append(f"line {number} repeats the header")
        elif len(fields) != len(header):
            problems.append(f"line {number} has {len(fields)} fields, not {len(header)}")
        elif epoch is None:
            problems.append(f"line {number}: epoch {fields[header.index('epoch')]!r} is not an epoch number")
        else:  # an epoch logged again (a run killed before its backup redid it) is no damage: the last wins
            records[epoch] = fields
    frame = pd.DataFrame([records[epoch] for epoch in sorted(records)], columns=header)
    for column in header:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["epoch"] = frame["epoch"].astype(int)
    return frame, problems


def repair_partial_log(partial_log: Path, report: Callable[[str], None]) -> None:
    """Rewrite a damaged partial history with its good rows only (saying what was left out), before resuming."""
    frame, problems = read_partial_log(partial_log)
    if not problems:
        return
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    if frame is None:
        os.replace(partial_log, partial_log.with_name(partial_log.name + ".damaged"))
        report(f"{partial_log}: damaged ({shown}); moved to {partial_log.name}.damaged, and the epochs logged "
               "before this run are left out of history.csv")
        return
    atomic_write(partial_log, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
    report(f"{partial_log}: damaged lines left out ({shown}); {len(frame)} logged epoch(s) kept")


def complete_history(history: pd.DataFrame, partial_log: Path, head_epochs: int | None) -> pd.DataFrame:
    """Add the epochs that a killed run logged before this (resumed) run, one row per epoch."""
    logged, _ = read_partial_log(partial_log)
    history = history.astype({"epoch": int})
    if logged is None:
        return history
    earlier = logged[~logged["epoch"].isin(history["epoch"])]
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
    merged = merged.sort_values("epoch", kind="stable").reset_index(drop=True).reindex(columns=columns)
    return merged.astype({"epoch": int})
