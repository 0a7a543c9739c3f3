"""Figures and tables for exploring a dataset (notebook 01): distributions, pixel statistics, samples."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from covid_tf import config
from covid_tf.data.images import load_image


def class_distribution(split_frame: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    used = split_frame[split_frame["split"] != ""]
    table = pd.crosstab(used["label"], used["split"], margins=True, margins_name="total")
    ordered = [name for name in (*config.SPLIT_NAMES, "total") if name in table.columns]
    return table[ordered]


def class_distribution_figure(split_frame: pd.DataFrame) -> plt.Figure:
    """Bar chart of the images per class in each split."""
    used = split_frame[split_frame["split"] != ""]
    figure, axis = plt.subplots(figsize=(7, 4))
    order = [name for name in config.SPLIT_NAMES if name in set(used["split"])]
    sns.countplot(data=used, x="split", hue="label", order=order, ax=axis)
    axis.set_title("Class distribution per split")
    axis.set_ylabel("images")
    figure.tight_layout()
    return figure


def pixel_statistics_by_split(
    split_frame: pd.DataFrame, image_size: int, channels: int = 1, max_images: int = 500
) -> pd.DataFrame:
    """Mean and standard deviation of pixel values per split (as seed 001 reports them)."""
    from covid_tf.data.pipeline import pixel_statistics

    rows = []
    for split in config.SPLIT_NAMES:
        paths = split_frame.loc[split_frame["split"] == split, "path"].tolist()
        if paths:
            mean, std = pixel_statistics(paths, image_size, channels, max_images=max_images)
            rows.append({"split": split, "images": len(paths), "mean": mean[0], "std": std[0]})
    return pd.DataFrame(rows).set_index("split")


def sample_grid_figure(
    frame: pd.DataFrame, class_names: Sequence[str], per_class: int = 4, image_size: int = 128, seed: int = 0
) -> plt.Figure:
    """A grid of random images, one row per class."""
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(len(class_names), per_class, figsize=(2.2 * per_class, 2.3 * len(class_names)),
                                squeeze=False)
    for row, name in enumerate(class_names):
        paths = frame.loc[frame["label"] == name, "path"].to_numpy()
        chosen = rng.choice(paths, min(per_class, len(paths)), replace=False) if len(paths) else []
        for column, axis in enumerate(axes[row]):
            axis.axis("off")
            if column < len(chosen):
                axis.imshow(load_image(chosen[column], 1, image_size)[..., 0], cmap="gray", vmin=0, vmax=1)
        axes[row][0].set_title(name, loc="left", fontsize=10)
    figure.tight_layout()
    return figure


def intensity_histogram_figure(
    frame: pd.DataFrame, class_names: Sequence[str], images_per_class: int = 50, image_size: int = 128, seed: int = 0
) -> plt.Figure:
    """Histograms of pixel intensity per class (density), from a seeded sample of images."""
    rng = np.random.default_rng(seed)
    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 51)
    for name in class_names:
        paths = frame.loc[frame["label"] == name, "path"].to_numpy()
        chosen = rng.choice(paths, min(images_per_class, len(paths)), replace=False)
        values = np.concatenate([load_image(p, 1, image_size).ravel() for p in chosen])
        axis.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, label=name)
    axis.set_xlabel("pixel intensity")
    axis.set_ylabel("density")
    axis.set_title("Intensity histograms per class")
    axis.legend()
    figure.tight_layout()
    return figure


def augmentation_preview_figure(image: np.ndarray, preset: str = "default", n: int = 7, seed: int = 0) -> plt.Figure:
    """The original image and ``n`` random augmentations of it."""
    from covid_tf.data.preprocessing import augmentation_layers

    augment = augmentation_layers(preset, seed=seed)
    batch = np.repeat(image[None], n, axis=0)
    augmented = np.asarray(augment(batch, training=True))
    figure, axes = plt.subplots(1, n + 1, figsize=(2 * (n + 1), 2.3))
    for axis, picture, title in zip(axes, [image, *augmented], ["original", *[f"#{i + 1}" for i in range(n)]]):
        axis.imshow(np.clip(picture[..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"Augmentation preview ({preset})")
    figure.tight_layout()
    return figure
