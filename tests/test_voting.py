"""Patient-level voting on a hand-made predictions file, ties included, and the ct-vote command."""

from __future__ import annotations

import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import patients, tables

CLASSES = ["COVID", "CAP", "Normal"]
# (path, label, predicted, prob_COVID, prob_CAP, prob_Normal)
SLICES = [
    # Test1/P1: clear COVID majority.
    ("Test1/P1/s1.png", "COVID", "COVID", 0.7, 0.2, 0.1),
    ("Test1/P1/s2.png", "COVID", "COVID", 0.8, 0.1, 0.1),
    ("Test1/P1/s3.png", "COVID", "CAP", 0.3, 0.6, 0.1),
    # Test1/P2: 1 COVID vs 1 CAP vote; mean probability COVID 0.35 < CAP 0.55 -> CAP.
    ("Test1/P2/s1.png", "CAP", "COVID", 0.6, 0.3, 0.1),
    ("Test1/P2/s2.png", "CAP", "CAP", 0.1, 0.8, 0.1),
    # Test1/P3: 1 Normal vs 1 CAP vote, equal mean probabilities (0.4, 0.4) -> class order: CAP.
    ("Test1/P3/s1.png", "Normal", "Normal", 0.2, 0.2, 0.6),
    ("Test1/P3/s2.png", "Normal", "CAP", 0.2, 0.6, 0.2),
    # Test2/P1 (another patient than Test1/P1): 2 Normal votes, but COVID has the highest mean.
    ("Test2/P1/s1.png", "Normal", "Normal", 0.3, 0.2, 0.5),
    ("Test2/P1/s2.png", "Normal", "Normal", 0.3, 0.2, 0.5),
    ("Test2/P1/s3.png", "Normal", "COVID", 0.98, 0.01, 0.01),
    # Test2/P4: one slice.
    ("Test2/P4/s1.png", "CAP", "CAP", 0.1, 0.7, 0.2),
]


@pytest.fixture()
def predictions() -> pd.DataFrame:
    return pd.DataFrame(SLICES, columns=["path", "label", "predicted", "prob_COVID", "prob_CAP", "prob_Normal"])


def by_patient(result: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    return {(row.folder, row.patient_id): row for _, row in result.iterrows()}


def test_majority_with_both_tie_rules(predictions):
    result = patients.vote(predictions, CLASSES, rule="majority")
    rows = by_patient(result)
    assert list(rows) == [("Test1", "P1"), ("Test1", "P2"), ("Test1", "P3"), ("Test2", "P1"), ("Test2", "P4")]
    assert {key: row.predicted for key, row in rows.items()} == {
        ("Test1", "P1"): "COVID",
        ("Test1", "P2"): "CAP",  # vote tie, higher mean probability
        ("Test1", "P3"): "CAP",  # vote tie and mean tie: first in class order
        ("Test2", "P1"): "Normal",
        ("Test2", "P4"): "CAP",
    }
    assert [row.tie_break for row in rows.values()] == ["", "mean_probability", "class_order", "", ""]
    p1 = rows[("Test1", "P1")]
    assert (p1.num_slices, p1.votes_COVID, p1.votes_CAP, p1.votes_Normal) == (3, 2, 1, 0)
    assert p1.mean_prob_COVID == pytest.approx(0.6)
    assert rows[("Test1", "P3")].tie and not p1.tie
    assert result["label"].tolist() == ["COVID", "CAP", "Normal", "Normal", "CAP"]
    assert result["correct"].tolist() == [True, True, False, True, True]
    assert any("derived from the folder 1 level" in note for note in result.attrs["notes"])
    # Class order decides the last tie: with Normal first, Test1/P3 becomes Normal.
    reordered = patients.vote(predictions, ["Normal", "CAP", "COVID"], rule="majority")
    assert by_patient(reordered)[("Test1", "P3")].predicted == "Normal"


def test_mean_rule_and_its_tie(predictions):
    rows = by_patient(patients.vote(predictions, CLASSES, rule="mean"))
    assert {key: row.predicted for key, row in rows.items()} == {
        ("Test1", "P1"): "COVID",
        ("Test1", "P2"): "CAP",
        ("Test1", "P3"): "CAP",  # CAP 0.4 == Normal 0.4: class order
        ("Test2", "P1"): "COVID",  # mean 0.527 beats the two Normal votes
        ("Test2", "P4"): "CAP",
    }
    assert rows[("Test1", "P3")].tie_break == "class_order" and rows[("Test2", "P1")].tie_break == ""


def test_argmax_votes_given_ids_and_folders(predictions):
    table = predictions.drop(columns=["predicted"]).assign(
        patient_id=["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["d"] * 3 + ["e"], folder="all"
    )
    result = patients.vote(table)  # classes from the prob_ columns, votes from the arg-max
    assert result.attrs["class_names"] == CLASSES
    assert set(result["folder"]) == {"all"}
    assert result.set_index("patient_id")["votes_COVID"].to_dict() == {"a": 2, "b": 1, "c": 0, "d": 1, "e": 0}
    assert any("arg-max" in note for note in result.attrs["notes"])


def test_patient_and_folder_from_paths():
    assert tables.patient_from_path("/data/Test1/P7/s1.png") == "P7"
    assert tables.patient_from_path("out/P7/series/slice_0001.png", level=2) == "P7"
    with pytest.raises(CovidTfError, match="cannot derive"):
        tables.patient_from_path("s1.png")
    assert tables.derive_folders(["/d/Test1/P1/a.png", "/d/Test2/P1/b.png"]) == ["Test1", "Test2"]
    assert tables.derive_folders(["/d/Test1/P1/a.png", "/d/Test1/P2/b.png"]) == ["Test1", "Test1"]
    assert tables.derive_folders(["P1/a.png", "P2/b.png"]) == ["", ""]
    assert tables.derive_folders(["t1/P1/S/a.png", "t2/P2/S/b.png"], patient_level=2) == ["t1", "t2"]
    assert tables.derive_folders(["x\\Test1\\P1\\a.png", "x\\Test3\\P2\\b.png"]) == ["Test1", "Test3"]


def test_bad_input_names_the_reason(predictions):
    with pytest.raises(CovidTfError, match="prob_Normal"):
        patients.vote(predictions.drop(columns=["prob_Normal"]), CLASSES)
    with pytest.raises(CovidTfError, match="not classes"):
        patients.vote(predictions.assign(predicted="Flu"), CLASSES)
    with pytest.raises(CovidTfError, match="non-numeric"):
        patients.vote(predictions.astype({"prob_CAP": object}).assign(prob_CAP="high"), CLASSES)
    with pytest.raises(CovidTfError, match="patient_id"):
        patients.vote(predictions.drop(columns=["path"]), CLASSES)
    with pytest.raises(CovidTfError, match="unknown voting rule"):
        patients.vote(predictions, CLASSES, rule="max")
    with pytest.raises(CovidTfError, match="rule 'mean' needs"):
        patients.vote(predictions[["path", "predicted"]], CLASSES, rule="mean")


def test_cli_ct_vote_writes_patients_and_one_csv_per_folder(tmp_path, predictions, capsys):
    source = tmp_path / "predictions.csv"
    predictions.to_csv(source, index=False)
    out = tmp_path / "results" / "patients.csv"
    assert main(["ct-vote", str(source), "--out", str(out), "--rule", "majority"]) == 0
    output = capsys.readouterr().out
    assert "5 patients from 11 slices" in output and "note: no 'patient_id' column" in output
    patients = pd.read_csv(out, keep_default_na=False)
    assert patients["predicted"].tolist() == ["COVID", "CAP", "CAP", "Normal", "CAP"]
    test1 = pd.read_csv(tmp_path / "results" / "patients_Test1.csv")
    test2 = pd.read_csv(tmp_path / "results" / "patients_Test2.csv")
    assert test1["patient_id"].tolist() == ["P1", "P2", "P3"] and test2["patient_id"].tolist() == ["P1", "P4"]
    assert test2["predicted"].tolist() == ["Normal", "CAP"]
    # One folder only: no per-folder files.
    single = tmp_path / "single.csv"
    predictions[predictions["path"].str.startswith("Test1")].to_csv(single, index=False)
    assert main(["ct-vote", str(single), "--out", str(tmp_path / "one" / "p.csv"), "--rule", "mean"]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["p.csv"]
    # User errors: one error line naming the file.
    assert main(["ct-vote", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv: predictions file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    predictions.drop(columns=["prob_CAP"]).to_csv(broken, index=False)
    assert main(["ct-vote", str(broken), "--out", str(out), "--classes", "COVID,CAP,Normal"]) == 2
    error = capsys.readouterr().err
    assert "broken.csv" in error and "prob_CAP" in error
