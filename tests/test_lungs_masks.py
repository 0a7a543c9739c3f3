"""Lung-mask post-processing and plausibility on tiny synthetic masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation import scoring


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


def _lung_pair(size: int = 100) -> np.ndarray:
    """Two lung-like ellipses side by side on a (size, size) canvas."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.ellipse(canvas, (28, 48), (14, 32), 0, 0, 360, 1, -1)
    cv2.ellipse(canvas, (72, 48), (14, 32), 0, 0, 360, 1, -1)
    return canvas.astype(bool)


def _gastric_leak() -> np.ndarray:
    """The left lung (image right) runs down a narrow tail into a bubble below the diaphragm."""
    mask = _lung_pair()
    mask[70:88, 66:71] = True
    canvas = np.zeros(mask.shape, np.uint8)
    cv2.circle(canvas, (66, 90), 6, 1, -1)
    return mask | canvas.astype(bool)


def _edge_strip() -> np.ndarray:
    """A thin strip near the image's left edge, joined to the right lung at its bottom."""
    mask = _lung_pair()
    mask[40:78, 2:5] = True
    mask[74:78, 2:28] = True
    return mask


def _cut_off() -> np.ndarray:
    """The right lung (image left) runs along the image's left edge (cut off by the image)."""
    mask = _lung_pair()
    mask[:, :45] = False
    mask[20:80, 0:30] = True
    return mask


def _ragged() -> np.ndarray:
    """The left lung's inner border is a saw (tubes and lines over it)."""
    mask = _lung_pair()
    for top in range(24, 72, 10):
        triangle = np.array([[58, top], [68, top + 5], [58, top + 10]], np.int32)
        canvas = np.zeros(mask.shape, np.uint8)
        cv2.fillPoly(canvas, [triangle], 1)
        mask &= ~canvas.astype(bool)
    return mask


def test_a_lung_shaped_pair_passes_the_shape_checks():
    summary = lung_masks.describe_mask(_lung_pair())
    assert summary.plausible and summary.reason == "" and summary.components == 2


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_gastric_leak, "the left lung (image right) reaches"),
        (_gastric_leak, "a leak into the abdomen"),
        (_edge_strip, "of the right lung (image left) is a thin strip"),
        (_cut_off, "runs along the image's side edge"),
        (_ragged, "the left lung (image right) has a ragged outline"),
    ],
)
def test_bad_lung_shapes_are_implausible_and_say_why(make, reason):
    summary = lung_masks.describe_mask(make())
    assert summary.components == 2, "each defect stays joined to its lung"
    assert not summary.plausible
    assert reason in summary.reason


def test_a_lower_lung_with_a_normal_base_is_no_leak():
    mask = _lung_pair()
    mask[:, 50:] = np.roll(mask[:, 50:], 12, axis=0)  # the left lung sits 12 % lower, its base still convex
    assert lung_masks.describe_mask(mask).plausible


@pytest.mark.parametrize("size", [60, 320])
def test_shape_checks_do_not_depend_on_the_mask_size(size):
    assert lung_masks.describe_mask(lung_masks.resize_mask(_lung_pair(), size, size)).plausible
    for make in (_gastric_leak, _edge_strip, _cut_off, _ragged):
        assert not lung_masks.describe_mask(lung_masks.resize_mask(make(), size, size)).plausible, make.__name__


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
