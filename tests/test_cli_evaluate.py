"""The ``evaluate``, ``predict`` and ``report`` commands end to end, on a tiny model of synthetic data."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.data.splits import load_split
from covid_tf.figures.run import FIGURE_NAMES, save_figures
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.record import RunRecord
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows.export_figures import training_run_figures
from covid_tf.workflows.train import train_run

METRIC_KEYS = ("n", "class_names", "accuracy", "balanced_accuracy", "roc_auc", "average_precision", "per_class",
               "ci95", "ece", "confusion_matrix", "threshold", "patients")
BROKEN_BYTES = b"\x89PNG\r\n\x1a\n this file is not really a PNG"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic data (2 images per patient), a copy with one unreadable file, and a 1-epoch baseline run."""
    root = tmp_path_factory.mktemp("cli_evaluate")
    data = root / "data"
    generate_dataset(data, classes=("COVID", "Normal"), per_class=12, size=32, seed=0, patients_per_class=6)
    run_dir = root / "run"
    train_run(TrainConfig(data=str(data), model="baseline", image_size=32, epochs=1, batch_size=8, n_bootstrap=50),
              run_dir, verbose=0)
    # A copy of the data whose label CSV lists a broken file too (the original stays as the run saw it).
    broken_data = root / "broken_data"
    shutil.copytree(data, broken_data)
    (broken_data / "COVID" / "images" / "broken.png").write_bytes(BROKEN_BYTES)
    with (broken_data / "metadata.csv").open("a") as handle:
        handle.write("COVID/images/broken.png,COVID,COVID-P9999,False\n")
    return {"root": root, "data": data, "broken_data": broken_data, "run": run_dir, "model": run_dir / "model.keras"}


@pytest.fixture(scope="module")
def evaluation(trained: dict[str, Path]) -> tuple[Path, int, str]:
    """``evaluate`` over every image of the data with a broken file, the copies of the run's own training and
    validation images kept in the headline (``--keep-overlap``): (out folder, exit code, stderr)."""
    out = trained["root"] / "evaluation"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(["evaluate", str(trained["model"]), str(trained["broken_data"]), "--out", str(out),
                     "--n-bootstrap", "50", "--keep-overlap"])
    return out, code, stderr.getvalue()


def test_evaluate_writes_every_key_and_figure(evaluation: tuple[Path, int, str]) -> None:
    out, code, stderr = evaluation
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
    assert metrics["n"] == 24
    # The run's 20 train and val images (copied into broken_data) are found, and kept in the headline as asked.
    assert metrics["overlap"]["n_copies"] == 20 and not metrics["overlap"]["excluded_from_headline"]
    assert "all_images" not in metrics
    assert metrics["class_names"] == ["COVID", "Normal"]
    assert metrics["threshold"] == 0.5
    assert sum(map(sum, metrics["confusion_matrix"])) == 24
    assert set(metrics["patients"]) == {"majority", "mean"}
    assert metrics["patients"]["mean"]["n"] == 12
    for name in FIGURE_NAMES.values():  # the run folder has history.csv, so training curves too
        assert (out / name).stat().st_size > 1000, name
    # The unreadable file is reported, not fatal.
    assert "broken.png" in stderr
    skipped = pd.read_csv(out / "skipped.csv")
    assert [Path(p).name for p in skipped["path"]] == ["broken.png"]
    assert json.loads((out / "config.json").read_text())["model"] == "baseline"


def test_evaluate_predictions_csv_one_row_per_image(evaluation: tuple[Path, int, str], trained) -> None:
    out, _, _ = evaluation
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["path", "label", "predicted", "prob_COVID", "prob_Normal", "patient_id"]
    assert len(table) == 24 and table["path"].is_unique
    assert (table[["prob_COVID", "prob_Normal"]].sum(axis=1) - 1).abs().max() < 1e-4
    assert set(table["label"]) == {"COVID", "Normal"}
    assert table["patient_id"].nunique() == 12
    # "predicted" follows the 0.5 threshold on p(COVID).
    expected = table["prob_COVID"].ge(0.5).map({True: "COVID", False: "Normal"})
    assert (table["predicted"] == expected).all()


def test_evaluate_split_file_threshold_from_val(trained, tmp_path: Path, capsys) -> None:
    split = load_split(trained["run"] / "split.csv")
    out = tmp_path / "eval_test"
    code = main(["evaluate", str(trained["model"]), str(trained["data"]), "--out", str(out), "--split-file",
                 str(trained["run"] / "split.csv"), "--threshold-from-val", "--n-bootstrap", "20"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == int((split["split"] == "test").sum())
    assert metrics["threshold_source"].startswith("val (Youden")
    # Youden picks one of the observed val scores, so it is not the default 0.5.
    assert metrics["threshold"] is not None and metrics["threshold"] != 0.5
    table = pd.read_csv(out / "predictions.csv")
    test_paths = {str(Path(p).resolve()) for p in split.loc[split["split"] == "test", "path"]}
    assert set(table["path"]) == test_paths


def write_run_figures(run: Path) -> list[Path]:
    """A finished run's figures redrawn into its figures/ (the model predicts its test split again)."""
    return save_figures(training_run_figures(RunRecord.read(run)), run / "figures")


def test_write_run_figures(trained) -> None:
    written = write_run_figures(trained["run"])
    names = sorted(path.name for path in written)
    assert names == sorted(FIGURE_NAMES[key] for key in ("training_curves", "confusion_matrix", "roc_curves",
                                                         "pr_curves", "reliability"))
    assert all(path.parent == trained["run"] / "figures" and path.stat().st_size > 1000 for path in written)


def test_predict_folder_with_unreadable_file(trained, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "new_images"
    sources = sorted((trained["data"] / "Normal" / "images").glob("*.png"))[:5]
    folder.mkdir()
    for source in sources:
        shutil.copy(source, folder / source.name)
    (folder / "corrupt.png").write_bytes(BROKEN_BYTES)
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(trained["model"]), str(folder), "--out", str(out), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0
    assert "corrupt.png" in captured.err
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "predicted", "probability", "prob_COVID", "prob_Normal"]
    assert len(table) == len(sources)
    assert sorted(Path(p).name for p in table["path"]) == [s.name for s in sources]
    assert (table[["prob_COVID", "prob_Normal"]].sum(axis=1) - 1).abs().max() < 1e-4
    assert (table["probability"] == table[["prob_COVID", "prob_Normal"]].max(axis=1)).all()


def test_predict_refuses_to_overwrite(trained, tmp_path: Path, capsys) -> None:
    image = sorted((trained["data"] / "COVID" / "images").glob("*.png"))[0]
    out = tmp_path / "existing.csv"
    out.write_text("keep me\n")
    code = main(["predict", str(trained["model"]), str(image), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "already exists" in err and "--overwrite" in err
    assert out.read_text() == "keep me\n"
    assert main(["predict", str(trained["model"]), str(image), "--out", str(out), "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == 1


def test_predict_nothing_readable_exits_2(trained, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(BROKEN_BYTES)
    out = tmp_path / "none.csv"
    code = main(["predict", str(trained["model"]), str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.png" in err and "error: no readable image" in err
    assert not out.exists()


def test_report_on_two_runs_embeds_every_figure(trained, evaluation, tmp_path: Path, capsys) -> None:
    eval_dir = evaluation[0]
    write_run_figures(trained["run"])
    n_figures = len(list(trained["run"].glob("*.png"))) + len(list((trained["run"] / "figures").glob("*.png")))
    n_figures += len(list(eval_dir.glob("*.png")))
    out = tmp_path / "report.html"
    assert main(["report", str(trained["run"]), str(eval_dir), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    # Every figure of both runs, plus the comparison chart.
    assert text.count("data:image/png;base64") == n_figures + 1
    assert n_figures == 5 + len(FIGURE_NAMES)
    assert f">{trained['run'].name} <small>" in text and f">{eval_dir.name} <small>" in text
    assert "<script" not in text
    # The software versions recorded at train and evaluate time; paths relative to the report, none absolute.
    for folder in (trained["run"], eval_dir):
        versions = json.loads((folder / "config.json").read_text())["versions"]
        assert set(versions) >= {"covid_tf", "tensorflow", "keras"} and f"keras {versions['keras']}" in text
    assert str(trained["root"]) not in text and str(tmp_path) not in text
    assert "<td>../" in text and "pr_curves.png" in text
    # Asked again without --overwrite: refused.
    assert main(["report", str(trained["run"]), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "not_keras"])
def test_evaluate_bad_model_file(trained, tmp_path: Path, capsys, kind: str) -> None:
    if kind == "missing":
        model = tmp_path / "nope.keras"
    else:
        model = tmp_path / "model.h5"
        model.write_bytes(b"not a model")
    code = main(["evaluate", str(model), str(trained["data"]), "--out", str(tmp_path / "out")])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err_lines) == 1 and err_lines[0].startswith("error: ")
    assert model.name in err_lines[0]
    assert not (tmp_path / "out").exists()


def test_evaluate_unknown_class_and_run_folder_refused(trained, tmp_path: Path, capsys) -> None:
    code = main(["evaluate", str(trained["model"]), str(trained["data"]), "--out", str(tmp_path / "out"),
                 "--class-map", "Normal=Healthy"])
    err = capsys.readouterr().err
    assert code == 2 and "Healthy" in err and "does not know" in err
    # The model's own run folder is not an evaluation folder: its metrics.json must survive.
    before = (trained["run"] / "metrics.json").read_bytes()
    code = main(["evaluate", str(trained["model"]), str(trained["data"]), "--out", str(trained["run"])])
    # Refused before anything is written: the run folder holds an input (the model) of this command.
    assert code == 2 and "nothing is written into input folders" in capsys.readouterr().err
    assert (trained["run"] / "metrics.json").read_bytes() == before
