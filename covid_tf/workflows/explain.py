"""Explaining image files with a saved model: the ``explain`` command's back-end.

The logic behind the ``explain`` command (which only parses options and prints):

- :func:`explain_images` loads a ``.keras`` model safely, expands files and folders, and explains the
  images a batch at a time (one explainer call per batch, nothing held beyond the batch). It writes one
  overlay PNG per image (or the four-panel figure image | heatmap | overlay | thresholded region) and
  ``explanations.csv`` with ``path, predicted, probability, explained, prob_<Class>..., output`` and, when
  masks are found, ``mask_path, energy_in_mask, mask_area_fraction, pointing_hit, iou``, and always the lung energy
  (``covid_tf.lungs.energy.LUNG_COLUMNS``). A lung-ROI run's inputs are its ROI images; heatmaps are
  mapped back, drawn and measured on the full original image.
Masks are found by the toolkit's one rule (:func:`covid_tf.data.mask_files.find_mask`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.image_files import SkippedFile, list_images
from covid_tf.data.images import load_image
from covid_tf.data.mask_files import MASK_FOLDERS as MASK_KINDS
from covid_tf.data.mask_files import find_mask
from covid_tf.data.overlap import frame_thumbnail_of
from covid_tf.errors import CovidTfError, ImageReadError
from covid_tf.evaluation.tables import predictions_table
from covid_tf.explain.base import BaseCAM
from covid_tf.explain.explainers import requested_class
from covid_tf.explain.lung_energy import BACKBONE_COLUMNS, ExplainedBatch, LungInputs, explained_batches
from covid_tf.explain.methods import get_explainer
from covid_tf.explain.overlay import explanation_panel, overlay_heatmap
from covid_tf.explain.quality import summarize
from covid_tf.explain.segmentation import DEFAULT_THRESHOLD
from covid_tf.io_utils import atomic_write, csv_rows, is_within, progress_bar
from covid_tf.lungs.energy import mask_folder_notes
from covid_tf.lungs.segmentation.masks import read_mask
from covid_tf.models.lung_attention import LAYER_NAME, has_lung_attention
from covid_tf.models.registry import backbone_layer_name
from covid_tf.runs.inference import load_model
from covid_tf.runs.overlap import OverlapCheck, check_overlap, training_reference
from covid_tf.runs.record import OVERLAP_FILE, RunRecord, write_table

CSV_NAME = "explanations.csv"
MASK_COLUMNS = ("mask_path", "energy_in_mask", "mask_area_fraction", "pointing_hit", "iou")
# Overlays are drawn on the original image, shrunk so that its longer side is at most this.
MAX_DISPLAY_SIZE = 512


@dataclass
class ExplainResult:
    """What :func:`explain_images` wrote and left out."""

    out_dir: Path
    table: pd.DataFrame
    outputs: list[Path]
    skipped: list[SkippedFile]
    class_names: list[str]
    method: str
    layer_name: str
    notes: list[str]
    backbone_layer: str | None = None  # lung attention: the backbone's own last conv layer, measured beside it
    overlap: OverlapCheck | None = None  # the images that copy the model's training images (overlap.csv)


def _check_out_dir(out_dir: Path, inputs: Sequence[str | Path], masks_dir: Path | None, overwrite: bool) -> None:
    """Refuse an output folder inside an input folder (or the masks folder), the folder of an input file,
    a training run, or one holding earlier explanations (unless ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    given = [Path(item).expanduser() for item in inputs]
    folders = [item for item in given if item.is_dir()] + ([masks_dir] if masks_dir is not None else [])
    for folder in folders:
        if is_within(out_dir, folder):
            raise CovidTfError(f"{out_dir}: is inside the input folder {folder.resolve()}; choose an --out "
                               "elsewhere (nothing is written into input folders)")
    for item in given:
        if item.is_file() and out_dir.resolve() == item.parent.resolve():
            raise CovidTfError(f"{out_dir}: is the folder of the input {item}; choose an --out elsewhere "
                               "(nothing is written into input folders)")
    if (out_dir / "model.keras").exists():
        raise CovidTfError(f"{out_dir}: holds a training run (model.keras); write the explanations elsewhere")
    if (out_dir / CSV_NAME).exists() and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds explanations ({CSV_NAME}); choose another --out "
                           "or pass --overwrite")


def output_names(paths: Sequence[str | Path], suffix: str = ".png") -> list[str]:
    """One output file name per input, derived from its name and unique among them.

    ``a/x.png`` and ``b/x.png`` become ``x.png`` and ``x_2.png`` (in input order); characters that are
    awkward in file names become ``_``; comparison ignores case (for case-insensitive file systems).
    """
    names, taken = [], set()
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "image"
        name, number = f"{stem}{suffix}", 1
        while name.lower() in taken:
            number += 1
            name = f"{stem}_{number}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def _display_image(path: str, channels: int) -> np.ndarray:
    """The original image for the overlay, its longer side shrunk to at most ``MAX_DISPLAY_SIZE``."""
    image = load_image(path, channels=channels)
    height, width = image.shape[:2]
    scale = MAX_DISPLAY_SIZE / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
    return image


def _write_png(path: Path, rgb: np.ndarray) -> None:
    def write(tmp: Path) -> None:  # the temporary name ends in .png too, so OpenCV picks the format
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise CovidTfError(f"{path}: OpenCV could not write the PNG")

    atomic_write(path, write)


def _write_panel(path: Path, image: np.ndarray, heatmap: np.ndarray, threshold: float, title: str) -> None:
    figure = explanation_panel(image, heatmap, threshold=threshold, title=title)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png", bbox_inches="tight"))


def _make_explainer(
    method: str, model: keras.Model, layer_name: str | None, batch_size: int, score: str = "logit"
) -> BaseCAM:
    try:
        return get_explainer(method, model, layer_name=layer_name, batch_size=batch_size, score=score)
    except ValueError as error:
        raise CovidTfError(f"cannot explain with {method!r}: {error}") from None


def _check_options(batch_size: int, threshold: float, mask_kind: str, masks_dir: str | Path | None) -> Path | None:
    """Refuse bad options of :func:`explain_images`; return the masks folder (or None)."""
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0.0 < threshold <= 1.0:
        raise CovidTfError(f"--threshold must lie in (0, 1], got {threshold}")
    if mask_kind not in MASK_KINDS:
        raise CovidTfError(f"unknown --mask-kind {mask_kind!r}; choose one of {', '.join(MASK_KINDS)}")
    masks_path = Path(masks_dir).expanduser() if masks_dir is not None else None
    if masks_path is not None and not masks_path.is_dir():
        raise CovidTfError(f"{masks_path}: --masks must be a folder of mask images")
    return masks_path


class _ExplainJob:
    """One run of :func:`explain_images`: explains ``paths`` a batch at a time into ``explanations.csv`` rows
    and one PNG per image; keeps the tables, the outputs, the skipped files and notes."""

    def __init__(self, loaded, explainer: BaseCAM, paths: list[str], out_dir: Path, *, requested: int | None,
                 masks_dir: Path | None, mask_kind: str, threshold: float, batch_size: int, panels: bool,
                 skipped: list[SkippedFile], on_skipped: Callable[[SkippedFile], None] | None) -> None:
        self.loaded, self.explainer, self.paths, self.out_dir = loaded, explainer, paths, out_dir
        self.requested, self.threshold, self.batch_size, self.panels = requested, threshold, batch_size, panels
        self.skipped, self.on_skipped = skipped, on_skipped
        self.masks = [find_mask(path, masks_dir, mask_kind) for path in paths]
        self.with_masks = masks_dir is not None or any(mask is not None for mask in self.masks)
        # Lung energy for every image (the lung masks found, else the segmenter's) and the run's lung ROI.
        self.lungs = LungInputs(loaded, paths, [str(m) if m and mask_kind == "lungs" else None for m in self.masks])
        self.backbone = _backbone_explainer(loaded.model, explainer, batch_size)
        self.file_names = output_names(paths)
        self.tables: list[pd.DataFrame] = []
        self.outputs: list[Path] = []
        self.notes: list[str] = mask_folder_notes(masks_dir, paths, self.masks)

    def write_csv(self, tmp: Path) -> None:
        batches = explained_batches(self.lungs, self.explainer, self.paths, self.requested, self.batch_size,
                                    on_unreadable=self._skip)  # heatmaps shown and measured on the full image
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            total = -(-len(self.paths) // self.batch_size)
            for batch in progress_bar(batches, total=total, desc="explaining", unit="batch"):
                table = self._table(batch)
                if self.with_masks:
                    self._add_mask_numbers(table, batch.indices, batch.heatmaps)
                table = pd.concat([table, self.lungs.columns(batch.indices, batch.heatmaps)], axis=1)
                if self.backbone is not None:
                    self._add_backbone_energy(table, batch)
                self._write_images(table, batch.indices, batch.inputs, batch.heatmaps)
                handle.write(csv_rows(table, header=not self.tables))
                self.tables.append(table)

    def _add_backbone_energy(self, table: pd.DataFrame, batch: ExplainedBatch) -> None:
        """Lung attention: the lung energy of the backbone's own last conv layer (the pooled layer's Grad-CAM is
        zero outside the lungs by construction, so only this one can show heat outside them)."""
        maps = self.lungs.on_full_images(self.backbone.explain(batch.inputs, batch.classes)[0], batch.places)
        measured = self.lungs.columns(batch.indices, maps)
        for column in BACKBONE_COLUMNS:
            table[f"backbone_{column}"] = measured[column].to_numpy()

    def _skip(self, error: ImageReadError) -> None:
        """An image that became unreadable since it was listed: skipped and reported."""
        item = SkippedFile(error.path, error.reason)
        self.skipped.append(item)
        if self.on_skipped is not None:
            self.on_skipped(item)

    def _table(self, batch: ExplainedBatch) -> pd.DataFrame:
        """``path, predicted, probability, explained, prob_<Class>..., output`` of a batch."""
        names = self.loaded.class_names
        predicted = np.argmax(batch.probabilities, axis=-1)
        table = predictions_table([self.paths[i] for i in batch.indices], batch.probabilities, predicted, names)
        table.insert(3, "explained", [names[k] for k in batch.classes])
        table["output"] = [self.file_names[i] for i in batch.indices]
        return table

    def _add_mask_numbers(self, table: pd.DataFrame, chosen: list[int], heatmaps: np.ndarray) -> None:
        batch_masks = []
        for i in chosen:
            try:
                batch_masks.append(read_mask(self.masks[i]) if self.masks[i] is not None else None)
            except ImageReadError as error:
                self.notes.append(f"mask {error.path}: {error.reason}; no mask numbers for {self.paths[i]}")
                batch_masks.append(None)
        numbers = pd.DataFrame(summarize(heatmaps, batch_masks, threshold=self.threshold))
        table["mask_path"] = [str(self.masks[i]) if self.masks[i] is not None else "" for i in chosen]
        table["energy_in_mask"] = numbers["energy_in_mask"].to_numpy()
        table["mask_area_fraction"] = numbers["mask_area_fraction"].to_numpy()
        table["pointing_hit"] = numbers["pointing_game"].to_numpy()
        table["iou"] = numbers["iou"].to_numpy()

    def _write_images(self, table: pd.DataFrame, chosen: list[int], images: np.ndarray,
                      heatmaps: np.ndarray) -> None:
        for row, i in enumerate(chosen):
            target = self.out_dir / self.file_names[i]
            try:
                display = _display_image(self.paths[i], self.loaded.channels)
            except ImageReadError:  # the model's input then (without a lung-attention mask channel)
                display = images[row][..., : self.loaded.channels]
            if self.panels:
                title = (f"{Path(self.paths[i]).name}: predicted {table['predicted'].iloc[row]} "
                         f"({table['probability'].iloc[row]:.2f}), {self.explainer.name} of "
                         f"{table['explained'].iloc[row]}")
                _write_panel(target, display, heatmaps[row], self.threshold, title)
            else:
                _write_png(target, overlay_heatmap(display, heatmaps[row]))
            self.outputs.append(target)


def _overlap_check(model_path: Path, paths: list[str]) -> OverlapCheck:
    """The explained images that copy the model's training images; their frame thumbnails are made only when the
    run has something to compare them with."""
    training = training_reference(RunRecord.of_model(model_path))
    return check_overlap(training, paths, training.test_thumbnails(paths, frame_thumbnail_of))


def explain_images(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "gradcam",
    class_name: str | None = None,
    layer_name: str | None = None,
    masks_dir: str | Path | None = None,
    mask_kind: str = "lungs",
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = config.BATCH_SIZE,
    panels: bool = False,
    allow_unsafe: bool = False,
    overwrite: bool = False,
    on_skipped: Callable[[SkippedFile], None] | None = None,
    score: str = "logit",
) -> ExplainResult:
    """Explain image files (and folders of them) with a saved model; write overlays and ``explanations.csv``.

    Args:
        model_path: a ``.keras`` file; its run's ``config.json`` names the classes.
        inputs: image files and/or folders (searched recursively; ``masks/`` and ``lesions/`` are skipped).
        out_dir: the folder to write into; refused inside an input folder.
        method: "gradcam", "gradcam++", "scorecam" or "cam".
        class_name: explain this class for every image (default: each image's predicted class).
        layer_name: the target layer (default: the model's last convolutional layer).
        masks_dir, mask_kind: where masks are looked up (:func:`find_mask`); with any mask found the CSV gets
            ``mask_path, energy_in_mask, mask_area_fraction, pointing_hit, iou`` (NaN where a mask is missing or empty).
        threshold: of the thresholded region (panel) and of the IoU.
        batch_size: images per explainer call; also how many images are in memory at once.
        panels: write the four-panel figure instead of the overlay alone.
        on_skipped: called with each unreadable file as soon as it is known.
        score: what gradient methods differentiate: "logit" (the pre-softmax class score) or "probability".

    Raises ``CovidTfError`` for bad options, a missing model and when no image could be explained.
    """
    out_dir = Path(out_dir).expanduser()
    masks_path = _check_options(batch_size, threshold, mask_kind, masks_dir)
    _check_out_dir(out_dir, inputs, masks_path, overwrite)

    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    paths, skipped = list_images(inputs, on_skipped=on_skipped)
    if not paths:
        raise CovidTfError(f"no readable image among the {len(inputs)} input(s) ({len(skipped)} file(s) skipped); "
                           "nothing explained")
    job = _ExplainJob(loaded, _make_explainer(method, loaded.model, layer_name, batch_size, score), paths, out_dir,
                      requested=requested_class(class_name, loaded.class_names), masks_dir=masks_path,
                      mask_kind=mask_kind, threshold=threshold, batch_size=batch_size, panels=panels,
                      skipped=skipped, on_skipped=on_skipped)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / CSV_NAME, job.write_csv)
    if not job.tables:
        raise CovidTfError("none of the listed images could be read; nothing explained")
    overlap = _overlap_check(loaded.path, paths)
    write_table(out_dir, OVERLAP_FILE, overlap.copies)
    return ExplainResult(out_dir, pd.concat(job.tables, ignore_index=True), job.outputs, job.skipped,
                         list(loaded.class_names), job.explainer.name, job.explainer.layer_name,
                         [*job.notes, *overlap.notes], job.backbone.layer_name if job.backbone is not None else None,
                         overlap)



def _backbone_explainer(model: keras.Model, explainer: BaseCAM, batch_size: int) -> BaseCAM | None:
    """Grad-CAM on a lung-attention model's backbone layer, when ``explainer`` targets its pooled layer."""
    if not has_lung_attention(model) or explainer.layer_name != LAYER_NAME:
        return None
    return get_explainer("gradcam", model, layer_name=backbone_layer_name(model), batch_size=batch_size)
