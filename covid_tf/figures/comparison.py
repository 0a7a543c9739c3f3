"""The comparison of runs: one table row per run and grouped bars with 95% CIs; runs at chance are said so.

The HTML report (:mod:`covid_tf.cli.report`) and notebook 03 show the numbers of :func:`runs_table`; the
figure shows the bars only. ``covid_tf.figures`` re-exports these names.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf.figures import METRIC_LABELS, finish


def runs_table(metrics_by_run: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: accuracy, balanced accuracy, ROC-AUC with their 95% CIs, ECE, n.

    ``metrics_by_run`` maps a run label to a :func:`covid_tf.evaluate.compute_metrics` dict
    (``model`` in the dict, if present, names the model; else the label does).
    """
    rows = []
    for label, metrics in metrics_by_run.items():
        ci95 = metrics.get("ci95") or {}
        row: dict[str, Any] = {"run": label, "model": metrics.get("model", label), "n": metrics.get("n")}
        for name in ("accuracy", "balanced_accuracy", "roc_auc"):
            low, high = (list(ci95.get(name) or [None, None]) + [None, None])[:2]
            row[name] = metrics.get(name)
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        row["ece"] = metrics.get("ece")
        rows.append(row)
    return pd.DataFrame(rows)


def _flat_at(metrics: Mapping[str, Any], name: str, level: float) -> bool:
    """Whether metric ``name`` is exactly ``level`` with a zero-width 95% CI (or no CI)."""
    value = metrics.get(name)
    interval = [v for v in ((metrics.get("ci95") or {}).get(name) or []) if v is not None]
    return value is not None and all(abs(float(v) - level) < 1e-9 for v in [value, *interval])


def at_chance(metrics: Mapping[str, Any]) -> bool:
    """Whether a run's predictions carry no information about the class.

    True when the ROC-AUC is 0.5 with a [0.5, 0.5] interval (the same score for every image) or the
    balanced accuracy is 1/K with a zero-width interval (one class predicted for every image), as a
    ResNet50V2 with a random, frozen backbone gives.
    """
    n_classes = len(metrics.get("class_names") or metrics.get("per_class") or [0, 0])
    return _flat_at(metrics, "roc_auc", 0.5) or _flat_at(metrics, "balanced_accuracy", 1.0 / n_classes)


def plot_run_comparison(
    metrics_by_run: Mapping[str, Mapping[str, Any]],
    *,
    metrics: Sequence[str] = ("accuracy", "roc_auc"),
    notes: Mapping[str, str] | None = None,
    title: str = "Comparison of runs (95% CI)",
    path: str | Path | None = None,
) -> Figure:
    """Grouped bars of each run's accuracy and ROC-AUC with CI error bars (the numbers: :func:`runs_table`).

    A run :func:`at_chance` gets no bars but the words "at chance", followed by its entry in ``notes``
    (run label -> why, e.g. "random backbone, no ImageNet weights"); other runs show their note under
    their name.
    """
    table = runs_table(metrics_by_run)
    if table.empty:
        raise ValueError("no runs to compare")
    notes = dict(notes or {})
    chance = np.array([at_chance(metrics_by_run[run]) for run in table["run"]])
    n_runs = len(table)
    fig = Figure(figsize=(max(6.0, 1.8 * n_runs + 3), 5.0))
    ax = fig.subplots()
    x = np.arange(n_runs)
    bar_width = 0.8 / len(metrics)
    for offset, name in enumerate(metrics):
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)
        low = pd.to_numeric(table[f"{name}_low"], errors="coerce").to_numpy(dtype=float)
        high = pd.to_numeric(table[f"{name}_high"], errors="coerce").to_numpy(dtype=float)
        errors = np.nan_to_num(np.vstack([values - low, high - values]).clip(min=0))
        position = x + (offset - (len(metrics) - 1) / 2) * bar_width
        ax.bar(position[~chance], np.nan_to_num(values[~chance]), bar_width, yerr=errors[:, ~chance], capsize=4,
               label=METRIC_LABELS.get(name, name))
    for index in np.flatnonzero(chance):
        reason = notes.get(str(table["run"].iloc[index]))
        text = "at chance" + (f" ({reason})" if reason else "")
        ax.text(x[index], 0.5, "\n".join(textwrap.wrap(text, 24)), ha="center", va="center", fontsize="small",
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "grey"})
    labels = []
    for index, (run, model) in enumerate(zip(table["run"], table["model"])):
        label = f"{run}\n({model})" if model != run else str(run)
        note = notes.get(str(run))
        labels.append(label + (f"\n{note}" if note and not chance[index] else ""))
    ax.set_xticks(x, labels, fontsize="small")
    ax.set_xlim(-0.6, n_runs - 0.4)
    ax.set(ylim=(0, 1.05), ylabel="Score", title=title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return finish(fig, path)
