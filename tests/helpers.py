"""Small builders of image files for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# `python SCRIPT train ... --model tiny`: the smallest two-phase model, one convolution on a "backbone" that
# is frozen for the head phase, then fine-tuned (transfer=True). It compiles in a fraction of a second where
# resnet18 took 15-30 s per restart and as long again to recompile for fine-tuning.
TINY_TRANSFER_SCRIPT = '''
import sys

import keras
from keras import layers

from covid_tf.cli import main
from covid_tf.models import architectures, common


def build_tiny(options):
    inputs, x = options.stem(rgb=False)
    x = layers.Conv2D(4, 3, padding="same", name="block1_conv")(x)
    x = layers.ReLU(name="block1_relu")(x)
    return keras.Model(inputs, options.head(x, inputs, dense_units=()), name=common.model_name("tiny"))


architectures.register(architectures.Architecture(
    name="tiny", builder=build_tiny, last_conv_layer="block1_relu", transfer=True, learning_rate=3e-3,
    auto_normalization="dataset", block_patterns=architectures.CNN_BLOCKS))
sys.exit(main(sys.argv[1:]))
'''


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
