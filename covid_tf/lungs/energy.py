"""Lung energy: how much of a heatmap lies inside the lungs of the full original image, against chance.

For every explained image, ``explain`` and ``evaluate --lungs`` report ``energy_in_lungs`` (share of the
heat inside the lungs), ``lung_area_fraction`` (share of the image the lungs cover: the chance level) and
their ratio ``lung_energy_ratio`` (1 = no better than chance), with ``lung_mask_source`` saying where the
mask came from (``dataset``, ``segmenter`` or ``none``). Heatmaps of a lung-ROI run are computed on the
model's input (a crop) and mapped back onto the full image first (:func:`covid_tf.lungs.roi.geometry.heatmap_to_full`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

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
