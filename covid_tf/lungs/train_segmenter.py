"""Train the lung U-Net on every image of a dataset that has a lung mask.

    python -m covid_tf.lungs.train_segmenter DATA --out RUN [--image-size 256] [--epochs 40]

Any layout :func:`covid_tf.data.discover` reads works; masks of any size are resized to the image
size. The split is grouped (patients and near-duplicate images never straddle two splits) with the
project's split code. Writes ``model.keras`` (inference only, no optimizer state), ``history.csv``,
``split.csv``, ``metrics.json`` (Dice and IoU per split with bootstrap CIs, after post-processing)
and ``figures/test_worst.png`` / ``figures/test_best.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data import discover, splits
from covid_tf.data.images import load_image
from covid_tf.lungs import masks as lung_masks
from covid_tf.lungs import scoring

DEFAULT_IMAGE_SIZE = 256


def masked_images(root: str | Path, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of a dataset that have a lung mask (columns of ``DatasetIndex.frame``)."""
    index = discover.discover(root, classes=classes)
    frame = index.frame[index.frame["mask_path"].astype(str) != ""].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"{root}: no image has a lung mask (a masks/ folder beside images/)")
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


def fit_unet(arrays: dict, args: argparse.Namespace, out: Path):
    """Build, train and return the U-Net (best validation epoch), logging ``history.csv``."""
    import keras

    from covid_tf.lungs.unet import build_unet

    keras.utils.set_random_seed(args.seed)
    model = build_unet(levels=args.levels, base_filters=args.base_filters, stem=args.stem)
    steps = -(-len(arrays["train"][0]) // args.batch_size) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=dice_bce_loss, metrics=[dice_metric])
    train = make_dataset(*arrays["train"], args.batch_size, True, args.seed)
    val = make_dataset(*arrays["val"], args.batch_size, False, args.seed)
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv")), _best_weights_callback()]
    model.fit(train, validation_data=val, epochs=args.epochs, callbacks=callbacks, verbose=2)
    return model


def save_inference_model(model, args: argparse.Namespace, path: Path) -> Path:
    """Save the weights in a fresh, uncompiled copy: no optimizer state, no custom loss to import."""
    from covid_tf.lungs.unet import build_unet

    copy = build_unet(levels=args.levels, base_filters=args.base_filters, stem=args.stem)
    copy.set_weights(model.get_weights())
    copy.save(path)
    return path


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


def evaluate_all(model, frame: pd.DataFrame, arrays: dict, args: argparse.Namespace, out: Path) -> dict:
    """Dice and IoU per split (with CIs), figures of the test split; returns the metrics."""
    metrics: dict = {"image_size": args.image_size}
    for name, (images, masks) in arrays.items():
        predicted, dice, iou = score_split(model, images, masks, args.batch_size)
        metrics[name] = {"dice": scoring.summarize_scores(dice), "iou": scoring.summarize_scores(iou)}
        if name == "test" and len(dice):
            write_figures(frame[frame["split"] == "test"].reset_index(drop=True), images, masks, predicted, dice, out)
    return metrics


def run(args: argparse.Namespace) -> dict:
    """Train, evaluate and write every output of a segmenter run; return the metrics."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frame = splits.make_split(masked_images(args.data, args.classes), seed=args.seed)
    splits.save_split(frame, out / "split.csv")
    arrays = {}
    for name in config.SPLIT_NAMES:
        arrays[name] = load_pairs(frame[frame["split"] == name].reset_index(drop=True), args.image_size)
    model = fit_unet(arrays, args, out)
    save_inference_model(model, args, out / "model.keras")
    metrics = evaluate_all(model, frame, arrays, args, out)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics["command"] = vars(args)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the lung U-Net on the images that have lung masks.")
    parser.add_argument("data", help="dataset folder or label CSV (images with masks/ are used)")
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--classes", type=discover.parse_class_list, default=None)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--stem", type=int, default=2)
    parser.add_argument("--seed", type=int, default=config.SEED)
    args = parser.parse_args(argv)
    if args.image_size % (2**args.levels * args.stem):
        parser.error(f"--image-size must be divisible by {2**args.levels * args.stem}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    metrics = run(parse_args(argv))
    test = metrics["test"]
    print(f"test Dice {test['dice']['mean']:.4f} {test['dice']['ci95']}, IoU {test['iou']['mean']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
