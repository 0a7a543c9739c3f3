"""Image grids: sample predictions and the most confident mistakes, titled green when right and red when wrong."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from covid_tf.figures import RIGHT_COLOUR, WRONG_COLOUR, finish


def _check_images(images: Any) -> np.ndarray:
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (N, H, W, C) with C = 1 or 3, got {array.shape}")
    if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0):
        raise ValueError("images must be floats in [0, 1]")
    return array


def _image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    correct: Sequence[bool],
    *,
    n_cols: int,
    title: str | None,
    empty_message: str = "no images",
) -> Figure:
    n_images = len(titles)
    n_cols = max(1, min(n_cols, n_images)) if n_images else 1
    n_rows = max(1, int(np.ceil(n_images / n_cols)))
    fig = Figure(figsize=(2.6 * n_cols, 2.9 * n_rows + (0.4 if title else 0)))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    if n_images == 0:
        axes[0].text(0.5, 0.5, empty_message, ha="center", va="center", transform=axes[0].transAxes)
    for ax, image, text, right in zip(axes, images, titles, correct):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image)
        ax.set_title(text, color=RIGHT_COLOUR if right else WRONG_COLOUR, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _prediction_titles(
    y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> list[str]:
    return [
        f"true: {class_names[t]}\npred: {class_names[p]} ({probs[i, p]:.2f})"
        for i, (t, p) in enumerate(zip(y_true, y_pred))
    ]


def _checked(images: Any, y_true: Any, probabilities: Any, y_pred: Any):
    """``(images, true labels, probabilities, predicted labels)`` as arrays of one length (argmax by default)."""
    array = _check_images(images)
    labels = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if not (array.shape[0] == labels.size == probs.shape[0]):
        raise ValueError("images, y_true and probabilities must have the same length")
    predicted = np.argmax(probs, axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    return array, labels, probs, predicted


def plot_sample_predictions(
    images: Any,
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str],
    *,
    y_pred: Any = None,
    max_images: int = 16,
    n_cols: int = 4,
    title: str | None = "Sample predictions",
    path: str | Path | None = None,
) -> Figure:
    """Grid of the first ``max_images`` images with true and predicted label and the predicted probability.

    Titles are green when the prediction is right, red when wrong. ``y_pred`` defaults to the argmax.
    """
    array, labels, probs, predicted = _checked(images, y_true, probabilities, y_pred)
    shown = slice(0, max_images)
    fig = _image_grid(
        array[shown],
        _prediction_titles(labels[shown], predicted[shown], probs[shown], class_names),
        list(labels[shown] == predicted[shown]),
        n_cols=n_cols,
        title=title,
    )
    return finish(fig, path)


def plot_confident_mistakes(
    images: Any,
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str],
    *,
    y_pred: Any = None,
    max_images: int = 8,
    n_cols: int = 4,
    title: str | None = "Most confident mistakes",
    path: str | Path | None = None,
) -> Figure:
    """Gallery of the wrong predictions with the highest predicted probability, most confident first."""
    array, labels, probs, predicted = _checked(images, y_true, probabilities, y_pred)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")][:max_images]
    fig = _image_grid(
        array[chosen],
        _prediction_titles(labels[chosen], predicted[chosen], probs[chosen], class_names),
        [False] * chosen.size,
        n_cols=n_cols,
        title=title,
        empty_message="no mistakes",
    )
    return finish(fig, path)
