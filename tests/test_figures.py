"""Figures return matplotlib Figures and write PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from covid_tf import figures as plots
from covid_tf.evaluation import calibration
from covid_tf.evaluation import summary as evaluate
from covid_tf.figures import comparison, grids

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"
NAMES = ["Normal", "COVID", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y_true = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    logits = rng.normal(size=(8, 3)) + 2.0 * np.eye(3)[y_true]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    images = rng.random((8, 32, 32, 1)).astype(np.float32)
    return images, y_true, probabilities


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_save_figure_creates_folder(tmp_path: Path) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    written = plots.save_figure(fig, tmp_path / "a" / "b" / "line.png")
    assert_png(written)
    assert [p.name for p in written.parent.iterdir()] == ["line.png"]  # no temporary file left


def test_confusion_matrix_counts_and_rates(tmp_path: Path) -> None:
    matrix = [[5, 2, 1], [1, 6, 1], [0, 0, 0]]  # an empty row must not divide by zero
    fig = plots.plot_confusion_matrix(matrix, NAMES, title="test", path=tmp_path / "cm.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "cm.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    rates = [t.get_text() for t in fig.axes[1].texts if t.get_text()]
    assert "6" in texts
    assert "0.62" in rates  # 5 / 8 in the first row
    with pytest.raises(ValueError, match="3x3"):
        plots.plot_confusion_matrix([[1, 2], [3, 4]], NAMES)


def test_roc_curves_show_auc_in_legend(tmp_path: Path, predictions: tuple) -> None:
    _, y_true, probabilities = predictions
    fig = plots.plot_roc_curves(y_true, probabilities, NAMES, path=tmp_path / "roc.png")
    assert_png(tmp_path / "roc.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sum("AUC =" in text for text in legend) == 3
    binary = plots.plot_roc_curves([0, 1, 0, 1], np.array([[0.8, 0.2], [0.3, 0.7]] * 2), ["Normal", "COVID"])
    legend = [t.get_text() for t in binary.axes[0].get_legend().get_texts()]
    assert legend[0] == "COVID (AUC = 1.000)"


def test_pr_curves_show_average_precision_in_legend(tmp_path: Path, predictions: tuple) -> None:
    _, y_true, probabilities = predictions
    fig = plots.plot_pr_curves(y_true, probabilities, NAMES, path=tmp_path / "pr.png")
    assert_png(tmp_path / "pr.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    expected = sk_metrics.average_precision_score(np.asarray(y_true) == 0, np.asarray(probabilities)[:, 0])
    assert legend[0] == f"{NAMES[0]} (AP = {expected:.3f})" and len(legend) == 3
    binary = plots.plot_pr_curves([0, 0], np.array([[0.8, 0.2], [0.3, 0.7]]), ["Normal", "COVID"])
    assert [t.get_text() for t in binary.axes[0].get_legend().get_texts()] == ["COVID (AP undefined: no positives)"]


def test_reliability_diagram_has_ece_in_title(tmp_path: Path, predictions: tuple) -> None:
    _, y_true, probabilities = predictions
    fig = plots.plot_reliability_diagram(y_true, probabilities, NAMES, path=tmp_path / "rel.png")
    assert_png(tmp_path / "rel.png")
    ece = calibration.expected_calibration_error(y_true, probabilities, NAMES)
    assert f"ECE = {ece:.3f}" in fig.axes[0].get_title()


def test_training_curves_mark_fine_tuning(tmp_path: Path) -> None:
    history = pd.DataFrame({
        "loss": [1.0, 0.8, 0.6, 0.5, 0.4], "val_loss": [1.1, 0.9, 0.8, 0.7, 0.7],
        "accuracy": [0.5, 0.6, 0.7, 0.8, 0.85], "val_accuracy": [0.5, 0.55, 0.6, 0.7, 0.72],
        "phase": ["head", "head", "head", "fine_tune", "fine_tune"],
    })
    fig = plots.plot_training_curves(history, path=tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")
    loss_axis, accuracy_axis = fig.axes
    assert len(loss_axis.lines) == 3  # train, validation, fine-tuning marker
    assert loss_axis.lines[-1].get_xdata()[0] == pytest.approx(3.5)  # before epoch 4
    labels = accuracy_axis.get_legend_handles_labels()[1]
    assert labels == ["train", "validation", "fine-tuning starts"]
    plain = plots.plot_training_curves(history.drop(columns="phase"))
    assert len(plain.axes[0].lines) == 2
    explicit = plots.plot_training_curves(history.drop(columns="phase"), fine_tune_epoch=2)
    assert explicit.axes[0].lines[-1].get_xdata()[0] == pytest.approx(1.5)


def test_sample_predictions_colour_titles(tmp_path: Path) -> None:
    images = np.zeros((3, 32, 32, 3), dtype=np.float32)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    fig = grids.plot_sample_predictions(images, [0, 0, 0], probabilities, ["Normal", "COVID"],
                                        path=tmp_path / "grid.png")
    assert_png(tmp_path / "grid.png")
    titled = [ax for ax in fig.axes if ax.get_title()]
    colours = [ax.title.get_color() for ax in titled]
    assert colours == [plots.RIGHT_COLOUR, plots.WRONG_COLOUR, plots.RIGHT_COLOUR]
    assert titled[1].get_title() == "true: Normal\npred: COVID (0.80)"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        grids.plot_sample_predictions(images + 2, [0, 0, 0], probabilities, ["Normal", "COVID"])


def test_confident_mistakes_most_confident_first(tmp_path: Path) -> None:
    images = np.full((4, 32, 32, 1), 0.5, dtype=np.float32)
    probabilities = np.array([[0.4, 0.6], [0.1, 0.9], [0.9, 0.1], [0.3, 0.7]])
    fig = grids.plot_confident_mistakes(images, [0, 0, 0, 1], probabilities, ["Normal", "COVID"],
                                        path=tmp_path / "mistakes.png")
    assert_png(tmp_path / "mistakes.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true: Normal\npred: COVID (0.90)", "true: Normal\npred: COVID (0.60)"]
    none = grids.plot_confident_mistakes(images, [1, 1, 0, 1], probabilities, ["Normal", "COVID"])
    assert "no mistakes" in [t.get_text() for t in none.axes[0].texts]


def test_run_comparison_with_error_bars(tmp_path: Path, predictions: tuple) -> None:
    _, y_true, probabilities = predictions
    result = evaluate.compute_metrics(y_true, probabilities, NAMES, n_bootstrap=50)
    runs = {"baseline": {**result, "model": "cnn"}, "transfer": {**result, "model": "resnet50v2"}}
    fig = comparison.plot_run_comparison(runs, path=tmp_path / "runs.png")
    assert_png(tmp_path / "runs.png")
    bars = fig.axes[0].patches
    assert len(bars) == 4
    assert bars[0].get_height() == pytest.approx(result["accuracy"])
    table = comparison.runs_table(runs)
    assert table["model"].tolist() == ["cnn", "resnet50v2"]
    assert table.loc[0, "roc_auc_low"] == result["ci95"]["roc_auc"][0]
    assert len(fig.axes) == 1 and len(fig.axes[0].tables) == 0  # the numbers are in runs_table, not drawn


def test_run_comparison_states_a_run_at_chance() -> None:
    y_true = np.array([0, 1] * 10)
    informative = evaluate.compute_metrics(y_true, np.eye(2)[y_true] * 0.8 + 0.1, ["COVID", "Normal"], n_bootstrap=20)
    # A random, frozen backbone: the same probabilities for every image.
    constant = evaluate.compute_metrics(y_true, np.tile([0.5, 0.5], (20, 1)), ["COVID", "Normal"], n_bootstrap=20)
    assert constant["ci95"]["roc_auc"] == [0.5, 0.5]
    assert comparison.at_chance(constant) and not comparison.at_chance(informative)
    runs = {"baseline": informative, "resnet": constant}
    fig = comparison.plot_run_comparison(runs, notes={"resnet": "random backbone, no ImageNet weights"})
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # two bars for the baseline, none for the run at chance
    texts = [text.get_text().replace("\n", " ") for text in ax.texts]
    assert texts == ["at chance (random backbone, no ImageNet weights)"]
    assert ax.get_xticklabels()[1].get_text() == "resnet"
    assert len(fig.axes) == 1 and len(ax.tables) == 0


@pytest.mark.parametrize(("suffix", "magic"), [(".png", PNG_MAGIC), (".pdf", PDF_MAGIC), (".svg", b"<?xml")])
def test_save_figure_writes_the_format_of_the_extension(tmp_path: Path, suffix: str, magic: bytes) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    data = plots.save_figure(fig, tmp_path / f"line{suffix.upper()}").read_bytes()
    assert data.startswith(magic)
    if suffix == ".svg":
        assert b"<svg" in data[:2000]


def test_save_figure_refuses_an_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.pdf, \.svg"):
        plots.save_figure(Figure(), tmp_path / "line.jpg")
    assert list(tmp_path.iterdir()) == []


def test_save_report_figure_writes_png_and_pdf(tmp_path: Path) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    shown = plots.save_report_figure(fig, tmp_path / "curve.png")
    assert shown == tmp_path / "curve.png"
    assert shown.read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "curve.pdf").read_bytes()[:5] == PDF_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.pdf", "curve.png"]


def test_training_curves_count_epochs_from_one_on_integer_ticks() -> None:
    # history.csv holds Keras' 0-based epoch numbers.
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.9],
                            "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.5, 0.5, 0.6]})
    fig = plots.plot_training_curves(history)
    for ax in fig.axes:
        assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
        ticks = [tick for tick in ax.get_xticks() if ax.get_xlim()[0] <= tick <= ax.get_xlim()[1]]
        assert ticks == [1, 2, 3]
    single = plots.plot_training_curves(history.iloc[:1])
    ticks = [tick for tick in single.axes[0].get_xticks() if 0.5 <= tick <= 1.5]
    assert ticks == [1]
