"""Training callbacks that Keras does not ship."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from covid_tf.io_utils import atomic_write, atomic_write_json


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
                atomic_write(self.filepath, self.model.save_weights)
                atomic_write_json(self.state_path, {"best_key": list(self.best_key), "best_epoch": epoch,
                                                    "monitor": self.monitor, "tie_break": self.tie_break})

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.restore_at_end:
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self.best_epoch is not None and self.filepath is not None and self.filepath.is_file():
            self.model.load_weights(self.filepath)  # the best epoch was before the resume


def trainable_batch_norm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of ``model`` (nested models included) that training updates."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif layer.trainable:
            found += trainable_batch_norm_layers(layer)
    return found


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recompute the BatchNormalization statistics on un-augmented training images after each epoch.

    Keras keeps exponential moving averages of the batch statistics. With few steps per epoch and
    fast-moving weights they lag the weights, and the augmented training images differ from the
    images the model is evaluated on: validation accuracy then swings between epochs (down to
    chance) although the training accuracy rises. "Precise BN" (Wu and Johnson 2021, *Rethinking
    "Batch" in BatchNorm*) replaces the averages by the mean of the batch statistics of the current
    weights over ``max_batches`` batches of ``dataset``. It runs once per epoch, just before
    validation (or at the end of the epoch without validation data), so the validation metrics,
    the best-model checkpoint and the saved model all use the recomputed statistics. Frozen
    BatchNormalization layers (transfer learning) are left alone; a model without trainable ones
    costs nothing.
    """

    def __init__(self, dataset, max_batches: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.max_batches = max_batches
        self._stale = False
        self._forward = None
        self.updates = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._stale = True

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._stale:
            self.recompute()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._stale:
            self.recompute()

    def recompute(self) -> None:
        """Set each trainable BN layer's moving mean and variance to the average over the batches."""
        self._stale = False
        layers = trainable_batch_norm_layers(self.model)
        if not layers or self.max_batches <= 0:
            return
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.momentum = 0.0  # a forward pass in training mode leaves each batch's statistics
        if self._forward is None:  # traced once: every batch size shares the dataset's (None, ...) signature
            spec = self.dataset.element_spec
            spec = spec[0] if isinstance(spec, tuple) else spec
            self._forward = tf.function(lambda images: self.model(images, training=True), input_signature=[spec])
        sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in layers]
        count = 0
        try:
            for batch in self.dataset.take(self.max_batches):
                self._forward(batch[0] if isinstance(batch, tuple) else batch)
                count += 1
                for total, layer in zip(sums, layers):
                    total[0] += keras.ops.convert_to_numpy(layer.moving_mean)
                    total[1] += keras.ops.convert_to_numpy(layer.moving_variance)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
        if count:
            for (mean, variance), layer in zip(sums, layers):
                layer.moving_mean.assign(mean / count)
                layer.moving_variance.assign(variance / count)
        self.updates += 1


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that survives a kill at any instant (issue 14, case 1).

    Keras writes ``latest.weights.h5`` in place: a SIGKILL during that write leaves a truncated file that
    every later run fails to open. Here each backup is written to a temporary file and renamed over
    ``latest.weights.h5`` (so it is whole or absent), the backup before it is kept as
    ``previous.weights.h5``, and each file carries its own epoch (an HDF5 attribute), so weights and epoch
    never disagree. On resume the latest readable backup is used; when the latest is unreadable the
    callback says so and falls back to the previous one, or to the start of the phase.
    ``training_metadata.json`` is still written (atomically) after each backup, as Keras does.

    Unlike Keras's, the backup is not deleted when the fit ends: until the caller has saved what the fit
    produced (``head.weights.h5``, ``model.keras``) it is the only copy of the trained weights, and the caller
    deletes it then (:func:`covid_tf.training.resume.discard_backups`). The end of the fit is marked in
    ``finished.json`` (the epoch of the latest backup): a rerun restores that backup and trains no epoch,
    also when early stopping ended the fit before its last epoch.
    """

    EPOCH_ATTRIBUTE = "covid_tf_epoch"

    def __init__(self, backup_dir: str | Path, report=print) -> None:
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=True)
        self.backup_path = Path(backup_dir)
        self.previous_path = self.backup_path / "previous.weights.h5"
        self.finished_path = self.backup_path / "finished.json"
        self.report = report
        self.restored_epoch: int | None = None
        self.saved_epoch: int | None = None

    def _saved_epoch(self, path: Path) -> int:
        import h5py

        with h5py.File(path, "r") as handle:
            if self.EPOCH_ATTRIBUTE in handle.attrs:
                return int(handle.attrs[self.EPOCH_ATTRIBUTE])
        # A backup written by Keras itself (a run started before this callback): its epoch is in the metadata.
        return int(json.loads(Path(self._training_metadata_path).read_text())["epoch"])

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._load_model()

    def _load_model(self) -> None:
        candidates = [path for path in (Path(self._weights_path), self.previous_path) if path.is_file()]
        if not candidates:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # its variables must exist to be loaded
        failures = []
        for path in candidates:
            try:
                epoch = self._saved_epoch(path)
                self.model.load_weights(path)
            except (OSError, ValueError, KeyError, TypeError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                failures.append(f"{path} is unreadable ({reason})")
                continue
            if failures:
                self.report(f"warning: {'; '.join(failures)}; resuming from {path.name} (epoch {epoch})")
            self.restored_epoch = self.saved_epoch = epoch
            # The fit had ended (all its epochs, or stopped early): none is trained again.
            self.model._initial_epoch = self.params.get("epochs", epoch) if self._finished_at(epoch) else epoch
            return
        self.report(f"warning: {'; '.join(failures)}; no readable backup is left, so this training phase "
                    "starts again from its first epoch")

    def _save_model(self) -> None:
        import h5py

        self.backup_path.mkdir(parents=True, exist_ok=True)
        epoch = self._current_epoch

        def write(tmp: Path) -> None:
            self.model.save_weights(tmp, overwrite=True)
            with h5py.File(tmp, "a") as handle:
                handle.attrs[self.EPOCH_ATTRIBUTE] = epoch

        latest = Path(self._weights_path)
        if latest.is_file():
            os.replace(latest, self.previous_path)  # one rename: the previous backup stays whole
        atomic_write(latest, write)
        atomic_write_json(self._training_metadata_path, {"epoch": epoch, "batch": self._last_batch_seen})
        self.saved_epoch = epoch

    def _finished_at(self, epoch: int) -> bool:
        """Whether ``finished.json`` says that the fit ended with the backup of ``epoch``."""
        try:
            return int(json.loads(self.finished_path.read_text())["epoch"]) == epoch
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def on_train_end(self, logs: dict | None = None) -> None:
        # The backup stays (see the class): the caller deletes it once it has saved what this fit produced.
        if self.saved_epoch is not None:
            atomic_write_json(self.finished_path, {"epoch": self.saved_epoch})
