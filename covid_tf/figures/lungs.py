"""Lung figures: the shortcut audit's ROC-AUCs with their CIs, and image panels of lungs and ROIs
(outlines of lung masks, the model inputs of each ROI, heatmaps side by side), on matplotlib's object API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf.figures import RIGHT_COLOUR, WRONG_COLOUR, finish
from covid_tf.lungs.roi.modes import MODES

NEUTRAL_COLOUR = "#4c72b0"
SOURCE_COLOUR = "#8250df"
VALUE_GUTTER = 1.13  # the x axis of the audit figure ends here, beyond ROC-AUC 1, to hold the values


def _bar(ax, y: int, auc, low, high, colour: str) -> None:
    """One bar with its CI whisker; the value beside the whisker's upper end (or the bar's end), clear of both,
    on a white patch where a reference line crosses it."""
    if auc is None or pd.isna(auc):
        ax.text(0.02, y, "undefined", va="center", fontsize="small")
        return
    error, right = None, auc
    if low is not None and not pd.isna(low):
        error = [[max(0.0, auc - low)], [max(0.0, high - auc)]]
        right = max(auc, high)
    ax.barh(y, auc, color=colour, xerr=error, capsize=4, height=0.6)
    ax.annotate(f"{auc:.3f}", (right, y), xytext=(5, 0), textcoords="offset points", ha="left", va="center",
                fontsize="small", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})


def plot_audit(table: pd.DataFrame, *, threshold: float = 0.80, source: dict | None = None,
               title: str = "Shortcut audit: test ROC-AUC with 95% CI", path: str | Path | None = None) -> Figure:
    """Horizontal bars of the audit's test ROC-AUCs (``variant``, ``roi``, ``roc_auc``, ``ci_low``, ``ci_high``).

    The bar of a mode that removes the lungs (lungs-removed) is red when it reaches ``threshold`` (shortcuts
    outside the lungs), green below;
    the source probe (an ``available`` dict with ``roc_auc``, ``ci_low``, ``ci_high``) adds a purple bar.
    """
    rows = table.to_dict("records")
    labels = [f"{row['variant']}\n(--roi {row['roi']})" for row in rows]
    has_source = bool(source and source.get("available"))
    fig = Figure(figsize=(7, 1.5 + 0.75 * (len(rows) + has_source)), layout="constrained")
    ax = fig.subplots()
    for y, row in enumerate(rows):
        colour = NEUTRAL_COLOUR
        if MODES[row["roi"]].removes_lungs and row["roc_auc"] is not None and not pd.isna(row["roc_auc"]):
            colour = WRONG_COLOUR if row["roc_auc"] >= threshold else RIGHT_COLOUR
        _bar(ax, y, row["roc_auc"], row["ci_low"], row["ci_high"], colour)
    if has_source:
        labels.append("image source\n(simple features)")
        _bar(ax, len(rows), source["roc_auc"], source["ci_low"], source["ci_high"], SOURCE_COLOUR)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.axvline(threshold, color=WRONG_COLOUR, linestyle=":", linewidth=1.5, label=f"shortcut threshold {threshold:.2f}")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    # Room right of 1.0 for the values beside the whiskers; the legend below the axes, off the bars.
    ax.set(xlim=(0, VALUE_GUTTER), xticks=np.linspace(0.0, 1.0, 6), xlabel="test ROC-AUC", title=title)
    fig.legend(loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return finish(fig, path)


def _gray(image: np.ndarray) -> np.ndarray:
    """A (H, W, 1) image as (H, W); RGB (uint8 or [0, 1] floats) as it is."""
    image = np.asarray(image)
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def plot_image_panels(rows: Sequence[Sequence[np.ndarray]], *, row_titles: Sequence[str] = (),
                      column_titles: Sequence[str] = (), title: str | None = None,
                      path: str | Path | None = None) -> Figure:
    """A grid of images: one list of panels per row (grayscale [0, 1] or RGB), titles for rows and columns."""
    if not rows or not rows[0]:
        raise ValueError("plot_image_panels needs at least one row with one panel")
    n_rows, n_columns = len(rows), max(len(row) for row in rows)
    fig = Figure(figsize=(2.3 * n_columns, 2.4 * n_rows))
    axes = np.asarray(fig.subplots(n_rows, n_columns, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            shown = _gray(panel)
            if shown.ndim == 2:
                axes[r, c].imshow(shown, cmap="gray", vmin=0.0, vmax=1.0)
            else:
                axes[r, c].imshow(shown)
            if r == 0 and c < len(column_titles):
                axes[r, c].set_title(column_titles[c], fontsize="small")
        if r < len(row_titles):
            axes[r, 0].text(-0.05, 0.5, row_titles[r], transform=axes[r, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, path)
