"""Training callbacks that Keras does not ship."""

from __future__ import annotations

import math
from pathlib import Path

import keras


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keep the best weights by validation accuracy, training accuracy breaking ties (seed 000).

    The best weights are held in memory, written to ``filepath`` (``.weights.h5``) when they
    improve, and put back into the model when training ends.
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

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.restore_at_end and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
