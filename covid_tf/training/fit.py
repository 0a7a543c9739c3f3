"""Training runs: data, split, model, fit (frozen then unfrozen), checkpoints, metrics, run directory.

A run directory holds ``config.json``, ``split.csv``, ``history.csv``, ``model.keras``,
``metrics.json`` (validation and test metrics of the final model) and ``logs/`` (TensorBoard).
Killing a run and starting the same command again resumes from the last finished epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from covid_tf import config
from covid_tf.data.discover import DatasetIndex, discover
from covid_tf.data.pipeline import make_dataset, pixel_statistics
from covid_tf.data.preprocessing import augmentation_layers
from covid_tf.data.splits import load_split, make_split, save_split, split_leaks
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.evaluate import write_run_figures
from covid_tf.io_utils import atomic_write, atomic_write_json, atomic_write_text
from covid_tf.models.architectures import get_architecture
from covid_tf.models.freezing import freeze_backbone, unfreeze_top
from covid_tf.models.registry import build_model
from covid_tf.training.callbacks import BestModelCheckpoint, PreciseBatchNorm
from covid_tf.training.distribute import get_strategy
from covid_tf.training.losses import get_loss, get_optimizer

RUN_FILES = ("config.json", "split.csv", "skipped.csv", "history.csv", "model.keras", "metrics.json")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``)."""

    data: str
    model: str = "baseline"
    image_size: int = config.IMAGE_SIZE
    channels: int = config.CHANNELS
    epochs: int = config.EPOCHS
    fine_tune_epochs: int = 0
    unfreeze_blocks: int | str = "all"
    weights: str | None = None
    loss: str = "ce"
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: the architecture record's learning_rate, filled in by __post_init__
    fine_tune_learning_rate: float | None = None
    batch_size: int = config.BATCH_SIZE
    dropout: float = 0.5
    normalization: str = "auto"
    augmentation: str = "default"
    split_fractions: tuple[float, ...] = config.DEFAULT_SPLIT_FRACTIONS
    split_counts: tuple[int, ...] | None = None
    split_file: str | None = None
    classes: list[str] | None = None
    class_map: dict[str, str] = field(default_factory=dict)
    seed: int = config.SEED
    patience: int = config.EARLY_STOPPING_PATIENCE
    allow_leakage: bool = False
    n_bootstrap: int = 1000
    strategy: str = "default"  # covid_tf.distribute.STRATEGIES
    devices: list[str] | None = None  # devices of the 'mirrored' strategy (default: all local GPUs)
    mixed_precision: bool = False  # float16 compute, float32 variables and output (GPUs with tensor cores)
    precise_bn_images: int = config.PRECISE_BATCH_NORM_IMAGES  # covid_tf.callbacks.PreciseBatchNorm; 0: off
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not str(self.data).lower().startswith(("gs://", "s3://")):
            self.data = str(Path(self.data).expanduser().resolve())
        if self.learning_rate is None:  # said where the field is declared: the model's own default
            self.learning_rate = get_architecture(self.model).learning_rate

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run produced."""

    model: keras.Model
    history: pd.DataFrame
    split: pd.DataFrame
    class_names: list[str]
    metrics: dict
    run_dir: Path | None


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Build and compile under ``mixed_float16`` when ``mixed`` (Keras then scales the loss); restore after."""
    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def set_seed(seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, with deterministic ops on the CPU."""
    keras.utils.set_random_seed(seed)
    with contextlib.suppress(AttributeError, RuntimeError):
        tf.config.experimental.enable_op_determinism()


def prepare_split(cfg: TrainConfig, index: DatasetIndex | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Index the data and return (split frame, class names), refusing leaky user splits."""
    index = index or discover(cfg.data, classes=cfg.classes, class_map=cfg.class_map)
    if len(index.frame) == 0:
        raise CovidTfError(f"{cfg.data}: no readable images found")
    class_names = index.class_names
    present = sorted(set(index.frame["label"]))
    if len(present) < 2:
        raise CovidTfError(f"{cfg.data}: training needs at least two classes, found {', '.join(present) or 'none'}")
    if cfg.split_file:
        split = _apply_split_file(index, Path(cfg.split_file))
    elif (index.frame["split"] != "").any():
        split = index.frame.copy()  # the layout's own train/val/test folders or CSV column
    else:
        split = make_split(index.frame, fractions=cfg.split_fractions, counts=cfg.split_counts, seed=cfg.seed)
    leaks = split_leaks(split)
    if leaks and not cfg.allow_leakage:
        first = leaks[0]
        raise CovidTfError(
            f"{len(leaks)} patient(s) or duplicate image group(s) appear in more than one split, e.g. "
            f"{', '.join(first['paths'][:3])} in {' and '.join(first['splits'])}; "
            "fix the split or pass --allow-leakage"
        )
    for name in ("train", "val"):
        if not (split["split"] == name).any():
            raise CovidTfError(f"the split has no {name!r} images; give more data or other split fractions")
    split.attrs["skipped"] = [(item.path, item.reason) for item in index.skipped]  # reported by the command
    return split, class_names


def _apply_split_file(index: DatasetIndex, split_file: Path) -> pd.DataFrame:
    table = load_split(split_file)
    by_path = dict(zip(table["path"].map(lambda p: str(Path(p).resolve())), table["split"]))
    frame = index.frame.copy()
    frame["split"] = frame["path"].map(by_path).fillna("")
    missing = sorted(set(by_path) - set(frame["path"]))
    if missing:
        raise CovidTfError(f"{split_file}: {len(missing)} listed file(s) are not readable images of the data, "
                           f"e.g. {missing[0]}")
    if "patient_id" in table:
        patients = dict(zip(table["path"].map(lambda p: str(Path(p).resolve())), table["patient_id"].astype(str)))
        frame["patient_id"] = frame["path"].map(patients).fillna(frame["patient_id"])
    return frame


def make_datasets(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str], cache_dir: Path | None):
    """The training, validation and un-augmented statistics datasets of a split, and its (paths, labels)."""
    label_of = {name: i for i, name in enumerate(class_names)}
    parts = {}
    for name in config.SPLIT_NAMES:
        rows = split[split["split"] == name]
        parts[name] = (rows["path"].tolist(), rows["label"].map(label_of).to_numpy())
    train_paths, train_labels = parts["train"]
    common = dict(num_classes=len(class_names), image_size=cfg.image_size, channels=cfg.channels,
                  batch_size=cfg.batch_size, seed=cfg.seed)
    train = make_dataset(train_paths, train_labels, shuffle=True,
                         augmentation=augmentation_layers(cfg.augmentation, seed=cfg.seed),
                         cache_dir=cache_dir and cache_dir / "train", **common)
    val = None
    if len(parts["val"][0]):
        val = make_dataset(*parts["val"], cache_dir=cache_dir and cache_dir / "val", **common)
    # Un-augmented training images in a mixed order for PreciseBatchNorm; not cached, as it reads
    # at most precise_bn_images of them per epoch.
    statistics = make_dataset(train_paths, shuffle=True, cache=False, **common)
    return train, val, statistics, parts


def normalization_statistics(cfg: TrainConfig, train_paths: Sequence[str]):
    """``(mean, std)`` of the training images when the model's normalisation uses them, else ``(None, None)``."""
    if not get_architecture(cfg.model).needs_statistics(cfg.normalization):
        return None, None
    return pixel_statistics(train_paths, cfg.image_size, cfg.channels, seed=cfg.seed)


def compile_model(model: keras.Model, cfg: TrainConfig, class_counts: Sequence[int], learning_rate: float) -> None:
    """Compile with the run's loss and optimizer; called again after every change of ``trainable``."""
    model.compile(
        optimizer=get_optimizer(cfg.optimizer, learning_rate),
        loss=get_loss(cfg.loss, list(class_counts)),
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )


def precise_batch_norm(cfg: TrainConfig, statistics: tf.data.Dataset) -> PreciseBatchNorm:
    """The run's PreciseBatchNorm callback; put it first, so validation and the other callbacks see its work."""
    return PreciseBatchNorm(statistics, max_batches=math.ceil(cfg.precise_bn_images / cfg.batch_size))


def _callbacks(cfg: TrainConfig, run_dir: Path | None, best: BestModelCheckpoint, phase: str, append: bool,
               validating: bool, statistics: tf.data.Dataset):
    callbacks: list[keras.callbacks.Callback] = [precise_batch_norm(cfg, statistics)]
    if validating:
        callbacks += [
            best,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=False),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, cfg.patience // 2),
                                              min_lr=1e-7),
        ]
    if run_dir is not None:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        callbacks += [
            # Always appending: a resumed run keeps the epochs logged before it was killed (the
            # checkpoints folder of a fresh run is new or emptied by --overwrite).
            keras.callbacks.CSVLogger(str(run_dir / "checkpoints" / "history.partial.csv"), append=True),
            keras.callbacks.BackupAndRestore(str(run_dir / "checkpoints" / f"backup_{phase}")),
            keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        ]
    return callbacks


def fit(
    cfg: TrainConfig,
    split: pd.DataFrame,
    class_names: Sequence[str],
    run_dir: Path | None = None,
    verbose: int | str = "auto",
    select_best: bool = True,
) -> tuple[keras.Model, pd.DataFrame]:
    """Build and train the model of ``cfg`` on the split; return the model and the history.

    With ``select_best`` the weights of the best epoch (validation accuracy, then training
    accuracy) are kept; without, the weights of the last epoch.
    """
    strategy = get_strategy(cfg.strategy, cfg.devices)  # before any other TensorFlow work of the run
    set_seed(cfg.seed)
    with precision_policy(cfg.mixed_precision), _known_strategy_failures(cfg.strategy):
        return _fit(cfg, split, class_names, run_dir, verbose, select_best, strategy)


@contextlib.contextmanager
def _known_strategy_failures(strategy: str):
    """Turn Keras 3's failure under MultiWorkerMirroredStrategy into one clear error."""
    try:
        yield
    except ValueError as error:
        if strategy == "multiworker" and "PerReplica" in str(error):
            raise CovidTfError(
                f"--strategy multiworker: Keras {keras.__version__} cannot fit a model under "
                "tf.distribute.MultiWorkerMirroredStrategy (model.fit fails while it builds the model, "
                "keras-team/keras#20585); train on one machine with --strategy mirrored"
            ) from None
        raise


def _fit(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str], run_dir: Path | None,
         verbose: int | str, select_best: bool, strategy: tf.distribute.Strategy) -> tuple[keras.Model, pd.DataFrame]:
    cache_dir = run_dir / "checkpoints" / "cache" if run_dir else None
    train, val, statistics, parts = make_datasets(cfg, split, class_names, cache_dir)
    class_counts = np.bincount(parts["train"][1], minlength=len(class_names))
    mean, std = normalization_statistics(cfg, parts["train"][0])
    with strategy.scope():  # variables of the model and the optimizer are mirrored over the replicas
        model = build_model(cfg.model, image_size=cfg.image_size, channels=cfg.channels,
                            num_classes=len(class_names), weights=cfg.weights, dropout=cfg.dropout,
                            normalization=cfg.normalization, mean=mean, std=std)
    best = BestModelCheckpoint(run_dir / "checkpoints" / "best.weights.h5" if run_dir else None,
                               restore_at_end=select_best)
    two_phase = get_architecture(cfg.model).transfer and cfg.fine_tune_epochs > 0
    if two_phase:
        freeze_backbone(model)
    with strategy.scope():
        compile_model(model, cfg, class_counts, cfg.learning_rate)
    head_done = run_dir / "checkpoints" / "head_done.json" if run_dir and two_phase else None
    if head_done is not None and head_done.is_file():
        # A run killed while fine-tuning: its head phase finished, so start from its weights.
        start = int(json.loads(head_done.read_text())["fine_tune_start"])
        model.load_weights(head_done.with_name("head.weights.h5"))
        frames = []
    else:
        history = model.fit(train, validation_data=val, epochs=cfg.epochs, verbose=verbose, shuffle=False,
                            callbacks=_callbacks(cfg, run_dir, best, "head" if two_phase else "all", append=False,
                                                 validating=val is not None, statistics=statistics))
        frames = [_history_frame(history, "head" if two_phase else "train")]
        # After a resumed head phase its history starts late: count epochs, not rows.
        start = int(frames[0]["epoch"].max()) + 1 if len(frames[0]) else cfg.epochs
        if head_done is not None:
            atomic_write(head_done.with_name("head.weights.h5"), model.save_weights)
            atomic_write_json(head_done, {"fine_tune_start": start})
    if two_phase:
        unfreeze_top(model, cfg.unfreeze_blocks)
        with strategy.scope():
            compile_model(model, cfg, class_counts, cfg.fine_tune_learning_rate or cfg.learning_rate / 10)
        # Keras never resets the start epoch that BackupAndRestore set, so clear it for this phase's own backup.
        model._initial_epoch = None
        history = model.fit(train, validation_data=val, initial_epoch=start, epochs=start + cfg.fine_tune_epochs,
                            shuffle=False, verbose=verbose,
                            callbacks=_callbacks(cfg, run_dir, best, "fine_tune", append=True,
                                                 validating=val is not None, statistics=statistics))
        frames.append(_history_frame(history, "fine_tune", offset=start))
    history_frame = pd.concat(frames, ignore_index=True)
    if run_dir is not None:
        history_frame = _complete_history(history_frame, run_dir / "checkpoints" / "history.partial.csv",
                                          head_epochs=start if two_phase else None)
    history_frame["best"] = history_frame["epoch"] == (best.best_epoch if best.best_epoch is not None else -1)
    return model, history_frame


def _history_frame(history: keras.callbacks.History, phase: str, offset: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", history.epoch if history.epoch else list(range(offset, offset + len(frame))))
    frame.insert(1, "phase", phase)
    return frame


def _complete_history(history: pd.DataFrame, partial_log: Path, head_epochs: int | None) -> pd.DataFrame:
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


def evaluate_splits(model: keras.Model, cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str],
                    names: Sequence[str] = ("val", "test")) -> dict:
    """Metrics of ``model`` on the named splits (absent splits are left out)."""
    from covid_tf.evaluation.inference import predict_paths
    from covid_tf.evaluation.summary import compute_metrics

    label_of = {name: i for i, name in enumerate(class_names)}
    results = {}
    for name in names:
        rows = split[split["split"] == name]
        if rows.empty:
            continue
        probabilities = predict_paths(model, rows["path"].tolist(), cfg.image_size, cfg.channels, cfg.batch_size)
        groups = rows["patient_id"].astype(str).to_numpy() if rows["patient_id"].nunique() < len(rows) else None
        results[name] = compute_metrics(rows["label"].map(label_of).to_numpy(), probabilities, list(class_names),
                                        groups=groups, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    return results


def _check_run_dir(run_dir: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Refuse to overwrite a finished run, and to resume a run with another configuration."""
    if not run_dir.exists():
        return
    finished = (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file()
    if finished and not overwrite:
        raise CovidTfError(f"{run_dir}: a finished run is already there; choose another --out or pass --overwrite")
    if overwrite:
        for name in (*RUN_FILES, "checkpoints", "logs"):
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        return
    saved = run_dir / "config.json"
    if saved.is_file():
        previous = json.loads(saved.read_text())
        # A run may resume on other hardware: the strategy and devices do not change the run.
        changed = [k for k, v in cfg.to_dict().items()
                   if k not in ("class_names", "strategy", "devices") and _jsonable(v) != previous.get(k)]
        if changed:
            raise CovidTfError(f"{run_dir}: holds an unfinished run with other settings ({', '.join(changed)}); "
                               "use another --out, the same options, or --overwrite")


def _jsonable(value):
    return json.loads(json.dumps(value))


def train_run(cfg: TrainConfig, run_dir: str | Path | None = None, *, overwrite: bool = False,
              verbose: int | str = "auto") -> TrainResult:
    """Run a whole training: split, fit, save (atomically), evaluate on val and test."""
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        _check_run_dir(run_path, cfg, overwrite)
    started = time.perf_counter()
    split, class_names = prepare_split(cfg)
    cfg.class_names = list(class_names)
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_path / "config.json", cfg.to_dict())
        save_split(split, run_path / "split.csv")
        skipped = pd.DataFrame(split.attrs.get("skipped", []), columns=["path", "reason"])
        atomic_write_text(run_path / "skipped.csv", skipped.to_csv(index=False))
    model, history = fit(cfg, split, class_names, run_path, verbose=verbose)
    metrics = evaluate_splits(model, cfg, split, class_names)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    if run_path is not None:
        atomic_write_text(run_path / "history.csv", history.to_csv(index=False))
        atomic_write(run_path / "model.keras", model.save)
        shutil.rmtree(run_path / "checkpoints" / "cache", ignore_errors=True)
        write_run_figures(run_path, model=model)
        atomic_write_json(run_path / "metrics.json", metrics)  # last: its presence marks a finished run
    return TrainResult(model, history, split, list(class_names), metrics, run_path)


def retrain_on_train_and_val(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str], epochs: int,
                             verbose: int | str = "auto") -> keras.Model:
    """Seed 001's last step: train afresh on train+val for a fixed number of epochs (no early stopping)."""
    merged = split[split["split"].isin(["train", "val"])].copy()
    merged["split"] = "train"  # no validation data: nothing is selected or stopped early
    fixed = dataclasses.replace(cfg, epochs=epochs)
    model, _ = fit(fixed, merged, class_names, None, verbose=verbose, select_best=False)
    return model
