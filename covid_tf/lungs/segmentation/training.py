"""Train the lung U-Net on images with lung masks from one or several sources: the options, the data, the fit.

A SOURCE is ``[NAME=]PATH`` (:mod:`covid_tf.lungs.segmentation.sources`): a dataset whose images have masks, or a
folder with ``images/`` and ``masks/``. Each source is split on its own, grouped (patients and near-duplicate
images never straddle two splits), with the project's split code. ``options.init`` starts from a trained
segmenter's weights (fine-tuning) instead of random ones. Nothing here writes a file: the ``segment-train``
back-end (:mod:`covid_tf.workflows.segment_train`) writes the run folder through the run record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.lungs.segmentation import sources as mask_sources
from covid_tf.lungs.segmentation.sources import MaskSource

DEFAULT_IMAGE_SIZE = 256
SPLIT_COLUMNS = ("source", "path", "mask_path", "label", "patient_id", "split")


@dataclass(frozen=True)
class SegmenterOptions:
    """Every setting of a segmenter run (saved in ``metrics.json``); checked once, at construction."""

    image_size: int = DEFAULT_IMAGE_SIZE
    epochs: int = 40
    batch_size: int = 16
    lr: float = 3e-3
    levels: int = 3
    base_filters: int = 16
    stem: int = 2
    seed: int = config.SEED
    classes: tuple[str, ...] | None = None
    init: str | None = None  # a trained segmenter (.keras) whose weights training starts from
    init_seen: tuple[str, ...] = ()  # the sources ``init`` was trained on (a fold leaving one out starts afresh)

    def __post_init__(self) -> None:
        multiple = 2**self.levels * max(self.stem, 1)
        if self.image_size <= 0 or self.image_size % multiple:
            raise CovidTfError(f"--image-size must be a positive multiple of {multiple} "
                               f"(2 ** levels x stem), got {self.image_size}")
        for name in ("epochs", "batch_size", "levels", "base_filters", "stem"):
            if getattr(self, name) < 1:
                raise CovidTfError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise CovidTfError(f"--lr must be positive, got {self.lr}")


def make_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, training: bool, seed: int):
    """A batched ``tf.data`` pipeline; training shuffles and augments image and mask together."""
    import tensorflow as tf

    from covid_tf.lungs.segmentation.augment import augment_pair

    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map(augment_pair, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def dice_bce_loss(y_true, y_pred):
    """Soft Dice loss (per image) plus binary cross-entropy."""
    from keras import ops

    axes = (1, 2, 3)
    overlap = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * overlap + 1.0) / (total + 1.0)
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred), axis=(1, 2))
    return 1.0 - dice + bce


def dice_metric(y_true, y_pred):
    """Hard Dice at 0.5 per image, averaged by Keras over the batch."""
    from keras import ops

    predicted = ops.cast(y_pred >= 0.5, "float32")
    overlap = ops.sum(y_true * predicted, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(predicted, axis=(1, 2, 3))
    return (2.0 * overlap + 1.0) / (total + 1.0)


def _best_weights_callback(monitor: str = "val_dice_metric"):
    import keras

    class KeepBest(keras.callbacks.Callback):
        """Remember the weights of the best epoch and restore them when training ends."""

        def __init__(self) -> None:
            super().__init__()
            self.best, self.weights = -np.inf, None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor, -np.inf)
            if value > self.best:
                self.best, self.weights = value, self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return KeepBest()


def initial_model(options: SegmenterOptions):
    """A fresh U-Net of ``options``' shape, holding the weights of ``options.init`` when given."""
    from covid_tf.lungs.segmentation.unet import build_unet

    model = build_unet(levels=options.levels, base_filters=options.base_filters, stem=options.stem)
    if options.init:
        from covid_tf.lungs.segmentation.segmenter import load_segmenter

        try:
            model.set_weights(load_segmenter(options.init).get_weights())
        except ValueError as error:
            raise CovidTfError(f"{options.init}: its layers do not match --levels {options.levels} --base-filters "
                               f"{options.base_filters} --stem {options.stem}, so it cannot be --init "
                               f"({error})") from None
    return model


def fit_unet(arrays: dict, options: SegmenterOptions):
    """Build (or load, with ``options.init``), train and return the U-Net (best validation epoch) and its history
    (:func:`history_table`); ``arrays`` maps ``train`` and ``val`` to (images, masks)."""
    import keras

    keras.utils.set_random_seed(options.seed)
    model = initial_model(options)
    steps = -(-len(arrays["train"][0]) // options.batch_size) * options.epochs
    schedule = keras.optimizers.schedules.CosineDecay(options.lr, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=dice_bce_loss, metrics=[dice_metric])
    train = make_dataset(*arrays["train"], options.batch_size, True, options.seed)
    val = make_dataset(*arrays["val"], options.batch_size, False, options.seed) if len(arrays["val"][0]) else None
    # shuffle=False: the tf.data pipeline shuffles already (Keras warns otherwise).
    history = model.fit(train, validation_data=val, epochs=options.epochs, callbacks=[_best_weights_callback()],
                        shuffle=False, verbose=2)
    return model, history_table(history.history)


def history_table(history: dict) -> pd.DataFrame:
    """One row per epoch: ``epoch`` (from 0) and every logged value, by name (as Keras's ``CSVLogger`` writes it)."""
    epochs = len(next(iter(history.values()), []))
    return pd.DataFrame({"epoch": range(epochs), **{name: history[name] for name in sorted(history)}})


def inference_model(model, options: SegmenterOptions):
    """The weights in a fresh, uncompiled copy, to be saved: no optimizer state, no custom loss to import."""
    from covid_tf.lungs.segmentation.unet import build_unet

    copy = build_unet(levels=options.levels, base_filters=options.base_filters, stem=options.stem)
    copy.set_weights(model.get_weights())
    return copy


def training_arrays(frame: pd.DataFrame, images: np.ndarray, masks: np.ndarray, keep=None) -> dict:
    """``{"train": (images, masks), "val": ...}`` of the rows of ``frame`` (optionally only where ``keep``)."""
    keep = np.ones(len(frame), bool) if keep is None else np.asarray(keep, bool)
    chosen = {name: keep & (frame["split"] == name).to_numpy() for name in ("train", "val")}
    return {name: (images[rows], masks[rows]) for name, rows in chosen.items()}


def as_sources(sources: Sequence[str | Path | MaskSource]) -> list[MaskSource]:
    """Sources given as ``[NAME=]PATH`` text (or paths) or as :class:`MaskSource`, names checked."""
    parsed = [item if isinstance(item, MaskSource) else mask_sources.parse_source(str(item)) for item in sources]
    return mask_sources.parse_sources([f"{item.name}={item.root}" for item in parsed])


def split_frame(sources: list[MaskSource], options: SegmenterOptions) -> pd.DataFrame:
    """Every source split on its own (the rows of ``split.csv``, columns :data:`SPLIT_COLUMNS` among others)."""
    return mask_sources.split_sources(sources, options.classes, options.seed)


def fold_options(options: SegmenterOptions, held_out: str) -> SegmenterOptions:
    """The options of the fold that leaves ``held_out`` out: without ``init`` when ``init`` saw that source."""
    return replace(options, init=None) if held_out in options.init_seen else options
