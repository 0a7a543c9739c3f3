"""The HTML report is self-contained and embeds every figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from covid_tf import figures as plots
from covid_tf.cli import report
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import summary as evaluate


def make_run(folder: Path, model: str, *, nested: bool, figures: dict[str, int]) -> Path:
    """A run folder with metrics.json, config.json and the given number of PNGs per subfolder."""
    folder.mkdir(parents=True)
    y_true = np.array([0, 1, 0, 1, 1, 0])
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8], [0.3, 0.7]])
    metrics = evaluate.compute_metrics(
        y_true, probabilities, ["Normal", "COVID"], groups=list("aabbcc"), n_bootstrap=20
    )
    data = {"val": metrics, "test": metrics} if nested else metrics
    (folder / "metrics.json").write_text(json.dumps(data))
    (folder / "config.json").write_text(json.dumps({"model": model, "epochs": 2}))
    for subfolder, count in figures.items():
        for index in range(count):
            fig = Figure(figsize=(1, 1))
            fig.subplots().plot([0, index])
            plots.save_figure(fig, folder / subfolder / f"figure_{index}.png", dpi=40)
    return folder


def test_report_embeds_every_figure(tmp_path: Path) -> None:
    first = make_run(tmp_path / "run_a", "cnn", nested=True, figures={".": 2, "figures": 1})
    second = make_run(tmp_path / "run_b", "resnet<50>", nested=False, figures={"figures": 2})
    out = report.write_html_report([first, second], tmp_path / "out" / "report.html")
    text = out.read_text(encoding="utf-8")
    # 5 figures of the runs plus the comparison chart.
    assert text.count("data:image/png;base64,") == 5 + 1
    assert 'src="http' not in text and 'href="http' not in text and "<script" not in text
    assert "resnet&lt;50&gt;" in text and "resnet<50>" not in text
    assert "figures/figure_1.png" in text
    assert "Patient level" in text and "majority" in text
    metrics = json.loads((first / "metrics.json").read_text())["test"]
    assert f"{metrics['accuracy']:.3f}" in text
    assert text.count("<tr>") == 1 + 2 + 1 + 4  # runs table and patient table (2 rules x 2 runs)


def test_report_tolerates_missing_metrics_and_rejects_missing_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    text = report.write_html_report([empty], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "empty_run" in text and "No figures." in text
    assert "data:image/png;base64," not in text
    with pytest.raises(CovidTfError, match="not found"):
        report.write_html_report([tmp_path / "nowhere"], tmp_path / "r.html")
    (empty / "metrics.json").write_text("{not json")
    with pytest.raises(CovidTfError, match="metrics.json"):
        report.write_html_report([empty], tmp_path / "r.html")


def test_select_split_prefers_requested_split() -> None:
    flat = {"accuracy": 0.9}
    assert report.select_split(flat) == (None, flat)
    assert report.select_split({"val": {"accuracy": 0.8}, "test": {"accuracy": 0.7}}, "val") == (
        "val", {"accuracy": 0.8}
    )
    assert report.select_split({"val": {"accuracy": 0.8}}, "test") == ("val", {"accuracy": 0.8})
