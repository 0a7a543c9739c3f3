"""The figures of an evaluation or a finished training run: drawn as ``Figure`` objects, written in any format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf import config, figures
from covid_tf.data.splits import load_split
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.inference import RUN_CONFIG, label_indices, load_model, loaded_model
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


def read_run_config(run_dir: Path) -> dict:
    """The ``config.json`` of a run or evaluation folder; ``CovidTfError`` when there is none or it is unreadable."""
    config_path = run_dir / RUN_CONFIG
    if not config_path.is_file():
        raise CovidTfError(f"{run_dir}: not a training run or evaluation (no {RUN_CONFIG})")
    try:
        return dict(json.loads(config_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise CovidTfError(f"{config_path}: cannot read ({error})") from None


def run_figures(run_dir: str | Path, *, model=None, split: str = "test") -> dict[str, Figure]:
    """Draw a finished training run's figures, keyed as :data:`FIGURE_NAMES`.

    Training curves from ``history.csv``; confusion matrix, ROC and precision-recall curves and reliability
    diagram of the ``split`` rows of ``split.csv`` (``val`` when the split has no test rows), predicted by
    ``model`` (a Keras model already in memory) or by ``run_dir/model.keras``. Binary predictions use the 0.5
    threshold, as the run's ``metrics.json`` does.
    """
    run_dir = Path(run_dir)
    run_config = read_run_config(run_dir)
    history = read_history(run_dir)
    drawn: dict[str, Figure] = {}
    if history is not None:
        drawn["training_curves"] = figures.plot_training_curves(
            history, title=f"Training curves ({run_config.get('model', '?')})")
    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        return drawn
    table = load_split(split_path)
    chosen = next((name for name in (split, "val") if (table["split"] == name).any()), None)
    if chosen is None:
        return drawn
    rows = table[table["split"] == chosen]
    rows = rows[rows["path"].map(lambda p: Path(p).is_file())]
    if rows.empty:
        raise CovidTfError(f"{split_path}: none of the {chosen!r} images exist any more; cannot draw the figures")
    # The run's own lung ROI (config.json) feeds the model, whether loaded or already in memory.
    loaded = load_model(run_dir / "model.keras") if model is None else loaded_model(model, run_dir / "model.keras")
    names = list(run_config.get("class_names") or loaded.class_names)
    if len(names) != len(loaded.class_names):
        names = loaded.class_names
    y_true = label_indices(rows["label"].astype(str), names)
    probabilities = loaded.predict_paths(rows["path"].tolist(), batch_size=int(run_config.get("batch_size")
                                                                               or config.BATCH_SIZE))
    binary = len(names) == 2
    positive_index = positive_class_index(names) if binary else None
    y_pred = predict_labels(probabilities, threshold=0.5 if binary else None, positive_index=positive_index)
    drawn.update(make_figures(y_true, probabilities, y_pred, names, label=f"{chosen}, n={len(rows)}"))
    return drawn


def write_run_figures(run_dir: str | Path, *, model=None, split: str = "test") -> list[Path]:
    """Write :func:`run_figures` as PNGs into ``run_dir/figures/`` and return their paths."""
    return save_figures(run_figures(run_dir, model=model, split=split), Path(run_dir) / "figures")
