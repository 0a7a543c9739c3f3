"""Calibration: reliability curves and the expected calibration error (ECE).

Bins are equal-width on [0, 1] (15 by default), each closed on the right, ``(lower, upper]``, with 0
in the first bin. What is binned depends on the task:

* **binary** (two classes): the probability of the positive class, against the fraction of samples
  that are positive (the classic reliability diagram; it does not depend on a threshold);
* **multi-class**: the confidence (the max probability), against the accuracy of the argmax.

ECE is the sample-weighted mean of ``|accuracy - confidence|`` over the non-empty bins.

Temperature scaling (:func:`fit_temperature` on validation predictions, :func:`apply_temperature`,
:func:`temperature_scaling` for the ECE before and after) recalibrates a model without changing its ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, special

from covid_tf.evaluation.metrics import positive_class_index


def _scores_and_outcomes(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str] | None,
    positive_class: str | int | None,
) -> tuple[np.ndarray, np.ndarray, str]:
    labels = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.size:
        raise ValueError(f"probabilities must have shape (N, K) with N = {labels.size}, got {probs.shape}")
    if probs.shape[1] == 2:
        names = list(class_names) if class_names is not None else ["negative", "positive"]
        index = positive_class_index(names, positive_class)
        return probs[:, index], (labels == index).astype(np.float64), "positive_class"
    return probs.max(axis=1), (np.argmax(probs, axis=1) == labels).astype(np.float64), "confidence"


def reliability_curve(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str] | None = None,
    *,
    n_bins: int = 15,
    positive_class: str | int | None = None,
) -> dict[str, Any]:
    """Per-bin mean score, observed frequency and count, plus the ECE.

    Returns a dict of numpy arrays ``bin_lower``, ``bin_upper``, ``confidence``, ``accuracy`` (NaN in
    empty bins), ``count``, and ``ece`` (float) and ``mode`` (``"positive_class"`` or ``"confidence"``).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    scores, outcomes, mode = _scores_and_outcomes(y_true, probabilities, class_names, positive_class)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins (lower, upper]; a score of exactly 0 falls into the first bin.
    bin_of_sample = np.clip(np.searchsorted(edges[1:-1], scores, side="left"), 0, n_bins - 1)
    count = np.bincount(bin_of_sample, minlength=n_bins)
    score_sum = np.bincount(bin_of_sample, weights=scores, minlength=n_bins)
    outcome_sum = np.bincount(bin_of_sample, weights=outcomes, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, score_sum / count, np.nan)
        accuracy = np.where(count > 0, outcome_sum / count, np.nan)
    gaps = np.abs(np.nan_to_num(accuracy) - np.nan_to_num(confidence))
    ece = float(np.sum(count * gaps) / max(scores.size, 1))
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": confidence,
        "accuracy": accuracy,
        "count": count,
        "ece": ece,
        "mode": mode,
    }


def expected_calibration_error(
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[str] | None = None,
    *,
    n_bins: int = 15,
    positive_class: str | int | None = None,
) -> float:
    """Expected calibration error with equal-width bins (see the module docstring for what is binned)."""
    curve = reliability_curve(
        y_true, probabilities, class_names, n_bins=n_bins, positive_class=positive_class
    )
    return curve["ece"]


def apply_temperature(probabilities: Any, temperature: float) -> np.ndarray:
    """Softmax outputs rescaled by a temperature: ``softmax(log(p) / T)``, the same as dividing the logits by ``T``
    (``log p`` differs from the logits by one constant per row). ``T > 1`` softens, ``T < 1`` sharpens; the ranking
    of the images and each image's argmax are unchanged."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"the temperature must be a positive number, got {temperature}")
    log_probabilities = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0))
    return special.softmax(log_probabilities / temperature, axis=1)


def fit_temperature(y_true: Any, probabilities: Any, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al., ICML 2017): the ``T`` in ``bounds`` that minimises the negative
    log-likelihood of :func:`apply_temperature` on held-out predictions (the validation split, never the test)."""
    labels = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.size or labels.size == 0:
        raise ValueError(f"probabilities must have shape (N, K) with N = {labels.size} > 0, got {probs.shape}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {probs.shape[1]}), got {labels.min()}..{labels.max()}")
    log_probabilities = np.log(np.clip(probs, 1e-12, 1.0))

    def negative_log_likelihood(log_temperature: float) -> float:
        scaled = special.log_softmax(log_probabilities / np.exp(log_temperature), axis=1)
        return float(-scaled[np.arange(labels.size), labels].mean())

    low, high = np.log(bounds[0]), np.log(bounds[1])
    result = optimize.minimize_scalar(negative_log_likelihood, bounds=(low, high), method="bounded")
    return float(np.exp(result.x))


def temperature_scaling(y_val: Any, p_val: Any, y_test: Any, p_test: Any, class_names: Sequence[str] | None = None,
                        *, n_bins: int = 15) -> dict[str, float]:
    """Fit the temperature on the validation predictions and report the test ECE before and after it (and the
    validation ECE, which the fit sees): ``temperature``, ``ece_before``, ``ece_after``, ``val_ece_before``,
    ``val_ece_after``."""
    temperature = fit_temperature(y_val, p_val)

    def ece(labels: Any, probabilities: Any) -> float:
        return expected_calibration_error(labels, probabilities, class_names, n_bins=n_bins)

    return {"temperature": temperature,
            "ece_before": ece(y_test, p_test), "ece_after": ece(y_test, apply_temperature(p_test, temperature)),
            "val_ece_before": ece(y_val, p_val), "val_ece_after": ece(y_val, apply_temperature(p_val, temperature))}
