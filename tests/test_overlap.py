"""The train/test overlap check (fingerprints, ``evaluate``, ``occlusion``, ``inspect --against``) and the
source-aware metrics (within-source ROC-AUC)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.data import film_frame, fingerprints
from covid_tf.data.discover import discover
from covid_tf.data.sources import image_sources
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.sources import confounding, source_metrics, within_source_auc
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.overlap import training_reference
from covid_tf.runs.record import RunRecord
from covid_tf.synthetic.copies import COPY_TRANSFORMS, planted_copy, write_external_set
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows.train import train_run


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Synthetic films of 24 patients (two each): paths, patient ids and their frame thumbnails (K, T, T)."""
    data = tmp_path_factory.mktemp("fingerprint_films") / "data"
    generate_dataset(data, classes=("COVID", "Normal"), per_class=24, size=128, seed=3, patients_per_class=12)
    index = discover(data, frame_readings="query")
    paths = index.frame["path"].tolist()
    return paths, index.frame["patient_id"].to_numpy(), [index.frame_thumbnails[p] for p in paths]


def _stored(thumbnails: list[np.ndarray]) -> np.ndarray:
    return fingerprints.stored_fingerprints(np.stack([thumbnail[0] for thumbnail in thumbnails]))


def _thumbnail(film: np.ndarray) -> np.ndarray:
    image = film.astype(np.float32) / 255.0
    return film_frame.frame_thumbnails(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image)


def test_a_fingerprint_is_a_few_hundred_bytes(films) -> None:
    stored = _stored(films[2])
    assert stored.dtype == np.int8 and stored.shape == (len(films[0]), fingerprints.FINGERPRINT_BYTES)
    assert fingerprints.FINGERPRINT_BYTES <= 600


@pytest.mark.parametrize("transform", sorted(COPY_TRANSFORMS))
def test_every_kind_of_copy_is_found_and_only_its_original(films, transform: str) -> None:
    paths, patients, thumbnails = films
    stored = _stored(thumbnails)
    rng = np.random.default_rng(1)
    chosen = list(range(0, len(paths), 4))
    copies = [_thumbnail(planted_copy(cv2.imread(paths[i], cv2.IMREAD_GRAYSCALE), transform, rng)) for i in chosen]
    matches = fingerprints.match_fingerprints(copies, stored)
    for k, original in enumerate(chosen):
        found = {stored_index for query, stored_index, _ in matches if query == k}
        assert original in found, f"{transform}: copy of {paths[original]} not found"
        assert {patients[i] for i in found} == {patients[original]}, f"{transform}: another patient's film matched"


def test_films_of_different_patients_do_not_match(films) -> None:
    _, patients, thumbnails = films
    matches = fingerprints.match_fingerprints(thumbnails, _stored(thumbnails))
    assert all(patients[q] == patients[s] for q, s, _ in matches)
    assert {(q, q) for q in range(len(patients))} <= {(q, s) for q, s, _ in matches}  # each film is itself


def test_fingerprints_refuse_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="stored fingerprints"):
        fingerprints.match_fingerprints(np.zeros((1, 96, 96), np.uint8), np.zeros((2, 7), np.int8))
    with pytest.raises(ValueError, match="2-D grayscale"):
        film_frame.frame_thumbnails(np.zeros((4, 4, 4, 4)))


def _brute_force(positive: np.ndarray, scores: np.ndarray, sources: np.ndarray) -> tuple[float, int]:
    concordant, pairs = 0.0, 0
    for i in np.flatnonzero(positive):
        for j in np.flatnonzero(~positive):
            if sources[i] == sources[j]:
                pairs += 1
                concordant += 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
    return concordant / pairs, pairs


def test_within_source_auc_equals_the_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(240) < 0.4
    scores = np.round(rng.random(240) + 0.3 * positive, 1)  # rounded: ties count one half
    sources = rng.choice(["a", "b", "c"], 240)
    sources[:12], positive[:12] = "one-class", True  # a source with positives only enters no pair
    expected, pairs = _brute_force(positive, scores, sources)
    result = within_source_auc(positive, scores, sources, n_bootstrap=200, seed=1)
    assert result["auc"] == pytest.approx(expected, abs=1e-12)
    assert result["n_pairs"] == pairs
    low, high = result["ci95"]
    assert low < expected < high


def test_within_source_ci_resamples_whole_patients() -> None:
    rng = np.random.default_rng(2)
    patients = np.repeat(np.arange(60), 4)  # four images per patient, all of one label and one source
    positive = np.repeat(rng.random(60) < 0.5, 4)
    sources = np.repeat(rng.choice(["a", "b"], 60), 4)
    scores = np.repeat(rng.random(60), 4) + 0.2 * positive
    clustered = within_source_auc(positive, scores, sources, groups=patients, n_bootstrap=400, seed=0)
    by_image = within_source_auc(positive, scores, sources, n_bootstrap=400, seed=0)
    assert clustered["auc"] == by_image["auc"]
    width = clustered["ci95"][1] - clustered["ci95"][0]
    assert width > 1.4 * (by_image["ci95"][1] - by_image["ci95"][0])  # 4 copies of each patient are not 4 patients


def test_within_source_auc_is_undefined_without_a_mixed_source() -> None:
    result = within_source_auc([True, True, False, False], [0.9, 0.8, 0.1, 0.2], ["a", "a", "b", "b"])
    assert result["auc"] is None and result["n_pairs"] == 0


def test_confounding_is_said() -> None:
    warnings = confounding(["COVID"] * 10 + ["Normal"] * 10, ["A"] * 9 + ["B"] + ["B"] * 8 + ["C"] * 2)
    assert any("hold one class only" in w and "A (COVID)" in w and "C (Normal)" in w for w in warnings)
    assert any("differ (total variation 0.90" in w for w in warnings)
    assert confounding(["COVID", "Normal"] * 5, ["A", "A", "B", "B"] * 2 + ["A", "B"]) == []


def test_source_metrics_of_a_model_that_reads_the_source() -> None:
    labels = np.array([1] * 40 + [0] * 40)
    sources = np.array(["A"] * 32 + ["B"] * 8 + ["A"] * 8 + ["B"] * 32)
    scores = np.where(sources == "A", 0.8, 0.2) + np.random.default_rng(0).normal(0, 0.01, 80)
    metrics = source_metrics(labels, np.stack([1 - scores, scores], axis=1), ["Normal", "COVID"], sources,
                             positive_index=1, n_bootstrap=100)
    assert metrics["within_source_roc_auc"] == pytest.approx(0.5, abs=0.15)  # no better than chance within a source
    assert metrics["per_source"]["A"] == {"n": 40, "n_positive": 32, "n_negative": 8,
                                          "roc_auc": metrics["per_source"]["A"]["roc_auc"]}
    assert metrics["warnings"]


def test_a_named_source_column_must_exist(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("path,label,hospital\na.png,COVID,X\n")
    with pytest.raises(CovidTfError, match=r"metadata.csv: lacks the source column 'site'"):
        image_sources(tmp_path, [str(tmp_path / "a.png")], "site")
    assert image_sources(tmp_path, [str(tmp_path / "a.png")]) is None  # no 'source' column: nothing to report
    assert image_sources(tmp_path, [str(tmp_path / "a.png"), "other.png"], "hospital").tolist() == ["X", ""]


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1-epoch run on synthetic data, and an "external" set: copies of 6 of its training films beside its 6 test
    films, with a source per film."""
    root = tmp_path_factory.mktemp("overlap_run")
    data = root / "data"
    generate_dataset(data, classes=("COVID", "Normal"), per_class=16, size=96, seed=0, patients_per_class=8)
    train_run(TrainConfig(data=str(data), model="baseline", image_size=32, epochs=1, batch_size=8, n_bootstrap=20),
              root / "run", verbose=0)
    split = pd.read_csv(root / "run" / "split.csv")
    training = split[split["split"] == "train"].groupby("label").head(3)
    test = split[split["split"] == "test"].groupby("label").head(3)
    table = write_external_set(root / "external", list(zip(training["path"], training["label"])),
                               list(zip(test["path"], test["label"])), transforms=("crop", "jpeg", "mirror"))
    return {"root": root, "run": root / "run", "external": root / "external", "table": table}


def _evaluate(model: Path, data: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", str(model), str(data), "--out", str(out), "--n-bootstrap", "20", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_evaluate_lists_the_copies_and_leaves_them_out(external, capsys) -> None:
    out = external["root"] / "evaluation"
    metrics = _evaluate(external["run"] / "model.keras", external["external"], out)
    printed = capsys.readouterr().out
    copies = pd.read_csv(out / "overlap.csv")
    expected = {str((external["external"] / p).resolve()) for p in external["table"].query("copy_of != ''")["path"]}
    assert set(copies["test_image"]) == expected
    truth = dict(zip(external["table"]["path"], external["table"]["copy_of"]))
    for test_image, matched in copies.groupby("test_image"):
        relative = str(Path(test_image).relative_to(external["external"].resolve()))
        assert Path(truth[relative]).name in set(matched["matched_image"].map(lambda p: Path(p).name))
        assert set(matched["split"]) == {"train"}  # (another film of the same patient may match too)
    n_all, n_copies = len(external["table"]), len(expected)
    assert metrics["n"] == n_all - n_copies and metrics["all_images"]["n"] == n_all
    assert metrics["overlap"] == {**metrics["overlap"], "checked": True, "n_copies": n_copies,
                                  "excluded_from_headline": True}
    assert f"{n_copies} of {n_all} test images are copies" in printed and "within-source ROC-AUC" in printed
    assert metrics["sources"]["n_sources"] == 2
    kept = _evaluate(external["run"] / "model.keras", external["external"], external["root"] / "kept",
                     "--keep-overlap")
    assert kept["n"] == n_all and "all_images" not in kept and not kept["overlap"]["excluded_from_headline"]


def test_an_older_run_is_checked_from_its_split_else_it_says_why_not(external, tmp_path: Path) -> None:
    older = tmp_path / "older_run"
    shutil.copytree(external["run"], older)
    (older / "fingerprints.npz").unlink()
    n_copies = int((external["table"]["copy_of"] != "").sum())
    metrics = _evaluate(older / "model.keras", external["external"], tmp_path / "older_evaluation")
    assert metrics["overlap"]["n_copies"] == n_copies and "split.csv" in metrics["overlap"]["reference"]
    # The training images are gone: one line says the overlap could not be checked; nothing is left out.
    split = pd.read_csv(older / "split.csv")
    split["path"] = [str(tmp_path / "gone" / Path(p).name) for p in split["path"]]
    split.to_csv(older / "split.csv", index=False)
    metrics = _evaluate(older / "model.keras", external["external"], tmp_path / "gone_evaluation")
    assert not metrics["overlap"]["checked"] and metrics["n"] == len(external["table"])
    assert any("not checked" in note and "can be read" in note for note in metrics["overlap"]["notes"])
    reference, notes = training_reference(RunRecord.read(tmp_path, required=False))
    assert reference is None and "no run folder" in notes[0]


def test_no_frame_thumbnails_are_made_when_nothing_can_be_compared(external, tmp_path: Path, monkeypatch) -> None:
    from covid_tf.data import images

    made: list[str] = []
    real = images.frame_readings
    monkeypatch.setattr(images, "frame_readings", lambda gray, readings: made.append(readings) or real(gray, readings))
    bare = tmp_path / "bare"  # a model and its config, without fingerprints.npz or split.csv
    bare.mkdir()
    for name in ("model.keras", "config.json"):
        shutil.copy(external["run"] / name, bare / name)
    metrics = _evaluate(bare / "model.keras", external["external"], tmp_path / "bare_evaluation")
    assert not metrics["overlap"]["checked"] and made == []
    _evaluate(external["run"] / "model.keras", external["external"], tmp_path / "checked_evaluation")
    assert made == ["query"] * len(external["table"])


def test_inspect_against_writes_the_pairs_and_their_sheet(external, capsys) -> None:
    out = external["root"] / "inspect"
    code = main(["inspect", str(external["external"]), "--against", str(external["root"] / "data"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    # Against the whole dataset every film is a copy: the planted ones and the test films (darkened for a source).
    n_films = len(external["table"])
    assert f"{n_films} of {n_films} images" in printed
    table = pd.read_csv(out / "copies.csv")
    assert table["test_image"].nunique() == n_films
    assert (out / "copies.png").stat().st_size > 5000
    assert main(["inspect", str(external["external"]), "--out", str(out)]) == 2  # --out needs --against


def test_explain_leaves_copies_out_of_its_summary(external, capsys) -> None:
    out = external["root"] / "explained"
    assert main(["explain", str(external["run"] / "model.keras"), str(external["external"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    n_copies = int((external["table"]["copy_of"] != "").sum())
    assert pd.read_csv(out / "overlap.csv")["test_image"].nunique() == n_copies
    assert f"{n_copies} of {len(external['table'])} images copy the model's training" in printed


def test_report_says_whether_the_test_is_external(external, tmp_path: Path) -> None:
    evaluation = tmp_path / "evaluation"
    _evaluate(external["run"] / "model.keras", external["external"], evaluation)
    assert main(["report", str(evaluation), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Is the test really external?" in page and "within-source ROC-AUC" in page
    n_copies = int((external["table"]["copy_of"] != "").sum())
    assert f"{n_copies} of {len(external['table'])} (left out)" in page


def test_occlusion_checks_unseen_films_only_and_reports_within_source_aucs(external, tmp_path: Path, capsys) -> None:
    out = tmp_path / "occlusion"
    assert main(["occlusion", str(external["run"] / "model.keras"), str(external["external"]), "--out", str(out),
                 "--n-bootstrap", "20", "-q"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "occlusion.json").read_text())
    n_copies = int((external["table"]["copy_of"] != "").sum())
    assert summary["overlap"]["n_copies"] == n_copies and summary["overlap"]["excluded_from_headline"]
    assert summary["n_images"] == len(external["table"]) - n_copies
    assert pd.read_csv(out / "overlap.csv")["test_image"].nunique() == n_copies
    assert set(summary["sources"]["within_source"]) == {"original", "lungs_filled/mean", "lungs_filled/blur",
                                                        "outside_filled/mean", "outside_filled/blur"}
    assert "within-source (original)" in printed


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 300)])
def test_tiny_and_flat_images_get_a_fingerprint(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for image in (rng.random(shape, dtype=np.float32), np.full(shape, 0.5, np.float32)):
        thumbnails = film_frame.frame_thumbnails(image)
        assert thumbnails.shape[1:] == (film_frame.THUMBNAIL, film_frame.THUMBNAIL)
        fingerprints.match_fingerprints([thumbnails], fingerprints.stored_fingerprints(thumbnails[:1]))


def test_one_rule_decides_the_headline_when_every_image_is_a_copy() -> None:
    from covid_tf.runs.overlap import OverlapCheck

    copies = pd.DataFrame({"test_image": ["a.png", "b.png"], "matched_image": ["x.png", "y.png"],
                           "split": ["train", "val"], "similarity": [1.0, 0.99], "distance": [0.0, 0.01]})
    every = OverlapCheck(True, copies, np.zeros(2, dtype=bool))
    assert every.headline(keep_overlap=False).all() and every.headline(keep_overlap=True).all()
    assert not every.summary(excluded=True)["excluded_from_headline"]
    assert "kept in the headline metrics, as every test image is one" in every.warning(excluded=True)
    some = OverlapCheck(True, copies.iloc[:1], np.array([False, True]))
    assert some.headline(keep_overlap=False).tolist() == [False, True]
    assert some.headline(keep_overlap=True).all()
    assert some.summary(excluded=True)["excluded_from_headline"] and "left out" in some.warning(excluded=True)
    assert not some.summary(excluded=False)["excluded_from_headline"]


def test_fingerprints_of_another_version_are_not_used(external, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(external["run"], run)
    assert RunRecord.read(run).fingerprints() is not None
    with np.load(run / "fingerprints.npz") as stored:
        older = {key: stored[key] for key in stored.files if key != "version"}  # as the first version wrote them
    np.savez_compressed(run / "fingerprints.npz", **older)
    assert RunRecord.read(run).fingerprints() is None
    reference, notes = training_reference(RunRecord.read(run))
    assert reference is not None and "split.csv" in reference.origin and "of this covid_tf's kind" in notes[0]


def test_an_external_set_replaces_its_own_films_and_refuses_a_foreign_folder(tmp_path: Path) -> None:
    films = []
    for number in range(3):
        path = tmp_path / "films" / f"film{number}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), np.random.default_rng(number).integers(0, 256, (40, 40), dtype=np.uint8))
        films.append((str(path), "COVID" if number else "Normal"))
    out = tmp_path / "external"
    first = write_external_set(out, films[:1], films[1:], transforms=("jpeg",))
    assert len(list(out.glob("*/images/*.png"))) == 3
    second = write_external_set(out, films[:1], films[1:2], transforms=("jpeg",))  # fewer films: one is stale
    written = {str(path.relative_to(out)) for path in out.glob("*/images/*.png")}
    assert written == set(second["path"]) and set(first["path"]) - written
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CovidTfError, match="not made by"):
        write_external_set(foreign, films[:1], films[1:])
    write_external_set(foreign, films[:1], films[1:], overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"
