"""Dice and IoU of lung masks, with bootstrap confidence intervals, and overlay figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covid_tf.evaluation.bootstrap import bootstrap_weights, percentile_interval
from covid_tf.io_utils import atomic_write


def dice_and_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool masks; two empty masks agree perfectly (1, 1)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    overlap = float(np.logical_and(predicted, truth).sum())
    total = float(predicted.sum() + truth.sum())
    if total == 0.0:
        return 1.0, 1.0
    return 2.0 * overlap / total, overlap / (total - overlap)


def summarize_scores(values: Sequence[float], n_bootstrap: int = 1000, seed: int = 42) -> dict:
    """Mean, median, minimum and a 95 % bootstrap interval of the mean of per-image scores."""
    scores = np.asarray(values, dtype=np.float64)
    if scores.size == 0:
        return {"n": 0, "mean": None, "median": None, "min": None, "ci95": [None, None]}
    weights = bootstrap_weights(np.zeros(scores.size, dtype=np.int64), n_bootstrap=n_bootstrap, seed=seed)
    means = weights @ scores / weights.sum(axis=1)
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        "median": float(np.median(scores)),
        "min": float(scores.min()),
        "ci95": percentile_interval(means),
    }


def outline_overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 of a grayscale [0, 1] image with the predicted outline in red, the truth in green."""
    import cv2

    gray = (np.clip(np.asarray(image, np.float32).squeeze(), 0.0, 1.0) * 255).astype(np.uint8)
    canvas = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    thickness = max(1, gray.shape[0] // 200)
    for mask, colour in ((truth, (0, 220, 0)), (predicted, (255, 40, 40))):
        if mask is None:
            continue
        contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    return canvas


def save_overlay_grid(
    panels: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, columns: int = 5, title: str = ""
) -> Path:
    """Save RGB panels in a grid with a title per panel (red: predicted, green: reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel, label in zip(axes.ravel(), panels, titles):
        axis.imshow(panel)
        axis.set_title(label, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=90))
    plt.close(figure)
    return path
