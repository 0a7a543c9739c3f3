"""``ct-vote``: one label per patient (and per test folder) from a CSV of slice predictions (no TensorFlow).

The votes are :func:`covid_tf.evaluation.patients.vote`'s; predictions that lie in a run or evaluation folder
make that folder an input too, so no patients CSV is written into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from covid_tf.evaluation import patients as patient_votes
from covid_tf.evaluation import tables
from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs, run_folder_of
from covid_tf.runs.record import is_run_folder


@dataclass
class Votes:
    """The patients' table (``vote``'s columns, ``attrs``: class names, notes), the slices read, the files written."""

    patients: pd.DataFrame
    n_slices: int
    written: list[Path]

    @property
    def notes(self) -> list[str]:
        return list(self.patients.attrs.get("notes", []))

    @property
    def counts(self) -> dict[str, int]:
        """Patients per predicted class, in class order."""
        counts = self.patients["predicted"].value_counts()
        return {name: int(counts.get(name, 0)) for name in self.patients.attrs["class_names"]}

    @property
    def labelled(self) -> pd.DataFrame:
        """The patients with a true label (none without a ``label`` column)."""
        if "correct" not in self.patients.columns:
            return self.patients.iloc[0:0]
        return self.patients[self.patients["label"] != ""]


def vote_predictions(predictions: str | Path, out: str | Path, *, classes: Sequence[str] | None = None,
                     rule: str = "majority", patient_level: int = 1) -> Votes:
    """Vote the slices of the ``predictions`` CSV into patients (``classes``: the class order, default its
    ``prob_<Class>`` columns') and write ``out`` (plus one CSV per test folder, when there are several)."""
    folder = run_folder_of(predictions)
    read_folders = [folder] if is_run_folder(folder) else []
    refuse_output_inside_inputs(out, [predictions], folder=False, read_folders=read_folders)
    check_writable_output(out, folder=False)
    table = tables.load_predictions(predictions)
    patients = patient_votes.vote(table, classes, rule=rule, patient_level=patient_level, source=str(predictions))
    written = tables.write_patient_csvs(patients, out, [predictions], read_folders)
    return Votes(patients, len(table), written)
