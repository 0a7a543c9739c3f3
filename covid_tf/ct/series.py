"""DICOM folders as series: files grouped by patient and series, slices sorted along the slice normal.

``read_series(directory)`` scans a folder tree (every file that may be DICOM, :func:`iter_candidate_files`),
groups the images by patient (``PatientID``) and series (``SeriesInstanceUID``) and sorts the slices of each
series by position, else ``InstanceNumber``, else file name (see :mod:`covid_tf.ct.dicom`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from covid_tf.ct.dicom import SKIPPED_COLUMNS, DicomSkip, DicomSlice, header_slices, read_dataset, slice_normal
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import natural_key

# Files with these extensions are clearly not DICOM and are passed over without a report.
IGNORED_EXTENSIONS = frozenset(
    {
        ".csv", ".txt", ".json", ".md", ".xml", ".html", ".py", ".pdf", ".yaml", ".yml",
        ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
        ".zip", ".gz", ".tar", ".npy", ".npz", ".nii",
    }
)  # fmt: skip

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


def _sort_series(slices: list[DicomSlice]) -> tuple[list[DicomSlice], str]:
    """Fill in ``position`` and sort: by position, else InstanceNumber, else file name."""
    orientation = next((item.orientation for item in slices if item.orientation is not None), None)
    normal = slice_normal(orientation)
    for item in slices:
        if item.image_position is not None:
            own = slice_normal(item.orientation) if item.orientation is not None else normal
            item.position = float(np.dot(item.image_position, own))

    def name_key(item: DicomSlice) -> tuple:
        return (natural_key(item.path.name), str(item.path), item.frame)

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
        for name in sorted(names, key=natural_key):
            if name.startswith(".") or Path(name).suffix.lower() in IGNORED_EXTENSIONS:
                continue
            files.append(Path(root) / name)
    return files


def tqdm_disable(progress: bool | None, total: int) -> bool | None:
    """tqdm's ``disable``: off for fewer than 50 items unless asked, else shown on a terminal only."""
    if progress is None:
        from covid_tf.io_utils import progress_shown

        return True if total < 50 or not progress_shown() else None  # None: tqdm shows the bar on a terminal only
    return not progress


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
    for path in tqdm(files, desc="reading DICOM headers", unit="file", disable=tqdm_disable(progress, len(files))):
        try:
            slices = header_slices(path, read_dataset(path))
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
