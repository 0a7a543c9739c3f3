"""The ``evaluate`` back-end: a saved model on a labelled dataset, in one pass.

:func:`evaluate_model` loads a ``.keras`` model safely, indexes a dataset (optionally restricted to one
split of a ``split.csv``), maps the data's labels onto the model's class names, predicts (streamed from
disk, through the run's lung ROI with the split's own mask paths, as training does), scores with
:func:`covid_tf.evaluation.evaluate.score_rows`, measures the Grad-CAM lung energy of the positive class
when asked, and writes ``predictions.csv``, ``skipped.csv``, ``config.json`` (what was evaluated), the
figures and, last and once, ``metrics.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.discover import discover
from covid_tf.data.image_files import SkippedFile
from covid_tf.data.mask_files import mask_paths_of
from covid_tf.data.sources import image_sources
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.evaluate import score_headline, select_rows
from covid_tf.evaluation.metrics import positive_class_index, predict_labels
from covid_tf.evaluation.operating_point import choose_threshold
from covid_tf.evaluation.tables import label_indices, predictions_table
from covid_tf.explain.lung_energy import positive_class_lung_energy
from covid_tf.figures.run import FIGURE_NAMES, draw_figures
from covid_tf.io_utils import is_within, resolved_path
from covid_tf.lungs.roi.mask_table import fallback_note
from covid_tf.runs import record
from covid_tf.runs.inference import LoadedModel, load_model
from covid_tf.runs.overlap import check_overlap, training_reference
from covid_tf.runs.record import RunRecord

OUTPUT_FILES = (record.METRICS_FILE, record.PREDICTIONS_FILE, record.SKIPPED_FILE, record.CONFIG_FILE,
                record.OVERLAP_FILE)
LUNG_ENERGY_FILE = "lung_energy.csv"


@dataclass
class EvaluationResult:
    """What :func:`evaluate_model` wrote and found."""

    out_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    skipped: list[SkippedFile]
    figures: list[Path]
    split: str | None
    notes: list[str] = field(default_factory=list)


def check_out_dir(out_dir: Path, data: Path, *, overwrite: bool) -> None:
    """Refuse output folders that would clobber a training run, an earlier evaluation or the input data."""
    if (out_dir / record.MODEL_FILE).exists():
        raise CovidTfError(f"{out_dir}: holds a training run (model.keras); write the evaluation elsewhere, "
                           f"e.g. --out {out_dir / 'evaluation'}")
    data_root = data.expanduser().resolve()
    if data_root.is_dir() and is_within(out_dir, data_root):
        raise CovidTfError(f"{out_dir}: is inside the input data folder {data_root}; choose an --out elsewhere")
    if (out_dir / record.METRICS_FILE).exists() and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds an evaluation (metrics.json); choose another --out "
                           "or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")


def _threshold_from_val(
    loaded: LoadedModel, frame: pd.DataFrame, positive_index: int, batch_size: int
) -> tuple[float, int]:
    """Youden threshold on the ``val`` rows of ``frame``; returns it and the number of val images."""
    val_rows = frame[frame["split"] == "val"]
    if val_rows.empty:
        raise CovidTfError("--threshold-from-val: the split has no readable 'val' images")
    y_val = label_indices(val_rows["label"], loaded.class_names)
    p_val = loaded.predict_paths(val_rows["path"].tolist(), batch_size=batch_size, mask_paths=mask_paths_of(val_rows))
    try:
        threshold = choose_threshold(y_val, p_val[:, positive_index], "youden", positive_label=positive_index)
    except ValueError as error:
        raise CovidTfError(f"--threshold-from-val: cannot choose a threshold on the val images ({error})") from None
    return float(threshold), len(val_rows)


def _decision_threshold(loaded: LoadedModel, frame: pd.DataFrame, threshold: float | None, from_val: bool,
                        batch_size: int, notes: list[str]) -> tuple[float | None, str | None]:
    """The threshold of a binary evaluation (given, chosen on the val rows, or the default) and where it came from."""
    names = loaded.class_names
    if len(names) != 2:
        return threshold, None
    if threshold is not None:
        return threshold, "given"
    if not from_val:
        return None, "default"
    positive_index = positive_class_index(names)
    threshold, n_val = _threshold_from_val(loaded, frame, positive_index, batch_size)
    notes.append(f"threshold {threshold:.4f} on p({names[positive_index]}) chosen on {n_val} val images")
    return threshold, f"val (Youden, n={n_val})"


def _write_tables(out_dir: Path, table: pd.DataFrame, skipped: Sequence[SkippedFile], overwrite: bool,
                  run_config: dict) -> None:
    """``predictions.csv``, ``skipped.csv`` and the evaluation's ``config.json`` with the software versions (stale
    figures removed first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in FIGURE_NAMES.values():
            (out_dir / name).unlink(missing_ok=True)
        (out_dir / LUNG_ENERGY_FILE).unlink(missing_ok=True)
    record.write_table(out_dir, record.PREDICTIONS_FILE, table)
    record.write_skipped(out_dir, [(item.path, item.reason) for item in skipped])
    record.write_config(out_dir, run_config)


def _check_evaluate_options(batch_size: int, threshold: float | None, threshold_from_val: bool,
                            split_file: str | Path | None, split: str | None) -> None:
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if threshold is not None and threshold_from_val:
        raise CovidTfError("give either --threshold or --threshold-from-val, not both")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise CovidTfError(f"--threshold must be a probability in [0, 1], got {threshold}")
    if threshold_from_val and split_file is None and split is None:
        raise CovidTfError("--threshold-from-val needs --split-file (its 'val' rows choose the threshold)")


def evaluate_model(
    model_path: str | Path, data: str | Path, out_dir: str | Path, *, split_file: str | Path | None = None,
    split: str | None = None, classes: Sequence[str] | None = None, class_map: dict[str, str] | None = None,
    threshold: float | None = None, threshold_from_val: bool = False, batch_size: int = config.BATCH_SIZE,
    allow_unsafe: bool = False, overwrite: bool = False, n_bootstrap: int = 1000, seed: int = config.SEED,
    lungs: bool | None = None, keep_overlap: bool = False, source_column: str | None = None,
) -> EvaluationResult:
    """Evaluate a saved model on a labelled dataset and write metrics, predictions and figures to ``out_dir``.

    ``lungs``: the Grad-CAM lung energy of the positive class's images (``lung_energy.csv`` and ``lung_energy``
    in ``metrics.json``): ``True`` with the segmenter's masks where the data has none, ``False`` only where the
    data has its own masks, ``None`` (the default) not at all.

    Copies of the run's training and validation images (:mod:`covid_tf.runs.overlap`) go to ``overlap.csv`` and out
    of the headline (``keep_overlap``: kept); all images' metrics are then under ``all_images``. With a source per
    image (the data CSV's ``source`` or ``source_column``), ``sources`` holds the source-aware metrics.
    """
    out_dir = Path(out_dir)
    _check_evaluate_options(batch_size, threshold, threshold_from_val, split_file, split)
    check_out_dir(out_dir, Path(data), overwrite=overwrite)
    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    if (threshold is not None or threshold_from_val) and len(names) != 2:
        raise CovidTfError(f"a decision threshold applies only to binary models; this one has {len(names)} "
                           f"classes ({', '.join(names)})")
    training = training_reference(RunRecord.of_model(loaded.path))  # first: no frame thumbnails without it
    index = discover(data, classes=classes, class_map=class_map, frame_readings=training.frame_readings)
    rows, skipped, frame = select_rows(index, split_file=split_file, split=split)
    y_true = label_indices(rows["label"], names)
    chosen_split = (split or "test") if split_file is not None else split
    notes: list[str] = []  # the data's own notes are said by select_rows
    threshold, threshold_source = _decision_threshold(loaded, frame, threshold, threshold_from_val, batch_size, notes)

    overlap = check_overlap(training, rows["path"].tolist(),
                            training.test_thumbnails(rows["path"], index.frame_thumbnails.__getitem__))
    probabilities, roi_table = loaded.predict_with_roi(rows["path"].tolist(), batch_size, mask_paths_of(rows))
    keep = overlap.headline(keep_overlap=keep_overlap)
    metrics = score_headline(probabilities, rows, names, keep=keep, threshold=threshold, n_bootstrap=n_bootstrap,
                             sources=image_sources(index.root, rows["path"].tolist(), source_column), seed=seed)
    metrics.update(threshold_source=threshold_source, overlap=overlap.summary(excluded=not keep_overlap))
    notes.extend(filter(None, [*overlap.notes, overlap.warning(excluded=not keep_overlap),
                               fallback_note(roi_table), *(metrics.get("sources") or {}).get("warnings", [])]))
    table = _predictions(rows, probabilities, names, metrics.get("threshold"))
    _write_tables(out_dir, table, skipped, overwrite, _evaluation_config(
        loaded, index.root, split_file, chosen_split, classes, class_map, metrics, threshold_source, len(skipped)))
    record.write_table(out_dir, record.OVERLAP_FILE, overlap.copies)
    figures = _draw(out_dir, loaded, rows[keep], y_true[keep], probabilities[keep],
                    label_indices(table["predicted"], names)[keep], chosen_split, seed)
    if lungs is not None:
        energy = positive_class_lung_energy(loaded, rows, use_segmenter=bool(lungs), batch_size=batch_size)
        if energy is not None:
            record.write_table(out_dir, LUNG_ENERGY_FILE, energy[0])
            metrics["lung_energy"] = energy[1]
    record.write_metrics(out_dir, metrics)  # last, and once: its presence marks a finished evaluation
    return EvaluationResult(out_dir, metrics, table, skipped, figures, chosen_split, notes)


def _draw(out_dir: Path, loaded: LoadedModel, rows: pd.DataFrame, y_true: np.ndarray, probabilities: np.ndarray,
          predicted: np.ndarray, chosen_split: str | None, seed: int) -> list[Path]:
    """The evaluation's figures, of the headline's images."""
    label = f"{chosen_split}, n={len(rows)}" if chosen_split else f"n={len(rows)}"
    return draw_figures(out_dir, y_true, probabilities, predicted, loaded.class_names, paths=rows["path"].tolist(),
                        image_size=loaded.image_size, channels=loaded.channels,
                        history=RunRecord.of_model(loaded.path).history(), seed=seed, label=label)


def _predictions(rows: pd.DataFrame, probabilities: np.ndarray, names: Sequence[str],
                 threshold: float | None) -> pd.DataFrame:
    positive_index = positive_class_index(names) if len(names) == 2 else None
    y_pred = predict_labels(probabilities, threshold=threshold, positive_index=positive_index)
    return predictions_table(rows["path"].tolist(), probabilities, y_pred, names, labels=rows["label"].tolist(),
                             patient_ids=rows["patient_id"].astype(str).tolist())


def _evaluation_config(loaded: LoadedModel, data_root: Path, split_file, chosen_split, classes, class_map,
                       metrics: dict, threshold_source: str | None, n_skipped: int) -> dict[str, Any]:
    return {
        "model": (loaded.record.model_name if loaded.record else None) or loaded.path.stem,
        "model_path": str(loaded.path.resolve()), "data": str(data_root),
        "split_file": resolved_path(split_file) if split_file is not None else None, "split": chosen_split,
        "classes": list(classes) if classes else None, "class_map": dict(class_map or {}),
        "class_names": loaded.class_names, "image_size": loaded.image_size, "channels": loaded.channels,
        "threshold": metrics.get("threshold"), "threshold_source": threshold_source, "n_skipped": n_skipped,
        "roi": loaded.roi.mode,
    }


def print_skipped(skipped: Sequence[SkippedFile], *, limit: int | None = None, stream=None) -> None:
    """List skipped files with their reasons on stderr (the first ``limit`` of them)."""
    stream = stream or sys.stderr
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s):", file=stream)
    shown = skipped if limit is None else skipped[:limit]
    for item in shown:
        print(f"  {item.path}: {item.reason}", file=stream)
    if len(shown) < len(skipped):
        print(f"  ... and {len(skipped) - len(shown)} more", file=stream)
