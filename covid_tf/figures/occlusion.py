"""The occlusion check's figure: one horizontal ROC-AUC bar per variant and fill, with its 95% CI whisker, a
chance line at 0.5 and the verdict's lungs-filled thresholds (:mod:`covid_tf.workflows.occlusion`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from covid_tf.figures import RIGHT_COLOUR, WRONG_COLOUR, finish

VARIANT_COLOURS = {"original": "#4c72b0", "lungs_filled": "#dd8452", "outside_filled": "#55a868"}
VARIANT_NAMES = {"original": "original image", "lungs_filled": "lungs filled", "outside_filled": "outside lungs filled"}
VALUE_GUTTER = 1.13  # the x axis ends here, beyond ROC-AUC 1, to hold the values beside the whiskers


def bar_label(row: dict) -> str:
    """``original image`` or ``lungs filled (blur)``: the y label of one bar."""
    name = VARIANT_NAMES.get(row["variant"], row["variant"])
    return name if row.get("fill") is None else f"{name} ({row['fill']})"


def _bar(ax, y: int, row: dict) -> None:
    """One bar with its CI whisker and its value beside the whisker's end ('undefined' without a value)."""
    auc, (low, high) = row["auc"], row.get("ci95") or (None, None)
    if auc is None:
        ax.text(0.02, y, "undefined", va="center", fontsize="small")
        return
    error, right = None, auc
    if low is not None and high is not None:
        error = [[max(0.0, auc - low)], [max(0.0, high - auc)]]
        right = max(auc, high)
    ax.barh(y, auc, color=VARIANT_COLOURS.get(row["variant"], "grey"), xerr=error, capsize=4, height=0.6)
    ax.annotate(f"{auc:.3f}", (right, y), xytext=(5, 0), textcoords="offset points", ha="left", va="center",
                fontsize="small", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})


def plot_occlusion(rows: Sequence[dict], *, auc_label: str = "ROC-AUC", verdict: str | None = None,
                   n: int | None = None, lungs_filled_max: float = 0.65, shortcut_auc: float = 0.80,
                   path: str | Path | None = None) -> Figure:
    """Bars of the ROC-AUCs of the occlusion check's ``rows`` (``variant``, ``fill``, ``auc``, ``ci95``), top to
    bottom in their order; a dashed chance line at 0.5 and dotted lines at the verdict's lungs-filled thresholds:
    ``lungs_filled_max`` (green: at or below, from the lungs) and ``shortcut_auc`` (red: at or above, shortcuts)."""
    rows = list(rows)
    fig = Figure(figsize=(7.5, 1.6 + 0.55 * len(rows)), layout="constrained")
    ax = fig.subplots()
    for y, row in enumerate(rows):
        _bar(ax, y, row)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.axvline(lungs_filled_max, color=RIGHT_COLOUR, linestyle=":", linewidth=1.5,
               label=f"lungs filled: from the lungs at or below {lungs_filled_max:.2f}")
    ax.axvline(shortcut_auc, color=WRONG_COLOUR, linestyle=":", linewidth=1.5,
               label=f"lungs filled: shortcuts at or above {shortcut_auc:.2f}")
    ax.set_yticks(range(len(rows)), [bar_label(row) for row in rows])
    ax.invert_yaxis()
    count = f", n={n}" if n is not None else ""
    title = f"Occlusion check: {auc_label} with 95% CI{count}"
    if verdict:
        title += f"\nverdict: {verdict}"
    ax.set(xlim=(0, VALUE_GUTTER), xticks=np.linspace(0.0, 1.0, 6), xlabel=auc_label, title=title)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    return finish(fig, path)


def plot_occlusion_summary(summary: dict, path: str | Path | None = None) -> Figure:
    """:func:`plot_occlusion` of an ``occlusion.json`` summary (its nested ``results``, verdict and thresholds)."""
    rows = []
    for variant, values in summary["results"].items():
        for fill, entry in ({None: values} if "auc" in values else values).items():
            rows.append({"variant": variant, "fill": fill, "auc": entry["auc"], "ci95": entry["ci95"]})
    thresholds = summary.get("thresholds") or {}
    return plot_occlusion(rows, auc_label=summary.get("auc", "ROC-AUC"), verdict=summary.get("verdict"),
                          n=summary.get("n"), lungs_filled_max=thresholds.get("lungs_filled_max_auc", 0.65),
                          shortcut_auc=thresholds.get("shortcut_auc", 0.80), path=path)
