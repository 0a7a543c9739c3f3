"""DICOM reading, Hounsfield units and windowing.

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

Slice order (:mod:`covid_tf.ct.series`)
    The position of a slice is ``ImagePositionPatient . n`` with the normal
    ``n = row x column`` of ``ImageOrientationPatient`` (axial ``(0, 0, 1)`` when no slice of the
    series has an orientation). Slices are sorted by ascending position; when a slice of the series
    has no ``ImagePositionPatient`` the series falls back to ``InstanceNumber``, and when that is
    missing too, to the file name (natural order: ``2`` before ``10``). Frames of one multi-frame
    file use their per-frame positions when the file has them, else keep their order in the file.

Conversion to PNG lives in :mod:`covid_tf.ct.convert`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from covid_tf.errors import CovidTfError, ImageReadError

LUNG_WINDOW = (-600.0, 1500.0)
MEDIASTINAL_WINDOW = (40.0, 400.0)
WINDOW_PRESETS: dict[str, tuple[float, float]] = {"lung": LUNG_WINDOW, "mediastinal": MEDIASTINAL_WINDOW}

SKIPPED_COLUMNS = ("path", "reason")

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
            self.hu = frames_to_hu(decode_pixels(self.path), [self])[0]
        return self.hu

    def to_uint8(self, window: str | tuple[float, float] = "lung") -> np.ndarray:
        """Window the slice to uint8, inverted for MONOCHROME1."""
        center, width = parse_window(window)
        image = apply_window(self.load_hu(), center, width)
        return 255 - image if self.inverted else image


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


def read_dataset(path: Path) -> pydicom.Dataset:
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


def header_slices(path: Path, ds: pydicom.Dataset) -> list[DicomSlice]:
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


def decode_pixels(path: Path) -> np.ndarray:
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


def frames_to_hu(pixels: np.ndarray, slices: list[DicomSlice]) -> list[np.ndarray]:
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
    slices = header_slices(path, read_dataset(path))
    for item, hu in zip(slices, frames_to_hu(decode_pixels(path), slices)):
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
