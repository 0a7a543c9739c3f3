"""``segment-train`` and ``segment`` on tiny synthetic X-rays with lung masks (``python -m covid_tf synth``)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.cli.commands import segment as segment_command
from covid_tf.cli.commands import segment_train as segment_train_command
from covid_tf.data.images import load_image
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation import scoring
from covid_tf.lungs.segmentation import sources as mask_sources
from covid_tf.lungs.segmentation import training as train_segmenter
from covid_tf.workflows import segment
from tests.helpers import write_png

SIZE = 64


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("lungs_synth") / "data"
    assert main(["synth", "--out", str(root), "--per-class", "12", "--size", str(SIZE)]) == 0
    return root


@pytest.fixture(scope="module")
def segmenter_run(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("lungs_run") / "run"
    assert main(["segment-train", str(synthetic), "--out", str(out), "--image-size", str(SIZE), "--epochs", "12",
                 "--batch-size", "4", "--levels", "2", "--base-filters", "8"]) == 0
    return out


def otsu_dice(image_path: str, mask_path: str) -> float:
    """Dice of the threshold baseline: pixels darker than Otsu's threshold, cleaned like the U-Net's output."""
    image = (load_image(image_path, channels=1)[..., 0] * 255).astype(np.uint8)
    threshold, _ = cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    predicted = lung_masks.clean_mask((image < threshold).astype(np.float32))
    return scoring.dice_and_iou(predicted, lung_masks.binarize(load_image(mask_path, channels=1)))[0]


@pytest.mark.slow  # trains a U-Net for 12 epochs (about 20 s on 2 free cores, more when they are shared)
def test_segment_train_writes_its_outputs_and_beats_a_threshold_baseline(segmenter_run):
    for name in ("model.keras", "history.csv", "split.csv", "scores.csv", "metrics.json", "figures/test_worst.png",
                 "figures/test_best.png"):
        assert (segmenter_run / name).is_file(), name
    metrics = json.loads((segmenter_run / "metrics.json").read_text())["sources"]["data"]  # the source's name
    for split in ("train", "val", "test", "all"):
        low, high = metrics[split]["dice"]["ci95"]
        assert low <= metrics[split]["dice"]["mean"] <= high and set(metrics[split]) == {"dice", "iou", "flags"}
    assert len(pd.read_csv(segmenter_run / "history.csv")) == 12
    test_rows = pd.read_csv(segmenter_run / "split.csv").query("split == 'test'")
    assert metrics["test"]["dice"]["n"] == len(test_rows) > 0
    assert len(pd.read_csv(segmenter_run / "scores.csv")) == metrics["all"]["dice"]["n"] == 24
    baseline = np.mean([otsu_dice(path, path.replace("/images/", "/masks/")) for path in test_rows["path"]])
    assert metrics["test"]["dice"]["mean"] > baseline + 0.1, (metrics["test"]["dice"]["mean"], baseline)


def test_segment_train_resizes_masks_of_another_size(synthetic, tmp_path):
    # Masks at twice the image size must still be read and resized onto the image.
    data = tmp_path / "data"
    for path in sorted((synthetic / "COVID" / "images").glob("*.png"))[:6]:
        write_png(data / "Lungs" / "images" / path.name, (load_image(path)[..., 0] * 255).astype(np.uint8))
        mask = (load_image(synthetic / "COVID" / "masks" / path.name)[..., 0] * 255).astype(np.uint8)
        write_png(data / "Lungs" / "masks" / path.name, cv2.resize(mask, (2 * SIZE, 2 * SIZE)))
    frame = mask_sources.read_source(mask_sources.parse_source(str(data)))
    images, masks = scoring.load_pairs(frame, 32)
    assert images.shape == masks.shape == (6, 32, 32, 1)
    assert 0.1 < masks.mean() < 0.6


def test_segment_train_without_masks_is_one_error_line(tmp_path, capsys):
    for name in ("COVID", "Normal"):
        for i in range(3):
            write_png(tmp_path / "data" / name / f"{i}.png", seed=i)
    assert main(["segment-train", str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error:") and "no image has a lung mask" in error[0]
    assert not (tmp_path / "run").exists()


def test_segment_train_refuses_an_output_inside_the_data(synthetic, capsys):
    assert main(["segment-train", str(synthetic), "--out", str(synthetic / "COVID" / "run")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (synthetic / "COVID" / "run").exists()


def test_segment_train_defaults_in_the_help_are_the_options(capsys):
    options = train_segmenter.SegmenterOptions()
    assert {name: getattr(options, name) for name in segment_train_command.DEFAULTS} == segment_train_command.DEFAULTS


def test_segment_writes_masks_in_the_dataset_layout_and_flags_implausible_images(synthetic, tmp_path, capsys):
    loose = tmp_path / "loose"
    write_png(loose / "blank.png", np.full((SIZE, SIZE), 128, np.uint8))
    write_png(loose / "noise.png", np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    out = tmp_path / "masks"
    assert main(["segment", str(synthetic), str(loose), "--out", str(out)]) == 0  # the shipped segmenter
    table = pd.read_csv(out / "lungs.csv")
    assert list(table.columns) == list(segment.LUNGS_COLUMNS) and len(table) == 26
    for name in ("COVID", "Normal"):
        written = sorted(p.name for p in (out / name / "masks").glob("*.png"))
        assert written == sorted(p.name for p in (synthetic / name / "images").glob("*.png"))
    mask = load_image(out / "COVID" / "masks" / "COVID-0001.png")
    assert mask.shape == (SIZE, SIZE, 1) and set(np.unique(mask)) <= {0.0, 1.0}
    flagged = table.set_index(table["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    for name in ("blank.png", "noise.png"):
        assert not flagged.loc[name, "plausible"] and flagged.loc[name, "reason"], flagged.loc[name].to_dict()
        assert (out / "masks" / name).is_file()
    assert "implausible" in capsys.readouterr().out


def test_segment_defaults_in_the_help_are_the_back_ends():
    assert (segment_command.DEFAULT_SIZE, segment_command.DEFAULT_BATCH_SIZE) == (
        segment.DEFAULT_SIZE, segment.DEFAULT_BATCH_SIZE)


def test_segment_finds_the_class_of_an_image_reached_through_links(tmp_path):
    real = tmp_path / "real"
    image = real / "COVID" / "images" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert segment.class_of(image, [link]) == "COVID"  # the dataset given through a link, its image resolved
    assert segment.class_of(link / "COVID" / "images" / "a.png", [link]) == "COVID"
    assert segment.class_of(image, [tmp_path / "missing"]) == ""


def test_segment_reads_a_class_whose_images_folder_is_a_link(tmp_path, capsys):
    """A dataset whose ``<Class>/images`` links to a folder elsewhere is read (as evaluate reads it); the dataset's
    ``metadata.csv`` is no image and not reported as skipped."""
    elsewhere = tmp_path / "store" / "covid_pngs"
    for index in range(2):
        write_png(elsewhere / f"COVID-{index}.png", np.random.default_rng(index).integers(0, 256, (32, 32), np.uint8))
    data = tmp_path / "data"
    (data / "COVID").mkdir(parents=True)
    (data / "COVID" / "images").symlink_to(elsewhere, target_is_directory=True)
    (data / "metadata.csv").write_text("path,label\nCOVID/images/COVID-0.png,COVID\n", encoding="utf-8")
    out = tmp_path / "masks"
    assert main(["segment", str(data), "--out", str(out), "--modality", "ct"]) == 0
    captured = capsys.readouterr()
    assert "metadata.csv" not in captured.err and "skipped" not in captured.err
    table = pd.read_csv(out / "lungs.csv")
    assert sorted(Path(path).name for path in table["path"]) == ["COVID-0.png", "COVID-1.png"]
    assert sorted(p.name for p in out.rglob("*.png")) == ["COVID-0.png", "COVID-1.png"]


@pytest.mark.slow  # shares the trained run above
def test_segment_with_a_trained_run_model(segmenter_run, synthetic, tmp_path):
    out = tmp_path / "masks"
    assert main(["segment", str(synthetic / "Normal" / "images"), "--out", str(out),
                 "--segmenter", str(segmenter_run / "model.keras"), "--size", str(SIZE)]) == 0
    table = pd.read_csv(out / "lungs.csv")
    assert len(table) == 12 and (out / "Normal" / "masks" / "Normal-0001.png").is_file()
    assert table["lung_area_fraction"].between(0.0, 1.0).all()


@pytest.mark.parametrize("inside", ["COVID/images/out", ".", "COVID"])
def test_segment_refuses_an_output_inside_an_input(synthetic, inside, capsys):
    before = sorted(p for p in synthetic.rglob("*"))
    assert main(["segment", str(synthetic), "--out", str(synthetic / inside)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "inside the input folder" in error[0]
    assert sorted(p for p in synthetic.rglob("*")) == before


def test_segment_refuses_the_folder_of_an_input_file_and_a_bad_model(synthetic, tmp_path, capsys):
    image = synthetic / "COVID" / "images" / "COVID-0001.png"
    assert main(["segment", str(image), "--out", str(image.parent)]) == 2
    assert "folder of the input" in capsys.readouterr().err
    assert main(["segment", str(image), "--out", str(tmp_path / "o"), "--segmenter", str(tmp_path / "none.keras")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_segment_refuses_a_model_with_a_lambda_layer(synthetic, tmp_path, capsys):
    import keras

    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Lambda(lambda tensor: 1.0 - tensor, name="code_on_load")(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    out = tmp_path / "out"
    assert main(["segment", str(synthetic / "COVID" / "images"), "--out", str(out),
                 "--segmenter", str(tmp_path / "lambda.keras")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Lambda" in error[0] and not (out / "lungs.csv").exists()
