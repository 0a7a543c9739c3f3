"""The HTML report is self-contained and embeds every figure."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from covid_tf import figures as plots
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import summary as evaluate
from covid_tf.workflows import report


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
    # Runs table, patient table (2 rules x 2 runs), each run's configuration (folder, model, epochs, versions, date).
    assert text.count("<tr>") == 1 + 2 + 1 + 4 + 2 * 5
    assert str(tmp_path) not in text and "<td>../run_a</td>" in text


def test_report_tolerates_missing_metrics_and_rejects_missing_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(CovidTfError, match="not a run folder"):  # issue 14, case 17
        report.write_html_report([empty], tmp_path / "r.html")
    (empty / "config.json").write_text(json.dumps({"model": "cnn"}))  # an unfinished run: no metrics yet
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


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
# Writes each image's natural width into the page, so that --dump-dom shows whether the browser decoded it.
WIDTH_SCRIPT = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "widths";
  out.textContent = Array.from(document.images).map((image) => image.naturalWidth).join(",");
  document.body.appendChild(out);
});
</script>"""


def real_run(folder: Path, *, n: int, config: dict) -> Path:
    """A run folder with the figures a run has (ROC and precision-recall curves among them) on ``n`` images."""
    rng = np.random.default_rng(n)
    y_true = np.arange(n) % 2
    positive = np.clip(0.5 + 0.3 * (y_true - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    probabilities = np.column_stack([1 - positive, positive])
    names = ["Normal", "COVID"]
    metrics = evaluate.compute_metrics(y_true, probabilities, names, n_bootstrap=50)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test": metrics}))
    (folder / "config.json").write_text(json.dumps(config))
    plots.plot_roc_curves(y_true, probabilities, names, path=folder / "figures" / "roc_curves.png")
    plots.plot_pr_curves(y_true, probabilities, names, path=folder / "figures" / "pr_curves.png")
    return folder


def test_report_shows_configuration_versions_and_relative_paths(tmp_path: Path) -> None:
    data = tmp_path / "data" / "radiography"
    config = {"model": "resnet18", "image_size": 64, "epochs": 3, "fine_tune_epochs": 2, "learning_rate": 0.0003,
              "roi": "crop", "data": str(data), "versions": {"covid_tf": "9.9.9", "tensorflow": "2.99.0",
                                                             "keras": "3.99.0"}}
    run = real_run(tmp_path / "runs" / "resnet", n=40, config=config)
    text = report.write_html_report([run], tmp_path / "reports" / "report.html").read_text(encoding="utf-8")
    for shown in ("<td>resnet18</td>", "<td>64</td>", "<td>3 + 2 fine-tuning</td>", "<td>0.0003</td>",
                  "<td>crop</td>", "<td>../data/radiography</td>", "<td>../runs/resnet</td>",
                  "covid_tf 9.9.9, tensorflow 2.99.0, keras 3.99.0", "average precision"):
        assert shown in text, shown
    assert str(tmp_path) not in text
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert f"<td>{metrics['average_precision']:.3f}</td>" in text
    # ROC and precision-recall curves side by side, in that order; no warning on 40 images.
    assert text.index("figures/roc_curves.png") < text.index("figures/pr_curves.png")
    assert "Read with care" not in text


def test_report_warns_on_degenerate_intervals_and_small_samples(tmp_path: Path) -> None:
    run = tmp_path / "tiny"
    run.mkdir()
    metrics = evaluate.compute_metrics([0, 1], [[0.6, 0.4], [0.4, 0.6]], ["Normal", "COVID"], n_bootstrap=20)
    metrics["ci95"]["accuracy"] = [0.5, 0.5]  # what 2 test patients gave
    (run / "metrics.json").write_text(json.dumps({"test": metrics}))
    text = report.write_html_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    box = text[text.index('<div class="warning">'):text.index("</div>")]
    assert "Read with care" in box and "only n = 2 (images)" in box
    assert "interval of accuracy (images) is [0.500, 0.500]" in box and "not certainty" in box
    assert '2 <span class="warn">' in text  # the n cell itself is flagged too


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_report_renders_every_figure_in_headless_chromium(tmp_path: Path) -> None:
    config = {"model": "baseline", "image_size": 32, "epochs": 1, "learning_rate": 0.001}
    runs = [real_run(tmp_path / "run_a", n=40, config=config), real_run(tmp_path / "run_b", n=6, config=config)]
    page = report.write_html_report(runs, tmp_path / "report.html")
    text = page.read_text(encoding="utf-8")
    n_images = text.count("<img ")
    assert n_images == 2 * 2 + 1  # ROC and precision-recall of each run, and the comparison chart
    probe = tmp_path / "probe.html"  # a copy: the report itself stays free of scripts
    probe.write_text(text.replace("</body>", WIDTH_SCRIPT + "</body>"), encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="widths">([0-9,]*)</pre>', dom)
    assert found, dom[-2000:]
    widths = [int(width) for width in found.group(1).split(",")]
    assert len(widths) == n_images and all(width > 0 for width in widths), widths
    assert "Read with care" in dom  # the 6-image run is flagged in the rendered page
    screenshot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1200,3000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
