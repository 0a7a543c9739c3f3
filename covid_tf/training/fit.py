"""The fit: datasets, model, the head phase on a frozen backbone, then fine-tuning, as in the keras-io guide.

:func:`fit` trains the model of a :class:`~covid_tf.runs.config.TrainConfig` on a split and returns the
model and its history; :mod:`covid_tf.workflows.train` wraps it into a run folder, and
:mod:`covid_tf.training.resume` lets a killed run continue.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from covid_tf import config
from covid_tf.ct.infected import keep_infected_training_slices, read_infected_slices
from covid_tf.data.pipeline import make_dataset, make_training_datasets, mix_labels, pixel_statistics
from covid_tf.data.preprocessing import augmentation_layers, mixup_layer
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.metrics import positive_class_index
from covid_tf.io_utils import safe_name
from covid_tf.lungs.roi.inputs import RoiInputs, run_inputs
from covid_tf.models.architectures import get_architecture
from covid_tf.models.freezing import freeze_backbone, unfreeze_top
from covid_tf.models.fused_batch_norm import fuse_batch_norm
from covid_tf.models.registry import build_model
from covid_tf.runs.config import TrainConfig
from covid_tf.training import resume
from covid_tf.training.callbacks import BestModelCheckpoint, PreciseBatchNorm, SafeBackupAndRestore
from covid_tf.training.distribute import get_strategy
from covid_tf.training.losses import get_loss, get_optimizer

# Thresholds of the training AUC: scores 0.001 apart fall in different bins, so it matches scikit-learn's.
AUC_THRESHOLDS = 1001


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


def make_datasets(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str], cache_dir: Path | None,
                  inputs: RoiInputs | None = None):
    """The training, validation and un-augmented statistics datasets of a split, and its (paths, labels).

    ``inputs`` (a lung ROI, :func:`covid_tf.lungs.roi.inputs.run_inputs`) replaces the decoding of images.
    """
    inputs = inputs or RoiInputs()
    if cfg.infected_slices:  # seed 002: train only on the slices a radiologist marked infected
        split = keep_infected_training_slices(split, read_infected_slices(cfg.infected_slices), cfg.infected_slices)
    label_of = {name: i for i, name in enumerate(class_names)}
    parts = {}
    for name in config.SPLIT_NAMES:
        rows = split[split["split"] == name]
        parts[name] = (rows["path"].tolist(), rows["label"].map(label_of).to_numpy())
    train_paths, train_labels = parts["train"]
    common = dict(num_classes=len(class_names), image_size=cfg.image_size, channels=cfg.channels,
                  batch_size=cfg.batch_size, seed=cfg.seed)
    training = dict(augmentation=augmentation_layers(cfg.augmentation, seed=cfg.seed),
                    cache_dir=cache_dir and cache_dir / "train", loader=inputs.train_loader,
                    batch_transform=inputs.transform, **common)
    if inputs.train_loader is inputs.loader:
        # Un-augmented training images in a mixed order for PreciseBatchNorm, read from the training cache
        # (the same images in the same order as an uncached dataset of their own, without decoding again).
        train, statistics = make_training_datasets(train_paths, train_labels, **training)
    else:  # the training loader differs (the mask channel of the ROI jitter): decode apart, uncached
        train = make_dataset(train_paths, train_labels, shuffle=True, **training)
        statistics = make_dataset(train_paths, shuffle=True, cache=False, loader=inputs.loader, **common)
    train = mix_labels(train, mixup_layer(cfg.mixup, seed=cfg.seed))
    val = None
    if len(parts["val"][0]):
        val = make_dataset(*parts["val"], cache_dir=cache_dir and cache_dir / "val", loader=inputs.loader, **common)
    return train, val, statistics, parts


def normalization_statistics(cfg: TrainConfig, train_paths: Sequence[str], loader=None):
    """``(mean, std)`` of the training images when the model's normalisation uses them, else ``(None, None)``."""
    if not get_architecture(cfg.model).needs_statistics(cfg.normalization):
        return None, None
    return pixel_statistics(train_paths, cfg.image_size, cfg.channels, seed=cfg.seed, loader=loader)


def auc_metric(class_names: Sequence[str]) -> keras.metrics.AUC:
    """The ROC AUC that ``metrics.json`` reports, as a built-in Keras metric (history and TensorBoard).

    Binary tasks: the positive class's AUC, named ``auc_<class>`` (``auc_COVID``); ``label_weights`` keeps
    only that column of the per-class AUCs. More classes: the macro one-vs-rest AUC, named ``macro_auc``.
    A plain ``AUC()`` on one-hot targets is micro-averaged and disagrees with ``metrics.json``.
    """
    n_classes = len(class_names)
    if n_classes == 2:
        positive = positive_class_index(class_names)
        weights = [1.0 if index == positive else 0.0 for index in range(n_classes)]
        return keras.metrics.AUC(num_thresholds=AUC_THRESHOLDS, multi_label=True, num_labels=n_classes,
                                 label_weights=weights, name=f"auc_{safe_name(class_names[positive], 'positive')}")
    return keras.metrics.AUC(num_thresholds=AUC_THRESHOLDS, multi_label=True, num_labels=n_classes,
                             name="macro_auc")


def compile_model(model: keras.Model, cfg: TrainConfig, class_counts: Sequence[int], learning_rate: float,
                  class_names: Sequence[str] | None = None) -> None:
    """Compile with the run's loss and optimizer; called again after every change of ``trainable``."""
    names = list(class_names or cfg.class_names or [str(index) for index in range(len(class_counts))])
    model.compile(
        optimizer=get_optimizer(cfg.optimizer, learning_rate),
        loss=get_loss(cfg.loss, list(class_counts), label_smoothing=cfg.label_smoothing, alpha=cfg.focal_alpha,
                      gamma=cfg.focal_gamma),
        metrics=["accuracy", auc_metric(names)],
    )


def build_training_state(model: keras.Model, data_spec) -> None:
    """Create the optimizer's and the compiled metrics' variables now, from the training data's ``element_spec``.

    Without a distribution strategy Keras creates them while it traces the first training step, and
    TensorFlow then traces that step a second time (a ``tf.function`` that created variables is traced
    again without): building them first halves the tracing, about 2 s of every fit of a small CNN on a CPU.
    The variables start at zero as they would in the trace, so training is unchanged. Keras builds the same
    way under a strategy (``Trainer._symbolic_build``); without that method nothing is done.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is not None:
        build(data_batch=tf.nest.map_structure(lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), data_spec))


def precise_batch_norm(cfg: TrainConfig, statistics: tf.data.Dataset) -> PreciseBatchNorm:
    """The run's PreciseBatchNorm callback; put it first, so validation and the other callbacks see its work."""
    return PreciseBatchNorm(statistics, max_batches=math.ceil(cfg.precise_bn_images / cfg.batch_size))


def cosine_schedule(learning_rate: float, epochs: int, first_epoch: int = 0):
    """Cosine decay per epoch, from ``learning_rate`` at ``first_epoch`` towards 0 after ``epochs`` epochs
    (Loshchilov & Hutter, 2017, without restarts), as a ``keras.callbacks.LearningRateScheduler`` function."""
    def rate(epoch: int, current: float | None = None) -> float:
        progress = min(max(epoch - first_epoch, 0) / max(epochs, 1), 1.0)
        return float(learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return rate


def _callbacks(cfg: TrainConfig, run_dir: Path | None, best: BestModelCheckpoint, phase: str,
               validating: bool, statistics: tf.data.Dataset, schedule=None):
    callbacks: list[keras.callbacks.Callback] = [precise_batch_norm(cfg, statistics)]
    if validating:
        callbacks.append(best)
        if cfg.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                                           restore_best_weights=False))
        if cfg.lr_schedule == "plateau":
            callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                               patience=max(1, cfg.patience // 2), min_lr=1e-7))
    if schedule is not None:  # after PreciseBatchNorm; sets the rate at the start of each epoch
        callbacks.append(keras.callbacks.LearningRateScheduler(schedule))
    if run_dir is not None:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        callbacks += [
            # Always appending: a resumed run keeps the epochs logged before it was killed (the
            # checkpoints folder of a fresh run is new or emptied by --overwrite).
            keras.callbacks.CSVLogger(str(run_dir / "checkpoints" / resume.PARTIAL_LOG), append=True),
            SafeBackupAndRestore(run_dir / "checkpoints" / f"backup_{phase}"),
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
    inputs: RoiInputs | None = None,
) -> tuple[keras.Model, pd.DataFrame]:
    """Build and train the model of ``cfg`` on the split; return the model and the history.

    With ``select_best`` the weights of the best epoch (validation accuracy, then training
    accuracy) are kept; without, the weights of the last epoch. ``inputs``: the run's lung ROI
    (default: prepared from ``cfg.roi``, masks cached).
    """
    strategy = get_strategy(cfg.strategy, cfg.devices)  # before any other TensorFlow work of the run
    set_seed(cfg.seed)
    inputs = inputs or run_inputs(cfg, split)
    with precision_policy(cfg.mixed_precision), _known_strategy_failures(cfg.strategy):
        return _fit(cfg, split, class_names, run_dir, verbose, select_best, strategy, inputs)


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
         verbose: int | str, select_best: bool, strategy: tf.distribute.Strategy,
         inputs: RoiInputs) -> tuple[keras.Model, pd.DataFrame]:
    cache_dir = run_dir / "checkpoints" / "cache" if run_dir else None
    train, val, statistics, parts = make_datasets(cfg, split, class_names, cache_dir, inputs)
    class_counts = np.bincount(parts["train"][1], minlength=len(class_names))
    mean, std = normalization_statistics(cfg, parts["train"][0], inputs.loader)
    with strategy.scope():  # variables of the model and the optimizer are mirrored over the replicas
        model = build_model(cfg.model, image_size=cfg.image_size, channels=cfg.channels,
                            num_classes=len(class_names), weights=cfg.weights, dropout=cfg.dropout,
                            normalization=cfg.normalization, mean=mean, std=std,
                            lung_attention=cfg.roi_spec.mask_input)
    fuse_batch_norm(model)  # training steps and PreciseBatchNorm use TensorFlow's fused kernel (same numbers)
    best = BestModelCheckpoint(run_dir / "checkpoints" / "best.weights.h5" if run_dir else None,
                               restore_at_end=select_best)
    two_phase = get_architecture(cfg.model).transfer and cfg.fine_tune_epochs > 0
    fit_options = dict(validation_data=val, shuffle=False, verbose=verbose)

    def callbacks(phase: str, learning_rate: float, epochs: int, first_epoch: int = 0) -> list:
        schedule = cosine_schedule(learning_rate, epochs, first_epoch) if cfg.lr_schedule == "cosine" else None
        return _callbacks(cfg, run_dir, best, phase, validating=val is not None, statistics=statistics,
                          schedule=schedule)

    # Phase 1: the head on a frozen backbone (or the whole model when there is no backbone).
    if two_phase:
        freeze_backbone(model)
    with strategy.scope():
        compile_model(model, cfg, class_counts, cfg.learning_rate, class_names)
        build_training_state(model, train.element_spec)
    marker = resume.head_marker(run_dir) if two_phase else None
    start = resume.load_finished_head(model, marker)  # a run killed while fine-tuning keeps its head phase
    frames = []
    if start is None:
        first = callbacks("head" if two_phase else "all", cfg.learning_rate, cfg.epochs)
        history = model.fit(train, epochs=cfg.epochs, callbacks=first, **fit_options)
        frames.append(_history_frame(history, "head" if two_phase else "train"))
        start = _next_epoch(frames[0], first, cfg.epochs)
        resume.save_finished_head(model, marker, start)
        if marker is not None:  # the head phase is kept: its backup is not needed any more
            resume.discard_backups(run_dir, "head")
    # Phase 2: unfreeze the top blocks and fine-tune at a smaller learning rate (recompiled after the change).
    if two_phase:
        unfreeze_top(model, cfg.unfreeze_blocks)
        fine_tune_rate = cfg.fine_tune_learning_rate or cfg.learning_rate / 10
        with strategy.scope():
            compile_model(model, cfg, class_counts, fine_tune_rate, class_names)
            build_training_state(model, train.element_spec)
        resume.forget_restored_epoch(model)
        history = model.fit(train, initial_epoch=start, epochs=start + cfg.fine_tune_epochs,
                            callbacks=callbacks("fine_tune", fine_tune_rate, cfg.fine_tune_epochs, start),
                            **fit_options)
        frames.append(_history_frame(history, "fine_tune", offset=start))
    history_frame = pd.concat(frames, ignore_index=True)
    if run_dir is not None:
        history_frame = resume.complete_history(history_frame, run_dir / "checkpoints" / resume.PARTIAL_LOG,
                                                head_epochs=start if two_phase else None)
    history_frame["best"] = history_frame["epoch"] == (best.best_epoch if best.best_epoch is not None else -1)
    return model, history_frame


def _next_epoch(frame: pd.DataFrame, callbacks: Sequence[keras.callbacks.Callback], epochs: int) -> int:
    """The epoch after a fit: after its last row (a resumed fit's history starts late: epochs, not rows), or,
    when it trained none (its backup said it had ended), the epoch that backup restored."""
    if len(frame):
        return int(frame["epoch"].max()) + 1
    restored = [c.restored_epoch for c in callbacks if isinstance(c, SafeBackupAndRestore) and c.restored_epoch]
    return restored[0] if restored else epochs


def _history_frame(history: keras.callbacks.History, phase: str, offset: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", history.epoch if history.epoch else list(range(offset, offset + len(frame))))
    frame.insert(1, "phase", phase)
    return frame


