"""Lung energy: how much of a heatmap lies inside the lungs of the full original image, against chance.

For every explained image, ``explain`` and ``evaluate --lungs`` report ``energy_in_lungs`` (share of the
heat inside the lungs), ``lung_area_fraction`` (share of the image the lungs cover: the chance level) and
their ratio ``lung_energy_ratio`` (1 = no better than chance), with ``lung_mask_source`` saying where the
mask came from (``dataset``, ``segmenter`` or ``none``). Heatmaps of a lung-ROI run are computed on the
model's input (a crop) and mapped back onto the full image first (:func:`covid_tf.lungs.roi.heatmap_to_full`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covid_tf.data.images import load_image
from covid_tf.errors import ImageReadError
from covid_tf.io_utils import atomic_write_json, atomic_write_text, csv_text
from covid_tf.lungs import roi
from covid_tf.lungs.roi_inputs import RoiLoader, prepare_masks, read_mask

LUNG_COLUMNS = ("lung_mask_source", "lung_mask_path", "energy_in_lungs", "lung_area_fraction", "lung_energy_ratio")
CHANCE_BAND = 1.25  # a ratio below this is "no better than chance"
CONCENTRATED = 2.0  # the goal for a lung-grounded model


def verdict(ratio: float | None) -> str:
    """The lung-energy ratio in words."""
    if ratio is None or not np.isfinite(ratio):
        return "not measured: no lung masks"
    if ratio < CHANCE_BAND:
        return "no better than chance: the heat is not concentrated on the lungs"
    if ratio < CONCENTRATED:
        return "more heat on the lungs than chance, but not concentrated on them"
    return "the heat is concentrated on the lungs"


def summarize(table: pd.DataFrame) -> dict:
    """Mean energy in the lungs, mean lung area, their ratio (ratio of the means) and the verdict, over the
    images with a lung mask; NaN-free (``None`` when no image has one)."""
    measured = table[np.isfinite(table["energy_in_lungs"].astype(float))] if len(table) else table
    sources = {str(k): int(v) for k, v in table["lung_mask_source"].value_counts().items()} if len(table) else {}
    if measured.empty:
        return {"n": 0, "energy_in_lungs": None, "lung_area_fraction": None, "lung_energy_ratio": None,
                "sources": sources, "verdict": verdict(None)}
    energy, area = float(measured["energy_in_lungs"].mean()), float(measured["lung_area_fraction"].mean())
    ratio = energy / area if area > 0 else None
    return {"n": len(measured), "energy_in_lungs": round(energy, 4), "lung_area_fraction": round(area, 4),
            "lung_energy_ratio": None if ratio is None else round(ratio, 3), "sources": sources,
            "verdict": verdict(ratio)}


def summary_line(summary: dict, what: str = "") -> str:
    """One printed line of :func:`summarize`."""
    sources = ", ".join(f"{count} {name}" for name, count in summary["sources"].items()) or "none"
    if not summary["n"]:
        return f"lung energy{what}: {summary['verdict']} (lung masks: {sources})"
    return (f"lung energy{what}: {summary['energy_in_lungs']:.3f} of the heat in the lungs, which cover "
            f"{summary['lung_area_fraction']:.3f} of the image: ratio {summary['lung_energy_ratio']:.2f}, "
            f"{summary['verdict']} (n={summary['n']}; lung masks: {sources})")


def mask_folder_notes(masks_dir: Path | None, paths: Sequence[str], masks: Sequence[Path | None]) -> list[str]:
    """Warnings for a --masks folder whose file names do not match the images'."""
    missing = [Path(path).name for path, mask in zip(paths, masks) if mask is None]
    if masks_dir is None or not missing:
        return []
    if len(missing) == len(paths):
        return [f"no file in {masks_dir} is named like the images (e.g. {missing[0]}): no mask measures; "
                "lung energy from the images' own masks/ or the lung segmenter"]
    return [f"{len(missing)} of {len(paths)} images have no mask in {masks_dir} (e.g. {missing[0]}): "
            "their mask measures are left empty"]


class LungInputs:
    """The lung masks of a list of images (dataset, else segmenter, cached) and the model inputs of a run
    (its lung ROI when it has one), with heatmaps mapped back and measured on the full original image."""

    def __init__(self, loaded, paths: Sequence[str], mask_paths: Sequence[str | None] | None = None,
                 use_segmenter: bool = True) -> None:
        self.loaded, self.size = loaded, loaded.image_size
        self.table = prepare_masks(list(paths), mask_paths, use_segmenter=use_segmenter)
        self.loader = RoiLoader(loaded.roi, self.table, self.size, loaded.channels) if loaded.roi.active else None

    def model_input(self, path: str) -> tuple[np.ndarray, roi.Box | None, tuple[int, int] | None]:
        """The model's input, and with an ROI its crop box and the full image's (H, W)."""
        if self.loader is None:
            return load_image(path, channels=self.loaded.channels, size=self.size), None, None
        return self.loader.load(path)

    def on_full_image(self, heatmap: np.ndarray, box: roi.Box | None, shape: tuple[int, int] | None) -> np.ndarray:
        """A heatmap of the model's input as a heatmap of the full image, at the model's size."""
        if box is None or tuple(box) == (0, 0, *shape):
            return heatmap
        full = roi.heatmap_to_full(heatmap, box, shape)
        return cv2.resize(full, (self.size, self.size), interpolation=cv2.INTER_AREA)

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
                    energy, area = roi.energy_in_mask(heatmap, mask), float(mask.mean())
                else:
                    source = "none"
            rows.append((source, record["mask_path"], energy, area, energy / area if area > 0 else np.nan))
        return pd.DataFrame(rows, columns=list(LUNG_COLUMNS))


def class_lung_energy(loaded, paths: Sequence[str], class_index: int, *, use_segmenter: bool,
                      batch_size: int = 32) -> pd.DataFrame:
    """Grad-CAM of ``class_index`` on ``paths`` through the run's ROI, measured on the full images' lungs."""
    from covid_tf.explain import get_explainer

    inputs = LungInputs(loaded, paths, use_segmenter=use_segmenter)
    explainer = get_explainer("gradcam", loaded.model, batch_size=batch_size)
    tables = []
    for start in range(0, len(paths), batch_size):
        indices = list(range(start, min(start + batch_size, len(paths))))
        batch = [inputs.model_input(paths[i]) for i in indices]
        heatmaps = explainer.explain(np.stack([item[0] for item in batch]), class_index)[0]
        mapped = [inputs.on_full_image(h, box, shape) for h, (_, box, shape) in zip(heatmaps, batch)]
        tables.append(inputs.columns(indices, np.stack(mapped)))
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "path", list(paths))
    return table


def evaluate_lung_energy(model_path: str | Path, out_dir: str | Path, predictions: pd.DataFrame, *,
                         use_segmenter: bool, batch_size: int = 32, allow_unsafe: bool = False) -> dict | None:
    """Lung energy of the positive class's images of an evaluation (``lung_energy.csv``, and ``lung_energy``
    in its metrics.json); None when no image has a dataset mask and ``use_segmenter`` is off."""
    from covid_tf.evaluation.inference import load_model
    from covid_tf.evaluation.metrics import positive_class_index

    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    positive = loaded.class_names[positive_class_index(loaded.class_names)]
    paths = predictions.loc[predictions["label"] == positive, "path"].astype(str).tolist()
    if not paths:
        return None
    if not use_segmenter and (prepare_masks(paths, use_segmenter=False)["lung_mask_source"] == "none").all():
        return None
    table = class_lung_energy(loaded, paths, loaded.class_names.index(positive), use_segmenter=use_segmenter,
                              batch_size=batch_size)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "lung_energy.csv", csv_text(table))
    summary = {"class": positive, "method": "gradcam", **summarize(table)}
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["lung_energy"] = summary
        atomic_write_json(metrics_path, metrics)
    return summary
