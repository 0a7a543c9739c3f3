"""``dicom2png``: DICOM CT slices to windowed 8-bit PNGs (or JPEGs) with ``index.csv`` and ``skipped.csv``
(:func:`covid_tf.ct.convert.convert_to_png`), after the output checks every command runs first (no TensorFlow)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from covid_tf.ct import convert, dicom
from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs


@dataclass
class Conversion:
    """What a conversion wrote (``convert_to_png``'s result), with the window it used and how long it took."""

    result: convert.ConversionResult
    window: tuple[float, float]
    seconds: float


def dicom_to_png(dicom_dir: str | Path, out: str | Path, *, window: str = "lung", labels: str | Path | None = None,
                 image_format: str = "png", size: int | None = None, overwrite: bool = False,
                 progress: bool | None = None) -> Conversion:
    """Convert every DICOM slice below ``dicom_dir`` into ``out``; ``window``: ``lung``, ``mediastinal`` or
    ``CENTER,WIDTH`` in HU (a bad one fails before any work)."""
    center_width = dicom.parse_window(window)
    refuse_output_inside_inputs(out, [dicom_dir, *([labels] if labels else [])])
    check_writable_output(out, folder=True, option="the output folder")
    start = time.perf_counter()
    result = convert.convert_to_png(dicom_dir, out, window=center_width, overwrite=overwrite, labels=labels,
                                    progress=progress, image_format=image_format, size=size)
    return Conversion(result, center_width, time.perf_counter() - start)
