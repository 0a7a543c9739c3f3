"""Operating points for binary tasks: a decision threshold chosen on validation data.

The threshold is then applied unchanged to test data (``compute_metrics(..., threshold=t)``):
a sample is predicted positive iff ``p_positive >= t``, the same rule as ``sklearn.metrics.roc_curve``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics

METHODS = ("youden", "sensitivity")


def choose_threshold(
    y_true: Any,
    p_positive: Any,
    method: str = "youden",
    target_sensitivity: float = 0.95,
    *,
    positive_label: int = 1,
) -> float:
    """Decision threshold on the positive-class probability.

    ``y_true`` holds 0/1 labels (1 = positive) or class indices with ``positive_label`` the positive
    one. ``method="youden"`` maximises sensitivity + specificity - 1 (ties: the highest threshold);
    ``method="sensitivity"`` takes the highest threshold whose sensitivity reaches ``target_sensitivity``
    (the most specific such point). The threshold is one of the observed scores.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    is_positive = (np.asarray(y_true) == positive_label).astype(int)
    scores = np.asarray(p_positive, dtype=np.float64)
    if scores.ndim != 1 or scores.shape != is_positive.shape:
        raise ValueError(f"p_positive must be 1-D like y_true {is_positive.shape}, got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("p_positive contains NaN or infinite values")
    if is_positive.min() == is_positive.max():
        raise ValueError("choose_threshold needs both positive and negative samples in y_true")
    fpr, tpr, thresholds = sk_metrics.roc_curve(is_positive, scores, drop_intermediate=False)
    if method == "youden":
        best = int(np.argmax(tpr - fpr))
    else:
        best = int(np.flatnonzero(tpr >= target_sensitivity - 1e-12)[0])
    threshold = float(thresholds[best])
    if not np.isfinite(threshold):
        # roc_curve's first point (nothing positive): a threshold just above every score.
        threshold = float(np.nextafter(scores.max(), np.inf))
    return threshold
