"""Temperature scaling: the fitted temperature undoes a known over-confidence, lowers the ECE, keeps the ranking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from sklearn.metrics import roc_auc_score

from covid_tf.evaluation import calibration


def calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from their own softmax: a perfectly calibrated two-class model."""
    rng = np.random.default_rng(seed)
    logits = np.stack([np.zeros(n), rng.normal(0.0, 2.0, n)], axis=1)
    labels = (rng.random(n) < special.softmax(logits, axis=1)[:, 1]).astype(int)
    return logits, labels


def test_the_fit_finds_a_known_overconfidence_and_lowers_the_ece():
    val_logits, y_val = calibrated_sample(4000, 0)
    test_logits, y_test = calibrated_sample(4000, 1)
    overconfident = lambda logits: special.softmax(3.0 * logits, axis=1)  # noqa: E731  (the logits x 3)
    assert calibration.fit_temperature(y_val, overconfident(val_logits)) == pytest.approx(3.0, rel=0.1)
    report = calibration.temperature_scaling(y_val, overconfident(val_logits), y_test, overconfident(test_logits),
                                             ["Normal", "COVID"])
    assert report["ece_before"] > 0.05 and report["ece_after"] < 0.03
    assert report["val_ece_after"] < report["val_ece_before"]
    scaled = calibration.apply_temperature(overconfident(test_logits), report["temperature"])
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    np.testing.assert_array_equal(scaled.argmax(axis=1), test_logits.argmax(axis=1))
    assert roc_auc_score(y_test, scaled[:, 1]) == pytest.approx(roc_auc_score(y_test, test_logits[:, 1]))


def test_a_calibrated_model_keeps_a_temperature_near_one_and_bad_input_says_why():
    logits, labels = calibrated_sample(4000, 2)
    probabilities = special.softmax(logits, axis=1)
    assert calibration.fit_temperature(labels, probabilities) == pytest.approx(1.0, rel=0.1)
    np.testing.assert_allclose(calibration.apply_temperature(probabilities, 1.0), probabilities, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        calibration.fit_temperature(labels[:10], probabilities)
    with pytest.raises(ValueError, match="class indices"):
        calibration.fit_temperature(np.full(len(labels), 2), probabilities)
    with pytest.raises(ValueError, match="positive number"):
        calibration.apply_temperature(probabilities, 0.0)
