"""Synthetic DICOM CT series: valid files, HU of the phantom and its lesions, determinism, layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from covid_tf.ct import series as ct_series
from covid_tf.errors import CovidTfError
from covid_tf.synthetic import ct as synthetic_ct


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("ct")
    return out, synthetic_ct.generate_ct_dataset(out, patients_per_class=2, slices=6, size=48, seed=7)


def test_layout_labels_and_valid_ct_files(dataset):
    out, slices = dataset
    assert len(slices) == 3 * 2 * 6
    labels = pd.read_csv(out / "labels.csv")
    assert labels.to_dict("list") == {
        "patient_id": ["COVID001", "COVID002", "CAP001", "CAP002", "Normal001", "Normal002"],
        "label": ["COVID", "COVID", "CAP", "CAP", "Normal", "Normal"],
    }
    for path, label, patient in slices[["path", "label", "patient_id"]].itertuples(index=False):
        assert Path(path).relative_to(out).parts[:2] == (label, patient)
    ds = pydicom.dcmread(slices["path"].iloc[0])  # no force: a proper DICOM file with preamble and meta
    assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.pixel_array.dtype == np.int16 and ds.pixel_array.shape == (48, 48)
    assert ds.Modality == "CT" and ds.PatientID == "COVID001"
    assert ds.SOPInstanceUID.is_valid and ds.SeriesInstanceUID.is_valid
    assert float(ds.SliceThickness) == 5.0 and len(ds.PixelSpacing) == 2
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    intercepts = {float(pydicom.dcmread(p, stop_before_pixels=True).RescaleIntercept) for p in slices["path"]}
    assert intercepts == {-1024.0, -1000.0, 0.0}


def test_file_names_are_shuffled_and_positions_give_the_order(dataset):
    out, slices = dataset
    shuffled = 0
    for _patient, group in slices.groupby("patient_id"):
        by_name = group.sort_values("path")["slice_index"].tolist()
        shuffled += by_name != sorted(by_name)
        assert group.sort_values("slice_index")["position"].is_monotonic_increasing
    assert shuffled >= 4
    scan = ct_series.read_series(out)
    assert len(scan.series) == 6 and scan.skipped.empty
    for series in scan.series:
        truth = slices[slices["patient_id"] == series.patient_id].sort_values("slice_index")
        assert [str(item.path.resolve()) for item in series.slices] == truth["path"].tolist()
        assert [item.instance_number for item in series.slices] == [6, 5, 4, 3, 2, 1]


def test_phantom_hounsfield_units_and_lesions(dataset):
    out, slices = dataset
    lesions = slices.groupby("label")["lesion_pixels"].sum()
    assert lesions["Normal"] == 0 and lesions["COVID"] > 0 and lesions["CAP"] > 0
    normal = ct_series.read_series(out / "Normal" / "Normal001").series[0].volume()
    assert normal[:, 0, 0].max() <= -950  # air in the corner
    assert np.isclose(np.median(normal[:, 24, 12]), -850, atol=60)  # middle of the right lung
    assert normal.max() >= 600  # bone
    lung_like = (normal > -1000) & (normal < -700)
    assert lung_like.mean() > 0.1
    # Ground glass only in COVID, dense consolidation (0-40 HU inside the lung field) in CAP.
    covid = np.concatenate(
        [ct_series.read_series(out / "COVID" / p).series[0].volume() for p in ("COVID001", "COVID002")]
    )
    normal_all = np.concatenate(
        [ct_series.read_series(out / "Normal" / p).series[0].volume() for p in ("Normal001", "Normal002")]
    )
    ground_glass = lambda v: ((v >= -560) & (v <= -240)).sum()  # noqa: E731
    assert ground_glass(covid) > 5 * max(ground_glass(normal_all), 1)


@pytest.mark.parametrize(("label", "low", "high"), [("COVID", -500, -300), ("CAP", 0, 40)])
def test_lesion_hounsfield_units_inside_the_lungs(label, low, high):
    lesion_values, lung_values = [], []
    for index in range(4):
        patient = synthetic_ct._Patient(np.random.default_rng(index), label, 64)
        for t in np.linspace(0, 1, 8):
            hu, lesion = patient.slice_hu(float(t))
            lesion_values.append(hu[lesion])
            lung_values.append(hu[(hu > -950) & (hu < -700) & ~lesion])
    values = np.concatenate(lesion_values)
    assert values.size > 50
    assert low - 30 <= np.median(values) <= high + 30
    assert np.mean((values >= low - 80) & (values <= high + 80)) > 0.95
    assert np.isclose(np.median(np.concatenate(lung_values)), -850, atol=30)
    normal = synthetic_ct._Patient(np.random.default_rng(0), "Normal", 64)
    assert not normal.slice_hu(0.5)[1].any()


def test_deterministic_for_a_seed_and_refuses_non_empty_out(tmp_path):
    first = synthetic_ct.generate_ct_dataset(
        tmp_path / "a", classes=("COVID", "Normal"), patients_per_class=1, slices=3, size=32, seed=5
    )
    second = synthetic_ct.generate_ct_dataset(
        tmp_path / "b", classes=("COVID", "Normal"), patients_per_class=1, slices=3, size=32, seed=5
    )
    other = synthetic_ct.generate_ct_dataset(
        tmp_path / "c", classes=("COVID", "Normal"), patients_per_class=1, slices=3, size=32, seed=6
    )
    for a, b in zip(first["path"], second["path"]):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert any(Path(a).read_bytes() != Path(c).read_bytes() for a, c in zip(first["path"], other["path"]))
    assert first["series_uid"].tolist() == second["series_uid"].tolist() != other["series_uid"].tolist()
    with pytest.raises(CovidTfError, match="not empty"):
        synthetic_ct.generate_ct_dataset(tmp_path / "a", slices=3, size=32)
    again = synthetic_ct.generate_ct_dataset(
        tmp_path / "a", classes=("COVID",), patients_per_class=1, slices=2, size=32, overwrite=True
    )
    assert sorted(p.name for p in (tmp_path / "a" / "COVID" / "COVID001").iterdir()) == sorted(
        Path(p).name for p in again["path"]
    )
    with pytest.raises(CovidTfError, match="slices"):
        synthetic_ct.generate_ct_dataset(tmp_path / "d", slices=0)


def test_cli_synth_ct(tmp_path, capsys):
    from covid_tf.cli import main

    code = main(
        [
            "synth-ct",
            "--out",
            str(tmp_path / "ct"),
            "--classes",
            "COVID,Normal",
            "--patients-per-class",
            "1",
            "--slices",
            "2",
            "--size",
            "32",
        ]
    )
    assert code == 0
    assert "wrote 4 DICOM slices (2 patients" in capsys.readouterr().out
    assert len(list((tmp_path / "ct").rglob("*.dcm"))) == 4
