"""Frame thumbnails: a film without its borders and burned-in labels, small and equalised, for the overlap check.

A republished film often has a border cut off or added (of any colour, around a border of its own) and a text
label burned in. :func:`frame_thumbnail` is what a stored fingerprint is made of: the image shrunk to at most
``WORKING_SIZE`` pixels, its flat borders trimmed (:func:`film_region`), the rest shrunk to ``THUMBNAIL`` pixels
a side and histogram-equalised (a gamma, contrast or bit-depth change leaves it nearly as it was).
:func:`frame_thumbnails` adds the other readings of a *query*: where a lenient border rule finds another film
region (a label burned into a border), and where label strokes are found and painted out (:func:`label_mask`).
A query is matched under each (:func:`covid_tf.data.fingerprints.match_fingerprints`); the best counts.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMBNAIL = 96
WORKING_SIZE = 128  # the longest side borders and labels are looked for at
MAX_TRIM = 0.2  # of each side: a flat border (pad, the film's own border, or both) trimmed up to this
MAX_TRIM_ROUNDS = 4
BORDER_STD = 2.0 / 255.0  # strict rule: a row or column this flat is a border, not part of the film
BORDER_TOLERANCE = 3.0 / 255.0  # lenient rule: a row or column this close to the border's value ...
FLAT_SHARE = 0.7  # ... in this share of its pixels is a border
LABEL_KERNEL = 0.04  # of the longest side: strokes narrower than this, brighter than their surround ...
LABEL_CONTRAST = 60  # ... by this many grey levels (of 255) ...
LABEL_BRIGHTNESS = 200  # ... and this bright are a burned-in label
LABEL_MIN_SHARE = 0.01  # of the pixels: fewer label pixels than this are not a label


def _grayscale(gray: np.ndarray) -> np.ndarray:
    image = np.asarray(gray, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"expected a 2-D grayscale image, got shape {np.shape(gray)}")
    longest = max(image.shape)
    if longest > WORKING_SIZE:
        scale = WORKING_SIZE / longest
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.clip(image, 0.0, 1.0)


def _flat_run(lines: np.ndarray, limit: int, lenient: bool) -> int:
    """How many leading lines (rows of ``lines``) are a flat border, at most ``limit``.

    Strict: a line whose spread is at most ``BORDER_STD``. Lenient: a line of which at least ``FLAT_SHARE`` lies
    within ``BORDER_TOLERANCE`` of the outermost line's median (a label burned into a border leaves it a border,
    but a dark, nearly flat part of the film may go with it).
    """
    limit = min(limit, len(lines) - 1)
    if limit <= 0:
        return 0
    value = float(np.partition(lines[0], len(lines[0]) // 2)[len(lines[0]) // 2])  # the outermost line's median

    def flat(block: np.ndarray) -> np.ndarray:
        if lenient:
            return (np.abs(block - value) <= BORDER_TOLERANCE).mean(axis=1) >= FLAT_SHARE
        return block.std(axis=1) <= BORDER_STD

    if not flat(lines[:1])[0]:  # most films: no border on this side
        return 0
    flags = flat(lines[:limit])
    return int(limit if flags.all() else np.argmin(flags))


def film_region(image: np.ndarray, lenient: bool = False) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a 2-D image without its flat borders, at most ``MAX_TRIM`` of each side.

    Every side is trimmed in turn until nothing changes: a pad of one colour around a film with a flat border of
    its own (another colour) hides that border until the pad is gone. ``lenient``: see :func:`_flat_run`.
    """
    height, width = image.shape
    row_limit, column_limit = int(MAX_TRIM * height), int(MAX_TRIM * width)
    region = (0, height, 0, width)
    for _ in range(MAX_TRIM_ROUNDS):
        top, bottom, left, right = region
        film = image[top:bottom, left:right]
        trimmed = (top + _flat_run(film, row_limit - top, lenient),
                   bottom - _flat_run(film[::-1], row_limit - (height - bottom), lenient),
                   left + _flat_run(film.T, column_limit - left, lenient),
                   right - _flat_run(film.T[::-1], column_limit - (width - right), lenient))
        if trimmed == region:
            break
        region = trimmed
    return region


def label_mask(image: np.ndarray) -> np.ndarray:
    """uint8 mask of a burned-in label's strokes in a 2-D image in [0, 1]: thin, bright features on a darker
    surround (a white top-hat of ``LABEL_KERNEL`` of the longest side), grown by one pixel."""
    grey = (image * 255.0 + 0.5).astype(np.uint8)
    side = max(3, round(LABEL_KERNEL * max(image.shape)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    tophat = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel)
    strokes = ((tophat >= LABEL_CONTRAST) & (grey >= LABEL_BRIGHTNESS)).astype(np.uint8)
    return cv2.dilate(strokes, np.ones((3, 3), np.uint8))


def _thumbnail_of(image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = region
    small = cv2.resize(image[top:bottom, left:right], (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist((np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def frame_thumbnail(gray: np.ndarray) -> np.ndarray:
    """The ``THUMBNAIL``-pixel uint8 thumbnail of a grayscale image in [0, 1] (H, W[, 1]), flat borders trimmed
    (strictly): what a stored fingerprint is made of."""
    image = _grayscale(gray)
    return _thumbnail_of(image, film_region(image))


def frame_thumbnails(gray: np.ndarray) -> np.ndarray:
    """(K, THUMBNAIL, THUMBNAIL), K of 1 to 3: :func:`frame_thumbnail`, then the thumbnail of the region the lenient
    border rule finds where it differs (a label burned into a border), then that of the image with its label
    strokes painted out where there are any (a label burned into the film)."""
    image = _grayscale(gray)
    strict = film_region(image)
    lenient = film_region(image, lenient=True)
    thumbnails = [_thumbnail_of(image, strict)]
    if lenient != strict:
        thumbnails.append(_thumbnail_of(image, lenient))
    mask = label_mask(image)
    if mask.mean() >= LABEL_MIN_SHARE:
        grey = (image * 255.0 + 0.5).astype(np.uint8)
        painted = cv2.inpaint(grey, mask, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
        thumbnails.append(_thumbnail_of(painted, film_region(painted, lenient=True)))
    return np.stack(thumbnails)
