"""Slices a radiologist marked as infected or not (seed 002): training keeps the infected ones.

Seed 002 trained its slice classifier "on the labeled slices" of the COVID-19 and CAP patients a radiologist
had marked slice by slice: a slice of a COVID patient that shows no lesion teaches nothing about COVID. A
marks CSV has the columns ``path`` (absolute, or relative to the CSV's folder) and ``infected`` (1 or 0, also
true/false or yes/no). :func:`keep_infected_training_slices` drops the training slices it marks 0 and keeps
those it marks 1 and those it does not list (normal patients' slices, patients nobody marked); validation and
test slices are all kept, so the patients are judged on every slice as before.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from covid_tf.errors import CovidTfError

TRUE_VALUES, FALSE_VALUES = {"1", "true", "yes"}, {"0", "false", "no"}


def read_infected_slices(csv_path: str | Path) -> dict[str, bool]:
    """``{resolved slice path: infected}`` from a marks CSV; ``CovidTfError`` naming the file and the reason."""
    path = Path(csv_path).expanduser()
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CovidTfError(f"{path}: cannot read the infected-slices CSV ({error})") from None
    missing = {"path", "infected"} - set(table.columns)
    if missing:
        raise CovidTfError(f"{path}: infected-slices CSV lacks column(s) {sorted(missing)} (needs path,infected)")
    values = table["infected"].str.strip().str.lower()
    bad = table.loc[~values.isin(TRUE_VALUES | FALSE_VALUES), "infected"]
    if len(bad):
        raise CovidTfError(f"{path}: column infected must be 1 or 0 (true/false, yes/no), got {bad.iloc[0]!r} "
                           f"in row {bad.index[0] + 2}")
    folder = path.resolve().parent
    slices = [str((folder / item).resolve()) for item in table["path"]]
    return dict(zip(slices, values.isin(TRUE_VALUES)))


def keep_infected_training_slices(split: pd.DataFrame, marks: dict[str, bool], source: str = "the CSV"
                                  ) -> pd.DataFrame:
    """``split`` without the training rows ``marks`` calls not infected; a class left without training rows
    is refused (``CovidTfError``)."""
    resolved = split["path"].map(lambda item: str(Path(item).resolve()))
    dropped = (split["split"] == "train") & resolved.map(lambda item: marks.get(item) is False)
    kept = split[~dropped]
    training = split[split["split"] == "train"]
    emptied = sorted(set(training["label"]) - set(kept.loc[kept["split"] == "train", "label"]))
    if emptied:
        raise CovidTfError(f"{source} marks every training slice of {', '.join(emptied)} as not infected: "
                           "nothing would be left to train that class on")
    return kept
