"""Metrics, bootstrap, calibration, operating points and patient level against hand-computed values."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from covid_tf.evaluation import bootstrap, calibration, metrics, operating_point, patients
from covid_tf.evaluation import summary as evaluate

EXPECTED_KEYS = {
    "n", "class_names", "accuracy", "balanced_accuracy", "roc_auc", "average_precision", "per_class", "ci95", "ece",
    "brier", "confusion_matrix", "threshold", "notes",
}


def one_hot_probabilities(y_pred: np.ndarray, n_classes: int, confidence: float = 0.9) -> np.ndarray:
    """Probabilities whose argmax is ``y_pred``."""
    probabilities = np.full((len(y_pred), n_classes), (1 - confidence) / (n_classes - 1))
    probabilities[np.arange(len(y_pred)), y_pred] = confidence
    return probabilities


def random_binary(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    p_positive = np.clip(0.35 * y_true + 0.65 * rng.random(n), 0, 1)
    return y_true, np.column_stack([1 - p_positive, p_positive])


def test_seed_000_table_gives_perfect_scores() -> None:
    # Seed 000: 23 true positives (Abnormal), 25 true negatives (Normal), no errors.
    y_true = np.array([1] * 23 + [0] * 25)
    probabilities = one_hot_probabilities(y_true, 2, confidence=0.97)
    result = evaluate.compute_metrics(y_true, probabilities, ["Normal", "Abnormal"], n_bootstrap=200)
    assert result["confusion_matrix"] == [[25, 0], [0, 23]]
    assert result["accuracy"] == 1.0
    assert result["per_class"]["Abnormal"]["sensitivity"] == 1.0
    assert result["per_class"]["Abnormal"]["specificity"] == 1.0
    assert result["per_class"]["Abnormal"]["support"] == 23
    assert result["roc_auc"] == 1.0
    assert result["ci95"]["sensitivity"] == [1.0, 1.0]
    assert result["threshold"] == 0.5


def test_known_three_class_confusion_matrix() -> None:
    table = np.array([[5, 2, 1], [1, 6, 1], [0, 2, 7]])
    y_true = np.repeat(np.repeat(np.arange(3), 3), table.ravel())
    y_pred = np.repeat(np.tile(np.arange(3), 3), table.ravel())
    names = ["Normal", "COVID", "Viral Pneumonia"]
    result = evaluate.compute_metrics(y_true, one_hot_probabilities(y_pred, 3), names, n_bootstrap=0)
    assert result["confusion_matrix"] == table.tolist()
    assert result["accuracy"] == pytest.approx(18 / 25)
    assert result["balanced_accuracy"] == pytest.approx((5 / 8 + 6 / 8 + 7 / 9) / 3)
    expected = {  # sensitivity, specificity, precision, f1, worked out from the table
        "Normal": (5 / 8, 16 / 17, 5 / 6, 10 / 14),
        "COVID": (6 / 8, 13 / 17, 6 / 10, 12 / 18),
        "Viral Pneumonia": (7 / 9, 14 / 16, 7 / 9, 14 / 18),
    }
    for name, values in expected.items():
        row = result["per_class"][name]
        got = (row["sensitivity"], row["specificity"], row["precision"], row["f1"])
        assert got == pytest.approx(values)
    assert result["threshold"] is None
    assert "sensitivity" not in result["ci95"]


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 3 / 4),  # pairs: 0.35>0.1, 0.8>0.1, 0.8>0.4
        ([0, 1, 0, 1], [0.2, 0.2, 0.5, 0.9], 2.5 / 4),  # one tie counts one half
    ],
)
def test_auc_of_four_points_by_hand(labels: list[int], scores: list[float], expected: float) -> None:
    y_true = np.array(labels)
    probabilities = np.column_stack([1 - np.array(scores), scores])
    result = evaluate.compute_metrics(y_true, probabilities, ["Normal", "Sick"], n_bootstrap=0)
    assert result["roc_auc"] == pytest.approx(expected)
    fast = bootstrap.weighted_auc(np.ones((1, 4)), y_true == 1, np.array(scores))
    assert fast[0] == pytest.approx(expected)


def test_weighted_auc_equals_sklearn_on_expanded_resamples() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # many ties
    weights = bootstrap.bootstrap_weights(y_true, n_bootstrap=20, seed=1)
    fast = bootstrap.weighted_auc(weights, y_true == 1, scores)
    for row, value in zip(weights, fast):
        expanded = np.repeat(np.arange(60), row)
        assert value == pytest.approx(sk_metrics.roc_auc_score(y_true[expanded], scores[expanded]))


def test_macro_auc_matches_sklearn_ovr() -> None:
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[y_true]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = evaluate.compute_metrics(y_true, probabilities, list("ABCD"), n_bootstrap=50)
    expected = sk_metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro")
    assert result["roc_auc"] == pytest.approx(expected)
    assert result["brier"] == pytest.approx(np.mean(np.sum((probabilities - np.eye(4)[y_true]) ** 2, axis=1)))
    assert result["average_precision"] == pytest.approx(
        sk_metrics.average_precision_score(np.eye(4)[y_true], probabilities, average="macro"))


def test_average_precision_of_the_positive_class_by_hand() -> None:
    # COVID is the positive class (index 0). Ranked by p(COVID): hit, miss, hit -> AP = (1 + 2/3) / 2.
    probabilities = [[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]]
    result = evaluate.compute_metrics([0, 1, 0, 1], probabilities, ["COVID", "Normal"], n_bootstrap=0)
    assert result["average_precision"] == pytest.approx((1 + 2 / 3) / 2)


def test_positive_class_is_covid_when_present_else_index_one() -> None:
    assert metrics.positive_class_index(["COVID", "Normal"]) == 0
    assert metrics.positive_class_index(["Normal", "Abnormal"]) == 1
    assert metrics.positive_class_index(["COVID", "Normal"], "Normal") == 1
    with pytest.raises(ValueError, match="not one of"):
        metrics.positive_class_index(["COVID", "Normal"], "CAP")


def test_threshold_is_applied_to_the_positive_class() -> None:
    # COVID is column 0 here: predicted COVID iff p_COVID >= threshold.
    p_covid = np.array([0.9, 0.35, 0.2, 0.1])
    y_true = np.array([0, 0, 1, 1])
    probabilities = np.column_stack([p_covid, 1 - p_covid])
    default = evaluate.compute_metrics(y_true, probabilities, ["COVID", "Normal"], n_bootstrap=0)
    lowered = evaluate.compute_metrics(
        y_true, probabilities, ["COVID", "Normal"], threshold=0.3, n_bootstrap=0
    )
    assert default["per_class"]["COVID"]["sensitivity"] == 0.5
    assert lowered["per_class"]["COVID"]["sensitivity"] == 1.0
    assert lowered["threshold"] == 0.3
    assert set(lowered["ci95"]) == {"accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity"}
    assert default["brier"] == pytest.approx(np.mean((p_covid - np.array([1, 1, 0, 0])) ** 2))


def test_youden_threshold_separates_a_separable_toy() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 1])
    p_positive = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    threshold = operating_point.choose_threshold(y_true, p_positive, method="youden")
    assert threshold == pytest.approx(0.6)
    result = evaluate.compute_metrics(
        y_true, np.column_stack([1 - p_positive, p_positive]), ["Normal", "COVID"],
        threshold=threshold, n_bootstrap=0,
    )
    assert result["accuracy"] == 1.0


def test_sensitivity_target_threshold() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 1, 1])
    p_positive = np.array([0.1, 0.3, 0.5, 0.2, 0.6, 0.7, 0.9])
    assert operating_point.choose_threshold(y_true, p_positive, "sensitivity", 0.95) == pytest.approx(0.2)
    assert operating_point.choose_threshold(y_true, p_positive, "sensitivity", 0.75) == pytest.approx(0.6)
    # Class indices with another positive label.
    assert operating_point.choose_threshold(1 - y_true, 1 - p_positive, "youden", positive_label=0) < 0.95
    with pytest.raises(ValueError, match="both positive and negative"):
        operating_point.choose_threshold(np.ones(3), np.array([0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match="method"):
        operating_point.choose_threshold(y_true, p_positive, method="f1")


def test_bootstrap_interval_contains_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (100, 2000):
        y_true, probabilities = random_binary(n, seed=n)
        result = evaluate.compute_metrics(y_true, probabilities, ["Normal", "COVID"], n_bootstrap=500, seed=7)
        for name in ("accuracy", "balanced_accuracy", "roc_auc"):
            low, high = result["ci95"][name]
            assert low <= result[name] <= high
        sensitivity = result["per_class"]["COVID"]["sensitivity"]
        assert result["ci95"]["sensitivity"][0] <= sensitivity <= result["ci95"]["sensitivity"][1]
        widths.append(result["ci95"]["accuracy"][1] - result["ci95"]["accuracy"][0])
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded_and_stratified() -> None:
    y_true = np.array([0] * 30 + [1] * 10 + [2] * 5)
    first = bootstrap.bootstrap_weights(y_true, n_bootstrap=50, seed=11)
    again = bootstrap.bootstrap_weights(y_true, n_bootstrap=50, seed=11)
    other = bootstrap.bootstrap_weights(y_true, n_bootstrap=50, seed=12)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for label, size in ((0, 30), (1, 10), (2, 5)):
        np.testing.assert_array_equal(first[:, y_true == label].sum(axis=1), size)


def test_cluster_bootstrap_resamples_patients() -> None:
    # 40 patients with 5 identical images each: resampling patients must give the same intervals as the
    # patient-level data set, whereas resampling images (pseudo-replication) gives narrower ones.
    y_patient, probabilities_patient = random_binary(40, seed=4)
    patient_ids = np.array([f"p{i:02d}" for i in range(40)])
    y_images = np.repeat(y_patient, 5)
    probabilities_images = np.repeat(probabilities_patient, 5, axis=0)
    groups = np.repeat(patient_ids, 5)
    names = ["Normal", "COVID"]

    weights = bootstrap.bootstrap_weights(y_images, groups=groups, n_bootstrap=30, seed=0)
    blocks = weights.reshape(30, 40, 5)
    assert np.all(blocks == blocks[:, :, :1])  # all images of a patient drawn together
    np.testing.assert_array_equal(weights.sum(axis=1) % 5, 0)

    clustered = evaluate.compute_metrics(
        y_images, probabilities_images, names, groups=groups, n_bootstrap=300
    )
    per_patient = evaluate.compute_metrics(y_patient, probabilities_patient, names, n_bootstrap=300)
    per_image = evaluate.compute_metrics(y_images, probabilities_images, names, n_bootstrap=300)
    for name in ("accuracy", "roc_auc", "sensitivity"):
        assert clustered["ci95"][name] == pytest.approx(per_patient["ci95"][name])
    width = clustered["ci95"]["accuracy"][1] - clustered["ci95"]["accuracy"][0]
    naive_width = per_image["ci95"]["accuracy"][1] - per_image["ci95"]["accuracy"][0]
    assert naive_width < width


def test_bootstrap_speed_1000_resamples_of_2000_images() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 2000)
    probabilities = rng.dirichlet(np.ones(4), size=2000)
    start = time.perf_counter()
    result = evaluate.compute_metrics(y_true, probabilities, list("ABCD"), n_bootstrap=1000)
    assert time.perf_counter() - start < 5.0
    assert result["ci95"]["roc_auc"][0] < result["ci95"]["roc_auc"][1]


def test_perfectly_calibrated_toy_has_zero_ece() -> None:
    # Binary: 10 samples at p=0.3 with 3 positives, 10 at p=0.8 with 8 positives.
    p_positive = np.array([0.3] * 10 + [0.8] * 10)
    y_true = np.array([1] * 3 + [0] * 7 + [1] * 8 + [0] * 2)
    probabilities = np.column_stack([1 - p_positive, p_positive])
    ece = calibration.expected_calibration_error(y_true, probabilities, ["Normal", "COVID"])
    assert ece == pytest.approx(0.0, abs=1e-12)
    # Multi-class: confidence 0.5 with half right, 0.9 with 9 of 10 right.
    probabilities = np.array([[0.5, 0.3, 0.2]] * 4 + [[0.9, 0.05, 0.05]] * 10)
    y_true = np.array([0, 0, 1, 2] + [0] * 9 + [1])
    assert calibration.expected_calibration_error(y_true, probabilities) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_overconfident_toy() -> None:
    # p_positive = 0.9 everywhere but only half positive: ECE = |0.5 - 0.9| = 0.4.
    probabilities = np.tile([0.1, 0.9], (10, 1))
    y_true = np.array([0, 1] * 5)
    curve = calibration.reliability_curve(y_true, probabilities, ["Normal", "COVID"], n_bins=10)
    assert curve["ece"] == pytest.approx(0.4)
    assert curve["mode"] == "positive_class"
    assert curve["count"].sum() == 10
    filled = np.flatnonzero(curve["count"])
    assert filled.tolist() == [8]  # 0.9 lies in (0.8, 0.9]
    assert curve["accuracy"][8] == pytest.approx(0.5)
    assert np.isnan(curve["accuracy"][0])


def test_metrics_are_json_ready_with_absent_class() -> None:
    # "Viral Pneumonia" never occurs: its AUC and sensitivity are None with a note, nothing crashes.
    y_true = np.array([0, 0, 1, 1, 0, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1],
                              [0.1, 0.3, 0.6], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    names = ["Normal", "COVID", "Viral Pneumonia"]
    result = evaluate.compute_metrics(y_true, probabilities, names, n_bootstrap=100)
    assert set(result) == EXPECTED_KEYS
    assert result["per_class"]["Viral Pneumonia"]["roc_auc"] is None
    assert result["per_class"]["Viral Pneumonia"]["sensitivity"] is None
    assert result["per_class"]["Viral Pneumonia"]["support"] == 0
    assert any("Viral Pneumonia" in note and "absent" in note for note in result["notes"])
    assert result["roc_auc"] == pytest.approx(np.mean([result["per_class"][n]["roc_auc"] for n in names[:2]]))
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert isinstance(result["confusion_matrix"][0][0], int)
    assert isinstance(result["accuracy"], float)


def test_patient_level_majority_and_mean() -> None:
    # Patient A (COVID): image p_COVID 0.9, 0.4, 0.45 -> votes 1 of 3 (majority wrong), mean 0.583 (right).
    # Patient B (Normal): 0.2, 0.1 -> right either way. Patient C (COVID): 0.8 -> right.
    p_covid = np.array([0.9, 0.4, 0.45, 0.2, 0.1, 0.8])
    y_true = np.array([0, 0, 0, 1, 1, 0])
    groups = ["A", "A", "A", "B", "B", "C"]
    probabilities = np.column_stack([p_covid, 1 - p_covid])
    names = ["COVID", "Normal"]
    result = evaluate.compute_metrics(y_true, probabilities, names, groups=groups, n_bootstrap=50)
    assert set(result) == EXPECTED_KEYS | {"patients"}
    majority, mean = result["patients"]["majority"], result["patients"]["mean"]
    assert majority["n"] == mean["n"] == 3
    assert majority["confusion_matrix"] == [[1, 1], [0, 1]]
    assert mean["confusion_matrix"] == [[2, 0], [0, 1]]
    assert majority["accuracy"] == pytest.approx(2 / 3)
    assert mean["accuracy"] == 1.0
    assert majority["roc_auc"] == mean["roc_auc"] == 1.0  # both use the mean probability
    assert "patients" not in majority
    json.dumps(result, allow_nan=False)


def test_patient_label_is_the_majority_true_label() -> None:
    y_true = np.array([1, 1, 0, 0])
    probabilities = np.tile([0.4, 0.6], (4, 1))
    y_pred = np.ones(4, dtype=int)
    labels, mean_probabilities, predicted, ids = patients.aggregate_patients(
        y_true, probabilities, y_pred, ["x", "x", "x", "y"], ["Normal", "COVID"], rule="majority"
    )
    assert ids.tolist() == ["x", "y"]
    assert labels.tolist() == [1, 0]
    assert predicted.tolist() == [1, 1]
    np.testing.assert_allclose(mean_probabilities, [[0.4, 0.6], [0.4, 0.6]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_true": [0, 1, 3]}, "outside"),
        ({"probabilities": np.full((3, 3), 1 / 3)}, "shape"),
        ({"class_names": ["Normal"]}, "at least two"),
        ({"threshold": 0.4, "class_names": list("ABC"), "probabilities": np.full((3, 3), 1 / 3)}, "binary"),
        ({"groups": ["a", "b"]}, "patient id"),
        ({"probabilities": np.array([[np.nan, 1.0], [0.5, 0.5], [0.5, 0.5]])}, "NaN"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs: dict, message: str) -> None:
    arguments = {"y_true": [0, 1, 1], "probabilities": np.tile([0.3, 0.7], (3, 1)), "class_names": ["A", "B"]}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate.compute_metrics(
            arguments.pop("y_true"), arguments.pop("probabilities"), arguments.pop("class_names"),
            n_bootstrap=10, **arguments,
        )
