"""Grad-CAM lung energy of a trained model: the one path from a model and images to ``LUNG_COLUMNS``.

Each image goes through the run's own input (its lung ROI); the heatmap is mapped back onto the full
original image and measured against the full image's lung mask (dataset, else the segmenter's, cached).
:func:`explained_batches` is the one loop (inputs through the ROI, explained, mapped back): ``evaluate --lungs``
and the lung studies of notebook 06 call it through :func:`lung_heatmaps`, the ``explain`` command and the
shortcut study of notebook 04 directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import pandas as pd

from covid_tf.data.images import load_image
from covid_tf.data.mask_files import mask_paths_of
from covid_tf.errors import ImageReadError
from covid_tf.evaluation.metrics import positive_class_index
from covid_tf.evaluation.tables import PROB_PREFIX
from covid_tf.explain.base import BaseCAM
from covid_tf.explain.methods import get_explainer
from covid_tf.explain.quality import energy_in_mask
from covid_tf.lungs.energy import LUNG_COLUMNS, summarize
from covid_tf.lungs.roi import geometry
from covid_tf.lungs.roi.inputs import RoiLoader
from covid_tf.lungs.roi.mask_table import prepare_masks
from covid_tf.lungs.segmentation.masks import read_mask
from covid_tf.models.lung_attention import has_lung_attention
from covid_tf.models.registry import backbone_layer_name, last_conv_layer_name
from covid_tf.runs.inference import LoadedModel

# The per-image lung energy of a lung-attention model's backbone layer, beside its pooled layer's.
BACKBONE_COLUMNS = ("energy_in_lungs", "lung_energy_ratio")


class LungInputs:
    """The lung masks of a list of images (dataset, else segmenter, cached) and the model inputs of a run
    (its lung ROI when it has one), with heatmaps mapped back and measured on the full original image."""

    def __init__(self, loaded: LoadedModel, paths: Sequence[str], mask_paths: Sequence[str | None] | None = None,
                 use_segmenter: bool = True) -> None:
        self.loaded, self.size = loaded, loaded.image_size
        # The lungs of the run's modality: a CT run's masks come from the CT segmenter, as in training.
        self.table = prepare_masks(list(paths), mask_paths, use_segmenter=use_segmenter,
                                   modality=loaded.roi.kind.modality)
        self.loader = RoiLoader(loaded.roi, self.table, self.size, loaded.channels) if loaded.roi.active else None

    def model_input(self, path: str) -> tuple[np.ndarray, geometry.Box | None, tuple[int, int] | None]:
        """The model's input, and with an ROI its crop box and the full image's (H, W)."""
        if self.loader is None:
            return load_image(path, channels=self.loaded.channels, size=self.size), None, None
        return self.loader.load(path)

    def on_full_image(self, heatmap: np.ndarray, box: geometry.Box | None, shape: tuple[int, int] | None) -> np.ndarray:
        """A heatmap of the model's input as a heatmap of the full image, at the model's size."""
        if box is None or tuple(box) == (0, 0, *shape):
            return heatmap
        full = geometry.heatmap_to_full(heatmap, box, shape)
        return cv2.resize(full, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def on_full_images(self, heatmaps: np.ndarray, places: Sequence[tuple]) -> np.ndarray:
        """:meth:`on_full_image` of each heatmap of a batch, with its ``(box, shape)`` from :meth:`model_input`."""
        return np.stack([self.on_full_image(heatmap, *place) for heatmap, place in zip(heatmaps, places)])

    def columns(self, indices: Sequence[int], heatmaps: np.ndarray) -> pd.DataFrame:
        """``LUNG_COLUMNS`` for the images ``indices`` (into the paths) and their full-image heatmaps."""
        rows = []
        for index, heatmap in zip(indices, heatmaps):
            record = self.table.iloc[index]
            energy = area = np.nan
            source = record["lung_mask_source"]
            if record["mask_path"]:
                try:
                    mask = read_mask(record["mask_path"])
                except ImageReadError:
                    mask = np.zeros((1, 1), bool)
                if mask.any():
                    energy, area = energy_in_mask(heatmap, mask), float(mask.mean())
                else:
                    source = "none"
            rows.append((source, record["mask_path"], energy, area, energy / area if area > 0 else np.nan))
        return pd.DataFrame(rows, columns=list(LUNG_COLUMNS))


@dataclass
class ExplainedBatch:
    """One batch of :func:`explained_batches`: which images, their model inputs, and their explanation."""

    indices: list[int]  # into the paths
    inputs: np.ndarray  # the model's inputs (through the run's ROI)
    places: list[tuple]  # (crop box, full image's shape) of each input, for LungInputs.on_full_images
    heatmaps: np.ndarray  # on the full images, at the model's size
    classes: np.ndarray
    probabilities: np.ndarray


def explained_batches(inputs: LungInputs, explainer: BaseCAM, paths: Sequence[str], class_index: int | None,
                      batch_size: int, on_unreadable: Callable[[ImageReadError], None] | None = None
                      ) -> Iterator[ExplainedBatch]:
    """The one lung-energy loop: ``batch_size`` images at a time through the run's ROI, explained, their heatmaps
    mapped back onto the full images (memory does not grow with N). An unreadable image raises, or with
    ``on_unreadable`` is passed to it and left out."""
    for start in range(0, len(paths), batch_size):
        indices, items = [], []
        for index in range(start, min(start + batch_size, len(paths))):
            try:
                items.append(inputs.model_input(paths[index]))  # (input, crop box, full shape)
            except ImageReadError as error:
                if on_unreadable is None:
                    raise
                on_unreadable(error)
                continue
            indices.append(index)
        if not indices:
            continue
        images, places = np.stack([item[0] for item in items]), [item[1:] for item in items]
        heatmaps, classes, probabilities = explainer.explain(images, class_index)
        yield ExplainedBatch(indices, images, places, inputs.on_full_images(heatmaps, places), classes, probabilities)


@dataclass
class LungHeatmaps:
    """Per-image lung energy (``path``, ``prob_<class>``, ``LUNG_COLUMNS``) and, when kept, the heatmaps on the
    full images at the model's size."""

    table: pd.DataFrame
    heatmaps: np.ndarray | None = None


def lung_heatmaps(loaded: LoadedModel, paths: Sequence[str], class_index: int, *,
                  mask_paths: Sequence[str | None] | None = None, use_segmenter: bool = True, batch_size: int = 32,
                  layer_name: str | None = None, keep_heatmaps: bool = False) -> LungHeatmaps:
    """Grad-CAM of ``class_index`` (on ``layer_name``, default the model's target layer) through the run's ROI,
    measured on the full images' lungs, ``batch_size`` images at a time (memory does not grow with N)."""
    paths = [str(p) for p in paths]
    inputs = LungInputs(loaded, paths, mask_paths, use_segmenter=use_segmenter)
    explainer = get_explainer("gradcam", loaded.model, layer_name=layer_name, batch_size=batch_size)
    tables, kept, probabilities = [], [], []
    for batch in explained_batches(inputs, explainer, paths, class_index, batch_size):
        tables.append(inputs.columns(batch.indices, batch.heatmaps))
        probabilities.append(batch.probabilities[:, class_index])
        if keep_heatmaps:
            kept.append(np.clip(batch.heatmaps, 0.0, 1.0))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(LUNG_COLUMNS))
    table.insert(0, f"{PROB_PREFIX}{loaded.class_names[class_index]}", np.concatenate(probabilities) if paths else [])
    table.insert(0, "path", paths)
    return LungHeatmaps(table, np.concatenate(kept) if kept else None)


def class_lung_energy(loaded: LoadedModel, paths: Sequence[str], class_index: int, *, use_segmenter: bool,
                      batch_size: int = 32, mask_paths: Sequence[str | None] | None = None,
                      layer_name: str | None = None) -> pd.DataFrame:
    """The per-image table of :func:`lung_heatmaps`."""
    return lung_heatmaps(loaded, paths, class_index, mask_paths=mask_paths, use_segmenter=use_segmenter,
                         batch_size=batch_size, layer_name=layer_name).table


def positive_class_lung_energy(loaded: LoadedModel, rows: pd.DataFrame, *, use_segmenter: bool,
                               batch_size: int = 32) -> tuple[pd.DataFrame, dict] | None:
    """Lung energy of the positive class's images among ``rows`` (``path``, ``label``, optional ``mask_path``):
    the per-image table and its summary; None when there are none, or no masks and ``use_segmenter`` is off.

    For a lung-attention model the Grad-CAM of its pooled layer is zero outside the lungs by construction,
    so the lung energy of the backbone's own last convolutional layer is measured too (``backbone_*`` columns
    and ``summary["backbone"]``, with the layer's name): the number that can show heat outside the lungs.
    """
    positive = loaded.class_names[positive_class_index(loaded.class_names)]
    chosen = rows[rows["label"].astype(str) == positive]
    paths = chosen["path"].astype(str).tolist()
    mask_paths = mask_paths_of(chosen)
    if not paths:
        return None
    if not use_segmenter and (prepare_masks(paths, mask_paths, use_segmenter=False, modality=loaded.roi.kind.modality)
                              ["lung_mask_source"] == "none").all():
        return None
    class_index = loaded.class_names.index(positive)
    measure = partial(class_lung_energy, loaded, paths, class_index, use_segmenter=use_segmenter,
                      batch_size=batch_size, mask_paths=mask_paths)
    table = measure()
    summary = {"class": positive, "method": "gradcam", "layer": last_conv_layer_name(loaded.model),
               **summarize(table)}
    if has_lung_attention(loaded.model):
        layer = backbone_layer_name(loaded.model)
        backbone = measure(layer_name=layer)
        for column in BACKBONE_COLUMNS:
            table[f"backbone_{column}"] = backbone[column].to_numpy()
        summary["backbone"] = {"layer": layer, **summarize(backbone)}
    return table, summary
