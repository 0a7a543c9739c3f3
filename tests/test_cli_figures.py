"""``figures RUN --format ... --out DIR``: a run's figures redrawn as real PNG, PDF and SVG files elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covid_tf.cli import main
from tests.helpers import make_class_folders

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}
CLASSES = ["COVID", "Normal"]


@pytest.fixture()
def evaluation(tmp_path: Path) -> tuple[Path, Path]:
    """An ``evaluate --out`` folder as the command writes it (no model needed to redraw it), and its data."""
    data = make_class_folders(tmp_path / "data", {"COVID": 4, "Normal": 4}, size=32)
    paths = sorted(str(path) for path in data.rglob("*.png"))
    labels = [Path(path).parent.name for path in paths]
    rng = np.random.default_rng(0)
    covid = np.clip(np.where(np.array(labels) == "COVID", 0.7, 0.3) + rng.normal(0, 0.2, len(paths)), 0, 1)
    predicted = np.where(covid >= 0.5, "COVID", "Normal")
    run_dir = tmp_path / "runs" / "baseline"
    run_dir.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1, 2], "loss": [0.9, 0.7, 0.6], "accuracy": [0.5, 0.6, 0.7]}).to_csv(
        run_dir / "history.csv", index=False)
    out = run_dir / "eval"
    out.mkdir()
    pd.DataFrame({"path": paths, "label": labels, "predicted": predicted, "prob_COVID": covid,
                  "prob_Normal": 1 - covid}).to_csv(out / "predictions.csv", index=False)
    (out / "config.json").write_text(json.dumps({
        "model": "baseline", "model_path": str(run_dir / "model.keras"), "data": str(data), "split": "test",
        "class_names": CLASSES, "image_size": 32, "channels": 1}))
    (out / "metrics.json").write_text("{}")
    return out, data


def listing(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_figures_are_redrawn_in_every_format(evaluation, tmp_path: Path, capsys) -> None:
    run_dir, _ = evaluation
    before = listing(run_dir)
    out = tmp_path / "paper"
    assert main(["figures", str(run_dir), "--format", "png,pdf,svg", "--out", str(out)]) == 0
    stems = ["training_curves", "confusion_matrix", "roc_curves", "pr_curves", "reliability_diagram",
             "sample_predictions", "confident_mistakes"]
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{stem}.{kind}" for stem in stems for kind in MAGIC)
    for path in out.iterdir():
        assert path.read_bytes().startswith(MAGIC[path.suffix[1:]]), path.name
    assert b"<svg" in (out / "roc_curves.svg").read_bytes()[:3000]
    assert "21 figure file(s) (png, pdf, svg)" in capsys.readouterr().out
    assert listing(run_dir) == before  # the run folder is only read


def test_figures_refuse_an_out_inside_the_run_or_the_data(evaluation, tmp_path: Path, capsys) -> None:
    run_dir, data = evaluation
    for out in (run_dir / "figures_pdf", data / "COVID" / "figures", data):
        assert main(["figures", str(run_dir), "--format", "pdf", "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error:") and "lies inside the input folder" in error
        assert not (out / "roc_curves.pdf").exists()
    assert main(["figures", str(run_dir), "--format", "png,jpg", "--out", str(tmp_path / "x")]) == 2
    assert "png, pdf, svg" in capsys.readouterr().err
    assert main(["figures", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_figures_do_not_overwrite_without_the_option(evaluation, tmp_path: Path, capsys) -> None:
    run_dir, _ = evaluation
    out = tmp_path / "paper"
    assert main(["figures", str(run_dir), "--format", "pdf", "--out", str(out)]) == 0
    assert main(["figures", str(run_dir), "--format", "pdf", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["figures", str(run_dir), "--format", "pdf", "--out", str(out), "--overwrite"]) == 0


def test_a_history_only_folder_gives_its_training_curves(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": "baseline"}))
    pd.DataFrame({"epoch": [0, 1], "loss": [0.9, 0.7]}).to_csv(run_dir / "history.csv", index=False)
    assert main(["figures", str(run_dir), "--format", "svg", "--out", str(tmp_path / "out")]) == 0
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["training_curves.svg"]
