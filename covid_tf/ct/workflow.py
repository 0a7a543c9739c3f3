"""The CT slice workflow of seed 002: DICOM series -> PNG slices -> slice classifier -> one label per patient.

Steps, each one call:

1. :func:`convert_ct` converts a DICOM folder (e.g. ``covid_tf.synthetic_ct`` output, or SPGC-style
   ``Test1/<patient>/*.dcm``) into windowed PNG slices with :func:`covid_tf.dicom.convert_to_png` and writes
   a label CSV ``OUT/metadata.csv`` (``path,label,patient_id,folder,series_uid,slice_index,num_slices,
   source_path,frame``; ``path`` relative to OUT, ``source_path`` the DICOM file) that
   :func:`covid_tf.data.discover` reads, patient ids included. Labels come from
   ``labels`` (a dict or CSV ``patient_id,label``) or ``DICOM_DIR/labels.csv``; slices of unlabelled patients
   stay in ``index.csv`` but not in ``metadata.csv``. :func:`prepare_ct_data` does this only for DICOM input
   and passes folders of PNG slices (e.g. the UCSD COVID-CT set) through unchanged.
2. :func:`train_slices` (or :func:`slice_config` + ``train_run``) trains a slice classifier; by default as seed 002
   did, VGG16 with focal loss. Splits are grouped by ``patient_id``, so a patient's slices share one split.
3. :func:`evaluate_ct` evaluates the run's model on its test slices
   (:func:`covid_tf.evaluation.run.evaluate_model`: ``metrics.json``, ``predictions.csv``, figures), then votes
   per patient with :func:`covid_tf.voting.vote` (``majority`` and ``mean``) and writes one patients CSV per
   rule plus one per test folder (:func:`covid_tf.voting.write_patient_csvs`) and ``patient_metrics.json``.

The *test folder* of a slice is the first folder below the DICOM root when the file lies at least two folders
deep (``Test1/P001/IM1.dcm`` -> ``Test1``; the synthetic ``COVID/COVID001/IM1.dcm`` -> ``COVID``), else ``""``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf import config
from covid_tf.ct import dicom
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import voting
from covid_tf.evaluation.metrics import accuracy, balanced_accuracy, confusion, one_vs_rest_auc, to_jsonable
from covid_tf.io_utils import atomic_write_json, atomic_write_text

METADATA_NAME = "metadata.csv"
METADATA_COLUMNS = (
    "path", "label", "patient_id", "folder", "series_uid", "slice_index", "num_slices", "source_path", "frame",
)
PATIENT_METRICS_NAME = "patient_metrics.json"
# Seed 002: VGG16 fine-tuned with focal loss on the slices.
SEED002_MODEL = "vgg16"
SEED002_LOSS = "focal"


@dataclass
class CtSlices:
    """What :func:`convert_ct` wrote: PNG slices under ``root`` and the label CSV ``csv_path``."""

    root: Path
    csv_path: Path
    table: pd.DataFrame  # METADATA_COLUMNS, one row per labelled slice
    num_unlabelled: int  # converted slices of patients without a label (not in the CSV)
    skipped: pd.DataFrame  # path, reason: files that were not converted

    @property
    def num_patients(self) -> int:
        return int(self.table["patient_id"].nunique()) if len(self.table) else 0


@dataclass
class CtEvaluation:
    """Slice-level and patient-level results of :func:`evaluate_ct`."""

    out_dir: Path
    class_names: list[str]
    slice_metrics: dict[str, Any]
    predictions: pd.DataFrame  # predictions.csv plus a folder column
    patients: dict[str, pd.DataFrame]  # rule -> voting.vote table (one row per patient)
    patient_metrics: dict[str, dict[str, Any]]  # rule -> metrics of the patient decisions
    patient_csvs: dict[str, list[Path]] = field(default_factory=dict)  # rule -> written CSVs
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# DICOM -> PNG slices with a label CSV


def dicom_test_folder(source_path: str | Path, dicom_root: str | Path) -> str:
    """The test folder of a DICOM file: the first folder below ``dicom_root`` when the file is two deep."""
    try:
        parts = Path(source_path).resolve().relative_to(Path(dicom_root).resolve()).parts
    except ValueError:
        return ""
    return parts[0] if len(parts) >= 3 else ""


def is_dicom_dataset(directory: str | Path) -> bool:
    """True when ``directory`` holds files that may be DICOM (anything but images, CSVs and other known formats)."""
    return Path(directory).is_dir() and bool(dicom.iter_candidate_files(directory))


def convert_ct(
    dicom_dir: str | Path,
    out_dir: str | Path,
    *,
    window: str | tuple[float, float] = "lung",
    labels: Mapping[str, str] | str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = False,
) -> CtSlices:
    """Convert a DICOM folder to PNG slices and write the label CSV ``out_dir/metadata.csv``.

    ``labels`` maps patient ids to classes (a dict or a CSV ``patient_id,label``; default
    ``dicom_dir/labels.csv``). Raises ``CovidTfError`` when no slice could be converted or none has a label.
    """
    result = dicom.convert_to_png(dicom_dir, out_dir, window=window, overwrite=overwrite, labels=labels,
                                  progress=progress)
    index = result.index
    if index.empty:
        raise CovidTfError(f"{dicom_dir}: no DICOM slice could be converted ({result.num_skipped} file(s) skipped, "
                           f"see {result.out_dir / 'skipped.csv'})")
    labelled = index[index["label"].fillna("").astype(str).str.strip() != ""]
    if labelled.empty:
        raise CovidTfError(f"{dicom_dir}: none of the {index['patient_id'].nunique()} patient(s) has a label; "
                           "give labels (a CSV patient_id,label) or put a labels.csv in the DICOM folder")
    table = pd.DataFrame({
        "path": labelled["png_path"].astype(str),
        "label": labelled["label"].astype(str).str.strip(),
        "patient_id": labelled["patient_id"].astype(str),
        "folder": [dicom_test_folder(path, dicom_dir) for path in labelled["source_path"]],
        "series_uid": labelled["series_uid"].astype(str),
        "slice_index": labelled["slice_index"].astype(int),
        "num_slices": labelled["num_slices"].astype(int),
        "source_path": labelled["source_path"].astype(str),
        "frame": labelled["frame"].astype(int),
    }, columns=list(METADATA_COLUMNS)).reset_index(drop=True)
    csv_path = result.out_dir / METADATA_NAME
    atomic_write_text(csv_path, table.to_csv(index=False))
    return CtSlices(result.out_dir, csv_path, table, len(index) - len(labelled), result.skipped)


def prepare_ct_data(
    ct_dir: str | Path,
    png_dir: str | Path | None = None,
    *,
    window: str | tuple[float, float] = "lung",
    labels: Mapping[str, str] | str | Path | None = None,
) -> tuple[str, CtSlices | None]:
    """Training data for ``ct_dir``: converted (into ``png_dir``, replacing an earlier conversion) when it holds
    DICOM, else ``ct_dir`` itself (any layout ``discover`` reads). Returns (absolute data path, conversion or None).
    """
    ct_path = Path(ct_dir).expanduser()
    if not ct_path.exists():
        raise CovidTfError(f"{ct_dir}: CT folder not found")
    if not is_dicom_dataset(ct_path):
        return str(ct_path.resolve()), None
    png_path = Path(png_dir) if png_dir is not None else config.INTERIM_DATA_DIR / f"{ct_path.resolve().name}_png"
    slices = convert_ct(ct_path, png_path, window=window, labels=labels, overwrite=True)
    return str(slices.csv_path), slices


# --------------------------------------------------------------------------------------------------
# Slice classifier


def slice_config(data: str | Path, *, model: str = SEED002_MODEL, loss: str = SEED002_LOSS, **options: Any):
    """A :class:`covid_tf.train.TrainConfig` for a slice classifier, by default seed 002's VGG16 with focal loss.

    ``data`` is a label CSV from :func:`convert_ct` or a folder of slices; ``options`` are further
    ``TrainConfig`` fields (``image_size``, ``epochs``, ``fine_tune_epochs``, ``weights``, ``split_fractions``...).
    """
    from covid_tf.training import fit as train

    # An absolute path, so that the run's config.json still finds the data from another working directory.
    return train.TrainConfig(data=str(Path(data).expanduser().resolve()), model=model, loss=loss, **options)


def train_slices(
    data: str | Path,
    run_dir: str | Path | None,
    *,
    overwrite: bool = False,
    verbose: int | str = "auto",
    **options: Any,
):
    """Train a slice classifier (:func:`slice_config` with ``options``) with :func:`covid_tf.train.train_run`.

    Splits are grouped by patient id, so a patient's slices share one split. Returns the ``TrainResult``.
    """
    from covid_tf.training import fit as train

    return train.train_run(slice_config(data, **options), run_dir, overwrite=overwrite, verbose=verbose)


# --------------------------------------------------------------------------------------------------
# Slice-level and patient-level evaluation


def _folders_from_csv(data: Path) -> dict[str, str] | None:
    """Resolved path -> test folder, from a label CSV with a ``folder`` column (else None)."""
    csv_path = data if data.is_file() else data / METADATA_NAME
    if not csv_path.is_file():
        return None
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if not {"path", "folder"} <= set(table.columns):
        return None
    base = csv_path.parent
    return {str((base / path).resolve()): folder for path, folder in zip(table["path"], table["folder"])}


def patient_metrics(patients: pd.DataFrame, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, confusion matrix (rows true) of a :func:`covid_tf.voting.vote` table, and the
    ROC-AUC of the patients' mean probabilities (binary: of the positive class; else macro one-vs-rest)."""
    from covid_tf.evaluation.metrics import macro_auc, positive_class_index

    names = list(class_names)
    labelled = patients[patients["label"].astype(str) != ""] if "label" in patients else patients.iloc[:0]
    result: dict[str, Any] = {"n_patients": int(len(patients)), "n_labelled": int(len(labelled))}
    if labelled.empty:
        return result
    index_of = {name: i for i, name in enumerate(names)}
    y_true = labelled["label"].map(index_of).to_numpy(dtype=np.int64)
    y_pred = labelled["predicted"].map(index_of).to_numpy(dtype=np.int64)
    probabilities = labelled[[f"mean_prob_{name}" for name in names]].to_numpy(dtype=np.float64)
    per_class_auc, _ = one_vs_rest_auc(y_true, probabilities, names)
    roc_auc = per_class_auc[positive_class_index(names)] if len(names) == 2 else macro_auc(per_class_auc)
    result.update({
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "roc_auc_mean_probability": roc_auc,
        "confusion_matrix": confusion(y_true, y_pred, len(names)),
        "ties": int(labelled["tie"].sum()),
    })
    return to_jsonable(result)


def evaluate_ct(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    data: str | Path | None = None,
    split: str = "test",
    rules: Sequence[str] = voting.RULES,
    batch_size: int = config.BATCH_SIZE,
    n_bootstrap: int = 1000,
    overwrite: bool = True,
) -> CtEvaluation:
    """Evaluate a training run's model per slice and per patient on the ``split`` rows of its ``split.csv``.

    Writes into ``out_dir`` (default ``run_dir/ct_evaluation``): what ``evaluate_model`` writes, then
    ``patients_<rule>.csv`` (all patients) and ``patients_<rule>_<folder>.csv`` (one per test folder when there
    are several), and ``patient_metrics.json``. ``data`` defaults to the run's training data.
    """
    from covid_tf.evaluation.evaluate import evaluate_model

    run_path = Path(run_dir)
    config_path = run_path / "config.json"
    if not config_path.is_file() or not (run_path / "model.keras").is_file():
        raise CovidTfError(f"{run_path}: not a finished training run (needs config.json and model.keras)")
    unknown = [rule for rule in rules if rule not in voting.RULES]
    if unknown or not rules:
        raise CovidTfError(f"unknown voting rule(s) {unknown or list(rules)}: use {list(voting.RULES)}")
    run_config = json.loads(config_path.read_text(encoding="utf-8"))
    data_path = Path(data or run_config["data"])
    out_path = Path(out_dir) if out_dir is not None else run_path / "ct_evaluation"
    evaluation = evaluate_model(
        run_path / "model.keras", data_path, out_path, split_file=run_path / "split.csv", split=split,
        classes=run_config.get("classes"), class_map=run_config.get("class_map") or None, batch_size=batch_size,
        overwrite=overwrite, n_bootstrap=n_bootstrap, seed=int(run_config.get("seed", config.SEED)),
    )
    names = list(evaluation.metrics["class_names"])
    predictions = evaluation.predictions.copy()
    notes = list(evaluation.notes)
    folders = _folders_from_csv(data_path)
    if folders is not None:
        predictions["folder"] = predictions["path"].map(lambda path: folders.get(str(Path(path).resolve()), ""))
    if predictions["patient_id"].nunique() == len(predictions):
        notes.append("every test slice has its own patient id (no patient ids in the data): "
                     "patient-level results equal slice-level ones")
    patients, metrics, written = {}, {}, {}
    for rule in rules:
        table = voting.vote(predictions, names, rule=rule, source=str(out_path / "predictions.csv"))
        notes.extend(note for note in table.attrs.get("notes", []) if note not in notes)
        patients[rule] = table
        metrics[rule] = patient_metrics(table, names)
        written[rule] = voting.write_patient_csvs(table, out_path / f"patients_{rule}.csv")
    atomic_write_json(out_path / PATIENT_METRICS_NAME, {"class_names": names, "split": split, **metrics})
    return CtEvaluation(out_path, names, evaluation.metrics, predictions, patients, metrics, written, notes)


def metrics_table(evaluation: CtEvaluation) -> pd.DataFrame:
    """One row per level (slices, patients by each rule): n, accuracy, balanced accuracy, ROC-AUC (95% CI)."""
    def interval(metrics: Mapping[str, Any], name: str) -> str:
        low, high = (metrics.get("ci95") or {}).get(name) or (None, None)
        return "" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"

    slices = evaluation.slice_metrics
    rows = [{"level": "slices", "n": slices["n"], "accuracy": slices["accuracy"],
             "balanced_accuracy": slices["balanced_accuracy"], "roc_auc": slices["roc_auc"],
             "roc_auc_ci95": interval(slices, "roc_auc")}]
    for rule, metrics in evaluation.patient_metrics.items():
        # compute_metrics' patient-level dicts (with cluster-bootstrap intervals) exist when patients repeat.
        detailed = (slices.get("patients") or {}).get(rule, {})
        rows.append({"level": f"patients ({rule})", "n": metrics.get("n_labelled"),
                     "accuracy": metrics.get("accuracy"), "balanced_accuracy": metrics.get("balanced_accuracy"),
                     "roc_auc": metrics.get("roc_auc_mean_probability"),
                     "roc_auc_ci95": interval(detailed, "roc_auc")})
    return pd.DataFrame(rows).set_index("level")


# --------------------------------------------------------------------------------------------------
# Figures


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
