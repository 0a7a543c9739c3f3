"""The lung U-Net, its training run and batched segmentation, on tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from covid_tf.lungs import augment, segment, train_segmenter, unet


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("lungs_synth")
    subprocess.run([sys.executable, "-m", "covid_tf", "synth", str(root), "--per-class", "6", "--size", "32"],
                   check=True, capture_output=True)
    return root


def test_unet_keeps_any_multiple_of_its_size():
    model = unet.build_unet(levels=2, base_filters=4, stem=2)
    assert unet.size_multiple(model) == 8
    for height, width in ((16, 16), (24, 40)):
        output = np.asarray(model(np.zeros((1, height, width, 1), np.float32), training=False))
        assert output.shape == (1, height, width, 1)
        assert output.min() >= 0.0 and output.max() <= 1.0


def test_augmentation_without_change_is_the_identity():
    ranges = augment.AugmentationRanges(scale=(1.0, 1.0), aspect=0.0, rotation_degrees=0.0, shear=0.0, shift=0.0,
                                        contrast=(1.0, 1.0), gamma=(1.0, 1.0), brightness=0.0, noise=0.0,
                                        blur_probability=0.0)
    image = np.random.default_rng(0).random((12, 20, 1)).astype(np.float32)
    mask = (image > 0.5).astype(np.float32)
    out_image, out_mask = augment.augment_pair(image, mask, ranges)
    np.testing.assert_allclose(out_image.numpy(), image, atol=1e-4)
    np.testing.assert_array_equal(out_mask.numpy(), mask)


def test_training_run_writes_model_metrics_and_figures(synthetic, tmp_path):
    out = tmp_path / "seg"
    code = train_segmenter.main([str(synthetic), "--out", str(out), "--image-size", "32", "--epochs", "1",
                                 "--batch-size", "4", "--base-filters", "4"])
    assert code == 0
    for name in ("model.keras", "history.csv", "split.csv", "metrics.json", "figures/test_worst.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"dice", "iou"}
    assert (out / "model.keras").stat().st_size < 4 * 1024 * 1024
    split = pd.read_csv(out / "split.csv")
    assert set(split["split"]) <= {"train", "val", "test"}

    masks_out = tmp_path / "masks"
    assert segment.main([str(synthetic / "COVID" / "images"), "--out", str(masks_out),
                         "--model", str(out / "model.keras"), "--size", "32"]) == 0
    table = pd.read_csv(masks_out / "lungs.csv")
    assert list(table.columns) == list(segment.LUNGS_COLUMNS) and len(table) == 6
    assert (masks_out / "COVID" / "masks" / "COVID-0001.png").is_file()


def test_segment_refuses_to_write_into_an_input_folder(synthetic):
    with pytest.raises(ValueError, match="inside the input folder"):
        segment.check_output_folder(synthetic / "COVID" / "out", [synthetic])
