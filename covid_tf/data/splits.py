"""Stratified, grouped, seeded train/val/test splits, saved as CSV so a run can be repeated.

A *group* joins every image of one patient and every (near-)identical copy of an image: a group
never straddles two splits. Within that rule, each class is divided in the asked proportions
(fractions such as 70/15/15, or counts such as 1600/400/200) as closely as the groups allow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from covid_tf import config
from covid_tf.data.discover import SPLIT_ALIASES
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write_text, csv_text, resolved_path, restore_formulas

SPLIT_COLUMNS = ("path", "label", "patient_id", "group", "split")


# Columns that name a patient: the dataset's own ids, and those a split file gives (when it gives any).
PATIENT_KEYS = ("patient_id", "listed_patient_id")


def assign_groups(frame: pd.DataFrame) -> np.ndarray:
    """Return a group id per row joining rows that share a patient (by any patient column) or a duplicate group."""
    count = len(frame)
    if count == 0:
        return np.zeros(0, dtype=int)
    keys = [frame[column].astype(str).to_numpy() for column in PATIENT_KEYS if column in frame]
    if "duplicate_group" in frame:
        keys.append(frame["duplicate_group"].astype(str).to_numpy())
    rows, cols = [], []
    for values in keys:
        _, first = np.unique(values, return_inverse=True)
        # Link every row to the first row with the same key.
        order = np.argsort(first, kind="stable")
        leaders = order[np.searchsorted(first[order], first)]
        rows.append(np.arange(count))
        cols.append(leaders)
    graph = coo_matrix((np.ones(count * len(keys)), (np.concatenate(rows), np.concatenate(cols))), shape=(count, count))
    return connected_components(graph, directed=False)[1]


# A UCSD COVID-CT slice name: the paper's id, "-p<page>-<figure>", then optional panel numbers ("-1", "_3") and
# "%<slice>" for slices cut from one figure: 2020.03.22.20040782-p24-1533-2.png, ...-p6-52%3.png.
_PANEL_SUFFIX = re.compile(r"(-p\d+-\d+)(?:[-_]\d+)+$")
_NUMBER_SUFFIX = re.compile(r"_\d+$")
_PAGE = re.compile(r"(-p\d+)-\d+$")
GROUP_LEVELS = ("figure", "page")


def figure_group(path: str | Path, level: str = "figure") -> str:
    """The paper figure a UCSD COVID-CT slice was cut from, as a group key (its class folder and figure name).

    Slices of one figure (``name%1.png``, ``name%2.png``) and panels of one figure (``...-p17-80-1.png``,
    ``...-p17-80-2.png``; ``PIIS0140673620301549_2.png``) get one key, so that grouped splits keep them together.
    The key starts with the class folder, so the unrelated numbered images of two classes (``CT_NonCOVID/12.jpg``)
    never meet. ``level="page"`` joins every figure of one page of one paper (``...-p23-152`` and ``...-p23-156``,
    often panels of one patient's figure extracted apart): stricter, and the grouping the CT recipe was chosen with.
    """
    if level not in GROUP_LEVELS:
        raise ValueError(f"level must be one of {', '.join(GROUP_LEVELS)}, got {level!r}")
    path = Path(path)
    stem = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
    stem = stem.split("%", 1)[0]
    figure = _PANEL_SUFFIX.sub(r"\1", stem)
    if figure == stem:
        figure = _NUMBER_SUFFIX.sub("", stem)
    if level == "page":
        figure = _PAGE.sub(r"\1", figure)
    return f"{path.parent.name}/{figure or stem}"


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that add up exactly."""
    weights = np.asarray(weights, dtype=float)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    remainder = total - counts.sum()
    for index in np.argsort(-(exact - counts), kind="stable")[:remainder]:
        counts[index] += 1
    return counts.tolist()


def _class_targets(class_sizes: dict[str, int], fractions, counts) -> dict[str, list[int]]:
    if counts is not None:
        wanted = int(sum(counts))
        available = sum(class_sizes.values())
        if wanted > available:
            raise CovidTfError(f"split counts {list(counts)} ask for {wanted} images but only {available} are there")
        per_class = dict(zip(class_sizes, _largest_remainder(wanted, list(class_sizes.values()))))
        # Each split's count shared over the classes in proportion to their sizes.
        targets = {label: [0] * len(counts) for label in class_sizes}
        for split_index, split_count in enumerate(counts):
            shares = _largest_remainder(split_count, [per_class[label] for label in class_sizes])
            for label, share in zip(class_sizes, shares):
                targets[label][split_index] = share
        return targets
    return {label: _largest_remainder(size, fractions) for label, size in class_sizes.items()}


def make_split(
    frame: pd.DataFrame,
    *,
    fractions: Sequence[float] | None = config.DEFAULT_SPLIT_FRACTIONS,
    counts: Sequence[int] | None = None,
    seed: int = config.SEED,
    names: Sequence[str] = config.SPLIT_NAMES,
) -> pd.DataFrame:
    """Return ``frame`` with ``group`` and ``split`` columns (rows left out get ``split == ""``).

    Give ``fractions`` (e.g. 0.7, 0.15, 0.15) or ``counts`` (e.g. 1600, 400, 200, taken in
    proportion to the classes); the same ``seed`` gives the same split.
    """
    if counts is not None:
        fractions = None
        if len(counts) != len(names) or min(counts) < 0:
            raise CovidTfError(f"split counts must be {len(names)} non-negative numbers, got {list(counts)}")
    else:
        if fractions is None or len(fractions) != len(names) or min(fractions) < 0 or sum(fractions) <= 0:
            raise CovidTfError(f"split fractions must be {len(names)} non-negative numbers, got {fractions}")
        fractions = [f / sum(fractions) for f in fractions]
    result = frame.copy().reset_index(drop=True)
    result["group"] = assign_groups(result)
    group_table = result.groupby("group").agg(
        label=("label", lambda labels: labels.value_counts().index[0]), size=("label", "size")
    )
    class_sizes = result["label"].value_counts().sort_index().to_dict()
    targets = _class_targets(class_sizes, fractions, counts)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_table))
    shuffled = group_table.iloc[order]
    # Big groups first, so they land while there is room; ties keep the seeded order.
    shuffled = shuffled.iloc[np.argsort(-shuffled["size"].to_numpy(), kind="stable")]
    filled = {label: [0] * len(names) for label in targets}
    assignment: dict[int, str] = {}
    for group, label, size in zip(shuffled.index, shuffled["label"], shuffled["size"]):
        deficits = [targets[label][i] - filled[label][i] for i in range(len(names))]
        best = int(np.argmax(deficits))
        if counts is not None and deficits[best] < size / 2:
            continue  # counts asked for fewer images than there are: leave this group out
        filled[label][best] += size
        assignment[group] = names[best]
    result["split"] = result["group"].map(assignment).fillna("")
    return result


def split_leaks(frame: pd.DataFrame) -> list[dict]:
    """List the patients and (near-)identical images that appear in more than one split."""
    used = frame[frame["split"] != ""].copy()
    used["group"] = assign_groups(used)
    leaks = []
    for _, members in used.groupby("group"):
        if members["split"].nunique() > 1:
            leaks.append(
                {
                    "splits": sorted(members["split"].unique().tolist()),
                    "patients": sorted(members["patient_id"].astype(str).unique().tolist()),
                    "paths": sorted(members["path"].tolist()),
                }
            )
    return leaks


def save_split(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the split as CSV (``path,label,patient_id,group,split``) atomically."""
    columns = [c for c in SPLIT_COLUMNS if c in frame.columns]
    return atomic_write_text(path, csv_text(frame[columns]))


def load_split(path: str | Path) -> pd.DataFrame:
    """Read a split CSV written by ``save_split`` (or by hand: ``path,label,split`` at least).

    Split names are checked by row (the header is row 1): ``train``, ``val``, ``test`` and their usual
    spellings, or empty for an image left out; anything else is refused rather than silently dropped.
    No patient ids are made up: ``patient_id`` is there only when the file has it.
    """
    path = Path(path)
    try:
        table = restore_formulas(pd.read_csv(path, dtype={"patient_id": str, "split": str}, keep_default_na=False))
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CovidTfError(f"{path}: cannot read the split CSV ({error})") from None
    missing = {"path", "label", "split"} - set(table.columns)
    if missing:
        raise CovidTfError(f"{path}: the split CSV lacks the column(s) {', '.join(sorted(missing))}")
    names = table["split"].astype(str).str.strip()
    canonical = names.str.lower().map(lambda name: SPLIT_ALIASES.get(name, "" if name == "" else None))
    unknown = canonical.isna().to_numpy().nonzero()[0]
    if len(unknown):
        row = int(unknown[0])
        raise CovidTfError(f"{path}: row {row + 2}: unknown split {names.iloc[row]!r} ({len(unknown)} such row(s)); "
                           f"use {', '.join(config.SPLIT_NAMES)}, or leave it empty to leave the image out")
    table["split"] = canonical.astype(str)
    return table


def apply_split_file(frame: pd.DataFrame, split_file: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The one split-file reader of train and evaluate: ``frame`` (a ``DatasetIndex.frame``) with the
    ``split`` that ``split_file`` gives each image, matched on resolved paths.

    The dataset's own patient ids (and duplicate groups) stay, whatever the file carries, so the leak
    check sees them; patient ids the file gives are added as ``listed_patient_id`` and join groups too.
    Images the file does not list get split ``""``. Returns the annotated frame and the file's table,
    both with a ``key`` column (the resolved path).
    """
    table = load_split(split_file)
    table["key"] = table["path"].map(resolved_path)
    annotated = frame.copy()
    annotated["key"] = annotated["path"].map(resolved_path)
    annotated["split"] = annotated["key"].map(dict(zip(table["key"], table["split"]))).fillna("")
    if "patient_id" in table:
        listed = annotated["key"].map(dict(zip(table["key"], table["patient_id"].astype(str))))
        annotated["listed_patient_id"] = listed.fillna(annotated["patient_id"].astype(str))
    return annotated, table
