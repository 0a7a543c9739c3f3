"""The normal chest of a synthetic X-ray: one patient's base anatomy and its drawing in the canonical frame.

:func:`sample_anatomy` draws a patient's geometry (lungs, heart, spine, ribs, vessels, texture);
:func:`draw_anatomy` renders it (torso and arms, lung fields, heart, spine, ribs, clavicles, vessels,
gastric bubble, texture). Lesions, markers and the final pose and exposure are added by
:mod:`covid_tf.synthetic.xray`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

# Outline of the image-left lung (the patient's right lung), normalised coordinates (x, y),
# clockwise from the apex; the other lung is its mirror image with a lower diaphragm.
LUNG_OUTLINE = np.array(
    [
        [0.37, 0.13], [0.30, 0.15], [0.235, 0.21], [0.19, 0.32], [0.165, 0.45], [0.155, 0.58],
        [0.155, 0.70], [0.165, 0.79], [0.22, 0.755], [0.30, 0.71], [0.38, 0.705], [0.44, 0.725],
        [0.45, 0.60], [0.445, 0.45], [0.435, 0.30], [0.415, 0.18],
    ],
    dtype=np.float32,
)
# Indices of the outline points on the diaphragm (moved by inspiration and the lower left dome).
DIAPHRAGM_POINTS = np.array([6, 7, 8, 9, 10, 11])


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


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw the base anatomy of one patient.

    Patients differ at a thumbnail's scale (lung size and shape, diaphragm, chest width, ribs): with less, two
    synthetic patients looked like copies of one another to the overlap check (notebook 06).
    """
    lungs, widths = [], []
    for side in (0, 1):
        outline = LUNG_OUTLINE.copy()
        scale_x, scale_y = rng.uniform(0.86, 1.14), rng.uniform(0.88, 1.10)
        widths.append(scale_x)
        outline[:, 0] = 0.455 + (outline[:, 0] - 0.455) * scale_x
        outline[:, 1] = 0.13 + (outline[:, 1] - 0.13) * scale_y
        # Smooth changes of shape: wider or narrower at mid-height than at apex and base, a higher or lower apex.
        height = np.clip((outline[:, 1] - 0.13) / 0.7, 0.0, 1.0)
        outline[:, 0] = 0.455 + (outline[:, 0] - 0.455) * (1.0 + rng.uniform(-0.12, 0.12) * np.sin(np.pi * height))
        outline[:, 1] += rng.uniform(-0.03, 0.03) * (1.0 - height)
        outline += rng.normal(0.0, 0.006, outline.shape).astype(np.float32)
        if side == 1:
            outline[:, 0] = 1.0 - outline[:, 0]
            outline[DIAPHRAGM_POINTS, 1] += rng.uniform(0.0, 0.05)
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
        torso_half_width=float(rng.uniform(0.39, 0.47) + 0.3 * (np.mean(widths) - 1.0)),  # wider lungs, wider chest
        lungs=(lungs[0], lungs[1]),
        heart_center=(float(0.565 + rng.normal(0, 0.01)), float(0.63 + rng.normal(0, 0.012))),
        heart_axes=(float(0.16 * rng.uniform(0.9, 1.1)), float(0.115 * rng.uniform(0.9, 1.1))),
        heart_angle=float(rng.uniform(15, 32)),
        spine_half_width=float(rng.uniform(0.03, 0.04)),
        rib_start=float(rng.uniform(0.085, 0.145)),
        rib_spacing=float(rng.uniform(0.063, 0.083)),
        rib_bend=float(rng.uniform(0.025, 0.085)),
        vessels=np.asarray(segments, dtype=np.float32),
        texture=rng.standard_normal((8, 8)).astype(np.float32),
        tissue=float(rng.uniform(0.52, 0.62)),
        lung_darkness=float(rng.uniform(0.34, 0.42)),
    )


def read_only(array: np.ndarray) -> np.ndarray:
    """``array`` made read-only: what a cache hands out cannot be changed by one caller for the next."""
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates, x as a row and y as a column (broadcastable, read-only)."""
    axis = read_only(((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32))
    return axis[None, :], axis[:, None]


@functools.lru_cache(maxsize=4)
def spline_basis(samples: int) -> np.ndarray:
    """Catmull-Rom weights of ``samples`` points per segment (read-only)."""
    t = np.linspace(0.0, 1.0, samples, endpoint=False)
    return read_only(0.5 * np.stack(
        [-(t**3) + 2 * t**2 - t, 3 * t**3 - 5 * t**2 + 2, -3 * t**3 + 4 * t**2 + t, t**3 - t**2], axis=1
    ))


def closed_spline(points: np.ndarray, samples: int = 6) -> np.ndarray:
    """A closed Catmull-Rom curve through ``points`` (k, 2) -> (k * samples, 2)."""
    index = (np.arange(len(points))[:, None] + np.array([-1, 0, 1, 2])) % len(points)
    return np.einsum("mj,kjd->kmd", spline_basis(samples), points[index]).reshape(-1, 2)


def pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Normalised points -> int32 pixel coordinates with 4 fractional bits (for ``shift=4``)."""
    return np.round(np.asarray(points) * size * 16.0).astype(np.int32)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with ``sigma`` in pixels (at least 0.3)."""
    return cv2.GaussianBlur(image, (0, 0), max(sigma, 0.3))


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], bicubic upsampling of a coarse grid."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * 0.5


def _torso(anatomy: Anatomy, size: int, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The torso and arms -> (image, torso layer)."""
    s = float(size)
    w = half = anatomy.torso_half_width
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
    cv2.fillPoly(torso_layer, [pixels(np.vstack([torso_outline, mirrored]), size)], 255, cv2.LINE_AA, 4)
    arm = np.array([[0.5 - w - 0.03, 0.14], [0.5 - w - 0.005, 0.3], [0.5 - w, 0.7], [0.0, 0.75], [0.0, 0.2]])
    arm_right = arm.copy()
    arm_right[:, 0] = 1.0 - arm_right[:, 0]
    arm_layer = np.zeros((size, size), np.uint8)
    cv2.fillPoly(arm_layer, [pixels(arm, size), pixels(arm_right, size)], 255, cv2.LINE_AA, 4)
    torso = blur(torso_layer.astype(np.float32) * (1 / 255), 0.012 * s)
    arms = blur(arm_layer.astype(np.float32) * (1 / 255), 0.02 * s)
    thickness = 1.0 - 0.35 * np.clip(np.abs(xs - 0.5) / (half + 0.02), 0, 1) ** 2
    return 0.06 + torso * (anatomy.tissue * thickness - 0.06) + arms * 0.22 * (1 - torso), torso


def _lung_fields(anatomy: Anatomy, rng: np.random.Generator, size: int, inspiration: float):
    """Both lung outlines less the heart and the aortic knob -> (mask 0/1, soft lung, heart centre, heart axes)."""
    s = float(size)
    lung = np.zeros((size, size), np.uint8)
    polygons = []
    for outline in anatomy.lungs:
        outline = outline.copy()
        outline[DIAPHRAGM_POINTS, 1] += inspiration
        outline += rng.normal(0, 0.002, outline.shape).astype(np.float32)
        polygons.append(pixels(closed_spline(outline), size))
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
    lung_soft = blur(cv2.erode(lung, kernel).astype(np.float32), 0.01 * s) * lung
    return lung, lung_soft, center_px, axes_px


def _lung_darkness(anatomy: Anatomy, size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Lung darkness: less at the hila (medial), the apices and the bases (soft tissue in front)."""
    medial = np.clip(1.0 - np.abs(xs - 0.5) / 0.12, 0, 1) ** 2
    base = np.clip((ys - 0.58) / 0.2, 0, 1)
    apex = np.clip((0.22 - ys) / 0.1, 0, 1)
    texture = cv2.resize(anatomy.texture, (size, size), interpolation=cv2.INTER_CUBIC)
    return anatomy.lung_darkness * (1.0 - 0.45 * medial - 0.3 * base - 0.25 * apex + 0.06 * texture)


def _add_heart_and_spine(image: np.ndarray, anatomy: Anatomy, size: int, xs: np.ndarray, ys: np.ndarray,
                         heart_ellipse: tuple, lung_soft: np.ndarray) -> None:
    """Heart (a little denser than the mediastinum), spine with vertebrae; added to ``image`` in place."""
    center_px, axes_px = heart_ellipse
    heart_layer = np.zeros((size, size), np.uint8)
    cv2.ellipse(heart_layer, center_px, axes_px, anatomy.heart_angle, 0, 360, 255, -1, cv2.LINE_AA, 4)
    heart = blur(heart_layer.astype(np.float32) * (1 / 255), 0.02 * float(size))
    mediastinum = np.exp(-(((xs - 0.51) / 0.1) ** 2)) * np.clip((0.72 - ys) / 0.1, 0, 1)
    image += 0.05 * np.maximum(heart, mediastinum) * (1 - lung_soft)
    spine = np.clip(1.0 - np.abs(xs - 0.5) / anatomy.spine_half_width, 0, 1) ** 0.5
    vertebrae = 0.8 + 0.2 * np.cos(2 * np.pi * (ys - anatomy.rib_start) / anatomy.rib_spacing)
    image += 0.13 * spine * vertebrae * (1 - 0.6 * heart)


def _rib_layer(anatomy: Anatomy, size: int) -> np.ndarray:
    """Ribs (posterior arcs from the spine, fainter anterior arcs) and clavicles, blurred, in [0, 1]."""
    s, half = float(size), anatomy.torso_half_width
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
            arcs.append(pixels(np.stack([0.5 + sign * dx, dy], axis=1), size))
    cv2.polylines(ribs, arcs, False, 200, rib_width, cv2.LINE_AA, 4)
    anterior = []
    for index in range(5):
        y0 = anatomy.rib_start + 0.12 + index * anatomy.rib_spacing * 1.1
        dx = 0.1 + (1 - t) * (half - 0.12)
        dy = y0 + 0.13 * t - 0.05 * t**2
        for sign in (-1.0, 1.0):
            anterior.append(pixels(np.stack([0.5 + sign * dx, dy], axis=1), size))
    cv2.polylines(ribs, anterior, False, 120, max(1, rib_width - 1), cv2.LINE_AA, 4)
    clavicles = [
        pixels(np.array([[0.46, 0.155], [0.34, 0.135], [0.2, 0.12], [0.12, 0.1]]), size),
        pixels(np.array([[0.54, 0.155], [0.66, 0.135], [0.8, 0.12], [0.88, 0.1]]), size),
    ]
    cv2.polylines(ribs, clavicles, False, 255, max(1, int(round(0.03 * s))), cv2.LINE_AA, 4)
    return blur(ribs.astype(np.float32) * (1 / 255), 0.006 * s)


def _add_vessels_and_bubble(image: np.ndarray, anatomy: Anatomy, size: int, lung_soft: np.ndarray,
                            inspiration: float) -> None:
    """Vessels over the lungs; the gastric bubble under the left dome (image right); in place."""
    s = float(size)
    vessels = np.zeros((size, size), np.uint8)
    cv2.polylines(vessels, list(pixels(anatomy.vessels, size)), False, 255, 1, cv2.LINE_AA, 4)
    image += blur(vessels.astype(np.float32) * (0.09 / 255), 0.006 * s) * lung_soft
    bubble_y = float(anatomy.lungs[1][DIAPHRAGM_POINTS, 1].min()) + 0.07 + inspiration
    bubble = np.zeros((size, size), np.uint8)
    bubble_center = (int(0.64 * s * 16), int(bubble_y * s * 16))
    bubble_axes = (int(0.05 * s * 16), int(0.03 * s * 16))
    cv2.ellipse(bubble, bubble_center, bubble_axes, 0, 0, 360, 255, -1, cv2.LINE_AA, 4)
    image -= blur(bubble.astype(np.float32) * (0.12 / 255), 0.01 * s)


def draw_anatomy(
    anatomy: Anatomy, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the normal chest in the canonical frame -> (image, uint8 lung mask 0/1, soft lung 0..1)."""
    xs, ys = grid(size)
    image, torso = _torso(anatomy, size, xs)
    inspiration = rng.uniform(-0.015, 0.015)
    lung, lung_soft, center_px, axes_px = _lung_fields(anatomy, rng, size, inspiration)
    image -= lung_soft * _lung_darkness(anatomy, size, xs, ys)
    _add_heart_and_spine(image, anatomy, size, xs, ys, (center_px, axes_px), lung_soft)
    image += _rib_layer(anatomy, size) * (0.02 + 0.075 * lung_soft) * torso
    _add_vessels_and_bubble(image, anatomy, size, lung_soft, inspiration)
    # Smooth texture everywhere, a little more over the lungs.
    image += 0.025 * smooth_noise(rng, size, 6) + 0.03 * lung_soft * smooth_noise(rng, size, 16)
    return image, lung, lung_soft
