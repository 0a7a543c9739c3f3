"""The numbers of the ``stress`` check (:mod:`covid_tf.workflows.stress`): the positive class's ROC-AUC on the
original images and under each acquisition shift and strength, its drop, their bootstrap CIs, the mean drop and the
worst shift, in one line.

The ROC-AUC is the positive class's against the rest, from :mod:`covid_tf.evaluation.bootstrap` (the point value is
sklearn's; the 95% CI the percentile interval over stratified, or patient-cluster, resamples). Every variant is
scored on the same resamples, so a drop's CI is that of the paired difference ``original - shifted``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from covid_tf import config
from covid_tf.evaluation.bootstrap import bootstrap_weights, percentile_interval, weighted_auc

ORIGINAL = "original"


def stress_results(y_true: np.ndarray, positive_scores: np.ndarray, positive_index: int,
                   keys: Sequence[tuple[str, float | None]], *, groups=None, n_bootstrap: int = 1000,
                   seed: int = config.SEED) -> list[dict]:
    """One row ``shift, strength, auc, ci95, drop, drop_ci95, n`` per column of ``positive_scores`` ``(N, V)``;
    column 0 is the original images (``keys[0] == ("original", None)``, drop 0). ``drop`` is the original's AUC
    minus the shifted one (positive: worse), its CI from the same resamples."""
    y_true = np.asarray(y_true, np.int64)
    if positive_scores.shape != (y_true.size, len(keys)) or keys[0][0] != ORIGINAL:
        raise ValueError(f"expected scores of shape ({y_true.size}, {len(keys)}) with the original first, got "
                         f"{positive_scores.shape} for {keys[:1]}")
    is_positive = y_true == positive_index
    weights = bootstrap_weights(y_true, groups=groups, n_bootstrap=n_bootstrap, seed=seed) if n_bootstrap else None
    point = [float(weighted_auc(np.ones((1, y_true.size)), is_positive, positive_scores[:, v])[0])
             for v in range(len(keys))]
    resampled = [weighted_auc(weights, is_positive, positive_scores[:, v]) for v in range(len(keys))] \
        if weights is not None else None
    rows = []
    for column, (shift, strength) in enumerate(keys):
        auc = point[column] if np.isfinite(point[column]) else None
        drop = point[0] - point[column] if auc is not None and np.isfinite(point[0]) else None
        ci95, drop_ci95 = [None, None], [None, None]
        if resampled is not None:
            ci95 = percentile_interval(resampled[column])
            drop_ci95 = percentile_interval(resampled[0] - resampled[column])
        rows.append({"shift": shift, "strength": strength, "auc": auc, "ci95": ci95, "drop": drop,
                     "drop_ci95": drop_ci95, "n": int(y_true.size)})
    return rows


def summarise(rows: Sequence[dict], sanity: Sequence[str] = ()) -> dict:
    """``mean_drop`` over every shifted row (strength above 0) but the ``sanity`` shifts, the ``worst`` such row
    (largest drop), their count ``n_shifted``, and the ``sanity`` rows; None where no AUC is defined."""
    shifted = [row for row in rows[1:] if row["strength"] and row["shift"] not in sanity]
    defined = [row for row in shifted if row["drop"] is not None]
    return {"mean_drop": float(np.mean([row["drop"] for row in defined])) if defined else None,
            "worst": max(defined, key=lambda row: row["drop"]) if defined else None,
            "n_shifted": len(shifted),
            "sanity": [row for row in rows[1:] if row["shift"] in sanity]}


def interval(row: dict, key: str = "auc") -> str:
    """``0.912 [0.871, 0.948]``, the value alone without a CI, or ``undefined``."""
    value = row[key]
    if value is None:
        return "undefined"
    low, high = row["ci95" if key == "auc" else f"{key}_ci95"]
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")


def shift_label(row: dict) -> str:
    """``gamma 0.5``, or ``original``."""
    return row["shift"] if row["strength"] is None else f"{row['shift']} {row['strength']:g}"


def summary_line(rows: Sequence[dict], summary: dict, positive: str) -> str:
    """One line: the original ROC-AUC, the mean drop, the worst shift and the sanity cases."""
    original, worst = rows[0], summary["worst"]
    if original["auc"] is None:
        return f"stress: ROC-AUC of {positive} undefined (one class among the images?)"
    sanity = "; ".join(f"{shift_label(row)}: {interval(row)}" for row in summary["sanity"])
    drops = (f"mean drop {summary['mean_drop']:.3f} over {summary['n_shifted']} shifted versions; worst "
             f"{shift_label(worst)}: {interval(worst)} (drop {interval(worst, 'drop')})" if worst is not None
             else "no shift at a strength above 0 but the sanity cases")
    return (f"stress: ROC-AUC of {positive} {interval(original)} on the original images; {drops}"
            + (f"; sanity case {sanity}" if sanity else ""))
