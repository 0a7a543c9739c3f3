"""Small builders of image files for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def gradient_image(size: int = 16, seed: int = 0) -> np.ndarray:
    """A uint8 grayscale image with structure (so duplicates and orientation can be told apart)."""
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(size), np.arange(size)) * (200 // (2 * size))
    return np.clip(base + rng.integers(0, 50, (size, size)), 0, 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray | None = None, seed: int = 0, mode: str | None = None) -> Path:
    """Write a PNG (grayscale by default) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = gradient_image(seed=seed) if array is None else array
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def make_class_folders(root: Path, classes: dict[str, int], size: int = 16, nested: str = "") -> Path:
    """``root/<Class>[/nested]/img_i.png`` with distinct random images."""
    seed = 0
    for name, count in classes.items():
        for i in range(count):
            seed += 1
            rng = np.random.default_rng(seed)
            write_png(root / name / nested / f"img_{i}.png", rng.integers(0, 255, (size, size), dtype=np.uint8))
    return root
