"""DICOM reading, HU, windowing and PNG conversion on DICOM files written by pydicom in the test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from covid_tf.cli import main
from covid_tf.ct import convert, dicom
from covid_tf.ct import series as ct_series
from covid_tf.errors import CovidTfError


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    slope: float | None = None,
    intercept: float | None = None,
    position: tuple[float, float, float] | None = None,
    orientation: tuple[float, ...] | None = (1, 0, 0, 0, 1, 0),
    instance: int | None = None,
    patient: str = "P1",
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    photometric: str = "MONOCHROME2",
    frame_positions: list[tuple[float, float, float]] | None = None,
) -> Path:
    """Write a minimal valid CT file; ``stored`` is (rows, cols) or (frames, rows, cols), int16 or uint16."""
    stored = np.asarray(stored)
    multi = stored.ndim == 3
    sop_class = EnhancedCTImageStorage if multi else CTImageStorage
    sop_uid = generate_uid(entropy_srcs=[str(path)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = patient
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = series_uid + ".9"
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if orientation is not None:
        ds.ImageOrientationPatient = list(orientation)
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if multi:
        ds.NumberOfFrames = stored.shape[0]
        if frame_positions is not None:
            groups = []
            for frame_position in frame_positions:
                plane = Dataset()
                plane.ImagePositionPatient = list(frame_position)
                group = Dataset()
                group.PlanePositionSequence = [plane]
                groups.append(group)
            ds.PerFrameFunctionalGroupsSequence = groups
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- window


@pytest.mark.parametrize(
    ("center", "width", "hu", "expected"),
    [
        # lung window -600/1500: lower edge -1350 -> 0, upper edge 150 -> 255, center -> 127.5 -> 128
        (-600, 1500, [-2000, -1350, 150, 3000, -600, -850, -849], [0, 0, 255, 255, 128, 85, 85]),
        # mediastinal 40/400: 0 HU -> 160/400*255 = 102; 100 HU -> 165.75 -> 166
        (40, 400, [-160, 240, 40, 0, 100], [0, 255, 128, 102, 166]),
        # custom 0/100: 10 HU -> 60/100*255 = 153
        (0, 100, [10, -50, 50], [153, 0, 255]),
    ],
)
def test_apply_window_matches_the_documented_formula(center, width, hu, expected):
    result = dicom.apply_window(np.array(hu, dtype=np.float32), center, width)
    assert result.dtype == np.uint8
    assert result.tolist() == expected
    by_hand = [int(np.floor(min(max((v - (center - width / 2)) / width, 0), 1) * 255 + 0.5)) for v in hu]
    assert by_hand == expected


def test_parse_window_presets_custom_and_errors():
    assert dicom.parse_window("lung") == (-600.0, 1500.0)
    assert dicom.parse_window("Mediastinal") == (40.0, 400.0)
    assert dicom.parse_window("-500,1200") == (-500.0, 1200.0)
    assert dicom.parse_window((50, 350)) == (50.0, 350.0)
    for bad in ("bone", "1,2,3", "a,b", "40,0", "40,-5"):
        with pytest.raises(CovidTfError, match="bad window"):
            dicom.parse_window(bad)


# ---------------------------------------------------------------------------------------------- reading


def test_rescale_slope_intercept_signed_and_unsigned(tmp_path):
    stored = np.array([[0, 100], [-200, 1500]], dtype=np.int16)
    item = dicom.read_slice(write_dicom(tmp_path / "a.dcm", stored, slope=2, intercept=-1024))
    assert item.hu.dtype == np.float32
    np.testing.assert_array_equal(item.hu, [[-1024, -824], [-1424, 1976]])
    unsigned = np.array([[0, 40000], [1024, 65535]], dtype=np.uint16)
    item = dicom.read_slice(write_dicom(tmp_path / "u.dcm", unsigned, slope=1, intercept=-1024))
    np.testing.assert_array_equal(item.hu, [[-1024, 38976], [0, 64511]])
    # No RescaleSlope -> 1, no RescaleIntercept -> 0: HU are the stored values.
    item = dicom.read_slice(write_dicom(tmp_path / "bare.dcm", stored))
    assert (item.slope, item.intercept) == (1.0, 0.0)
    np.testing.assert_array_equal(item.hu, stored.astype(np.float32))


def test_pydicom_ct_small_hu_range_and_window_value():
    item = dicom.read_slice(get_testdata_file("CT_small.dcm"))
    assert (item.slope, item.intercept) == (1.0, -1024.0)
    assert item.hu.shape == (128, 128)
    assert float(item.hu.min()) == -896.0 and float(item.hu.max()) == 1167.0
    assert float(item.hu[0, 0]) == -849.0  # stored 175
    lung = item.to_uint8("lung")
    assert lung[0, 0] == 85  # floor((-849 + 1350) / 1500 * 255 + 0.5) = floor(85.67)
    assert item.to_uint8("mediastinal")[0, 0] == 0


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    stored = np.array([[40, -160], [240, 0]], dtype=np.int16)
    path = write_dicom(tmp_path / "in" / "m1.dcm", stored, photometric="MONOCHROME1", position=(0, 0, 0))
    item = dicom.read_slice(path)
    assert item.inverted
    np.testing.assert_array_equal(item.hu, stored)  # HU themselves are not inverted
    np.testing.assert_array_equal(item.to_uint8("mediastinal"), [[127, 255], [0, 153]])
    result = convert.convert_to_png(tmp_path / "in", tmp_path / "out", window="mediastinal", progress=False)
    png = cv2.imread(str(tmp_path / "out" / result.index["png_path"][0]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png, [[127, 255], [0, 153]])


def test_multi_frame_one_slice_per_frame_sorted_by_per_frame_position(tmp_path):
    frames = np.stack([np.full((4, 4), value, dtype=np.int16) for value in (30, 10, 20)])
    path = write_dicom(
        tmp_path / "in" / "multi.dcm",
        frames,
        intercept=-1000,
        frame_positions=[(0, 0, 30.0), (0, 0, 10.0), (0, 0, 20.0)],
    )
    slices = dicom.read_frames(path)
    assert [item.frame for item in slices] == [0, 1, 2]
    assert [float(item.hu[0, 0]) for item in slices] == [-970.0, -990.0, -980.0]
    assert dicom.read_slice(path, frame=2).position == 20.0
    scan = ct_series.read_series(tmp_path / "in")
    (series,) = scan.series
    assert series.sort_key == "position"
    assert [item.position for item in series.slices] == [10.0, 20.0, 30.0]
    np.testing.assert_array_equal(series.volume()[:, 0, 0], [-990, -980, -970])
    # Without per-frame positions the frames keep their order in the file.
    write_dicom(tmp_path / "classic" / "m.dcm", frames, position=(0, 0, 5.0), patient="Q")
    (series,) = ct_series.read_series(tmp_path / "classic").series
    assert [item.frame for item in series.slices] == [0, 1, 2]
    assert series.volume()[:, 0, 0].tolist() == [30.0, 10.0, 20.0]


def test_series_sorted_along_the_slice_normal_not_by_name_or_instance(tmp_path):
    # Sagittal: row (0,1,0) x column (0,0,-1) -> normal (-1,0,0): position = -x.
    sagittal = (0, 1, 0, 0, 0, -1)
    xs = [10.0, 30.0, 20.0]
    for name, x, instance in zip(["a.dcm", "b.dcm", "c.dcm"], xs, [1, 2, 3]):
        write_dicom(
            tmp_path / name, np.full((2, 2), int(x), dtype=np.int16), position=(x, 0, 0),
            orientation=sagittal, instance=instance,
        )  # fmt: skip
    (series,) = ct_series.read_series(tmp_path).series
    assert series.sort_key == "position"
    assert [item.position for item in series.slices] == [-30.0, -20.0, -10.0]
    assert [item.path.name for item in series.slices] == ["b.dcm", "c.dcm", "a.dcm"]
    np.testing.assert_allclose(dicom.slice_normal(sagittal), [-1, 0, 0])


def test_missing_position_falls_back_to_instance_number_then_file_name(tmp_path):
    by_instance = tmp_path / "instance"
    for name, instance in (("x1.dcm", 3), ("x2.dcm", 1), ("x3.dcm", 2)):
        write_dicom(by_instance / name, np.zeros((2, 2), np.int16), orientation=None, instance=instance)
    (series,) = ct_series.read_series(by_instance).series
    assert series.sort_key == "instance_number"
    assert [item.path.name for item in series.slices] == ["x2.dcm", "x3.dcm", "x1.dcm"]
    by_name = tmp_path / "name"
    for name in ("s10.dcm", "s2.dcm", "s1.dcm"):
        write_dicom(by_name / name, np.zeros((2, 2), np.int16), orientation=None)
    (series,) = ct_series.read_series(by_name).series
    assert series.sort_key == "file_name"
    assert [item.path.name for item in series.slices] == ["s1.dcm", "s2.dcm", "s10.dcm"]


def test_grouped_by_patient_and_series(tmp_path):
    for patient, uid, z in (
        ("A", "1.2.3.1", 0),
        ("A", "1.2.3.1", 5),
        ("A", "1.2.3.2", 0),
        ("B", "1.2.3.3", 0),
    ):
        write_dicom(
            tmp_path / f"{patient}_{uid}_{z}.dcm", np.zeros((2, 2), np.int16), patient=patient,
            series_uid=uid, position=(0, 0, z),
        )  # fmt: skip
    scan = ct_series.read_series(tmp_path)
    assert [(s.patient_id, s.series_uid, len(s)) for s in scan.series] == [
        ("A", "1.2.3.1", 2),
        ("A", "1.2.3.2", 1),
        ("B", "1.2.3.3", 1),
    ]


def test_non_dicom_and_no_pixel_data_are_skipped_and_reported(tmp_path):
    source = tmp_path / "in"
    write_dicom(source / "good.dcm", np.zeros((2, 2), np.int16), position=(0, 0, 0))
    (source / "notes.dcm").write_text("this is not DICOM\n")
    (source / "empty.dcm").write_bytes(b"")
    (source / "readme.txt").write_text("ignored, not reported")
    no_pixels = pydicom.dcmread(source / "good.dcm")
    del no_pixels.PixelData
    no_pixels.save_as(source / "nopixels.dcm")
    no_preamble = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    no_preamble.preamble = None  # still DICOM: read with force, converted
    (source / "sub").mkdir()
    no_preamble.save_as(source / "sub" / "IM1", enforce_file_format=False)
    result = convert.convert_to_png(source, tmp_path / "out", progress=False)
    assert result.num_converted == 2
    reasons = dict(zip(result.skipped["path"].map(lambda p: Path(p).name), result.skipped["reason"]))
    assert set(reasons) == {"notes.dcm", "empty.dcm", "nopixels.dcm"}
    assert reasons["nopixels.dcm"] == "no pixel data"
    assert reasons["notes.dcm"].startswith("not a DICOM file")
    on_disk = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert list(on_disk.columns) == ["path", "reason"] and len(on_disk) == 3
    with pytest.raises(dicom.DicomSkip, match="no pixel data"):
        dicom.read_slice(source / "nopixels.dcm")


# ---------------------------------------------------------------------------------------------- conversion


def make_series(folder: Path, patient: str, uid: str, hu_by_z: dict[float, int], names: list[str]) -> None:
    for name, (z, hu) in zip(names, hu_by_z.items()):
        write_dicom(
            folder / name, np.full((3, 3), hu + 1024, np.int16), slope=1, intercept=-1024,
            position=(0, 0, z), patient=patient, series_uid=uid,
        )  # fmt: skip


def test_convert_index_png_values_labels_and_overwrite(tmp_path):
    source = tmp_path / "in"
    # File names deliberately out of position order.
    make_series(source / "p1", "P/1", "1.2.3.100", {20.0: -850, 0.0: -600, 10.0: 40}, ["a.dcm", "b.dcm", "c.dcm"])
    make_series(source / "p2", "P2", "1.2.3.200", {5.0: 150, -5.0: -1350}, ["z.dcm", "y.dcm"])
    pd.DataFrame({"patient_id": ["P/1", "P2"], "label": ["COVID", "Normal"]}).to_csv(source / "labels.csv", index=False)
    before = file_hashes(source)
    out = tmp_path / "out"
    result = convert.convert_to_png(source, out, window="lung", progress=False)
    index = pd.read_csv(out / "index.csv", dtype={"patient_id": str})
    assert set(convert.INDEX_COLUMNS) <= set(index.columns)
    assert len(index) == 5 and result.num_converted == 5 and result.num_skipped == 0
    p1 = index[index["patient_id"] == "P/1"]
    assert p1["position"].tolist() == [0.0, 10.0, 20.0]
    assert p1["slice_index"].tolist() == [1, 2, 3]
    assert [Path(p).name for p in p1["source_path"]] == ["b.dcm", "c.dcm", "a.dcm"]
    assert set(p1["label"]) == {"COVID"}
    folder = Path(p1["png_path"].iloc[0]).parts[0]
    assert "/" not in folder and folder.startswith("P_1")  # safe name
    # Each PNG is the lung window of its slice: -600 -> 128, 40 -> 236 (1390/1500*255 = 236.3), -850 -> 85.
    values = [int(cv2.imread(str(out / p), cv2.IMREAD_UNCHANGED)[1, 1]) for p in p1["png_path"]]
    assert values == dicom.apply_window(np.array([-600.0, 40.0, -850.0])).tolist() == [128, 236, 85]
    p2 = index[index["patient_id"] == "P2"]
    assert [int(cv2.imread(str(out / p), cv2.IMREAD_UNCHANGED)[0, 0]) for p in p2["png_path"]] == [0, 255]
    assert (index["window_center"] == -600).all() and (index["window_width"] == 1500).all()
    with pytest.raises(CovidTfError, match="not empty"):
        convert.convert_to_png(source, out, progress=False)
    # A PNG listed in the previous index but not written again is removed; others are replaced.
    stale = out / "P2" / "old" / "slice_0009.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    old_index = pd.read_csv(out / "index.csv")
    pd.concat([old_index, old_index.tail(1).assign(png_path="P2/old/slice_0009.png")]).to_csv(
        out / "index.csv", index=False
    )
    result = convert.convert_to_png(source, out, window=(40, 400), overwrite=True, progress=False)
    assert (result.index["window_center"] == 40).all() and result.num_converted == 5
    assert not stale.exists()
    assert file_hashes(source) == before  # inputs untouched
    with pytest.raises(CovidTfError, match="outside the DICOM folder"):
        convert.convert_to_png(source, source / "png", progress=False)


def test_cli_dicom2png_on_generated_three_patient_series(tmp_path, capsys):
    from covid_tf.synthetic.ct import generate_ct_dataset

    slices = generate_ct_dataset(tmp_path / "ct", patients_per_class=1, slices=5, size=32, seed=3)
    assert main(["dicom2png", str(tmp_path / "ct"), "--out", str(tmp_path / "png"), "--window=-600,1500"]) == 0
    output = capsys.readouterr().out
    assert "converted 15 slices (3 patients, 3 series" in output and "skipped 0 files" in output
    index = pd.read_csv(tmp_path / "png" / "index.csv")
    assert len(index) == 15 and index["patient_id"].nunique() == 3
    for patient, group in index.groupby("patient_id"):
        assert group["position"].is_monotonic_increasing
        assert group["slice_index"].tolist() == [1, 2, 3, 4, 5]
        assert group["png_path"].tolist() == sorted(group["png_path"])
        assert all((tmp_path / "png" / p).is_file() for p in group["png_path"])
        truth = slices[slices["patient_id"] == patient].sort_values("slice_index")
        assert [Path(p).resolve() for p in group["source_path"]] == [Path(p) for p in truth["path"]]
        assert set(group["label"]) == set(truth["label"])
    assert main(["dicom2png", str(tmp_path / "ct"), "--out", str(tmp_path / "png2"), "--window", "wide"]) == 2
    assert "bad window" in capsys.readouterr().err


def test_dicom2png_writes_seed_002s_512_px_jpegs(tmp_path, capsys):
    make_series(tmp_path / "in" / "p1", "P1", "1.2.3.100", {0.0: -600, 10.0: 40}, ["a.dcm", "b.dcm"])
    out = tmp_path / "jpg"
    assert main(["dicom2png", str(tmp_path / "in"), "--out", str(out), "--format", "jpg", "--size", "16",
                 "--no-progress"]) == 0
    index = pd.read_csv(out / "index.csv")
    assert [Path(p).suffix for p in index["png_path"]] == [".jpg", ".jpg"]
    first = out / index["png_path"].iloc[0]
    assert first.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, not a PNG named .jpg
    image = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    assert image.shape == (16, 16) and abs(int(image.mean()) - 128) <= 2  # -600 HU in the lung window, 3 -> 16 px
    assert not list(out.rglob("*.png"))
    again = convert.convert_to_png(tmp_path / "in", out, overwrite=True, progress=False)  # PNG replaces the JPEGs
    assert not list(out.rglob("*.jpg")) and len(again.index) == 2
    assert main(["dicom2png", str(tmp_path / "in"), "--out", str(tmp_path / "bmp"), "--format", "bmp"]) == 2
    assert "image format must be one of png, jpg, got 'bmp'" in capsys.readouterr().err
    with pytest.raises(CovidTfError, match="size"):
        convert.convert_to_png(tmp_path / "in", tmp_path / "zero", size=0, progress=False)
