"""``segment``: lung masks (PNG) and ``lungs.csv`` for images, files, folders or datasets.

    python -m covid_tf segment IMAGES_OR_DIRS... --out DIR [--segmenter FILE] [--size 256] [--modality ct]

The images are found by the project's one image discovery (links to folders followed, a dataset's own
``metadata.csv`` no image). X-rays are read in threads and segmented in batches by the U-Net
(:mod:`covid_tf.lungs.segmentation.segmenter`, the shipped one by default); ``--modality ct``: axial CT slices,
segmented by the classical CT segmenter (:mod:`covid_tf.lungs.segmentation.ct_lungs`). Each mask is written as
a 0/255 PNG: ``DIR/<Class>/masks/<name>.png`` for an image of a dataset (in a Radiography-Database
``<Class>/images/`` folder, or in a class folder below a given folder), else ``DIR/masks/<name>.png``.
``DIR/lungs.csv`` lists path, mask_path, lung_area_fraction, components, plausible and reason. Nothing is ever
written into an input folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.image_files import list_images
from covid_tf.data.images import load_image, save_png
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_text, csv_text, refuse_output_inside_inputs, run_folder_of
from covid_tf.lungs.roi.modes import modality_of
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation.segmenter import (
    DEFAULT_SIZE,
    SHIPPED_MODEL,
    load_segmenter,
    predict_probabilities,
    probability_to_mask,
)

DEFAULT_BATCH_SIZE = 32
LUNGS_CSV = "lungs.csv"
LUNGS_COLUMNS = ("path", "mask_path", "lung_area_fraction", "components", "plausible", "reason")


def mask_destination(image_path: str | Path, out: Path, class_name: str = "") -> Path:
    """Where the mask of an image goes: ``out/<Class>/masks/`` for an image of a class, else ``out/masks/``."""
    image_path = Path(image_path)
    name = image_path.with_suffix(".png").name
    if not class_name and image_path.parent.name == "images":
        class_name = image_path.parent.parent.name
    return out / class_name / "masks" / name if class_name else out / "masks" / name


def class_of(image_path: str | Path, inputs: Sequence[str | Path]) -> str:
    """The class folder of an image found below a given folder (``DATA/<Class>/x.png``, ``DATA/<Class>/images/x.png``
    or ``DATA/<split>/<Class>/...``); "" for an image given as a file or lying directly in a given folder.

    Paths are compared resolved, and also as given (links kept), so that an image reached through a link below the
    folder still names its class."""
    for item in inputs:
        folder = Path(item).expanduser()
        if not folder.is_dir():
            continue
        for image, base in ((Path(image_path).resolve(), folder.resolve()),
                            (Path(os.path.abspath(image_path)), Path(os.path.abspath(folder)))):
            if image.is_relative_to(base):
                parents = list(image.relative_to(base).parent.parts)
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


def _write_table(rows: list[dict], out: Path) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(LUNGS_COLUMNS))
    atomic_write_text(out / LUNGS_CSV, csv_text(table))
    return table


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
    return _write_table(rows, out)


def segment_ct_paths(paths: Sequence[str], out: str | Path, inputs: Sequence[str | Path] = (),
                     workers: int = 4) -> pd.DataFrame:
    """Segment axial CT slices (image files) with the classical CT segmenter, write mask PNGs under ``out`` and
    return (and write) the lungs.csv table, CT plausibility in it."""
    from covid_tf.lungs.segmentation import ct_lungs

    out = Path(out)
    destinations = unique_destinations(paths, inputs, out)

    def one(path: str, destination: Path) -> dict:
        mask = ct_lungs.segment_ct_slice(load_image(path, channels=1)[..., 0])
        _write_mask(destination, mask)
        return _summary_row(path, destination, mask, ct_lungs.describe_ct_mask)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(one, paths, destinations))
    return _write_table(rows, out)


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
    kind = modality_of(modality, option="--modality")
    out = Path(out).expanduser()
    segmenter = SHIPPED_MODEL if model_path is None else Path(model_path)
    refuse_output_inside_inputs(out, [*inputs, segmenter], read_folders=[run_folder_of(segmenter)])
    if size <= 0 or batch_size <= 0:
        raise CovidTfError(f"--size and --batch-size must be positive, got {size} and {batch_size}")
    paths, skipped = list_images(inputs)
    for item in skipped:
        if on_skipped is not None:
            on_skipped(item)
    if not paths:
        raise CovidTfError(f"no readable image in {', '.join(str(item) for item in inputs)}")
    if kind.ct:
        started = time.perf_counter()
        table = segment_ct_paths(paths, out, inputs=inputs)
        return SegmentResult(table, out / LUNGS_CSV, skipped, time.perf_counter() - started)
    from covid_tf.lungs.segmentation.unet import size_multiple

    model = load_segmenter(model_path)
    if size % size_multiple(model):
        raise CovidTfError(f"--size must be a multiple of {size_multiple(model)} for this segmenter, got {size}")
    started = time.perf_counter()
    table = segment_paths(model, paths, out, size=size, batch_size=batch_size, inputs=inputs)
    return SegmentResult(table, out / LUNGS_CSV, skipped, time.perf_counter() - started)
