"""Source-aware metrics: does a classifier tell the classes apart, or the hospitals the classes came from?

In most public COVID X-ray sets the classes come from different sources (COVID films from case collections,
normal films from another hospital), so a plain ROC-AUC can measure the source. The **within-source ROC-AUC**
counts only positive-negative pairs *of the same source*: the share of such pairs in which the positive image
scores higher (ties count one half), pooled over the sources. Sources with one class contribute no pair. Its
95 % interval comes from a patient-clustered bootstrap (:mod:`covid_tf.evaluation.bootstrap`: whole patients
drawn, stratified by label), the same resamples for every source. :func:`confounding` says when class and
source are tied: a source with only one class, or classes whose source mixes lie far apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from covid_tf.evaluation.bootstrap import bootstrap_weights, percentile_interval, weighted_auc
from covid_tf.evaluation.metrics import to_jsonable

# Classes whose source mixes differ by this total variation distance (0: the same mix, 1: no source shared)
# are called confounded with the source.
MIX_DISTANCE_WARNING = 0.5


def _pooled_auc(weights: np.ndarray, is_positive: np.ndarray, scores: np.ndarray, sources: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(B,) within-source AUC and (B,) number of within-source pairs of each row of ``weights``."""
    concordant = np.zeros(len(weights))
    pairs = np.zeros(len(weights))
    for source in np.unique(sources):
        members = sources == source
        if is_positive[members].all() or not is_positive[members].any():
            continue
        part = weights[:, members].astype(np.float64)
        positive = is_positive[members]
        source_pairs = part[:, positive].sum(axis=1) * part[:, ~positive].sum(axis=1)
        auc = weighted_auc(part, positive, scores[members])
        concordant += np.where(source_pairs > 0, np.nan_to_num(auc) * source_pairs, 0.0)
        pairs += source_pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / pairs, np.nan), pairs


def _checked(is_positive: Any, scores: Any, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positive = np.asarray(is_positive, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    source_array = np.asarray(sources, dtype=str)
    if not positive.shape == values.shape == source_array.shape:
        raise ValueError(f"is_positive, scores and sources differ in length: {positive.shape}, {values.shape}, "
                         f"{source_array.shape}")
    return positive, values, source_array


def within_source_auc(is_positive: Any, scores: Any, sources: Sequence[str], *, groups: Any = None,
                      n_bootstrap: int = 1000, seed: int = 42) -> dict[str, Any]:
    """The within-source ROC-AUC of ``scores`` for ``is_positive``, its 95 % CI and the number of pairs counted.

    ``groups`` (patient ids) makes the bootstrap draw whole patients. ``auc`` is None when no source holds both
    classes.
    """
    positive, values, source_array = _checked(is_positive, scores, sources)
    return _macro_within([positive], [values], source_array, positive.astype(int), groups, n_bootstrap, seed)


def _macro_within(positives: Sequence[np.ndarray], scores: Sequence[np.ndarray], sources: np.ndarray,
                  strata: np.ndarray, groups: Any, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Mean over one-vs-rest tasks of the within-source AUC; the CI from the same resamples for every task."""
    ones = np.ones((1, sources.size))
    points = [_pooled_auc(ones, positive, score, sources) for positive, score in zip(positives, scores)]
    defined = [k for k, (auc, _) in enumerate(points) if np.isfinite(auc[0])]
    result: dict[str, Any] = {"auc": None, "n_pairs": int(sum(pairs[0] for _, pairs in points)), "ci95": [None, None]}
    if not defined:
        return result
    result["auc"] = float(np.mean([points[k][0][0] for k in defined]))
    if n_bootstrap > 0:
        weights = bootstrap_weights(strata, groups=groups, n_bootstrap=n_bootstrap, seed=seed)
        resampled = np.stack([_pooled_auc(weights, positives[k], scores[k], sources)[0] for k in defined])
        with np.errstate(invalid="ignore"):
            result["ci95"] = percentile_interval(np.nanmean(resampled, axis=0) if len(defined) > 1 else resampled[0])
    return to_jsonable(result)


def per_source(is_positive: Any, scores: Any, sources: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per source: its images, positives, negatives and ROC-AUC (None with one class)."""
    positive, values, source_array = _checked(is_positive, scores, sources)
    table = {}
    for source in sorted(set(source_array)):
        members = source_array == source
        auc = weighted_auc(np.ones((1, int(members.sum()))), positive[members], values[members])[0]
        table[source] = {"n": int(members.sum()), "n_positive": int(positive[members].sum()),
                         "n_negative": int((~positive[members]).sum()), "roc_auc": auc}
    return to_jsonable(table)


def confounding(labels: Sequence[str], sources: Sequence[str]) -> list[str]:
    """One warning per way class and source are tied: sources holding one class only, far-apart source mixes."""
    label_array = np.asarray(labels, dtype=str)
    source_array = np.asarray(sources, dtype=str)
    warnings = []
    classes = sorted(set(label_array))
    single = {source: sorted(set(label_array[source_array == source])) for source in sorted(set(source_array))}
    one_class = [f"{source} ({names[0]})" for source, names in single.items() if len(names) == 1]
    if one_class and len(classes) > 1:
        warnings.append(f"{len(one_class)} of {len(single)} source(s) hold one class only: {', '.join(one_class)}; "
                        "their images enter no within-source pair")
    names = sorted(single)
    mixes = {label: np.array([np.mean(source_array[label_array == label] == s) for s in names]) for label in classes}
    for first, second in ((a, b) for i, a in enumerate(classes) for b in classes[i + 1:]):
        distance = 0.5 * float(np.abs(mixes[first] - mixes[second]).sum())
        if distance >= MIX_DISTANCE_WARNING:
            warnings.append(f"the sources of {first} and {second} differ (total variation {distance:.2f} of 1): "
                            "an ROC-AUC over all pairs can measure the source; read the within-source ROC-AUC")
    return warnings


def source_metrics(y_true: Any, probabilities: Any, class_names: Sequence[str], sources: Sequence[str], *,
                   positive_index: int | None = None, groups: Any = None, n_bootstrap: int = 1000,
                   seed: int = 42) -> dict[str, Any]:
    """``metrics.json``'s ``sources``: within-source ROC-AUC (binary: the positive class; else macro one-vs-rest),
    per-source counts and AUCs, and the confounding warnings."""
    labels = np.asarray(y_true, dtype=int)
    probs = np.asarray(probabilities, dtype=np.float64)
    source_array = np.asarray(sources, dtype=str)
    source_array = np.where(source_array == "", "(unnamed)", source_array)
    binary = len(class_names) == 2
    indices = [1 if positive_index is None else positive_index] if binary else list(range(len(class_names)))
    positives = [labels == k for k in indices]
    scores = [probs[:, k] for k in indices]
    headline = _macro_within(positives, scores, source_array, labels, groups, n_bootstrap, seed)
    per_class = None if binary else {class_names[k]: _macro_within(
        [positives[i]], [scores[i]], source_array, labels, groups, n_bootstrap, seed) for i, k in enumerate(indices)}
    return to_jsonable({
        "n_sources": int(len(set(source_array))),
        "within_source_roc_auc": headline["auc"], "within_source_ci95": headline["ci95"],
        "within_source_pairs": headline["n_pairs"], "within_source_per_class": per_class,
        "per_source": per_source(positives[0], scores[0], source_array),
        "warnings": confounding([class_names[k] for k in labels], source_array),
    })


def variant_source_metrics(sources: Sequence[str] | None, rows: Any, scores: Any, is_positive: Any,
                           keys: Sequence, *, n_bootstrap: int = 1000, seed: int = 42) -> dict[str, Any] | None:
    """The occlusion check's ``sources``: each variant's within-source ROC-AUC (``scores`` (N, V), one column per
    key, named ``variant/fill``) and the confounding warnings; None without sources."""
    if sources is None:
        return None
    patients = rows["patient_id"].astype(str).to_numpy()
    groups = patients if len(set(patients)) < len(patients) else None
    named = np.where(np.asarray(sources, dtype=str) == "", "(unnamed)", np.asarray(sources, dtype=str))
    scores = np.asarray(scores)
    names = ["/".join(filter(None, key)) if isinstance(key, tuple) else str(key) for key in keys]
    within = {name: within_source_auc(is_positive, scores[:, k], named, groups=groups, n_bootstrap=n_bootstrap,
                                      seed=seed) for k, name in enumerate(names)}
    return {"n_sources": int(len(set(named))), "within_source": within,
            "warnings": confounding(rows["label"].astype(str).tolist(), named)}
