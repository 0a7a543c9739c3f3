"""The numbers of the occlusion check (:mod:`covid_tf.workflows.occlusion`): ROC-AUCs with bootstrap CIs of every
variant, the verdict with its named thresholds, and the per-image table (``occlusion.csv``).

The ROC-AUC is the positive class's against the rest (for two classes, the usual one), from
:mod:`covid_tf.evaluation.bootstrap`: the point value is the weighted Mann-Whitney AUC with unit weights
(sklearn's), the 95% CI the percentile interval over stratified (or patient-cluster) resamples, the same
resamples for every variant so that their differences are paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.bootstrap import bootstrap_weights, percentile_interval, weighted_auc

LUNGS_FILLED_MAX_AUC = 0.65  # "decides from the lungs": lungs filled (blur) at most this ROC-AUC ...
OUTSIDE_FILLED_TOLERANCE = 0.05  # ... and outside filled at least the original's minus this, for every fill
SHORTCUT_AUC = 0.80  # "shortcuts outside the lungs": lungs filled still at least this ROC-AUC, for every fill
DECIDES_FROM_LUNGS = "decides from the lungs"
SHORTCUTS = "shortcuts outside the lungs"
MIXED = "uses the lungs and what lies around them"
NO_VERDICT = "no verdict"


def auc_results(y_true: np.ndarray, positive_scores: np.ndarray, positive_index: int,
                keys: Sequence[tuple[str, str | None]], *, groups=None, n_bootstrap: int = 1000,
                seed: int = config.SEED) -> list[dict]:
    """One row ``variant, fill, auc, ci95, n`` per column of ``positive_scores`` ``(N, V)``: the positive class's
    ROC-AUC against the rest, with percentile 95% CIs on the same (stratified or patient) resamples for all."""
    y_true = np.asarray(y_true, np.int64)
    is_positive = y_true == positive_index
    weights = bootstrap_weights(y_true, groups=groups, n_bootstrap=n_bootstrap, seed=seed) if n_bootstrap else None
    rows = []
    for column, (variant, fill) in enumerate(keys):
        scores = positive_scores[:, column]
        auc = float(weighted_auc(np.ones((1, y_true.size)), is_positive, scores)[0])
        ci95 = percentile_interval(weighted_auc(weights, is_positive, scores)) if weights is not None else [None, None]
        rows.append({"variant": variant, "fill": fill, "auc": auc if np.isfinite(auc) else None, "ci95": ci95,
                     "n": int(y_true.size)})
    return rows


def nested_results(rows: Sequence[dict]) -> dict:
    """``{"original": {auc, ci95, n}, "lungs_filled": {fill: {...}}, "outside_filled": {fill: {...}}}``."""
    results: dict = {"original": {}, "lungs_filled": {}, "outside_filled": {}}
    for row in rows:
        values = {key: row[key] for key in ("auc", "ci95", "n")}
        if row["fill"] is None:
            results[row["variant"]] = values
        else:
            results[row["variant"]][row["fill"]] = values
    return results


def _aucs(values: dict) -> str:
    return ", ".join(f"{fill} {entry['auc']:.3f}" for fill, entry in values.items())


def verdict(results: dict, positive: str) -> tuple[str, str]:
    """``(label, line)``: the one verdict (:data:`DECIDES_FROM_LUNGS`, :data:`SHORTCUTS`, :data:`MIXED` or
    :data:`NO_VERDICT`) and the line that says it with its numbers and thresholds.

    From the lungs: lungs filled with ``blur`` (else the highest fill) at most :data:`LUNGS_FILLED_MAX_AUC`,
    and outside filled within :data:`OUTSIDE_FILLED_TOLERANCE` of the original (or above) for every fill.
    Shortcuts: lungs filled at least :data:`SHORTCUT_AUC` for every fill. Otherwise: both.
    """
    original = results["original"]["auc"]
    lungs, outside = results["lungs_filled"], results["outside_filled"]
    if original is None or any(entry["auc"] is None for entry in [*lungs.values(), *outside.values()]):
        return NO_VERDICT, f"verdict: {NO_VERDICT} (ROC-AUC of {positive} undefined: one class among the images?)"
    key = "blur" if "blur" in lungs else max(lungs, key=lambda fill: lungs[fill]["auc"])
    from_lungs = (lungs[key]["auc"] <= LUNGS_FILLED_MAX_AUC
                  and all(entry["auc"] >= original - OUTSIDE_FILLED_TOLERANCE for entry in outside.values()))
    shortcuts = all(entry["auc"] >= SHORTCUT_AUC for entry in lungs.values())
    label = DECIDES_FROM_LUNGS if from_lungs else SHORTCUTS if shortcuts else MIXED
    numbers = (f"ROC-AUC of {positive}: original {original:.3f}, lungs filled {_aucs(lungs)}, "
               f"outside filled {_aucs(outside)}")
    rules = (f"from the lungs if lungs filled ({key}) <= {LUNGS_FILLED_MAX_AUC:.2f} and outside filled >= "
             f"original - {OUTSIDE_FILLED_TOLERANCE:.2f} for every fill; shortcuts if lungs filled >= "
             f"{SHORTCUT_AUC:.2f} for every fill")
    return label, f"verdict: {label} ({numbers}; {rules})"


def per_image_table(rows: pd.DataFrame, masks: pd.DataFrame, included: np.ndarray, positive_scores: np.ndarray,
                    keys: Sequence[tuple[str, str | None]], positive: str) -> pd.DataFrame:
    """``occlusion.csv``: path, label, lung_mask_source, included, reason, ``p_<positive>`` of the original and
    each variant's shift of it (``shift_<variant>_<fill>``: filled minus original); empty for left-out images."""
    table = pd.DataFrame({"path": rows["path"].astype(str).to_numpy(), "label": rows["label"].astype(str).to_numpy(),
                          "lung_mask_source": masks["lung_mask_source"].to_numpy(), "included": included,
                          "reason": np.where(included, "", masks["reason"].astype(str).to_numpy())})
    column = np.full(len(table), np.nan)
    column[included] = positive_scores[:, 0]
    table[f"p_{positive}"] = column
    for index, (variant, fill) in enumerate(keys[1:], start=1):
        shift = np.full(len(table), np.nan)
        shift[included] = positive_scores[:, index] - positive_scores[:, 0]
        table[f"shift_{variant}_{fill}"] = shift
    return table


def left_out_note(table: pd.DataFrame) -> str:
    """One line on the images left out for want of plausible lungs, with examples ('' when none)."""
    left = table[~table["included"]]
    if left.empty:
        return ""
    examples = "; ".join(f"{row['path']}: {row['reason']}" for row in left.head(3).to_dict("records"))
    return (f"{len(left)} of {len(table)} image(s) without plausible lungs left out of every variant "
            f"(occlusion.csv, included=False), e.g. {examples}")


def check_classes(y_all: np.ndarray, included: np.ndarray, masks: pd.DataFrame, names: Sequence[str],
                  positive_index: int, data: str | Path) -> None:
    """Refuse images (those with lungs) whose positive-class ROC-AUC is undefined: none at all, one class only, or
    no positive."""
    if not included.any():
        first = masks.iloc[0]
        raise CovidTfError(f"{data}: none of the {len(masks)} image(s) has plausible lungs (e.g. {first['path']}: "
                           f"{first['reason']}); nothing to occlude")
    y_true, n_left_out = y_all[included], int((~included).sum())
    present = sorted({names[i] for i in np.unique(y_true)})
    after = f" after leaving out {n_left_out} image(s) without plausible lungs" if n_left_out else ""
    if len(present) < 2:
        raise CovidTfError(f"{data}: only one class ({', '.join(present)}) among the images{after}; the occlusion "
                           "check needs two or more")
    if positive_index not in y_true:
        raise CovidTfError(f"{data}: no image of the positive class {names[positive_index]}{after}; its ROC-AUC "
                           "is undefined")
