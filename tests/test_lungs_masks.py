"""Lung-mask post-processing and plausibility on tiny synthetic masks."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.lungs import masks as lung_masks
from covid_tf.lungs import scoring


def _lungs(height: int = 40, width: int = 40) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[8:32, 5:17] = True
    mask[8:32, 23:35] = True
    return mask


def test_clean_mask_keeps_two_largest_and_fills_holes():
    probability = _lungs().astype(np.float32)
    probability[20, 10] = 0.0  # a hole
    probability[1:3, 1:3] = 0.9  # a speck
    cleaned = lung_masks.clean_mask(probability)
    np.testing.assert_array_equal(cleaned, _lungs())


def test_binarize_reads_0_255_three_channel_masks():
    array = np.repeat((_lungs() * 255).astype(np.float32)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(lung_masks.binarize(array), _lungs())


def test_plausible_pair_of_lungs():
    summary = lung_masks.describe_mask(_lungs())
    assert summary.plausible and summary.reason == "" and summary.components == 2
    assert summary.lung_area_fraction == pytest.approx(_lungs().mean())


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: np.zeros_like(m), "no lungs"),
        (lambda m: np.ones_like(m), "area fraction"),
        (lambda m: m | np.pad(np.ones((40, 6), bool), ((0, 0), (17, 17)))[:, :40], "component"),
        (lambda m: _same_side(), "same side"),
        (lambda m: _stacked(), "side by side"),
    ],
)
def test_implausible_masks_say_why(edit, reason):
    summary = lung_masks.describe_mask(edit(_lungs()))
    assert not summary.plausible
    assert reason in summary.reason


def _same_side() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[5:18, 2:16] = True
    mask[22:36, 2:16] = True
    return mask


def _stacked() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[2:14, 4:18] = True
    mask[26:38, 22:36] = True
    return mask


def test_dice_iou_and_bootstrap_summary():
    truth = _lungs()
    assert scoring.dice_and_iou(truth, truth) == (1.0, 1.0)
    half = truth.copy()
    half[:, 20:] = False
    dice, iou = scoring.dice_and_iou(half, truth)
    assert dice == pytest.approx(2 / 3) and iou == pytest.approx(0.5)
    summary = scoring.summarize_scores([0.9, 0.95, 1.0, 0.85])
    assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    assert scoring.summarize_scores([])["mean"] is None
