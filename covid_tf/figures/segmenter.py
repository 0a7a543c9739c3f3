"""The lung segmenter's figures: outlines of a predicted and a reference mask on a film, and a grid of them
(``segment-train``'s ``figures/test_worst.png`` and ``test_best.png``; notebook 06).

On matplotlib's object API (``Figure``, no ``pyplot``): no backend is chosen for the whole process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from covid_tf.io_utils import atomic_write

PREDICTED_COLOUR = (255, 40, 40)  # red
REFERENCE_COLOUR = (0, 220, 0)  # green


def outline_overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 of a grayscale [0, 1] image with the predicted outline in red, the truth in green."""
    gray = (np.clip(np.asarray(image, np.float32).squeeze(), 0.0, 1.0) * 255).astype(np.uint8)
    canvas = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    thickness = max(1, gray.shape[0] // 200)
    for mask, colour in ((truth, REFERENCE_COLOUR), (predicted, PREDICTED_COLOUR)):
        if mask is None:
            continue
        contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    return canvas


def overlay_grid(panels: Sequence[np.ndarray], titles: Sequence[str], columns: int = 5, title: str = "") -> Figure:
    """RGB panels in a grid with a title per panel (red: predicted, green: reference)."""
    rows = max(1, -(-len(panels) // columns))
    figure = Figure(figsize=(2.6 * columns, 2.8 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel, label in zip(axes.ravel(), panels, titles):
        axis.imshow(panel)
        axis.set_title(label, fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def save_overlay_grid(panels: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, columns: int = 5,
                      title: str = "") -> Path:
    """Write :func:`overlay_grid` as a PNG at 90 dpi (creating the folder), atomically; return the path."""
    figure = overlay_grid(panels, titles, columns, title)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=90, format="png"))
