"""Lung-mask post-processing and plausibility checks.

A U-Net's raw output can hold specks and holes; :func:`clean_mask` keeps the two largest connected
components (the lungs) and fills their holes. :func:`describe_mask` then measures the lung area
fraction and says whether the mask looks like a pair of lungs, with a reason when it does not: no
lungs, an area out of range, not two side-by-side components, or a lung shape that segmenters get wrong
on adults' X-rays (a leak below the diaphragm, a thin strip, a lung running along the image's side
edge, a ragged outline). The thresholds were set on 2000 adult segmenter masks and 400 dataset masks
(see covid_tf/lungs/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from covid_tf.data.images import load_image

MIN_AREA_FRACTION = 0.08
MAX_AREA_FRACTION = 0.65
MIN_SECOND_LUNG_SHARE = 0.15  # the smaller lung holds at least this share of the larger one's area
# A leak below the diaphragm: the lower lung's bottom at least LEAK_MIN_DROP of the image height below the
# other's, its lowest rows short of LEAK_MAX_OUTER of the way from its inner to its outer edge (a real
# lung's lowest point is its outer costophrenic angle), and its base (the rows from LEAK_BASE_MARGIN of
# the image height above the other lung's bottom) concave: solidity below LEAK_MAX_BASE_SOLIDITY.
LEAK_MIN_DROP = 0.08
LEAK_MAX_OUTER = 0.85
LEAK_BASE_MARGIN = 0.10
LEAK_MAX_BASE_SOLIDITY = 0.85
LOWEST_ROWS = 0.02  # the lowest rows of a lung: this share of the image height
THIN_RADIUS = 0.02  # an opening with a disc of this radius (share of the image width) ...
MAX_THIN_SHARE = 0.06  # ... removes at most this share of each lung (more: a thin strip)
MAX_EDGE_RUN = 0.20  # a lung touches the image's left or right edge along at most this share of the image height
OUTLINE_TOLERANCE = 0.005  # outlines are simplified to this share of the image side before measuring ...
MAX_OUTLINE_RATIO = 1.16  # ... and are at most this much longer than their convex hull's
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MaskSummary:
    """What a lung mask looks like: area share, components, and whether it is plausible (and why not)."""

    lung_area_fraction: float
    components: int
    plausible: bool
    reason: str


def as_plane(image: np.ndarray, merge=np.max, what: str = "mask") -> np.ndarray:
    """A float32 (H, W) array of an (H, W) or (H, W, C) one, its channels merged by ``merge`` (``np.max``,
    ``np.mean``); a ``ValueError`` naming ``what`` for any other shape."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = merge(array, axis=-1)
    if array.ndim != 2:
        raise ValueError(f"{what} must have shape (H, W) or (H, W, C), got {array.shape}")
    return array


def binarize(mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """A bool (H, W) mask from a probability map, a 0/255 image or a (H, W, C) mask file's array."""
    array = as_plane(mask)
    if array.max(initial=0.0) > 1.0:
        array = array / 255.0
    return array >= threshold


def keep_largest(mask: np.ndarray, count: int = 2, eight_connected: bool = True) -> np.ndarray:
    """Keep the ``count`` largest 8-connected (else 4-connected) components of a bool mask (ties: the first)."""
    labels, found = ndimage.label(mask, structure=np.ones((3, 3), bool) if eight_connected else None)
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


def _solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area of a bool mask (1.0 for an empty or tiny one)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 1.0
    hull = cv2.contourArea(cv2.convexHull(np.vstack(contours)))
    return min(1.0, float(mask.sum()) / max(hull, 1.0))


def _name(side: str) -> str:
    """'the right lung (image left)' for the patient's ``side``."""
    return f"the {side} lung (image {'left' if side == 'right' else 'right'})"


def _leak(lower: np.ndarray, upper: np.ndarray, side: str) -> tuple[float, float, float]:
    """How far ``lower`` reaches below ``upper`` (share of the image height), where its lowest rows lie
    (0 its inner edge, 1 its outer edge) and the solidity of its base; ``side``: the lower lung's."""
    height = lower.shape[0]
    rows, cols = np.nonzero(lower)
    bottom, upper_bottom = rows.max(), np.nonzero(upper)[0].max()
    lowest = cols[rows >= bottom - max(1, round(LOWEST_ROWS * height))].mean()
    inner, outer = (cols.max(), cols.min()) if side == "right" else (cols.min(), cols.max())
    outer_position = (lowest - inner) / (outer - inner) if outer != inner else 1.0
    base = lower.copy()
    base[: max(0, upper_bottom - round(LEAK_BASE_MARGIN * height))] = False
    return (bottom - upper_bottom) / height, float(outer_position), _solidity(base)


def _thin_share(lung: np.ndarray) -> float:
    """The share of a lung that an opening with a disc of ``THIN_RADIUS`` of the image width removes."""
    radius = max(1, round(THIN_RADIUS * lung.shape[1]))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    opened = cv2.morphologyEx(lung.astype(np.uint8), cv2.MORPH_OPEN, disc)
    return 1.0 - float(opened.sum()) / max(float(lung.sum()), 1.0)


def _edge_run(lung: np.ndarray) -> float:
    """The longest run of a lung's pixels along the image's left or right edge, as a share of the image height."""
    longest = 0
    for column in (lung[:, 0], lung[:, -1]):
        steps = np.diff(np.concatenate([[0], column.astype(np.int8), [0]]))
        runs = np.nonzero(steps == -1)[0] - np.nonzero(steps == 1)[0]
        longest = max(longest, int(runs.max(initial=0)))
    return longest / lung.shape[0]


def _outline_ratio(lung: np.ndarray) -> float:
    """A lung's outline length over its convex hull's (1.0 for a convex lung; ragged outlines score high)."""
    padded = np.pad(lung.astype(np.uint8), 1)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    simple = cv2.approxPolyDP(contour, OUTLINE_TOLERANCE * max(lung.shape), True)
    hull = cv2.arcLength(cv2.convexHull(contour), True)
    return cv2.arcLength(simple, True) / max(hull, 1.0)


def _leak_reason(lungs: dict[str, np.ndarray]) -> str:
    """Why the lower lung looks like it runs into the abdomen ('' when it does not)."""
    bottoms = {side: np.nonzero(lung)[0].max() for side, lung in lungs.items()}
    side = max(bottoms, key=bottoms.get)
    other = "left" if side == "right" else "right"
    drop, outer_position, base_solidity = _leak(lungs[side], lungs[other], side)
    if drop >= LEAK_MIN_DROP and outer_position < LEAK_MAX_OUTER and base_solidity < LEAK_MAX_BASE_SOLIDITY:
        return (f"{_name(side)} reaches {drop:.0%} of the image height below the {other} one, lowest away "
                "from its outer edge (a leak into the abdomen?)")
    return ""


def _lung_reason(side: str, lung: np.ndarray) -> str:
    """Why one lung's shape looks wrong: a thin strip, a run along the image edge, a ragged outline ('' if none)."""
    thin, edge, outline = _thin_share(lung), _edge_run(lung), _outline_ratio(lung)
    if thin > MAX_THIN_SHARE:
        return f"{thin:.0%} of {_name(side)} is a thin strip (a line or the image edge?)"
    if edge > MAX_EDGE_RUN:
        return (f"{_name(side)} runs along the image's side edge for {edge:.0%} of the image height "
                "(cut off, or a leak along the edge?)")
    if outline > MAX_OUTLINE_RATIO:
        return f"{_name(side)} has a ragged outline, {outline - 1:.0%} longer than its convex hull's (tubes, lines?)"
    return ""


def _shape_reason(labels: np.ndarray) -> str:
    """Why a two-component mask's lung shapes look wrong ('' when they look right)."""
    columns = ndimage.center_of_mass(labels > 0, labels, [1, 2])
    first_is_right = columns[0][1] <= columns[1][1]  # the patient's right lung lies on the image's left
    lungs = {"right": labels == (1 if first_is_right else 2), "left": labels == (2 if first_is_right else 1)}
    reasons = [_leak_reason(lungs)] + [_lung_reason(side, lung) for side, lung in lungs.items()]
    return next((reason for reason in reasons if reason), "")


def summarize_lungs(mask: np.ndarray, area_range: tuple[float, float],
                    pair_reason: Callable[[np.ndarray, np.ndarray], str]) -> MaskSummary:
    """The verdict every lung segmenter's masks share: lungs found, their area share within ``area_range``, two
    8-connected components, then ``pair_reason(labels, sizes)`` ('' for a plausible pair of lungs)."""
    mask = np.asarray(mask, dtype=bool)
    fraction = float(mask.mean()) if mask.size else 0.0
    labels, components = ndimage.label(mask, structure=np.ones((3, 3), bool))
    low, high = area_range
    if components == 0:
        reason = "no lungs found"
    elif not low <= fraction <= high:
        reason = f"lung area fraction {fraction:.2f} outside [{low}, {high}]"
    elif components != 2:
        reason = f"{components} lung component(s), expected 2"
    else:
        reason = pair_reason(labels, np.bincount(labels.ravel())[1:].astype(float))
    return MaskSummary(fraction, int(components), reason == "", reason)


def describe_mask(mask: np.ndarray) -> MaskSummary:
    """Area fraction, number of components and a plausibility verdict for a bool lung mask of a chest X-ray."""
    return summarize_lungs(mask, (MIN_AREA_FRACTION, MAX_AREA_FRACTION),
                           lambda labels, sizes: _pair_reason(labels, sizes) or _shape_reason(labels))


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file (any size, 0/255, 1 or 3 channels) as a bool (H, W) array."""
    return binarize(load_image(path, channels=1))
