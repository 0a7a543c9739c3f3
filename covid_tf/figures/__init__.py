"""Figures for evaluation and training: each function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, not through ``pyplot``: no global state,
no GUI backend, nothing to close, safe in scripts, tests and notebooks (Jupyter displays a returned
figure). Pass ``path=`` (or call :func:`save_figure`) to write the figure in the format its extension
names: ``.png`` (150 dpi), ``.pdf`` or ``.svg`` (vector). :func:`save_report_figure` writes one figure
as PNG and PDF, as the notebooks do for the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as sk_metrics

from covid_tf.evaluation.calibration import reliability_curve
from covid_tf.evaluation.metrics import positive_class_index
from covid_tf.io_utils import atomic_write

DPI = 150
RIGHT_COLOUR = "#1a7f37"
WRONG_COLOUR = "#cf222e"
METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "roc_auc": "ROC-AUC"}


#: The formats :func:`save_figure` writes, named by the file extension.
FORMATS = ("png", "pdf", "svg")
#: The formats of every figure the notebooks save for the report.
REPORT_FORMATS = ("png", "pdf")
# No creation date in vector files, so the same figure gives the same bytes.
_METADATA = {"png": None, "pdf": {"CreationDate": None}, "svg": {"Date": None}}


def figure_format(path: str | Path) -> str:
    """The format that ``path``'s extension names (one of :data:`FORMATS`); ``ValueError`` for any other."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"{path}: a figure file name must end in {', '.join('.' + f for f in FORMATS)}")
    return suffix


def save_figure(fig: Figure, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write ``fig`` in the format of the extension of ``path`` (creating the folder), atomically; return the path.

    ``.png`` is a raster at ``dpi``; ``.pdf`` and ``.svg`` are vector files (images inside them at ``dpi``).
    """
    kind = figure_format(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=kind, bbox_inches="tight",
                                                      metadata=_METADATA[kind]))


def save_report_figure(fig: Figure, path: str | Path, formats: Sequence[str] = REPORT_FORMATS) -> Path:
    """Write ``fig`` once per format beside ``path`` (``x.png`` -> ``x.png``, ``x.pdf``); return the first file."""
    written = [save_figure(fig, Path(path).with_suffix(f".{kind}")) for kind in formats]
    if not written:
        raise ValueError("formats is empty: nothing to write")
    return written[0]


def finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_confusion_matrix(
    confusion_matrix: Any,
    class_names: Sequence[str],
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Counts and row-normalised rates (rows true, columns predicted), side by side."""
    counts = np.asarray(confusion_matrix, dtype=np.float64)
    n_classes = len(class_names)
    if counts.shape != (n_classes, n_classes):
        raise ValueError(f"confusion_matrix must be {n_classes}x{n_classes} for {list(class_names)}")
    row_sums = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    size = 3.2 + 0.7 * n_classes
    fig = Figure(figsize=(2 * size + 1, size))
    axes = fig.subplots(1, 2)
    panels = ((counts, "d", "Counts", None), (rates, ".2f", "Row-normalised (recall)", (0.0, 1.0)))
    for ax, (values, fmt, label, limits) in zip(axes, panels):
        shown = values.astype(int) if fmt == "d" else values
        vmin, vmax = limits if limits else (None, None)
        sns.heatmap(shown, annot=True, fmt=fmt, cmap="Blues", vmin=vmin, vmax=vmax, square=True, cbar=True,
                    xticklabels=class_names, yticklabels=class_names, ax=ax)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=30)
        ax.tick_params(axis="y", labelrotation=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, path)


def _shown_classes(class_names: Sequence[str], positive_class: str | int | None) -> list[int]:
    """The classes a one-vs-rest curve figure draws: the positive class of a binary task, else every class."""
    if len(class_names) == 2:
        return [positive_class_index(class_names, positive_class)]
    return list(range(len(class_names)))


def _one_vs_rest(y_true: Any, probabilities: Any, class_names: Sequence[str],
                 positive_class: str | int | None) -> tuple[Figure, Any, list[tuple[str, np.ndarray, np.ndarray]]]:
    """A one-vs-rest curve figure, its axes and, for each class it draws, (name, 0/1 truth, that class's scores)."""
    labels = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    fig = Figure(figsize=(5.5, 5))
    curves = [(class_names[index], (labels == index).astype(int), probs[:, index])
              for index in _shown_classes(class_names, positive_class)]
    return fig, fig.subplots(), curves


def _finish_curves(fig: Figure, ax: Any, xlabel: str, ylabel: str, title: str, legend: str,
                   path: str | Path | None) -> Figure:
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc=legend, fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return finish(fig, path)


def plot_roc_curves(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str],
    *,
    positive_class: str | int | None = None,
    title: str = "ROC curves (one-vs-rest)",
    path: str | Path | None = None,
) -> Figure:
    """One-vs-rest ROC curve of each class with its AUC in the legend (binary: the positive class only)."""
    fig, ax, curves = _one_vs_rest(y_true, probabilities, class_names, positive_class)
    for name, is_class, scores in curves:
        if is_class.min() == is_class.max():
            ax.plot([], [], label=f"{name} (AUC undefined: one class only)")
            continue
        fpr, tpr, _ = sk_metrics.roc_curve(is_class, scores)
        ax.plot(fpr, tpr, linewidth=2, label=f"{name} (AUC = {sk_metrics.roc_auc_score(is_class, scores):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    return _finish_curves(fig, ax, "False positive rate (1 - specificity)", "True positive rate (sensitivity)", title,
                          "lower right", path)


def plot_pr_curves(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str],
    *,
    positive_class: str | int | None = None,
    title: str = "Precision-recall curves (one-vs-rest)",
    path: str | Path | None = None,
) -> Figure:
    """One-vs-rest precision-recall curve of each class with its average precision (AP) in the legend and the
    class's prevalence (a classifier without skill) dotted (binary: the positive class only)."""
    fig, ax, curves = _one_vs_rest(y_true, probabilities, class_names, positive_class)
    for name, is_class, scores in curves:
        if not is_class.any():
            ax.plot([], [], label=f"{name} (AP undefined: no positives)")
            continue
        precision, recall, _ = sk_metrics.precision_recall_curve(is_class, scores)
        average = sk_metrics.average_precision_score(is_class, scores)
        line = ax.step(recall, precision, where="post", linewidth=2, label=f"{name} (AP = {average:.3f})")[0]
        ax.axhline(is_class.mean(), linestyle=":", linewidth=1, color=line.get_color())
    return _finish_curves(fig, ax, "Recall (sensitivity)", "Precision (positive predictive value)", title, "lower left",
                          path)


def plot_reliability_diagram(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str] | None = None,
    *,
    n_bins: int = 15,
    positive_class: str | int | None = None,
    title: str = "Reliability diagram",
    path: str | Path | None = None,
) -> Figure:
    """Observed frequency per probability bin against the diagonal, ECE in the title, counts below."""
    curve = reliability_curve(
        y_true, probabilities, class_names, n_bins=n_bins, positive_class=positive_class
    )
    lower, upper = curve["bin_lower"], curve["bin_upper"]
    width = upper - lower
    fig = Figure(figsize=(5.5, 6))
    ax, ax_counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    observed = np.nan_to_num(curve["accuracy"])
    gap = np.where(curve["count"] > 0, np.nan_to_num(curve["confidence"]) - observed, 0.0)
    ax.bar(lower, observed, width=width, align="edge", edgecolor="black", color="#4c72b0", label="observed")
    ax.bar(lower, gap, bottom=observed, width=width, align="edge", color=WRONG_COLOUR,
           alpha=0.25, edgecolor=WRONG_COLOUR, hatch="//", label="gap to calibration")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if curve["mode"] == "positive_class":
        x_label, y_label = "Predicted probability of the positive class", "Fraction positive"
    else:
        x_label, y_label = "Confidence (max probability)", "Accuracy"
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=y_label, title=f"{title} (ECE = {curve['ece']:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    ax_counts.bar(lower, curve["count"], width=width, align="edge", color="grey", edgecolor="black")
    ax_counts.set(xlabel=x_label, ylabel="Count")
    fig.tight_layout()
    return finish(fig, path)


def _first_column(frame: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    return next((name for name in candidates if name in frame.columns), None)


def plot_training_curves(
    history: pd.DataFrame | Mapping[str, Sequence[float]],
    *,
    fine_tune_epoch: int | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Loss and accuracy, train and validation, per epoch (Keras ``history.history`` columns).

    Epochs are numbered from 1 on integer ticks (Keras' 0-based ``epoch`` column plus one, else the row
    number). The start of fine-tuning is marked by a vertical line: ``fine_tune_epoch`` (the 1-based
    number of the first fine-tuning epoch), or else the first row whose ``phase`` differs from the first row's.
    """
    frame = pd.DataFrame(history).reset_index(drop=True)
    if frame.empty:
        raise ValueError("history is empty: nothing to plot")
    # Keras counts epochs from 0 (the ``epoch`` column of history.csv); the axis counts them from 1.
    epochs = frame["epoch"].to_numpy() + 1 if "epoch" in frame.columns else np.arange(1, len(frame) + 1)
    if fine_tune_epoch is None and "phase" in frame.columns:
        changed = np.flatnonzero(frame["phase"].to_numpy() != frame["phase"].iloc[0])
        if changed.size:
            fine_tune_epoch = epochs[changed[0]]
    accuracy_names = (
        "accuracy", "acc", "categorical_accuracy", "binary_accuracy", "sparse_categorical_accuracy"
    )
    panels = [("Loss", ("loss",)), ("Accuracy", accuracy_names)]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, (label, names) in zip(axes, panels):
        train_name = _first_column(frame, names)
        val_name = _first_column(frame, [f"val_{name}" for name in names])
        for column, split_label, style in ((train_name, "train", "-o"), (val_name, "validation", "-s")):
            if column is not None:
                ax.plot(epochs, frame[column].to_numpy(dtype=float), style, markersize=3, label=split_label)
        if train_name is None and val_name is None:
            ax.text(0.5, 0.5, f"no {label.lower()} in history", ha="center", va="center",
                    transform=ax.transAxes)
        if fine_tune_epoch is not None:
            ax.axvline(float(fine_tune_epoch) - 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set(xlabel="Epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        low, high = float(epochs.min()) - 0.5, float(epochs.max()) + 0.5
        if np.isfinite(low) and np.isfinite(high) and low < high:  # epochs near 1e16 leave no room for +-0.5
            ax.set_xlim(low, high)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, path)


def grid_search_figure(table: pd.DataFrame, *, metric: str = "val_accuracy", title: str | None = None) -> Figure:
    """Heatmaps of ``metric`` over learning rate x dropout, one panel per batch size; the best cell is framed.

    ``table`` is ``covid_tf.training.tuning.grid_search(...).table`` (best first).
    """
    missing = {"batch_size", "learning_rate", "dropout", metric} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks the column(s) {', '.join(sorted(missing))}")
    if table.empty:
        raise ValueError("the grid search table is empty: nothing to plot")
    batch_sizes = sorted(table["batch_size"].unique())
    learning_rates = sorted(table["learning_rate"].unique(), reverse=True)
    dropouts = sorted(table["dropout"].unique())
    best = table.iloc[0]
    width = 1.2 + 1.1 * len(dropouts)
    fig = Figure(figsize=(max(4.5, width * len(batch_sizes) + 1.5), 1.4 + 0.8 * len(learning_rates)))
    axes = np.atleast_1d(fig.subplots(1, len(batch_sizes), squeeze=False)).ravel()
    values = pd.to_numeric(table[metric], errors="coerce")
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    for ax, batch_size in zip(axes, batch_sizes):
        rows = table[table["batch_size"] == batch_size]
        grid = rows.pivot_table(index="learning_rate", columns="dropout", values=metric, aggfunc="first")
        grid = grid.reindex(index=learning_rates, columns=dropouts)
        sns.heatmap(grid.to_numpy(dtype=float), annot=True, fmt=".3f", cmap="viridis", vmin=vmin,
                    vmax=max(vmax, vmin + 1e-9), cbar=ax is axes[-1], square=False, ax=ax,
                    xticklabels=[f"{d:g}" for d in dropouts], yticklabels=[f"{r:g}" for r in learning_rates])
        if batch_size == best["batch_size"]:
            row = learning_rates.index(best["learning_rate"])
            column = dropouts.index(best["dropout"])
            ax.add_patch(_frame(column, row))
        ax.set(xlabel="dropout", ylabel="learning rate" if ax is axes[0] else "", title=f"batch size {batch_size}")
        ax.tick_params(axis="y", labelrotation=0)
    fig.suptitle(title or f"Grid search: {metric.replace('_', ' ')} (best framed)")
    fig.tight_layout()
    return fig


def _frame(column: int, row: int) -> Rectangle:
    return Rectangle((column, row), 1, 1, fill=False, edgecolor="red", linewidth=3)
