"""The ``stress`` check's figure (:mod:`covid_tf.workflows.stress`): one horizontal ROC-AUC bar per shift and
strength with its 95% CI whisker, coloured by shift, against the original images' ROC-AUC (a line and its CI band)
and chance (0.5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from covid_tf.figures import finish

VALUE_GUTTER = 1.16  # the x axis ends here, beyond ROC-AUC 1, to hold the values beside the whiskers


def version_label(row: dict, titles: Mapping[str, str] | None = None) -> str:
    """``exposure (gamma) 0.5``: the y label of one bar (the shift's title when known)."""
    title = (titles or {}).get(row["shift"], row["shift"])
    return title if row["strength"] is None else f"{title} {row['strength']:g}"


def plot_stress(rows: Sequence[dict], *, titles: Mapping[str, str] | None = None, auc_label: str = "ROC-AUC",
                n: int | None = None, subtitle: str | None = None, path: str | Path | None = None) -> Figure:
    """Bars of the ROC-AUCs of the stress check's shifted ``rows`` (``shift``, ``strength``, ``auc``, ``ci95``;
    ``rows[0]`` the original images, drawn as a line with its CI band), top to bottom in their order."""
    original, shifted = rows[0], list(rows[1:])
    fig = Figure(figsize=(7.5, 1.9 + 0.3 * len(shifted)), layout="constrained")
    ax = fig.subplots()
    palette = colormaps["tab10"]
    colours = {name: palette(i % 10) for i, name in enumerate(dict.fromkeys(row["shift"] for row in shifted))}
    for y, row in enumerate(shifted):
        if row["auc"] is None:
            ax.text(0.02, y, "undefined", va="center", fontsize="small")
            continue
        low, high = row.get("ci95") or (None, None)
        error = [[max(0.0, row["auc"] - low)], [max(0.0, high - row["auc"])]] if low is not None else None
        ax.barh(y, row["auc"], color=colours[row["shift"]], xerr=error, capsize=3, height=0.7)
        ax.annotate(f"{row['auc']:.3f}", (max(row["auc"], high or 0.0), y), xytext=(4, 0), textcoords="offset points",
                    ha="left", va="center", fontsize="x-small")
    if original["auc"] is not None:
        ax.axvline(original["auc"], color="black", linewidth=1.2, label=f"original images ({original['auc']:.3f})")
        low, high = original.get("ci95") or (None, None)
        if low is not None:
            ax.axvspan(low, high, color="black", alpha=0.08, label="its 95% CI")
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.set_yticks(range(len(shifted)), [version_label(row, titles) for row in shifted], fontsize="small")
    ax.set_ylim(len(shifted) - 0.5, -0.5)
    count = f", n={n}" if n is not None else ""
    title = f"Stress check: {auc_label} with 95% CI under acquisition shifts{count}"
    ax.set(xlim=(0, VALUE_GUTTER), xticks=np.linspace(0.0, 1.0, 6), xlabel=auc_label,
           title=title + (f"\n{subtitle}" if subtitle else ""))
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize="small", frameon=False)
    return finish(fig, path)


def plot_stress_summary(summary: dict, path: str | Path | None = None) -> Figure:
    """:func:`plot_stress` of a ``stress.json`` summary (its ``results``, shift titles, mean drop and worst)."""
    worst, mean_drop = summary.get("worst"), summary.get("mean_drop")
    titles = {name: entry.get("title", name) for name, entry in (summary.get("shifts") or {}).items()}
    subtitle = None
    if worst is not None and mean_drop is not None:
        subtitle = f"mean drop {mean_drop:.3f}; worst: {version_label(worst, titles)} (drop {worst['drop']:.3f})"
    return plot_stress(summary["results"], titles=titles, auc_label=summary.get("auc", "ROC-AUC"),
                       n=summary.get("n"), subtitle=subtitle, path=path)
