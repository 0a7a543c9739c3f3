"""Planted copies: a film republished the way public collections republish films, to test the overlap check.

Each entry of :data:`COPY_TRANSFORMS` takes a uint8 grayscale film (H, W) and a random generator and returns
the copy as uint8, grayscale (H, W) or colour (H, W, 3): resized, JPEG re-encoded, brighter or darker, more
or less contrasted, at a lower bit depth, in colour, with a border cut off or added, with a text label
burned in, mirrored, or several of these at once. Strengths are drawn up to the limits the overlap check
promises (docs/OVERLAP.md): resizing 0.5-2x, JPEG quality >= 60, a crop or pad of up to 5 % per side.
:func:`write_external_set` plants such copies, and a source shortcut, in an "external" test set (notebook 06).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pandas as pd

from covid_tf.io_utils import atomic_write_text, claim_generated_folder, csv_text

MAX_BORDER = 0.05
MARKER_FILE = ".covid_tf_external_set"


def resized(film: np.ndarray, rng: np.random.Generator, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """Resized by a factor drawn from [low, high] (area when shrinking, cubic when enlarging)."""
    factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    height, width = film.shape[:2]
    size = (max(16, round(width * factor)), max(16, round(height * factor)))
    return cv2.resize(film, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def jpeg(film: np.ndarray, rng: np.random.Generator, lowest_quality: int = 60) -> np.ndarray:
    """Re-encoded as JPEG at a quality drawn from [lowest_quality, 95]."""
    quality = int(rng.integers(lowest_quality, 96))
    ok, encoded = cv2.imencode(".jpg", film, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)


def gamma(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A gamma curve drawn from [0.6, 1.6]."""
    value = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    return (255.0 * (film / 255.0) ** value + 0.5).astype(np.uint8)


def contrast(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast scaled about the mean by a factor in [0.6, 1.4] and brightness moved by up to 20 grey levels."""
    factor, shift = rng.uniform(0.6, 1.4), rng.uniform(-20, 20)
    mean = film.mean()
    return np.clip((film.astype(np.float32) - mean) * factor + mean + shift, 0, 255).astype(np.uint8)


def bit_depth(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quantised to 4-6 bits per pixel."""
    bits = int(rng.integers(4, 7))
    return ((film >> (8 - bits)) << (8 - bits)).astype(np.uint8)


def colour(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saved as a colour image (three channels, slightly tinted)."""
    tint = rng.uniform(0.9, 1.0, size=3)
    return np.clip(film[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)


def _sides(film: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
    height, width = film.shape[:2]
    top, bottom = (int(rng.uniform(0, MAX_BORDER) * height) for _ in range(2))
    left, right = (int(rng.uniform(0, MAX_BORDER) * width) for _ in range(2))
    return top, bottom, left, right


def cropped(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to ``MAX_BORDER`` of each side cut off (each side drawn on its own)."""
    top, bottom, left, right = _sides(film, rng)
    height, width = film.shape[:2]
    return np.ascontiguousarray(film[top:height - bottom, left:width - right])


def padded(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A black or white border of up to ``MAX_BORDER`` of each side added."""
    top, bottom, left, right = _sides(film, rng)
    value = 0 if rng.random() < 0.5 else 255
    return cv2.copyMakeBorder(film, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)


def text_label(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A white text label ("PORTABLE", a side letter) burned into a top corner."""
    copy = film.copy()
    height, width = film.shape[:2]
    scale, thickness = width / 400.0, max(1, width // 150)
    corner = int(rng.integers(0, 2))
    x = int(0.04 * width) if corner == 0 else int(0.55 * width)
    cv2.putText(copy, "PORTABLE", (x, int(0.1 * height)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness)
    cv2.putText(copy, "R" if corner else "L", (int(0.88 * width) if corner == 0 else int(0.06 * width),
                int(0.22 * height)), cv2.FONT_HERSHEY_SIMPLEX, 2.5 * scale, 255, 2 * thickness)
    return copy


def mirrored(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flipped left to right (the same film: the overlap check counts it as a copy)."""
    return np.ascontiguousarray(film[:, ::-1])


def combined(film: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resized, cropped, gamma changed, labelled and JPEG re-encoded, in that order."""
    film = resized(film, rng, 0.6, 1.5)
    film = cropped(film, rng) if rng.random() < 0.5 else padded(film, rng)
    return jpeg(text_label(gamma(film, rng), rng), rng, 70)


Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
COPY_TRANSFORMS: Mapping[str, Transform] = MappingProxyType({
    "resize": resized, "jpeg": jpeg, "gamma": gamma, "contrast": contrast, "bit-depth": bit_depth,
    "colour": colour, "crop": cropped, "pad": padded, "text": text_label, "mirror": mirrored, "combined": combined,
})


def planted_copy(film: np.ndarray, transform: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of a uint8 grayscale film made by the named transform of :data:`COPY_TRANSFORMS`."""
    if transform not in COPY_TRANSFORMS:
        raise ValueError(f"unknown copy transform {transform!r}; choose one of {', '.join(COPY_TRANSFORMS)}")
    film = np.asarray(film)
    if film.dtype != np.uint8 or film.ndim != 2:
        raise ValueError(f"expected a uint8 grayscale film (H, W), got {film.dtype} {film.shape}")
    return COPY_TRANSFORMS[transform](film, rng)


def write_external_set(out_dir: str | Path, copied: Sequence[tuple[str, str]], fresh: Sequence[tuple[str, str]], *,
                       transforms: Sequence[str] = ("crop", "jpeg", "text", "mirror"),
                       sources: tuple[str, str] = ("hospital-A", "hospital-B"), confounding: float = 0.8,
                       seed: int = 0, overwrite: bool = False) -> pd.DataFrame:
    """An "external" test set with the traps of public collections planted: copies of ``copied`` films
    ``(path, label)`` made by ``transforms`` in turn, beside the ``fresh`` films, each named after a source; the
    first class in order of appearance comes from ``sources[0]`` with probability ``confounding``, the others from
    ``sources[1]`` (a class-source shortcut), and films of ``sources[0]`` are darker (another acquisition).

    Writes ``out_dir/<label>/images/*.png`` and ``out_dir/metadata.csv`` (``path,label,source,copy_of``);
    returns that table. A folder that is not empty is refused unless this function made it (its ``MARKER_FILE``)
    or ``overwrite``; the films an earlier call wrote there and this one does not are removed, nothing else.
    """
    out_dir = Path(out_dir)
    previous = {f"{label}/images/{name}" for label, name in
                claim_generated_folder(out_dir, MARKER_FILE, "covid_tf.synthetic.copies.write_external_set", overwrite)}
    rng = np.random.default_rng(seed)
    labels = list(dict.fromkeys(label for _, label in [*copied, *fresh]))
    rows = []
    for number, (path, label) in enumerate([*copied, *fresh]):
        film = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if film is None:
            raise ValueError(f"{path}: not a readable image")
        is_copy = number < len(copied)
        if is_copy:
            film = planted_copy(film, transforms[number % len(transforms)], rng)
        first_source = rng.random() < (confounding if label == labels[0] else 1.0 - confounding)
        if first_source:
            film = (255.0 * (film / 255.0) ** 1.4 + 0.5).astype(np.uint8)
        name = f"{'copy' if is_copy else 'film'}-{number:04d}.png"
        target = out_dir / label / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), film)
        rows.append({"path": f"{label}/images/{name}", "label": label,
                     "source": sources[0] if first_source else sources[1], "copy_of": str(path) if is_copy else ""})
    for stale in sorted(previous - {row["path"] for row in rows}):
        (out_dir / stale).unlink(missing_ok=True)
    table = pd.DataFrame(rows, columns=["path", "label", "source", "copy_of"])
    atomic_write_text(out_dir / "metadata.csv", csv_text(table))
    return table
