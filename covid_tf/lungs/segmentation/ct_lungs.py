"""Lungs on axial CT slices, classical and download-free: body outline, dark air inside it, two lungs.

The X-ray U-Net (:mod:`covid_tf.lungs.segmentation.segmenter`) finds plausible lungs on about 3 % of CT slices:
on a CT slice
the lungs are two dark regions enclosed by the bright body, not the dark fields of a radiograph. Here:

1. the threshold between air and tissue: -400 HU on Hounsfield units (DICOM), else Otsu's threshold on the
   intensities of an 8-bit slice (in the lung window air and lung lie far below fat and soft tissue);
2. the body: the convex hull of the largest bright component (the lungs lie inside it);
3. the air inside the body, without the components that touch the image border (the air around the patient,
   or a body cut off by the crop), opened a little to cut thin bridges (the trachea, a lung's narrow tip);
4. the two largest components of at least :data:`MIN_COMPONENT_SHARE` of the image, closed and with their holes
   filled, so vessels and small lesions inside a lung belong to it.

Dense consolidation touching the chest wall (CAP) is as bright as the wall and stays outside the mask: a
classical segmenter misses it (docs/CT.md). :func:`describe_ct_mask` says whether a mask is a plausible pair of
lungs, with a reason when not, like :func:`covid_tf.lungs.segmentation.masks.describe_mask` does for X-rays.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from covid_tf.lungs.segmentation.masks import MaskSummary, as_plane, keep_largest, summarize_lungs

AIR_HU = -400.0  # air and lung below, tissue above (GGO of -500 to -300 HU straddles it; holes are filled)
CROPPED_BODY_SHARE = 0.85  # a body hull over this share of the image: the slice is cropped inside the body
MIN_COMPONENT_SHARE = 0.01  # of the image: smaller dark components (bowel gas, the trachea) are not lungs
OPENING_RADIUS = 0.01  # of the image side: cuts thin bridges between the lungs and the trachea
CLOSING_RADIUS = 0.03  # of the image side: vessels and lesions at the lung's edge join it
# Plausibility (describe_ct_mask)
MIN_AREA_FRACTION = 0.02
MAX_AREA_FRACTION = 0.60
MIN_SECOND_LUNG_SHARE = 0.10  # the smaller lung holds at least this share of the larger one's area
MIN_SEPARATION = 0.10  # the lungs' centres lie at least this share of the image width apart
MIN_VERTICAL_OVERLAP = 0.30  # the lungs' row ranges overlap by this share of the shorter one (side by side)
# A CT slice in a lung or soft-tissue window is two-toned (air and lung against tissue), an X-ray's shades are graded:
# Otsu's separability (between-class over total variance) was 0.81-0.95 (5th-95th percentile) on UCSD CT slices,
# 0.97-0.98 on synthetic ones, 0.65-0.78 on real and synthetic X-rays (covid_tf's dev sets; docs/CT.md).
MIN_CT_SEPARABILITY = 0.80


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _bright(image: np.ndarray, hu: bool) -> np.ndarray:
    """Tissue (above the air threshold): -400 HU, or Otsu's threshold of an 8-bit or [0, 1] slice."""
    if hu:
        return image > AIR_HU
    scale = 1.0 if image.max(initial=0.0) > 1.0 else 255.0
    levels = np.clip(image * scale, 0, 255).astype(np.uint8)
    _, bright = cv2.threshold(levels, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return bright.astype(bool)


def _closed(mask: np.ndarray, radius: int) -> np.ndarray:
    """A binary closing that treats the outside of the image as background (padded, so the border does not erode)."""
    padded = np.pad(mask, radius + 1).astype(np.uint8)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, _disc(radius))
    return closed[radius + 1 : -radius - 1, radius + 1 : -radius - 1].astype(bool)


def _hull(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of a bool mask (the body: a lung that reaches the skin still lies inside it)."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    hull = np.zeros(mask.shape, np.uint8)
    if points is not None:
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull.astype(bool)


def _off_border(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its 8-connected components that touch the image border."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask & ~np.isin(labels, border)


def segment_ct_slice(image: np.ndarray, hu: bool = False) -> np.ndarray:
    """A bool (H, W) lung mask of one axial CT slice: Hounsfield units (``hu``) or intensities (8-bit or [0, 1])."""
    array = as_plane(image, np.mean, "a CT slice")
    side = min(array.shape)
    bright = _bright(array, hu)
    body = _hull(keep_largest(bright, 1, eight_connected=False))
    air = body & ~bright
    if body.mean() < CROPPED_BODY_SHARE:  # the air around the patient is in the image: drop what touches the border
        air = _off_border(air)
    else:  # a crop inside the body (figures in papers): lungs may run into the border; keep them
        body = np.ones_like(body)
    opening = max(1, round(OPENING_RADIUS * side))
    air = cv2.morphologyEx(air.astype(np.uint8), cv2.MORPH_OPEN, _disc(opening)).astype(bool)
    labels, found = ndimage.label(air)
    if not found:
        return np.zeros(array.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[:2]
    kept = [index + 1 for index in order if sizes[index] >= MIN_COMPONENT_SHARE * array.size]
    lungs = np.zeros(array.shape, bool)
    closing = max(1, round(CLOSING_RADIUS * side))
    for label in kept:  # each lung closed on its own, so the two do not merge across the mediastinum
        lungs |= ndimage.binary_fill_holes(_closed(labels == label, closing)) & body
    return lungs


def separability(image: np.ndarray) -> float:
    """Otsu's separability of an image's intensities: between-class variance over total variance, in [0, 1]."""
    array = as_plane(image, np.mean, "an image")
    values = np.clip(array * (1.0 if array.max(initial=0.0) > 1.0 else 255.0), 0, 255).astype(np.uint8)
    threshold, _ = cv2.threshold(values, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    flat = values.ravel().astype(np.float64)
    dark, bright = flat[flat <= threshold], flat[flat > threshold]
    if not dark.size or not bright.size or flat.var() == 0:
        return 0.0
    share = dark.size / flat.size
    return float(share * (1 - share) * (dark.mean() - bright.mean()) ** 2 / flat.var())


def looks_like_ct(image: np.ndarray) -> bool:
    """Whether an 8-bit image is two-toned like a windowed CT slice (:data:`MIN_CT_SEPARABILITY`), not an X-ray."""
    return separability(image) >= MIN_CT_SEPARABILITY


def segment_ct_slices(images, hu: bool = False) -> list[np.ndarray]:
    """:func:`segment_ct_slice` of each image."""
    return [segment_ct_slice(image, hu=hu) for image in images]


def _pair_reason(labels: np.ndarray, sizes: np.ndarray, width: int) -> str:
    """Why two components are not a left and a right lung side by side ('' when they are)."""
    if sizes.min() < MIN_SECOND_LUNG_SHARE * sizes.max():
        return f"one lung is {sizes.min() / sizes.max():.0%} of the other's area (under {MIN_SECOND_LUNG_SHARE:.0%})"
    boxes = ndimage.find_objects(labels)
    columns = [(box[1].start + box[1].stop) / 2 for box in boxes]
    if abs(columns[0] - columns[1]) < MIN_SEPARATION * width:
        return "the two components are not side by side (one above the other?)"
    rows = [(box[0].start, box[0].stop) for box in boxes]
    overlap = min(rows[0][1], rows[1][1]) - max(rows[0][0], rows[1][0])
    if overlap < MIN_VERTICAL_OVERLAP * min(stop - start for start, stop in rows):
        return "the two components do not lie at the same height"
    return ""


def describe_ct_mask(mask: np.ndarray) -> MaskSummary:
    """Area fraction, components and a plausibility verdict (with its reason) for a CT slice's lung mask."""
    width = np.shape(mask)[1] if np.ndim(mask) >= 2 else 0
    return summarize_lungs(mask, (MIN_AREA_FRACTION, MAX_AREA_FRACTION),
                           lambda labels, sizes: _pair_reason(labels, sizes, width))
