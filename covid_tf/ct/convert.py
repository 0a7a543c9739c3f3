"""Conversion of DICOM series to windowed 8-bit PNG slices, with an index.

``convert_to_png(dicom_dir, out_dir)`` writes ``OUT/<PatientID>/<series>/slice_0001.png`` (safe folder
names; ``<series>`` is the tail of the SeriesInstanceUID plus a short hash), an index ``OUT/index.csv`` and
``OUT/skipped.csv`` (path, reason) for files that are not DICOM, carry no pixel data or cannot be decoded.
Slices are numbered from 1 at the lowest position along the slice normal (:mod:`covid_tf.ct.dicom`).
Input files are never modified. ``image_format="jpg"`` writes JPEGs instead (seed 002 converted its slices to
JPEG) and ``size`` resizes every slice to ``size`` x ``size`` (seed 002's 512); the index column keeps its
name ``png_path`` either way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from covid_tf.ct.dicom import (
    SKIPPED_COLUMNS,
    DicomSkip,
    DicomSlice,
    apply_window,
    decode_pixels,
    frames_to_hu,
    parse_window,
)
from covid_tf.ct.series import DicomSeries, read_series, tqdm_disable
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_text, csv_text, is_within, restore_formulas

# File formats of the slices: suffix and OpenCV encoder parameters (JPEG at quality 95, OpenCV's default).
IMAGE_FORMATS = {"png": (".png", []), "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95])}

INDEX_COLUMNS = (
    "png_path",
    "source_path",
    "frame",
    "patient_id",
    "series_uid",
    "series_dir",
    "slice_index",
    "num_slices",
    "position",
    "instance_number",
    "window_center",
    "window_width",
    "photometric",
    "rows",
    "columns",
    "label",
)


@dataclass
class ConversionResult:
    """What ``convert_to_png`` wrote."""

    out_dir: Path
    index: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def num_converted(self) -> int:
        return len(self.index)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def safe_name(text: str, max_length: int = 64) -> str:
    """A file-system-safe name: ``[A-Za-z0-9._-]`` only, plus a short hash when anything was changed."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._") or "unknown"
    cleaned = cleaned[:max_length]
    if cleaned != text:
        cleaned = f"{cleaned}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"
    return cleaned


def short_series_name(series_uid: str) -> str:
    """Folder name of a series: the last 10 characters of the UID plus a 6-character hash of it."""
    tail = re.sub(r"[^A-Za-z0-9]+", "_", series_uid[-10:]).strip("_") or "series"
    return f"{tail}-{hashlib.sha1(series_uid.encode('utf-8')).hexdigest()[:6]}"


def load_labels(labels: Mapping[str, str] | str | Path | None) -> dict[str, str]:
    """Patient labels from a mapping or a CSV with columns ``patient_id,label``."""
    if labels is None:
        return {}
    if isinstance(labels, Mapping):
        return {str(key): str(value) for key, value in labels.items()}
    path = Path(labels)
    if not path.is_file():
        raise CovidTfError(f"{path}: labels file not found")
    try:
        table = restore_formulas(pd.read_csv(path, dtype=str))
    except Exception as error:
        raise CovidTfError(f"{path}: cannot read labels CSV ({error})") from None
    missing = {"patient_id", "label"} - set(table.columns)
    if missing:
        raise CovidTfError(f"{path}: labels CSV lacks column(s) {sorted(missing)} (needs patient_id,label)")
    return dict(zip(table["patient_id"].astype(str), table["label"].fillna("").astype(str)))


def _previous_pngs(dicom_dir, out_dir, source_root: Path, out_root: Path, overwrite: bool) -> set[Path]:
    """Refuse output folders that clash with the input or hold other files; return the PNGs of an earlier run."""
    if not source_root.is_dir():
        raise CovidTfError(f"{dicom_dir}: DICOM folder not found")
    if is_within(out_root, source_root) or is_within(source_root, out_root):
        raise CovidTfError(f"{out_dir}: the output folder must be outside the DICOM folder {dicom_dir} and not hold it")
    if out_root.exists() and not out_root.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    if not (out_root.is_dir() and any(out_root.iterdir())):
        return set()
    if not overwrite:
        raise CovidTfError(f"{out_dir}: output folder is not empty (pass overwrite=True / --overwrite)")
    previous_index = out_root / "index.csv"
    if not previous_index.is_file():
        return set()
    try:
        old = pd.read_csv(previous_index, usecols=["png_path"], dtype=str)
    except (ValueError, OSError, pd.errors.ParserError):
        return set()
    return {(out_root / name).resolve() for name in old["png_path"].dropna()}


@dataclass
class _Converter:
    """Writes the slices of one scan as PNGs; keeps the index rows, the skipped files and what it wrote."""

    out_root: Path
    center: float
    width: float
    label_of: dict[str, str]
    skipped: list[dict]
    rows: list[dict] = field(default_factory=list)
    written: set[Path] = field(default_factory=set)
    failed_files: dict[Path, str] = field(default_factory=dict)
    used_series_dirs: dict[str, str] = field(default_factory=dict)
    cache: tuple[Path | None, np.ndarray | None] = (None, None)
    image_format: str = "png"
    size: int | None = None

    def series_dir(self, series: DicomSeries) -> str:
        name = f"{safe_name(series.patient_id)}/{short_series_name(series.series_uid)}"
        if name in self.used_series_dirs and self.used_series_dirs[name] != series.series_uid:
            name = f"{name}-{len(self.used_series_dirs)}"
        self.used_series_dirs[name] = series.series_uid
        return name

    def convert_series(self, series: DicomSeries, bar) -> None:
        folder = self.series_dir(series)
        digits = max(4, len(str(len(series.slices))))
        converted = 0
        for item in series.slices:
            bar.update(1)
            image = self.windowed(item)
            if image is None:
                continue
            converted += 1
            png_rel = f"{folder}/slice_{converted:0{digits}d}{IMAGE_FORMATS[self.image_format][0]}"
            self.write_png(item, image, png_rel)
            self.rows.append(self.index_row(item, series, png_rel, folder, converted))
        for row in self.rows[len(self.rows) - converted:]:
            row["num_slices"] = converted

    def skip(self, path: Path, shown: str, reason: str) -> None:
        self.failed_files[path] = reason
        self.skipped.append({"path": shown, "reason": reason})

    def windowed(self, item: DicomSlice) -> np.ndarray | None:
        """The slice as windowed uint8 (MONOCHROME1 inverted), or None when its file cannot be decoded."""
        if item.path in self.failed_files:
            return None
        if self.cache[0] != item.path:
            try:
                self.cache = (item.path, decode_pixels(item.path))
            except DicomSkip as skip:
                self.skip(item.path, skip.path, skip.reason)
                return None
        pixels = self.cache[1]
        if pixels.shape[1:] != (item.rows, item.columns):
            reason = f"pixel array {pixels.shape[1:]} does not match Rows/Columns {(item.rows, item.columns)}"
            self.skip(item.path, str(item.path), reason)
            return None
        item.hu = frames_to_hu(pixels, [item])[0]
        image = apply_window(item.hu, self.center, self.width)
        item.hu = None  # keep memory flat on long series
        return 255 - image if item.inverted else image

    def write_png(self, item: DicomSlice, image: np.ndarray, png_rel: str) -> None:
        suffix, parameters = IMAGE_FORMATS[self.image_format]
        if self.size is not None and image.shape != (self.size, self.size):
            shrinking = self.size < max(image.shape)
            image = cv2.resize(image, (self.size, self.size),
                               interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        ok, encoded = cv2.imencode(suffix, image, parameters)
        if not ok:
            raise CovidTfError(f"{item.path}: {self.image_format.upper()} encoding failed")
        png_path = self.out_root / png_rel
        atomic_write(png_path, lambda tmp, data=encoded: tmp.write_bytes(data.tobytes()))
        self.written.add(png_path)

    def index_row(self, item: DicomSlice, series: DicomSeries, png_rel: str, folder: str, number: int) -> dict:
        return {
            "png_path": png_rel, "source_path": str(item.path), "frame": item.frame,
            "patient_id": series.patient_id, "series_uid": series.series_uid, "series_dir": folder,
            "slice_index": number, "num_slices": 0,  # filled when the series is done
            "position": item.position, "instance_number": item.instance_number,
            "window_center": self.center, "window_width": self.width, "photometric": item.photometric,
            "rows": item.rows, "columns": item.columns, "label": self.label_of.get(series.patient_id, ""),
        }


def convert_to_png(
    dicom_dir: str | Path,
    out_dir: str | Path,
    window: str | tuple[float, float] = "lung",
    overwrite: bool = False,
    labels: Mapping[str, str] | str | Path | None = None,
    progress: bool | None = None,
    image_format: str = "png",
    size: int | None = None,
) -> ConversionResult:
    """Convert every DICOM image under ``dicom_dir`` to an 8-bit PNG (or ``image_format="jpg"``: JPEG) under
    ``out_dir``, each resized to ``size`` x ``size`` pixels when ``size`` is given.

    Writes ``OUT/<PatientID>/<series>/slice_0001.png`` (1 = lowest position along the slice normal),
    ``OUT/index.csv`` (``INDEX_COLUMNS``; ``png_path`` relative to OUT, ``source_path`` absolute) and
    ``OUT/skipped.csv`` (path, reason). ``labels`` maps patient ids to labels (a dict or a CSV
    ``patient_id,label``); when None, ``dicom_dir/labels.csv`` is used if it exists. A non-empty
    ``out_dir`` is refused unless ``overwrite=True``; then the PNGs of the previous index are replaced.
    """
    source_root = Path(dicom_dir).expanduser().resolve()
    out_root = Path(out_dir).expanduser().resolve()
    center, width = parse_window(window)
    if image_format not in IMAGE_FORMATS:
        raise CovidTfError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if size is not None and (int(size) != size or size < 1):
        raise CovidTfError(f"size must be a whole number of pixels above 0, got {size}")
    previous_pngs = _previous_pngs(dicom_dir, out_dir, source_root, out_root, overwrite)
    if labels is None and (source_root / "labels.csv").is_file():
        labels = source_root / "labels.csv"
    converter = _Converter(out_root, center, width, load_labels(labels), skipped=[], image_format=image_format,
                           size=size)

    scan = read_series(source_root, progress=progress)
    converter.skipped.extend(scan.skipped.to_dict("records"))
    total = sum(len(series) for series in scan.series)
    bar = tqdm(total=total, desc="DICOM -> PNG", unit="slice", disable=tqdm_disable(progress, total))
    for series in scan.series:
        converter.convert_series(series, bar)
    bar.close()
    for stale in previous_pngs - converter.written:
        if is_within(stale, out_root) and stale.suffix in (".png", ".jpg"):
            stale.unlink(missing_ok=True)
    index = pd.DataFrame(converter.rows, columns=list(INDEX_COLUMNS))
    skipped_frame = pd.DataFrame(converter.skipped, columns=list(SKIPPED_COLUMNS))
    out_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_root / "index.csv", csv_text(index))
    atomic_write_text(out_root / "skipped.csv", csv_text(skipped_frame))
    return ConversionResult(out_dir=out_root, index=index, skipped=skipped_frame)
