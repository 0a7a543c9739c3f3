"""Train the lung U-Net on every image of a dataset that has a lung mask (the ``segment-train`` back-end).

    python -m covid_tf segment-train DATA --out RUN [--image-size 256] [--epochs 40]

Any layout :func:`covid_tf.data.discover.discover` reads works; masks of any size are resized to the image
size. The split is grouped (patients and near-duplicate images never straddle two splits) with the
project's split code. Writes ``model.keras`` (inference only, no optimizer state), ``history.csv``,
``split.csv``, ``metrics.json`` (Dice and IoU per split with bootstrap CIs, after post-processing)
and ``figures/test_worst.png`` / ``figures/test_best.png``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data import discover, splits
from covid_tf.data.images import load_image
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_json, refuse_output_inside_inputs
from covid_tf.lungs import masks as lung_masks
from covid_tf.lungs import scoring

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


def masked_images(root: str | Path, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of a dataset that have a lung mask (columns of ``DatasetIndex.frame``)."""
    index = discover.discover(root, classes=classes)
    frame = index.frame[index.frame["mask_path"].astype(str) != ""].reset_index(drop=True)
    if frame.empty:
        raise CovidTfError(f"{root}: no image has a lung mask (a <Class>/masks/ folder beside <Class>/images/ "
                           "with the same file names, or a mask_path column in metadata.csv)")
    if len(frame) < len(config.SPLIT_NAMES):
        raise CovidTfError(f"{root}: only {len(frame)} image(s) have a lung mask; train, validation and test "
                           "need at least one each")
    return frame


def load_pairs(frame: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 1) in [0, 1] and {0, 1} masks resized to the same size."""
    images = np.stack([load_image(path, channels=1, size=size) for path in frame["path"]])
    masks = np.stack(
        [lung_masks.binarize(load_image(path, channels=1, size=size), 0.5) for path in frame["mask_path"]]
    )
    return images.astype(np.float32), masks[..., None].astype(np.float32)


def make_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, training: bool, seed: int):
    """A batched ``tf.data`` pipeline; training shuffles and augments image and mask together."""
    import tensorflow as tf

    from covid_tf.lungs.augment import augment_pair

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


def fit_unet(arrays: dict, options: SegmenterOptions, out: Path):
    """Build, train and return the U-Net (best validation epoch), logging ``history.csv``."""
    import keras

    from covid_tf.lungs.unet import build_unet

    keras.utils.set_random_seed(options.seed)
    model = build_unet(levels=options.levels, base_filters=options.base_filters, stem=options.stem)
    steps = -(-len(arrays["train"][0]) // options.batch_size) * options.epochs
    schedule = keras.optimizers.schedules.CosineDecay(options.lr, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=dice_bce_loss, metrics=[dice_metric])
    train = make_dataset(*arrays["train"], options.batch_size, True, options.seed)
    val = make_dataset(*arrays["val"], options.batch_size, False, options.seed) if len(arrays["val"][0]) else None
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv")), _best_weights_callback()]
    # shuffle=False: the tf.data pipeline shuffles already (Keras warns otherwise).
    model.fit(train, validation_data=val, epochs=options.epochs, callbacks=callbacks, shuffle=False, verbose=2)
    return model


def save_inference_model(model, options: SegmenterOptions, path: Path) -> Path:
    """Save the weights in a fresh, uncompiled copy: no optimizer state, no custom loss to import."""
    from covid_tf.lungs.unet import build_unet

    copy = build_unet(levels=options.levels, base_filters=options.base_filters, stem=options.stem)
    copy.set_weights(model.get_weights())
    return atomic_write(path, lambda tmp: copy.save(tmp))


def score_split(model, images: np.ndarray, masks: np.ndarray, batch_size: int) -> tuple[list, list, list]:
    """Post-processed predicted masks and per-image Dice and IoU."""
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)[..., 0]
    predicted = [lung_masks.clean_mask(p) for p in probabilities]
    pairs = [scoring.dice_and_iou(p, m[..., 0] >= 0.5) for p, m in zip(predicted, masks)]
    return predicted, [d for d, _ in pairs], [i for _, i in pairs]


def write_figures(frame: pd.DataFrame, images, masks, predicted, dice: list, out: Path, count: int = 10) -> None:
    """Overlays of the worst and best test images by Dice (red: predicted, green: reference)."""
    order = np.argsort(dice)
    for name, chosen in (("test_worst", order[:count]), ("test_best", order[::-1][:count])):
        panels = [scoring.outline_overlay(images[i], predicted[i], masks[i][..., 0]) for i in chosen]
        titles = [f"{Path(frame['path'].iloc[i]).name}\nDice {dice[i]:.3f}" for i in chosen]
        scoring.save_overlay_grid(panels, titles, out / "figures" / f"{name}.png", title=name.replace("_", " "))


def evaluate_all(model, frame: pd.DataFrame, arrays: dict, options: SegmenterOptions, out: Path) -> dict:
    """Dice and IoU per split (with CIs), figures of the test split; returns the metrics."""
    metrics: dict = {"image_size": options.image_size}
    for name, (images, masks) in arrays.items():
        predicted, dice, iou = score_split(model, images, masks, options.batch_size)
        metrics[name] = {"dice": scoring.summarize_scores(dice), "iou": scoring.summarize_scores(iou)}
        if name == "test" and len(dice):
            write_figures(frame[frame["split"] == "test"].reset_index(drop=True), images, masks, predicted, dice, out)
    return metrics


def check_output_folder(data: str | Path, out: Path, overwrite: bool) -> None:
    """Refuse an output inside the data, and an earlier run unless ``overwrite``."""
    refuse_output_inside_inputs(out, [data])
    if (out / "model.keras").exists() and not overwrite:
        raise CovidTfError(f"{out}: already holds a segmenter run (model.keras); choose another --out "
                           "or pass --overwrite")


def train_segmenter(data: str | Path, out: str | Path, options: SegmenterOptions, overwrite: bool = False) -> dict:
    """Train, evaluate and write every output of a segmenter run; return the metrics."""
    out = Path(out)
    check_output_folder(data, out, overwrite)
    started = time.perf_counter()
    frame = splits.make_split(masked_images(data, options.classes), seed=options.seed)
    out.mkdir(parents=True, exist_ok=True)
    splits.save_split(frame, out / "split.csv")
    arrays = {}
    for name in config.SPLIT_NAMES:
        arrays[name] = load_pairs(frame[frame["split"] == name].reset_index(drop=True), options.image_size)
    model = fit_unet(arrays, options, out)
    save_inference_model(model, options, out / "model.keras")
    metrics = evaluate_all(model, frame, arrays, options, out)
    metrics["n_images"] = {name: len(arrays[name][0]) for name in config.SPLIT_NAMES}
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics["data"] = str(data)
    metrics["options"] = asdict(options)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
