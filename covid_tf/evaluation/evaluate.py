"""The one evaluation of the toolkit: which rows of a dataset to evaluate, and every metric of their predictions.

:func:`evaluate_rows` predicts the rows with any ``paths -> probabilities`` function and scores them
(:func:`score_rows`); training runs (val and test), the ``evaluate`` command
(:mod:`covid_tf.workflows.evaluate`), the CT workflow and the notebooks all call it. No TensorFlow here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.discover import DatasetIndex
from covid_tf.data.image_files import SkippedFile
from covid_tf.data.splits import apply_split_file
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.metrics import positive_class_index
from covid_tf.evaluation.sources import source_metrics
from covid_tf.evaluation.summary import compute_metrics
from covid_tf.evaluation.tables import label_indices
from covid_tf.io_utils import resolved_path

logger = logging.getLogger(__name__)


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
    label_indices(rows["label"], class_names)  # an unknown class is refused before anything is predicted
    probabilities = predict(rows["path"].tolist())
    return probabilities, score_rows(probabilities, rows, class_names, threshold=threshold,
                                     n_bootstrap=n_bootstrap, seed=seed)


def score_headline(probabilities: np.ndarray, rows: pd.DataFrame, class_names: Sequence[str], *,
                   keep: np.ndarray | None = None, sources: Sequence[str] | None = None,
                   threshold: float | None = None, n_bootstrap: int = 1000, seed: int = config.SEED) -> dict:
    """The metrics of the rows in ``keep`` (the headline: the test images that copy no training image), those
    of every row under ``all_images`` when some were left out, and, with ``sources`` (one per row), the
    source-aware metrics of the headline rows under ``sources`` (:mod:`covid_tf.evaluation.sources`)."""
    keep = np.ones(len(rows), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    options = {"threshold": threshold, "n_bootstrap": n_bootstrap, "seed": seed}
    if not keep.any():
        raise ValueError("the headline needs at least one image (runs.overlap.OverlapCheck.headline keeps all "
                         "when every image is a copy)")
    headline_rows = rows[keep].reset_index(drop=True)
    metrics = score_rows(probabilities[keep], headline_rows, class_names, **options)
    if not keep.all():
        metrics["all_images"] = score_rows(probabilities, rows, class_names, **options)
    if sources is not None:
        kept_sources = np.asarray(sources, dtype=str)[keep]
        names = list(class_names)
        metrics["sources"] = source_metrics(
            label_indices(headline_rows["label"], names), probabilities[keep], names, kept_sources,
            positive_index=positive_class_index(names) if len(names) == 2 else None,
            groups=_patient_groups(headline_rows), n_bootstrap=n_bootstrap, seed=seed)
    return metrics


def score_rows(probabilities: np.ndarray, rows: pd.DataFrame, class_names: Sequence[str], *,
               threshold: float | None = None, n_bootstrap: int = 1000, seed: int = config.SEED) -> dict:
    """Every metric of probabilities already computed for ``rows`` (patient level when patients repeat)."""
    y_true = label_indices(rows["label"], class_names)
    return compute_metrics(y_true, probabilities, list(class_names), groups=_patient_groups(rows),
                           threshold=threshold, n_bootstrap=n_bootstrap, seed=seed)
