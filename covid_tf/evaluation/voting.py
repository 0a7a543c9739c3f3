"""Patient-level decisions from slice (or image) predictions, as in seed 002.

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

Rules
    ``majority``: each slice votes for its ``predicted`` class (the arg-max of its probabilities when
    there is no ``predicted`` column); the class with most votes wins. **Ties** are broken by the
    highest mean probability among the tied classes, and if that is still tied (equal within 1e-9, or
    no probability columns), by class order: the tied class that comes first in ``class_names``.
    ``mean``: the class with the highest mean probability over the patient's slices wins; ties (within
    1e-9) go to the class that comes first in ``class_names``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write

PROB_PREFIX = "prob_"
RULES = ("majority", "mean")
TIE_TOLERANCE = 1e-9


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
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:
        raise CovidTfError(f"{path}: cannot read predictions CSV ({error})") from None
    if table.empty:
        raise CovidTfError(f"{path}: predictions CSV has no rows")
    return table


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


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
    has_probs = not missing_probs
    if prob_classes and missing_probs:
        raise CovidTfError(f"{source}: missing column(s) {missing_probs} for classes {class_names}")
    if has_probs:
        for name in class_names:
            column = f"{PROB_PREFIX}{name}"
            values = pd.to_numeric(table[column], errors="coerce")
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise CovidTfError(f"{source}: column {column} has a missing or non-numeric value (row {row + 1})")
            table[column] = values.astype(float)
    if "predicted" in table.columns:
        votes = table["predicted"].astype(str).str.strip()
        unknown = sorted(set(votes) - set(class_names))
        if unknown and all(value.isdigit() and int(value) < len(class_names) for value in votes):
            votes = votes.map(lambda value: class_names[int(value)])  # class indices
            unknown = []
        if unknown:
            raise CovidTfError(f"{source}: 'predicted' has value(s) {unknown} that are not classes {class_names}")
        table["slice_vote"] = votes
    elif has_probs:
        probs = table[[f"{PROB_PREFIX}{name}" for name in class_names]].to_numpy()
        table["slice_vote"] = [class_names[int(index)] for index in probs.argmax(axis=1)]
        notes.append("no 'predicted' column: each slice votes for its arg-max probability")
    else:
        raise CovidTfError(f"{source}: needs a 'predicted' column or prob_<Class> columns")
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
    return table, class_names, notes


def _pick(candidates: list[int], mean_probs: np.ndarray | None) -> tuple[int, str]:
    """Among tied class indices: highest mean probability, then class order. Returns (index, how)."""
    if len(candidates) == 1:
        return candidates[0], ""
    if mean_probs is not None:
        best = max(mean_probs[index] for index in candidates)
        still = [index for index in candidates if mean_probs[index] >= best - TIE_TOLERANCE]
        if len(still) == 1:
            return still[0], "mean_probability"
        candidates = still
    return min(candidates), "class_order"


def vote(
    predictions: pd.DataFrame,
    class_names: Sequence[str] | None = None,
    rule: str = "majority",
    patient_col: str = "patient_id",
    patient_level: int = 1,
    source: str = "predictions",
) -> pd.DataFrame:
    """One row per (folder, patient): the patient-level label by ``rule`` (see the module docstring).

    Columns: ``folder, patient_id, predicted, num_slices, votes_<C>..., mean_prob_<C>..., tie,
    tie_break`` (``""``, ``"mean_probability"`` or ``"class_order"``), ``rule``, and ``label``,
    ``correct`` when the input has labels. ``class_names`` defaults to the ``prob_`` column order.
    Notes on derived values (patient ids from paths, ...) are in ``result.attrs["notes"]``.
    """
    if rule not in RULES:
        raise CovidTfError(f"unknown voting rule {rule!r}: use one of {list(RULES)}")
    table, class_names, notes = prepare_predictions(predictions, class_names, patient_col, patient_level, source)
    prob_columns = [f"{PROB_PREFIX}{name}" for name in class_names]
    has_probs = all(column in table.columns for column in prob_columns)
    if rule == "mean" and not has_probs:
        raise CovidTfError(f"{source}: rule 'mean' needs columns {prob_columns}")
    has_label = "label" in table.columns
    rows = []
    groups = table.groupby(["folder", patient_col], sort=False)
    keys = sorted(groups.groups, key=lambda key: (_natural_key(key[0]), _natural_key(key[1])))
    for folder, patient in keys:
        group = groups.get_group((folder, patient))
        counts = np.array([(group["slice_vote"] == name).sum() for name in class_names])
        mean_probs = group[prob_columns].to_numpy().mean(axis=0) if has_probs else None
        if rule == "majority":
            tied = [index for index in range(len(class_names)) if counts[index] == counts.max()]
            winner, how = _pick(tied, mean_probs)
        else:
            best = mean_probs.max()
            tied = [index for index in range(len(class_names)) if mean_probs[index] >= best - TIE_TOLERANCE]
            winner, how = _pick(tied, None)
        row = {
            "folder": folder,
            "patient_id": patient,
            "predicted": class_names[winner],
            "num_slices": len(group),
        }
        row.update({f"votes_{name}": int(count) for name, count in zip(class_names, counts)})
        for index, name in enumerate(class_names):
            row[f"mean_prob_{name}"] = float(mean_probs[index]) if has_probs else np.nan
        row.update({"tie": len(tied) > 1, "tie_break": how, "rule": rule})
        if has_label:
            labels = [str(value) for value in group["label"] if str(value) not in ("", "nan")]
            if labels:
                values, label_counts = np.unique(labels, return_counts=True)
                row["label"] = str(values[int(label_counts.argmax())])
                if len(values) > 1:
                    notes.append(f"patient {patient} ({folder}) has several slice labels; using the most common")
            else:
                row["label"] = ""
            row["correct"] = bool(row["label"]) and row["label"] == row["predicted"]
        rows.append(row)
    result = pd.DataFrame(rows)
    result.attrs["notes"] = notes
    result.attrs["class_names"] = list(class_names)
    return result


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "root"


def write_patient_csvs(patients: pd.DataFrame, out_path: str | Path) -> list[Path]:
    """Write all patients to ``out_path`` and, with several folders, ``<stem>_<folder>.csv`` beside it."""
    out_path = Path(out_path)
    written = [out_path]
    atomic_write(out_path, lambda tmp: patients.to_csv(tmp, index=False))
    folders = sorted(set(patients["folder"]), key=_natural_key) if "folder" in patients.columns else []
    if len(folders) > 1:
        for folder in folders:
            path = out_path.with_name(f"{out_path.stem}_{_safe(folder)}{out_path.suffix or '.csv'}")
            subset = patients[patients["folder"] == folder]
            atomic_write(path, lambda tmp, subset=subset: subset.to_csv(tmp, index=False))
            written.append(path)
    return written
