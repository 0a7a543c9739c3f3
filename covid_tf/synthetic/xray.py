"""Synthetic chest X-rays in the layout of the Kaggle COVID-19 Radiography Database.

The whole toolkit can run without real data: :func:`generate_dataset` writes

    OUT/<Class>/images/<Class>-0001.png    the radiograph (grayscale uint8, square)
    OUT/<Class>/masks/<Class>-0001.png     both lung fields (0/255)
    OUT/<Class>/lesions/<Class>-0001.png   the lesions (0/255; all zeros for Normal)
    OUT/metadata.csv                       path,label,patient_id,has_marker
    OUT/.covid_tf_synthetic                marks the folder as generator output

and :func:`render_case` draws one case in memory. Only numpy and OpenCV are used.

Each image is a PA film seen from the front (the patient's left is the image right): dark
background, torso and arms, two radiolucent lung fields, the heart shadow left of the patient
(right of the image centre line), spine, clavicles, posterior and anterior ribs, diaphragm domes,
a gastric bubble, vessels fanning out of the hila, smooth texture and quantum noise, then a small
shift / rotation / scale and an exposure change (brightness, contrast, gamma).

Lesions, always clipped to the lung mask:

* ``COVID``: bilateral, peripheral, lower-zone ground-glass opacities (soft hazy blobs near the
  outer lung borders of both lungs, lower half).
* ``Viral Pneumonia``: diffuse bilateral interstitial haze with reticular streaks from the hila.
* ``Lung Opacity``: one focal dense consolidation in one lung.
* ``Normal``: none.
* Any other class name: a generic pattern of 3-6 small round nodules scattered over both lungs.

Class names are matched case-insensitively, with ``_`` read as a space (``Lung_Opacity``).
``difficulty`` in [0, 1] scales the lesion contrast by ``1 - 0.85 * difficulty`` (higher = subtler);
it changes nothing else, so the same seed gives the same anatomy and lesion shapes at every
difficulty.

Shortcut (a confounder to test whether a model cheats): with ``shortcut_class`` set, a bright
burned-in marker (an "L" in a square tag, like a hospital side marker) is put in a corner of
the image, outside the lungs, on images of ``shortcut_class`` with probability
``shortcut_probability`` and on images of every other class with probability
``1 - shortcut_probability``. ``has_marker`` in the metadata says where it is.

Patients: ``patients_per_class`` patients per class (default: one image per patient); the
images of a patient share the base anatomy (torso, lungs, heart, ribs, vessels, texture) with
small per-image changes (inspiration, pose, exposure) and carry the same ``patient_id``.

Determinism: the random stream of each image is derived from ``(seed, class name, patient,
image)``, so the same seed gives byte-identical files, and a class renders the same whatever
other classes are asked for.
"""

from __future__ import annotations

import functools
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError

MARKER_FILE = ".covid_tf_synthetic"
METADATA_COLUMNS = ("path", "label", "patient_id", "has_marker")
MIN_SIZE = 32
MAX_SIZE = 2048

# Peak lesion contrast (in [0, 1] intensity units before exposure) at difficulty 0.
LESION_AMPLITUDE = {"covid": 0.55, "viral pneumonia": 0.16, "lung opacity": 0.32, "generic": 0.28}
DIFFICULTY_SLOPE = 0.85
# Default difficulty: a baseline CNN at 64 px separates COVID from Normal within a few epochs.
DEFAULT_DIFFICULTY = 0.2
# The lesion mask is where the lesion opacity reaches this fraction of its peak.
LESION_THRESHOLD = {"covid": 0.25, "viral pneumonia": 0.6, "lung opacity": 0.25, "generic": 0.25}

# Outline of the image-left lung (the patient's right lung), normalised coordinates (x, y),
# clockwise from the apex; the other lung is its mirror image with a lower diaphragm.
_LUNG_OUTLINE = np.array(
    [
        [0.37, 0.13], [0.30, 0.15], [0.235, 0.21], [0.19, 0.32], [0.165, 0.45], [0.155, 0.58],
        [0.155, 0.70], [0.165, 0.79], [0.22, 0.755], [0.30, 0.71], [0.38, 0.705], [0.44, 0.725],
        [0.45, 0.60], [0.445, 0.45], [0.435, 0.30], [0.415, 0.18],
    ],
    dtype=np.float32,
)
# Indices of the outline points on the diaphragm (moved by inspiration and the lower left dome).
_DIAPHRAGM_POINTS = np.array([6, 7, 8, 9, 10, 11])


@dataclass(frozen=True)
class Anatomy:
    """The base geometry of one patient, in normalised coordinates (shared by their images)."""

    torso_half_width: float
    lungs: tuple[np.ndarray, np.ndarray]  # (image-left, image-right) outlines, (k, 2) each
    heart_center: tuple[float, float]
    heart_axes: tuple[float, float]
    heart_angle: float
    spine_half_width: float
    rib_start: float
    rib_spacing: float
    rib_bend: float
    vessels: np.ndarray  # (n, 2, 2) segments
    texture: np.ndarray  # (8, 8) low-frequency lung texture
    tissue: float  # soft tissue density
    lung_darkness: float


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


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw the base anatomy of one patient."""
    lungs = []
    for side in (0, 1):
        outline = _LUNG_OUTLINE.copy()
        scale_x, scale_y = rng.uniform(0.93, 1.07), rng.uniform(0.94, 1.05)
        outline[:, 0] = 0.455 + (outline[:, 0] - 0.455) * scale_x
        outline[:, 1] = 0.13 + (outline[:, 1] - 0.13) * scale_y
        outline += rng.normal(0.0, 0.006, outline.shape).astype(np.float32)
        if side == 1:
            outline[:, 0] = 1.0 - outline[:, 0]
            outline[_DIAPHRAGM_POINTS, 1] += rng.uniform(0.01, 0.035)
        lungs.append(outline)
    # Vessels: short branching segments fanning out of each hilum.
    segments = []
    for hilum_x, direction in ((0.43, -1.0), (0.57, 1.0)):
        for _ in range(rng.integers(10, 15)):
            x, y = hilum_x + rng.normal(0, 0.01), 0.45 + rng.normal(0, 0.03)
            angle = rng.uniform(-1.2, 1.2)
            for _step in range(3):
                length = rng.uniform(0.035, 0.07)
                nx = x + direction * np.cos(angle) * length
                ny = y + np.sin(angle) * length
                segments.append(((x, y), (nx, ny)))
                x, y, angle = nx, ny, angle + rng.normal(0, 0.3)
    return Anatomy(
        torso_half_width=float(rng.uniform(0.40, 0.46)),
        lungs=(lungs[0], lungs[1]),
        heart_center=(float(0.565 + rng.normal(0, 0.01)), float(0.63 + rng.normal(0, 0.012))),
        heart_axes=(float(0.16 * rng.uniform(0.9, 1.1)), float(0.115 * rng.uniform(0.9, 1.1))),
        heart_angle=float(rng.uniform(15, 32)),
        spine_half_width=float(rng.uniform(0.03, 0.04)),
        rib_start=float(rng.uniform(0.10, 0.13)),
        rib_spacing=float(rng.uniform(0.068, 0.078)),
        rib_bend=float(rng.uniform(0.04, 0.07)),
        vessels=np.asarray(segments, dtype=np.float32),
        texture=rng.standard_normal((8, 8)).astype(np.float32),
        tissue=float(rng.uniform(0.52, 0.62)),
        lung_darkness=float(rng.uniform(0.34, 0.42)),
    )


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates, x as a row and y as a column (broadcastable)."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    return axis[None, :], axis[:, None]


@functools.lru_cache(maxsize=4)
def _spline_basis(samples: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, samples, endpoint=False)
    return 0.5 * np.stack(
        [-(t**3) + 2 * t**2 - t, 3 * t**3 - 5 * t**2 + 2, -3 * t**3 + 4 * t**2 + t, t**3 - t**2], axis=1
    )


def _closed_spline(points: np.ndarray, samples: int = 6) -> np.ndarray:
    """A closed Catmull-Rom curve through ``points`` (k, 2) -> (k * samples, 2)."""
    index = (np.arange(len(points))[:, None] + np.array([-1, 0, 1, 2])) % len(points)
    return np.einsum("mj,kjd->kmd", _spline_basis(samples), points[index]).reshape(-1, 2)


def _pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Normalised points -> int32 pixel coordinates with 4 fractional bits (for ``shift=4``)."""
    return np.round(np.asarray(points) * size * 16.0).astype(np.int32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), max(sigma, 0.3))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], bicubic upsampling of a coarse grid."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * 0.5


def _draw_anatomy(
    anatomy: Anatomy, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the normal chest in the canonical frame -> (image, uint8 lung mask 0/1, soft lung 0..1)."""
    s = float(size)
    xs, ys = _grid(size)
    half = anatomy.torso_half_width

    # Torso and arms.
    w = half
    torso_outline = np.array(
        [
            [0.41, -0.05], [0.40, 0.05], [0.22, 0.085], [0.5 - w - 0.02, 0.13], [0.5 - w, 0.25],
            [0.5 - w + 0.005, 0.55], [0.5 - w + 0.03, 0.85], [0.5 - w + 0.05, 1.05],
        ],
        dtype=np.float32,
    )
    mirrored = torso_outline[::-1].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    torso_layer = np.zeros((size, size), np.uint8)
    cv2.fillPoly(torso_layer, [_pixels(np.vstack([torso_outline, mirrored]), size)], 255, cv2.LINE_AA, 4)
    arm = np.array([[0.5 - w - 0.03, 0.14], [0.5 - w - 0.005, 0.3], [0.5 - w, 0.7], [0.0, 0.75], [0.0, 0.2]])
    arm_right = arm.copy()
    arm_right[:, 0] = 1.0 - arm_right[:, 0]
    arm_layer = np.zeros((size, size), np.uint8)
    cv2.fillPoly(arm_layer, [_pixels(arm, size), _pixels(arm_right, size)], 255, cv2.LINE_AA, 4)
    torso = _blur(torso_layer.astype(np.float32) * (1 / 255), 0.012 * s)
    arms = _blur(arm_layer.astype(np.float32) * (1 / 255), 0.02 * s)
    thickness = 1.0 - 0.35 * np.clip(np.abs(xs - 0.5) / (half + 0.02), 0, 1) ** 2
    image = 0.06 + torso * (anatomy.tissue * thickness - 0.06) + arms * 0.22 * (1 - torso)

    # Lungs: two outlines, less the heart and the aortic knob.
    inspiration = rng.uniform(-0.015, 0.015)
    lung = np.zeros((size, size), np.uint8)
    polygons = []
    for outline in anatomy.lungs:
        outline = outline.copy()
        outline[_DIAPHRAGM_POINTS, 1] += inspiration
        outline += rng.normal(0, 0.002, outline.shape).astype(np.float32)
        polygons.append(_pixels(_closed_spline(outline), size))
    cv2.fillPoly(lung, polygons, 1, cv2.LINE_8, 4)
    heart_center = np.array(anatomy.heart_center) + rng.normal(0, 0.004, 2)
    heart_axes = np.array(anatomy.heart_axes) * rng.uniform(0.98, 1.02)
    center_px = tuple(int(v) for v in np.round(heart_center * s * 16))
    axes_px = tuple(int(v) for v in np.round(heart_axes * s * 16))
    cv2.ellipse(lung, center_px, axes_px, anatomy.heart_angle, 0, 360, 0, -1, cv2.LINE_8, 4)
    knob = (int(round(0.555 * s * 16)), int(round(0.30 * s * 16)))
    cv2.circle(lung, knob, int(round(0.035 * s * 16)), 0, -1, cv2.LINE_8, 4)
    # Soft inside, nothing outside: lesions (clipped to the mask) then meet no dark halo.
    radius = max(1, int(round(0.012 * s)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    lung_soft = _blur(cv2.erode(lung, kernel).astype(np.float32), 0.01 * s) * lung

    # Lung darkness: less at the hila (medial), the apices and the bases (soft tissue in front).
    medial = np.clip(1.0 - np.abs(xs - 0.5) / 0.12, 0, 1) ** 2
    base = np.clip((ys - 0.58) / 0.2, 0, 1)
    apex = np.clip((0.22 - ys) / 0.1, 0, 1)
    texture = cv2.resize(anatomy.texture, (size, size), interpolation=cv2.INTER_CUBIC)
    darkness = anatomy.lung_darkness * (1.0 - 0.45 * medial - 0.3 * base - 0.25 * apex + 0.06 * texture)
    image -= lung_soft * darkness

    # Heart (a little denser than the mediastinum), spine with vertebrae.
    heart_layer = np.zeros((size, size), np.uint8)
    cv2.ellipse(heart_layer, center_px, axes_px, anatomy.heart_angle, 0, 360, 255, -1, cv2.LINE_AA, 4)
    heart = _blur(heart_layer.astype(np.float32) * (1 / 255), 0.02 * s)
    mediastinum = np.exp(-(((xs - 0.51) / 0.1) ** 2)) * np.clip((0.72 - ys) / 0.1, 0, 1)
    image += 0.05 * np.maximum(heart, mediastinum) * (1 - lung_soft)
    spine = np.clip(1.0 - np.abs(xs - 0.5) / anatomy.spine_half_width, 0, 1) ** 0.5
    vertebrae = 0.8 + 0.2 * np.cos(2 * np.pi * (ys - anatomy.rib_start) / anatomy.rib_spacing)
    image += 0.13 * spine * vertebrae * (1 - 0.6 * heart)

    # Ribs (posterior arcs from the spine, fainter anterior arcs) and clavicles.
    ribs = np.zeros((size, size), np.uint8)
    rib_width = max(1, int(round(0.022 * s)))
    t = np.linspace(0.0, 1.0, 14)
    arcs = []
    for index in range(10):
        y0 = anatomy.rib_start + index * anatomy.rib_spacing
        reach = (half + 0.01) * (0.55 + 0.45 * min(1.0, (index + 1) / 4))
        dx = 0.035 + t * (reach - 0.035)
        dy = y0 - anatomy.rib_bend * t + (0.2 + 0.01 * index) * t**2
        for sign in (-1.0, 1.0):
            arcs.append(_pixels(np.stack([0.5 + sign * dx, dy], axis=1), size))
    cv2.polylines(ribs, arcs, False, 200, rib_width, cv2.LINE_AA, 4)
    anterior = []
    for index in range(5):
        y0 = anatomy.rib_start + 0.12 + index * anatomy.rib_spacing * 1.1
        dx = 0.1 + (1 - t) * (half - 0.12)
        dy = y0 + 0.13 * t - 0.05 * t**2
        for sign in (-1.0, 1.0):
            anterior.append(_pixels(np.stack([0.5 + sign * dx, dy], axis=1), size))
    cv2.polylines(ribs, anterior, False, 120, max(1, rib_width - 1), cv2.LINE_AA, 4)
    clavicles = [
        _pixels(np.array([[0.46, 0.155], [0.34, 0.135], [0.2, 0.12], [0.12, 0.1]]), size),
        _pixels(np.array([[0.54, 0.155], [0.66, 0.135], [0.8, 0.12], [0.88, 0.1]]), size),
    ]
    cv2.polylines(ribs, clavicles, False, 255, max(1, int(round(0.03 * s))), cv2.LINE_AA, 4)
    rib_layer = _blur(ribs.astype(np.float32) * (1 / 255), 0.006 * s)
    image += rib_layer * (0.02 + 0.075 * lung_soft) * torso

    # Vessels, visible over the lungs only.
    vessels = np.zeros((size, size), np.uint8)
    cv2.polylines(vessels, list(_pixels(anatomy.vessels, size)), False, 255, 1, cv2.LINE_AA, 4)
    image += _blur(vessels.astype(np.float32) * (0.09 / 255), 0.006 * s) * lung_soft

    # Gastric bubble under the left dome (image right).
    bubble_y = float(anatomy.lungs[1][_DIAPHRAGM_POINTS, 1].min()) + 0.07 + inspiration
    bubble = np.zeros((size, size), np.uint8)
    bubble_center = (int(0.64 * s * 16), int(bubble_y * s * 16))
    bubble_axes = (int(0.05 * s * 16), int(0.03 * s * 16))
    cv2.ellipse(bubble, bubble_center, bubble_axes, 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    image -= _blur(bubble.astype(np.float32) * (0.12 / 255), 0.01 * s)

    # Smooth texture everywhere, a little more over the lungs.
    image += 0.025 * _smooth_noise(rng, size, 6) + 0.03 * lung_soft * _smooth_noise(rng, size, 16)
    return image, lung, lung_soft


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


def _lesion_field(pattern: str, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The lesion opacity in [0, 1] (peak 1), zero outside the lungs."""
    size = lung.shape[0]
    s = float(size)
    field = np.zeros((size, size), np.float32)
    sides = _lung_sides(lung)
    if pattern == "covid":
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
        field *= 0.7 + 0.6 * np.clip(_smooth_noise(rng, size, 10), -0.5, 0.5)
    elif pattern == "viral pneumonia":
        xs, ys = _grid(size)
        hilum = np.exp(-(((np.abs(xs - 0.5) - 0.1) / 0.22) ** 2) - ((ys - 0.47) / 0.3) ** 2)
        field += 0.45 + 0.35 * hilum + 0.3 * _smooth_noise(rng, size, 8)
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
                lines.append(_pixels(seg, size))
        cv2.polylines(streaks, lines, False, 255, 1, cv2.LINE_AA, 4)
        field += _blur(streaks.astype(np.float32) * (0.6 / 255), 0.005 * s)
    elif pattern == "lung opacity":
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
        field = np.clip(field * 1.6, 0, 1)
    elif pattern == "generic":
        points = np.argwhere(lung)
        distance = cv2.distanceTransform(lung, cv2.DIST_L2, 3)
        inner = points[distance[points[:, 0], points[:, 1]] > 0.02 * s]
        if len(inner):
            points = inner
        for index in rng.integers(0, len(points), rng.integers(3, 7)):
            sigma = rng.uniform(0.012, 0.022) * s
            _blob(field, points[index][1] + 0.5, points[index][0] + 0.5, sigma, sigma, 2.0)
        field = np.clip(field, 0, 1)
    field *= lung
    peak = float(field.max())
    return field / peak if peak > 0 else field


def _marker_mask(size: int, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def render_case(
    rng: np.random.Generator,
    label: str,
    size: int = config.IMAGE_SIZE,
    *,
    difficulty: float = DEFAULT_DIFFICULTY,
    marker: bool = False,
    anatomy: Anatomy | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one synthetic chest X-ray in memory.

    Returns ``(image, lung_mask, lesion_mask)``: uint8 ``(size, size)``, bool, bool, with
    ``lesion_mask`` inside ``lung_mask`` (all False for Normal). ``anatomy`` (from
    :func:`sample_anatomy`) gives a patient's shared geometry; without it one is drawn from ``rng``.
    ``marker`` burns a bright corner tag outside the lungs, drawn last so the rest of the image
    does not change. ``difficulty`` changes only the lesion contrast, never the random stream.
    """
    size = _check_size(size)
    if not 0.0 <= float(difficulty) <= 1.0:
        raise CovidTfError(f"difficulty must be in [0, 1], got {difficulty}")
    pattern = lesion_pattern(label)
    if anatomy is None:
        anatomy = sample_anatomy(rng)
    image, lung, lung_soft = _draw_anatomy(anatomy, rng, size)

    # Pose (small shift, rotation, scale) and exposure are drawn before the lesions, so a case
    # and the same case without lesions (or at another difficulty) differ only inside the lesions.
    angle = rng.uniform(-4.0, 4.0)
    scale = rng.uniform(0.95, 1.05)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.035, 0.035, 2) * size
    contrast = rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-0.05, 0.05)
    gamma = rng.uniform(0.8, 1.25)
    noise = rng.standard_normal((size, size), dtype=np.float32)

    field = np.zeros((size, size), np.float32) if pattern == "none" else _lesion_field(pattern, lung, rng)
    stacked = cv2.merge([image, lung.astype(np.float32), field, lung_soft])
    warped = cv2.warpAffine(
        stacked, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    image, lung_w, field_w, lung_soft_w = cv2.split(warped)
    lung_mask = lung_w >= 0.5
    if pattern != "none":
        lesion_mask = (field_w >= LESION_THRESHOLD[pattern]) & lung_mask
        # Opacity fills the air space: it follows the lung darkening and stops at the final lung mask.
        amplitude = LESION_AMPLITUDE[pattern] * (1.0 - DIFFICULTY_SLOPE * float(difficulty))
        image += amplitude * field_w * lung_soft_w * lung_mask
    else:
        lesion_mask = np.zeros((size, size), bool)

    image = (image - 0.5) * contrast + (0.5 + brightness) + 0.012 * noise
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, _gamma_table(round(gamma, 3)))

    if marker:
        tag = _marker_mask(size, lung_mask, rng)
        image[tag] = np.uint8(rng.integers(235, 256))
    return image, lung_mask, lesion_mask


@functools.lru_cache(maxsize=256)
def _gamma_table(gamma: float) -> np.ndarray:
    return np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise CovidTfError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return int(size)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        classes = [classes]
    names = tuple(str(name).strip() for name in classes)
    if not names:
        raise CovidTfError("give at least one class name")
    for name in names:
        if not name or name in (".", "..") or any(c in name for c in "/\\:*?\"<>|") or name.startswith("."):
            raise CovidTfError(f"class name {name!r} cannot be a folder name")
    if len({name.lower() for name in names}) != len(names):
        raise CovidTfError(f"class names repeat: {', '.join(names)}")
    return names


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV failing on a plain uint8 array
        raise CovidTfError("OpenCV could not encode a PNG")
    return buffer.tobytes()


def _prepare_output(out_dir: Path, overwrite: bool) -> set[str]:
    """Check the output folder; return the files a previous run of the generator wrote there."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    ours = (out_dir / MARKER_FILE).is_file()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not ours and not overwrite:
        raise CovidTfError(
            f"{out_dir}: folder is not empty and was not made by the synthetic generator "
            f"(no {MARKER_FILE}); choose an empty folder or pass overwrite=True / --overwrite"
        )
    previous: set[str] = set()
    metadata = out_dir / "metadata.csv"
    if (out_dir / MARKER_FILE).is_file() and metadata.is_file():
        try:
            old = pd.read_csv(metadata)
            for relative in old["path"].astype(str):
                parts = Path(relative).parts
                if len(parts) == 3 and parts[1] == "images" and not {".", ".."} & set(parts):
                    for kind in ("images", "masks", "lesions"):
                        previous.add(str(Path(parts[0], kind, parts[2])))
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            previous = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / MARKER_FILE, b"written by covid_tf.synthetic.generate_dataset\n")
    return previous


def _class_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _patient_sizes(per_class: int, patients: int) -> list[int]:
    base, extra = divmod(per_class, patients)
    return [base + (1 if index < extra else 0) for index in range(patients)]


def generate_dataset(
    out_dir: str | os.PathLike[str] = config.SYNTHETIC_DIR,
    classes: Sequence[str] = config.BINARY_CLASSES,
    per_class: int = 100,
    size: int = config.IMAGE_SIZE,
    patients_per_class: int | None = None,
    seed: int = config.SEED,
    difficulty: float = DEFAULT_DIFFICULTY,
    shortcut_class: str | None = None,
    shortcut_probability: float = 0.0,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write a synthetic Radiography-Database-style dataset and return its metadata.

    ``patients_per_class`` defaults to ``per_class`` (one image per patient); images are shared
    out among the patients as evenly as possible. A folder that is not empty and has no
    ``.covid_tf_synthetic`` file is refused unless ``overwrite=True``, and even then only the
    generator's own file names are written; nothing else is deleted. Rerunning into a folder
    made by the generator removes the images, masks and lesions listed in its old
    ``metadata.csv`` that the new run does not write again.
    """
    names = _check_classes(classes)
    size = _check_size(size)
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise CovidTfError(f"per_class must be a positive integer, got {per_class!r}")
    per_class = int(per_class)
    patients = per_class if patients_per_class is None else patients_per_class
    if isinstance(patients, bool) or int(patients) != patients or not 1 <= patients <= per_class:
        raise CovidTfError(
            f"patients_per_class must be an integer in [1, per_class={per_class}], got {patients!r}"
        )
    patients = int(patients)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise CovidTfError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise CovidTfError(f"difficulty must be in [0, 1], got {difficulty}")
    if not 0.0 <= float(shortcut_probability) <= 1.0:
        raise CovidTfError(f"shortcut_probability must be in [0, 1], got {shortcut_probability}")
    if shortcut_class is not None and shortcut_class not in names:
        raise CovidTfError(f"shortcut_class {shortcut_class!r} is not one of the classes: {', '.join(names)}")
    if shortcut_class is None and shortcut_probability > 0:
        raise CovidTfError("shortcut_probability needs a shortcut_class")

    out_dir = Path(out_dir)
    previous = _prepare_output(out_dir, overwrite)
    digits = max(4, len(str(per_class)))
    patient_digits = max(4, len(str(patients)))
    rows = []
    written: set[str] = set()
    for name in names:
        key = _class_key(name)
        for kind in ("images", "masks", "lesions"):
            (out_dir / name / kind).mkdir(parents=True, exist_ok=True)
        number = 0
        for patient_index, count in enumerate(_patient_sizes(per_class, patients)):
            patient_seed = np.random.SeedSequence(int(seed), spawn_key=(key, patient_index))
            anatomy = sample_anatomy(np.random.default_rng(patient_seed))
            patient_id = f"{name}-P{patient_index + 1:0{patient_digits}d}"
            for image_index in range(count):
                number += 1
                rng = np.random.default_rng(
                    np.random.SeedSequence(int(seed), spawn_key=(key, patient_index, image_index + 1))
                )
                draw = rng.random()  # drawn always, so the shortcut never shifts the stream
                if shortcut_class is None:
                    has_marker = False
                elif name == shortcut_class:
                    has_marker = draw < shortcut_probability
                else:
                    has_marker = draw < 1.0 - shortcut_probability
                image, lung, lesion = render_case(
                    rng, name, size, difficulty=difficulty, marker=has_marker, anatomy=anatomy
                )
                file_name = f"{name}-{number:0{digits}d}.png"
                for kind, array in (("images", image), ("masks", lung), ("lesions", lesion)):
                    data = array if array.dtype == np.uint8 else array.astype(np.uint8) * np.uint8(255)
                    _atomic_write(out_dir / name / kind / file_name, _encode_png(data))
                    written.add(str(Path(name, kind, file_name)))
                rows.append((f"{name}/images/{file_name}", name, patient_id, has_marker))
    for relative in sorted(previous - written):
        stale = out_dir / relative
        if stale.is_file():
            stale.unlink()
    metadata = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    _atomic_write(out_dir / "metadata.csv", metadata.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    return metadata


def benchmark(size: int = config.IMAGE_SIZE, count: int = 200, seed: int = config.SEED) -> float:
    """Images per second of :func:`render_case` (in memory, COVID and Normal alternating)."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for index in range(count):
        render_case(rng, "COVID" if index % 2 else "Normal", size)
    return count / (time.perf_counter() - start)
