"""Overlays, the explanation panel, heatmap segmentation and the agreement measures (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from covid_tf.explain import overlay, quality, segmentation


def left_half_heatmap(size: int = 8) -> np.ndarray:
    heatmap = np.zeros((size, size), np.float32)
    heatmap[:, : size // 2] = 1.0
    return heatmap


# Overlays.
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((16, 16), np.uint8),
        np.full((16, 16, 3), 128, np.uint8),
        np.full((16, 16), 2.0, np.float32),
        np.full((16, 16), -0.1, np.float32),
    ],
)
def test_overlay_refuses_anything_but_float_in_unit_range(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"float in \[0, 1\]"):
        overlay.overlay_heatmap(image, np.zeros((16, 16), np.float32))


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 1), (16, 16, 3)])
def test_overlay_is_rgb_with_red_for_hot_and_blue_for_cold(shape: tuple[int, ...]) -> None:
    heatmap = left_half_heatmap(16)
    result = overlay.overlay_heatmap(np.full(shape, 0.5, np.float32), heatmap, alpha=1.0)
    assert result.dtype == np.uint8 and result.shape == (16, 16, 3)
    hot, cold = result[0, 0].astype(int), result[0, -1].astype(int)
    # JET: 1.0 is dark red, 0.0 dark blue; in RGB order red is channel 0.
    assert hot[0] > 100 and hot[1] == 0 and hot[2] == 0
    assert cold[2] > 100 and cold[0] == 0 and cold[1] == 0


def test_overlay_blends_and_resizes_the_heatmap() -> None:
    image = np.zeros((32, 32), np.float32)
    image[:, 16:] = 1.0
    result = overlay.overlay_heatmap(image, np.zeros((8, 8), np.float32), alpha=0.0)
    assert result.shape == (32, 32, 3)
    assert (result[:, :16] == 0).all() and (result[:, 16:] == 255).all()
    half = overlay.overlay_heatmap(image, np.ones((8, 8), np.float32), alpha=0.5)
    # Half dark red (128, 0, 0) over black, half over white.
    np.testing.assert_array_equal(half[0, 0], [64, 0, 0])
    np.testing.assert_array_equal(half[0, -1], [192, 128, 128])
    with pytest.raises(ValueError, match="alpha"):
        overlay.overlay_heatmap(image, np.zeros((8, 8), np.float32), alpha=1.5)


def test_explanation_panel_has_four_panels(tmp_path) -> None:
    image = np.random.default_rng(0).uniform(0.0, 1.0, (32, 32, 1)).astype(np.float32)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[4:12, 4:12] = 1.0
    figure = overlay.explanation_panel(image, heatmap, threshold=0.85, title="COVID 0.93")
    assert isinstance(figure, Figure)
    image_axes = [axis for axis in figure.axes if axis.get_images()]
    assert [axis.get_title() for axis in image_axes] == [
        "image",
        "heatmap",
        "overlay",
        "region >= 0.85 (6% of image)",
    ]
    assert figure.get_suptitle() == "COVID 0.93"
    region = image_axes[3].get_images()[0].get_array()
    assert tuple(region[4, 4]) == (255, 0, 0)  # the contour is drawn in red
    figure.savefig(tmp_path / "panel.png")
    assert (tmp_path / "panel.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        overlay.explanation_panel((image * 255).astype(np.uint8), heatmap)


# Segmentation.
def test_segment_heatmap_keeps_the_region_above_threshold() -> None:
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[2:10, 4:12] = 0.9  # above 0.85
    heatmap[20:30, 20:30] = 0.8  # below
    heatmap[25, 2] = 1.0  # one hot pixel
    mask, contours = segmentation.segment_heatmap(heatmap)
    assert mask.dtype == bool and mask.sum() == 64 + 1
    assert len(contours) == 2
    assert segmentation.bounding_boxes(contours)[0] == (4, 2, 8, 8)  # largest first, (x, y, w, h)
    small_removed, kept = segmentation.segment_heatmap(heatmap, min_area=4)
    assert small_removed.sum() == 64 and len(kept) == 1
    assert not segmentation.segment_heatmap(np.zeros((8, 8), np.float32), threshold=0.0)[0].any()
    with pytest.raises(ValueError, match="threshold"):
        segmentation.threshold_heatmap(heatmap, 1.5)


def test_draw_contours_in_rgb() -> None:
    heatmap = np.zeros((16, 16), np.float32)
    heatmap[4:8, 4:8] = 1.0
    _, contours = segmentation.segment_heatmap(heatmap)
    canvas = np.zeros((16, 16, 3), np.uint8)
    drawn = segmentation.draw_contours(canvas, contours, color=(255, 0, 0))
    assert tuple(drawn[4, 4]) == (255, 0, 0) and tuple(drawn[0, 0]) == (0, 0, 0)
    assert not canvas.any()  # the input is not modified


# Agreement measures.
def test_energy_and_chance_level() -> None:
    heatmap = left_half_heatmap()
    left, top_left = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    left[:, :4] = True
    top_left[:4, :4] = True
    assert quality.energy_in_mask(heatmap, left) == 1.0
    assert quality.energy_in_mask(heatmap, ~left) == 0.0
    assert quality.energy_in_mask(heatmap, top_left) == 0.5
    assert quality.mask_area_fraction(top_left) == 0.25
    assert np.isnan(quality.energy_in_mask(np.zeros((8, 8)), left))  # no heat: the share is undefined


def test_pointing_game_with_ties() -> None:
    heatmap = np.zeros((8, 8))
    heatmap[1, 1] = 1.0
    mask = np.zeros((8, 8), bool)
    mask[:3, :3] = True
    assert quality.pointing_game(heatmap, mask) is True
    assert quality.pointing_game(heatmap, ~mask) is False
    heatmap[6, 6] = 1.0  # a tie: one maximum inside, one outside
    assert quality.pointing_game(heatmap, ~mask) is True
    assert quality.pointing_game(np.zeros((8, 8)), mask) is False


def test_iou_and_mask_resizing() -> None:
    heatmap = np.zeros((8, 8))
    heatmap[:4, :4] = 0.9
    mask = np.zeros((8, 8), bool)
    mask[:4, :] = True
    assert quality.heatmap_iou(heatmap, mask) == pytest.approx(16 / 32)
    assert quality.heatmap_iou(heatmap, mask, threshold=0.95) == 0.0
    # A 2x2 mask is resized (nearest) to the top-left quadrant of the 8x8 heatmap.
    small = np.array([[1, 0], [0, 0]], np.uint8)
    assert quality.heatmap_iou(heatmap, small) == 1.0
    assert quality.energy_in_mask(heatmap, small) == 1.0
    with pytest.raises(ValueError, match="empty"):
        quality.energy_in_mask(heatmap, np.zeros((8, 8), bool))


def test_summarize_one_dict_per_image() -> None:
    heatmaps = np.stack([left_half_heatmap(), np.zeros((8, 8), np.float32)])
    left = np.zeros((8, 8), bool)
    left[:, :4] = True
    rows = quality.summarize(heatmaps, masks=[left, np.zeros((8, 8), bool)])
    assert rows[0] == {
        "hot_area_fraction": 0.5,
        "energy_in_mask": 1.0,
        "mask_area_fraction": 0.5,
        "pointing_game": 1.0,
        "iou": 1.0,
    }
    assert rows[1]["hot_area_fraction"] == 0.0 and np.isnan(rows[1]["energy_in_mask"])
    assert quality.summarize(heatmaps) == [{"hot_area_fraction": 0.5}, {"hot_area_fraction": 0.0}]
    with pytest.raises(ValueError, match="masks"):
        quality.summarize(heatmaps, masks=[left])
