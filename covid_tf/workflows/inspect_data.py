"""``inspect``: what a dataset holds (classes, patients, sizes, modes, masks, skipped files, duplicate groups) as one
JSON-ready summary; with ``--against``, its near-copies of other datasets' images (:mod:`covid_tf.workflows.copies`).
No TensorFlow."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from covid_tf.data.discover import DatasetIndex, discover
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs
from covid_tf.workflows.copies import CopiesResult, find_dataset_copies


def summarize(index: DatasetIndex) -> dict:
    """The JSON summary of a ``DatasetIndex``."""
    frame = index.frame
    sizes = Counter(f"{w}x{h}" for w, h in zip(frame["width"], frame["height"]))
    return {
        "root": str(index.root),
        "layout": index.layout,
        "n_images": int(len(frame)),
        "classes": index.class_counts(),
        "splits": {str(k): int(v) for k, v in frame["split"].value_counts().items() if k},
        "patients": int(frame["patient_id"].nunique()),
        "sizes": dict(sizes.most_common()),
        "modes": {str(k): int(v) for k, v in frame["mode"].value_counts().items()},
        "with_lung_masks": int((frame["mask_path"] != "").sum()),
        "with_lesion_masks": int((frame["lesion_path"] != "").sum()),
        "skipped": [{"path": s.path, "reason": s.reason} for s in index.skipped],
        "duplicates": index.duplicate_groups,
    }


def inspect_dataset(data: str | Path, *, classes: Sequence[str] | None = None,
                    class_map: Mapping[str, str] | None = None) -> tuple[dict, list[str]]:
    """The summary of the dataset ``data`` and the notes its reading left (what it repaired or left out)."""
    index = discover(data, classes=classes, class_map=class_map)
    return summarize(index), list(index.notes)


def inspect_against(data: str | Path, others: Sequence[str | Path], out: str | Path | None = None, *,
                    classes: Sequence[str] | None = None, class_map: Mapping[str, str] | None = None) -> CopiesResult:
    """The images of ``data`` that are near-copies of images of ``others``; with ``out`` (checked first: outside
    every dataset read), ``copies.csv`` and ``copies.png`` written there."""
    if out is not None:
        refuse_output_inside_inputs(out, [data, *others])
        check_writable_output(out, folder=True)
    return find_dataset_copies(data, others, out, classes=classes, class_map=class_map)


def check_options(against: Sequence[str] | None, out: str | Path | None) -> None:
    """``--out`` goes with ``--against`` only."""
    if not against and out is not None:
        raise CovidTfError("--out goes with --against (the copies' CSV and contact sheet)")
