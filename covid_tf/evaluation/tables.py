"""The predictions table (``predictions.csv``): reading, checking, patient ids and test folders, patient CSVs.

Input: the toolkit's ``predictions.csv`` (``path,label,predicted,prob_<Class>...``), plus
``patient_id`` when known and optionally ``folder`` (the test folder a slice came from).

* Without ``patient_id``, the patient is the folder ``patient_level`` levels above the file
  (1: the parent folder, ``test1/P001/slice_0001.png`` -> ``P001``; use 2 for the
  ``<patient>/<series>/slice.png`` layout of ``dicom2png``). The result notes that it did so.
* Without ``folder``, the test folder is derived from the paths: the folders holding the patient
  folders are reduced to their common root, and the folder is the first component below that root
  (``Test1/P001/a.png``, ``Test2/P007/b.png`` -> ``Test1``, ``Test2``); when every patient folder sits
  in the same folder, that folder's name is used for all. Patients are grouped by (folder, patient id),
  so ``P001`` of ``Test1`` and ``P001`` of ``Test2`` are two patients.

The patient decisions themselves are made in :mod:`covid_tf.evaluation.patients`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from covid_tf.errors import CovidTfError
from covid_tf.io_utils import (
    atomic_write,
    natural_key,
    neutralise_formulas,
    refuse_output_inside_inputs,
    restore_formulas,
    safe_name,
)

PROB_PREFIX = "prob_"
# Probabilities written as text may round a little outside [0, 1]; anything further out is an error.
PROBABILITY_TOLERANCE = 1e-6


def class_names_from_columns(columns: Sequence[str]) -> list[str]:
    """Class names from ``prob_<Class>`` columns, in column order."""
    return [column[len(PROB_PREFIX) :] for column in columns if str(column).startswith(PROB_PREFIX)]


def _parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(str(path).replace("\\", "/")).parts


def patient_from_path(path: str, level: int = 1) -> str:
    """The name of the folder ``level`` levels above a file (1 = its parent folder)."""
    parts = _parts(path)
    if level < 1 or len(parts) <= level or parts[-1 - level] in ("/", ""):
        raise CovidTfError(f"cannot derive a patient id from path {path!r}: it has no folder {level} level(s) up")
    return parts[-1 - level]


def derive_folders(paths: Sequence[str], patient_level: int = 1) -> list[str]:
    """The test folder of each path (see the module docstring); ``""`` when there is no folder above."""
    holders = [_parts(path)[: max(len(_parts(path)) - 1 - patient_level, 0)] for path in paths]
    if not holders:
        return []
    common: tuple[str, ...] = holders[0]
    for holder in holders[1:]:
        length = 0
        while length < min(len(common), len(holder)) and common[length] == holder[length]:
            length += 1
        common = common[:length]
    root_name = common[-1] if common and common[-1] not in ("/", "") else ""
    return [holder[len(common)] if len(holder) > len(common) else root_name for holder in holders]


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions CSV; text columns stay text (patient ``001`` stays ``"001"``)."""
    path = Path(path)
    if not path.is_file():
        raise CovidTfError(f"{path}: predictions file not found")
    try:
        table = restore_formulas(pd.read_csv(path, dtype=str, keep_default_na=False))
    except Exception as error:
        raise CovidTfError(f"{path}: cannot read predictions CSV ({error})") from None
    if table.empty:
        raise CovidTfError(f"{path}: predictions CSV has no rows")
    return table


def _class_names(table: pd.DataFrame, class_names: Sequence[str] | None, source: str,
                 notes: list[str]) -> list[str]:
    prob_classes = class_names_from_columns(table.columns)
    if class_names is None:
        class_names = prob_classes
        if not class_names:
            if "predicted" not in table.columns:
                raise CovidTfError(f"{source}: needs a 'predicted' column or prob_<Class> columns")
            class_names = sorted({str(value) for value in table["predicted"] if str(value) != ""})
            notes.append(f"no prob_<Class> columns: classes taken from 'predicted', sorted: {class_names}")
    class_names = [str(name) for name in class_names]
    if not class_names or len(set(class_names)) != len(class_names):
        raise CovidTfError(f"{source}: class names must be unique and non-empty, got {class_names}")
    missing_probs = [f"{PROB_PREFIX}{name}" for name in class_names if f"{PROB_PREFIX}{name}" not in table.columns]
    if prob_classes and missing_probs:
        raise CovidTfError(f"{source}: missing column(s) {missing_probs} for classes {class_names}")
    return class_names


def _float_probabilities(table: pd.DataFrame, class_names: list[str], source: str) -> bool:
    """Turn the ``prob_`` columns into floats (refusing gaps); False when the table has none."""
    if any(f"{PROB_PREFIX}{name}" not in table.columns for name in class_names):
        return False
    for name in class_names:
        column = f"{PROB_PREFIX}{name}"
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise CovidTfError(f"{source}: column {column} has a missing or non-numeric value "
                               f"(row {file_row(row)}: {table[column].iloc[row]!r})")
        numbers = values.to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            outside = ~np.isfinite(numbers) | (numbers < -PROBABILITY_TOLERANCE) | (numbers > 1 + PROBABILITY_TOLERANCE)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise CovidTfError(f"{source}: column {column} holds {table[column].iloc[row]!r} in row "
                               f"{file_row(row)}, not a probability in [0, 1] ({int(outside.sum())} such row(s))")
        table[column] = values.astype(float)
    return True


def file_row(index: int) -> int:
    """The row of a CSV file as a spreadsheet numbers it (the header is row 1) from a 0-based data index."""
    return index + 2


def _drop_duplicate_slices(table: pd.DataFrame, source: str, notes: list[str]) -> pd.DataFrame:
    """Count a slice listed several times once; refuse one listed with different predictions."""
    if "path" not in table.columns:
        return table
    paths = table["path"].astype(str)
    repeated = paths.duplicated(keep=False)
    if not repeated.any():
        return table
    compared = [column for column in table.columns if column == "predicted" or column.startswith(PROB_PREFIX)]
    for path, rows in table[repeated].groupby(paths[repeated], sort=False):
        numbers = ", ".join(str(file_row(int(i))) for i in np.flatnonzero(paths.to_numpy() == path))
        if compared and len(rows[compared].astype(str).drop_duplicates()) > 1:
            raise CovidTfError(f"{source}: slice {path} is listed {len(rows)} times with different predictions "
                               f"(rows {numbers}); keep one row per slice")
        notes.append(f"duplicate slice {path} listed {len(rows)} times (rows {numbers}): counted once")
    return table[~paths.duplicated(keep="first")].reset_index(drop=True)


def _slice_votes(table: pd.DataFrame, class_names: list[str], has_probs: bool, source: str,
                 notes: list[str]) -> pd.Series:
    """The class each slice votes for: its ``predicted`` value (names or class indices), else its arg-max."""
    if "predicted" in table.columns:
        votes = table["predicted"].astype(str).str.strip()
        unknown = sorted(set(votes) - set(class_names))
        if unknown and all(value.isdigit() and int(value) < len(class_names) for value in votes):
            votes = votes.map(lambda value: class_names[int(value)])  # class indices
            unknown = []
        if unknown:
            raise CovidTfError(f"{source}: 'predicted' has value(s) {unknown} that are not classes {class_names}")
        return votes
    if not has_probs:
        raise CovidTfError(f"{source}: needs a 'predicted' column or prob_<Class> columns")
    probs = table[[f"{PROB_PREFIX}{name}" for name in class_names]].to_numpy()
    notes.append("no 'predicted' column: each slice votes for its arg-max probability")
    return pd.Series([class_names[int(index)] for index in probs.argmax(axis=1)], index=table.index)


def _patients_and_folders(table: pd.DataFrame, patient_col: str, patient_level: int, source: str,
                          notes: list[str]) -> None:
    has_path = "path" in table.columns
    if patient_col not in table.columns:
        if not has_path:
            raise CovidTfError(f"{source}: missing column '{patient_col}' (and no 'path' to derive it from)")
        table[patient_col] = [patient_from_path(path, patient_level) for path in table["path"]]
        notes.append(
            f"no '{patient_col}' column: patient ids derived from the folder {patient_level} level(s) above each path"
        )
    table[patient_col] = table[patient_col].astype(str)
    if (table[patient_col].str.strip() == "").any():
        raise CovidTfError(f"{source}: empty '{patient_col}' value(s)")
    if "folder" in table.columns:
        table["folder"] = table["folder"].fillna("").astype(str)
    elif has_path:
        table["folder"] = derive_folders(list(table["path"].astype(str)), patient_level)
    else:
        table["folder"] = ""


def prepare_predictions(
    predictions: pd.DataFrame,
    class_names: Sequence[str] | None = None,
    patient_col: str = "patient_id",
    patient_level: int = 1,
    source: str = "predictions",
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Validate and complete a predictions table.

    Returns ``(table, class_names, notes)``: the table gains ``patient_id`` (from the paths if
    needed), ``folder``, ``slice_vote`` (the class each slice votes for) and float ``prob_`` columns.
    """
    table = predictions.copy()
    notes: list[str] = []
    class_names = _class_names(table, class_names, source, notes)
    has_probs = _float_probabilities(table, class_names, source)
    table = _drop_duplicate_slices(table, source, notes)
    table["slice_vote"] = _slice_votes(table, class_names, has_probs, source, notes)
    _patients_and_folders(table, patient_col, patient_level, source, notes)
    return table, class_names, notes


def write_patient_csvs(patients: pd.DataFrame, out_path: str | Path, inputs: Sequence[str | Path] = (),
                       read_folders: Sequence[str | Path] = ()) -> list[Path]:
    """Write all patients to ``out_path`` and, with several folders, ``<stem>_<folder>.csv`` beside it; none of
    them may replace an input file or a file of a folder read (checked before the first write)."""
    out_path = Path(out_path)
    folders = sorted(set(patients["folder"]), key=natural_key) if "folder" in patients.columns else []
    tables = {out_path: patients}
    for folder in folders if len(folders) > 1 else []:
        path = out_path.with_name(f"{out_path.stem}_{safe_name(folder, 'root')}{out_path.suffix or '.csv'}")
        tables[path] = patients[patients["folder"] == folder]
    for path in tables:
        refuse_output_inside_inputs(path, inputs, folder=False, read_folders=read_folders)
    for path, table in tables.items():
        atomic_write(path, lambda tmp, table=table: neutralise_formulas(table).to_csv(tmp, index=False))
    return list(tables)


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
