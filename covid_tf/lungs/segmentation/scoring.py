"""Measure a lung segmenter against reference masks: Dice and IoU per image (two empty masks agree), with the
plausibility verdict, summarised per source and split with bootstrap CIs (``segment-train``, ``--evaluate``,
``--leave-one-source-out``).

Images and masks are resized to ``size x size`` (256 px: the size ``segment`` runs the U-Net at), images
contrast-stretched and the prediction post-processed as ``segment`` does
(:func:`covid_tf.lungs.segmentation.masks.clean_mask`) and judged by
:func:`covid_tf.lungs.segmentation.masks.describe_mask`. A *failure* is a film with Dice < 0.8, a *good* mask one
with Dice >= 0.9: the flag counts say how many failures the plausibility check catches and how many good masks it
flags for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from covid_tf.data.images import load_image
from covid_tf.evaluation.bootstrap import bootstrap_weights, percentile_interval
from covid_tf.lungs.segmentation import masks as lung_masks

FAILURE_DICE = 0.8
GOOD_DICE = 0.9
SCORE_COLUMNS = ("source", "split", "path", "dice", "iou", "plausible", "reason")


def dice_and_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool masks; two empty masks agree perfectly (1, 1)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    overlap = float(np.logical_and(predicted, truth).sum())
    total = float(predicted.sum() + truth.sum())
    if total == 0.0:
        return 1.0, 1.0
    return 2.0 * overlap / total, overlap / (total - overlap)


def summarize_scores(values: Sequence[float], n_bootstrap: int = 1000, seed: int = 42) -> dict:
    """Mean, median, minimum and a 95 % bootstrap interval of the mean of per-image scores."""
    scores = np.asarray(values, dtype=np.float64)
    if scores.size == 0:
        return {"n": 0, "mean": None, "median": None, "min": None, "ci95": [None, None]}
    weights = bootstrap_weights(np.zeros(scores.size, dtype=np.int64), n_bootstrap=n_bootstrap, seed=seed)
    means = weights @ scores / weights.sum(axis=1)
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        "median": float(np.median(scores)),
        "min": float(scores.min()),
        "ci95": percentile_interval(means),
    }


def load_pairs(frame: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 1), contrast-stretched to [0, 1] as ``segment`` does
    (:func:`covid_tf.lungs.segmentation.segmenter.stretch_contrast`), and {0, 1} masks resized to the same size."""
    from covid_tf.lungs.segmentation.segmenter import stretch_contrast

    images = np.stack([stretch_contrast(load_image(path, channels=1, size=size)) for path in frame["path"]])
    masks = np.stack(
        [lung_masks.binarize(load_image(path, channels=1, size=size), 0.5) for path in frame["mask_path"]]
    )
    return images.astype(np.float32), masks[..., None].astype(np.float32)


def predict_clean(model, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Post-processed bool masks of a batch of (N, H, W, 1) images."""
    from covid_tf.lungs.segmentation.segmenter import forward_pass

    forward = forward_pass(model, images.shape[1]) if images.shape[1] == images.shape[2] else model
    starts = range(0, len(images), batch_size)
    probabilities = np.concatenate([np.asarray(forward(images[i : i + batch_size])) for i in starts])
    return [lung_masks.clean_mask(p) for p in probabilities[..., 0]]


def score_images(frame: pd.DataFrame, masks: np.ndarray, predicted: list[np.ndarray]) -> pd.DataFrame:
    """One row per image: Dice, IoU, and the plausibility verdict on the predicted mask."""
    rows = []
    for (_, row), truth, mask in zip(frame.iterrows(), masks, predicted):
        dice, iou = dice_and_iou(mask, truth[..., 0] >= 0.5)
        summary = lung_masks.describe_mask(mask)
        rows.append({"source": row.get("source", ""), "split": row.get("split", ""), "path": row["path"],
                     "dice": round(dice, 5), "iou": round(iou, 5), "plausible": summary.plausible,
                     "reason": summary.reason})
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def score_arrays(model, frame: pd.DataFrame, images: np.ndarray, masks: np.ndarray,
                 batch_size: int = 16) -> tuple[pd.DataFrame, dict]:
    """Score ``model`` on loaded images and masks (the rows of ``frame``: path, source, split); also returns the
    arrays (images, masks, predicted) for figures."""
    predicted = predict_clean(model, images, batch_size)
    return score_images(frame, masks, predicted), {"images": images, "masks": masks, "predicted": predicted}


def score_frame(model, frame: pd.DataFrame, size: int, batch_size: int = 16) -> tuple[pd.DataFrame, dict]:
    """Load the rows of ``frame`` (path, mask_path, source, split) at ``size`` and score ``model`` on them."""
    return score_arrays(model, frame, *load_pairs(frame, size), batch_size)


def flag_counts(scores: pd.DataFrame) -> dict:
    """How many failures (Dice < 0.8) and good masks (Dice >= 0.9) the plausibility check flags."""
    flagged = ~scores["plausible"].astype(bool)
    failures, good = scores["dice"] < FAILURE_DICE, scores["dice"] >= GOOD_DICE
    return {"failures": int(failures.sum()), "failures_flagged": int((failures & flagged).sum()),
            "good": int(good.sum()), "good_flagged": int((good & flagged).sum())}


def summarize(scores: pd.DataFrame) -> dict:
    """Dice, IoU (mean, median, worst, 95 % CI) and flag counts of a score table."""
    return {"dice": summarize_scores(scores["dice"].tolist()),
            "iou": summarize_scores(scores["iou"].tolist()), "flags": flag_counts(scores)}


def summarize_by_source(scores: pd.DataFrame) -> dict:
    """``{source: {split: summary, ..., "all": summary}}`` for a score table."""
    result: dict = {}
    for source, rows in scores.groupby("source", sort=False):
        parts = {str(split): summarize(part) for split, part in rows.groupby("split", sort=False) if split}
        result[str(source)] = {**parts, "all": summarize(rows)}
    return result


def summary_line(name: str, summary: dict) -> str:
    """``name: Dice 0.9512 [0.94, 0.96] (median 0.96, worst 0.80), IoU ...; k of n failures flagged ...``."""
    dice, iou, flags = summary["dice"], summary["iou"], summary["flags"]
    return (f"{name}: Dice {dice['mean']:.4f} [{dice['ci95'][0]:.4f}, {dice['ci95'][1]:.4f}] (median "
            f"{dice['median']:.4f}, worst {dice['min']:.4f}), IoU {iou['mean']:.4f} (n={dice['n']}); flagged "
            f"implausible: {flags['failures_flagged']} of {flags['failures']} with Dice < {FAILURE_DICE}, "
            f"{flags['good_flagged']} of {flags['good']} with Dice >= {GOOD_DICE}")
