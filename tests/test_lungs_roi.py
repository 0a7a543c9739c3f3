"""Lung ROI functions on tiny arrays whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.lungs import roi


def _two_lungs(height: int = 40, width: int = 40) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[10:30, 6:16] = True
    mask[10:30, 24:34] = True
    return mask


def test_lung_box_without_and_with_margin():
    mask = _two_lungs()
    assert roi.lung_box(mask, margin=0.0) == (10, 6, 30, 34)
    # Margin 0.1 of a 20 x 28 box: 2 rows and 3 columns more per side.
    assert roi.lung_box(mask, margin=0.1) == (8, 3, 32, 37)
    # Clipped at the border, and the full image when there are no lungs.
    assert roi.lung_box(mask, margin=1.0) == (0, 0, 40, 40)
    assert roi.lung_box(np.zeros((5, 7), bool)) == (0, 0, 5, 7)


def test_heatmap_on_crop_maps_back_to_the_same_pixels():
    full = np.arange(40 * 40, dtype=np.float32).reshape(40, 40)
    box = roi.lung_box(_two_lungs(), margin=0.1)
    on_crop = roi.crop(full, box)
    mapped = roi.heatmap_to_full(on_crop, box, full.shape)
    top, left, bottom, right = box
    np.testing.assert_array_equal(mapped[top:bottom, left:right], full[top:bottom, left:right])
    outside = np.ones_like(full, bool)
    outside[top:bottom, left:right] = False
    assert not mapped[outside].any()


def test_resized_crop_heatmap_lands_on_the_right_region():
    box = (8, 4, 24, 36)  # 16 x 32 pixels
    heat_on_crop = np.zeros((64, 64), np.float32)
    heat_on_crop[:, 32:] = 1.0  # the right half of the crop
    mapped = roi.heatmap_to_full(heat_on_crop, box, (40, 40))
    assert mapped[8:24, 21:36].min() == pytest.approx(1.0)
    assert mapped[8:24, 4:19].max() == pytest.approx(0.0)
    assert mapped[:8].sum() == 0 and mapped[24:].sum() == 0


def test_crop_and_resize_keeps_the_box_content():
    image = np.zeros((40, 40, 1), np.float32)
    image[10:30, 6:34] = 1.0
    resized = roi.crop_and_resize(image, (10, 6, 30, 34), 16)
    assert resized.shape == (16, 16, 1)
    assert resized.min() == pytest.approx(1.0)


def test_masked_variants_and_mask_changes():
    image = np.full((40, 40, 1), 0.5, np.float32)
    mask = _two_lungs()
    masked = roi.apply_mask(image, mask, fill=0.0)
    assert masked[mask].min() == 0.5 and masked[~mask].max() == 0.0
    dilated, eroded = roi.change_mask(mask, 2), roi.change_mask(mask, -2)
    assert dilated.sum() > mask.sum() > eroded.sum() > 0
    assert (dilated | mask).sum() == dilated.sum() and (eroded & ~mask).sum() == 0
    soft = roi.apply_soft_mask(image, mask, floor=0.2)
    assert soft[mask].min() == pytest.approx(0.5)
    assert soft[0, 0, 0] == pytest.approx(0.1, abs=0.02)


def test_energy_in_mask_and_lung_contrast():
    mask = _two_lungs()
    heat = mask.astype(np.float32)
    assert roi.energy_in_mask(heat, mask) == pytest.approx(1.0)
    assert roi.energy_in_mask(np.ones((40, 40)), mask) == pytest.approx(mask.mean())
    assert np.isnan(roi.energy_in_mask(np.zeros((40, 40)), mask))
    image = np.where(mask, 0.4, 0.9)[..., None].astype(np.float32)
    image[mask.nonzero()[0][0], mask.nonzero()[1][0]] = 0.6
    stretched = roi.lung_contrast(image, mask)
    assert stretched.min() == 0.0 and stretched.max() == 1.0


@pytest.mark.parametrize("variant", roi.VARIANTS)
def test_every_variant_runs_and_empty_masks_fall_back(variant):
    image = np.random.default_rng(0).random((40, 40, 1)).astype(np.float32)
    derived, box = roi.apply_variant(image, _two_lungs(), variant)
    assert derived.shape[:2] == (box[2] - box[0], box[3] - box[1])
    same, full_box = roi.apply_variant(image, np.zeros((40, 40), bool), variant)
    np.testing.assert_array_equal(same, image)
    assert full_box == (0, 0, 40, 40)
    with pytest.raises(ValueError):
        roi.apply_variant(image, _two_lungs(), "nonsense")
