"""Patients: the one place where image (or slice) predictions become patient decisions.

:func:`vote` makes the decision of each patient (``ct-vote``, the CT workflow and :func:`patient_level`,
which :func:`~covid_tf.evaluation.summary.compute_metrics` uses, all call it); :func:`patient_metrics`
scores a table of votes. The predictions table itself is read and checked in
:mod:`covid_tf.evaluation.tables`.

Rules
    ``majority``: each slice votes for its ``predicted`` class (the arg-max of its probabilities when
    there is no ``predicted`` column); the class with most votes wins. **Ties** are broken by the
    highest mean probability among the tied classes, and if that is still tied (equal within 1e-9, or
    no probability columns), by class order: the tied class that comes first in ``class_names``.
    ``mean``: the class with the highest mean probability over the patient's slices wins; ties (within
    1e-9) go to the class that comes first in ``class_names``.

For :func:`patient_level` (in ``vote``'s natural order of patient ids):

* the true label is the most common true label of its images (``vote``'s rule);
* the probabilities (used for ROC-AUC and calibration) are the mean of its images' probabilities;
* the predicted label depends on the rule. ``"majority"``: ``vote``'s majority of the image
  predictions (which already carry the binary threshold); ties go to the highest mean probability,
  then to class order. ``"mean"``: the mean probabilities decided like an image, that is the argmax,
  or for binary tasks ``p_positive >= threshold``, so a threshold chosen on validation data applies
  to patients too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from covid_tf.errors import CovidTfError
from covid_tf.evaluation.metrics import (
    accuracy,
    balanced_accuracy,
    confusion,
    macro_auc,
    one_vs_rest_auc,
    positive_class_index,
    predict_labels,
    to_jsonable,
)
from covid_tf.evaluation.tables import PROB_PREFIX, label_indices, prepare_predictions
from covid_tf.io_utils import natural_key

RULES = ("majority", "mean")
TIE_TOLERANCE = 1e-9


def _pick(candidates: list[int], mean_probs: np.ndarray | None) -> tuple[int, str]:
    """Among tied class indices: highest mean probability, then class order. Returns (index, how)."""
    if len(candidates) == 1:
        return candidates[0], ""
    if mean_probs is not None:
        best = max(mean_probs[index] for index in candidates)
        still = [index for index in candidates if mean_probs[index] >= best - TIE_TOLERANCE]
        if len(still) == 1:
            return still[0], "mean_probability"
        candidates = still
    return min(candidates), "class_order"


def _patient_label(group: pd.DataFrame, patient: str, folder: str, notes: list[str]) -> str:
    """The most common slice label of a patient (``""`` when none is known)."""
    labels = [str(value) for value in group["label"] if str(value) not in ("", "nan")]
    if not labels:
        return ""
    values, label_counts = np.unique(labels, return_counts=True)
    if len(values) > 1:
        notes.append(f"patient {patient} ({folder}) has several slice labels; using the most common")
    return str(values[int(label_counts.argmax())])


def _decide(counts: np.ndarray, mean_probs: np.ndarray | None, rule: str) -> tuple[int, list[int], str]:
    """The winning class index, the tied candidates and how the tie was broken."""
    if rule == "majority":
        tied = [index for index in range(len(counts)) if counts[index] == counts.max()]
        winner, how = _pick(tied, mean_probs)
    else:
        best = mean_probs.max()
        tied = [index for index in range(len(counts)) if mean_probs[index] >= best - TIE_TOLERANCE]
        winner, how = _pick(tied, None)
    return winner, tied, how


def vote(
    predictions: pd.DataFrame,
    class_names: Sequence[str] | None = None,
    rule: str = "majority",
    patient_col: str = "patient_id",
    patient_level: int = 1,
    source: str = "predictions",
) -> pd.DataFrame:
    """One row per (folder, patient): the patient-level label by ``rule`` (see the module docstring).

    Columns: ``folder, patient_id, predicted, num_slices, votes_<C>..., mean_prob_<C>..., tie,
    tie_break`` (``""``, ``"mean_probability"`` or ``"class_order"``), ``rule``, and ``label``,
    ``correct`` when the input has labels. ``class_names`` defaults to the ``prob_`` column order.
    Notes on derived values (patient ids from paths, ...) are in ``result.attrs["notes"]``.
    """
    if rule not in RULES:
        raise CovidTfError(f"unknown voting rule {rule!r}: use one of {list(RULES)}")
    table, class_names, notes = prepare_predictions(predictions, class_names, patient_col, patient_level, source)
    prob_columns = [f"{PROB_PREFIX}{name}" for name in class_names]
    has_probs = all(column in table.columns for column in prob_columns)
    if rule == "mean" and not has_probs:
        raise CovidTfError(f"{source}: rule 'mean' needs columns {prob_columns}")
    rows = []
    groups = table.groupby(["folder", patient_col], sort=False)
    for folder, patient in sorted(groups.groups, key=lambda key: (natural_key(key[0]), natural_key(key[1]))):
        group = groups.get_group((folder, patient))
        counts = np.array([(group["slice_vote"] == name).sum() for name in class_names])
        mean_probs = group[prob_columns].to_numpy().mean(axis=0) if has_probs else None
        winner, tied, how = _decide(counts, mean_probs, rule)
        row = {"folder": folder, "patient_id": patient, "predicted": class_names[winner], "num_slices": len(group)}
        row.update({f"votes_{name}": int(count) for name, count in zip(class_names, counts)})
        for index, name in enumerate(class_names):
            row[f"mean_prob_{name}"] = float(mean_probs[index]) if has_probs else np.nan
        row.update({"tie": len(tied) > 1, "tie_break": how, "rule": rule})
        if "label" in table.columns:
            row["label"] = _patient_label(group, patient, folder, notes)
            row["correct"] = bool(row["label"]) and row["label"] == row["predicted"]
        rows.append(row)
    result = pd.DataFrame(rows)
    result.attrs["notes"] = notes
    result.attrs["class_names"] = list(class_names)
    return result


def predictions_frame(
    y_true: np.ndarray, probabilities: np.ndarray, y_pred: np.ndarray, class_names: list[str], groups: Any
) -> pd.DataFrame:
    """The toolkit's predictions table (``label, predicted, prob_<Class>..., patient_id``) from arrays."""
    names = np.asarray(class_names, dtype=object)
    frame = pd.DataFrame({"label": names[y_true], "predicted": names[y_pred]})
    for index, name in enumerate(class_names):
        frame[f"{PROB_PREFIX}{name}"] = probabilities[:, index]
    frame["patient_id"] = np.asarray(groups).astype(str)
    return frame


def patient_level(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    y_pred: np.ndarray,
    groups: Any,
    class_names: list[str],
    *,
    threshold: float | None = None,
    positive_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per patient: ids, true label, mean probabilities ``(P, K)`` and ``{rule: predicted label}``."""
    if np.asarray(groups).shape != np.asarray(y_true).shape:
        raise ValueError(f"groups has {len(groups)} entries for {len(y_true)} samples")
    names = [str(name) for name in class_names]
    patients = vote(predictions_frame(y_true, probabilities, y_pred, names, groups), names, rule="majority")
    patient_true = label_indices(patients["label"], names)
    mean_probabilities = patients[[f"mean_prob_{name}" for name in names]].to_numpy(dtype=np.float64)
    predicted = {
        "majority": label_indices(patients["predicted"], names),
        "mean": predict_labels(mean_probabilities, threshold=threshold, positive_index=positive_index),
    }
    return patients["patient_id"].to_numpy(), patient_true, mean_probabilities, predicted


def aggregate_patients(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    y_pred: np.ndarray,
    groups: Any,
    class_names: list[str],
    *,
    rule: str = "majority",
    threshold: float | None = None,
    positive_index: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per patient by one rule: true label, mean probabilities ``(P, K)``, predicted label, patient ids."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    ids, patient_true, mean_probabilities, predicted = patient_level(
        y_true, probabilities, y_pred, groups, class_names, threshold=threshold, positive_index=positive_index
    )
    return patient_true, mean_probabilities, predicted[rule], ids


def patient_metrics(patients: pd.DataFrame, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, confusion matrix (rows true) of a :func:`vote` table,
    and the ROC-AUC of the patients' mean probabilities (binary: of the positive class; else macro one-vs-rest)."""
    names = list(class_names)
    labelled = patients[patients["label"].astype(str) != ""] if "label" in patients else patients.iloc[:0]
    result: dict[str, Any] = {"n_patients": int(len(patients)), "n_labelled": int(len(labelled))}
    if labelled.empty:
        return result
    y_true, y_pred = label_indices(labelled["label"], names), label_indices(labelled["predicted"], names)
    probabilities = labelled[[f"mean_prob_{name}" for name in names]].to_numpy(dtype=np.float64)
    per_class_auc, _ = one_vs_rest_auc(y_true, probabilities, names)
    roc_auc = per_class_auc[positive_class_index(names)] if len(names) == 2 else macro_auc(per_class_auc)
    result.update({
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "roc_auc_mean_probability": roc_auc,
        "confusion_matrix": confusion(y_true, y_pred, len(names)),
        "ties": int(labelled["tie"].sum()),
    })
    return to_jsonable(result)
