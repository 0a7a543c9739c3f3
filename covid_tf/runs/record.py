"""The run record: the one reader and writer of a run folder's files.

A training run (``train --out``) or an evaluation (``evaluate --out``) folder holds ``config.json`` (the
settings, the class names, the lung ROI that ran and the software versions), ``split.csv``,
``skipped.csv``, ``roi.csv``, ``history.csv``, ``fingerprints.npz`` (the train and val images' fingerprints),
``overlap.csv`` and ``predictions.csv`` (an evaluation's), ``metrics.json`` (written last: a finished run) and
``model.keras``; an audit folder holds ``split.csv`` and ``audit.json``. Every other module (and notebook) reads
these through :class:`RunRecord` and writes them through the ``write_*`` functions here, so a value of the wrong
type is one ``CovidTfError`` naming the file and the key, never a traceback deep inside a command.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_json, atomic_write_text, csv_text, restore_formulas
from covid_tf.lungs.roi.modes import ATTENTION_MODE, AUTO, RoiSpec

if TYPE_CHECKING:
    from covid_tf.data.overlap import ReferenceSet

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.csv"
SKIPPED_FILE = "skipped.csv"
ROI_FILE = "roi.csv"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
FINGERPRINTS_FILE = "fingerprints.npz"  # the train and val images' fingerprints, for the overlap check
OVERLAP_FILE = "overlap.csv"
PREDICTIONS_FILE = "predictions.csv"  # an evaluation's predictions
AUDIT_FILE = "audit.json"  # an audit folder's summary (beside its split.csv and runs/)
# Everything a training run writes into its folder (covid_tf.training.run_folder moves it aside for --overwrite).
RUN_ITEMS = (CONFIG_FILE, SPLIT_FILE, SKIPPED_FILE, ROI_FILE, HISTORY_FILE, MODEL_FILE, FINGERPRINTS_FILE, METRICS_FILE,
             "checkpoints", "logs", "figures")
# Settings that may differ when a killed run is resumed: they do not change what the run computes.
RESUME_MAY_DIFFER = ("class_names", "roi_resolved", "strategy", "devices", "versions")
# Settings a run decides at its start when they are None (train_run's resolve_run_config records the value).
DECIDED_AT_START = ("roi_background",)
ROI_KEYS = ("roi", "roi_resolved", "roi_margin", "roi_dilation", "roi_jitter")


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file's value; ``CovidTfError`` naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CovidTfError(f"{path}: cannot read this {what} ({type(error).__name__}: {error})") from None


def read_json_object(path: Path, what: str = "file") -> dict:
    """A JSON file that must hold an object (``{...}``)."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise CovidTfError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a training run or an evaluation: it holds ``config.json`` or ``metrics.json``."""
    return (Path(folder) / CONFIG_FILE).is_file() or (Path(folder) / METRICS_FILE).is_file()


@dataclass(frozen=True)
class RunRecord:
    """What a run folder's ``config.json`` says, read once and checked key by key on access."""

    folder: Path
    settings: Mapping[str, Any] = field(default_factory=dict)
    exists: bool = False  # whether config.json was there

    @classmethod
    def read(cls, folder: str | Path, *, required: bool = True) -> RunRecord:
        """The record of ``folder``; without a ``config.json``: an error, or (``required=False``) an empty one."""
        folder = Path(folder)
        path = folder / CONFIG_FILE
        if not path.is_file():
            if required:
                raise CovidTfError(f"{folder}: not a training run or evaluation (no {CONFIG_FILE})")
            return cls(folder)
        return cls(folder, read_json_object(path, "run configuration"), True)

    @classmethod
    def of_model(cls, model_path: str | Path) -> RunRecord:
        """The record of the run a ``model.keras`` belongs to (empty when it has no ``config.json`` beside it)."""
        return cls.read(Path(model_path).parent, required=False)

    @property
    def path(self) -> Path:
        return self.folder / CONFIG_FILE

    def _bad(self, key: str, expected: str) -> CovidTfError:
        value = self.settings.get(key)
        return CovidTfError(f"{self.path}: {key!r} must be {expected}, got {json.dumps(value)[:80]}")

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.settings.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def integer(self, key: str, default: int | None = None, least: int = 0, most: int | None = None) -> int | None:
        value = self.settings.get(key, default)
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or value != int(value) or value < least or (most is not None and value > most)):
            raise self._bad(key, f"a whole number of at least {least}" + (f" and at most {most}" if most else ""))
        return int(value)

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.settings.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._bad(key, "a finite number")
        return float(value)

    def mapping(self, key: str) -> dict:
        value = self.settings.get(key) or {}
        if not isinstance(value, dict):
            raise self._bad(key, "an object")
        return dict(value)

    def class_names(self, num_classes: int | None = None) -> list[str]:
        """The recorded class names; ``class_0``... when there are none or (with ``num_classes``) too few/many."""
        names = self.settings.get("class_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)):
            raise self._bad("class_names", "a list of class names")
        if names and (num_classes is None or len(names) == num_classes):
            return list(names)
        return [f"class_{i}" for i in range(num_classes or 0)]

    @property
    def roi(self) -> RoiSpec:
        """The lung ROI that ran (``roi_resolved`` for ``auto``); none for a run without one."""
        mode = self.text("roi_resolved") or self.text("roi") or "none"
        if mode == AUTO:
            raise CovidTfError(f"{self.path}: 'roi' is auto but 'roi_resolved' is missing: the run never started")
        try:
            return RoiSpec(mode=mode, margin=self.number("roi_margin", RoiSpec.margin),
                           dilation=self.number("roi_dilation", RoiSpec.dilation),
                           jitter=self.integer("roi_jitter", 0) or 0)
        except ValueError as error:
            keys = [key for key in ROI_KEYS if key in self.settings]
            raise CovidTfError(f"{self.path}: {', '.join(map(repr, keys))} do not make a valid lung ROI "
                               f"({error})") from None

    @property
    def model_name(self) -> str | None:
        return self.text("model")

    def split(self) -> pd.DataFrame | None:
        """``split.csv`` (None when absent)."""
        from covid_tf.data.splits import load_split

        path = self.folder / SPLIT_FILE
        return load_split(path) if path.is_file() else None

    def history(self) -> pd.DataFrame | None:
        """``history.csv``: one row per whole epoch number, in order, with numbers (a cell that is not a finite
        number reads as NaN), ``phase`` as text and ``best`` as true/false; None when there is none, or when it
        is unreadable or has no row with a whole epoch number."""
        path = self.folder / HISTORY_FILE
        if not path.is_file():
            return None
        try:
            history = pd.read_csv(path)
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError):
            return None
        return _clean_history(history)

    def roi_table(self) -> pd.DataFrame | None:
        """``roi.csv`` (each image's lung mask, its source, whether the ROI applied), None when absent."""
        path = self.folder / ROI_FILE
        if not path.is_file():
            return None
        table = _read_table(path)
        missing = [column for column in ("path", "roi_applied") if column not in table.columns]
        if missing:
            raise CovidTfError(f"{path}: lacks the column(s) {', '.join(missing)}")
        table["roi_applied"] = table["roi_applied"].str.strip().str.lower() == "true"
        return table

    def fingerprints(self) -> ReferenceSet | None:
        """``fingerprints.npz``: the fingerprints of the run's train and val images (None when absent, or made by
        another version of the fingerprint than :data:`~covid_tf.data.fingerprints.FINGERPRINT_VERSION`)."""
        from covid_tf.data.fingerprints import FINGERPRINT_VERSION
        from covid_tf.data.overlap import ReferenceSet

        path = self.folder / FINGERPRINTS_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                version = int(stored["version"]) if "version" in stored.files else 1
                if version != FINGERPRINT_VERSION:
                    return None
                return ReferenceSet(stored["paths"].tolist(), stored["splits"].tolist(), stored["fingerprints"],
                                    f"the run's fingerprints ({FINGERPRINTS_FILE})")
        except (OSError, KeyError, ValueError, EOFError) as error:
            reason = f"{type(error).__name__}: {error}"
            raise CovidTfError(f"{path}: cannot read the run's fingerprints ({reason})") from None

    def metrics(self) -> dict | None:
        """``metrics.json`` (None when absent: the run or evaluation has not finished)."""
        path = self.folder / METRICS_FILE
        return read_json_object(path, "metrics file") if path.is_file() else None

    def predictions(self) -> pd.DataFrame | None:
        """An evaluation's ``predictions.csv``, read and checked as every predictions table (None when absent)."""
        from covid_tf.evaluation.tables import load_predictions
        return load_predictions(self.folder / PREDICTIONS_FILE) if (self.folder / PREDICTIONS_FILE).is_file() else None

    def overlap(self) -> pd.DataFrame | None:
        """An evaluation's ``overlap.csv``: its test images that copy a training image (None when absent)."""
        return _read_table(self.folder / OVERLAP_FILE, text=False) if (self.folder / OVERLAP_FILE).is_file() else None

    def audit(self) -> dict:
        """An audit folder's ``audit.json`` (its settings, table and verdict)."""
        return read_json_object(self.folder / AUDIT_FILE, "audit summary")

    @property
    def finished(self) -> bool:
        """A finished training run: its model and its metrics (written last) are there."""
        return (self.folder / MODEL_FILE).is_file() and (self.folder / METRICS_FILE).is_file()

    def differences(self, settings: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> list[str]:
        """The keys of ``settings`` whose recorded value differs (those a resumed run may change left out).

        A key the record lacks (a ``config.json`` of an older covid_tf, written before the setting existed)
        counts as its value in ``defaults``: the setting's default, which is what that version did."""
        defaults = defaults or {}
        return [key for key, value in settings.items()
                if key not in RESUME_MAY_DIFFER and not (value is None and key in DECIDED_AT_START)
                and _jsonable(value) != self.settings.get(key, _jsonable(defaults.get(key)))]


def _read_table(path: Path, text: bool = True) -> pd.DataFrame:
    """One of the run's CSV tables (``text``: every cell as text); ``CovidTfError`` naming it when unreadable."""
    try:
        return restore_formulas(pd.read_csv(path, keep_default_na=False, dtype=str if text else None))
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as error:
        raise CovidTfError(f"{path}: cannot read this table ({type(error).__name__}: {error})") from None


def _clean_history(history: pd.DataFrame) -> pd.DataFrame | None:
    if history.empty or "epoch" not in history.columns:
        return None
    epochs = pd.to_numeric(history["epoch"], errors="coerce").astype(float)
    history = history[np.isfinite(epochs) & (epochs >= 0) & (epochs == epochs.round())].copy()
    if history.empty:
        return None
    for column in history.columns:
        if column == "phase":
            history[column] = history[column].fillna("").astype(str)
        elif column == "best":
            history[column] = history[column].astype(str).str.strip().str.lower() == "true"
        else:
            values = pd.to_numeric(history[column], errors="coerce").astype(float)
            history[column] = values.where(np.isfinite(values))
    history["epoch"] = history["epoch"].astype(int)
    return history.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable").reset_index(drop=True)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def model_roi(record: RunRecord, model_has_mask_input: bool) -> RoiSpec:
    """The ROI that feeds a model: its record's, or lung attention for such a model without a record."""
    spec = record.roi
    if model_has_mask_input and not spec.mask_input:
        return RoiSpec(mode=ATTENTION_MODE)
    return spec


def software_versions() -> dict[str, str]:
    """The versions of covid_tf, TensorFlow, Keras and Python, as a run's ``config.json`` records them.

    Imports TensorFlow (a training run has it loaded already), so that these are the versions that ran.
    """
    import platform

    import keras
    import tensorflow

    return {"covid_tf": config.VERSION, "tensorflow": tensorflow.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def write_config(folder: Path, settings: Mapping[str, Any]) -> None:
    """``config.json``: the settings, and the software versions that ran them."""
    atomic_write_json(folder / CONFIG_FILE, {**settings, "versions": software_versions()})


def write_split(folder: Path, split: pd.DataFrame) -> Path:
    from covid_tf.data.splits import save_split

    return save_split(split, folder / SPLIT_FILE)


def write_table(folder: Path, name: str, table: pd.DataFrame) -> Path:
    """One of the run's CSV tables (``skipped.csv``, ``roi.csv``, ``history.csv``, ``predictions.csv``)."""
    atomic_write_text(folder / name, csv_text(table))  # cells a spreadsheet would run as formulas neutralised
    return folder / name


def write_skipped(folder: Path, skipped: Sequence[tuple[str, str]]) -> Path:
    return write_table(folder, SKIPPED_FILE, pd.DataFrame(list(skipped), columns=["path", "reason"]))


def write_fingerprints(folder: Path, reference: ReferenceSet) -> Path:
    """``fingerprints.npz``: a compact fingerprint (576 bytes) of each train and val image, for the overlap check."""
    from covid_tf.data.fingerprints import FINGERPRINT_VERSION

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, paths=np.array(reference.paths, dtype=str),
                                splits=np.array(reference.splits, dtype=str), fingerprints=reference.fingerprints,
                                version=FINGERPRINT_VERSION)

    return atomic_write(folder / FINGERPRINTS_FILE, write)


def write_model(folder: Path, model: Any) -> Path:
    """``model.keras``: the portable model (:func:`covid_tf.models.common.save_model`)."""
    from covid_tf.models.common import save_model
    return atomic_write(folder / MODEL_FILE, lambda tmp: save_model(model, tmp))


def write_audit(folder: Path, summary: Mapping[str, Any]) -> Path:
    """An audit folder's ``audit.json``."""
    return atomic_write_json(folder / AUDIT_FILE, dict(summary))


def write_metrics(folder: Path, metrics: Mapping[str, Any], name: str = METRICS_FILE) -> None:
    """``metrics.json``, written last: its presence marks a finished run or evaluation (``name``: another summary,
    a segmenter run's ``evaluation.json`` or ``loso.json``)."""
    atomic_write_json(folder / name, dict(metrics))
