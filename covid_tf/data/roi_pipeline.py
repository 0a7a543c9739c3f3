"""Lung-attention inputs decoded in the ``tf.data`` graph: the image plus its lung mask, no Python per image.

``train --roi lungs-attention`` feeds the model the full image resized to the model's size, with the lung
mask (thresholded at one half, area-resized) as a last channel (:func:`covid_tf.lungs.roi.inputs.roi_image`).
Done in Python per image (PIL, OpenCV), that holds the GIL; here the common case, a PNG of 8-bit gray (or
RGB for 3 channels) at least the model's size with an 8-bit gray PNG mask of the same size (what the
segmenter cache holds), is decoded with ``tf.io.decode_png`` and resized with ``tf.image.resize(..., "area")``,
which is OpenCV's ``INTER_AREA`` up to float rounding (at most 1e-5 in [0, 1] units, tested in
``tests/test_pipeline.py``). Every other image (JPEG,
16-bit, palette, EXIF, smaller than the model, a mask of another size) goes through the Python loader,
chosen per image when the dataset is built (a look at each PNG's header).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import tensorflow as tf
from PIL import Image

PYTHON = "\0python"  # the mask-table value of an image the graph does not decode (the Python loader does)
MASK_THRESHOLD = 128  # 8-bit mask value at or above which a pixel is lung (128 / 255 >= 0.5, read_mask's rule)


def _png_header(path: str) -> tuple[str, tuple[int, int]] | None:
    """``(mode, (width, height))`` of a PNG without EXIF data, else None (not decoded in the graph)."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG" or "exif" in image.info:
                return None
            return image.mode, image.size
    except (OSError, ValueError, SyntaxError):
        return None


def graph_decodable(path: str, mask_path: str | None, image_size: int, channels: int) -> bool:
    """Whether the graph decodes ``path`` (and its mask) exactly as the Python loader does."""
    header = _png_header(path)
    if header is None:
        return False
    mode, size = header
    if not (mode == "L" or (mode == "RGB" and channels == 3)) or min(size) < image_size:
        return False
    if not mask_path:
        return True
    return _png_header(mask_path) == ("L", size)


def mask_table(masks: Mapping[str, str | None], paths: Iterable[str], image_size: int, channels: int) -> dict:
    """``path -> mask path`` ('' without a mask, :data:`PYTHON` for the Python loader) for ``paths``."""
    table = {}
    for path in paths:
        mask_path = masks.get(path)
        table[path] = (mask_path or "") if graph_decodable(path, mask_path, image_size, channels) else PYTHON
    return table


def _resized(image: tf.Tensor, size: int) -> tf.Tensor:
    """OpenCV's ``INTER_AREA`` shrink of an (H, W, C) float image (H, W >= size), clipped to [0, 1]."""
    return tf.clip_by_value(tf.image.resize(image, (size, size), method="area"), 0.0, 1.0)


def _lung_channel(mask_path: tf.Tensor, size: int) -> tf.Tensor:
    """The mask channel at the model's size: the lungs area-resized; all ones without (or with an empty) mask."""
    ones = tf.ones((size, size, 1), tf.float32)

    def from_file() -> tf.Tensor:
        lungs = tf.io.decode_png(tf.io.read_file(mask_path), channels=1) >= MASK_THRESHOLD
        return tf.cond(tf.reduce_any(lungs), lambda: _resized(tf.cast(lungs, tf.float32), size), lambda: ones)

    return tf.cond(tf.equal(mask_path, ""), lambda: ones, from_file)


def attention_decoder(table: Mapping[str, str], image_size: int, channels: int,
                      fallback: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """``path tensor -> (S, S, channels + 1)`` float32: in the graph where ``table`` says so, else ``fallback``."""
    keys = list(table)
    lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys or [""], tf.string),
                                            tf.constant([table[k] for k in keys] or [PYTHON], tf.string)),
        default_value=PYTHON)

    def in_graph(path: tf.Tensor, mask_path: tf.Tensor) -> tf.Tensor:
        image = tf.cast(tf.io.decode_png(tf.io.read_file(path), channels=channels), tf.float32) / 255.0
        image = _resized(image, image_size)
        return tf.concat([image, _lung_channel(mask_path, image_size)], axis=-1)

    def decode(path: tf.Tensor) -> tf.Tensor:
        mask_path = lookup.lookup(path)
        return tf.cond(tf.equal(mask_path, PYTHON), lambda: fallback(path), lambda: in_graph(path, mask_path))

    return decode
