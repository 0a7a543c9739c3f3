"""Acquisition shifts of one film: the ways films differ between hospitals, as small pure functions.

Each shift takes a float32 ``(H, W, C)`` image in [0, 1], a strength and a seeded generator, and returns the
shifted image (same shape, still in [0, 1]). Strength 0 leaves the image as it is (:func:`apply_shift` returns it
untouched); larger is stronger. What a strength means is one row of :data:`SHIFTS`, the table the ``stress``
command reads (no TensorFlow here, so the parser reads it too):

- ``gamma``: exposure, every pixel to the power ``2**u``, ``u`` drawn per image uniformly in ``[-s, s]`` (films
  darker or lighter by up to ``s`` "stops" of gamma, as a test set pooled from many settings);
- ``contrast``: contrast scaled by ``2**u`` about the image's mean, ``u`` uniform in ``[-s, s]`` per image;
- ``blur``: a Gaussian blur, sigma ``s`` of the image's longer side (a softer detector or motion);
- ``noise``: Gaussian noise of standard deviation ``s`` (a lower dose);
- ``jpeg``: JPEG compression at quality ``100 * (1 - s)``;
- ``resolution``: down-sampled by ``2**s`` (area), then up-sampled back (bilinear);
- ``crop``: a share ``s`` of each side cut off (split between its two borders at random), resized back;
- ``pad``: a black border adding ``s`` of each side (split at random), shrunk back to the image's size;
- ``text``: two burned-in labels (``L``, ``AP``, ``PORTABLE``...) of height ``s`` of the image, in corners;
- ``invert``: the inverted lookup table (``1 - x``) on a share ``s`` of the images: a sanity case, not a
  hospital's habit; a model that ignores it is suspect, and it is left out of the mean drop.

Shifts that move pixels (``crop``, ``pad``) move the lung mask with the film (:func:`apply_shift`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

LABELS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT")  # burned-in text of the ``text`` shift
TEXT_MARGIN = 0.03  # of the image's side, between a label and the border


def gamma(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Every pixel to the power ``2**u``, ``u`` drawn uniformly in ``[-strength, strength]``."""
    return np.power(image, 2.0 ** rng.uniform(-strength, strength)).astype(np.float32)


def contrast(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The image's contrast about its mean scaled by ``2**u``, ``u`` uniform in ``[-strength, strength]``; clipped."""
    mean = float(image.mean())
    return np.clip(mean + (image - mean) * 2.0 ** rng.uniform(-strength, strength), 0.0, 1.0).astype(np.float32)


def blur(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian blur of sigma ``strength`` of the longer side (OpenCV, reflected borders)."""
    sigma = strength * max(image.shape[:2])
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return blurred.reshape(image.shape).astype(np.float32)


def noise(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of standard deviation ``strength``, clipped to [0, 1]."""
    return np.clip(image + rng.normal(0.0, strength, image.shape), 0.0, 1.0).astype(np.float32)


def jpeg(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The image saved as an 8-bit JPEG at quality ``100 * (1 - strength)`` (at least 1) and read back."""
    quality = max(1, int(round(100 * (1.0 - strength))))
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape} as JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return (decoded.reshape(image.shape) / 255.0).astype(np.float32)


def resize(image: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """``image`` (H, W, C) resized to ``(height, width, C)`` (OpenCV drops a single channel's axis: kept here)."""
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized.reshape(height, width, image.shape[2])


def resolution(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Down-sampled by ``2**strength`` (area average), then up-sampled back to its size (bilinear)."""
    height, width = image.shape[:2]
    factor = 2.0 ** strength
    small = resize(image, max(1, round(height / factor)), max(1, round(width / factor)), cv2.INTER_AREA)
    return resize(small, height, width, cv2.INTER_LINEAR).astype(np.float32)


def split_border(length: int, strength: float, rng: np.random.Generator) -> tuple[int, int]:
    """``strength`` of ``length`` in pixels, split at random between the two borders: ``(before, after)``."""
    total = int(round(length * strength))
    before = int(rng.integers(0, total + 1))
    return before, total - before


def crop(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A share ``strength`` of each side cut off (split at random between its borders), resized back."""
    height, width = image.shape[:2]
    top, bottom = split_border(height, min(strength, 0.9), rng)
    left, right = split_border(width, min(strength, 0.9), rng)
    cut = image[top:height - bottom, left:width - right]
    return resize(np.ascontiguousarray(cut), height, width, cv2.INTER_LINEAR).astype(np.float32)


def pad(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A black border adding ``strength`` of each side (split at random), shrunk back to the image's size."""
    height, width, channels = image.shape
    top, bottom = split_border(height, strength, rng)
    left, right = split_border(width, strength, rng)
    padded = np.zeros((height + top + bottom, width + left + right, channels), np.float32)
    padded[top:top + height, left:left + width] = image
    return resize(padded, height, width, cv2.INTER_AREA)


def text(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Two white labels of :data:`LABELS`, of height ``strength`` of the image, burned into two random corners."""
    height, width = image.shape[:2]
    canvas = np.zeros((height, width), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(strength * height, 1.0) / cv2.getTextSize("L", font, 1.0, 1)[0][1]
    thickness = max(1, int(round(scale * 2)))
    margin = int(round(TEXT_MARGIN * min(height, width)))
    for corner in rng.choice(4, size=2, replace=False):
        label = str(rng.choice(LABELS))
        (text_width, text_height), baseline = cv2.getTextSize(label, font, scale, thickness)
        x = margin if corner % 2 == 0 else max(0, width - margin - text_width)
        y = margin + text_height if corner < 2 else max(text_height, height - margin - baseline)
        cv2.putText(canvas, label, (int(x), int(y)), font, scale, 255, thickness, cv2.LINE_AA)
    alpha = (canvas.astype(np.float32) / 255.0)[..., None]
    return (image * (1.0 - alpha) + alpha).astype(np.float32)


def invert(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """The inverted lookup table ``1 - x``, on a share ``strength`` of the images (drawn per image)."""
    return (1.0 - image).astype(np.float32) if rng.random() < strength else image


@dataclass(frozen=True)
class Shift:
    """One named acquisition shift: its function, what its strength means, its default strengths."""

    name: str
    title: str
    strength: str  # what a strength s means, in words
    strengths: tuple[float, ...]  # the default strengths of the ``stress`` check
    max_strength: float  # strengths above this are refused
    function: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    moves_pixels: bool = False  # the lung mask moves with the film
    sanity: bool = False  # a sanity case: left out of the mean drop and the worst shift


SHIFTS: dict[str, Shift] = {shift.name: shift for shift in (
    Shift("gamma", "exposure (gamma)", "gamma 2**u, u in [-s, s] per image", (0.25, 0.5, 1.0), 3.0, gamma),
    Shift("contrast", "contrast", "contrast x 2**u, u in [-s, s] per image", (0.25, 0.5, 1.0), 3.0, contrast),
    Shift("blur", "blur", "Gaussian sigma s of the longer side", (0.005, 0.01, 0.02), 0.2, blur),
    Shift("noise", "noise", "Gaussian noise, standard deviation s", (0.02, 0.05, 0.1), 1.0, noise),
    Shift("jpeg", "JPEG", "quality 100 x (1 - s)", (0.5, 0.75, 0.9), 0.99, jpeg),
    Shift("resolution", "resolution", "down-sampled by 2**s, then up", (1.0, 2.0, 3.0), 8.0, resolution),
    Shift("crop", "border crop", "a share s of each side cut off", (0.05, 0.1, 0.2), 0.9, crop, moves_pixels=True),
    Shift("pad", "border pad", "a black border of s of each side", (0.05, 0.1, 0.2), 2.0, pad, moves_pixels=True),
    Shift("text", "burned-in text", "two labels of height s of the image", (0.03, 0.06, 0.1), 0.5, text),
    Shift("invert", "inverted LUT (sanity)", "a share s of the images inverted", (0.5, 1.0), 1.0, invert,
          sanity=True),
)}


def apply_shift(name: str, image: np.ndarray, mask: np.ndarray | None, strength: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image, mask)`` under the shift ``name`` at ``strength``: strength 0 returns both untouched; a shift that
    moves pixels moves the bool (H, W) ``mask`` (at the image's size) with the image, others leave it."""
    shift = SHIFTS[name]
    if strength == 0:
        return image, mask
    if not shift.moves_pixels or mask is None:
        return shift.function(image, strength, rng), mask
    stacked = np.concatenate([image, np.asarray(mask, np.float32)[..., None]], axis=-1)
    moved = shift.function(stacked, strength, rng)
    return np.ascontiguousarray(moved[..., :-1]), moved[..., -1] > 0.5


def default_plan(names: Sequence[str] | None = None) -> dict[str, tuple[float, ...]]:
    """``{name: default strengths}`` of the shifts ``names`` (all of :data:`SHIFTS` when None)."""
    return {name: SHIFTS[name].strengths for name in (names or SHIFTS)}


def parse_shifts(spec: str | Sequence[str] | Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, ...]]:
    """``{name: strengths}`` from ``"gamma,blur"`` (default strengths), ``"gamma:0.5:1,noise"`` (strengths after
    colons), a sequence of such items or a mapping; None: every shift. ``ValueError`` naming what is wrong."""
    if spec is None:
        return default_plan()
    if isinstance(spec, Mapping):
        items = [(name, tuple(strengths)) for name, strengths in spec.items()]
    else:
        parts = [part.strip() for part in (spec.split(",") if isinstance(spec, str) else spec) if part.strip()]
        items = [(part.split(":")[0].strip(), tuple(part.split(":")[1:])) for part in parts]
    if not items:
        raise ValueError(f"no shift given; choose from {', '.join(SHIFTS)}")
    plan: dict[str, tuple[float, ...]] = {}
    for name, given in items:
        if name not in SHIFTS:
            raise ValueError(f"unknown shift {name!r}; choose from {', '.join(SHIFTS)}")
        plan[name] = check_strengths(name, given) if given else SHIFTS[name].strengths
    return plan


def check_strengths(name: str, given: Sequence) -> tuple[float, ...]:
    """The strengths of shift ``name`` as floats in ``[0, max_strength]``; ``ValueError`` otherwise."""
    try:
        strengths = tuple(float(value) for value in given)
    except (TypeError, ValueError):
        raise ValueError(f"shift {name}: strengths must be numbers, got {':'.join(map(str, given))}") from None
    limit = SHIFTS[name].max_strength
    bad = [value for value in strengths if not 0.0 <= value <= limit]  # NaN fails too
    if bad:
        raise ValueError(f"shift {name}: strength {bad[0]} is outside [0, {limit}] ({SHIFTS[name].strength})")
    return tuple(dict.fromkeys(strengths))
