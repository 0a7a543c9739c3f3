"""The X-ray lung segmenter at work: load a trained U-Net (the shipped one by default) and turn images into
cleaned lung masks, each at its image's own size.

Each image is contrast-stretched, resized to ``size`` for the network and segmented in batches through a forward
pass traced once per size; each probability map is resized back to the image's own size and post-processed (two
largest components, holes filled: :func:`covid_tf.lungs.segmentation.masks.clean_mask`). The ``segment`` command
(:mod:`covid_tf.workflows.segment`) and the lung ROI's mask cache (:mod:`covid_tf.lungs.roi.inputs`) call it.
No TensorFlow is imported until a model is loaded or run.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from covid_tf.data.images import resize_image
from covid_tf.errors import CovidTfError
from covid_tf.lungs.segmentation import masks as lung_masks

SHIPPED_MODEL = Path(__file__).parents[1] / "lung_segmenter.keras"  # covid_tf/lungs/lung_segmenter.keras
DEFAULT_SIZE = 256  # the side the U-Net runs at (and was trained and scored at)
MAX_CLEAN_SIDE = 1024  # masks of larger images are cleaned at this size, then enlarged


def load_segmenter(path: str | Path | None = None):
    """Load a segmenter ``.keras`` file in Keras safe mode (default: the one shipped with covid_tf)."""
    from covid_tf.models.loading import load_keras_model

    model = load_keras_model(SHIPPED_MODEL if path is None else Path(path))
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 1 or tuple(model.outputs[0].shape)[-1] != 1:
        raise CovidTfError(f"{path}: not a lung segmenter (expected a grayscale input and one output channel, "
                           f"got {shape} -> {tuple(model.outputs[0].shape)})")
    return model


_FORWARD_PASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_pass(model, size: int) -> Callable:
    """The segmenter's forward pass traced once for ``size x size`` inputs (any batch size).

    Not model.predict: predict retraces with (None, None) spatial sizes after a size change, which
    Keras's bilinear UpSampling2D cannot handle. A graph with the spatial size fixed runs about 1.5x
    faster than eager calls on a CPU (benchmarks/bench_segmenter.py).
    """
    import keras
    import tensorflow as tf

    if not isinstance(model, keras.Model):  # any other callable (a stand-in) runs as it is
        return lambda batch: model(batch, training=False)
    passes = _FORWARD_PASSES.setdefault(model, {})
    if size not in passes:
        signature = [tf.TensorSpec((None, size, size, 1), tf.float32)]
        held = weakref.ref(model)  # a weak reference: the cached graph must not keep its key (the model) alive
        passes[size] = tf.function(lambda batch: held()(batch, training=False), input_signature=signature)
    return passes[size]


def stretch_contrast(image: np.ndarray) -> np.ndarray:
    """An image's grey values stretched linearly to fill [0, 1] (its darkest pixel 0, its brightest 1).

    The segmenter's input, in training and in use: some films hold their whole picture in a sliver of the grey
    range (seven JSRT films lie in 237-255 of 255), and the U-Net finds no lungs in them unstretched. A film that
    already spans [0, 1] is unchanged; a flat image is returned as it is."""
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-6:
        return image
    return ((image - low) / (high - low)).astype(np.float32)


def predict_probabilities(model, images: list[np.ndarray], size: int, batch_size: int = 32) -> np.ndarray:
    """The U-Net's lung probabilities at ``size x size`` (each image contrast-stretched), shape (N, size, size)."""
    batch = np.stack([stretch_contrast(resize_image(image, size)) for image in images]).astype(np.float32)
    forward = forward_pass(model, size)
    starts = range(0, len(batch), batch_size)
    return np.concatenate([np.asarray(forward(batch[start : start + batch_size])) for start in starts])[..., 0]


def probability_to_mask(probability: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize a probability map to an image's (H, W) and clean it into a bool lung mask.

    The cleaning (components, holes) runs at most at :data:`MAX_CLEAN_SIDE` on the longer side and the clean
    mask is then enlarged: the U-Net's map is 256 px, so a 10,000 px film gains nothing from cleaning at its
    own size but 30 s of hole filling."""
    height, width = shape[:2]
    scale = min(1.0, MAX_CLEAN_SIDE / max(height, width))
    work = (max(1, round(height * scale)), max(1, round(width * scale)))
    mask = lung_masks.clean_mask(resize_image(probability[..., None], work)[..., 0])
    return mask if work == (height, width) else lung_masks.resize_mask(mask, height, width)


def predict_masks(model, images: list[np.ndarray], size: int, batch_size: int = 32) -> list[np.ndarray]:
    """Cleaned bool lung masks, each at its image's own (H, W)."""
    if not images:
        return []
    probabilities = predict_probabilities(model, images, size, batch_size)
    return [probability_to_mask(probability, image.shape) for image, probability in zip(images, probabilities)]


