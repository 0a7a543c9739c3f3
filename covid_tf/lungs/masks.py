"""Lung-mask post-processing and plausibility checks.

A U-Net's raw output can hold specks and holes; :func:`clean_mask` keeps the two largest connected
components (the lungs) and fills their holes. :func:`describe_mask` then measures the lung area
fraction and says whether the mask looks like a pair of lungs, with a reason when it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

MIN_AREA_FRACTION = 0.08
MAX_AREA_FRACTION = 0.65
MIN_SECOND_LUNG_SHARE = 0.15  # the smaller lung holds at least this share of the larger one's area
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MaskSummary:
    """What a lung mask looks like: area share, components, and whether it is plausible (and why not)."""

    lung_area_fraction: float
    components: int
    plausible: bool
    reason: str


def binarize(mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """A bool (H, W) mask from a probability map, a 0/255 image or a (H, W, C) mask file's array."""
    array = np.asarray(mask, dtype=np.float32)
    if array.ndim == 3:
        array = array.max(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"mask must have shape (H, W) or (H, W, C), got {array.shape}")
    if array.max(initial=0.0) > 1.0:
        array = array / 255.0
    return array >= threshold


def keep_largest(mask: np.ndarray, count: int = 2) -> np.ndarray:
    """Keep the ``count`` largest 8-connected components of a bool mask."""
    labels, found = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if found <= count:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.argsort(-sizes, kind="stable")[:count] + 1
    return np.isin(labels, kept)


def clean_mask(probability: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Threshold, keep the two largest components and fill their holes: a bool (H, W) lung mask."""
    mask = keep_largest(binarize(probability, threshold), 2)
    return ndimage.binary_fill_holes(mask)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a bool or [0, 1] mask to (height, width) and threshold it at one half."""
    array = np.asarray(mask, dtype=np.float32)
    if array.shape[:2] == (height, width):
        return array >= 0.5
    resized = cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized >= 0.5


def _pair_reason(labels: np.ndarray, sizes: np.ndarray) -> str:
    """Why two components do not look like a left and a right lung ('' when they do)."""
    if sizes.min() < MIN_SECOND_LUNG_SHARE * sizes.max():
        return f"one lung is less than {MIN_SECOND_LUNG_SHARE:.0%} of the other"
    centres = ndimage.center_of_mass(labels > 0, labels, [1, 2])
    (row_a, col_a), (row_b, col_b) = centres
    middle = labels.shape[1] / 2.0
    if (col_a - middle) * (col_b - middle) > 0:
        return "both components lie on the same side of the image"
    if abs(row_a - row_b) > 0.25 * labels.shape[0]:
        return "the two components are not side by side"
    return ""


def describe_mask(mask: np.ndarray) -> MaskSummary:
    """Area fraction, number of components and a plausibility verdict for a bool lung mask."""
    mask = np.asarray(mask, dtype=bool)
    fraction = float(mask.mean()) if mask.size else 0.0
    labels, components = ndimage.label(mask, structure=np.ones((3, 3), bool))
    reason = ""
    if components == 0:
        reason = "no lungs found"
    elif not MIN_AREA_FRACTION <= fraction <= MAX_AREA_FRACTION:
        reason = f"lung area fraction {fraction:.2f} outside [{MIN_AREA_FRACTION}, {MAX_AREA_FRACTION}]"
    elif components != 2:
        reason = f"{components} lung component(s), expected 2"
    else:
        reason = _pair_reason(labels, np.bincount(labels.ravel())[1:].astype(float))
    return MaskSummary(fraction, int(components), reason == "", reason)
