"""The ``inspect --against`` back-end: which images of a dataset are near-copies of images of other datasets.

Before anything is trained: a test set "from other hospitals" may hold films of the training data under other
names (public collections republish one another's films). Every image of ``data`` is compared with every image
of the ``others`` (:mod:`covid_tf.data.fingerprints`); the pairs found are written to ``copies.csv`` (image,
matched image, the dataset it lies in, similarity, distance) with a contact sheet ``copies.png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.discover import discover
from covid_tf.data.overlap import find_copies, reference_from_thumbnails
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write_text, csv_text

COPIES_FILE = "copies.csv"
SHEET_FILE = "copies.png"


@dataclass
class CopiesResult:
    """The copies found: one row per (image of ``data``, matched image of another dataset), best match first."""

    copies: pd.DataFrame
    n_images: int
    n_reference: int
    files: list[Path] = field(default_factory=list)

    @property
    def n_copied(self) -> int:
        """Images of ``data`` with at least one copy among the others."""
        return int(self.copies["test_image"].nunique()) if len(self.copies) else 0


def find_dataset_copies(data: str | Path, others: Sequence[str | Path], out_dir: str | Path | None = None, *,
                        classes: Sequence[str] | None = None, class_map: Mapping[str, str] | None = None
                        ) -> CopiesResult:
    """Compare every image of ``data`` with those of ``others``; write ``copies.csv`` and ``copies.png`` to
    ``out_dir`` when given."""
    if not others:
        raise CovidTfError("give at least one dataset to compare with (--against OTHER)")
    index = discover(data, classes=classes, class_map=class_map, frame_readings="query")
    paths, thumbnails, splits = [], [], []
    for other in others:
        other_index = discover(other, frame_readings="stored")
        if other_index.root == index.root:
            raise CovidTfError(f"{other}: is the dataset itself; inspect lists duplicates inside one dataset already")
        for path in other_index.frame["path"]:
            paths.append(path)
            splits.append(str(other_index.root))
            thumbnails.append(other_index.frame_thumbnails[path])
    reference = reference_from_thumbnails(paths, splits, thumbnails, "the other datasets")
    own = index.frame["path"].tolist()
    copies = find_copies(own, [index.frame_thumbnails[path] for path in own], reference)
    copies = copies.rename(columns={"split": "dataset"})
    result = CopiesResult(copies, len(own), len(reference))
    if out_dir is not None:
        result.files = _write(Path(out_dir), copies, np.unique(splits))
    return result


def _write(out_dir: Path, copies: pd.DataFrame, others: Sequence[str]) -> list[Path]:
    from covid_tf.figures.copies import plot_copy_pairs

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / COPIES_FILE, csv_text(copies))
    shown = copies.rename(columns={"dataset": "split"}).assign(split=lambda t: t["split"].map(lambda p: Path(p).name))
    plot_copy_pairs(shown, path=out_dir / SHEET_FILE,
                    title=f"{copies['test_image'].nunique() if len(copies) else 0} image(s) with a near-copy in "
                          f"{', '.join(Path(o).name for o in others)}")
    return [out_dir / COPIES_FILE, out_dir / SHEET_FILE]
