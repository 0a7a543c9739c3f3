"""Regions from heatmaps: threshold, connected outlines (``cv2.findContours``) and drawing.

Seed 000 segments the abnormal region by thresholding the CAM at 0.85 of its range, which
:func:`segment_heatmap` does by default.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_THRESHOLD = 0.85


def as_heatmap(heatmap: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``heatmap`` as an (H, W) array of ``dtype``; ``ValueError`` for any other shape."""
    heatmap = np.asarray(heatmap, dtype=dtype)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must have shape (H, W), got {heatmap.shape}")
    return heatmap


def threshold_heatmap(heatmap: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Return the bool mask ``heatmap >= threshold`` (H, W); an all-zero heatmap gives an empty mask."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    heatmap = as_heatmap(heatmap)
    mask = heatmap >= threshold
    if threshold == 0.0 or heatmap.max() <= 0.0:
        # ">= 0" would select the whole image even where there is no heat.
        mask &= heatmap > 0.0
    return mask


def segment_heatmap(
    heatmap: np.ndarray, threshold: float = DEFAULT_THRESHOLD, min_area: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Threshold a heatmap and outline its regions.

    Returns ``(mask, contours)``: mask bool (H, W) and the outer contours of its connected regions,
    each an int32 array (P, 1, 2) of (x, y) points as ``cv2.findContours`` gives them, largest first.
    Regions smaller than ``min_area`` pixels are dropped from both.
    """
    mask = threshold_heatmap(heatmap, threshold)
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(found, key=cv2.contourArea, reverse=True)
    if min_area > 0:
        kept = [contour for contour in contours if _region_area(mask.shape, contour) >= min_area]
        if len(kept) != len(contours):
            mask = np.zeros_like(mask)
            if kept:
                filled = cv2.drawContours(np.zeros(mask.shape, np.uint8), kept, -1, 1, thickness=cv2.FILLED)
                mask = (filled > 0) & threshold_heatmap(heatmap, threshold)
        contours = kept
    return mask, list(contours)


def _region_area(shape: tuple[int, int], contour: np.ndarray) -> int:
    """Pixels inside one contour (including its outline)."""
    filled = cv2.drawContours(np.zeros(shape, np.uint8), [contour], -1, 1, thickness=cv2.FILLED)
    return int(filled.sum())


def bounding_boxes(contours: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """Return ``(x, y, width, height)`` of each contour."""
    return [tuple(int(value) for value in cv2.boundingRect(contour)) for contour in contours]


def draw_contours(
    image_rgb: np.ndarray,
    contours: list[np.ndarray],
    color: tuple[int, int, int] = (255, 0, 0),
    thickness: int = 1,
) -> np.ndarray:
    """Draw contours on a copy of a uint8 RGB image (H, W, 3); ``color`` is RGB."""
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[-1] != 3:
        raise ValueError(f"image_rgb must be uint8 (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
    canvas = np.ascontiguousarray(image_rgb.copy())
    return cv2.drawContours(canvas, list(contours), -1, tuple(int(value) for value in color), thickness)
