"""Lung regions of interest: pure NumPy/OpenCV functions on one image and its lung mask.

A *box* is ``(top, left, bottom, right)`` in pixels of the full image, bottom/right exclusive.
Variants (see :data:`VARIANTS`): ``crop`` (lung box with a margin, resized), ``masked`` (outside
the lungs set to a constant), ``masked-dilated`` (the same with a dilated mask, so the lungs'
outline and some context stay), ``soft`` (outside the lungs dimmed, not erased, via a blurred
mask), ``lung-contrast`` (intensities stretched to the lungs' own percentiles), and ``crop-soft``
(crop, then soft mask). :func:`heatmap_to_full` maps a heatmap computed on a crop back onto the
full image, so lung energy is always measured against the lungs of the original image.
"""

from __future__ import annotations

import cv2
import numpy as np

from covid_tf.data.images import resize_image

Box = tuple[int, int, int, int]
VARIANTS = ("none", "crop", "masked", "masked-dilated", "soft", "lung-contrast", "crop-soft")
DEFAULT_MARGIN = 0.10
DEFAULT_DILATION = 0.06  # of the image side
DEFAULT_SOFT_FLOOR = 0.35
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


def soft_weights(mask: np.ndarray, floor: float = DEFAULT_SOFT_FLOOR, blur: float = 0.04) -> np.ndarray:
    """(H, W) weights: 1 in the lungs, ``floor`` far outside, a smooth ramp of ~``blur`` x side between."""
    mask = _as_2d(mask).astype(np.float32)
    sigma = max(1.0, blur * max(mask.shape))
    smooth = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma)
    smooth = np.maximum(smooth / max(float(smooth.max()), 1e-6), mask)
    return (floor + (1.0 - floor) * smooth).astype(np.float32)


def apply_soft_mask(image: np.ndarray, mask: np.ndarray, floor: float = DEFAULT_SOFT_FLOOR) -> np.ndarray:
    """Dim what lies outside the lungs (multiply by :func:`soft_weights`) instead of erasing it."""
    return (image * soft_weights(mask, floor)[..., None]).astype(np.float32)


def lung_contrast(image: np.ndarray, mask: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Stretch intensities so that the lungs' ``low``..``high`` percentiles span [0, 1] (clipped)."""
    inside = image[_as_2d(mask)]
    if inside.size < 16:
        return image.astype(np.float32)
    lo, hi = np.percentile(inside, [low, high])
    return np.clip((image - lo) / max(hi - lo, 1e-3), 0.0, 1.0).astype(np.float32)


def heatmap_to_full(heatmap: np.ndarray, box: Box, full_shape: tuple[int, int]) -> np.ndarray:
    """Place a heatmap computed on the crop ``box`` (any size) onto the full (H, W) image; zero outside."""
    top, left, bottom, right = box
    full = np.zeros(full_shape[:2], dtype=np.float32)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape[:2] != (bottom - top, right - left):
        heatmap = cv2.resize(heatmap, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    full[top:bottom, left:right] = heatmap
    return full


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of a non-negative heatmap's total inside ``mask`` (NaN for an all-zero heatmap)."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    mask = _as_2d(mask)
    if heatmap.shape != mask.shape:
        heatmap = cv2.resize(heatmap, mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
    total = heatmap.sum()
    return float(heatmap[mask].sum() / total) if total > 0 else float("nan")


def apply_variant(
    image: np.ndarray, mask: np.ndarray, variant: str, margin: float = DEFAULT_MARGIN
) -> tuple[np.ndarray, Box]:
    """The derived image of one ROI variant at the image's own size (crops keep the box's size) and its box."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ROI variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    mask = _as_2d(mask)
    height, width = mask.shape
    full_box: Box = (0, 0, height, width)
    if not mask.any() or variant == "none":
        return image.astype(np.float32), full_box
    if variant in ("crop", "crop-soft"):
        box = lung_box(mask, margin)
        cropped = np.ascontiguousarray(crop(image, box))
        if variant == "crop-soft":
            cropped = apply_soft_mask(cropped, crop(mask, box))
        return cropped.astype(np.float32), box
    if variant == "masked":
        return apply_mask(image, mask), full_box
    if variant == "masked-dilated":
        return apply_mask(image, change_mask(mask, round(DEFAULT_DILATION * max(height, width)))), full_box
    if variant == "soft":
        return apply_soft_mask(image, mask), full_box
    return lung_contrast(image, mask), full_box
