"""Patient-level aggregation of image predictions, through :func:`covid_tf.voting.vote`.

Per patient (in ``vote``'s natural order of patient ids):

* the true label is the most common true label of its images (``vote``'s rule);
* the probabilities (used for ROC-AUC and calibration) are the mean of its images' probabilities;
* the predicted label depends on the rule. ``"majority"``: ``vote``'s majority of the image
  predictions (which already carry the binary threshold); ties go to the highest mean probability,
  then to class order. ``"mean"``: the mean probabilities decided like an image, that is the argmax,
  or for binary tasks ``p_positive >= threshold``, so a threshold chosen on validation data applies
  to patients too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from covid_tf.evaluation.metrics import predict_labels
from covid_tf.evaluation.voting import PROB_PREFIX, vote

RULES = ("majority", "mean")


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
    index_of = {name: index for index, name in enumerate(names)}
    patient_true = patients["label"].map(index_of).to_numpy(dtype=np.int64)
    mean_probabilities = patients[[f"mean_prob_{name}" for name in names]].to_numpy(dtype=np.float64)
    predicted = {
        "majority": patients["predicted"].map(index_of).to_numpy(dtype=np.int64),
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
