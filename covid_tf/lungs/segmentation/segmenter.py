"""Lung masks for a list of images with a trained U-Net (the shipped one by default): the ``segment`` back-end.

    python -m covid_tf segment IMAGES_OR_DIRS... --out DIR [--segmenter FILE] [--size 256] [--modality ct]

``--modality ct``: axial CT slices, segmented by the classical CT segmenter
(:mod:`covid_tf.lungs.segmentation.ct_lungs`).

Images are read in threads, resized to ``--size`` for the network and segmented in batches; each
probability map is resized back to the image's own size, post-processed (two largest components,
holes filled) and written as a 0/255 PNG: ``DIR/<Class>/masks/<name>.png`` for an image of a dataset
(in a Radiography-Database ``<Class>/images/`` folder, or in a class folder below a given folder),
else ``DIR/masks/<name>.png``. ``DIR/lungs.csv`` lists path, mask_path, lung_area_fraction,
components, plausible and reason. Nothing is ever written into an input folder.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data import discover
from covid_tf.data.images import load_image, resize_image, save_png
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_text, csv_text, refuse_output_inside_inputs, run_folder_of
from covid_tf.lungs.roi.modes import MODALITIES
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation.unet import size_multiple

SHIPPED_MODEL = Path(__file__).parents[1] / "lung_segmenter.keras"  # covid_tf/lungs/lung_segmenter.keras
DEFAULT_SIZE = 256
DEFAULT_BATCH_SIZE = 32
LUNGS_CSV = "lungs.csv"
MAX_CLEAN_SIDE = 1024  # masks of larger images are cleaned at this size, then enlarged
LUNGS_COLUMNS = ("path", "mask_path", "lung_area_fraction", "components", "plausible", "reason")


def load_segmenter(path: str | Path | None = None):
    """Load a segmenter ``.keras`` file in Keras safe mode (default: the one shipped with covid_tf)."""
    from covid_tf.models.loading import load_keras_model

    model = load_keras_model(SHIPPED_MODEL if path is None else Path(path))
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 1 or tuple(model.outputs[0].shape)[-1] != 1:
        raise CovidTfError(f"{path}: not a lung segmenter (expected a grayscale input and one output channel, "
                           f"got {shape} -> {tuple(model.outputs[0].shape)})")
    return model


def mask_destination(image_path: str | Path, out: Path, class_name: str = "") -> Path:
    """Where the mask of an image goes: ``out/<Class>/masks/`` for an image of a class, else ``out/masks/``."""
    image_path = Path(image_path)
    name = image_path.with_suffix(".png").name
    if not class_name and image_path.parent.name == "images":
        class_name = image_path.parent.parent.name
    return out / class_name / "masks" / name if class_name else out / "masks" / name


def class_of(image_path: str | Path, inputs: Sequence[str | Path]) -> str:
    """The class folder of an image found below a given folder (``DATA/<Class>/x.png``, ``DATA/<Class>/images/x.png``
    or ``DATA/<split>/<Class>/...``); "" for an image given as a file or lying directly in a given folder."""
    image_path = Path(image_path).resolve()
    for item in inputs:
        folder = Path(item).expanduser().resolve()
        if folder.is_dir() and image_path.is_relative_to(folder):
            parents = list(image_path.relative_to(folder).parent.parts)
            if parents and parents[-1] == "images":
                parents.pop()
            return parents[-1] if parents else ""
    return ""


def unique_destinations(paths: Sequence[str], inputs: Sequence[str | Path], out: Path) -> list[Path]:
    """One mask file per image; images whose masks would share a name get ``-2``, ``-3``... appended."""
    taken: set[Path] = set()
    destinations = []
    for path in paths:
        destination = mask_destination(path, out, class_of(path, inputs))
        stem, number = destination.stem, 1
        while destination in taken:
            number += 1
            destination = destination.with_name(f"{stem}-{number}.png")
        taken.add(destination)
        destinations.append(destination)
    return destinations


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


def _summary_row(path: str, mask_path: Path, mask: np.ndarray, describe: Callable = lung_masks.describe_mask) -> dict:
    summary = describe(mask)
    return {
        "path": path,
        "mask_path": str(mask_path),
        "lung_area_fraction": round(summary.lung_area_fraction, 5),
        "components": summary.components,
        "plausible": summary.plausible,
        "reason": summary.reason,
    }


def _write_mask(destination: Path, mask: np.ndarray) -> None:
    atomic_write(destination, lambda tmp: save_png(mask.astype(np.uint8) * 255, tmp))


def segment_paths(
    model, paths: Sequence[str], out: str | Path, size: int = DEFAULT_SIZE, batch_size: int = DEFAULT_BATCH_SIZE,
    inputs: Sequence[str | Path] = (), workers: int = 4,
) -> pd.DataFrame:
    """Segment ``paths``, write mask PNGs under ``out`` and return (and write) the lungs.csv table.

    ``inputs`` (the folders the paths were found in) name each image's class folder for the mask's place.
    """
    out = Path(out)
    rows: list[dict] = []
    destinations = unique_destinations(paths, inputs, out)
    starts = list(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def read(start: int):
            return [pool.submit(load_image, path, channels=1) for path in paths[start : start + batch_size]]

        pending = read(starts[0]) if starts else []
        for index, start in enumerate(starts):
            chunk = list(paths[start : start + batch_size])
            chunk_destinations = destinations[start : start + batch_size]
            images = [future.result() for future in pending]
            # Read the next batch while the network runs on this one.
            pending = read(starts[index + 1]) if index + 1 < len(starts) else []
            probabilities = predict_probabilities(model, images, size, batch_size)
            shapes = [image.shape for image in images]
            predicted = list(pool.map(probability_to_mask, probabilities, shapes))
            list(pool.map(_write_mask, chunk_destinations, predicted))
            rows.extend(_summary_row(p, d, m) for p, d, m in zip(chunk, chunk_destinations, predicted))
    table = pd.DataFrame(rows, columns=list(LUNGS_COLUMNS))
    atomic_write_text(out / LUNGS_CSV, csv_text(table))
    return table


def segment_ct_paths(paths: Sequence[str], out: str | Path, inputs: Sequence[str | Path] = (),
                     workers: int = 4) -> pd.DataFrame:
    """Segment axial CT slices (image files) with the classical CT segmenter
    (:mod:`covid_tf.lungs.segmentation.ct_lungs`),
    write mask PNGs under ``out`` and return (and write) the lungs.csv table, CT plausibility in it."""
    from covid_tf.lungs.segmentation import ct_lungs

    out = Path(out)
    destinations = unique_destinations(paths, inputs, out)

    def one(path: str, destination: Path) -> dict:
        mask = ct_lungs.segment_ct_slice(load_image(path, channels=1)[..., 0])
        _write_mask(destination, mask)
        return _summary_row(path, destination, mask, ct_lungs.describe_ct_mask)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(one, paths, destinations))
    table = pd.DataFrame(rows, columns=list(LUNGS_COLUMNS))
    atomic_write_text(out / LUNGS_CSV, csv_text(table))
    return table


@dataclass
class SegmentResult:
    """What ``segment`` did: the lungs.csv table, where it went, skipped files and the speed."""

    table: pd.DataFrame
    csv_path: Path
    skipped: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def implausible(self) -> int:
        return int((~self.table["plausible"].astype(bool)).sum())


def segment_images(
    inputs: Sequence[str | Path], out: str | Path, model_path: str | Path | None = None, size: int = DEFAULT_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE, on_skipped: Callable | None = None, modality: str = "xray",
) -> SegmentResult:
    """The ``segment`` command: check the output folder, find the images, segment them, write masks and lungs.csv.

    ``modality`` ``ct``: axial CT slices, with the classical CT segmenter (no model file; ``model_path`` and ``size``
    do not apply)."""
    if modality not in MODALITIES:
        raise CovidTfError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    out = Path(out).expanduser()
    segmenter = SHIPPED_MODEL if model_path is None else Path(model_path)
    refuse_output_inside_inputs(out, [*inputs, segmenter], read_folders=[run_folder_of(segmenter)])
    if size <= 0 or batch_size <= 0:
        raise CovidTfError(f"--size and --batch-size must be positive, got {size} and {batch_size}")
    paths, skipped = discover.list_images(inputs)
    for item in skipped:
        if on_skipped is not None:
            on_skipped(item)
    if not paths:
        raise CovidTfError(f"no readable image in {', '.join(str(item) for item in inputs)}")
    if modality == "ct":
        started = time.perf_counter()
        table = segment_ct_paths(paths, out, inputs=inputs)
        return SegmentResult(table, out / LUNGS_CSV, skipped, time.perf_counter() - started)
    model = load_segmenter(model_path)
    if size % size_multiple(model):
        raise CovidTfError(f"--size must be a multiple of {size_multiple(model)} for this segmenter, got {size}")
    started = time.perf_counter()
    table = segment_paths(model, paths, out, size=size, batch_size=batch_size, inputs=inputs)
    return SegmentResult(table, out / LUNGS_CSV, skipped, time.perf_counter() - started)
