"""Evaluating a saved model on a dataset, predicting new images, and drawing a run's figures.

The logic behind the ``evaluate`` and ``predict`` commands (which only parse options and print):

- :func:`evaluate_model` loads a ``.keras`` model safely, indexes a dataset (optionally restricted to
  one split of a ``split.csv``), maps the data's labels onto the model's class names, predicts
  (streamed from disk) and writes ``metrics.json``, ``predictions.csv``, ``skipped.csv``,
  ``config.json`` (what was evaluated) and the figures into an output folder;
- :func:`predict_images` writes ``path,predicted,probability,prob_<Class>...`` for unlabelled images,
  in chunks, so memory does not grow with the number of images;
- :func:`write_run_figures` draws a finished training run's figures into ``run_dir/figures/``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.discover import DatasetIndex, SkippedFile, discover, list_images
from covid_tf.data.splits import load_split
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.inference import RUN_CONFIG, LoadedModel, load_model
from covid_tf.evaluation.metrics import confusion, predict_labels
from covid_tf.evaluation.summary import choose_threshold, compute_metrics, positive_class_index
from covid_tf.evaluation.voting import PROB_PREFIX
from covid_tf.io_utils import atomic_write, atomic_write_json, atomic_write_text

FIGURE_NAMES = {
    "training_curves": "training_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "roc_curves": "roc_curves.png",
    "reliability": "reliability_diagram.png",
    "samples": "sample_predictions.png",
    "mistakes": "confident_mistakes.png",
}
OUTPUT_FILES = ("metrics.json", "predictions.csv", "skipped.csv", RUN_CONFIG)
HISTORY_FILE = "history.csv"
SAMPLE_IMAGES = 16
MISTAKE_IMAGES = 8
# Images predicted per chunk by ``predict_images`` (rows are written after each chunk).
PREDICT_CHUNK = 2048


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


@dataclass
class PredictionResult:
    """What :func:`predict_images` wrote and left out."""

    out_path: Path
    n_predicted: int
    skipped: list[SkippedFile]
    class_names: list[str]


def _resolved(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_out_dir(out_dir: Path, data: Path, *, overwrite: bool) -> None:
    """Refuse output folders that would clobber a training run, an earlier evaluation or the input data."""
    if (out_dir / "model.keras").exists():
        raise CovidTfError(f"{out_dir}: holds a training run (model.keras); write the evaluation elsewhere, "
                           f"e.g. --out {out_dir / 'evaluation'}")
    data_root = data.expanduser().resolve()
    if data_root.is_dir() and _is_within(out_dir, data_root):
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
    split column, and no ``split`` keeps every image.
    """
    frame = index.frame.copy()
    frame["_key"] = frame["path"].map(_resolved)
    if split_file is not None:
        split = split or "test"
        table = load_split(split_file)
        keys = table["path"].map(_resolved)
        frame["split"] = frame["_key"].map(dict(zip(keys, table["split"].astype(str)))).fillna("")
        patients = dict(zip(keys, table["patient_id"].astype(str)))
        frame["patient_id"] = frame["_key"].map(patients).fillna(frame["patient_id"].astype(str))
        wanted = set(keys[table["split"] == split])
        if not wanted:
            splits = sorted(set(table["split"].astype(str)) - {""})
            raise CovidTfError(f"{split_file}: has no {split!r} rows (it has {', '.join(splits) or 'none'})")
        reasons = {_resolved(s.path): s.reason for s in index.skipped}
        found = set(frame["_key"])
        skipped = [SkippedFile(key, reasons.get(key, f"listed in {Path(split_file).name} but not among the images "
                                                       "of the data (other folder, class left out or missing)"))
                   for key in sorted(wanted - found)]
        rows = frame[frame["_key"].isin(wanted)]
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
    return rows.drop(columns="_key").reset_index(drop=True), skipped, frame.drop(columns="_key")


def label_indices(labels: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Map label names onto the model's class indices; a clear error for a class the model does not know."""
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({str(label) for label in labels} - set(index_of))
    if unknown:
        raise CovidTfError(
            f"the data has class(es) {', '.join(unknown)} that the model does not know (its classes: "
            f"{', '.join(class_names)}); keep the model's classes with --classes or rename folders with --class-map"
        )
    return np.array([index_of[str(label)] for label in labels], dtype=np.int64)


def _patient_groups(rows: pd.DataFrame) -> np.ndarray | None:
    """Patient ids when some patient has more than one image, else None (image level only)."""
    patients = rows["patient_id"].astype(str)
    return patients.to_numpy() if patients.nunique() < len(patients) else None


def predictions_table(
    paths: Sequence[str], probabilities: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str],
    *, labels: Sequence[str] | None = None, patient_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``path[,label],predicted,probability|prob_<Class>...[,patient_id]`` as a DataFrame."""
    names = np.asarray(class_names, dtype=object)
    table = pd.DataFrame({"path": list(paths)})
    if labels is not None:
        table["label"] = list(labels)
    table["predicted"] = names[y_pred] if len(y_pred) else []
    if labels is None:
        table["probability"] = probabilities[np.arange(len(y_pred)), y_pred] if len(y_pred) else []
    for index, name in enumerate(class_names):
        table[f"{PROB_PREFIX}{name}"] = probabilities[:, index]
    if patient_ids is not None:
        table["patient_id"] = list(patient_ids)
    return table


def _skipped_csv(skipped: Sequence[SkippedFile]) -> str:
    return pd.DataFrame([(s.path, s.reason) for s in skipped], columns=["path", "reason"]).to_csv(index=False)


def _read_history(folder: Path) -> pd.DataFrame | None:
    path = folder / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return None if history.empty else history


def draw_figures(
    out_dir: Path,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    image_size: int | None = None,
    channels: int = config.CHANNELS,
    history: pd.DataFrame | None = None,
    label: str = "",
    seed: int = config.SEED,
) -> list[Path]:
    """Confusion matrix, ROC curves, reliability diagram (and training curves with ``history``; a sample
    grid and the most confident mistakes with ``paths``) as PNGs in ``out_dir``; return their paths."""
    from covid_tf import figures
    from covid_tf.data.pipeline import load_images

    suffix = f" ({label})" if label else ""
    names = list(class_names)
    written = []
    if history is not None:
        written.append(figures.save_figure(figures.plot_training_curves(history, title=f"Training curves{suffix}"),
                                         out_dir / FIGURE_NAMES["training_curves"]))
    matrix = confusion(y_true, y_pred, len(names))
    written.append(figures.save_figure(figures.plot_confusion_matrix(matrix, names, title=f"Confusion matrix{suffix}"),
                                     out_dir / FIGURE_NAMES["confusion_matrix"]))
    written.append(figures.save_figure(figures.plot_roc_curves(y_true, probabilities, names,
                                                           title=f"ROC curves{suffix}"),
                                     out_dir / FIGURE_NAMES["roc_curves"]))
    written.append(figures.save_figure(figures.plot_reliability_diagram(y_true, probabilities, names,
                                                                    title=f"Reliability diagram{suffix}"),
                                     out_dir / FIGURE_NAMES["reliability"]))
    if paths is not None and image_size is not None:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(paths), size=min(SAMPLE_IMAGES, len(paths)), replace=False))
        wrong = np.flatnonzero(y_pred != y_true)
        confidence = probabilities[wrong, y_pred[wrong]]
        mistakes = wrong[np.argsort(-confidence, kind="stable")][:MISTAKE_IMAGES]
        for key, chosen, plot in (("samples", sample, figures.plot_sample_predictions),
                                  ("mistakes", mistakes, figures.plot_confident_mistakes)):
            images = (load_images([paths[i] for i in chosen], image_size, channels) if chosen.size
                      else np.zeros((0, image_size, image_size, channels), dtype="float32"))
            title = ("Sample predictions" if key == "samples" else "Most confident mistakes") + suffix
            fig = plot(images, y_true[chosen], probabilities[chosen], names, y_pred=y_pred[chosen], title=title)
            written.append(figures.save_figure(fig, out_dir / FIGURE_NAMES[key]))
    return written


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
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if threshold is not None and threshold_from_val:
        raise CovidTfError("give either --threshold or --threshold-from-val, not both")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise CovidTfError(f"--threshold must be a probability in [0, 1], got {threshold}")
    if threshold_from_val and split_file is None and split is None:
        raise CovidTfError("--threshold-from-val needs --split-file (its 'val' rows choose the threshold)")
    check_out_dir(out_dir, Path(data), overwrite=overwrite)
    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    binary = len(names) == 2
    if (threshold is not None or threshold_from_val) and not binary:
        raise CovidTfError(f"a decision threshold applies only to binary models; this one has {len(names)} "
                           f"classes ({', '.join(names)})")

    index = discover(data, classes=classes, class_map=class_map)
    rows, skipped, frame = select_rows(index, split_file=split_file, split=split)
    if rows.empty:
        raise CovidTfError(f"{index.root}: no readable images to evaluate")
    y_true = label_indices(rows["label"], names)
    chosen_split = (split or "test") if split_file is not None else split

    notes: list[str] = []
    positive_index = positive_class_index(names) if binary else None
    threshold_source = "default" if binary else None
    if threshold is not None:
        threshold_source = "given"
    elif threshold_from_val:
        threshold, n_val = _threshold_from_val(loaded, frame, positive_index, batch_size)
        threshold_source = f"val (Youden, n={n_val})"
        notes.append(f"threshold {threshold:.4f} on p({names[positive_index]}) chosen on {n_val} val images")

    paths = rows["path"].tolist()
    probabilities = loaded.predict_paths(paths, batch_size=batch_size)
    groups = _patient_groups(rows)
    metrics = compute_metrics(y_true, probabilities, names, groups=groups, threshold=threshold,
                              n_bootstrap=n_bootstrap, seed=seed)
    metrics["threshold_source"] = threshold_source
    used = metrics.get("threshold")
    y_pred = predict_labels(probabilities, threshold=used, positive_index=positive_index)
    table = predictions_table(paths, probabilities, y_pred, names, labels=rows["label"].tolist(),
                              patient_ids=rows["patient_id"].astype(str).tolist())

    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in FIGURE_NAMES.values():
            (out_dir / name).unlink(missing_ok=True)
    atomic_write_text(out_dir / "predictions.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "skipped.csv", _skipped_csv(skipped))
    atomic_write_json(out_dir / RUN_CONFIG, {
        "model": _model_name(loaded), "model_path": str(loaded.path.resolve()), "data": str(index.root),
        "split_file": _resolved(split_file) if split_file is not None else None, "split": chosen_split,
        "classes": list(classes) if classes else None, "class_map": dict(class_map or {}),
        "class_names": names, "image_size": loaded.image_size, "channels": loaded.channels,
        "threshold": used, "threshold_source": threshold_source, "n_skipped": len(skipped),
    })
    label = f"{chosen_split}, n={len(rows)}" if chosen_split else f"n={len(rows)}"
    figures = draw_figures(out_dir, y_true, probabilities, y_pred, names, paths=paths,
                           image_size=loaded.image_size, channels=loaded.channels,
                           history=_read_history(loaded.path.parent), label=label, seed=seed)
    # metrics.json last: its presence marks a finished evaluation.
    atomic_write_json(out_dir / "metrics.json", metrics)
    return EvaluationResult(out_dir, metrics, table, skipped, figures, chosen_split, notes)


def _csv_rows(table: pd.DataFrame, header: bool) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, header=header, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


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

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            for start in range(0, len(paths), PREDICT_CHUNK):
                chunk = paths[start:start + PREDICT_CHUNK]
                probabilities = loaded.predict_paths(chunk, batch_size=batch_size)
                y_pred = predict_labels(probabilities, threshold=threshold, positive_index=positive_index)
                handle.write(_csv_rows(predictions_table(chunk, probabilities, y_pred, names), header=start == 0))

    atomic_write(out_path, write)
    return PredictionResult(out_path, len(paths), skipped, names)


def write_run_figures(run_dir: str | Path, *, model=None, split: str = "test") -> list[Path]:
    """Draw a finished training run's figures into ``run_dir/figures/`` and return their paths.

    Training curves from ``history.csv``; confusion matrix, ROC curves and reliability diagram of the
    ``split`` rows of ``split.csv`` (``val`` when the split has no test rows), predicted by ``model`` (a
    Keras model already in memory) or by ``run_dir/model.keras``. Binary predictions use the 0.5
    threshold, as the run's ``metrics.json`` does.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / RUN_CONFIG
    if not config_path.is_file():
        raise CovidTfError(f"{run_dir}: not a training run (no {RUN_CONFIG})")
    try:
        run_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CovidTfError(f"{config_path}: cannot read ({error})") from None
    figures_dir = run_dir / "figures"
    history = _read_history(run_dir)
    written: list[Path] = []
    if history is not None:
        from covid_tf import figures

        fig = figures.plot_training_curves(history, title=f"Training curves ({run_config.get('model', '?')})")
        written.append(figures.save_figure(fig, figures_dir / FIGURE_NAMES["training_curves"]))

    split_path = run_dir / "split.csv"
    if not split_path.is_file():
        return written
    table = load_split(split_path)
    chosen = next((name for name in (split, "val") if (table["split"] == name).any()), None)
    if chosen is None:
        return written
    rows = table[table["split"] == chosen]
    rows = rows[rows["path"].map(lambda p: Path(p).is_file())]
    if rows.empty:
        raise CovidTfError(f"{split_path}: none of the {chosen!r} images exist any more; cannot draw the figures")
    if model is None:
        loaded = load_model(run_dir / "model.keras")
    else:
        from covid_tf.evaluation.inference import read_class_names

        _, size, _, channels = model.inputs[0].shape
        n_classes = int(model.outputs[0].shape[-1])
        loaded = LoadedModel(model, read_class_names(run_dir / "model.keras", n_classes), int(size), int(channels),
                             run_dir / "model.keras")
    names = list(run_config.get("class_names") or loaded.class_names)
    if len(names) != len(loaded.class_names):
        names = loaded.class_names
    y_true = label_indices(rows["label"].astype(str), names)
    probabilities = loaded.predict_paths(rows["path"].tolist(), batch_size=int(run_config.get("batch_size")
                                                                               or config.BATCH_SIZE))
    binary = len(names) == 2
    positive_index = positive_class_index(names) if binary else None
    y_pred = predict_labels(probabilities, threshold=0.5 if binary else None, positive_index=positive_index)
    written += draw_figures(figures_dir, y_true, probabilities, y_pred, names, label=f"{chosen}, n={len(rows)}")
    return written


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
