"""Finding the images of a dataset, whatever its layout, without moving a file.

Layouts read as they come (``discover`` picks one):

- ``csv``: a CSV with ``path,label[,patient_id][,split]`` (paths relative to the CSV), given
  directly or as ``metadata.csv`` / ``labels.csv`` in the root;
- ``splits``: ``<root>/{train,val,test}/<Class>/...``;
- ``radiography``: the Kaggle COVID-19 Radiography Database, ``<root>/<Class>/images/*.png`` with
  optional ``masks/`` (lungs) and ``lesions/`` beside ``images/``;
- ``folders``: one folder per class, ``<root>/<Class>/*.{png,jpg,jpeg}`` (sub-folders allowed: the
  first sub-folder level names the patient).

The files of a folder are found by :mod:`covid_tf.data.image_files`, the rule every command shares (links,
hidden and non-image files), as ``list_images`` finds files and folders without labels. Every file
is decoded once; unreadable, truncated, empty or non-image files are skipped and listed with a reason, and
(near-)identical images are grouped so that splits can keep them together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.duplicates import DEFAULT_MAX_DISTANCE, difference_hash, duplicate_group_ids, duplicate_groups
from covid_tf.data.film_frame import FRAME_READINGS
from covid_tf.data.image_files import CSV_NAMES, SkippedFile, image_files, is_image_name, walk_files
from covid_tf.data.images import scan_image
from covid_tf.data.mask_files import find_mask
from covid_tf.errors import CovidTfError, ImageReadError
from covid_tf.io_utils import progress_bar, restore_formulas

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
MASK_COLUMNS = {"mask_path": "lungs", "lesion_path": "lesions"}  # index column -> mask kind
COLUMNS = ("path", "label", "patient_id", "split", "mask_path", "lesion_path")


@dataclass
class DatasetIndex:
    """The images of a dataset: one row per readable image, plus what was skipped and why.

    ``frame`` has the columns ``path`` (absolute), ``label``, ``patient_id``, ``split`` (empty
    when the layout has none), ``mask_path`` and ``lesion_path`` (empty when absent), ``width``,
    ``height``, ``mode`` and ``duplicate_group``.
    """

    root: Path
    layout: str
    frame: pd.DataFrame
    class_names: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)
    duplicate_groups: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the reader repaired or left out, to show as warnings
    frame_thumbnails: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # path -> (K, T, T), if asked for

    @property
    def labels(self) -> np.ndarray:
        """Integer class indices of the rows, in the order of ``class_names``."""
        return self.frame["label"].map({name: i for i, name in enumerate(self.class_names)}).to_numpy()

    def class_counts(self) -> dict[str, int]:
        counts = self.frame["label"].value_counts()
        return {name: int(counts.get(name, 0)) for name in self.class_names}


def parse_class_map(text: str | None) -> dict[str, str]:
    """Parse ``"CT_COVID=COVID,CT_NonCOVID=Normal"`` into a mapping."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        if "=" not in item:
            raise CovidTfError(f"class map entry {item!r} is not of the form FOLDER=CLASS")
        source, target = (side.strip() for side in item.split("=", 1))
        mapping[source] = target
    return mapping


def parse_class_list(text: str | None) -> list[str] | None:
    """Parse ``"COVID,Normal"`` into a list (``None`` for all classes)."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return names or None


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    """Name the layout of ``root`` (see the module docstring)."""
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise CovidTfError(f"{root}: expected a folder of images or a CSV file")
    if not root.is_dir():
        raise CovidTfError(f"{root}: no such folder")
    if any((root / name).is_file() for name in CSV_NAMES):
        return "csv"
    subdirs = _subdirs(root)
    if subdirs and all(d.name.lower() in SPLIT_ALIASES for d in subdirs):
        return "splits"
    if subdirs and any((d / "images").is_dir() for d in subdirs):
        return "radiography"
    if subdirs:
        return "folders"
    raise CovidTfError(f"{root}: no class folders and no metadata.csv found; see covid_tf.data for the layouts")


def _rows_from_class_folder(root: Path, folder: Path, label: str, split: str,
                            skipped: list[SkippedFile]) -> list[dict]:
    images_dir = folder / "images"
    try:
        radiography = images_dir.is_dir()
    except OSError as error:  # the class folder itself cannot be entered
        skipped.append(SkippedFile(str(folder), f"cannot list the folder ({error.strerror})"))
        return []
    source = images_dir if radiography else folder
    rows = []
    for path in image_files(source, skipped, within=root):
        relative = path.relative_to(source)
        # Without a patient folder each image is its own patient: named with its class folder, so that
        # COVID/img_0.png and Normal/img_0.png are not taken for one patient.
        patient = relative.parts[0] if len(relative.parts) > 1 else f"{folder.name}/{path.stem}"
        row = {"path": str(path), "label": label, "patient_id": patient, "split": split}
        for column, kind in MASK_COLUMNS.items():
            found = find_mask(path, kind=kind) if radiography else None
            row[column] = str(found) if found is not None else ""
        rows.append(row)
    return rows


def _rows_from_folders(root: Path, split: str, skipped: list[SkippedFile]) -> list[dict]:
    rows = []
    for folder in _subdirs(root):
        found = _rows_from_class_folder(root, folder, folder.name, split, skipped)
        if not found and not any(item.path == str(folder) for item in skipped):
            skipped.append(SkippedFile(str(folder), "class folder holds no image files"))
        rows.extend(found)
    return rows


def _csv_path(base: Path, given: str) -> Path:
    return (base / given).resolve() if not Path(given).is_absolute() else Path(given)


def _rows_from_csv(csv_path: Path, skipped: list[SkippedFile], notes: list[str]) -> list[dict]:
    """The rows of a label CSV, checked by row number (the header is row 1): an empty label or one path with
    two labels is an error; a path listed twice counts once; a label that contradicts the class folder the
    image lies in is reported."""
    try:
        table = restore_formulas(pd.read_csv(csv_path, dtype=str, keep_default_na=False))
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CovidTfError(f"{csv_path}: cannot read the label CSV ({error})") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise CovidTfError(f"{csv_path}: the label CSV lacks the column(s) {', '.join(sorted(missing))}")
    base, rows, first = csv_path.parent, [], {}
    for number, record in enumerate(table.to_dict("records"), start=2):
        label, path = record["label"].strip(), _csv_path(base, record["path"])
        if not label:
            raise CovidTfError(f"{csv_path}: row {number}: empty label for {record['path']!r}")
        if str(path) in first:
            earlier, earlier_label = first[str(path)]
            if earlier_label != label:
                raise CovidTfError(f"{csv_path}: {record['path']} has two labels, {earlier_label!r} in row {earlier} "
                                   f"and {label!r} in row {number}; keep one")
            notes.append(f"{csv_path}: {record['path']} is listed in row {earlier} and again in row {number}: "
                         "counted once")
            continue
        first[str(path)] = (number, label)
        if not path.is_file():
            skipped.append(SkippedFile(str(path), f"listed in {csv_path.name} but missing"))
            continue
        row = {"path": str(path), "label": label, "patient_id": record.get("patient_id") or record["path"],
               "split": SPLIT_ALIASES.get(record.get("split", "").lower(), ""), "csv_row": number}
        for column, kind in MASK_COLUMNS.items():
            given = record.get(column, "")
            candidate = (base / given) if given else find_mask(path, kind=kind)
            row[column] = str(candidate) if candidate is not None and candidate.is_file() else ""
        rows.append(row)
    _report_folder_conflicts(csv_path, rows, notes)
    return rows


def _report_folder_conflicts(csv_path: Path, rows: list[dict], notes: list[str]) -> None:
    """Report a label that is no class of the CSV's own folders while the image lies in a class's folder."""
    labels = {row["label"] for row in rows}
    for row in rows:
        path = Path(row["path"])
        holder = path.parent.parent if path.parent.name == "images" else path.parent
        if holder.name in labels and row["label"] != holder.name:
            notes.append(f"{csv_path}: row {row['csv_row']}: label {row['label']!r} for {path}, which lies in the "
                         f"folder of class {holder.name!r}")


def _scan(rows: list[dict], skipped: list[SkippedFile], workers: int, frames: str | None
          ) -> tuple[list, np.ndarray, np.ndarray, dict]:
    """Decode every image once; keep the readable ones, their hashes, thumbnails and (``frames``) frame thumbnails."""
    def scan(row: dict):
        try:
            return scan_image(row["path"], frames)
        except ImageReadError as error:
            return error

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(progress_bar(pool.map(scan, rows), total=len(rows), desc="scanning images", unit="image"))
    kept, hashes, thumbnails, found = [], [], [], {}  # found: the overlap check's thumbnails (fingerprints)
    for row, result in zip(rows, results):
        if isinstance(result, ImageReadError):
            skipped.append(SkippedFile(result.path, result.reason))
            continue
        info, thumbnail, readings = result
        if readings is not None:
            found[row["path"]] = readings
        kept.append({**row, "width": info.width, "height": info.height, "mode": info.mode})
        hashes.append(difference_hash(thumbnail))
        thumbnails.append(thumbnail.astype(np.float16))
    return (kept, np.array(hashes, dtype=bool).reshape(len(kept), 256),
            np.array(thumbnails, dtype=np.float16).reshape(len(kept), 32, 32), found)


def _default_workers() -> int:
    """Threads of the decoding pass: one a core. Much of decoding and of the frame thumbnails holds Python's global
    lock; more threads only queue for it (measured on two cores, 12,000 films: 12.1 s with two threads, 13.3 s
    with four; with frame thumbnails 16.9 s and 20.9 s)."""
    return min(8, os.cpu_count() or 2)


def discover(root: str | Path, *, classes: Sequence[str] | None = None, class_map: Mapping[str, str] | None = None,
             duplicate_distance: int = DEFAULT_MAX_DISTANCE, workers: int | None = None,
             frame_readings: str | None = None) -> DatasetIndex:
    """Index the images below ``root`` (a folder or a label CSV).

    ``frame_readings`` (``"stored"`` or ``"query"``, :func:`covid_tf.data.film_frame.frame_readings`): the frame
    thumbnails of the overlap check, made in the same decoding pass (``frame_thumbnails``); none by default.

    ``class_map`` renames folder names to class names (merged over ``config.DEFAULT_CLASS_MAP``);
    ``classes`` keeps only those classes, in that order (default: all, sorted by name).
    """
    if frame_readings not in (None, *FRAME_READINGS):
        raise ValueError(f"frame readings must be None or one of {', '.join(FRAME_READINGS)}, got {frame_readings!r}")
    root = Path(root).expanduser().resolve()
    layout = detect_layout(root)
    skipped: list[SkippedFile] = []
    notes: list[str] = []
    rows = _layout_rows(root, layout, skipped, notes)
    mapping = {**config.DEFAULT_CLASS_MAP, **(class_map or {})}
    for row in rows:
        row["label"] = mapping.get(row["label"], row["label"])
    found = sorted({row["label"] for row in rows})
    if classes:
        unknown = [name for name in classes if name not in found]
        if unknown:
            raise CovidTfError(
                f"{root}: class(es) {', '.join(unknown)} not found; the data has {', '.join(found) or 'no classes'}"
            )
        left_out = sorted({row["label"] for row in rows} - set(classes))
        if left_out:
            notes.append(f"{root}: images labelled {', '.join(map(repr, left_out))} are left out (not in --classes)")
        rows = [row for row in rows if row["label"] in classes]
        class_names = list(classes)
    else:
        class_names = found

    rows, hashes, thumbnails, frames = _scan(rows, skipped, workers or _default_workers(), frame_readings)
    if not rows:
        reasons = f"; {len(skipped)} file(s) skipped, e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        raise CovidTfError(f"no readable images in {root}{reasons}")
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "width", "height", "mode"])
    group_ids = duplicate_group_ids(hashes, duplicate_distance, thumbnails)
    frame["duplicate_group"] = group_ids
    groups = duplicate_groups(frame["path"].tolist(), group_ids)
    empty = [name for name in class_names if not (frame["label"] == name).any()]
    if empty and classes:
        raise CovidTfError(f"{root}: class(es) {', '.join(empty)} named in --classes have no readable image")
    skipped.extend(SkippedFile(str(root / name), "class has no readable images") for name in empty)
    return DatasetIndex(root, layout, frame.reset_index(drop=True), class_names, skipped, groups, notes, frames)


def _layout_rows(root: Path, layout: str, skipped: list[SkippedFile], notes: list[str]) -> list[dict]:
    if layout == "csv":
        csv_path = root if root.is_file() else next(root / n for n in CSV_NAMES if (root / n).is_file())
        rows = _rows_from_csv(csv_path, skipped, notes)
        if root.is_dir():
            notes.extend(_unlisted_images(root, csv_path, {row["path"] for row in rows} | {s.path for s in skipped}))
        return rows
    if layout == "splits":
        rows = []
        for split_dir in _subdirs(root):
            rows.extend(_rows_from_folders(split_dir, SPLIT_ALIASES[split_dir.name.lower()], skipped))
        return rows
    return _rows_from_folders(root, "", skipped)


def _unlisted_images(root: Path, csv_path: Path, listed: set[str]) -> list[str]:
    """A note naming (the first five of) the image files below ``root`` that its index CSV does not list."""
    unlisted = [str(path.relative_to(root)) for path in walk_files(root)
                if is_image_name(path.name) and str(path.resolve()) not in listed]
    more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
    return [f"{root}: {len(unlisted)} image file(s) not listed in {csv_path.name} are left out: "
            f"{', '.join(unlisted[:5])}{more}"] if unlisted else []
