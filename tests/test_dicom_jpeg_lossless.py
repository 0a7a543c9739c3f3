"""JPEG Lossless CT (the ``dicom`` extra: pylibjpeg + pylibjpeg-libjpeg) decodes instead of being skipped.

pydicom has no JPEG Lossless encoder, so the test writes the bitstream itself: process 14, first-order
prediction (selection value 1), one 16-bit component, every difference category coded in 5 bits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, JPEGLosslessSV1, generate_uid

from covid_tf.ct.dicom import decode_pixels

PRECISION = 16


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _differences(image: np.ndarray) -> np.ndarray:
    values = image.astype(np.int64)
    prediction = np.empty_like(values)
    prediction[0, 0] = 1 << (PRECISION - 1)
    prediction[0, 1:] = values[0, :-1]  # first row: the sample to the left
    prediction[1:, 0] = values[:-1, 0]  # first column: the sample above
    prediction[1:, 1:] = values[1:, :-1]  # selection value 1: the sample to the left
    difference = (values - prediction) % (1 << 16)
    return np.where(difference > 32768, difference - (1 << 16), difference).ravel()


def _entropy_coded(image: np.ndarray) -> bytes:
    bits = []
    for difference in _differences(image):
        category = int(abs(difference)).bit_length()
        bits.append(format(category, "05b"))  # canonical code of length 5 for categories 0..16
        if 0 < category < 16:
            extra = difference if difference > 0 else difference - 1
            bits.append(format(extra & ((1 << category) - 1), f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    out = bytearray()
    for start in range(0, len(stream), 8):
        byte = int(stream[start:start + 8], 2)
        out.append(byte)
        if byte == 0xFF:
            out.append(0x00)  # byte stuffing
    return bytes(out)


def jpeg_lossless(image: np.ndarray) -> bytes:
    """A JPEG Lossless (process 14, SV1) bitstream of a 2-D uint16 image."""
    rows, columns = image.shape
    huffman = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    frame = bytes([PRECISION]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    scan = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, predictor 1, Se 0, point transform 0
    return (b"\xff\xd8" + _segment(0xC4, huffman) + _segment(0xC3, frame) + _segment(0xDA, scan)
            + _entropy_coded(image) + b"\xff\xd9")


def _write_ct(path: Path, stored: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGLosslessSV1
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "lossless-1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = encapsulate([jpeg_lossless(stored)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def test_jpeg_lossless_ct_decodes_exactly(tmp_path: Path) -> None:
    pytest.importorskip("pylibjpeg", reason="the dicom extra (pylibjpeg) is not installed")
    pytest.importorskip("libjpeg", reason="the dicom extra (pylibjpeg-libjpeg) is not installed")
    rng = np.random.default_rng(0)
    stored = (rng.integers(0, 2400, (24, 20)) + np.arange(20) * 40).astype(np.uint16)
    stored[3, 4], stored[5, 6] = 0, 65535  # the extreme differences (category 16) too
    path = tmp_path / "lossless.dcm"
    _write_ct(path, stored)
    np.testing.assert_array_equal(decode_pixels(path)[0], stored)
