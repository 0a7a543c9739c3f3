"""The values the HTML report shows of a run's files, read so that an odd one never stops the report.

The report (:mod:`covid_tf.workflows.report`) only shows what a run holds. ``config.json`` and ``metrics.json``
are read by :class:`covid_tf.runs.record.RunRecord` (a file that is not a JSON object is one error naming
it); within them, a value of the wrong type (text where a number belongs, a list, an object, NaN, an
infinite or huge number, a confidence interval of text, versions that are not an object) is shown as
:data:`ODD` (``?``) and left out of the warnings and of the comparison chart. Absent values are ``n/a``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from covid_tf.lungs.roi.modes import MODES

ODD = "?"  # a value of the wrong type
SHOWN = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "ece")


def number(value: Any) -> float | str | None:
    """A finite number as a float; None when absent; :data:`ODD` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ODD
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        return ODD
    return value if math.isfinite(value) else ODD


def count(value: Any) -> int | str | None:
    """A whole number of at least 0 (images, patients); None when absent; :data:`ODD` for anything else."""
    value = number(value)
    if not isinstance(value, float):
        return value
    return int(value) if value.is_integer() and value >= 0 else ODD


def interval(value: Any) -> tuple[float, float] | str | None:
    """A 95% interval ``[low, high]`` of two finite numbers; None when absent (``[null, null]`` too)."""
    if value is None:
        return None
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = number(value[0]), number(value[1])
        if isinstance(low, float) and isinstance(high, float):
            return low, high
        if low is None and high is None:
            return None
    return ODD


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the report shows of one split's metrics (and of its patient levels), each checked."""
    cleaned: dict[str, Any] = {name: number(metrics.get(name)) for name in SHOWN}
    cleaned["n"] = count(metrics.get("n"))
    ci95 = metrics.get("ci95")
    if isinstance(ci95, Mapping):
        cleaned["ci95"] = {str(name): interval(value) for name, value in ci95.items()}
    else:
        cleaned["ci95"] = {} if ci95 is None else {name: ODD for name in SHOWN}
    names = metrics.get("class_names")
    if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
        cleaned["class_names"] = names
    patients = metrics.get("patients")
    if isinstance(patients, Mapping):
        cleaned["patients"] = {str(rule): clean_metrics(level) for rule, level in patients.items()
                               if isinstance(level, Mapping)}
    cleaned["notes"] = _notes(metrics.get("notes"))
    if isinstance(metrics.get("all_images"), Mapping):
        cleaned["all_images"] = clean_metrics(metrics["all_images"])
    overlap, sources = metrics.get("overlap"), metrics.get("sources")
    if isinstance(overlap, Mapping):
        cleaned["overlap"] = {"checked": overlap.get("checked") is True, "n_copies": count(overlap.get("n_copies")),
                              "n_test_images": count(overlap.get("n_test_images")),
                              "excluded": overlap.get("excluded_from_headline") is True,
                              "notes": _notes(overlap.get("notes"))}
    if isinstance(sources, Mapping):
        cleaned["sources"] = {"auc": number(sources.get("within_source_roc_auc")),
                              "ci95": interval(sources.get("within_source_ci95")),
                              "pairs": count(sources.get("within_source_pairs")),
                              "n_sources": count(sources.get("n_sources")), "warnings": _notes(sources.get("warnings"))}
    return cleaned


def _notes(notes: Any) -> list[str]:
    if notes is None:
        return []
    if isinstance(notes, str):
        return [notes]
    return [str(note) for note in notes] if isinstance(notes, list) else [ODD]


def plottable(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    """The cleaned metrics for the comparison chart: odd values and intervals left out."""
    values = {name: value for name, value in cleaned.items() if name in SHOWN and isinstance(value, float)}
    intervals = {name: list(value) for name, value in (cleaned.get("ci95") or {}).items() if isinstance(value, tuple)}
    return {**values, "ci95": intervals, "n": cleaned.get("n") if isinstance(cleaned.get("n"), int) else None,
            **({"class_names": cleaned["class_names"]} if "class_names" in cleaned else {})}


def relative_path(path: str | Path, start: Path) -> str:
    """``path`` relative to the folder ``start`` (POSIX separators); URLs such as ``gs://`` stay as they are,
    and so does a text that is no path of this system."""
    text = str(path)
    if "://" in text:
        return text
    try:
        return Path(os.path.relpath(Path(text).expanduser().resolve(), start.resolve())).as_posix()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a loop of links, another drive
        return text


def _text(value: Any) -> str | None:
    """A setting as text: text and finite numbers as they are; None when absent; :data:`ODD` otherwise."""
    if value is None or isinstance(value, str):
        return value
    shown = number(value)
    return ODD if not isinstance(shown, float) else str(value)


def config_rows(config: Mapping[str, Any], out_dir: Path) -> list[tuple[str, str | None]]:
    """The rows of a run's configuration table (what ``config.json`` holds), paths relative to the report."""
    epochs, fine_tune = _text(config.get("epochs")), _text(config.get("fine_tune_epochs"))
    if epochs is not None and fine_tune not in (None, "0", "0.0"):
        epochs = f"{epochs} + {fine_tune} fine-tuning"
    roi = _text(config.get("roi_resolved")) or _text(config.get("roi"))  # the mode that ran, not "auto"
    if roi and (roi not in MODES or MODES[roi].active) and config.get("roi_margin") is not None:
        roi = f"{roi} (margin {_text(config['roi_margin'])})"
    data, model_path = _text(config.get("data")), _text(config.get("model_path"))
    versions = config.get("versions") or {}
    if isinstance(versions, Mapping):
        versions = ", ".join(f"{name} {_text(versions[name])}" for name in ("covid_tf", "tensorflow", "keras")
                             if name in versions) or "not recorded"
    else:
        versions = ODD
    return [("model", _text(config.get("model"))), ("image size", _text(config.get("image_size"))),
            ("epochs", epochs), ("learning rate", _text(config.get("learning_rate"))), ("ROI", roi),
            ("data", relative_path(data, out_dir) if data and data != ODD else data),
            ("model file", relative_path(model_path, out_dir) if model_path and model_path != ODD else model_path),
            ("versions", versions)]
