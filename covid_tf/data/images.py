"""Reading any supported image file into one tensor convention.

Every image loads as float32 in [0, 1] with shape ``(H, W, C)``, ``C`` = 1 or 3, whatever the
file holds: grayscale, RGB, RGBA (composited on black), palette, CMYK, 16-bit PNG or JPEG with an
EXIF orientation (applied). A file that cannot be read raises ``ImageReadError`` naming the reason.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from covid_tf.data.film_frame import frame_readings
from covid_tf.errors import ImageReadError

# Luminance weights of ITU-R BT.601, as PIL's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ImageInfo:
    """What a scan learns about one image file."""

    width: int
    height: int
    mode: str


def _open_checked(path: Path) -> Image.Image:
    """Open and fully decode an image, translating every failure into ``ImageReadError``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot stat file ({error.strerror or error})") from None
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageReadError(path, "permission denied")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"image too large to decode safely ({error})") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"truncated or corrupt image ({error})") from None
    return image


def _to_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image to float32 (H, W, 1 or 3) in [0, 1]."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "PA":
        image = image.convert("RGBA")
    mode = image.mode
    array = np.asarray(image)
    if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
        values = array.astype(np.float32) / 65535.0
    elif mode in ("I", "F"):
        values = array.astype(np.float32)
        high = values.max(initial=0.0)
        values = values / 255.0 if high <= 255 else values / high
    else:
        values = array.astype(np.float32) / 255.0
    if values.ndim == 2:
        values = values[..., None]
    if values.shape[-1] in (2, 4):  # LA / RGBA: composite on black
        values = values[..., :-1] * values[..., -1:]
    return np.clip(values, 0.0, 1.0)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return ``image`` (H, W, 1 or 3) with ``channels`` channels (1: luminance, 3: repeated gray)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return (image @ _LUMA)[..., None].astype(np.float32)
    return np.repeat(image, 3, axis=-1)


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (H, W, C) to ``size`` (an int for square, or (height, width)) with area or linear filtering."""
    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0] or width < image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    # Interpolation can overshoot [0, 1] by a rounding error; keep the convention exact.
    return np.clip(resized.reshape(height, width, image.shape[-1]), 0.0, 1.0)


def load_image(path: str | Path, channels: int = 1, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Load an image file as float32 (H, W, channels) in [0, 1], optionally resized."""
    image = to_channels(_to_array(_open_checked(Path(path))), channels)
    return resize_image(image, size) if size is not None else image


def scan_image(path: str | Path, frames: str | None = None) -> tuple[ImageInfo, np.ndarray, np.ndarray | None]:
    """Fully decode an image; return its size/mode, a small grayscale thumbnail for hashing and, when ``frames``
    names them (``"stored"`` or ``"query"``), its frame thumbnails for the overlap check
    (:func:`covid_tf.data.film_frame.frame_readings`)."""
    image = _open_checked(Path(path))
    info = ImageInfo(width=image.width, height=image.height, mode=image.mode)
    factor = max(image.size) // 256
    if factor > 1 and image.mode in ("L", "RGB", "RGBA", "I", "F", "I;16"):
        image = image.reduce(factor)  # shrink before converting a huge image to float
    gray = to_channels(_to_array(image), 1)
    thumbnail = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
    return info, thumbnail, None if frames is None else frame_readings(gray, frames)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write a float [0, 1] (H, W[, C]) or uint8 image as PNG (RGB order for colour)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
