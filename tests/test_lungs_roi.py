"""Lung ROI functions on tiny arrays whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.lungs.roi import geometry


def _two_lungs(height: int = 40, width: int = 40) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[10:30, 6:16] = True
    mask[10:30, 24:34] = True
    return mask


def test_lung_box_without_and_with_margin():
    mask = _two_lungs()
    assert geometry.lung_box(mask, margin=0.0) == (10, 6, 30, 34)
    # Margin 0.1 of a 20 x 28 box: 2 rows and 3 columns more per side.
    assert geometry.lung_box(mask, margin=0.1) == (8, 3, 32, 37)
    # Clipped at the border, and the full image when there are no lungs.
    assert geometry.lung_box(mask, margin=1.0) == (0, 0, 40, 40)
    assert geometry.lung_box(np.zeros((5, 7), bool)) == (0, 0, 5, 7)


def test_heatmap_on_crop_maps_back_to_the_same_pixels():
    full = np.arange(40 * 40, dtype=np.float32).reshape(40, 40)
    box = geometry.lung_box(_two_lungs(), margin=0.1)
    on_crop = geometry.crop(full, box)
    mapped = geometry.heatmap_to_full(on_crop, box, full.shape)
    top, left, bottom, right = box
    np.testing.assert_array_equal(mapped[top:bottom, left:right], full[top:bottom, left:right])
    outside = np.ones_like(full, bool)
    outside[top:bottom, left:right] = False
    assert not mapped[outside].any()


def test_resized_crop_heatmap_lands_on_the_right_region():
    box = (8, 4, 24, 36)  # 16 x 32 pixels
    heat_on_crop = np.zeros((64, 64), np.float32)
    heat_on_crop[:, 32:] = 1.0  # the right half of the crop
    mapped = geometry.heatmap_to_full(heat_on_crop, box, (40, 40))
    assert mapped[8:24, 21:36].min() == pytest.approx(1.0)
    assert mapped[8:24, 4:19].max() == pytest.approx(0.0)
    assert mapped[:8].sum() == 0 and mapped[24:].sum() == 0


def test_crop_and_resize_keeps_the_box_content():
    image = np.zeros((40, 40, 1), np.float32)
    image[10:30, 6:34] = 1.0
    resized = geometry.crop_and_resize(image, (10, 6, 30, 34), 16)
    assert resized.shape == (16, 16, 1)
    assert resized.min() == pytest.approx(1.0)


def test_masked_variants_and_mask_changes():
    image = np.full((40, 40, 1), 0.5, np.float32)
    mask = _two_lungs()
    masked = geometry.apply_mask(image, mask, fill=0.0)
    assert masked[mask].min() == 0.5 and masked[~mask].max() == 0.0
    dilated, eroded = geometry.change_mask(mask, 2), geometry.change_mask(mask, -2)
    assert dilated.sum() > mask.sum() > eroded.sum() > 0
    assert (dilated | mask).sum() == dilated.sum() and (eroded & ~mask).sum() == 0


def test_energy_in_mask_on_a_full_resolution_lung_mask():
    """The one energy measure (explain.quality): a heatmap smaller than the mask is enlarged to it."""
    from covid_tf.explain.quality import energy_in_mask

    mask = _two_lungs()
    heat = mask.astype(np.float32)
    assert energy_in_mask(heat, mask) == pytest.approx(1.0)
    assert energy_in_mask(np.ones((40, 40)), mask) == pytest.approx(mask.mean())
    assert energy_in_mask(np.ones((10, 10)), mask) == pytest.approx(mask.mean(), abs=1e-6)
    assert np.isnan(energy_in_mask(np.zeros((40, 40)), mask))
