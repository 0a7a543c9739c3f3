"""Evaluation of a classifier's softmax outputs: metrics, bootstrap CIs, calibration, patient level.

The main entry is :func:`compute_metrics`; it returns a JSON-ready dict (plain Python values, NaN as
``None``) that ``metrics.json`` files and :mod:`covid_tf.cli.report` use, from the pieces in
:mod:`covid_tf.evaluation` (``metrics``, ``bootstrap``, ``calibration``, ``operating_point``, ``patients``).

Inputs everywhere: ``y_true`` integer class indices ``(N,)``, ``probabilities`` softmax ``(N, K)``,
``class_names`` (K str), optional ``groups`` (patient ids, ``(N,)``). For binary tasks the positive
class is ``"COVID"`` if present, else class index 1, unless ``positive_class`` says otherwise; a
sample is predicted positive iff ``p_positive >= threshold`` (0.5 unless a threshold chosen on
validation data with :func:`choose_threshold` is passed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from covid_tf.evaluation.bootstrap import bootstrap_confidence_intervals
from covid_tf.evaluation.calibration import expected_calibration_error
from covid_tf.evaluation.metrics import (
    accuracy,
    average_precision,
    balanced_accuracy,
    brier_score,
    confusion,
    macro_auc,
    one_vs_rest_auc,
    per_class_metrics,
    positive_class_index,
    predict_labels,
    to_jsonable,
    validate_inputs,
)
from covid_tf.evaluation.patients import RULES as PATIENT_RULES
from covid_tf.evaluation.patients import patient_level

DEFAULT_THRESHOLD = 0.5


def _metrics_dict(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    *,
    positive_index: int | None,
    threshold: float | None,
    groups: Any,
    n_bootstrap: int,
    seed: int,
    n_bins: int,
) -> dict[str, Any]:
    """Every metric of one set of predictions (no patient level)."""
    binary = len(class_names) == 2
    per_class = per_class_metrics(y_true, y_pred, class_names)
    class_auc, notes = one_vs_rest_auc(y_true, probabilities, class_names)
    for name, auc in zip(class_names, class_auc):
        per_class[name]["roc_auc"] = auc
        per_class[name] = {key: per_class[name][key] for key in
                           ("sensitivity", "specificity", "precision", "f1", "roc_auc", "support")}
    if binary:
        roc_auc = class_auc[positive_index]
    else:
        roc_auc = macro_auc(class_auc)
        n_defined = sum(value is not None for value in class_auc)
        if 0 < n_defined < len(class_names):
            notes.append(
                f"macro ROC-AUC averages the {n_defined} of {len(class_names)} classes where it is defined"
            )
    ci_names = ["accuracy", "balanced_accuracy", "roc_auc"]
    if binary:
        ci_names += ["sensitivity", "specificity"]
    if n_bootstrap > 0:
        ci95 = bootstrap_confidence_intervals(
            y_true, y_pred, probabilities, groups=groups, positive_index=positive_index,
            n_bootstrap=n_bootstrap, seed=seed,
        )
        ci95 = {name: ci95[name] for name in ci_names}
    else:
        ci95 = {name: [None, None] for name in ci_names}
    return {
        "n": int(y_true.size),
        "class_names": list(class_names),
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "roc_auc": roc_auc,
        "average_precision": average_precision(y_true, probabilities, positive_index),
        "per_class": per_class,
        "ci95": ci95,
        "ece": expected_calibration_error(
            y_true, probabilities, class_names, n_bins=n_bins, positive_class=positive_index
        ),
        "brier": brier_score(y_true, probabilities, positive_index),
        "confusion_matrix": confusion(y_true, y_pred, len(class_names)),
        "threshold": threshold,
        "notes": notes,
    }


def compute_metrics(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str],
    *,
    groups: Any = None,
    threshold: float | None = None,
    positive_class: str | int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 42,
    n_bins: int = 15,
) -> dict[str, Any]:
    """All metrics of a classifier's outputs as a JSON-ready dict.

    Keys: ``n``, ``class_names``, ``accuracy``, ``balanced_accuracy``, ``roc_auc`` (binary: of the
    positive class; otherwise macro one-vs-rest), ``average_precision`` (the area under the precision-recall
    curve, of the positive class or the macro mean, like ``roc_auc``), ``per_class`` ({class: sensitivity, specificity,
    precision, f1, roc_auc, support}), ``ci95`` ({metric: [low, high]}: accuracy, balanced_accuracy,
    roc_auc, and for binary tasks the positive class's sensitivity and specificity), ``ece``
    (``n_bins`` equal-width bins, see :mod:`covid_tf.evaluation.calibration`), ``brier``,
    ``confusion_matrix`` (rows true, columns predicted), ``threshold`` (binary: the one used, else
    ``None``) and ``notes`` (why a value is ``None``). With ``groups`` (patient ids), the intervals
    come from a patient-level cluster bootstrap and ``patients`` holds ``{"majority": ..., "mean": ...}``
    metric dicts on per-patient labels and probabilities. Undefined values are ``None``.
    """
    labels, probs, names = validate_inputs(y_true, probabilities, class_names)
    binary = len(names) == 2
    if not binary and threshold is not None:
        raise ValueError(f"threshold applies only to binary tasks; got {len(names)} classes {names}")
    if not binary and positive_class is not None:
        raise ValueError(f"positive_class applies only to binary tasks; got {len(names)} classes {names}")
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"groups needs one patient id per sample ({labels.size}), got {groups.shape}")
    positive_index = positive_class_index(names, positive_class) if binary else None
    used_threshold = (DEFAULT_THRESHOLD if threshold is None else float(threshold)) if binary else None
    y_pred = predict_labels(probs, threshold=used_threshold, positive_index=positive_index)
    options = {
        "positive_index": positive_index, "threshold": used_threshold,
        "n_bootstrap": n_bootstrap, "seed": seed, "n_bins": n_bins,
    }
    result = _metrics_dict(labels, probs, y_pred, names, groups=groups, **options)
    if groups is not None:
        _, patient_true, patient_probs, patient_pred = patient_level(
            labels, probs, y_pred, groups, names, threshold=used_threshold, positive_index=positive_index
        )
        result["patients"] = {
            rule: _metrics_dict(patient_true, patient_probs, patient_pred[rule], names, groups=None, **options)
            for rule in PATIENT_RULES
        }
    return to_jsonable(result)
