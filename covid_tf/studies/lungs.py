"""The lung studies of notebook 06: the shipped segmenter on a few images, the model input of each ROI,
and a full-image model against an ROI model (test ROC-AUC with its CI, Grad-CAM lung energy on the full
original image, the heatmaps themselves).

Heatmaps of an ROI model are computed on its input (a crop of the lung box, or the masked image) and
mapped back onto the full image with :func:`covid_tf.lungs.roi.geometry.heatmap_to_full`, so every model is
measured against the same lungs: ``energy_in_lungs`` is the share of the heat inside the lung mask,
``lung_area_fraction`` the share of the image the lungs cover (what heat spread at random gets), and
``lung_energy_ratio`` their ratio (1: no better than chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.images import load_image
from covid_tf.errors import CovidTfError
from covid_tf.explain.lung_energy import lung_heatmaps
from covid_tf.figures.segmenter import outline_overlay
from covid_tf.lungs.roi.inputs import RoiLoader
from covid_tf.lungs.roi.mask_table import prepare_masks
from covid_tf.lungs.roi.modes import MODES, RoiSpec
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation import scoring
from covid_tf.lungs.segmentation.masks import read_mask
from covid_tf.runs.inference import load_model
from covid_tf.runs.record import MODEL_FILE, SPLIT_FILE, RunRecord

ROI_TITLES = {name: mode.title for name, mode in MODES.items()}


def segmenter_panels(paths: Sequence[str], mask_paths: Sequence[str | None] | None = None,
                     size: int = 256) -> tuple[list[np.ndarray], list[str], pd.DataFrame]:
    """Outline overlays of the shipped segmenter's masks (red; the dataset's own masks in green when given),
    their titles, and a table (path, lung area fraction, plausible, reason, Dice with the dataset's mask)."""
    from covid_tf.lungs.segmentation.segmenter import load_segmenter, predict_masks

    images = [load_image(path, channels=1) for path in paths]
    predicted = predict_masks(load_segmenter(), images, size)
    panels, titles, rows = [], [], []
    for index, (path, image, mask) in enumerate(zip(paths, images, predicted)):
        given = mask_paths[index] if mask_paths is not None else None
        truth = lung_masks.resize_mask(read_mask(given), *image.shape[:2]) if given else None
        summary = lung_masks.describe_mask(mask)
        dice = scoring.dice_and_iou(mask, truth)[0] if truth is not None else None
        panels.append(outline_overlay(image, mask, truth))
        verdict = "plausible" if summary.plausible else "IMPLAUSIBLE"
        titles.append(f"{Path(path).name}\n{verdict}" + (f", Dice {dice:.2f}" if dice is not None else ""))
        rows.append({"path": str(path), "lung_area_fraction": round(summary.lung_area_fraction, 3),
                     "plausible": summary.plausible, "reason": summary.reason, "dice_with_dataset_mask": dice})
    return panels, titles, pd.DataFrame(rows)


def roi_input_rows(paths: Sequence[str], modes: Sequence[str], image_size: int,
                   mask_paths: Sequence[str | None] | None = None) -> list[list[np.ndarray]]:
    """Per image, the model input of each ROI mode at ``image_size`` (masks: dataset's, else the segmenter's)."""
    table = prepare_masks([str(p) for p in paths], mask_paths)
    loaders = [RoiLoader(RoiSpec(mode), table, image_size, 1) for mode in modes]
    return [[loader(str(path)) for loader in loaders] for path in paths]


@dataclass
class LungEnergy:
    """Grad-CAM of one model on full original images: per-image numbers, and images and heatmaps to show."""

    table: pd.DataFrame  # path, prob_<class>, covid_tf.lungs.energy.LUNG_COLUMNS
    images: np.ndarray  # (N, S, S, 1) full images at the model's size
    heatmaps: np.ndarray  # (N, S, S) heatmaps on the full images at the model's size


def lung_energy(run_dir: str | Path, paths: Sequence[str], mask_paths: Sequence[str | None] | None = None, *,
                class_name: str = "COVID") -> LungEnergy:
    """Grad-CAM of ``class_name`` for a saved run's model (through its own ROI), mapped back onto each full image
    and measured against the full image's lung mask (:func:`covid_tf.explain.lung_energy.lung_heatmaps`)."""
    loaded = load_model(Path(run_dir) / MODEL_FILE)
    found = lung_heatmaps(loaded, paths, loaded.class_names.index(class_name), mask_paths=mask_paths,
                          keep_heatmaps=True)
    images = np.stack([load_image(path, channels=1, size=loaded.image_size) for path in paths])
    return LungEnergy(found.table, images, found.heatmaps)


def split_images(folder: str | Path, label: str, part: str = "test", count: int | None = None) -> list[str]:
    """The image paths of one class in one part (``train``, ``val``, ``test``) of the ``split.csv`` of a run or
    audit ``folder`` (read by its run record), the first ``count``."""
    table = RunRecord(Path(folder)).split()
    if table is None:
        raise CovidTfError(f"{folder}: holds no {SPLIT_FILE}")
    chosen = table[(table["split"] == part) & (table["label"] == label)]["path"].tolist()
    return chosen[:count] if count is not None else chosen


def compare_runs(runs: Mapping[str, str | Path], energies: Mapping[str, LungEnergy]) -> pd.DataFrame:
    """One row per model: its ROI, test ROC-AUC with the 95% CI, and its mean Grad-CAM lung energy and ratio."""
    rows = []
    for name, run_dir in runs.items():
        run = RunRecord.read(run_dir)
        test = (run.metrics() or {}).get("test") or {}
        low, high = (test.get("ci95") or {}).get("roc_auc", [None, None])
        table = energies[name].table
        area = float(table["lung_area_fraction"].mean())
        energy = float(table["energy_in_lungs"].mean())
        rows.append({"model": name, "roi": run.roi.mode, "test ROC-AUC": test.get("roc_auc"),
                     "CI low": low, "CI high": high, "energy in lungs": energy, "lung area": area,
                     "lung energy ratio": energy / area if area > 0 else float("nan"), "images explained": len(table)})
    return pd.DataFrame(rows)
