"""Lung regions of interest: pure NumPy/OpenCV functions on one image and its lung mask.

A *box* is ``(top, left, bottom, right)`` in pixels of the full image, bottom/right exclusive. The
``--roi`` modes that use these are described in :mod:`covid_tf.lungs.roi.modes`.
:func:`heatmap_to_full` maps a heatmap computed on a crop back onto the
full image, so lung energy is always measured against the lungs of the original image.
"""

from __future__ import annotations

import cv2
import numpy as np

from covid_tf.data.images import resize_image
from covid_tf.lungs.roi.modes import DEFAULT_MARGIN

Box = tuple[int, int, int, int]

DEFAULT_FILL = 0.0


def _as_2d(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W) or (H, W, 1), got {mask.shape}")
    return mask.astype(bool)


def lung_box(mask: np.ndarray, margin: float = DEFAULT_MARGIN) -> Box:
    """Bounding box of the lungs grown by ``margin`` x its height/width per side, clipped; full image if empty."""
    mask = _as_2d(mask)
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, height, width
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad_y, pad_x = round(margin * (bottom - top)), round(margin * (right - left))
    return (max(0, top - pad_y), max(0, left - pad_x), min(height, bottom + pad_y), min(width, right + pad_x))


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of ``image`` inside ``box``."""
    top, left, bottom, right = box
    return image[top:bottom, left:right]


def crop_and_resize(image: np.ndarray, box: Box, size: int | tuple[int, int]) -> np.ndarray:
    """Crop an (H, W, C) image to ``box`` and resize it to ``size``."""
    return resize_image(np.ascontiguousarray(crop(image, box)), size)


def change_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate (``pixels`` > 0) or erode (< 0) a mask with an elliptic kernel of that radius."""
    mask = _as_2d(mask).astype(np.uint8)
    if pixels == 0:
        return mask.astype(bool)
    radius = abs(int(pixels))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    operation = cv2.dilate if pixels > 0 else cv2.erode
    return operation(mask, kernel).astype(bool)


def apply_mask(image: np.ndarray, mask: np.ndarray, fill: float = DEFAULT_FILL) -> np.ndarray:
    """``image`` (H, W, C) with every pixel outside ``mask`` set to ``fill``."""
    keep = _as_2d(mask)[..., None]
    return np.where(keep, image, np.float32(fill)).astype(np.float32)


def heatmap_to_full(heatmap: np.ndarray, box: Box, full_shape: tuple[int, int]) -> np.ndarray:
    """Place a heatmap computed on the crop ``box`` (any size) onto the full (H, W) image; zero outside."""
    top, left, bottom, right = box
    full = np.zeros(full_shape[:2], dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape[:2] != (bottom - top, right - left):
        heatmap = cv2.resize(heatmap, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    full[top:bottom, left:right] = heatmap
    return full
