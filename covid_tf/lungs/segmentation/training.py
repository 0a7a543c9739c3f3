"""Train the lung U-Net on images with lung masks from one or several sources (the ``segment-train`` back-end).

    python -m covid_tf segment-train SOURCE [SOURCE...] --out RUN [--image-size 256] [--epochs 40] [--init FILE]

A SOURCE is ``[NAME=]PATH`` (:mod:`covid_tf.lungs.segmentation.sources`): a dataset whose images have masks, or a
folder with ``images/`` and ``masks/``. Each source is split on its own, grouped (patients and near-duplicate
images never straddle two splits), with the project's split code. ``--init FILE`` starts from a trained
segmenter's weights (fine-tuning) instead of random ones. Writes ``model.keras`` (inference only, no
optimizer state), ``history.csv``, ``split.csv``, ``scores.csv`` (Dice, IoU and the plausibility verdict per
image), ``metrics.json`` (per source and split: Dice and IoU with bootstrap CIs, after post-processing, and
how many failures the plausibility check flags) and ``figures/test_worst.png`` / ``figures/test_best.png``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_json, atomic_write_text, csv_text, refuse_output_inside_inputs
from covid_tf.lungs.segmentation import evaluation, scoring
from covid_tf.lungs.segmentation import sources as mask_sources
from covid_tf.lungs.segmentation.sources import MaskSource

DEFAULT_IMAGE_SIZE = 256


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


def fit_unet(arrays: dict, options: SegmenterOptions, out: Path):
    """Build (or load, with ``options.init``), train and return the U-Net (best validation epoch), logging
    ``history.csv``; ``arrays`` maps ``train`` and ``val`` to (images, masks)."""
    import keras

    keras.utils.set_random_seed(options.seed)
    model = initial_model(options)
    steps = -(-len(arrays["train"][0]) // options.batch_size) * options.epochs
    schedule = keras.optimizers.schedules.CosineDecay(options.lr, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=dice_bce_loss, metrics=[dice_metric])
    train = make_dataset(*arrays["train"], options.batch_size, True, options.seed)
    val = make_dataset(*arrays["val"], options.batch_size, False, options.seed) if len(arrays["val"][0]) else None
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv")), _best_weights_callback()]
    # shuffle=False: the tf.data pipeline shuffles already (Keras warns otherwise).
    model.fit(train, validation_data=val, epochs=options.epochs, callbacks=callbacks, shuffle=False, verbose=2)
    return model


def save_inference_model(model, options: SegmenterOptions, path: Path) -> Path:
    """Save the weights in a fresh, uncompiled copy: no optimizer state, no custom loss to import."""
    from covid_tf.lungs.segmentation.unet import build_unet

    copy = build_unet(levels=options.levels, base_filters=options.base_filters, stem=options.stem)
    copy.set_weights(model.get_weights())
    return atomic_write(path, lambda tmp: copy.save(tmp))


def training_arrays(frame: pd.DataFrame, images: np.ndarray, masks: np.ndarray, keep=None) -> dict:
    """``{"train": (images, masks), "val": ...}`` of the rows of ``frame`` (optionally only where ``keep``)."""
    keep = np.ones(len(frame), bool) if keep is None else np.asarray(keep, bool)
    chosen = {name: keep & (frame["split"] == name).to_numpy() for name in ("train", "val")}
    return {name: (images[rows], masks[rows]) for name, rows in chosen.items()}


def write_figures(scores: pd.DataFrame, arrays: dict, out: Path, count: int = 10) -> None:
    """Overlays of the worst and best test images by Dice (red: predicted, green: reference)."""
    test = np.nonzero((scores["split"] == "test").to_numpy())[0]
    if not len(test):
        return
    order = test[np.argsort(scores["dice"].to_numpy()[test], kind="stable")]
    for name, chosen in (("test_worst", order[:count]), ("test_best", order[::-1][:count])):
        panels = [scoring.outline_overlay(arrays["images"][i], arrays["predicted"][i], arrays["masks"][i][..., 0])
                  for i in chosen]
        titles = [f"{scores['source'].iloc[i]} {Path(scores['path'].iloc[i]).name}\nDice {scores['dice'].iloc[i]:.3f}"
                  for i in chosen]
        scoring.save_overlay_grid(panels, titles, out / "figures" / f"{name}.png", title=name.replace("_", " "))


def check_output_folder(inputs: Sequence[str | Path], out: Path, overwrite: bool) -> None:
    """Refuse an output inside an input, and an earlier run unless ``overwrite``."""
    refuse_output_inside_inputs(out, list(inputs))
    if (out / "model.keras").exists() and not overwrite:
        raise CovidTfError(f"{out}: already holds a segmenter run (model.keras); choose another --out "
                           "or pass --overwrite")


def as_sources(sources: Sequence[str | Path | MaskSource]) -> list[MaskSource]:
    """Sources given as ``[NAME=]PATH`` text (or paths) or as :class:`MaskSource`, names checked."""
    parsed = [item if isinstance(item, MaskSource) else mask_sources.parse_source(str(item)) for item in sources]
    return mask_sources.parse_sources([f"{item.name}={item.root}" for item in parsed])


def load_sources(sources: list[MaskSource], out: Path, options: SegmenterOptions) -> tuple[pd.DataFrame, np.ndarray,
                                                                                            np.ndarray]:
    """Split the sources, write ``split.csv`` and load every image and mask at ``options.image_size``."""
    frame = mask_sources.split_sources(sources, options.classes, options.seed)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["source", "path", "mask_path", "label", "patient_id", "split"]
    atomic_write_text(out / "split.csv", csv_text(frame[columns]))
    images, masks = evaluation.load_pairs(frame, options.image_size)
    return frame, images, masks


def train_segmenter(sources: Sequence[str | Path | MaskSource], out: str | Path, options: SegmenterOptions,
                    overwrite: bool = False) -> dict:
    """Train on the train splits of every source, evaluate every split of every source, write every output of a
    segmenter run; return the metrics."""
    out, sources = Path(out), as_sources(sources)
    check_output_folder([source.root for source in sources], out, overwrite)
    started = time.perf_counter()
    frame, images, masks = load_sources(sources, out, options)
    model = fit_unet(training_arrays(frame, images, masks), options, out)
    save_inference_model(model, options, out / "model.keras")
    scores, arrays = evaluation.score_arrays(model, frame, images, masks, options.batch_size)
    atomic_write_text(out / "scores.csv", csv_text(scores))
    write_figures(scores, arrays, out)
    metrics = {"image_size": options.image_size, "sources": evaluation.summarize_by_source(scores),
               "n_images": {name: frame[frame["source"] == name]["split"].value_counts().to_dict()
                            for name in frame["source"].unique()},
               "train_seconds": round(time.perf_counter() - started, 1),
               "data": {source.name: str(source.root) for source in sources},
               "options": asdict(options)}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def fold_options(options: SegmenterOptions, held_out: str) -> SegmenterOptions:
    """The options of the fold that leaves ``held_out`` out: without ``init`` when ``init`` saw that source."""
    return replace(options, init=None) if held_out in options.init_seen else options


def score_segmenter(sources: Sequence[str | Path | MaskSource], out: str | Path, segmenter: str | Path | None,
                    options: SegmenterOptions) -> dict:
    """Score a trained segmenter (default: the shipped one) on every split of every source, without training:
    ``scores.csv``, ``split.csv`` and ``evaluation.json`` (per source and split) in ``out``."""
    from covid_tf.lungs.segmentation.segmenter import load_segmenter

    out, sources = Path(out), as_sources(sources)
    refuse_output_inside_inputs(out, [source.root for source in sources])
    model = load_segmenter(segmenter)
    frame, images, masks = load_sources(sources, out, options)
    scores, _ = evaluation.score_arrays(model, frame, images, masks, options.batch_size)
    atomic_write_text(out / "scores.csv", csv_text(scores))
    metrics = {"segmenter": str(segmenter or "shipped"), "image_size": options.image_size,
               "sources": evaluation.summarize_by_source(scores)}
    atomic_write_json(out / "evaluation.json", metrics)
    return metrics
