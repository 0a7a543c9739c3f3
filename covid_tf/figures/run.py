"""The figures of an evaluation or a finished training run: drawn as ``Figure`` objects, written in any format."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf import config, figures
from covid_tf.evaluation.metrics import confusion, positive_class_index, predict_labels
from covid_tf.figures import grids

FIGURE_NAMES = {
    "training_curves": "training_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "roc_curves": "roc_curves.png",
    "pr_curves": "pr_curves.png",
    "reliability": "reliability_diagram.png",
    "samples": "sample_predictions.png",
    "mistakes": "confident_mistakes.png",
}
SAMPLE_IMAGES = 16
MISTAKE_IMAGES = 8


def make_figures(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    image_size: int | None = None,
    channels: int = config.CHANNELS,
    history: pd.DataFrame | None = None,
    label: str = "",
    seed: int = config.SEED,
) -> dict[str, Figure]:
    """Confusion matrix, ROC and precision-recall curves, reliability diagram (and training curves with
    ``history``; a sample grid and the most confident mistakes with ``paths`` and ``image_size``), keyed as
    :data:`FIGURE_NAMES`."""
    from covid_tf.data.pipeline import load_images

    suffix = f" ({label})" if label else ""
    names = list(class_names)
    drawn: dict[str, Figure] = {}
    if history is not None:
        drawn["training_curves"] = figures.plot_training_curves(history, title=f"Training curves{suffix}")
    drawn["confusion_matrix"] = figures.plot_confusion_matrix(confusion(y_true, y_pred, len(names)), names,
                                                              title=f"Confusion matrix{suffix}")
    drawn["roc_curves"] = figures.plot_roc_curves(y_true, probabilities, names, title=f"ROC curves{suffix}")
    drawn["pr_curves"] = figures.plot_pr_curves(y_true, probabilities, names,
                                                title=f"Precision-recall curves{suffix}")
    drawn["reliability"] = figures.plot_reliability_diagram(y_true, probabilities, names,
                                                            title=f"Reliability diagram{suffix}")
    if paths is not None and image_size is not None:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(paths), size=min(SAMPLE_IMAGES, len(paths)), replace=False))
        wrong = np.flatnonzero(y_pred != y_true)
        confidence = probabilities[wrong, y_pred[wrong]]
        mistakes = wrong[np.argsort(-confidence, kind="stable")][:MISTAKE_IMAGES]
        for key, chosen, plot in (("samples", sample, grids.plot_sample_predictions),
                                  ("mistakes", mistakes, grids.plot_confident_mistakes)):
            images = (load_images([paths[i] for i in chosen], image_size, channels) if chosen.size
                      else np.zeros((0, image_size, image_size, channels), dtype="float32"))
            title = ("Sample predictions" if key == "samples" else "Most confident mistakes") + suffix
            drawn[key] = plot(images, y_true[chosen], probabilities[chosen], names, y_pred=y_pred[chosen], title=title)
    return drawn


def save_figures(drawn: dict[str, Figure], out_dir: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write each figure of :func:`make_figures` as ``out_dir/<FIGURE_NAMES stem>.<format>``; return the paths."""
    return [figures.save_figure(fig, out_dir / f"{Path(FIGURE_NAMES[key]).stem}.{kind}")
            for key, fig in drawn.items() for kind in formats]


def draw_figures(out_dir: Path, y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray,
                 class_names: Sequence[str], **options) -> list[Path]:
    """:func:`make_figures` (same arguments) written as PNGs into ``out_dir``; return their paths."""
    return save_figures(make_figures(y_true, probabilities, y_pred, class_names, **options), out_dir)


def run_figures(history: pd.DataFrame | None, y_true: np.ndarray | None = None,
                probabilities: np.ndarray | None = None, class_names: Sequence[str] = (), *,
                model_name: str = "?", label: str = "") -> dict[str, Figure]:
    """A training run's figures, keyed as :data:`FIGURE_NAMES`, from what the run already computed.

    Training curves from its ``history``; confusion matrix, ROC and precision-recall curves and reliability
    diagram of the probabilities it predicted (its test split, else val). Binary predictions use the 0.5
    threshold, as the run's ``metrics.json`` does. Nothing is predicted here.
    """
    drawn: dict[str, Figure] = {}
    if history is not None:
        drawn["training_curves"] = figures.plot_training_curves(history, title=f"Training curves ({model_name})")
    if probabilities is not None and y_true is not None:
        names = list(class_names)
        binary = len(names) == 2
        positive_index = positive_class_index(names) if binary else None
        y_pred = predict_labels(probabilities, threshold=0.5 if binary else None, positive_index=positive_index)
        drawn.update(make_figures(y_true, probabilities, y_pred, names, label=label))
    return drawn


def write_run_figures(run_dir: str | Path, *args, **options) -> list[Path]:
    """Write :func:`run_figures` (same arguments after ``run_dir``) as PNGs into ``run_dir/figures/``."""
    return save_figures(run_figures(*args, **options), Path(run_dir) / "figures")
