"""Which test images are copies of reference images (a model's training and validation images, another dataset).

A :class:`ReferenceSet` holds the stored fingerprints (:mod:`covid_tf.data.fingerprints`) of the reference
images with their paths and splits; :func:`find_copies` lists every test image whose frame thumbnail matches
one of them, best match first (``overlap.csv``: test image, matched image, its split, similarity, distance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.fingerprints import (
    DEFAULT_THRESHOLD,
    FINGERPRINT_BYTES,
    THUMBNAIL,
    match_fingerprints,
    stored_fingerprints,
)
from covid_tf.data.images import scan_image
from covid_tf.errors import ImageReadError

OVERLAP_COLUMNS = ("test_image", "matched_image", "split", "similarity", "distance")


@dataclass
class ReferenceSet:
    """The fingerprints of reference images: ``paths`` and ``splits`` (N,), ``fingerprints`` (N, FINGERPRINT_BYTES)."""

    paths: list[str]
    splits: list[str]
    fingerprints: np.ndarray
    origin: str = ""  # where they came from, for the notes: "the run's fingerprints", "split.csv's images", ...

    def __post_init__(self) -> None:
        self.fingerprints = np.asarray(self.fingerprints, dtype=np.int8).reshape(-1, FINGERPRINT_BYTES)
        if not len(self.paths) == len(self.splits) == len(self.fingerprints):
            raise ValueError(f"{len(self.paths)} paths, {len(self.splits)} splits and {len(self.fingerprints)} "
                             "fingerprints: one of each per image")

    def __len__(self) -> int:
        return len(self.paths)


def reference_from_thumbnails(paths: Sequence[str], splits: Sequence[str], thumbnails: Sequence[np.ndarray],
                              origin: str = "") -> ReferenceSet:
    """The reference set of images whose frame thumbnails are known (a dataset index made them: the first of each
    image's :func:`~covid_tf.data.film_frame.frame_thumbnails` is stored)."""
    firsts = [np.asarray(thumbnail).reshape(-1, THUMBNAIL, THUMBNAIL)[0] for thumbnail in thumbnails]
    stack = np.stack(firsts) if firsts else np.zeros((0, THUMBNAIL, THUMBNAIL), dtype=np.uint8)
    return ReferenceSet(list(map(str, paths)), list(map(str, splits)), stored_fingerprints(stack), origin)


def frame_thumbnail_of(path: str | Path, readings: str = "query") -> np.ndarray:
    """An image file's frame thumbnails, every reading of a query or the one ``"stored"``
    (:func:`~covid_tf.data.film_frame.frame_readings`; one blank for an image that cannot be read: it matches
    nothing)."""
    try:
        return scan_image(path, readings)[2]
    except ImageReadError:
        return np.zeros((1, THUMBNAIL, THUMBNAIL), dtype=np.uint8)


def reference_from_files(paths: Sequence[str], splits: Sequence[str], origin: str = ""
                         ) -> tuple[ReferenceSet, list[str]]:
    """The reference set of the image files that can still be read, and the paths that could not."""
    kept, kept_splits, thumbnails, missing = [], [], [], []
    for path, split in zip(paths, splits):
        try:
            thumbnails.append(scan_image(path, "stored")[2])
        except ImageReadError:
            missing.append(str(path))
            continue
        kept.append(str(path))
        kept_splits.append(str(split))
    return reference_from_thumbnails(kept, kept_splits, thumbnails, origin), missing


def find_copies(test_paths: Sequence[str], test_thumbnails: Sequence[np.ndarray], reference: ReferenceSet,
                threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Every (test image, reference image) pair that is a copy, best match first per test image."""
    if not len(test_paths) or not len(reference):
        return pd.DataFrame(columns=list(OVERLAP_COLUMNS))
    matches = match_fingerprints(list(test_thumbnails), reference.fingerprints, threshold)
    table = pd.DataFrame(
        [(test_paths[q], reference.paths[s], reference.splits[s], round(similarity, 4), round(1.0 - similarity, 4))
         for q, s, similarity in matches], columns=list(OVERLAP_COLUMNS))
    return table
