"""The train/test overlap check of ``evaluate``, ``occlusion`` and ``explain``: is a test image one the model learnt?

Every test image is compared with the run's train and val images: their fingerprints stored by ``train``
(``fingerprints.npz``), else made from ``split.csv``'s images where those still exist (older runs), else the
check is said to be impossible in one line. :func:`check_overlap` returns the copies found
(``overlap.csv``) and which test rows to keep for the headline metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from covid_tf.data.fingerprints import DEFAULT_THRESHOLD
from covid_tf.data.overlap import OVERLAP_COLUMNS, ReferenceSet, find_copies, reference_from_files
from covid_tf.errors import CovidTfError
from covid_tf.runs.record import FINGERPRINTS_FILE, OVERLAP_FILE, SPLIT_FILE, RunRecord

TRAINING_SPLITS = ("train", "val")


@dataclass
class OverlapCheck:
    """What the overlap check found: ``copies`` (overlap.csv's rows), the test rows that copy nothing (``keep``)."""

    checked: bool
    copies: pd.DataFrame
    keep: np.ndarray  # (N,) bool over the test rows
    reference: str = ""  # where the training images' fingerprints came from
    n_reference: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_copies(self) -> int:
        """Test images that copy a training or validation image."""
        return int((~self.keep).sum())

    def headline(self, *, keep_overlap: bool) -> np.ndarray:
        """(N,) bool: the rows of the headline metrics. The copies are left out unless ``keep_overlap``, or unless
        every row is a copy (then all are kept: :func:`check_overlap` notes it). The one rule for every command."""
        if keep_overlap or not self.keep.any():
            return np.ones(self.keep.size, dtype=bool)
        return self.keep.copy()

    def summary(self, *, excluded: bool) -> dict:
        """``metrics.json``'s ``overlap`` (``excluded``: the copies were to be left out of the headline)."""
        left_out = bool(excluded and not self.headline(keep_overlap=False).all())
        return {"checked": self.checked, "n_test_images": int(self.keep.size), "n_copies": self.n_copies,
                "excluded_from_headline": left_out, "reference": self.reference,
                "n_reference_images": self.n_reference, "notes": list(self.notes)}

    def warning(self, *, excluded: bool) -> str | None:
        """The one warning line when copies were found."""
        if not self.n_copies:
            return None
        splits = self.copies.drop_duplicates("test_image")["split"].value_counts().to_dict()
        where = ", ".join(f"{count} of {name}" for name, count in splits.items())
        if not excluded:
            effect = "kept in the headline metrics (--keep-overlap)"
        elif self.headline(keep_overlap=False).all():
            effect = "kept in the headline metrics, as every test image is one"
        else:
            effect = "left out of the headline metrics"
        return (f"warning: {self.n_copies} of {self.keep.size} test images are copies of the model's training or "
                f"validation images ({where}; listed in {OVERLAP_FILE}): {effect}")


class TrainingReference(NamedTuple):
    """The run's train and val fingerprints (None when nothing can be compared) and notes on how they were found."""

    reference: ReferenceSet | None
    notes: list[str]

    @property
    def frame_readings(self) -> str | None:
        """What the test images' decoding pass makes for the check (``discover(frame_readings=...)``): every
        reading of each image, or nothing when there is nothing to compare them with."""
        return None if self.reference is None else "query"

    def test_thumbnails(self, paths: Sequence[str], thumbnails_of: Callable[[str], np.ndarray]
                        ) -> list[np.ndarray] | None:
        """The test images' frame thumbnails for :func:`check_overlap` (``thumbnails_of(path)``: from a decoding
        pass or the file), or None when there is nothing to compare them with (none are made)."""
        return None if self.frame_readings is None else [thumbnails_of(path) for path in paths]


def training_reference(record: RunRecord) -> TrainingReference:
    """The run's train and val fingerprints and notes on how they were found (None when nothing can be compared)."""
    if not record.exists:
        return TrainingReference(None, ["overlap with the training images not checked: the model has no run folder "
                                        f"(config.json, {FINGERPRINTS_FILE} or {SPLIT_FILE}) beside it"])
    reference = record.fingerprints()
    if reference is not None:
        return TrainingReference(reference, [])
    split = record.split()
    if split is None:
        return TrainingReference(None, [f"overlap with the training images not checked: {record.folder} has "
                                        f"neither {FINGERPRINTS_FILE} nor {SPLIT_FILE}"])
    rows = split[split["split"].isin(TRAINING_SPLITS)]
    origin = f"{SPLIT_FILE}'s train and val images (the run has no usable {FINGERPRINTS_FILE})"
    reference, missing = reference_from_files(rows["path"].tolist(), rows["split"].tolist(), origin)
    notes = [f"the run has no {FINGERPRINTS_FILE} of this covid_tf's kind: fingerprints made from the "
             f"{len(reference)} train and val images "
             f"of its {SPLIT_FILE} that still exist"]
    if missing:
        notes.append(f"{len(missing)} of the {len(rows)} train and val images of {SPLIT_FILE} no longer exist "
                     f"(e.g. {missing[0]}): copies of those cannot be found")
    if not len(reference):
        return TrainingReference(None, [f"overlap with the training images not checked: none of the train and val "
                                        f"images of {record.folder / SPLIT_FILE} can be read any more"])
    return TrainingReference(reference, notes)


def check_overlap(training: TrainingReference, paths: Sequence[str], thumbnails: Sequence[np.ndarray] | None, *,
                  threshold: float = DEFAULT_THRESHOLD) -> OverlapCheck:
    """Compare every test image (its path and frame thumbnails) with the run's train and val images
    (:func:`training_reference`); ``thumbnails`` may be None when there is nothing to compare them with."""
    reference, notes = training.reference, list(training.notes)
    keep = np.ones(len(paths), dtype=bool)
    if reference is None:
        return OverlapCheck(False, pd.DataFrame(columns=list(OVERLAP_COLUMNS)), keep, notes=notes)
    if thumbnails is None or len(paths) != len(thumbnails):
        raise CovidTfError(f"overlap check: {len(paths)} test images but "
                           f"{'no' if thumbnails is None else len(thumbnails)} thumbnails")
    copies = find_copies(list(paths), thumbnails, reference, threshold)
    keep &= ~pd.Series(list(paths)).isin(set(copies["test_image"])).to_numpy()
    if len(paths) and not keep.any():
        notes.append(f"every one of the {len(paths)} images is a copy of a training image: the headline metrics "
                     "include them")
    return OverlapCheck(True, copies, keep, reference.origin, len(reference), notes)


def held_out_rows(training: TrainingReference, rows: pd.DataFrame, thumbnails: Sequence[np.ndarray] | None, *,
                  keep_overlap: bool = False) -> tuple[pd.DataFrame, OverlapCheck]:
    """The rows to check (those that copy no training image, unless ``keep_overlap``) and the overlap check.

    When every row is a copy, every row is kept (:meth:`OverlapCheck.headline`).
    """
    check = check_overlap(training, rows["path"].tolist(), thumbnails)
    return rows[check.headline(keep_overlap=keep_overlap)].reset_index(drop=True), check
