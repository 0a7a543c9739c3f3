"""The datasets a lung segmenter is trained and measured on (``segment-train``'s SOURCE arguments).

A source is ``[NAME=]PATH``: a dataset that :func:`covid_tf.data.discover.discover` reads (only its images
with a lung mask are used), or a folder holding ``images/`` and ``masks/`` with the same file names (the
layout of ``lung-masks-adult/jsrt``). NAME (default: the folder's name) labels the source in every table and
names it for ``--leave-one-source-out``. Each source is split on its own (grouped by patient and
near-duplicate image, stratified by class, 70/15/15, one seed), so adding a source never moves another
source's images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data import discover, splits
from covid_tf.data.duplicates import difference_hash, duplicate_group_ids
from covid_tf.data.image_files import list_images
from covid_tf.data.images import scan_image
from covid_tf.data.mask_files import find_mask
from covid_tf.errors import CovidTfError, ImageReadError

COLUMNS = ("source", "path", "mask_path", "label", "patient_id", "duplicate_group")


@dataclass(frozen=True)
class MaskSource:
    """A named dataset of images with lung masks."""

    name: str
    root: Path


def parse_source(text: str) -> MaskSource:
    """``NAME=PATH`` or ``PATH`` (named after its folder) as a :class:`MaskSource`."""
    name, _, path = text.rpartition("=") if "=" in text else ("", "", text)
    root = Path(path).expanduser()
    name = name.strip() or root.resolve().name
    if not path or not name or "," in name:
        raise CovidTfError(f"{text!r}: a source is PATH or NAME=PATH (NAME without commas)")
    return MaskSource(name, root)


def parse_sources(texts: Sequence[str]) -> list[MaskSource]:
    """Parse every source and refuse two sources with one name."""
    sources = [parse_source(text) for text in texts]
    names = [source.name for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CovidTfError(f"two sources are named {', '.join(repeated)}; name them apart with NAME=PATH")
    return sources


def _image_mask_folder(source: MaskSource) -> pd.DataFrame:
    """The rows of an ``images/`` + ``masks/`` folder: each file its own patient, near-duplicates grouped."""
    paths, _ = list_images([source.root / "images"])  # unreadable files are left out
    rows, hashes, thumbnails = [], [], []
    for path in paths:
        mask = find_mask(path)
        if mask is None:
            continue
        try:
            _, thumbnail, _ = scan_image(path)
        except ImageReadError:
            continue
        rows.append({"path": str(Path(path).resolve()), "mask_path": str(mask.resolve()), "label": source.name,
                     "patient_id": Path(path).stem})
        hashes.append(difference_hash(thumbnail))
        thumbnails.append(thumbnail)
    frame = pd.DataFrame(rows, columns=["path", "mask_path", "label", "patient_id"])
    frame["duplicate_group"] = duplicate_group_ids(np.array(hashes, dtype=bool), thumbnails=np.array(thumbnails)) \
        if rows else []
    return frame


def read_source(source: MaskSource, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Every image of a source that has a lung mask (columns :data:`COLUMNS`; ``label``: the dataset's class,
    or the source's name for an ``images/`` + ``masks/`` folder; the split is stratified by it)."""
    root = source.root
    if (root / "images").is_dir() and (root / "masks").is_dir():
        frame = _image_mask_folder(source)
    else:
        index = discover.discover(root, classes=classes)
        frame = index.frame[index.frame["mask_path"].astype(str) != ""].reset_index(drop=True)
    if len(frame) < len(config.SPLIT_NAMES):
        found = "no image has a lung mask" if frame.empty else f"only {len(frame)} image(s) have a lung mask"
        raise CovidTfError(f"{root}: {found} (source {source.name}); train, validation and test need at least one "
                           "each (a <Class>/masks/ folder beside <Class>/images/ with the same file names, a "
                           "mask_path column in metadata.csv, or images/ and masks/ folders)")
    frame = frame.assign(source=source.name)
    frame["patient_id"] = source.name + "/" + frame["patient_id"].astype(str)
    frame["duplicate_group"] = source.name + "/" + frame["duplicate_group"].astype(str)
    return frame[list(COLUMNS)].reset_index(drop=True)


def split_sources(sources: Sequence[MaskSource], classes: Sequence[str] | None = None,
                  seed: int = config.SEED) -> pd.DataFrame:
    """All sources' masked images, each source split 70/15/15 on its own (grouped), in one frame."""
    frames = [splits.make_split(read_source(source, classes), seed=seed) for source in sources]
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop(columns=["group"])
