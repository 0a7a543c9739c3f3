"""Figures and tables that set a seed's runs beside ours (notebooks 07 and 08).

* :func:`seed_table`: the seed's reported accuracy beside ours with its 95% CI, one row per run;
* :func:`confusion_matrices_figure`: several runs' row-normalised confusion matrices side by side;
* :func:`cam_mask_figure`: per image, the CAM over the image and seed 000's region above 0.85 of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from covid_tf.explain.overlay import overlay_heatmap
from covid_tf.explain.segmentation import DEFAULT_THRESHOLD, draw_contours, segment_heatmap
from covid_tf.figures.comparison import runs_table


def seed_table(ours: Mapping[str, Mapping[str, Any]], seed: Mapping[str, float | None]) -> pd.DataFrame:
    """One row per run: the seed's accuracy (None where it reports none) beside ours with its 95% CI.

    ``ours`` maps a run label to its ``metrics.json`` split dict (:func:`covid_tf.figures.comparison.runs_table`);
    ``seed`` maps the same labels to the accuracy the seed document reports.
    """
    missing = set(ours) - set(seed)
    if missing:
        raise ValueError(f"no seed value given for {sorted(missing)}")
    table = runs_table(ours).set_index("run")
    table.insert(0, "seed accuracy", [seed[label] for label in table.index])
    return table[["seed accuracy", "accuracy", "accuracy_low", "accuracy_high", "balanced_accuracy", "roc_auc",
                  "n"]]


def confusion_matrices_figure(matrices: Mapping[str, Any], class_names: Sequence[str],
                              title: str | None = None) -> Figure:
    """Row-normalised confusion matrices (rows true, columns predicted), one panel per run, counts in brackets."""
    if not matrices:
        raise ValueError("no confusion matrix given")
    n_classes = len(class_names)
    figure = Figure(figsize=(4.2 * len(matrices), 4.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(matrices)))
    for axis, (label, matrix) in zip(axes, matrices.items()):
        counts = np.asarray(matrix, dtype=np.float64)
        if counts.shape != (n_classes, n_classes):
            raise ValueError(f"{label}: confusion matrix must be {n_classes}x{n_classes} for {list(class_names)}")
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        text = np.array([[f"{rate:.2f}\n({int(count)})" for rate, count in zip(*row)] for row in zip(rates, counts)])
        sns.heatmap(rates, annot=text, fmt="", cmap="Blues", vmin=0.0, vmax=1.0, square=True, cbar=False,
                    xticklabels=class_names, yticklabels=class_names, ax=axis)
        axis.set_title(label)
        axis.set_xlabel("Predicted")
        axis.set_ylabel("True")
        axis.tick_params(axis="x", labelrotation=30)
        axis.tick_params(axis="y", labelrotation=0)
    if title:
        figure.suptitle(title)
    return figure


def cam_mask_figure(images: np.ndarray, heatmaps: np.ndarray, titles: Sequence[str],
                    threshold: float = DEFAULT_THRESHOLD, lesions: Sequence[np.ndarray | None] | None = None,
                    title: str | None = None) -> Figure:
    """Two panels per image (a row each): the heatmap over the image, and the region at or above ``threshold``
    outlined in red (seed 000's "segmentation at threshold 0.85"), with the true lesion outlined in green
    where ``lesions`` gives one. ``images`` (N, H, W[, C]) in [0, 1], ``heatmaps`` (N, h, w) in [0, 1]."""
    images, heatmaps = np.asarray(images, dtype=np.float32), np.asarray(heatmaps, dtype=np.float32)
    if len(images) == 0 or len(images) != len(heatmaps) or len(titles) != len(images):
        raise ValueError(f"need as many heatmaps and titles as images, got {len(images)}, {len(heatmaps)}, "
                         f"{len(titles)}")
    lesions = list(lesions) if lesions is not None else [None] * len(images)
    figure = Figure(figsize=(5.0, 2.6 * len(images)), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(images), 2))
    for row, (image, heatmap, text, lesion) in enumerate(zip(images, heatmaps, titles, lesions)):
        overlay = overlay_heatmap(image, heatmap)
        size = overlay.shape[:2]
        mask, contours = segment_heatmap(_resized(heatmap, size), threshold)
        region = np.uint8(np.round(_grey(image, size) * np.where(mask, 1.0, 0.4)[..., None]))
        region = draw_contours(region, contours, color=(255, 0, 0), thickness=max(1, size[0] // 128))
        if lesion is not None:
            _, outline = segment_heatmap(_resized(np.asarray(lesion, dtype=np.float32), size), 0.5)
            region = draw_contours(region, outline, color=(0, 200, 0), thickness=max(1, size[0] // 128))
        axes[row, 0].imshow(overlay)
        axes[row, 0].set_title(text, fontsize="small")
        axes[row, 1].imshow(region)
        axes[row, 1].set_title(f"CAM >= {threshold:g}: {mask.mean():.0%} of the image", fontsize="small")
        for axis in axes[row]:
            axis.set_axis_off()
    if title:
        figure.suptitle(title)
    return figure


def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(np.asarray(array, dtype=np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def _grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image as uint8-range RGB floats (H, W, 3) at ``size``."""
    grey = np.asarray(image, dtype=np.float32)
    grey = grey[..., 0] if grey.ndim == 3 else grey
    return np.repeat(255.0 * np.clip(_resized(grey, size), 0.0, 1.0)[..., None], 3, axis=-1)
