"""Point metrics on one set of predictions: accuracy, per-class rates, ROC-AUC, average precision, Brier score.

Every function takes the project's common inputs: ``y_true`` integer class indices ``(N,)``,
``probabilities`` softmax outputs ``(N, K)`` and ``class_names`` (K str). scikit-learn computes
the numbers; this module only validates inputs, handles absent classes (``None`` with a reason,
never a crash) and turns the results into plain Python values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics

POSITIVE_CLASS_NAME = "COVID"


def validate_inputs(
    y_true: Any, probabilities: Any, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check shapes and ranges; return ``y_true`` as int64, ``probabilities`` as float64, names as a list."""
    names = [str(name) for name in class_names]
    n_classes = len(names)
    if n_classes < 2:
        raise ValueError(f"class_names needs at least two classes, got {names}")
    if len(set(names)) != n_classes:
        raise ValueError(f"class_names has duplicates: {names}")
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"y_true must be 1-D class indices, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError("y_true is empty: nothing to evaluate")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("y_true must hold integer class indices")
        labels = labels.astype(np.int64)
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"y_true holds indices outside [0, {n_classes - 1}] for classes {names}")
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (labels.size, n_classes):
        raise ValueError(
            f"probabilities must have shape (N, K) = ({labels.size}, {n_classes}), got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities contain NaN or infinite values")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise ValueError("probabilities must lie in [0, 1] (softmax outputs)")
    # float32 softmax rows sum to 1 only within rounding; renormalise so scikit-learn agrees.
    probs = np.clip(probs, 0.0, 1.0)
    totals = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, totals, out=np.full_like(probs, 1.0 / n_classes), where=totals > 0)
    return labels, probs, names


def positive_class_index(class_names: Sequence[str], positive_class: str | int | None = None) -> int:
    """Index of the positive class: ``positive_class`` if given, else ``"COVID"`` if present, else 1."""
    names = [str(name) for name in class_names]
    if positive_class is None:
        return names.index(POSITIVE_CLASS_NAME) if POSITIVE_CLASS_NAME in names else 1
    if isinstance(positive_class, (int, np.integer)) and not isinstance(positive_class, bool):
        if not 0 <= int(positive_class) < len(names):
            raise ValueError(f"positive_class index {positive_class} is outside the classes {names}")
        return int(positive_class)
    if str(positive_class) not in names:
        raise ValueError(f"positive_class {positive_class!r} is not one of {names}")
    return names.index(str(positive_class))


def predict_labels(
    probabilities: np.ndarray, *, threshold: float | None = None, positive_index: int | None = None
) -> np.ndarray:
    """Predicted class indices: argmax, or for binary tasks positive iff ``p_positive >= threshold``."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if threshold is None:
        return np.argmax(probs, axis=1).astype(np.int64)
    if probs.shape[1] != 2 or positive_index is None:
        raise ValueError("a decision threshold applies only to binary tasks (two classes)")
    negative_index = 1 - positive_index
    is_positive = probs[:, positive_index] >= threshold
    return np.where(is_positive, positive_index, negative_index).astype(np.int64)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix ``(K, K)``, rows true class, columns predicted class."""
    return sk_metrics.confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def _nan_to_none(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def one_vs_rest_auc(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> tuple[list[float | None], list[str]]:
    """ROC-AUC of each class against the rest; ``None`` (and a note why) where it is undefined."""
    values: list[float | None] = []
    notes: list[str] = []
    for index, name in enumerate(class_names):
        is_class = y_true == index
        if not is_class.any():
            values.append(None)
            notes.append(f"ROC-AUC of {name!r} is undefined: the class is absent from y_true")
        elif is_class.all():
            values.append(None)
            notes.append(f"ROC-AUC of {name!r} is undefined: every sample belongs to it")
        else:
            values.append(float(sk_metrics.roc_auc_score(is_class.astype(int), probabilities[:, index])))
    return values, notes


def macro_auc(per_class_auc: Sequence[float | None]) -> float | None:
    """Unweighted mean of the defined one-vs-rest AUCs (sklearn's ``multi_class="ovr"``, macro)."""
    defined = [value for value in per_class_auc if value is not None]
    return float(np.mean(defined)) if defined else None


def average_precision(
    y_true: np.ndarray, probabilities: np.ndarray, positive_index: int | None = None
) -> float | None:
    """Area under the precision-recall curve (scikit-learn's average precision): of the positive class for binary
    tasks (``positive_index``), else the unweighted mean over the classes present in ``y_true``."""
    indices = [positive_index] if positive_index is not None else range(probabilities.shape[1])
    values = [sk_metrics.average_precision_score((y_true == index).astype(int), probabilities[:, index])
              for index in indices if (y_true == index).any()]
    return float(np.mean(values)) if values else None


def per_class_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float | int | None]]:
    """Sensitivity (recall), specificity, precision, F1 and support of each class (no AUC)."""
    labels = list(range(len(class_names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=np.nan
        )
    # One 2x2 matrix [[tn, fp], [fn, tp]] per class.
    binary_matrices = sk_metrics.multilabel_confusion_matrix(y_true, y_pred, labels=labels)
    result: dict[str, dict[str, float | int | None]] = {}
    for index, name in enumerate(class_names):
        tn, fp = binary_matrices[index][0]
        specificity = tn / (tn + fp) if (tn + fp) > 0 else float("nan")
        result[name] = {
            "sensitivity": _nan_to_none(recall[index]),
            "specificity": _nan_to_none(specificity),
            "precision": _nan_to_none(precision[index]),
            "f1": _nan_to_none(f1[index]),
            "support": int(support[index]),
        }
    return result


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(sk_metrics.accuracy_score(y_true, y_pred))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sk_metrics.balanced_accuracy_score(y_true, y_pred))


def brier_score(y_true: np.ndarray, probabilities: np.ndarray, positive_index: int | None = None) -> float:
    """Brier score: binary, mean ``(p_positive - y)^2``; multi-class, mean of the summed squared errors."""
    n_classes = probabilities.shape[1]
    if n_classes == 2:
        index = 1 if positive_index is None else positive_index
        return float(sk_metrics.brier_score_loss((y_true == index).astype(int), probabilities[:, index]))
    return float(sk_metrics.brier_score_loss(y_true, probabilities, labels=list(range(n_classes))))


def to_jsonable(value: Any) -> Any:
    """Recursively turn numpy values into plain Python ones and NaN / infinity into ``None``."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value
