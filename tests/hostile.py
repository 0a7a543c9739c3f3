"""A corpus of hostile inputs, built inside a test's ``tmp_path`` (nothing is downloaded or kept).

``build_hostile_corpus(root)`` writes::

    root/xray/                      folder layout with two classes that can be trained on
        COVID/, Normal/             8 good 32 px PNGs each (some named with spaces, é, ü, 中)
        COVID/truncated.png         a PNG cut in half                      -> skipped, "truncated or corrupt"
        COVID/truncated.jpg         a JPEG cut in half                     -> skipped, "truncated or corrupt"
        COVID/zero bytes.png        0 bytes                                -> skipped, "empty file"
        Normal/not an image.png     text named .png                        -> skipped, "not an image file"
        COVID/sixteen_bit.png       16-bit grayscale                       -> read (scaled by 65535)
        Normal/palette.png          palette ("P") image                    -> read
        Normal/cmyk.jpg             CMYK JPEG                              -> read
        COVID/one_pixel.png         1x1                                    -> read (resized up)
        Normal/huge.png             10000x10000 zeros (about 100 KB)       -> read (resized down)
        COVID/exif_rotated.jpg      JPEG with EXIF orientation 6           -> read, rotated
        COVID/loop.png              a symbolic link to itself              -> skipped, "cannot stat file"
        COVID/cycle                 a link to its own parent folder        -> not followed
        Normal/unreadable.png       chmod 000 (only when not root)         -> skipped, "permission denied"
        Normal/no_pixels.dcm        DICOM without pixel data               -> skipped, "not an image file extension"
        Empty/                      an empty class folder                  -> reported: "holds no image files"
    root/single/COVID/              a single-class dataset (train must refuse it)
    root/csv/labels.csv             a label CSV naming 2 missing files (besides 8 present ones)
    root/dicom/                     one valid CT slice, one DICOM with no pixel data, one non-DICOM ``.dcm``

Running as root, ``chmod 000`` does not stop reads (root bypasses file permissions, and a folder
without the x bit too), so the unreadable item is left out there: ``Corpus.unreadable`` is None.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_PER_CLASS = 8
GOOD_SIZE = 32
ODD_NAMES = ("patient é 1.png", "patient ü 2.png", "病人 中 3.png", "with  two spaces.png")


@dataclass
class Corpus:
    """Where the hostile corpus lies and what each item is expected to become."""

    root: Path
    xray: Path
    single: Path
    csv: Path
    dicom: Path
    bad: dict[str, Path] = field(default_factory=dict)  # item -> file that must be skipped and named
    odd_but_readable: dict[str, Path] = field(default_factory=dict)  # item -> file that must be read
    good: list[Path] = field(default_factory=list)
    missing_in_csv: list[Path] = field(default_factory=list)
    dicom_no_pixels: Path | None = None
    dicom_not_dicom: Path | None = None
    unreadable: Path | None = None


def _image(seed: int, size: int = GOOD_SIZE) -> np.ndarray:
    """A distinct uint8 image (random blocks, so no two are near-duplicates)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    return np.kron(blocks, np.ones((size // 8, size // 8), dtype=np.uint8))


def _png_bytes(array: np.ndarray, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **save_args)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_zero_png(path: Path, width: int, height: int) -> Path:
    """A grayscale PNG of zeros written row by row: 10000x10000 costs ~100 KB and a fraction of a second."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0 + pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def write_dicom(path: Path, pixels: np.ndarray | None) -> Path:
    """A minimal CT DICOM file; ``pixels=None`` leaves out the pixel data (and Rows/Columns stay)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    uid = generate_uid(entropy_srcs=[path.name])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uid, "CT"
    ds.PatientID, ds.SeriesInstanceUID = "P1", "1.2.826.0.1.3680043.8.498.77"
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if pixels is not None:
        ds.PixelData = np.asarray(pixels, dtype=np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _good_images(folder: Path, count: int, seed: int, odd_names: tuple[str, ...] = ()) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        name = odd_names[index] if index < len(odd_names) else f"img_{index:02d}.png"
        path = folder / name
        path.write_bytes(_png_bytes(_image(seed + index)))
        paths.append(path)
    return paths


def build_hostile_corpus(root: Path) -> Corpus:
    """Write the hostile corpus under ``root`` (see the module docstring) and describe it."""
    root = Path(root)
    xray = root / "xray"
    corpus = Corpus(root=root, xray=xray, single=root / "single", csv=root / "csv", dicom=root / "dicom")
    covid, normal = xray / "COVID", xray / "Normal"
    corpus.good += _good_images(covid, GOOD_PER_CLASS, seed=100, odd_names=ODD_NAMES[:2])
    corpus.good += _good_images(normal, GOOD_PER_CLASS, seed=200, odd_names=ODD_NAMES[2:])

    # Broken files: each must be skipped and named with a reason.
    whole_png = _png_bytes(_image(300, 64))
    (covid / "truncated.png").write_bytes(whole_png[: len(whole_png) // 2])
    whole_jpeg = _jpeg_bytes(Image.fromarray(_image(301, 64)))
    (covid / "truncated.jpg").write_bytes(whole_jpeg[: len(whole_jpeg) // 2])
    (covid / "zero bytes.png").write_bytes(b"")
    (normal / "not an image.png").write_text("this is not a PNG, just text with the wrong name\n")
    os.symlink("loop.png", covid / "loop.png")  # a link to itself: stat fails with ELOOP
    write_dicom(normal / "no_pixels.dcm", None)
    corpus.bad = {
        "truncated_png": covid / "truncated.png",
        "truncated_jpeg": covid / "truncated.jpg",
        "zero_bytes": covid / "zero bytes.png",
        "text_as_png": normal / "not an image.png",
        "symlink_loop": covid / "loop.png",
        "dicom_in_xray_folder": normal / "no_pixels.dcm",
    }
    if os.geteuid() != 0:
        unreadable = normal / "unreadable.png"
        unreadable.write_bytes(_png_bytes(_image(302)))
        unreadable.chmod(0)
        corpus.bad["unreadable"] = corpus.unreadable = unreadable
    os.symlink("..", covid / "cycle")  # a folder link back to xray/: must not be walked into

    # Odd but valid files: each must be read.
    (covid / "sixteen_bit.png").write_bytes(_png_bytes(_image(303).astype(np.uint16) * 257))
    palette = Image.fromarray(_image(304)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(normal / "palette.png")
    cmyk = Image.fromarray(np.stack([_image(305)] * 3, axis=-1)).convert("CMYK")
    (normal / "cmyk.jpg").write_bytes(_jpeg_bytes(cmyk))
    (covid / "one_pixel.png").write_bytes(_png_bytes(np.array([[128]], dtype=np.uint8)))
    write_zero_png(normal / "huge.png", 10000, 10000)
    rotated = Image.fromarray(_image(306)[:, :16])  # 16 wide, 32 high: the EXIF tag turns it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    (covid / "exif_rotated.jpg").write_bytes(_jpeg_bytes(rotated, exif=exif.tobytes()))
    corpus.odd_but_readable = {
        "sixteen_bit": covid / "sixteen_bit.png",
        "palette": normal / "palette.png",
        "cmyk": normal / "cmyk.jpg",
        "one_pixel": covid / "one_pixel.png",
        "huge": normal / "huge.png",
        "exif_rotated": covid / "exif_rotated.jpg",
    }
    (xray / "Empty").mkdir()

    # A single-class dataset.
    _good_images(corpus.single / "COVID", 6, seed=400)

    # A label CSV naming files that are not there.
    present = _good_images(corpus.csv / "images", GOOD_PER_CLASS, seed=500)
    corpus.missing_in_csv = [corpus.csv / "images" / "gone_1.png", corpus.csv / "images" / "gone 2.png"]
    rows = [f"images/{p.name},{'COVID' if i % 2 else 'Normal'}" for i, p in enumerate(present)]
    rows += [f"images/{p.name},COVID" for p in corpus.missing_in_csv]
    (corpus.csv / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")

    # DICOM: one good slice, one without pixel data, one that is not DICOM at all.
    write_dicom(corpus.dicom / "good.dcm", np.arange(256).reshape(16, 16) * 4)
    corpus.dicom_no_pixels = write_dicom(corpus.dicom / "no_pixels.dcm", None)
    corpus.dicom_not_dicom = corpus.dicom / "garbage.dcm"
    corpus.dicom_not_dicom.write_bytes(b"\x00\x01not a DICOM file at all" * 10)
    return corpus


def tree_fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (links by target, unreadable files by mode), plus folders.

    Links are never followed, so loops are safe; the keys are the listing, the values the content.
    """
    fingerprint: dict[str, str] = {}
    for current, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(current) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                fingerprint[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                fingerprint[key] = "dir"
            else:
                stat = path.stat()
                if not os.access(path, os.R_OK):
                    fingerprint[key] = f"unreadable:{oct(stat.st_mode)}:{stat.st_size}:{stat.st_mtime_ns}"
                else:
                    fingerprint[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return fingerprint
