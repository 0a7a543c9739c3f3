"""Seed 001's last step: the grid search's best settings trained afresh on training + validation images.

:func:`best_settings` applies the best row of :func:`covid_tf.training.tuning.grid_search` to a
:class:`~covid_tf.runs.config.TrainConfig` (batch size, learning rate, dropout, and as many epochs as that
configuration needed); :func:`fit_on_train_and_val` trains it on the validation images too, for a fixed
number of epochs. A transfer model trains in two phases, as in :func:`covid_tf.training.fit.fit`: the head
on the frozen backbone (seed 001's Fig. 8), then the whole network (its Fig. 7); the history's ``phase``
column tells them apart. With no images held out, nothing is selected or stopped early: the test set is
the first judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import pandas as pd

from covid_tf.runs.config import TrainConfig
from covid_tf.training.fit import fit


@dataclass
class FinalFit:
    """The model trained on train + val, its history (one row per epoch, ``phase``) and the settings that ran."""

    model: keras.Model
    history: pd.DataFrame
    config: TrainConfig

    def phase(self, name: str) -> pd.DataFrame:
        """The history rows of one phase (``head``, ``fine_tune``, or ``train`` for a model without a backbone)."""
        rows = self.history[self.history["phase"] == name]
        if rows.empty:
            raise ValueError(f"no {name!r} phase in this history; phases: {sorted(set(self.history['phase']))}")
        return rows


def best_settings(cfg: TrainConfig, best: Mapping[str, Any], fine_tune_epochs: int | None = None) -> TrainConfig:
    """``cfg`` with the grid search's best batch size, learning rate and dropout, and its best epoch as
    ``epochs`` (the head's epochs of a transfer model); ``fine_tune_epochs`` (None: ``cfg``'s) follow them."""
    missing = [key for key in ("batch_size", "learning_rate", "dropout", "best_epoch") if key not in best]
    if missing:
        raise ValueError(f"the grid search's best row lacks {', '.join(missing)}")
    fine_tune = cfg.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs
    if isinstance(fine_tune, bool) or not isinstance(fine_tune, int) or fine_tune < 0:
        raise ValueError(f"fine_tune_epochs must be a whole number of 0 or more, got {fine_tune_epochs!r}")
    return dataclasses.replace(cfg, batch_size=int(best["batch_size"]), learning_rate=float(best["learning_rate"]),
                               dropout=float(best["dropout"]), epochs=int(best["best_epoch"]),
                               fine_tune_epochs=fine_tune)


def fit_on_train_and_val(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str],
                         verbose: int | str = "auto") -> FinalFit:
    """Train the model of ``cfg`` afresh on the ``train`` and ``val`` rows of ``split`` for ``cfg.epochs`` epochs
    (then ``cfg.fine_tune_epochs`` of fine-tuning for a transfer model), keeping the last epoch's weights."""
    merged = split[split["split"].isin(["train", "val"])].copy()
    if merged.empty:
        raise ValueError("the split has no 'train' or 'val' rows to train on")
    merged["split"] = "train"  # no validation data: nothing is selected or stopped early
    model, history = fit(cfg, merged, class_names, None, verbose=verbose, select_best=False)
    return FinalFit(model, history, cfg)
