"""Frame thumbnails: a film without its borders and burned-in labels, small and equalised, for the overlap check.

A republished film often has a border cut off or added (of any colour, around a border of its own) and a text
label burned in. :func:`frame_thumbnail` is what a stored fingerprint is made of: the image shrunk by a whole
factor to at most ``WORKING_SIZE`` pixels a side (8-bit), its flat borders trimmed (:func:`film_region`), the rest
resized to ``THUMBNAIL`` pixels a side and histogram-equalised (a gamma, contrast or bit-depth change leaves it
nearly as it was). :func:`frame_thumbnails` adds the other readings of a *query*: where a lenient border rule finds
another film region (a label burned into a border), and where label strokes are found and painted out
(:func:`label_mask`). A query is matched under each (:func:`covid_tf.data.fingerprints.match_fingerprints`); the
best counts. Every step is one OpenCV call where it can be: a decoding pass runs this in threads, and OpenCV
works without Python's global lock.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

THUMBNAIL = 48
WORKING_SIZE = 128  # the longest side borders and labels are looked for at, at most
MAX_TRIM = 0.2  # of each side: a flat border (pad, the film's own border, or both) trimmed up to this
MAX_TRIM_ROUNDS = 4
BORDER_STD = 2.0  # grey levels (of 255): strict rule, a row or column this flat is a border, not part of the film
BORDER_TOLERANCE = 3  # grey levels: lenient rule, a row or column this close to the border's value ...
FLAT_SHARE = 0.7  # ... in this share of its pixels is a border
LABEL_KERNEL = 0.04  # of the longest side: strokes narrower than this, brighter than their surround ...
LABEL_CONTRAST = 60  # ... by this many grey levels (of 255) ...
LABEL_BRIGHTNESS = 200  # ... and this bright are a burned-in label
LABEL_MIN_SHARE = 0.01  # of the pixels: fewer label pixels than this are not a label
FRAME_READINGS = ("stored", "query")  # what a decoding pass makes for the overlap check, if anything


def working_image(gray: np.ndarray) -> np.ndarray:
    """The uint8 2-D image borders and labels are looked for in: a grayscale image in [0, 1] (H, W[, C]) shrunk by a
    whole factor to a longest side of at most ``WORKING_SIZE`` (OpenCV's fast block average; the last rows and
    columns that factor does not divide go)."""
    image = np.asarray(gray, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"expected a 2-D grayscale image, got shape {np.shape(gray)}")
    factor = -(-max(image.shape) // WORKING_SIZE)
    if factor > 1 and min(image.shape) >= factor:
        height, width = image.shape[0] // factor, image.shape[1] // factor
        image = cv2.resize(image[:height * factor, :width * factor], (width, height), interpolation=cv2.INTER_AREA)
    return cv2.convertScaleAbs(np.ascontiguousarray(image), alpha=255.0)  # rounded, saturated to [0, 255]


def _flat_run(lines: np.ndarray, limit: int, lenient: bool) -> int:
    """How many leading lines (rows of uint8 ``lines``) are a flat border, at most ``limit``.

    Strict: a line whose spread is at most ``BORDER_STD``. Lenient: a line of which at least ``FLAT_SHARE`` lies
    within ``BORDER_TOLERANCE`` of the outermost line's median (a label burned into a border leaves it a border,
    but a dark, nearly flat part of the film may go with it). Most films have no border: one look at the outermost
    line says so.
    """
    limit = min(limit, len(lines) - 1)
    if limit <= 0:
        return 0
    outer = lines[0]
    if lenient:
        value = int(np.partition(outer, len(outer) // 2)[len(outer) // 2])  # the outermost line's median
        low, high = value - BORDER_TOLERANCE, value + BORDER_TOLERANCE
        if cv2.countNonZero(cv2.inRange(outer, low, high)) < FLAT_SHARE * len(outer):
            return 0
        flags = cv2.inRange(lines[:limit], low, high).mean(axis=1) >= 255.0 * FLAT_SHARE
    else:
        if cv2.meanStdDev(outer)[1][0, 0] > BORDER_STD:
            return 0
        flags = lines[:limit].std(axis=1) <= BORDER_STD
    return int(limit if flags.all() else np.argmin(flags))


def film_region(image: np.ndarray, lenient: bool = False) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a uint8 2-D image (:func:`working_image`) without its flat borders, at most
    ``MAX_TRIM`` of each side.

    Every side is trimmed in turn until nothing changes: a pad of one colour around a film with a flat border of
    its own (another colour) hides that border until the pad is gone. ``lenient``: see :func:`_flat_run`.
    """
    height, width = image.shape
    transposed = cv2.transpose(image)  # columns as contiguous rows
    row_limit, column_limit = int(MAX_TRIM * height), int(MAX_TRIM * width)
    region = (0, height, 0, width)
    for _ in range(MAX_TRIM_ROUNDS):
        top, bottom, left, right = region
        rows, columns = image[top:bottom, left:right], transposed[left:right, top:bottom]
        trimmed = (top + _flat_run(rows, row_limit - top, lenient),
                   bottom - _flat_run(rows[::-1], row_limit - (height - bottom), lenient),
                   left + _flat_run(columns, column_limit - left, lenient),
                   right - _flat_run(columns[::-1], column_limit - (width - right), lenient))
        if trimmed == region:
            break
        region = trimmed
    return region


@functools.lru_cache(maxsize=64)
def _square_kernel(side: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    kernel.flags.writeable = False
    return kernel


def label_mask(image: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask of a burned-in label's strokes in a uint8 2-D image: thin, bright features on a darker
    surround (a white top-hat of ``LABEL_KERNEL`` of the longest side), grown by one pixel."""
    side = max(3, round(LABEL_KERNEL * max(image.shape)) | 1)
    tophat = cv2.morphologyEx(image, cv2.MORPH_TOPHAT, _square_kernel(side))
    strokes = cv2.bitwise_and(cv2.threshold(tophat, LABEL_CONTRAST - 1, 1, cv2.THRESH_BINARY)[1],
                              cv2.threshold(image, LABEL_BRIGHTNESS - 1, 1, cv2.THRESH_BINARY)[1])
    return cv2.dilate(strokes, _square_kernel(3)) if cv2.countNonZero(strokes) else strokes


def _thumbnail_of(image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = region
    twice = cv2.resize(image[top:bottom, left:right], (2 * THUMBNAIL, 2 * THUMBNAIL), interpolation=cv2.INTER_LINEAR)
    return cv2.equalizeHist(cv2.resize(twice, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA))


def frame_thumbnail(gray: np.ndarray) -> np.ndarray:
    """The ``THUMBNAIL``-pixel uint8 thumbnail of a grayscale image in [0, 1] (H, W[, 1]), flat borders trimmed
    (strictly): what a stored fingerprint is made of."""
    image = working_image(gray)
    return _thumbnail_of(image, film_region(image))


def frame_thumbnails(gray: np.ndarray) -> np.ndarray:
    """(K, THUMBNAIL, THUMBNAIL), K of 1 to 3: :func:`frame_thumbnail`, then the thumbnail of the region the lenient
    border rule finds where it differs (a label burned into a border), then that of the image with its label
    strokes painted out where there are any (a label burned into the film)."""
    image = working_image(gray)
    strict = film_region(image)
    lenient = film_region(image, lenient=True)
    thumbnails = [_thumbnail_of(image, strict)]
    if lenient != strict:
        thumbnails.append(_thumbnail_of(image, lenient))
    mask = label_mask(image)
    if cv2.countNonZero(mask) >= LABEL_MIN_SHARE * mask.size:
        painted = cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA)
        thumbnails.append(_thumbnail_of(painted, film_region(painted, lenient=True)))
    return np.stack(thumbnails)


def frame_readings(gray: np.ndarray, readings: str) -> np.ndarray:
    """(K, THUMBNAIL, THUMBNAIL): ``"stored"``, the one thumbnail a training image's fingerprint is made of
    (:func:`frame_thumbnail`); ``"query"``, every reading of an image to check (:func:`frame_thumbnails`)."""
    if readings == "stored":
        return frame_thumbnail(gray)[None]
    if readings == "query":
        return frame_thumbnails(gray)
    raise ValueError(f"frame readings must be one of {', '.join(FRAME_READINGS)}, got {readings!r}")
