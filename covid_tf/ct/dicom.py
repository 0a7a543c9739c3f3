"""DICOM reading, Hounsfield units, windowing and conversion to 8-bit PNG.

Reading
    ``read_slice(path)`` reads one image (one frame) and ``read_frames(path)`` every frame of a file;
    ``read_series(directory)`` scans a folder tree, groups the images by patient (``PatientID``) and
    series (``SeriesInstanceUID``) and sorts the slices of each series along the slice normal.

Hounsfield units
    ``hu = stored_value * RescaleSlope + RescaleIntercept`` as float32; a missing slope counts as 1,
    a missing intercept as 0 (per-frame values of enhanced multi-frame files are used when present).

Windowing (the exact formula, tested pixel by pixel)
    ``value = floor(clip((hu - (center - width / 2)) / width, 0, 1) * 255 + 0.5)`` as uint8,
    computed in float64: the window's lower edge ``center - width / 2`` maps to 0, the upper edge
    ``center + width / 2`` to 255, and values in between are rounded half up. Presets: ``lung``
    (center -600, width 1500, the default) and ``mediastinal`` (40, 400). This is the plain linear
    window, not the DICOM PS3.3 C.11.2.1.2 variant with ``center - 0.5`` and ``width - 1``.
    MONOCHROME1 images (where low values are bright) are inverted after windowing:
    ``255 - value``, so every PNG follows the MONOCHROME2 convention (air is dark).

Slice order
    The position of a slice is ``ImagePositionPatient . n`` with the normal
    ``n = row x column`` of ``ImageOrientationPatient`` (axial ``(0, 0, 1)`` when no slice of the
    series has an orientation). Slices are sorted by ascending position; when a slice of the series
    has no ``ImagePositionPatient`` the series falls back to ``InstanceNumber``, and when that is
    missing too, to the file name (natural order: ``2`` before ``10``). Frames of one multi-frame
    file use their per-frame positions when the file has them, else keep their order in the file.

Conversion
    ``convert_to_png(dicom_dir, out_dir)`` writes ``OUT/<PatientID>/<series>/slice_0001.png`` (safe
    folder names; ``<series>`` is the tail of the SeriesInstanceUID plus a short hash), an index
    ``OUT/index.csv`` and ``OUT/skipped.csv`` (path, reason) for files that are not DICOM, carry no
    pixel data or cannot be decoded. Input files are never modified.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from tqdm.auto import tqdm

from covid_tf.errors import CovidTfError, ImageReadError
from covid_tf.io_utils import atomic_write

LUNG_WINDOW = (-600.0, 1500.0)
MEDIASTINAL_WINDOW = (40.0, 400.0)
WINDOW_PRESETS: dict[str, tuple[float, float]] = {"lung": LUNG_WINDOW, "mediastinal": MEDIASTINAL_WINDOW}

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
SKIPPED_COLUMNS = ("path", "reason")

# Files with these extensions are clearly not DICOM and are passed over without a report.
IGNORED_EXTENSIONS = frozenset(
    {
        ".csv", ".txt", ".json", ".md", ".xml", ".html", ".py", ".pdf", ".yaml", ".yml",
        ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
        ".zip", ".gz", ".tar", ".npy", ".npz", ".nii",
    }
)  # fmt: skip
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_AXIAL_NORMAL = np.array([0.0, 0.0, 1.0])


class DicomSkip(ImageReadError):
    """A file that is passed over: not DICOM, no pixel data, or pixel data that cannot be decoded."""


@dataclass
class DicomSlice:
    """One 2-D image (one frame of a file) with the header values needed to place it."""

    path: Path
    frame: int
    num_frames: int
    patient_id: str
    series_uid: str
    study_uid: str
    instance_number: int | None
    image_position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    slope: float
    intercept: float
    photometric: str
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    modality: str = ""
    position: float | None = None
    hu: np.ndarray | None = field(default=None, repr=False)

    @property
    def inverted(self) -> bool:
        """True for MONOCHROME1 images (low values shown bright)."""
        return self.photometric == "MONOCHROME1"

    def load_hu(self) -> np.ndarray:
        """Return (and keep) the slice in Hounsfield units, float32 ``(rows, columns)``."""
        if self.hu is None:
            self.hu = _frames_to_hu(_decode_pixels(self.path), [self])[0]
        return self.hu

    def to_uint8(self, window: str | tuple[float, float] = "lung") -> np.ndarray:
        """Window the slice to uint8, inverted for MONOCHROME1."""
        center, width = parse_window(window)
        image = apply_window(self.load_hu(), center, width)
        return 255 - image if self.inverted else image


@dataclass
class DicomSeries:
    """The slices of one series of one patient, sorted along the slice normal."""

    patient_id: str
    series_uid: str
    slices: list[DicomSlice]
    sort_key: str  # "position", "instance_number" or "file_name"

    def __len__(self) -> int:
        return len(self.slices)

    def volume(self) -> np.ndarray:
        """All slices stacked in HU, float32 ``(num_slices, rows, columns)``."""
        return np.stack([item.load_hu() for item in self.slices])


@dataclass
class SeriesScan:
    """What ``read_series`` found: the sorted series and the files it passed over."""

    series: list[DicomSeries]
    skipped: pd.DataFrame  # columns path, reason


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


# --------------------------------------------------------------------------------------------------
# Windowing


def parse_window(window: str | tuple[float, float] | list[float]) -> tuple[float, float]:
    """``"lung"``, ``"mediastinal"``, ``"C,W"`` or ``(C, W)`` -> ``(center, width)``; width must be > 0."""
    if isinstance(window, str):
        text = window.strip().lower()
        if text in WINDOW_PRESETS:
            return WINDOW_PRESETS[text]
        parts = text.split(",")
        if len(parts) != 2:
            raise CovidTfError(
                f"bad window {window!r}: use one of {sorted(WINDOW_PRESETS)} or CENTER,WIDTH (e.g. -600,1500)"
            )
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise CovidTfError(f"bad window {window!r}: CENTER and WIDTH must be numbers") from None
    else:
        try:
            center, width = (float(value) for value in window)
        except (TypeError, ValueError):
            raise CovidTfError(f"bad window {window!r}: expected (center, width)") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise CovidTfError(f"bad window {window!r}: width must be a positive number")
    return center, width


def apply_window(hu: np.ndarray, center: float = LUNG_WINDOW[0], width: float = LUNG_WINDOW[1]) -> np.ndarray:
    """Map HU to uint8: ``floor(clip((hu - (center - width/2)) / width, 0, 1) * 255 + 0.5)``."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    values = np.asarray(hu, dtype=np.float64)
    scaled = np.clip((values - (center - width / 2.0)) / width, 0.0, 1.0)
    return np.floor(scaled * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Reading


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _number(value, default: float | None) -> float | None:
    """A DICOM numeric value (DS/IS, possibly empty or multi-valued) as float, else ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
        if value is None or value == "":
            return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if np.isfinite(number) else default


def _vector(value, length: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(item) for item in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != length or not all(np.isfinite(numbers)):
        return None
    return numbers


def _text(value, default: str) -> str:
    text = str(value).strip() if value is not None else ""
    return text or default


def _group_item(ds: pydicom.Dataset, frame: int, sequence: str):
    """First item of ``sequence`` in the per-frame functional group of ``frame``, else the shared one."""
    for group_name, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(group_name)
        if groups is not None and len(groups) > index:
            items = groups[index].get(sequence)
            if items is not None and len(items) > 0:
                return items[0]
    return None


def _read_dataset(path: Path) -> pydicom.Dataset:
    """The header of a DICOM file with pixel data (pixel data deferred), or ``DicomSkip``."""
    try:
        try:
            ds = pydicom.dcmread(path, defer_size="4 KB")
        except InvalidDicomError:
            # Files without the 128-byte preamble are still DICOM if a forced read finds an image.
            ds = pydicom.dcmread(path, defer_size="4 KB", force=True)
            if not any(tag in ds for tag in _PIXEL_TAGS) or "Rows" not in ds:
                raise DicomSkip(path, "not a DICOM file") from None
    except DicomSkip:
        raise
    except Exception as error:  # any parse failure means: not a readable DICOM file
        raise DicomSkip(path, f"not a DICOM file ({type(error).__name__}: {error})") from None
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise DicomSkip(path, "no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomSkip(path, "pixel data without Rows/Columns")
    samples = int(_number(ds.get("SamplesPerPixel"), 1))
    if samples != 1:
        raise DicomSkip(path, f"colour image (SamplesPerPixel={samples}) is not supported")
    return ds


def _header_slices(path: Path, ds: pydicom.Dataset) -> list[DicomSlice]:
    """One ``DicomSlice`` (without pixels) per frame of a dataset."""
    num_frames = max(1, int(_number(ds.get("NumberOfFrames"), 1)))
    base_position = _vector(ds.get("ImagePositionPatient"), 3)
    base_orientation = _vector(ds.get("ImageOrientationPatient"), 6)
    base_spacing = _vector(ds.get("PixelSpacing"), 2)
    instance = _number(ds.get("InstanceNumber"), None)
    instance_number = None if instance is None else int(instance)
    slices = []
    for frame in range(num_frames):
        position, orientation, spacing = base_position, base_orientation, base_spacing
        slope = _number(ds.get("RescaleSlope"), 1.0)
        intercept = _number(ds.get("RescaleIntercept"), 0.0)
        thickness = _number(ds.get("SliceThickness"), None)
        if num_frames > 1 or "SharedFunctionalGroupsSequence" in ds:
            plane = _group_item(ds, frame, "PlanePositionSequence")
            if plane is not None:
                position = _vector(plane.get("ImagePositionPatient"), 3) or position
            plane_orientation = _group_item(ds, frame, "PlaneOrientationSequence")
            if plane_orientation is not None:
                orientation = _vector(plane_orientation.get("ImageOrientationPatient"), 6) or orientation
            measures = _group_item(ds, frame, "PixelMeasuresSequence")
            if measures is not None:
                spacing = _vector(measures.get("PixelSpacing"), 2) or spacing
                thickness = _number(measures.get("SliceThickness"), thickness)
            transform = _group_item(ds, frame, "PixelValueTransformationSequence")
            if transform is not None:
                slope = _number(transform.get("RescaleSlope"), slope)
                intercept = _number(transform.get("RescaleIntercept"), intercept)
        slices.append(
            DicomSlice(
                path=path,
                frame=frame,
                num_frames=num_frames,
                patient_id=_text(ds.get("PatientID"), "unknown"),
                series_uid=_text(ds.get("SeriesInstanceUID"), ""),
                study_uid=_text(ds.get("StudyInstanceUID"), ""),
                instance_number=instance_number,
                image_position=position,
                orientation=orientation,
                slope=slope,
                intercept=intercept,
                photometric=_text(ds.get("PhotometricInterpretation"), "MONOCHROME2").upper(),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                pixel_spacing=spacing,
                slice_thickness=thickness,
                modality=_text(ds.get("Modality"), ""),
            )
        )
    return slices


def _decode_pixels(path: Path) -> np.ndarray:
    """Stored pixel values of every frame, shape ``(frames, rows, columns)``, or ``DicomSkip``."""
    try:
        ds = pydicom.dcmread(path, force=True)  # the header was checked by _read_dataset
        pixels = np.asarray(ds.pixel_array)
        num_frames = max(1, int(_number(ds.get("NumberOfFrames"), 1)))
    except Exception as error:
        raise DicomSkip(path, f"cannot decode pixel data ({type(error).__name__}: {error})") from None
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or pixels.shape[0] != num_frames:
        raise DicomSkip(path, f"unexpected pixel array shape {pixels.shape} for {num_frames} frame(s)")
    return pixels


def _frames_to_hu(pixels: np.ndarray, slices: list[DicomSlice]) -> list[np.ndarray]:
    """Rescale the frames of ``slices`` (taken from ``pixels``) to float32 HU."""
    return [(pixels[item.frame].astype(np.float64) * item.slope + item.intercept).astype(np.float32) for item in slices]


def slice_normal(orientation: Iterable[float] | None) -> np.ndarray:
    """Unit normal ``row x column`` of an ``ImageOrientationPatient``; axial ``(0, 0, 1)`` when unknown."""
    if orientation is None:
        return _AXIAL_NORMAL.copy()
    values = np.asarray(list(orientation), dtype=np.float64)
    normal = np.cross(values[:3], values[3:6])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 1e-9 else _AXIAL_NORMAL.copy()


def read_frames(path: str | Path) -> list[DicomSlice]:
    """Every frame of a DICOM file as ``DicomSlice`` with ``hu`` loaded; ``DicomSkip`` if unusable."""
    path = Path(path)
    slices = _header_slices(path, _read_dataset(path))
    for item, hu in zip(slices, _frames_to_hu(_decode_pixels(path), slices)):
        item.hu = hu
        if item.image_position is not None:
            item.position = float(np.dot(item.image_position, slice_normal(item.orientation)))
    return slices


def read_slice(path: str | Path, frame: int = 0) -> DicomSlice:
    """One frame (the first by default) of a DICOM file, in HU; ``DicomSkip`` if unusable."""
    slices = read_frames(path)
    if not 0 <= frame < len(slices):
        raise DicomSkip(path, f"frame {frame} out of range: the file has {len(slices)} frame(s)")
    return slices[frame]


def _sort_series(slices: list[DicomSlice]) -> tuple[list[DicomSlice], str]:
    """Fill in ``position`` and sort: by position, else InstanceNumber, else file name."""
    orientation = next((item.orientation for item in slices if item.orientation is not None), None)
    normal = slice_normal(orientation)
    for item in slices:
        if item.image_position is not None:
            own = slice_normal(item.orientation) if item.orientation is not None else normal
            item.position = float(np.dot(item.image_position, own))

    def name_key(item: DicomSlice) -> tuple:
        return (_natural_key(item.path.name), str(item.path), item.frame)

    if all(item.position is not None for item in slices):
        key, how = (lambda item: (item.position, item.instance_number or 0, *name_key(item))), "position"
    elif all(item.instance_number is not None for item in slices):
        key, how = (lambda item: (item.instance_number, *name_key(item))), "instance_number"
    else:
        key, how = name_key, "file_name"
    return sorted(slices, key=key), how


def iter_candidate_files(directory: str | Path) -> list[Path]:
    """Files under ``directory`` that may be DICOM: not hidden, not an obviously other format."""
    directory = Path(directory)
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(names, key=_natural_key):
            if name.startswith(".") or Path(name).suffix.lower() in IGNORED_EXTENSIONS:
                continue
            files.append(Path(root) / name)
    return files


def read_series(directory: str | Path, progress: bool | None = None) -> SeriesScan:
    """Scan a folder tree: DICOM images grouped by patient and series, slices sorted.

    Pixel data is not loaded here (``DicomSeries.volume()`` or ``DicomSlice.load_hu()`` do it).
    Files without ``SeriesInstanceUID`` are grouped by patient and folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CovidTfError(f"{directory}: DICOM folder not found")
    groups: dict[tuple[str, str], list[DicomSlice]] = {}
    skipped: list[dict[str, str]] = []
    files = iter_candidate_files(directory)
    for path in tqdm(files, desc="reading DICOM headers", unit="file", disable=_tqdm_disable(progress, len(files))):
        try:
            slices = _header_slices(path, _read_dataset(path))
        except DicomSkip as skip:
            skipped.append({"path": skip.path, "reason": skip.reason})
            continue
        except Exception as error:  # a malformed header must not stop a long conversion
            skipped.append({"path": str(path), "reason": f"unreadable header ({type(error).__name__}: {error})"})
            continue
        for item in slices:
            uid = item.series_uid or "no-series-uid:" + str(path.parent)
            groups.setdefault((item.patient_id, uid), []).append(item)
    series = []
    for (patient_id, series_uid), slices in sorted(groups.items()):
        ordered, how = _sort_series(slices)
        series.append(DicomSeries(patient_id=patient_id, series_uid=series_uid, slices=ordered, sort_key=how))
    return SeriesScan(series=series, skipped=pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)))


# --------------------------------------------------------------------------------------------------
# Conversion to PNG


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


def _tqdm_disable(progress: bool | None, total: int) -> bool | None:
    if progress is None:
        return True if total < 50 else None  # None: tqdm shows the bar on a terminal only
    return not progress


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
        table = pd.read_csv(path, dtype=str)
    except Exception as error:
        raise CovidTfError(f"{path}: cannot read labels CSV ({error})") from None
    missing = {"patient_id", "label"} - set(table.columns)
    if missing:
        raise CovidTfError(f"{path}: labels CSV lacks column(s) {sorted(missing)} (needs patient_id,label)")
    return dict(zip(table["patient_id"].astype(str), table["label"].fillna("").astype(str)))


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def convert_to_png(
    dicom_dir: str | Path,
    out_dir: str | Path,
    window: str | tuple[float, float] = "lung",
    overwrite: bool = False,
    labels: Mapping[str, str] | str | Path | None = None,
    progress: bool | None = None,
) -> ConversionResult:
    """Convert every DICOM image under ``dicom_dir`` to an 8-bit PNG under ``out_dir``.

    Writes ``OUT/<PatientID>/<series>/slice_0001.png`` (1 = lowest position along the slice normal),
    ``OUT/index.csv`` (``INDEX_COLUMNS``; ``png_path`` relative to OUT, ``source_path`` absolute) and
    ``OUT/skipped.csv`` (path, reason). ``labels`` maps patient ids to labels (a dict or a CSV
    ``patient_id,label``); when None, ``dicom_dir/labels.csv`` is used if it exists. A non-empty
    ``out_dir`` is refused unless ``overwrite=True``; then the PNGs of the previous index are replaced.
    """
    source_root = Path(dicom_dir).expanduser().resolve()
    out_root = Path(out_dir).expanduser().resolve()
    center, width = parse_window(window)
    if not source_root.is_dir():
        raise CovidTfError(f"{dicom_dir}: DICOM folder not found")
    if _is_within(out_root, source_root) or _is_within(source_root, out_root):
        raise CovidTfError(f"{out_dir}: the output folder must be outside the DICOM folder {dicom_dir} and not hold it")
    if out_root.exists() and not out_root.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    previous_pngs: set[Path] = set()
    if out_root.is_dir() and any(out_root.iterdir()):
        if not overwrite:
            raise CovidTfError(f"{out_dir}: output folder is not empty (pass overwrite=True / --overwrite)")
        previous_index = out_root / "index.csv"
        if previous_index.is_file():
            try:
                old = pd.read_csv(previous_index, usecols=["png_path"], dtype=str)
                previous_pngs = {(out_root / name).resolve() for name in old["png_path"].dropna()}
            except (ValueError, OSError, pd.errors.ParserError):
                previous_pngs = set()
    if labels is None and (source_root / "labels.csv").is_file():
        labels = source_root / "labels.csv"
    label_of = load_labels(labels)

    scan = read_series(source_root, progress=progress)
    skipped = scan.skipped.to_dict("records")
    rows: list[dict] = []
    written: set[Path] = set()
    total = sum(len(series) for series in scan.series)
    bar = tqdm(total=total, desc="DICOM -> PNG", unit="slice", disable=_tqdm_disable(progress, total))
    failed_files: dict[Path, str] = {}
    cache: tuple[Path | None, np.ndarray | None] = (None, None)
    used_series_dirs: dict[str, str] = {}
    for series in scan.series:
        patient_dir = safe_name(series.patient_id)
        series_dir = f"{patient_dir}/{short_series_name(series.series_uid)}"
        if series_dir in used_series_dirs and used_series_dirs[series_dir] != series.series_uid:
            series_dir = f"{series_dir}-{len(used_series_dirs)}"
        used_series_dirs[series_dir] = series.series_uid
        converted = []
        for item in series.slices:
            bar.update(1)
            if item.path in failed_files:
                continue
            if cache[0] != item.path:
                try:
                    cache = (item.path, _decode_pixels(item.path))
                except DicomSkip as skip:
                    failed_files[item.path] = skip.reason
                    skipped.append({"path": skip.path, "reason": skip.reason})
                    continue
            pixels = cache[1]
            if pixels.shape[1:] != (item.rows, item.columns):
                reason = f"pixel array {pixels.shape[1:]} does not match Rows/Columns {(item.rows, item.columns)}"
                failed_files[item.path] = reason
                skipped.append({"path": str(item.path), "reason": reason})
                continue
            item.hu = _frames_to_hu(pixels, [item])[0]
            converted.append(item)
            image = apply_window(item.hu, center, width)
            if item.inverted:
                image = 255 - image
            item.hu = None  # keep memory flat on long series
            ok, encoded = cv2.imencode(".png", image)
            if not ok:
                raise CovidTfError(f"{item.path}: PNG encoding failed")
            digits = max(4, len(str(len(series.slices))))
            png_rel = f"{series_dir}/slice_{len(converted):0{digits}d}.png"
            png_path = out_root / png_rel
            atomic_write(png_path, lambda tmp, data=encoded: tmp.write_bytes(data.tobytes()))
            written.add(png_path)
            rows.append(
                {
                    "png_path": png_rel,
                    "source_path": str(item.path),
                    "frame": item.frame,
                    "patient_id": series.patient_id,
                    "series_uid": series.series_uid,
                    "series_dir": series_dir,
                    "slice_index": len(converted),
                    "num_slices": 0,  # filled below
                    "position": item.position,
                    "instance_number": item.instance_number,
                    "window_center": center,
                    "window_width": width,
                    "photometric": item.photometric,
                    "rows": item.rows,
                    "columns": item.columns,
                    "label": label_of.get(series.patient_id, ""),
                }
            )
        for row in rows[len(rows) - len(converted) :]:
            row["num_slices"] = len(converted)
    bar.close()
    for stale in previous_pngs - written:
        if _is_within(stale, out_root) and stale.suffix == ".png":
            stale.unlink(missing_ok=True)
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    skipped_frame = pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))
    out_root.mkdir(parents=True, exist_ok=True)
    atomic_write(out_root / "index.csv", lambda tmp: index.to_csv(tmp, index=False))
    atomic_write(out_root / "skipped.csv", lambda tmp: skipped_frame.to_csv(tmp, index=False))
    return ConversionResult(out_dir=out_root, index=index, skipped=skipped_frame)
