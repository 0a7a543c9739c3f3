"""Synthetic DICOM CT series: a chest cross-section phantom in Hounsfield units.

``generate_ct_dataset(out_dir)`` writes ``OUT/<Class>/<PatientID>/IM0001.dcm ...`` and
``OUT/labels.csv`` (``patient_id,label``). Each patient is one axial series of ``slices`` slices of
``size x size`` pixels: air (-1000 HU) around a body (soft tissue 40 HU, a fat rim -100 HU), two lungs
(-850 HU), heart and aorta (40 HU), spine and ribs (700 HU). Classes:

* ``COVID``: ground-glass opacities, -500 to -300 HU, patchy, peripheral, in both lungs;
* ``CAP``: a dense lobar consolidation, 0 to 40 HU, filling the lower part of one lung;
* ``Normal`` (and any other class name): no lesion.

Every file is a valid CT Image Storage object (file meta, explicit VR little endian, int16 pixel data,
RescaleSlope/Intercept, ImagePositionPatient/Orientation, PixelSpacing, SliceThickness, PatientID).
Patients cycle through intercepts -1024, -1000 and 0 (signed stored values) to exercise rescaling.
InstanceNumber 1 is the most superior slice, as scanners number head to feet, and the file names are
a shuffled numbering, so neither file name nor instance number gives the order along the body:
only ImagePositionPatient does. Everything, UIDs included, is deterministic for a seed.

``extent`` is the part of the chest a series covers, from 0 (the lung bases) to 1 (the apices): the whole chest
by default; ``(0.1, 0.5)`` covers the lower and middle chest, where the CAP consolidation lies and most COVID
lesions are, so that nearly every slice of a sick patient shows its disease (notebook 05's demo set).
The phantom itself (anatomy, lesions, true lung masks) is :mod:`covid_tf.synthetic.ct_phantom`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_text, csv_text, safe_name
from covid_tf.synthetic.ct_phantom import (  # noqa: F401  (the HU constants are part of this module's interface)
    AIR_HU,
    BONE_HU,
    CONSOLIDATION_HU,
    FAT_HU,
    GROUND_GLASS_HU,
    LUNG_HU,
    SOFT_TISSUE_HU,
    Patient,
)

INTERCEPTS = (-1024.0, -1000.0, 0.0)
FIELD_OF_VIEW_MM = 350.0
SLICE_SPACING_MM = 5.0
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root; the suffix is a hash of seed and names
SLICE_COLUMNS = (
    "path",
    "patient_id",
    "label",
    "slice_index",
    "instance_number",
    "position",
    "series_uid",
    "lesion_pixels",
)


def _uid(seed: int, *parts: object) -> str:
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["covid_tf.synthetic_ct", str(seed), *map(str, parts)]))


@dataclass(frozen=True)
class _SeriesInfo:
    """What every slice file of one patient's series shares."""

    seed: int
    patient_id: str
    label: str
    intercept: float
    num_slices: int
    study_uid: str
    series_uid: str
    frame_uid: str


def _header(info: _SeriesInfo, instance_number: int, z: float, size: int) -> Dataset:
    """The file meta, patient, study, series and geometry tags of one slice."""
    spacing = FIELD_OF_VIEW_MM / size
    sop_uid = _uid(info.seed, info.patient_id, "instance", instance_number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.FrameOfReferenceUID = info.frame_uid
    ds.Modality = "CT"
    ds.PatientID = info.patient_id
    ds.PatientName = f"Synthetic^{info.patient_id}"
    ds.StudyDescription = f"covid_tf synthetic chest CT ({info.label})"
    ds.SeriesDescription = "axial lung"
    ds.StudyDate = ds.SeriesDate = "20200401"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.ImagePositionPatient = [-FIELD_OF_VIEW_MM / 2 + spacing / 2, -FIELD_OF_VIEW_MM / 2 + spacing / 2, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.SliceThickness = SLICE_SPACING_MM
    ds.SpacingBetweenSlices = SLICE_SPACING_MM
    ds.ImagesInAcquisition = info.num_slices
    return ds


def _dicom_bytes(hu: np.ndarray, info: _SeriesInfo, instance_number: int, z: float) -> bytes:
    """One slice as the bytes of a CT DICOM file (int16 stored values, HU through the rescale)."""
    size = hu.shape[0]
    ds = _header(info, instance_number, z, size)
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = info.intercept
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    stored = np.rint(hu - info.intercept).astype(np.int16)
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _safe(text: str) -> str:
    cleaned = safe_name(text)
    if not cleaned:
        raise CovidTfError(f"bad class name {text!r}")
    return cleaned


def _clear_previous(out_dir: Path, class_dirs: Sequence[str]) -> None:
    """With ``overwrite``: remove the ``.dcm`` files of an earlier run in ``OUT/<Class>/<Patient>/``."""
    for class_dir in class_dirs:
        folder = out_dir / class_dir
        if not folder.is_dir():
            continue
        for patient_dir in folder.iterdir():
            if patient_dir.is_dir():
                for path in patient_dir.glob("*.dcm"):
                    path.unlink()
                if not any(patient_dir.iterdir()):
                    patient_dir.rmdir()


def slice_height(slice_index: int, slices: int, extent: tuple[float, float] = (0.0, 1.0)) -> float:
    """The height in the chest (0 the lung bases, 1 the apices) of slice ``slice_index`` (0 the most inferior)."""
    low, high = extent
    return low + (high - low) * slice_index / max(slices - 1, 1)


def _check_ct_options(classes: Sequence[str], patients_per_class: int, slices: int, size: int) -> list[str]:
    classes = [str(name).strip() for name in classes if str(name).strip()]
    if not classes:
        raise CovidTfError("no class names given")
    if len(set(classes)) != len(classes):
        raise CovidTfError(f"duplicate class names in {classes}")
    for name, value, low in (
        ("patients_per_class", patients_per_class, 1),
        ("slices", slices, 1),
        ("size", size, 16),
    ):
        if int(value) != value or value < low:
            raise CovidTfError(f"{name} must be an integer >= {low}, got {value}")
    return classes


def _write_series(out_dir: Path, info: _SeriesInfo, rng: np.random.Generator, patient: Patient,
                  extent: tuple[float, float] = (0.0, 1.0)) -> list[dict]:
    """Write one patient's slices (files numbered in a shuffled order); return their rows."""
    slices = info.num_slices
    z0 = float(rng.uniform(-200.0, -100.0))
    file_numbers = rng.permutation(slices) + 1
    rows = []
    for slice_index in range(slices):  # 0 = most inferior
        hu, lesion = patient.slice_hu(slice_height(slice_index, slices, extent))
        z = round(z0 + slice_index * SLICE_SPACING_MM, 3)
        instance_number = slices - slice_index  # 1 = most superior
        data = _dicom_bytes(hu, info, instance_number, z)
        path = out_dir / _safe(info.label) / info.patient_id / f"IM{file_numbers[slice_index]:04d}.dcm"
        atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
        rows.append({
            "path": str(path.resolve()), "patient_id": info.patient_id, "label": info.label,
            "slice_index": slice_index + 1, "instance_number": instance_number, "position": z,
            "series_uid": info.series_uid, "lesion_pixels": int(lesion.sum()),
        })
    return rows


def generate_ct_dataset(
    out_dir: str | Path,
    classes: Sequence[str] = ("COVID", "CAP", "Normal"),
    patients_per_class: int = 3,
    slices: int = 8,
    size: int = 64,
    seed: int = 42,
    overwrite: bool = False,
    extent: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """Write a synthetic CT dataset; return one row per slice (``SLICE_COLUMNS``, path absolute).

    ``slice_index`` 1 is the most inferior slice (lowest ImagePositionPatient z). A non-empty
    ``out_dir`` is refused unless ``overwrite=True`` (which first removes the ``.dcm`` files under
    ``OUT/<Class>/<Patient>/`` for the classes asked for).
    """
    classes = _check_ct_options(classes, patients_per_class, slices, size)
    low, high = (float(value) for value in extent)
    if not 0.0 <= low <= high <= 1.0:
        raise CovidTfError(f"extent must be two heights 0 <= low <= high <= 1, got {tuple(extent)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise CovidTfError(f"{out_dir}: output folder is not empty (pass overwrite=True / --overwrite)")
        _clear_previous(out_dir, [_safe(name) for name in classes])
    rows, labels = [], []
    patient_number = 0
    for class_index, label in enumerate(classes):
        for index in range(patients_per_class):
            rng = np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))
            patient_id = f"{_safe(label)}{index + 1:03d}"
            labels.append({"patient_id": patient_id, "label": label})
            patient = Patient(rng, label, size)
            info = _SeriesInfo(seed, patient_id, label, INTERCEPTS[patient_number % len(INTERCEPTS)], slices,
                               study_uid=_uid(seed, patient_id, "study"), series_uid=_uid(seed, patient_id, "series"),
                               frame_uid=_uid(seed, patient_id, "frame"))
            patient_number += 1
            rows += _write_series(out_dir, info, rng, patient, extent)
    atomic_write_text(out_dir / "labels.csv", csv_text(pd.DataFrame(labels)))
    return pd.DataFrame(rows, columns=list(SLICE_COLUMNS))


_Patient = Patient  # the name tests and older callers use
