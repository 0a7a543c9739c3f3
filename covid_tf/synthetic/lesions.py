"""Lesions and markers of the synthetic X-rays: the lesion pattern of a class, its opacity field, the side marker.

Lesions, always clipped to the lung mask: ``COVID`` bilateral, peripheral, lower-zone ground-glass
opacities; ``Viral Pneumonia`` diffuse interstitial haze with streaks from the hila; ``Lung Opacity`` one
focal dense consolidation; ``Normal`` none; any other class 3-6 small round nodules (see
:mod:`covid_tf.synthetic.xray`).
"""

from __future__ import annotations

import cv2
import numpy as np

from covid_tf.synthetic.anatomy import blur, grid, pixels, smooth_noise

# Peak lesion contrast (in [0, 1] intensity units before exposure) at difficulty 0.
LESION_AMPLITUDE = {"covid": 0.55, "viral pneumonia": 0.16, "lung opacity": 0.32, "generic": 0.28}
DIFFICULTY_SLOPE = 0.85
# The lesion mask is where the lesion opacity reaches this fraction of its peak.
LESION_THRESHOLD = {"covid": 0.25, "viral pneumonia": 0.6, "lung opacity": 0.25, "generic": 0.25}


def _normalise_label(label: str) -> str:
    return " ".join(label.replace("_", " ").split()).lower()


def lesion_pattern(label: str) -> str:
    """The lesion pattern of a class: none, covid, viral pneumonia, lung opacity or generic."""
    name = _normalise_label(label)
    if name == "normal":
        return "none"
    if name in ("covid", "covid-19", "covid19"):
        return "covid"
    if name in ("viral pneumonia", "lung opacity"):
        return name
    return "generic"


def _blob(field: np.ndarray, cx: float, cy: float, sx: float, sy: float, weight: float = 1.0) -> None:
    """Add an axis-aligned Gaussian (pixel units) to ``field`` in place, on a 3-sigma window."""
    size = field.shape[0]
    x0, x1 = max(0, int(cx - 3 * sx)), min(size, int(cx + 3 * sx) + 2)
    y0, y1 = max(0, int(cy - 3 * sy)), min(size, int(cy + 3 * sy) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    gx = np.exp(-0.5 * ((np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / sx) ** 2)
    gy = np.exp(-0.5 * ((np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / sy) ** 2)
    field[y0:y1, x0:x1] += weight * gy[:, None] * gx[None, :]


def _lung_sides(lung: np.ndarray) -> list[np.ndarray]:
    """Pixel coordinates (y, x) of each lung: image-left half and image-right half."""
    half = lung.shape[1] // 2
    sides = []
    for part, offset in ((lung[:, :half], 0), (lung[:, half:], half)):
        ys, xs = np.nonzero(part)
        sides.append(np.stack([ys, xs + offset], axis=1))
    return sides


def _covid_field(field: np.ndarray, sides: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Bilateral, peripheral, lower-zone ground-glass blobs."""
    size = field.shape[0]
    s = float(size)
    for side, points in enumerate(sides):
        if len(points) == 0:
            continue
        top, bottom = points[:, 0].min(), points[:, 0].max()
        for _ in range(rng.integers(2, 4)):
            row = int(rng.uniform(top + 0.5 * (bottom - top), top + 0.9 * (bottom - top)))
            columns = points[points[:, 0] == row, 1]
            if len(columns) == 0:
                continue
            inward = rng.uniform(0.04, 0.07) * s
            cx = columns.min() + inward if side == 0 else columns.max() - inward
            _blob(field, cx, row, rng.uniform(0.04, 0.065) * s, rng.uniform(0.045, 0.08) * s)
    field *= 0.7 + 0.6 * np.clip(smooth_noise(rng, size, 10), -0.5, 0.5)
    return field


def _viral_field(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Diffuse bilateral interstitial haze with reticular streaks from the hila."""
    size = field.shape[0]
    xs, ys = grid(size)
    hilum = np.exp(-(((np.abs(xs - 0.5) - 0.1) / 0.22) ** 2) - ((ys - 0.47) / 0.3) ** 2)
    field += 0.45 + 0.35 * hilum + 0.3 * smooth_noise(rng, size, 8)
    streaks = np.zeros((size, size), np.uint8)
    lines = []
    for hilum_x, direction in ((0.42, -1.0), (0.58, 1.0)):
        count = rng.integers(25, 40)
        angle = rng.uniform(-1.4, 1.4, count)
        start = rng.uniform(0.0, 0.12, count)
        length = rng.uniform(0.05, 0.15, count)
        x0 = hilum_x + direction * np.cos(angle) * start
        y0 = 0.47 + np.sin(angle) * start
        x1 = x0 + direction * np.cos(angle) * length
        y1 = y0 + np.sin(angle) * length
        for seg in np.stack([np.stack([x0, y0], 1), np.stack([x1, y1], 1)], axis=1):
            lines.append(pixels(seg, size))
    cv2.polylines(streaks, lines, False, 255, 1, cv2.LINE_AA, 4)
    field += blur(streaks.astype(np.float32) * (0.6 / 255), 0.005 * float(size))
    return field


def _opacity_field(field: np.ndarray, sides: list[np.ndarray], lung: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """One focal dense consolidation in one lung."""
    s = float(field.shape[0])
    points = sides[int(rng.integers(0, 2))]
    if len(points) == 0:
        points = np.argwhere(lung)
    distance = cv2.distanceTransform(lung, cv2.DIST_L2, 3)
    inner = points[distance[points[:, 0], points[:, 1]] > 0.05 * s]
    if len(inner):
        points = inner
    cy, cx = points[rng.integers(0, len(points))]
    for _ in range(rng.integers(3, 6)):
        _blob(field, cx + rng.normal(0, 0.03 * s), cy + rng.normal(0, 0.03 * s),
              rng.uniform(0.03, 0.055) * s, rng.uniform(0.03, 0.055) * s)
    return np.clip(field * 1.6, 0, 1)


def _generic_field(field: np.ndarray, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """3-6 small round nodules scattered over both lungs."""
    s = float(field.shape[0])
    points = np.argwhere(lung)
    distance = cv2.distanceTransform(lung, cv2.DIST_L2, 3)
    inner = points[distance[points[:, 0], points[:, 1]] > 0.02 * s]
    if len(inner):
        points = inner
    for index in rng.integers(0, len(points), rng.integers(3, 7)):
        sigma = rng.uniform(0.012, 0.022) * s
        _blob(field, points[index][1] + 0.5, points[index][0] + 0.5, sigma, sigma, 2.0)
    return np.clip(field, 0, 1)


def lesion_field(pattern: str, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The lesion opacity in [0, 1] (peak 1), zero outside the lungs."""
    size = lung.shape[0]
    field = np.zeros((size, size), np.float32)
    sides = _lung_sides(lung)
    if pattern == "covid":
        field = _covid_field(field, sides, rng)
    elif pattern == "viral pneumonia":
        field = _viral_field(field, rng)
    elif pattern == "lung opacity":
        field = _opacity_field(field, sides, lung, rng)
    elif pattern == "generic":
        field = _generic_field(field, lung, rng)
    field *= lung
    peak = float(field.max())
    return field / peak if peak > 0 else field


def marker_mask(size: int, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square tag with an "L" in a random corner, outside the (dilated) lungs."""
    tag = max(6, int(round(0.11 * size)))
    margin = max(1, int(round(0.03 * size)))
    corners = rng.permutation(4)
    keep_out = cv2.dilate(lung.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    best = None
    for corner in corners:
        x0 = margin if corner % 2 == 0 else size - margin - tag
        y0 = margin if corner < 2 else size - margin - tag
        mask = np.zeros((size, size), np.uint8)
        cv2.rectangle(mask, (x0, y0), (x0 + tag - 1, y0 + tag - 1), 255, max(1, tag // 10))
        line = max(1, tag // 7)
        left, top, right, bottom = x0 + tag // 3, y0 + tag // 4, x0 + 3 * tag // 4, y0 + 3 * tag // 4
        cv2.line(mask, (left, top), (left, bottom), 255, line)
        cv2.line(mask, (left, bottom), (right, bottom), 255, line)
        marker = mask > 0
        overlap = int(np.count_nonzero(marker & keep_out))
        if overlap == 0:
            return marker
        if best is None or overlap < best[0]:
            best = (overlap, marker)
    return best[1] & ~keep_out
