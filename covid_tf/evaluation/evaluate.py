"""Evaluating a saved model on a dataset, predicting new images, and drawing a run's figures.

The logic behind the ``evaluate`` and ``predict`` commands (which only parse options and print):

- :func:`evaluate_model` loads a ``.keras`` model safely, indexes a dataset (optionally restricted to
  one split of a ``split.csv``), maps the data's labels onto the model's class names, predicts
  (streamed from disk) and writes ``metrics.json``, ``predictions.csv``, ``skipped.csv``,
  ``config.json`` (what was evaluated) and the figures into an output folder;
  in chunks, so memory does not grow with the number of images;
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covid_tf import config, software_versions
from covid_tf.data.discover import DatasetIndex, SkippedFile, discover
from covid_tf.data.splits import apply_split_file
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.inference import RUN_CONFIG, LoadedModel, label_indices, load_model, predictions_table
from covid_tf.evaluation.metrics import positive_class_index, predict_labels
from covid_tf.evaluation.operating_point import choose_threshold
from covid_tf.evaluation.summary import compute_metrics
from covid_tf.figures.run import FIGURE_NAMES, draw_figures, read_history
from covid_tf.io_utils import atomic_write_json, atomic_write_text, csv_text, is_within, resolved_path
from covid_tf.lungs.roi_inputs import fallback_note

logger = logging.getLogger(__name__)
OUTPUT_FILES = ("metrics.json", "predictions.csv", "skipped.csv", RUN_CONFIG)


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
    if (out_dir / "model.keras").exists():
        raise CovidTfError(f"{out_dir}: holds a training run (model.keras); write the evaluation elsewhere, "
                           f"e.g. --out {out_dir / 'evaluation'}")
    data_root = data.expanduser().resolve()
    if data_root.is_dir() and is_within(out_dir, data_root):
        raise CovidTfError(f"{out_dir}: is inside the input data folder {data_root}; choose an --out elsewhere")
    if (out_dir / "metrics.json").exists() and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds an evaluation (metrics.json); choose another --out "
                           "or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")


def _model_name(loaded: LoadedModel) -> str:
    """The architecture named in the run's config.json beside the model, else the model file's name."""
    run_config = loaded.path.parent / RUN_CONFIG
    try:
        name = json.loads(run_config.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name) if name else loaded.path.stem


def select_rows(
    index: DatasetIndex, *, split_file: str | Path | None = None, split: str | None = None
) -> tuple[pd.DataFrame, list[SkippedFile], pd.DataFrame]:
    """Rows of ``index`` to evaluate, the skipped files among them, and the whole (split-annotated) frame.

    With ``split_file``, each image takes its split (and patient id) from the file, matched on resolved
    paths, and only the rows of ``split`` (default ``test``) are kept; rows of that split that are not
    readable images of the data are reported as skipped. Without it, ``split`` filters the layout's own
    split column, and no ``split`` keeps every image. The data's notes are said as warnings, before any prediction.
    """
    for note in index.notes:  # what the data reader left out or repaired
        logger.warning(note)
    frame = index.frame.copy()
    frame["key"] = frame["path"].map(resolved_path)
    if split_file is not None:
        split = split or "test"
        frame, table = apply_split_file(index.frame, split_file)
        keys = table["key"]
        wanted = set(keys[table["split"] == split])
        if not wanted:
            splits = sorted(set(table["split"].astype(str)) - {""})
            raise CovidTfError(f"{split_file}: has no {split!r} rows (it has {', '.join(splits) or 'none'})")
        reasons = {resolved_path(s.path): s.reason for s in index.skipped}
        found = set(frame["key"])
        skipped = [SkippedFile(key, reasons.get(key, f"listed in {Path(split_file).name} but not among the images "
                                                       "of the data (other folder, class left out or missing)"))
                   for key in sorted(wanted - found)]
        rows = frame[frame["key"].isin(wanted)]
        if rows.empty:
            raise CovidTfError(f"{split_file}: none of its {len(wanted)} {split!r} images are readable images of "
                               f"{index.root}; is it the split of this dataset?")
    else:
        skipped = list(index.skipped)
        if split is not None:
            if not (frame["split"] != "").any():
                raise CovidTfError(f"{index.root}: has no split of its own; give --split-file to pick {split!r}")
            rows = frame[frame["split"] == split]
            if rows.empty:
                raise CovidTfError(f"{index.root}: has no {split!r} images")
        else:
            rows = frame
    if rows.empty:
        raise CovidTfError(f"{index.root}: no readable images to evaluate")
    return rows.drop(columns="key").reset_index(drop=True), skipped, frame.drop(columns="key")


def _patient_groups(rows: pd.DataFrame) -> np.ndarray | None:
    """Patient ids when some patient has more than one image, else None (image level only)."""
    patients = rows["patient_id"].astype(str)
    return patients.to_numpy() if patients.nunique() < len(patients) else None


def evaluate_rows(
    predict: Callable[[list[str]], np.ndarray],
    rows: pd.DataFrame,
    class_names: Sequence[str],
    *,
    threshold: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = config.SEED,
) -> tuple[np.ndarray, dict]:
    """The one evaluation of the toolkit: predict the images of ``rows`` (``path,label,patient_id``), then
    every metric (:func:`~covid_tf.evaluation.summary.compute_metrics`; patient level when patients repeat).

    ``predict`` maps a list of paths to softmax probabilities ``(N, K)``. Training runs (val and test),
    the ``evaluate`` command, the CT workflow and the notebooks all call this. Returns
    ``(probabilities, metrics)``.
    """
    y_true = label_indices(rows["label"], class_names)
    probabilities = predict(rows["path"].tolist())
    metrics = compute_metrics(y_true, probabilities, list(class_names), groups=_patient_groups(rows),
                              threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
    return probabilities, metrics


def _skipped_csv(skipped: Sequence[SkippedFile]) -> str:
    return csv_text(pd.DataFrame([(s.path, s.reason) for s in skipped], columns=["path", "reason"]))


def _threshold_from_val(
    loaded: LoadedModel, frame: pd.DataFrame, positive_index: int, batch_size: int
) -> tuple[float, int]:
    """Youden threshold on the ``val`` rows of ``frame``; returns it and the number of val images."""
    val_rows = frame[frame["split"] == "val"]
    if val_rows.empty:
        raise CovidTfError("--threshold-from-val: the split has no readable 'val' images")
    y_val = label_indices(val_rows["label"], loaded.class_names)
    p_val = loaded.predict_paths(val_rows["path"].tolist(), batch_size=batch_size)
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
    atomic_write_text(out_dir / "predictions.csv", csv_text(table))
    atomic_write_text(out_dir / "skipped.csv", _skipped_csv(skipped))
    atomic_write_json(out_dir / RUN_CONFIG, {**run_config, "versions": software_versions()})


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
    model_path: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    split_file: str | Path | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    class_map: dict[str, str] | None = None,
    threshold: float | None = None,
    threshold_from_val: bool = False,
    batch_size: int = config.BATCH_SIZE,
    allow_unsafe: bool = False,
    overwrite: bool = False,
    n_bootstrap: int = 1000,
    seed: int = config.SEED,
) -> EvaluationResult:
    """Evaluate a saved model on a labelled dataset and write metrics, predictions and figures to ``out_dir``."""
    out_dir = Path(out_dir)
    _check_evaluate_options(batch_size, threshold, threshold_from_val, split_file, split)
    check_out_dir(out_dir, Path(data), overwrite=overwrite)
    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    binary = len(names) == 2
    if (threshold is not None or threshold_from_val) and not binary:
        raise CovidTfError(f"a decision threshold applies only to binary models; this one has {len(names)} "
                           f"classes ({', '.join(names)})")

    index = discover(data, classes=classes, class_map=class_map)
    rows, skipped, frame = select_rows(index, split_file=split_file, split=split)
    y_true = label_indices(rows["label"], names)
    chosen_split = (split or "test") if split_file is not None else split
    notes: list[str] = []
    positive_index = positive_class_index(names) if binary else None
    threshold, threshold_source = _decision_threshold(loaded, frame, threshold, threshold_from_val, batch_size, notes)

    paths = rows["path"].tolist()
    probabilities, metrics = evaluate_rows(partial(loaded.predict_paths, batch_size=batch_size), rows, names,
                                           threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
    metrics["threshold_source"] = threshold_source
    notes.extend(filter(None, [fallback_note(loaded.roi_table)]))  # a --roi run: masks, images used whole
    used = metrics.get("threshold")
    y_pred = predict_labels(probabilities, threshold=used, positive_index=positive_index)
    table = predictions_table(paths, probabilities, y_pred, names, labels=rows["label"].tolist(),
                              patient_ids=rows["patient_id"].astype(str).tolist())

    _write_tables(out_dir, table, skipped, overwrite, {
        "model": _model_name(loaded), "model_path": str(loaded.path.resolve()), "data": str(index.root),
        "split_file": resolved_path(split_file) if split_file is not None else None, "split": chosen_split,
        "classes": list(classes) if classes else None, "class_map": dict(class_map or {}),
        "class_names": names, "image_size": loaded.image_size, "channels": loaded.channels,
        "threshold": used, "threshold_source": threshold_source, "n_skipped": len(skipped), "roi": loaded.roi.mode,
    })
    figures = draw_figures(out_dir, y_true, probabilities, y_pred, names, paths=paths,
                           image_size=loaded.image_size, channels=loaded.channels,
                           history=read_history(loaded.path.parent), seed=seed,
                           label=f"{chosen_split}, n={len(rows)}" if chosen_split else f"n={len(rows)}")
    # metrics.json last: its presence marks a finished evaluation.
    atomic_write_json(out_dir / "metrics.json", metrics)
    return EvaluationResult(out_dir, metrics, table, skipped, figures, chosen_split, notes)



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
