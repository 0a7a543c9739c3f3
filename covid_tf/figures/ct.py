"""Figures of the CT workflow: one slice in several windows, votes per patient, Grad-CAM on slices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf import config
from covid_tf.ct import dicom


def window_figure(dicom_path: str | Path, windows: Sequence[str | tuple[float, float]] = ("lung", "mediastinal"),
                  frame: int = 0) -> Figure:
    """One DICOM slice in several windows side by side, with the HU histogram."""
    item = dicom.read_slice(dicom_path, frame)
    hu = item.load_hu()
    figure = Figure(figsize=(3.2 * (len(windows) + 1), 3.4), layout="constrained")
    axes = figure.subplots(1, len(windows) + 1)
    for axis, window in zip(axes, windows):
        center, width = dicom.parse_window(window)
        axis.imshow(item.to_uint8((center, width)), cmap="gray", vmin=0, vmax=255)
        name = window if isinstance(window, str) and window in dicom.WINDOW_PRESETS else "custom"
        axis.set_title(f"{name} window (C {center:g}, W {width:g})")
        axis.set_axis_off()
    axes[-1].hist(hu.ravel(), bins=80, color="#555555")
    for number, window in enumerate(windows):
        center, width = dicom.parse_window(window)
        name = window if isinstance(window, str) else f"{center:g},{width:g}"
        axes[-1].axvspan(center - width / 2, center + width / 2, alpha=0.2, color=f"C{number}", label=name)
    axes[-1].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("Hounsfield units")
    axes[-1].set_ylabel("pixels")
    axes[-1].set_title("HU histogram and windows")
    figure.suptitle(f"Patient {item.patient_id}: one slice, {item.rows}x{item.columns}")
    return figure


def patient_votes_figure(patients: pd.DataFrame, class_names: Sequence[str], title: str = "Votes per patient"
                         ) -> Figure:
    """Stacked bars of each patient's slice votes; the patient's true label and decision below each bar."""
    names = list(class_names)
    figure = Figure(figsize=(max(5.0, 0.55 * len(patients) + 2.0), 3.8), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(patients))
    bottom = np.zeros(len(patients))
    for name in names:
        fractions = patients[f"votes_{name}"].to_numpy(dtype=float) / patients["num_slices"].to_numpy(dtype=float)
        axis.bar(positions, fractions, bottom=bottom, label=name)
        bottom += fractions
    labels = []
    for row in patients.itertuples(index=False):
        truth = getattr(row, "label", "")
        mark = "" if not truth else (" ✓" if row.predicted == truth else " ✗")
        labels.append(f"{row.patient_id}\n{truth or '?'} → {row.predicted}{mark}")
    axis.set_xticks(positions, labels, fontsize=7, rotation=90)
    axis.set_ylim(0, 1)
    axis.set_ylabel("fraction of slices")
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axis.set_title(title)
    return figure


def gradcam_figure(
    model,
    paths: Sequence[str],
    class_names: Sequence[str],
    *,
    image_size: int,
    channels: int = config.CHANNELS,
    labels: Sequence[str] | None = None,
    method: str = "gradcam",
    alpha: float = 0.4,
) -> Figure:
    """Slices (top row) and their Grad-CAM overlays (bottom row), titled with the prediction."""
    from covid_tf import explain
    from covid_tf.data.pipeline import load_images
    from covid_tf.explain.overlay import overlay_heatmap

    if not len(paths):
        raise ValueError("gradcam_figure needs at least one slice")
    images = load_images(list(paths), image_size, channels)
    heatmaps, explained, probabilities = explain.explain(model, images, method=method)
    figure = Figure(figsize=(2.6 * len(paths), 5.6), layout="constrained")
    axes = np.asarray(figure.subplots(2, len(paths))).reshape(2, len(paths))
    for column, image in enumerate(images):
        shown = image[..., 0] if image.shape[-1] == 1 else image
        axes[0, column].imshow(shown, cmap="gray", vmin=0, vmax=1)
        truth = f"true {labels[column]}\n" if labels is not None else ""
        predicted = class_names[int(explained[column])]
        axes[0, column].set_title(f"{truth}pred {predicted} ({probabilities[column, explained[column]]:.2f})",
                                  fontsize=8)
        axes[1, column].imshow(overlay_heatmap(image, heatmaps[column], alpha=alpha))
        axes[1, column].set_title(f"{method}: {predicted}", fontsize=8)
        for row in range(2):
            axes[row, column].set_axis_off()
    return figure
