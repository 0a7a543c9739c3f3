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
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_text, csv_text, safe_name

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
LUNG_HU = -850.0
BONE_HU = 700.0
GROUND_GLASS_HU = (-500.0, -300.0)
CONSOLIDATION_HU = (0.0, 40.0)
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


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise scaled to [0, 1], for patchy lesions."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigmaX=sigma)
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low + 1e-6)


class _Patient:
    """Random anatomy and lesions of one patient; ``slice_hu(t)`` renders the slice at height t in [0, 1]."""

    def __init__(self, rng: np.random.Generator, label: str, size: int) -> None:
        self.rng = rng
        self.label = label
        self.size = size
        self.body = (rng.uniform(0.80, 0.90), rng.uniform(0.58, 0.66))
        self.lung = (rng.uniform(0.27, 0.32), rng.uniform(0.38, 0.44))
        self.lung_x = rng.uniform(0.38, 0.43)
        self.heart = (rng.uniform(0.05, 0.12), rng.uniform(0.22, 0.27))
        self.lesions: list[tuple] = []  # (side, cx, cy, ct, rx, ry, rt, hu)
        if label.upper() == "COVID":
            for _ in range(int(rng.integers(3, 7))):
                side = float(rng.choice([-1.0, 1.0]))
                angle = rng.uniform(-0.6 * np.pi, 0.6 * np.pi)  # lateral and posterior-lateral rim
                lx, ly = self.lung
                cx = side * (self.lung_x + 0.8 * lx * np.cos(angle))
                cy = -0.02 + 0.8 * ly * np.sin(angle)
                self.lesions.append(
                    (side, cx, cy, rng.uniform(0.2, 0.8), rng.uniform(0.12, 0.2), rng.uniform(0.12, 0.22),
                     rng.uniform(0.2, 0.35), rng.uniform(*GROUND_GLASS_HU))
                )  # fmt: skip
        elif label.upper() == "CAP":
            side = float(rng.choice([-1.0, 1.0]))
            # (side, fissure height, fissure tilt, lowest t, highest t): the lung below an oblique fissure.
            self.consolidation = (
                side,
                rng.uniform(-0.15, 0.10),
                rng.uniform(-0.35, 0.35),
                rng.uniform(0.0, 0.15),
                rng.uniform(0.45, 0.7),
            )
        self.patchiness = _smooth_noise(rng, (size, size), sigma=max(1.0, size / 48))

    def slice_hu(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """HU image of the slice at height ``t`` (0 inferior, 1 superior) and its lesion mask."""
        rng, size = self.rng, self.size
        coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
        x, y = np.meshgrid(coords, coords)  # x: patient right -> left, y: anterior -> posterior
        hu = np.full((size, size), AIR_HU)
        bx, by = self.body
        body = _ellipse(x, y, 0.0, 0.05, bx, by)
        hu[body] = FAT_HU
        hu[_ellipse(x, y, 0.0, 0.05, bx - 0.06, by - 0.06)] = SOFT_TISSUE_HU
        for angle in np.linspace(0.15 * np.pi, 0.85 * np.pi, 4):  # ribs on both sides
            for side in (-1.0, 1.0):
                rib_x = side * (bx - 0.10) * np.sin(angle)
                rib_y = 0.05 - (by - 0.10) * np.cos(angle)
                hu[_ellipse(x, y, rib_x, rib_y, 0.035, 0.035)] = BONE_HU
        scale = 0.75 + 0.25 * np.sin(np.pi * (0.15 + 0.7 * t))  # lungs widest mid-chest
        lx, ly = self.lung[0] * scale, self.lung[1] * scale
        lungs = _ellipse(x, y, -self.lung_x, -0.02, lx, ly) | _ellipse(x, y, self.lung_x, -0.02, lx, ly)
        hu[lungs] = LUNG_HU
        heart_scale = 1.25 - 0.6 * t  # the heart fills the lower chest
        hx, hr = self.heart
        heart = _ellipse(x, y, hx, -0.12, hr * heart_scale, 0.8 * hr * heart_scale)
        hu[heart] = SOFT_TISSUE_HU
        hu[_ellipse(x, y, 0.10, 0.28, 0.06, 0.06)] = SOFT_TISSUE_HU  # descending aorta
        hu[_ellipse(x, y, 0.0, 0.42, 0.10, 0.09)] = BONE_HU  # vertebral body
        hu[_ellipse(x, y, 0.0, 0.55, 0.035, 0.035)] = 20.0  # spinal canal
        lungs &= ~heart
        lesion = np.zeros((size, size), dtype=bool)
        for side, cx, cy, ct, rx, ry, rt, value in self.lesions:
            depth = 1.0 - ((t - ct) / rt) ** 2
            if depth <= 0:
                continue
            shrink = np.sqrt(depth)
            blob = _ellipse(x, y, cx, cy, rx * shrink, ry * shrink) & lungs & (np.sign(x) == side)
            blob &= self.patchiness > 0.45  # patchy, not a solid disc
            hu[blob] = value + rng.normal(0.0, 25.0, size=int(blob.sum()))
            lesion |= blob
        if self.label.upper() == "CAP":
            side, cut, tilt, low_t, high_t = self.consolidation
            if low_t <= t <= high_t:
                lobe = lungs & (np.sign(x) == side) & (y - cut > tilt * side * x - 0.3 * (t - low_t))
                hu[lobe] = rng.uniform(*CONSOLIDATION_HU) + rng.normal(0.0, 8.0, size=int(lobe.sum()))
                lesion |= lobe
        hu += rng.normal(0.0, 12.0, size=hu.shape) * body  # scanner noise inside the body
        return np.clip(hu, -1024.0, 3071.0), lesion


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


def _write_series(out_dir: Path, info: _SeriesInfo, rng: np.random.Generator, patient: _Patient) -> list[dict]:
    """Write one patient's slices (files numbered in a shuffled order); return their rows."""
    slices = info.num_slices
    z0 = float(rng.uniform(-200.0, -100.0))
    file_numbers = rng.permutation(slices) + 1
    rows = []
    for slice_index in range(slices):  # 0 = most inferior
        hu, lesion = patient.slice_hu(slice_index / max(slices - 1, 1))
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
) -> pd.DataFrame:
    """Write a synthetic CT dataset; return one row per slice (``SLICE_COLUMNS``, path absolute).

    ``slice_index`` 1 is the most inferior slice (lowest ImagePositionPatient z). A non-empty
    ``out_dir`` is refused unless ``overwrite=True`` (which first removes the ``.dcm`` files under
    ``OUT/<Class>/<Patient>/`` for the classes asked for).
    """
    classes = _check_ct_options(classes, patients_per_class, slices, size)
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
            patient = _Patient(rng, label, size)
            info = _SeriesInfo(seed, patient_id, label, INTERCEPTS[patient_number % len(INTERCEPTS)], slices,
                               study_uid=_uid(seed, patient_id, "study"), series_uid=_uid(seed, patient_id, "series"),
                               frame_uid=_uid(seed, patient_id, "frame"))
            patient_number += 1
            rows += _write_series(out_dir, info, rng, patient)
    atomic_write_text(out_dir / "labels.csv", csv_text(pd.DataFrame(labels)))
    return pd.DataFrame(rows, columns=list(SLICE_COLUMNS))
