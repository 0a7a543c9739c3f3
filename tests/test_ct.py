"""The CT slice workflow: synthetic DICOM -> PNG slices + label CSV -> 1-epoch slice model -> patient votes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covid_tf.data import discover as data
from covid_tf.errors import CovidTfError
from covid_tf.synthetic import ct as synthetic_ct
from covid_tf.workflows import ct
from tests.helpers import make_class_folders

CLASSES = ["CAP", "COVID", "Normal"]  # discover sorts the class names
PATIENTS_PER_CLASS = 3
SLICES = 4


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ct_dicom")
    synthetic_ct.generate_ct_dataset(out, patients_per_class=PATIENTS_PER_CLASS, slices=SLICES, size=48, seed=3)
    return out


@pytest.fixture(scope="module")
def converted(dicom_dir, tmp_path_factory) -> ct.CtSlices:
    return ct.convert_ct(dicom_dir, tmp_path_factory.mktemp("ct_png") / "png")


@pytest.fixture(scope="module")
def trained(converted, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ct_run") / "run"
    # One patient per class in each split, so the test split has every class (with seed 3 no slices of two
    # patients are near-duplicates, which would join them in one split group).
    result = ct.train_slices(converted.csv_path, run_dir, model="small", loss="focal", image_size=32, epochs=1,
                             batch_size=8, split_fractions=(1.0, 1.0, 1.0), n_bootstrap=20, augmentation="none",
                             verbose=0)
    return result, run_dir


@pytest.fixture(scope="module")
def evaluation(trained) -> ct.CtEvaluation:
    _, run_dir = trained
    return ct.evaluate_ct(run_dir, n_bootstrap=20)


def test_conversion_writes_a_label_csv_that_discover_reads_with_patient_ids(dicom_dir, converted):
    before = sorted(p.relative_to(dicom_dir) for p in dicom_dir.rglob("*"))
    labels = pd.read_csv(dicom_dir / "labels.csv", dtype=str)
    table = pd.read_csv(converted.csv_path, dtype=str)
    assert list(table.columns) == list(ct.METADATA_COLUMNS)
    assert len(table) == len(CLASSES) * PATIENTS_PER_CLASS * SLICES and converted.num_unlabelled == 0
    # Each slice carries its patient's label; the test folder is the class folder of the synthetic layout.
    assert dict(zip(table["patient_id"], table["label"])) == dict(zip(labels["patient_id"], labels["label"]))
    assert (table["folder"] == table["label"]).all()
    assert sorted(table.groupby("patient_id")["slice_index"].apply(list).iloc[0]) == ["1", "2", "3", "4"]

    index = data.discover(converted.csv_path)
    assert index.layout == "csv" and index.class_names == CLASSES and not index.skipped
    assert index.frame["patient_id"].nunique() == len(CLASSES) * PATIENTS_PER_CLASS
    assert all(Path(path).is_file() and Path(path).suffix == ".png" for path in index.frame["path"])
    # The DICOM folder is left as it was.
    assert sorted(p.relative_to(dicom_dir) for p in dicom_dir.rglob("*")) == before


def test_unlabelled_patients_are_left_out_and_no_labels_is_an_error(dicom_dir, tmp_path):
    partial = ct.convert_ct(dicom_dir, tmp_path / "partial", labels={"COVID001": "COVID", "CAP002": "CAP"})
    assert sorted(partial.table["patient_id"].unique()) == ["CAP002", "COVID001"]
    assert len(partial.table) == 2 * SLICES
    assert partial.num_unlabelled == (len(CLASSES) * PATIENTS_PER_CLASS - 2) * SLICES
    with pytest.raises(CovidTfError, match="has a label"):
        ct.convert_ct(dicom_dir, tmp_path / "none", labels={})


def test_test_folder_is_the_first_folder_two_levels_up(tmp_path):
    assert ct.dicom_test_folder(tmp_path / "Test1" / "P001" / "IM1.dcm", tmp_path) == "Test1"
    assert ct.dicom_test_folder(tmp_path / "Test2" / "P001" / "series" / "IM1.dcm", tmp_path) == "Test2"
    assert ct.dicom_test_folder(tmp_path / "P001" / "IM1.dcm", tmp_path) == ""
    assert ct.dicom_test_folder("/elsewhere/P001/a/IM1.dcm", tmp_path) == ""


def test_prepare_ct_data_converts_dicom_and_passes_png_folders_through(dicom_dir, tmp_path):
    png_folders = make_class_folders(tmp_path / "slices", {"CT_COVID": 2, "CT_NonCOVID": 2})
    assert not ct.is_dicom_dataset(png_folders) and ct.is_dicom_dataset(dicom_dir)
    assert ct.prepare_ct_data(png_folders) == (str(png_folders.resolve()), None)
    path, slices = ct.prepare_ct_data(dicom_dir, tmp_path / "converted")
    assert Path(path) == tmp_path.resolve() / "converted" / ct.METADATA_NAME and slices.num_patients == 9
    again, _ = ct.prepare_ct_data(dicom_dir, tmp_path / "converted")  # replaces the earlier conversion
    assert again == path
    with pytest.raises(CovidTfError, match="not found"):
        ct.prepare_ct_data(tmp_path / "missing")


def test_training_keeps_each_patient_in_one_split(trained):
    result, run_dir = trained
    split = result.split
    assert split.groupby("patient_id")["split"].nunique().max() == 1
    assert (split.groupby("split")["patient_id"].nunique() == PATIENTS_PER_CLASS).all()
    assert result.class_names == CLASSES and result.model.outputs[0].shape[-1] == len(CLASSES)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["model"], config["loss"], config["image_size"]) == ("small", "focal", 32)
    # Patients repeat in the test split, so the run's metrics include the patient level.
    assert set(result.metrics["test"]["patients"]) == {"majority", "mean"}


def test_patient_level_results_one_row_per_patient_and_csv_per_folder(trained, evaluation):
    result, run_dir = trained
    test_patients = sorted(result.split.loc[result.split["split"] == "test", "patient_id"].unique())
    predictions = evaluation.predictions
    assert len(predictions) == len(test_patients) * SLICES
    assert evaluation.slice_metrics["n"] == len(predictions)
    for rule in ("majority", "mean"):
        patients = evaluation.patients[rule]
        assert sorted(patients["patient_id"]) == test_patients
        assert (patients["num_slices"] == SLICES).all()
        assert (patients["folder"] == patients["label"]).all()
        assert evaluation.patient_metrics[rule]["n_patients"] == len(test_patients)
    # Majority: each patient's decision is the class most of its slices voted for (unless tied).
    majority = evaluation.patients["majority"].set_index("patient_id")
    for patient, group in predictions.groupby("patient_id"):
        counts = group["predicted"].value_counts()
        if (counts == counts.max()).sum() == 1:
            assert majority.loc[patient, "predicted"] == counts.idxmax()
    # Mean: the class with the highest mean probability.
    mean = evaluation.patients["mean"].set_index("patient_id")
    for patient, group in predictions.groupby("patient_id"):
        means = group[[f"prob_{name}" for name in CLASSES]].mean().to_numpy()
        assert mean.loc[patient, "predicted"] == CLASSES[int(np.argmax(means))]
    # One CSV with every patient per rule, plus one per test folder (the three class folders here).
    out = evaluation.out_dir
    assert out == run_dir / "ct_evaluation"
    for rule in ("majority", "mean"):
        names = sorted(path.name for path in evaluation.patient_csvs[rule])
        assert names == sorted([f"patients_{rule}.csv"] + [f"patients_{rule}_{name}.csv" for name in CLASSES])
        for name in CLASSES:
            per_folder = pd.read_csv(out / f"patients_{rule}_{name}.csv", dtype=str)
            assert len(per_folder) == 1 and (per_folder["folder"] == name).all()
    saved = json.loads((out / ct.PATIENT_METRICS_NAME).read_text())
    assert saved["majority"]["n_labelled"] == len(test_patients)
    assert np.asarray(saved["majority"]["confusion_matrix"]).sum() == len(test_patients)
    assert (out / "predictions.csv").is_file() and (out / "metrics.json").is_file()


def test_metrics_table_lists_slices_and_both_rules(evaluation):
    table = ct.metrics_table(evaluation)
    assert list(table.index) == ["slices", "patients (majority)", "patients (mean)"]
    assert table.loc["slices", "n"] == evaluation.slice_metrics["n"]
    assert table.loc["patients (mean)", "n"] == PATIENTS_PER_CLASS
    assert 0.0 <= table.loc["patients (majority)", "accuracy"] <= 1.0


def test_evaluate_ct_refuses_a_folder_without_a_run_and_unknown_rules(trained, tmp_path):
    with pytest.raises(CovidTfError, match="not a finished training run"):
        ct.evaluate_ct(tmp_path)
    with pytest.raises(CovidTfError, match="unknown voting rule"):
        ct.evaluate_ct(trained[1], tmp_path / "out", rules=("median",))


def test_figures(dicom_dir, trained, evaluation, tmp_path):
    from covid_tf import figures as plots
    from covid_tf.figures import ct as ct_figures

    first = sorted(dicom_dir.rglob("*.dcm"))[0]
    figure = ct_figures.window_figure(first)
    assert len(figure.axes) == 3
    # Lung and mediastinal windows show the same slice differently.
    lung, mediastinal = (axis.images[0].get_array() for axis in figure.axes[:2])
    assert lung.shape == (48, 48) and not np.array_equal(lung, mediastinal)
    assert plots.save_figure(figure, tmp_path / "windows.png").stat().st_size > 0

    votes = ct_figures.patient_votes_figure(evaluation.patients["majority"], CLASSES)
    assert len(votes.axes[0].patches) == len(CLASSES) * PATIENTS_PER_CLASS

    result, _ = trained
    rows = evaluation.predictions.head(2)
    cam = ct_figures.gradcam_figure(result.model, rows["path"].tolist(), CLASSES, image_size=32,
                            labels=rows["label"].tolist())
    assert len(cam.axes) == 4
    overlay = cam.axes[2].images[0].get_array()
    assert overlay.shape == (32, 32, 3) and overlay.dtype == np.uint8
    assert plots.save_figure(cam, tmp_path / "cam.png").stat().st_size > 0


@pytest.mark.realdata
def test_ucsd_png_slices_need_no_conversion(ct_dir):
    assert not ct.is_dicom_dataset(ct_dir)
    assert ct.prepare_ct_data(ct_dir) == (str(ct_dir.resolve()), None)


@pytest.mark.slow  # VGG16, one epoch at 32 px: about 25 s of CPU
def test_seed_002_end_to_end_vgg16_focal_loss_majority_vote_one_csv_per_test_folder(converted, tmp_path):
    """Seed 002 as written: three classes of DICOM series -> PNG slices -> VGG16 with focal loss (weights=None here;
    "imagenet" when online) -> majority vote per patient -> one CSV per test folder."""
    run_dir = tmp_path / "vgg16"
    result = ct.train_slices(converted.csv_path, run_dir, weights=None, image_size=32, epochs=1, batch_size=8,
                             split_fractions=(1.0, 1.0, 1.0), n_bootstrap=10, augmentation="none", verbose=0)
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["model"], saved["loss"]) == (ct.CT_SLICE_MODEL, ct.CT_SLICE_LOSS) == ("vgg16", "focal")
    assert result.class_names == CLASSES and result.model.outputs[0].shape[-1] == 3
    split = result.split
    assert split.groupby("patient_id")["split"].nunique().max() == 1  # no patient in two splits
    evaluation = ct.evaluate_ct(run_dir, tmp_path / "evaluation", rules=("majority",), n_bootstrap=10)
    test_patients = set(split.loc[split["split"] == "test", "patient_id"])
    written = evaluation.patient_csvs["majority"]
    per_folder = [path for path in written if path.name != "patients_majority.csv"]
    assert sorted(path.name for path in per_folder) == [f"patients_majority_{name}.csv" for name in CLASSES]
    seen = []
    for path in per_folder:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert table["patient_id"].is_unique and (table["predicted"].isin(CLASSES)).all()
        assert (table["folder"] == path.stem.removeprefix("patients_majority_")).all()
        seen += table["patient_id"].tolist()
    assert sorted(seen) == sorted(test_patients)  # every test patient once, with its vote
