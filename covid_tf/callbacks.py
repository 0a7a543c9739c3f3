"""Training callbacks that Keras does not ship."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras

from covid_tf.io_utils import atomic_write_json


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keep the best weights by validation accuracy, training accuracy breaking ties (seed 000).

    The best weights are held in memory, written to ``filepath`` (``.weights.h5``) when they
    improve, and put back into the model when training ends. The best score and epoch are written
    beside them (``best.json``), so a run resumed after a kill still knows its best epoch and puts
    the saved best weights back at the end.
    """

    def __init__(self, filepath: str | Path | None = None, monitor: str = "val_accuracy",
                 tie_break: str = "accuracy", restore_at_end: bool = True) -> None:
        super().__init__()
        self.filepath = Path(filepath) if filepath else None
        self.monitor = monitor
        self.tie_break = tie_break
        self.restore_at_end = restore_at_end
        self.best_key: tuple[float, float] = (-math.inf, -math.inf)
        self.best_epoch: int | None = None
        self.best_weights = None

    @property
    def state_path(self) -> Path | None:
        """``best.json`` beside ``best.weights.h5``: the best key and epoch, for resumed runs."""
        if self.filepath is None:
            return None
        return self.filepath.with_name(self.filepath.name.removesuffix(".weights.h5") + ".json")

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A fresh callback on a resumed run: take over the best of the run that was killed.
        state = self.state_path
        if self.best_epoch is not None or state is None or not state.is_file() or not self.filepath.is_file():
            return
        try:
            saved = json.loads(state.read_text())
            self.best_key = (float(saved["best_key"][0]), float(saved["best_key"][1]))
            self.best_epoch = int(saved["best_epoch"])
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            self.best_key, self.best_epoch = (-math.inf, -math.inf), None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            return
        key = (float(logs[self.monitor]), float(logs.get(self.tie_break, -math.inf)))
        if key > self.best_key:
            self.best_key, self.best_epoch = key, epoch
            self.best_weights = self.model.get_weights()
            if self.filepath is not None:
                self.filepath.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.filepath.with_name(".tmp-" + self.filepath.name)
                self.model.save_weights(tmp)
                tmp.replace(self.filepath)
                atomic_write_json(self.state_path, {"best_key": list(self.best_key), "best_epoch": epoch,
                                                    "monitor": self.monitor, "tie_break": self.tie_break})

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.restore_at_end:
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self.best_epoch is not None and self.filepath is not None and self.filepath.is_file():
            self.model.load_weights(self.filepath)  # the best epoch was before the resume
