"""The ``explain`` command end to end and the shortcut study, on tiny models of synthetic data."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid_tf.cli import main
from covid_tf.data.discover import discover
from covid_tf.data.mask_files import find_mask
from covid_tf.errors import CovidTfError
from covid_tf.runs.config import TrainConfig
from covid_tf.studies.shortcuts import SHORTCUT_COLUMNS, shortcut_study
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows.explain import explain_images, output_names
from covid_tf.workflows.train import train_run

BROKEN_BYTES = b"\x89PNG\r\n\x1a\n this file is not really a PNG"
MASK_COLUMNS = ["mask_path", "energy_in_mask", "mask_area_fraction", "pointing_hit", "iou"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic data at 32 px (with a broken file in a copy) and a 1-epoch baseline run."""
    root = tmp_path_factory.mktemp("cli_explain")
    data = root / "data"
    generate_dataset(data, classes=("COVID", "Normal"), per_class=8, size=32, seed=0, patients_per_class=4)
    run_dir = root / "run"
    result = train_run(TrainConfig(data=str(data), model="baseline", image_size=32, epochs=1, batch_size=8,
                                   n_bootstrap=20, classes=["COVID", "Normal"]), run_dir, verbose=0)
    return {"root": root, "data": data, "model": run_dir / "model.keras", "result": result}


def test_explain_writes_one_png_per_image_and_mask_columns(trained: dict) -> None:
    out = trained["root"] / "explained"
    images = trained["data"] / "COVID" / "images"
    code, stdout, _ = run_cli(["explain", str(trained["model"]), str(images), str(trained["data"] / "Normal"),
                               "--out", str(out), "--batch-size", "3"])
    assert code == 0, stdout
    table = pd.read_csv(out / "explanations.csv")
    assert len(table) == 16 and table["path"].is_unique
    assert list(table.columns[:4]) == ["path", "predicted", "probability", "explained"]
    assert set(MASK_COLUMNS) <= set(table.columns)
    assert table["mask_path"].map(lambda p: Path(p).parent.name == "masks").all()
    for column in ("energy_in_mask", "mask_area_fraction", "pointing_hit", "iou"):
        assert table[column].between(0.0, 1.0).all(), column
    assert set(table["pointing_hit"]) <= {0.0, 1.0}
    assert table["predicted"].isin(["COVID", "Normal"]).all()
    assert (table["predicted"] == table["explained"]).all()
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 16 and sorted(p.name for p in pngs) == sorted(table["output"])
    overlay = np.asarray(Image.open(pngs[0]))
    assert overlay.shape == (32, 32, 3) and overlay.dtype == np.uint8
    # Nothing was written into the input folders.
    assert not list(trained["data"].rglob("*explanations*"))
    assert len(list(images.iterdir())) == 8


def test_explain_lesion_masks_class_and_panels(trained: dict) -> None:
    out = trained["root"] / "explained_lesions"
    code, _, _ = run_cli(["explain", str(trained["model"]), str(trained["data"] / "COVID" / "images"), "--out",
                          str(out), "--mask-kind", "lesions", "--class", "COVID", "--panels", "--method",
                          "gradcam++", "--score", "probability"])
    assert code == 0
    table = pd.read_csv(out / "explanations.csv")
    assert (table["explained"] == "COVID").all()
    assert table["mask_path"].map(lambda p: Path(p).parent.name == "lesions").all()
    panel = np.asarray(Image.open(out / table["output"].iloc[0]))
    assert panel.shape[1] > 3 * panel.shape[0]  # four panels side by side


def test_unreadable_file_is_reported_and_skipped(trained: dict) -> None:
    folder = trained["root"] / "mixed"
    folder.mkdir()
    for path in sorted((trained["data"] / "COVID" / "images").glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_bytes(BROKEN_BYTES)
    out = trained["root"] / "explained_mixed"
    code, stdout, stderr = run_cli(["explain", str(trained["model"]), str(folder), "--out", str(out)])
    assert code == 0
    assert "broken.png" in stderr and "skipped" in stderr
    table = pd.read_csv(out / "explanations.csv")
    assert len(table) == 2 and not table["path"].str.contains("broken").any()
    assert "mask_path" not in table  # no masks beside these images
    assert len(list(out.glob("*.png"))) == 2


def test_same_names_get_unique_outputs_and_bad_options_fail(trained: dict, tmp_path: Path) -> None:
    assert output_names(["a/x.png", "b/x.png", "c/X.jpg", "d/x_2.png"]) == ["x.png", "x_2.png", "X_3.png",
                                                                          "x_2_2.png"]
    first = next((trained["data"] / "COVID" / "images").glob("*.png"))
    twin = tmp_path / "twin" / first.name
    twin.parent.mkdir()
    shutil.copy(first, twin)
    result = explain_images(trained["model"], [first, twin], tmp_path / "out")
    assert len({p.name for p in result.outputs}) == 2
    assert find_mask(first) == trained["data"] / "COVID" / "masks" / first.name
    assert find_mask(first, kind="lesions") == trained["data"] / "COVID" / "lesions" / first.name

    code, _, stderr = run_cli(["explain", str(trained["model"]), str(first), "--out", str(tmp_path / "o2"),
                               "--class", "Pneumonia"])
    assert code == 2 and "unknown class 'Pneumonia'" in stderr
    code, _, stderr = run_cli(["explain", str(tmp_path / "missing.keras"), str(first), "--out", str(tmp_path / "o3")])
    assert code == 2 and "model file not found" in stderr
    code, _, stderr = run_cli(["explain", str(trained["model"]), str(trained["data"]), "--out",
                               str(trained["data"] / "explained")])
    assert code == 2 and "inside the input folder" in stderr
    assert not (trained["data"] / "explained").exists()
    code, _, stderr = run_cli(["explain", str(trained["model"]), str(first), "--out", str(tmp_path / "o4"),
                               "--method", "cam"])  # a hidden Dense layer after the pooling: no CAM
    assert code == 2 and "cam" in stderr
    with pytest.raises(CovidTfError, match="already holds explanations"):
        explain_images(trained["model"], [first], tmp_path / "out")


def test_explain_resnet50v2_loaded_from_keras_file(tmp_path: Path, trained: dict) -> None:
    from covid_tf.models.registry import build_model

    model = build_model("resnet50v2", image_size=32, channels=1, num_classes=2, weights=None)
    run_dir = tmp_path / "resnet"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    (run_dir / "config.json").write_text(json.dumps({"model": "resnet50v2", "class_names": ["COVID", "Normal"]}))
    out = tmp_path / "explained_resnet"
    code, stdout, _ = run_cli(["explain", str(run_dir / "model.keras"), str(trained["data"] / "COVID" / "images"),
                               "--out", str(out), "--batch-size", "4"])
    assert code == 0
    assert "'post_relu'" in stdout
    table = pd.read_csv(out / "explanations.csv")
    assert len(table) == 8 and set(table["predicted"]) <= {"COVID", "Normal"}
    assert len(list(out.glob("*.png"))) == 8


def test_shortcut_study_columns_and_ranges(trained: dict) -> None:
    index = discover(trained["data"], classes=["COVID", "Normal"])
    study = shortcut_study(trained["result"].model, index.frame, ["COVID", "Normal"], class_name="COVID",
                           batch_size=5)
    images = study.images
    assert len(images) == 16 and study.layer_name == "block3_relu2"
    assert {"path", "label", "predicted", "probability", "explained", *SHORTCUT_COLUMNS} <= set(images.columns)
    for column in SHORTCUT_COLUMNS:
        values = images[column].dropna()
        assert values.between(0.0, 1.0).all(), column
    # A map without heat (a ReLU'd Grad-CAM of a 1-epoch model can be all zero) has no energy share: NaN, both sides.
    measured = images["energy_in_lungs"].notna()
    assert measured.sum() >= len(images) // 2
    np.testing.assert_allclose(images.loc[measured, "energy_in_lungs"] + images.loc[measured, "energy_outside_lungs"],
                               1.0)
    assert images.loc[~measured, "energy_outside_lungs"].isna().all()
    # Normal images have no lesion: their lesion numbers are NaN, COVID images have them.
    assert images.loc[images["label"] == "Normal", "pointing_lesion"].isna().all()
    assert images.loc[images["label"] == "COVID", "lesion_area_fraction"].notna().all()
    assert 0.1 < images["lung_area_fraction"].mean() < 0.6
    assert list(study.summary.index) == ["all", "COVID", "Normal"]
    assert study.summary.loc["all", "n"] == 16
    assert study.summary[["energy_in_lungs", "lung_area_fraction", "pointing_lungs"]].stack().between(0.0, 1.0).all()
