"""Hyperparameter grid search (seed 001) with keras-tuner, and grouped k-fold cross-validation (seed 000).

:func:`grid_search` tries every combination of batch size, learning rate and dropout with
``keras_tuner.GridSearch``: each trial builds the model of the run's :class:`~covid_tf.TrainConfig`
with the trial's dropout and learning rate, trains it on the split's training images with the trial's
batch size, stops early on the validation loss (patience ``cfg.patience``, 5 by default) and is scored
by its best validation accuracy. keras-tuner's own files (trials, checkpoints) stay under ``directory``.

:func:`cross_validate` estimates how much a score moves with the choice of test images: k folds
from ``StratifiedGroupKFold`` (a patient, or a group of duplicate images, is tested in one fold only),
a grouped validation part carved out of the training folds for early stopping, metrics per fold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from covid_tf.data.splits import assign_groups
from covid_tf.evaluation.evaluate import evaluate_rows
from covid_tf.io_utils import atomic_write_text, csv_text
from covid_tf.lungs.roi.modes import AUTO, MODES
from covid_tf.models.architectures import get_architecture
from covid_tf.models.freezing import freeze_backbone
from covid_tf.models.registry import build_model
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import predict_paths
from covid_tf.training import fit as train
from covid_tf.training.distribute import get_strategy

# The hyperparameters of seed 001's grid, in the order of the table's columns.
GRID_PARAMETERS = ("batch_size", "learning_rate", "dropout")
OBJECTIVE = "val_accuracy"
TABLE_COLUMNS = (*GRID_PARAMETERS, "val_accuracy", "val_loss", "epochs_run", "best_epoch", "trial_id")
CV_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
PROJECT_NAME = "grid_search"
TABLE_FILE = "grid_search.csv"


@dataclass
class GridSearchResult:
    """The grid search's table (one row per configuration, best first) and the best row as a dict."""

    table: pd.DataFrame
    best: dict[str, Any]
    directory: Path

    @property
    def table_path(self) -> Path:
        return self.directory / TABLE_FILE


@dataclass
class CrossValidationResult:
    """Metrics per fold, their mean and standard deviation, and every image's test-fold prediction."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    predictions: pd.DataFrame


def _check_grid(cfg: TrainConfig, grid: Mapping[str, Sequence[Any]]) -> dict[str, list]:
    """The grid with every hyperparameter (those not given take the config's value), typed and checked."""
    if cfg.roi != AUTO and MODES[cfg.roi].active:
        raise ValueError(f"the grid search trains on full images; run it with roi='none', not {cfg.roi!r} "
                         "(the lung ROI applies to train_run)")
    unknown = sorted(set(grid) - set(GRID_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown grid parameter(s) {', '.join(unknown)}; use {', '.join(GRID_PARAMETERS)}")
    checked: dict[str, list] = {}
    for name in GRID_PARAMETERS:
        values = list(grid.get(name, [getattr(cfg, name)]))
        if not values:
            raise ValueError(f"grid[{name!r}] is empty; give at least one value")
        cast = int if name == "batch_size" else float
        values = [cast(value) for value in values]
        if len(set(values)) != len(values):
            raise ValueError(f"grid[{name!r}] repeats a value: {values}")
        if name == "batch_size" and min(values) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {values}")
        if name == "learning_rate" and min(values) <= 0:
            raise ValueError(f"learning rates must be > 0, got {values}")
        if name == "dropout" and not all(0.0 <= value < 1.0 for value in values):
            raise ValueError(f"dropout rates must be in [0, 1), got {values}")
        checked[name] = values
    return checked


class TrainConfigHyperModel(kt.HyperModel):
    """The model of a :class:`~covid_tf.TrainConfig` with dropout, learning rate and batch size tuned.

    A transfer model with ``fine_tune_epochs > 0`` is tuned with its backbone frozen, as in the first
    phase of :func:`covid_tf.train.fit`.
    """

    def __init__(self, cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str],
                 grid: Mapping[str, Sequence[Any]]):
        super().__init__(name="covid_tf_grid")
        self.cfg = cfg
        self.split = split
        self.class_names = list(class_names)
        self.grid = _check_grid(cfg, grid)
        label_of = {name: i for i, name in enumerate(self.class_names)}
        train_rows = split[split["split"] == "train"]
        self.class_counts = np.bincount(train_rows["label"].map(label_of).to_numpy(), minlength=len(label_of))
        # Normalisation statistics depend on the training images only: computed once for all trials.
        self.mean, self.std = train.normalization_statistics(cfg, train_rows["path"].tolist())

    def _choice(self, hp: kt.HyperParameters, name: str):
        return hp.Choice(name, self.grid[name], ordered=True)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        train.set_seed(self.cfg.seed)  # every trial starts from the same initial weights and data order
        cfg = self.cfg
        model = build_model(cfg.model, image_size=cfg.image_size, channels=cfg.channels,
                            num_classes=len(self.class_names), weights=cfg.weights,
                            dropout=self._choice(hp, "dropout"), normalization=cfg.normalization,
                            mean=self.mean, std=self.std)
        if get_architecture(cfg.model).transfer and cfg.fine_tune_epochs > 0:
            freeze_backbone(model)  # seed 001 tunes the head on the frozen backbone
        train.compile_model(model, cfg, self.class_counts, self._choice(hp, "learning_rate"))
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, epochs: int = 1, callbacks=None,
            verbose: int | str = 0, **kwargs) -> dict[str, float]:
        """Train with the trial's batch size and early stopping; return the metrics of the best epoch."""
        cfg = dataclasses.replace(self.cfg, batch_size=self._choice(hp, "batch_size"))
        train_data, val_data, statistics, _ = train.make_datasets(cfg, self.split, self.class_names, cache_dir=None)
        stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience)
        history = model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=verbose, shuffle=False,
                            callbacks=[train.precise_batch_norm(cfg, statistics), *(callbacks or []), stopping])
        return best_epoch_metrics(history.history)


def best_epoch_metrics(history: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The logged metrics of the epoch with the best validation accuracy (ties: lower validation loss).

    Adds ``best_epoch`` (1-based, i.e. how many epochs reach it) and ``epochs_run``.
    """
    accuracy = np.asarray(history[OBJECTIVE], dtype=float)
    loss = np.asarray(history.get("val_loss", np.zeros_like(accuracy)), dtype=float)
    best = int(np.lexsort((loss, -accuracy))[0])
    metrics = {name: float(values[best]) for name, values in history.items()}
    metrics["best_epoch"] = best + 1
    metrics["epochs_run"] = len(accuracy)
    return metrics


def grid_search(
    cfg: TrainConfig,
    split: pd.DataFrame,
    class_names: Sequence[str],
    grid: Mapping[str, Sequence[Any]],
    epochs: int,
    directory: str | Path,
    overwrite: bool = True,
    verbose: int | str = 0,
) -> GridSearchResult:
    """Try every combination of ``grid`` (keys among batch_size, learning_rate, dropout) on ``split``.

    Each configuration is trained for at most ``epochs`` epochs on the ``train`` rows with early
    stopping on the ``val`` rows' loss, and scored by its best validation accuracy. The table
    (sorted best first: validation accuracy, then validation loss) is saved as
    ``directory/grid_search.csv``; keras-tuner's files go to ``directory/grid_search/``. With
    ``overwrite=False`` an interrupted search resumes where it stopped.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not (split["split"] == "val").any() or not (split["split"] == "train").any():
        raise ValueError("the grid search needs 'train' and 'val' rows in the split")
    directory = Path(directory)
    hypermodel = TrainConfigHyperModel(cfg, split, class_names, grid)
    space = kt.HyperParameters()
    for name in GRID_PARAMETERS:  # registered up front so that the grid's order is fixed
        hypermodel._choice(space, name)
    n_trials = int(np.prod([len(values) for values in hypermodel.grid.values()]))
    # keras-tuner builds and fits every trial under the strategy's scope, as train.fit does.
    strategy = None if cfg.strategy == "default" else get_strategy(cfg.strategy, cfg.devices)
    tuner = kt.GridSearch(
        hypermodel, objective=kt.Objective(OBJECTIVE, direction="max"), max_trials=n_trials,
        hyperparameters=space, seed=cfg.seed, directory=str(directory), project_name=PROJECT_NAME,
        overwrite=overwrite, distribution_strategy=strategy,
    )
    with _quiet_tensorflow_logger():  # one new model per trial: TensorFlow's retracing warnings are expected
        tuner.search(epochs=epochs, verbose=verbose)
    table = _trials_table(tuner.oracle.trials.values())
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / TABLE_FILE, csv_text(table))
    return GridSearchResult(table, table.iloc[0].to_dict() if len(table) else {}, directory)


@contextlib.contextmanager
def _quiet_tensorflow_logger():
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _trials_table(trials) -> pd.DataFrame:
    rows = []
    for trial in trials:
        if trial.status != kt.engine.trial.TrialStatus.COMPLETED:
            continue
        row: dict[str, Any] = dict(trial.hyperparameters.values)
        for name in ("val_accuracy", "val_loss", "best_epoch", "epochs_run"):
            value = trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
            row[name] = np.nan if value is None else float(value)
        row["trial_id"] = trial.trial_id
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for name in ("batch_size", "best_epoch", "epochs_run"):
        table[name] = table[name].astype("Int64")
    table = table.sort_values(["val_accuracy", "val_loss", "trial_id"], ascending=[False, True, True],
                              kind="stable", na_position="last")
    return table.reset_index(drop=True)


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(labels)), labels, groups))


def _check_cross_validation(frame: pd.DataFrame, class_names: Sequence[str], k: int,
                            val_fraction: float) -> dict[str, int]:
    """Refuse bad arguments of :func:`cross_validate`; return the class index of each label."""
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    missing = {"path", "label", "patient_id"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks the column(s) {', '.join(sorted(missing))}")
    label_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(frame["label"]) - set(label_of))
    if unknown:
        raise ValueError(f"labels {unknown} are not among class_names {list(class_names)}")
    return label_of


def cross_validate(
    cfg: TrainConfig,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    k: int = 5,
    seed: int | None = None,
    *,
    val_fraction: float = 0.2,
    n_bootstrap: int = 0,
    verbose: int | str = 0,
    tta: bool = False,
) -> CrossValidationResult:
    """Grouped, stratified k-fold cross-validation of the model of ``cfg`` on the images of ``frame``.

    ``frame`` needs ``path``, ``label`` and ``patient_id`` (and ``duplicate_group`` when known, as in a
    ``DatasetIndex.frame``). Each fold is tested once; the other folds are split again (grouped, about
    ``val_fraction``) into training and validation images for early stopping. ``summary`` holds the mean
    and the sample standard deviation (ddof=1) of each metric over the folds. ``tta``: predict the test folds
    with test-time augmentation (:func:`covid_tf.runs.inference.predict_paths`); ``predictions`` then has the plain
    probabilities too (``plain_p_<class>``).
    """
    label_of = _check_cross_validation(frame, class_names, k, val_fraction)
    seed = cfg.seed if seed is None else seed
    data = frame.reset_index(drop=True).copy()
    data["group"] = assign_groups(data)
    if data["group"].nunique() < k:
        raise ValueError(f"{data['group'].nunique()} patient/duplicate groups cannot fill k={k} folds")
    labels = data["label"].map(label_of).to_numpy()
    groups = data["group"].to_numpy()
    inner_splits = max(2, round(1 / val_fraction))
    fold_rows, predictions = [], []
    for fold, (rest, test) in enumerate(_grouped_folds(labels, groups, k, seed)):
        n_inner = min(inner_splits, len(np.unique(groups[rest])))
        if n_inner < 2:
            raise ValueError(f"fold {fold}: too few groups outside the test fold to hold out validation images")
        train_part, val_part = _grouped_folds(labels[rest], groups[rest], n_inner, seed + fold + 1)[0]
        split = data.assign(split="")
        split.loc[rest[train_part], "split"] = "train"
        split.loc[rest[val_part], "split"] = "val"
        split.loc[test, "split"] = "test"
        model, history = train.fit(cfg, split, class_names, None, verbose=verbose)
        test_rows = split.loc[test]
        predict = partial(predict_paths, model, image_size=cfg.image_size, channels=cfg.channels,
                          batch_size=cfg.batch_size, tta=tta)
        # Image-level metrics per fold (one "patient" per image), as the fold table reports them.
        probabilities, metrics = evaluate_rows(predict, test_rows.assign(patient_id=test_rows["path"]),
                                               class_names, n_bootstrap=n_bootstrap, seed=seed)
        fold_rows.append({
            "fold": fold, "n_train": len(train_part), "n_val": len(val_part), "n_test": len(test),
            "epochs_run": len(history), **{name: metrics[name] for name in CV_METRICS},
        })
        # with TTA, the plain predictions too: what the augmentation at test time adds costs no training
        plain = partial(predict, tta=False)(test_rows["path"]) if tta else None
        predictions.append(_fold_predictions(test_rows, fold, class_names, probabilities, plain))
        keras.backend.clear_session()
    return _cross_validation_result(fold_rows, predictions)


def _fold_predictions(test_rows: pd.DataFrame, fold: int, class_names: Sequence[str], probabilities: np.ndarray,
                      plain: np.ndarray | None) -> pd.DataFrame:
    columns = {"path": test_rows["path"].to_numpy(), "label": test_rows["label"].to_numpy(),
               "group": test_rows["group"].to_numpy(), "fold": fold,
               **{f"p_{name}": probabilities[:, i] for i, name in enumerate(class_names)}}
    if plain is not None:
        columns.update({f"plain_p_{name}": plain[:, i] for i, name in enumerate(class_names)})
    return pd.DataFrame(columns)


def _cross_validation_result(fold_rows: list[dict], predictions: list[pd.DataFrame]) -> CrossValidationResult:
    folds = pd.DataFrame(fold_rows)
    for name in CV_METRICS:
        folds[name] = pd.to_numeric(folds[name], errors="coerce")
    summary = pd.DataFrame({"mean": folds[list(CV_METRICS)].mean(), "std": folds[list(CV_METRICS)].std(ddof=1)})
    summary.index.name = "metric"
    return CrossValidationResult(folds, summary, pd.concat(predictions, ignore_index=True))

