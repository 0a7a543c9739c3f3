"""The figures of an evaluation or a finished training run, written as PNGs into a folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config, figures
from covid_tf.data.splits import load_split
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.inference import RUN_CONFIG, LoadedModel, label_indices, load_model, read_class_names
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
HISTORY_FILE = "history.csv"
SAMPLE_IMAGES = 16
MISTAKE_IMAGES = 8


def read_history(folder: Path) -> pd.DataFrame | None:
    """The ``history.csv`` of a run folder, or None when there is none (or it is empty or unreadable)."""
    path = folder / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return None if history.empty else history


def draw_figures(
    out_dir: Path,
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
) -> list[Path]:
    """Confusion matrix, ROC and precision-recall curves, reliability diagram (and training curves with
    ``history``; a sample grid and the most confident mistakes with ``paths``) as PNGs in ``out_dir``; return
    their paths."""
    from covid_tf.data.pipeline import load_images

    suffix = f" ({label})" if label else ""
    names = list(class_names)
    written = []
    if history is not None:
        written.append(figures.save_figure(figures.plot_training_curves(history, title=f"Training curves{suffix}"),
                                         out_dir / FIGURE_NAMES["training_curves"]))
    matrix = confusion(y_true, y_pred, len(names))
    written.append(figures.save_figure(figures.plot_confusion_matrix(matrix, names, title=f"Confusion matrix{suffix}"),
                                     out_dir / FIGURE_NAMES["confusion_matrix"]))
    written.append(figures.save_figure(figures.plot_roc_curves(y_true, probabilities, names,
                                                           title=f"ROC curves{suffix}"),
                                     out_dir / FIGURE_NAMES["roc_curves"]))
    written.append(figures.save_figure(figures.plot_pr_curves(y_true, probabilities, names,
                                                          title=f"Precision-recall curves{suffix}"),
                                     out_dir / FIGURE_NAMES["pr_curves"]))
    written.append(figures.save_figure(figures.plot_reliability_diagram(y_true, probabilities, names,
                                                                    title=f"Reliability diagram{suffix}"),
                                     out_dir / FIGURE_NAMES["reliability"]))
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
            fig = plot(images, y_true[chosen], probabilities[chosen], names, y_pred=y_pred[chosen], title=title)
            written.append(figures.save_figure(fig, out_dir / FIGURE_NAMES[key]))
    return written


def write_run_figures(run_dir: str | Path, *, model=None, split: str = "test") -> list[Path]:
    """Draw a finished training run's figures into ``run_dir/figures/`` and return their paths.

    Training curves from ``history.csv``; confusion matrix, ROC and precision-recall curves and reliability
    diagram of the ``split`` rows of ``split.csv`` (``val`` when the split has no test rows), predicted by
    ``model`` (a Keras model already in memory) or by ``run_dir/model.keras``. Binary predictions use the 0.5
    threshold, as the run's ``metrics.json`` does.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / RUN_CONFIG
    if not config_path.is_file():
        raise CovidTfError(f"{run_dir}: not a training run (no {RUN_CONFIG})")
    try:
        run_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CovidTfError(f"{config_path}: cannot read ({error})") from None
    figures_dir = run_dir / "figures"
    history = read_history(run_dir)
    written: list[Path] = []
    if history is not None:
        fig = figures.plot_training_curves(history, title=f"Training curves ({run_config.get('model', '?')})")
        written.append(figures.save_figure(fig, figures_dir / FIGURE_NAMES["training_curves"]))

    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        return written
    table = load_split(split_path)
    chosen = next((name for name in (split, "val") if (table["split"] == name).any()), None)
    if chosen is None:
        return written
    rows = table[table["split"] == chosen]
    rows = rows[rows["path"].map(lambda p: Path(p).is_file())]
    if rows.empty:
        raise CovidTfError(f"{split_path}: none of the {chosen!r} images exist any more; cannot draw the figures")
    if model is None:
        loaded = load_model(run_dir / "model.keras")
    else:
        _, size, _, channels = model.inputs[0].shape
        n_classes = int(model.outputs[0].shape[-1])
        loaded = LoadedModel(model, read_class_names(run_dir / "model.keras", n_classes), int(size), int(channels),
                             run_dir / "model.keras")
    names = list(run_config.get("class_names") or loaded.class_names)
    if len(names) != len(loaded.class_names):
        names = loaded.class_names
    y_true = label_indices(rows["label"].astype(str), names)
    probabilities = loaded.predict_paths(rows["path"].tolist(), batch_size=int(run_config.get("batch_size")
                                                                               or config.BATCH_SIZE))
    binary = len(names) == 2
    positive_index = positive_class_index(names) if binary else None
    y_pred = predict_labels(probabilities, threshold=0.5 if binary else None, positive_index=positive_index)
    written += draw_figures(figures_dir, y_true, probabilities, y_pred, names, label=f"{chosen}, n={len(rows)}")
    return written
