"""Counterfactual fills of one image region for the occlusion check (:mod:`covid_tf.workflows.occlusion`).

A fill replaces the pixels of a region (the dilated lungs, or everything outside them) with something that
carries no local detail of the image, on the full-resolution image, before the run's own ROI:

- ``mean``: the image's mean grey (per channel);
- ``blur``: a strong Gaussian blur of the image itself (sigma = :data:`BLUR_SIGMA` of the longer side,
  OpenCV); only the region's broad brightness survives, no texture, edges or markers;
- ``noise``: Gaussian noise with the image's mean and standard deviation (seeded per image).

Pure NumPy / OpenCV (no TensorFlow): ``occlusion_images`` gives every variant of one image at once, so
the image and its mask are read and dilated once however many fills are asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from covid_tf.lungs.roi import geometry

DEFAULT_FILLS = ("mean", "blur")
BLUR_SIGMA = 0.08  # of the image's longer side
# Above this sigma (pixels) the blur runs on an image shrunk so that sigma is this many of its pixels, then is
# resized back: the same smooth image (the shrink and the bilinear resize widen it by under 1 %, corrected),
# at a fraction of the cost of a kernel hundreds of pixels wide.
DIRECT_BLUR_MAX_SIGMA = 6.0


def parse_fills(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"mean,blur"`` (or a sequence) as a tuple of known fills, in the given order, without repeats."""
    names = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    names = list(dict.fromkeys(name for name in names if name))
    unknown = [name for name in names if name not in FILLS]
    if unknown or not names:
        raise ValueError(f"unknown fill(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(FILLS)}")
    return tuple(names)


def dilation_pixels(dilation: float, shape: tuple[int, ...]) -> int:
    """The dilation radius in pixels: ``dilation`` (a fraction) of the image's longer side, rounded."""
    if not 0.0 <= dilation < 1.0:
        raise ValueError(f"the dilation is a fraction of the image's longer side in [0, 1), got {dilation}")
    return int(round(dilation * max(shape[:2])))


def dilate(mask: np.ndarray, dilation: float) -> np.ndarray:
    """The bool (H, W) lung mask grown by ``dilation`` of the image's longer side (as the ROI code does)."""
    return geometry.change_mask(np.asarray(mask, bool), dilation_pixels(dilation, np.shape(mask)))


def blur_sigma(shape: tuple[int, ...]) -> float:
    """The blur fill's sigma in pixels: :data:`BLUR_SIGMA` of the longer side."""
    return BLUR_SIGMA * max(shape[:2])


def strong_blur(image: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) blurred with a Gaussian of sigma :func:`blur_sigma` (reflected borders)."""
    image = np.asarray(image, np.float32)
    height, width = image.shape[:2]
    sigma = blur_sigma(image.shape)
    factor = sigma / DIRECT_BLUR_MAX_SIGMA
    if factor <= 1.5:
        out = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    else:
        small_size = (max(1, round(width / factor)), max(1, round(height / factor)))
        small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
        # The box of the shrink (variance f^2/12) and the bilinear resize (f^2/6) add to the blur: take them off.
        small_sigma = np.sqrt(max(sigma ** 2 - factor ** 2 / 4.0, 1.0)) / factor
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=small_sigma, borderType=cv2.BORDER_REFLECT)
        out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(image.shape).astype(np.float32)


def mean_fill(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image's mean grey (per channel) everywhere."""
    return np.broadcast_to(image.mean(axis=(0, 1), dtype=np.float64).astype(np.float32), image.shape)


def blur_fill(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image under :func:`strong_blur`."""
    return strong_blur(image)


def noise_fill(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with the image's mean and standard deviation (per channel), clipped to [0, 1]."""
    mean, std = image.mean(axis=(0, 1)), image.std(axis=(0, 1))
    return np.clip(rng.normal(mean, std, size=image.shape), 0.0, 1.0).astype(np.float32)


FILL_SOURCES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "mean": mean_fill, "blur": blur_fill, "noise": noise_fill}  # the table of fills: name -> what it writes
FILLS = tuple(FILL_SOURCES)


def fill_values(image: np.ndarray, fill: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """What ``fill`` writes, for every pixel of ``image`` (H, W, C): the source a region is copied from."""
    if fill not in FILL_SOURCES:
        raise ValueError(f"unknown fill {fill!r}; choose from {', '.join(FILLS)}")
    return FILL_SOURCES[fill](np.asarray(image, np.float32), rng if rng is not None else np.random.default_rng(0))


def fill_region(image: np.ndarray, region: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``image`` (H, W, C) with the pixels of the bool (H, W) ``region`` taken from ``values``; the rest untouched."""
    return np.where(np.asarray(region, bool)[..., None], values, image).astype(np.float32)


def occlusion_images(image: np.ndarray, mask: np.ndarray, fills: Sequence[str], dilation: float,
                     rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Every full-resolution variant of one image: the original, then for each fill the image with the dilated
    lungs filled, then for each fill the image with everything outside the dilated lungs filled
    (``1 + 2 * len(fills)`` images, in the order of :func:`variant_keys`). ``mask``: bool, the image's size."""
    image = np.asarray(image, np.float32)
    grown = dilate(mask, dilation)
    sources = [fill_values(image, fill, rng) for fill in fills]
    lungs = [fill_region(image, grown, values) for values in sources]
    outside = [fill_region(image, ~grown, values) for values in sources]
    return [image, *lungs, *outside]


def variant_keys(fills: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(variant, fill)`` of each image of :func:`occlusion_images`: ``("original", None)`` first."""
    return [("original", None), *[("lungs_filled", f) for f in fills], *[("outside_filled", f) for f in fills]]
