"""The CT slice workflow of seed 002: DICOM series -> PNG slices -> slice classifier -> one label per patient.

Steps, each one call:

1. :func:`convert_ct` converts a DICOM folder (e.g. ``covid_tf.synthetic.ct`` output, or SPGC-style
   ``Test1/<patient>/*.dcm``) into windowed PNG slices with :func:`covid_tf.ct.convert.convert_to_png` and writes
   a label CSV ``OUT/metadata.csv`` (``path,label,patient_id,folder,series_uid,slice_index,num_slices,
   source_path,frame``; ``path`` relative to OUT, ``source_path`` the DICOM file) that
   :func:`covid_tf.data.discover.discover` reads, patient ids included. Labels come from
   ``labels`` (a dict or CSV ``patient_id,label``) or ``DICOM_DIR/labels.csv``; slices of unlabelled patients
   stay in ``index.csv`` but not in ``metadata.csv``. :func:`prepare_ct_data` does this only for DICOM input
   and passes folders of PNG slices (e.g. the UCSD COVID-CT set) through unchanged.
2. :func:`train_slices` (or :func:`slice_config` + ``train_run``) trains a slice classifier; by default as seed 002
   did, VGG16 with focal loss. Splits are grouped by ``patient_id``, so a patient's slices share one split.
3. :func:`evaluate_ct` evaluates the run's model on its test slices
   (:func:`covid_tf.evaluation.evaluate.evaluate_model`: ``metrics.json``, ``predictions.csv``, figures), then votes
   per patient with :func:`covid_tf.evaluation.patients.vote` (``majority`` and ``mean``) and writes one patients
   CSV per rule plus one per test folder (:func:`covid_tf.evaluation.tables.write_patient_csvs`) and
   ``patient_metrics.json``.

The *test folder* of a slice is the first folder below the DICOM root when the file lies at least two folders
deep (``Test1/P001/IM1.dcm`` -> ``Test1``; the synthetic ``COVID/COVID001/IM1.dcm`` -> ``COVID``), else ``""``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from covid_tf import config
from covid_tf.ct import convert
from covid_tf.ct import series as ct_series
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import patients as patient_votes
from covid_tf.evaluation import tables
from covid_tf.io_utils import atomic_write_json, atomic_write_text, csv_text, restore_formulas
from covid_tf.runs import record
from covid_tf.runs.record import RunRecord

METADATA_NAME = "metadata.csv"
METADATA_COLUMNS = (
    "path", "label", "patient_id", "folder", "series_uid", "slice_index", "num_slices", "source_path", "frame",
)
PATIENT_METRICS_NAME = "patient_metrics.json"
# Seed 002: VGG16 fine-tuned with focal loss on the slices.
CT_SLICE_MODEL = "vgg16"
CT_SLICE_LOSS = "focal"


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
    patients: dict[str, pd.DataFrame]  # rule -> patients.vote table (one row per patient)
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
    return Path(directory).is_dir() and bool(ct_series.iter_candidate_files(directory))


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
    result = convert.convert_to_png(dicom_dir, out_dir, window=window, overwrite=overwrite, labels=labels,
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
    atomic_write_text(csv_path, csv_text(table))
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


def slice_config(data: str | Path, *, model: str = CT_SLICE_MODEL, loss: str = CT_SLICE_LOSS,
                 recipe: str | None = None, **options: Any):
    """A :class:`~covid_tf.runs.config.TrainConfig` for a slice classifier; by default seed 002's VGG16, focal loss.

    ``data`` is a label CSV from :func:`convert_ct` or a folder of slices; ``options`` are further
    ``TrainConfig`` fields (``image_size``, ``epochs``, ``fine_tune_epochs``, ``weights``, ``split_fractions``...);
    ``recipe`` (``"ct"``, ``covid_tf.runs.recipes``) sets the defaults it changes, under ``options``.
    """
    from covid_tf.runs.config import TrainConfig

    # An absolute path, so that the run's config.json still finds the data from another working directory.
    return TrainConfig.from_recipe(recipe, data=str(Path(data).expanduser().resolve()), model=model, loss=loss,
                                   **options)


def train_slices(
    data: str | Path,
    run_dir: str | Path | None,
    *,
    overwrite: bool = False,
    verbose: int | str = "auto",
    figures: bool = True,
    **options: Any,
):
    """Train a slice classifier (:func:`slice_config` with ``options``) with :func:`covid_tf.workflows.train.train_run`.

    Splits are grouped by patient id, so a patient's slices share one split. Returns the ``TrainResult``
    (``figures=False``: no run figures drawn).
    """
    from covid_tf.workflows.train import train_run

    return train_run(slice_config(data, **options), run_dir, overwrite=overwrite, verbose=verbose, figures=figures)


# --------------------------------------------------------------------------------------------------
# Slice-level and patient-level evaluation


def _folders_from_csv(data: Path) -> dict[str, str] | None:
    """Resolved path -> test folder, from a label CSV with a ``folder`` column (else None)."""
    csv_path = data if data.is_file() else data / METADATA_NAME
    if not csv_path.is_file():
        return None
    table = restore_formulas(pd.read_csv(csv_path, dtype=str, keep_default_na=False))
    if not {"path", "folder"} <= set(table.columns):
        return None
    base = csv_path.parent
    return {str((base / path).resolve()): folder for path, folder in zip(table["path"], table["folder"])}


def evaluate_ct(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    data: str | Path | None = None,
    split: str = "test",
    rules: Sequence[str] = patient_votes.RULES,
    batch_size: int = config.BATCH_SIZE,
    n_bootstrap: int = 1000,
    overwrite: bool = True,
) -> CtEvaluation:
    """Evaluate a training run's model per slice and per patient on the ``split`` rows of its ``split.csv``.

    Writes into ``out_dir`` (default ``run_dir/ct_evaluation``): what ``evaluate_model`` writes, then
    ``patients_<rule>.csv`` (all patients) and ``patients_<rule>_<folder>.csv`` (one per test folder when there
    are several), and ``patient_metrics.json``. ``data`` defaults to the run's training data.
    """
    from covid_tf.workflows.evaluate import evaluate_model

    run_path = Path(run_dir)
    run = RunRecord.read(run_path, required=False)
    if not run.exists or not (run_path / record.MODEL_FILE).is_file():
        raise CovidTfError(f"{run_path}: not a finished training run (needs config.json and model.keras)")
    unknown = [rule for rule in rules if rule not in patient_votes.RULES]
    if unknown or not rules:
        raise CovidTfError(f"unknown voting rule(s) {unknown or list(rules)}: use {list(patient_votes.RULES)}")
    data_path = Path(data or run.text("data") or "")
    classes = run.settings.get("classes")
    out_path = Path(out_dir) if out_dir is not None else run_path / "ct_evaluation"
    evaluation = evaluate_model(
        run_path / record.MODEL_FILE, data_path, out_path, split_file=run_path / record.SPLIT_FILE, split=split,
        classes=classes if isinstance(classes, list) else None, class_map=run.mapping("class_map") or None,
        batch_size=batch_size, overwrite=overwrite, n_bootstrap=n_bootstrap,
        seed=run.integer("seed", config.SEED) or 0,
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
        table = patient_votes.vote(predictions, names, rule=rule, source=str(out_path / "predictions.csv"))
        notes.extend(note for note in table.attrs.get("notes", []) if note not in notes)
        patients[rule] = table
        metrics[rule] = patient_votes.patient_metrics(table, names)
        written[rule] = tables.write_patient_csvs(table, out_path / f"patients_{rule}.csv")
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
