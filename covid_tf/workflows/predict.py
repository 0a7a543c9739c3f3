"""The ``predict`` back-end: class probabilities of unlabelled images (files or folders) into a CSV."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from covid_tf import config
from covid_tf.data.image_files import SkippedFile, list_images
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.metrics import positive_class_index, predict_labels
from covid_tf.evaluation.tables import predictions_table
from covid_tf.io_utils import atomic_write, csv_rows
from covid_tf.lungs.roi.mask_table import fallback_note
from covid_tf.runs.inference import load_model

# Images predicted per chunk by ``predict_images`` (rows are written after each chunk).
PREDICT_CHUNK = 2048


@dataclass
class PredictionResult:
    """What :func:`predict_images` wrote and left out."""

    out_path: Path
    n_predicted: int
    skipped: list[SkippedFile]
    class_names: list[str]
    roi_note: str = ""  # ROI runs: mask sources and images used whole for want of plausible lungs


def predict_images(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out_path: str | Path,
    *,
    batch_size: int = config.BATCH_SIZE,
    allow_unsafe: bool = False,
    overwrite: bool = False,
    threshold: float | None = None,
    on_skipped=None,
) -> PredictionResult:
    """Predict unlabelled images (files or folders) into a CSV ``path,predicted,probability,prob_<Class>...``.

    Unreadable files are left out and returned (``on_skipped(skipped_file)`` is called for each as soon as
    they are known). Images are predicted and written ``PREDICT_CHUNK`` at a time into a temporary file that
    replaces ``out_path`` at the end. Raises ``CovidTfError`` when no image could be predicted.
    """
    out_path = Path(out_path)
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if out_path.is_dir():
        raise CovidTfError(f"{out_path}: is a folder; --out takes a CSV file name")
    if out_path.exists() and not overwrite:
        raise CovidTfError(f"{out_path}: already exists; choose another --out or pass --overwrite")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise CovidTfError(f"--threshold must be a probability in [0, 1], got {threshold}")
    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    positive_index = None
    if threshold is not None:
        if len(names) != 2:
            raise CovidTfError(f"--threshold applies only to binary models; this one has {len(names)} classes")
        positive_index = positive_class_index(names)

    paths, skipped = list_images(inputs)
    if on_skipped is not None:
        for item in skipped:
            on_skipped(item)
    if not paths:
        raise CovidTfError(f"no readable image among the {len(inputs)} input(s) ({len(skipped)} file(s) skipped); "
                           "nothing predicted")

    tables = []

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            for start in range(0, len(paths), PREDICT_CHUNK):
                chunk = paths[start:start + PREDICT_CHUNK]
                probabilities, roi_table = loaded.predict_with_roi(chunk, batch_size=batch_size)
                y_pred = predict_labels(probabilities, threshold=threshold, positive_index=positive_index)
                table = predictions_table(chunk, probabilities, y_pred, names)
                if roi_table is not None:  # flagged, and still classified on the full image
                    tables.append(roi_table)
                    table["lung_mask_source"] = roi_table["lung_mask_source"].to_numpy()
                    table["roi_applied"] = roi_table["roi_applied"].to_numpy()
                handle.write(csv_rows(table, header=start == 0))

    atomic_write(out_path, write)
    note = fallback_note(pd.concat(tables, ignore_index=True)) if tables else ""
    return PredictionResult(out_path, len(paths), skipped, names, note)
