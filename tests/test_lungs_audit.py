"""The shortcut audit (``audit``), its source probe and figure, on tiny synthetic X-rays with lung masks
(``covid_tf.synthetic``, with and without a burned-in marker)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.transforms import Bbox

from covid_tf.cli import main
from covid_tf.data.discover import discover
from covid_tf.data.images import load_image, save_png
from covid_tf.data.splits import make_split
from covid_tf.evaluation import source_probe
from covid_tf.figures.lungs import plot_audit, plot_image_panels
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows import audit

SIZE = 48
PER_CLASS = 80
# Four epochs are plenty on these images: the marker gives lungs-removed a test ROC-AUC near 0.97 and the
# clean data about 0.5, far on either side of the 0.8 threshold (ten epochs cost twice the time for nothing).
EPOCHS = 4
AUDIT_OPTIONS = dict(image_size=SIZE, epochs=EPOCHS, batch_size=16, split_fractions=(0.6, 0.15, 0.25))


def audit_row(roi: str, auc, low=None, high=None) -> dict:
    return {"variant": roi, "roi": roi, "roc_auc": auc, "ci_low": low, "ci_high": high}


def audit_frame(removed: float, removed_high: float | None = None) -> pd.DataFrame:
    return pd.DataFrame([audit_row("none", 0.97, 0.95, 0.99), audit_row("lungs-masked", 0.9, 0.85, 0.94),
                         audit_row("lungs-removed", removed, removed - 0.05, removed_high or removed + 0.05)])


def test_verdict_flags_shortcuts_from_the_threshold_on():
    shortcuts, text = audit.verdict(audit_frame(0.86), ["COVID", "Normal"], threshold=0.80)
    assert shortcuts and text.startswith("SHORTCUTS OUTSIDE THE LUNGS")
    assert "separates COVID from Normal" in text and "0.860 [0.810, 0.910]" in text
    shortcuts, text = audit.verdict(audit_frame(0.62), ["COVID", "Normal"], threshold=0.80)
    assert not shortcuts and text.startswith("No strong shortcut") and "more test images" not in text
    shortcuts, text = audit.verdict(audit_frame(0.70, removed_high=0.85), ["COVID", "Normal"], threshold=0.80)
    assert not shortcuts and "more test images are needed" in text
    assert audit.verdict(audit_frame(0.86), ["COVID", "Normal"], threshold=0.90)[0] is False


def test_verdict_without_a_defined_auc_says_so():
    shortcuts, text = audit.verdict(audit_frame(float("nan")), ["COVID", "Normal"])
    assert not shortcuts and text.startswith("No verdict")


def test_audit_figure_and_table(tmp_path):
    source = {"available": True, "roc_auc": 0.99, "ci_low": 0.97, "ci_high": 1.0, "n_test": 40, "sources": ["a", "b"]}
    figure = plot_audit(audit_frame(0.86), threshold=0.8, source=source, path=tmp_path / "audit.png")
    assert (tmp_path / "audit.png").stat().st_size > 5000
    assert len(figure.axes[0].patches) == 4  # three variants and the source
    result = {"variants": [dict(row, n_test=40) for row in audit_frame(0.86).to_dict("records")], "source": source}
    table = audit.audit_table(result)
    assert table["test ROC-AUC [95% CI]"].tolist()[-2:] == ["0.860 [0.810, 0.910]", "0.990 [0.970, 1.000]"]


@pytest.mark.parametrize("removed", [0.86, 0.22])
def test_audit_figure_values_stand_clear_of_bars_whiskers_and_legend(removed):
    source = {"available": True, "roc_auc": 1.0, "ci_low": 0.97, "ci_high": 1.0, "n_test": 40}
    figure = plot_audit(audit_frame(removed), threshold=0.8, source=source)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = figure.axes[0]
    values = [text for text in ax.texts if text.get_text()[:2] in ("0.", "1.")]
    assert len(values) == 4
    bars = [patch.get_window_extent(renderer) for patch in ax.patches]
    errorbars = [container for container in ax.containers if isinstance(container, ErrorbarContainer)]
    caps = [cap.get_window_extent(renderer) for container in errorbars for cap in container[1]]
    lines = [Bbox(ax.transData.transform(segment)) for container in errorbars for collection in container[2]
             for segment in collection.get_segments()]
    whiskers = caps + lines
    assert len(whiskers) == 12  # two caps and one line per bar
    inside = ax.get_window_extent(renderer)
    for text in values:
        box = text.get_window_extent(renderer)
        assert not any(box.overlaps(other) for other in bars + whiskers), text.get_text()
        assert inside.x0 < box.x0 and box.x1 < inside.x1, text.get_text()  # the 1.000 as well
    legend = figure.legends[0].get_window_extent(renderer)
    assert not any(legend.overlaps(bar) for bar in bars)


def test_image_panels_take_gray_and_rgb(tmp_path):
    gray, rgb = np.zeros((8, 8, 1), np.float32), np.zeros((8, 8, 3), np.uint8)
    plot_image_panels([[gray, rgb], [gray]], column_titles=["a", "b"], row_titles=["x", "y"], path=tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file()
    with pytest.raises(ValueError):
        plot_image_panels([])


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_small") / "data"
    generate_dataset(root, classes=("COVID", "Normal"), per_class=20, size=32, seed=3)
    return root


def with_sources(root, source_of):
    """Add a ``source`` column to metadata.csv; images of source ``dim`` are darkened (a source's signature)."""
    table = pd.read_csv(root / "metadata.csv")
    table["source"] = [source_of(i) for i in range(len(table))]
    for path, source in zip(table["path"], table["source"]):
        if source == "dim":
            save_png(load_image(root / path, channels=1) * 0.5, root / path)
    table.to_csv(root / "metadata.csv", index=False)
    return table


def test_source_probe_needs_a_source_column_and_two_sources(small_data):
    split = make_split(discover(small_data).frame, seed=0)
    result = source_probe.source_predictability(small_data, split, n_bootstrap=50)
    assert not result["available"] and "no 'source' column" in result["reason"]
    with_sources(small_data, lambda i: "only-one")
    result = source_probe.source_predictability(small_data, split, n_bootstrap=50)
    assert not result["available"] and "one source only (only-one)" in result["reason"]


def test_source_probe_finds_a_source_that_shows_in_the_pixels(tmp_path):
    root = tmp_path / "data"
    generate_dataset(root, classes=("COVID", "Normal"), per_class=20, size=32, seed=4)
    with_sources(root, lambda i: "dim" if i % 2 else "bright")
    split = make_split(discover(root).frame, seed=0)
    result = source_probe.source_predictability(root, split, n_bootstrap=100)
    assert result["available"] and result["sources"] == ["bright", "dim"]
    assert result["roc_auc"] > 0.9 and result["ci_low"] is not None and result["n_test"] > 0
    assert set(result["counts"]) == {"bright", "dim"}


def test_audit_refuses_an_output_inside_the_data(small_data, capsys):
    assert main(["audit", str(small_data), "--out", str(small_data / "audit")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (small_data / "audit").exists()


@pytest.fixture(scope="module")
def shortcut_audit(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_shortcut")
    generate_dataset(root / "data", classes=("COVID", "Normal"), per_class=PER_CLASS, size=SIZE, seed=1,
                     shortcut_class="COVID", shortcut_probability=1.0)
    return audit.run_audit(root / "data", root / "audit", **AUDIT_OPTIONS)


@pytest.mark.slow
def test_audit_flags_a_burned_in_marker(shortcut_audit):
    result = shortcut_audit
    assert result.shortcuts and result.verdict.startswith("SHORTCUTS OUTSIDE THE LUNGS")
    rows = result.table.set_index("roi")
    assert rows.loc["lungs-removed", "roc_auc"] >= 0.8
    saved = json.loads(result.json_path.read_text())
    assert saved["shortcuts_outside_lungs"] is True and [v["roi"] for v in saved["variants"]] == [
        "none", "lungs-masked", "lungs-removed"]
    assert all(v["ci_low"] <= v["roc_auc"] <= v["ci_high"] for v in saved["variants"])
    assert saved["source"]["available"] is False and result.figure_path.stat().st_size > 5000
    assert (result.out_dir / "runs" / "none" / "figures" / "roc_curves.png").is_file()  # ordinary run folders
    split = pd.read_csv(result.out_dir / "split.csv")
    for run in ("none", "lungs-masked", "lungs-removed"):  # the same split for all three
        run_split = pd.read_csv(result.out_dir / "runs" / run / "split.csv")
        assert run_split[["path", "split"]].equals(split[["path", "split"]])


@pytest.mark.slow
def test_audit_reuses_finished_runs_and_prints_three_aucs(shortcut_audit, capsys):
    data, out = shortcut_audit.out_dir.parent / "data", shortcut_audit.out_dir
    before = (out / "runs" / "none" / "model.keras").stat().st_mtime_ns
    assert main(["audit", str(data), "--out", str(out), "--image-size", str(SIZE), "--epochs", str(EPOCHS),
                 "--batch-size", "16", "--split", "0.6,0.15,0.25", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert (out / "runs" / "none" / "model.keras").stat().st_mtime_ns == before  # reused, not trained again
    assert printed.count("test ROC-AUC") == 3 and "SHORTCUTS OUTSIDE THE LUNGS" in printed


@pytest.mark.slow
def test_audit_of_clean_data_is_not_flagged(tmp_path):
    generate_dataset(tmp_path / "data", classes=("COVID", "Normal"), per_class=PER_CLASS, size=SIZE, seed=2)
    result = audit.run_audit(tmp_path / "data", tmp_path / "audit", run_figures=False, **AUDIT_OPTIONS)
    assert not result.shortcuts and result.verdict.startswith("No strong shortcut")
    assert result.figure_path.is_file() and not list((tmp_path / "audit" / "runs").glob("*/figures"))
    assert result.table.set_index("roi").loc["lungs-removed", "roc_auc"] < 0.8
