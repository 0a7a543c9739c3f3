"""``synth``: a synthetic chest X-ray dataset in the Radiography layout (:mod:`covid_tf.synthetic.xray`), after
the output check every command runs first (no TensorFlow)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import check_writable_output


@dataclass
class Synthesized:
    """A generated dataset's ``metadata.csv`` rows, its classes and how long it took."""

    metadata: pd.DataFrame
    classes: list[str]
    seconds: float


def class_list(classes: str | Sequence[str], example: str) -> list[str]:
    """``"COVID,Normal"`` (or a list) -> ``["COVID", "Normal"]``; at least one name (``synth``, ``synth-ct``)."""
    names = [name.strip() for name in (classes.split(",") if isinstance(classes, str) else classes) if name.strip()]
    if not names:
        raise CovidTfError(f"--classes: give at least one class name, e.g. --classes {example}")
    return names


def synthesize(out: str | Path, *, classes: str | Sequence[str] = config.BINARY_CLASSES, per_class: int = 100,
               size: int = config.IMAGE_SIZE, patients_per_class: int | None = None, seed: int = config.SEED,
               difficulty: float | None = None, shortcut_class: str | None = None,
               shortcut_probability: float | None = None, overwrite: bool = False) -> Synthesized:
    """Write ``per_class`` images of each class to ``out``; with ``shortcut_class``, a burned-in marker on its
    images with ``shortcut_probability`` (default 0.9) and on the others with 1 minus that."""
    from covid_tf.synthetic import xray

    check_writable_output(out, folder=True, option="the output folder")
    names = class_list(classes, "COVID,Normal")
    probability = shortcut_probability
    if probability is None:
        probability = 0.9 if shortcut_class else 0.0
    elif shortcut_class is None:
        raise CovidTfError("--shortcut-probability needs --shortcut-class")
    start = time.perf_counter()
    metadata = xray.generate_dataset(out, classes=names, per_class=per_class, size=size,
                                     patients_per_class=patients_per_class, seed=seed,
                                     difficulty=xray.DEFAULT_DIFFICULTY if difficulty is None else difficulty,
                                     shortcut_class=shortcut_class, shortcut_probability=probability,
                                     overwrite=overwrite)
    return Synthesized(metadata, names, time.perf_counter() - start)
