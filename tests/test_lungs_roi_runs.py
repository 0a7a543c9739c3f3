"""Lung-ROI runs: the ROI images, cached masks, ``train --roi`` recorded in the run and applied by
``evaluate``, ``predict`` and ``explain`` on their own."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from covid_tf.data.images import load_image, resize_image
from covid_tf.data.mask_files import find_mask
from covid_tf.lungs.roi import geometry, mask_table
from covid_tf.lungs.roi import inputs as ri
from covid_tf.lungs.roi.modes import JITTER_MODES
from covid_tf.lungs.segmentation.masks import read_mask


def _two_lungs(size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[10:30, 6:16] = True
    mask[10:30, 24:34] = True
    return mask


def _image(size: int = 40) -> np.ndarray:
    return (np.arange(size * size, dtype=np.float32).reshape(size, size, 1) / (size * size)).astype(np.float32)


def test_roi_images_of_each_mode_are_known_exactly():
    image, mask = _image(), _two_lungs()
    full, box = ri.roi_image(image, mask, ri.RoiSpec("none"), 20)
    assert box == (0, 0, 40, 40) and np.allclose(full, resize_image(image, 20))
    cropped, box = ri.roi_image(image, mask, ri.RoiSpec("lungs", margin=0.1), 20)
    assert box == geometry.lung_box(mask, 0.1) == (8, 3, 32, 37)
    np.testing.assert_allclose(cropped, geometry.crop_and_resize(image, box, 20))
    spec = ri.RoiSpec("lungs-masked", margin=0.0, dilation=0.0)
    masked, box = ri.roi_image(image, mask, spec, 28)
    assert box == (10, 6, 30, 34)
    # Crop 20 x 28 resized to 28 x 28: the columns between the lungs (16..24 of the image) are black.
    assert masked[:, 11:13].max() == 0.0 and masked[:, :9].min() > 0.0
    removed, box = ri.roi_image(image, mask, ri.RoiSpec("lungs-removed", dilation=0.0), 40)
    assert box == (0, 0, 40, 40)
    assert removed[mask].max() == 0.0 and np.allclose(removed[~mask], image[~mask])
    # No plausible lungs: the full image, whatever the mode.
    whole, box = ri.roi_image(image, None, spec, 20)
    assert box == (0, 0, 40, 40) and np.allclose(whole, resize_image(image, 20))


def test_jitter_of_radius_zero_equals_the_masked_image():
    image, mask = _image(), _two_lungs()
    for mode in JITTER_MODES:
        spec = ri.RoiSpec(mode, jitter=1)
        with_channel, _ = ri.roi_image(image, mask, spec, 32, mask_channel=True)
        plain, _ = ri.roi_image(image, mask, ri.RoiSpec(mode), 32)
        masks = with_channel[..., -1]
        assert set(np.unique(masks)) <= {0.0, 1.0}
        radius_zero = ri.jitter_transform(ri.RoiSpec(mode))(with_channel[None]).numpy()[0]
        np.testing.assert_allclose(radius_zero, plain, atol=1e-6)
        keep = masks if mode == "lungs-masked" else 1.0 - masks
        np.testing.assert_allclose(with_channel[..., :1] * keep[..., None], plain, atol=1e-6)
    # Jitter changes the masked area by at most the radius: some batch member differs from radius 0.
    spec = ri.RoiSpec("lungs-masked", jitter=2)
    with_channel, _ = ri.roi_image(np.ones((40, 40, 1), np.float32), mask, spec, 32, mask_channel=True)
    batch = np.repeat(with_channel[None], 16, axis=0)
    areas = ri.jitter_transform(spec, seed=1)(batch).numpy().sum(axis=(1, 2, 3))
    assert len(set(np.round(areas, 3))) > 1
    assert areas.min() >= with_channel[..., 1].sum() - 2 * 32 * 8 and areas.max() > with_channel[..., 1].sum()


class CountingSegmenter:
    """A stand-in segmenter: two lung rectangles on every image; counts the images it saw."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, batch, training=False):
        self.seen += len(batch)
        out = np.zeros((*batch.shape[:3], 1), np.float32)
        size = batch.shape[1]
        out[:, size // 4: 3 * size // 4, size // 8: 3 * size // 8] = 1.0
        out[:, size // 4: 3 * size // 4, 5 * size // 8: 7 * size // 8] = 1.0
        return out


def test_masks_come_from_the_dataset_else_the_segmenter_once(tmp_path, synthetic_data):
    paths = sorted(str(p) for p in (synthetic_data / "COVID" / "images").glob("*.png"))[:3]
    loose = tmp_path / "loose"
    loose.mkdir()
    copies = [str(shutil.copy(p, loose / f"x{i}.png")) for i, p in enumerate(paths)]
    segmenter, cache = CountingSegmenter(), tmp_path / "cache"
    table = mask_table.prepare_masks(paths + copies, cache_dir=cache, segmenter=segmenter)
    assert table["lung_mask_source"].tolist() == ["dataset"] * 3 + ["segmenter"] * 3
    assert segmenter.seen == 3 and table["roi_applied"].all()
    again = mask_table.prepare_masks(copies, cache_dir=cache, segmenter=segmenter)
    assert segmenter.seen == 3  # cached on disk: not segmented again
    assert again["mask_path"].tolist() == table["mask_path"].tolist()[3:]
    # Another modification time is another image: segmented afresh.
    shutil.copy(paths[1], copies[0])
    mask_table.prepare_masks(copies[:1], cache_dir=cache, segmenter=segmenter)
    assert segmenter.seen == 4
    none = mask_table.prepare_masks(copies, use_segmenter=False)
    assert (none["lung_mask_source"] == "none").all() and not none["roi_applied"].any()
    assert "used whole" in mask_table.fallback_note(none)


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    from covid_tf.synthetic.xray import generate_dataset

    root = tmp_path_factory.mktemp("roi_data") / "data"
    generate_dataset(root, classes=["COVID", "Normal"], per_class=6, size=48, seed=3, overwrite=True)
    return root


@pytest.fixture(scope="module")
def roi_run(synthetic_data, tmp_path_factory):
    from covid_tf.runs.config import TrainConfig
    from covid_tf.workflows.train import train_run

    run_dir = tmp_path_factory.mktemp("roi_run") / "run"
    cfg = TrainConfig(data=str(synthetic_data), image_size=32, epochs=1, batch_size=4, n_bootstrap=20,
                      precise_bn_images=0, roi="lungs-masked", roi_jitter=1)
    result = train_run(cfg, run_dir, verbose=0)
    return run_dir, result


def test_train_records_the_roi_and_its_masks(roi_run):
    run_dir, result = roi_run
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["roi"], saved["roi_jitter"], saved["roi_margin"]) == ("lungs-masked", 1, 0.1)
    table = pd.read_csv(run_dir / "roi.csv")
    assert list(table.columns) == list(mask_table.ROI_COLUMNS) and len(table) == 12
    assert (table["lung_mask_source"] == "dataset").all() and table["roi_applied"].all()
    assert result.roi_table is not None


def test_predict_applies_the_runs_roi(roi_run, synthetic_data, tmp_path):
    from covid_tf.runs.inference import load_model
    from covid_tf.workflows.predict import predict_images

    run_dir, _ = roi_run
    loaded = load_model(run_dir / "model.keras")
    assert loaded.roi == ri.RoiSpec("lungs-masked", jitter=1)
    paths = sorted(str(p) for p in (synthetic_data / "Normal" / "images").glob("*.png"))[:4]
    result = predict_images(run_dir / "model.keras", paths, tmp_path / "p.csv")
    table = pd.read_csv(result.out_path)
    by_hand = []
    for path in paths:  # the ROI image computed by hand from the dataset's mask
        mask = read_mask(find_mask(path))
        image, _ = ri.roi_image(load_image(path), mask, ri.RoiSpec("lungs-masked"), 32)
        by_hand.append(image)
    expected = np.asarray(loaded.model(np.stack(by_hand), training=False))
    np.testing.assert_allclose(table[["prob_COVID", "prob_Normal"]].to_numpy(), expected, atol=1e-5)
    full = np.asarray(loaded.model(np.stack([load_image(p, size=32) for p in paths]), training=False))
    assert not np.allclose(full, expected, atol=1e-5)  # the ROI made a difference
    assert table["roi_applied"].all() and "lung masks: 4 from the dataset" in result.roi_note


def test_evaluate_applies_the_runs_roi(roi_run, synthetic_data, tmp_path):
    from covid_tf.workflows.evaluate import evaluate_model

    run_dir, result = roi_run
    evaluation = evaluate_model(run_dir / "model.keras", synthetic_data, tmp_path / "eval",
                                split_file=run_dir / "split.csv", n_bootstrap=20)
    assert json.loads((tmp_path / "eval" / "config.json").read_text())["roi"] == "lungs-masked"
    # The same test metrics as the run's own evaluation, which fed the ROI images.
    assert evaluation.metrics["roc_auc"] == pytest.approx(result.metrics["test"]["roc_auc"])
    assert evaluation.metrics["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    assert any(note.startswith("lung masks: ") for note in evaluation.notes)


def test_crop_heatmaps_map_back_onto_the_full_image_exactly():
    from covid_tf.explain.lung_energy import LungInputs

    class Loaded:  # what LungInputs reads of a loaded model
        image_size, channels, roi = 40, 1, ri.RoiSpec("none")

    inputs = LungInputs(Loaded(), [], use_segmenter=False)
    box = geometry.lung_box(_two_lungs(), 0.1)  # (8, 3, 32, 37)
    mapped = inputs.on_full_image(np.ones((40, 40), np.float32), box, (40, 40))
    expected = np.zeros((40, 40), np.float32)
    expected[8:32, 3:37] = 1.0
    np.testing.assert_array_equal(mapped, expected)
    # The full box (no crop, or lungs-removed) leaves the heatmap as it is.
    heat = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    assert inputs.on_full_image(heat, (0, 0, 40, 40), (40, 40)) is heat


def test_explain_applies_the_roi_and_reports_lung_energy(roi_run, synthetic_data, tmp_path):
    from covid_tf.explain.lung_energy import class_lung_energy
    from covid_tf.lungs.energy import LUNG_COLUMNS, summarize, summary_line
    from covid_tf.runs.inference import load_model
    from covid_tf.workflows.explain import explain_images

    run_dir, _ = roi_run
    folder = synthetic_data / "COVID" / "images"
    result = explain_images(run_dir / "model.keras", [folder], tmp_path / "x", class_name="COVID")
    table = result.table
    assert set(LUNG_COLUMNS) <= set(table.columns) and (table["lung_mask_source"] == "dataset").all()
    ratio = table["energy_in_lungs"] / table["lung_area_fraction"]
    np.testing.assert_allclose(table["lung_energy_ratio"], ratio)
    # The same numbers as Grad-CAM on the ROI images by hand, mapped back onto the full image.
    loaded = load_model(run_dir / "model.keras")
    by_hand = class_lung_energy(loaded, table["path"].tolist(), 0, use_segmenter=False)
    np.testing.assert_allclose(table["energy_in_lungs"], by_hand["energy_in_lungs"], atol=1e-5)
    # Every image whose map carries any heat has some of it inside the lungs (an all-zero Grad-CAM map,
    # possible for a one-epoch model, has no defined share and is NaN, never 0 or a crash).
    measured = table["energy_in_lungs"].dropna()
    assert len(measured) >= len(table) // 2 and (measured > 0).all()
    line = summary_line(summarize(table))
    assert "nan" not in line.lower() and "ratio" in line


def test_mismatched_mask_folder_warns_and_never_gives_nan(roi_run, synthetic_data, tmp_path):
    from covid_tf.lungs.energy import summarize, summary_line
    from covid_tf.workflows.explain import explain_images

    run_dir, _ = roi_run
    masks = tmp_path / "masks"
    masks.mkdir()
    shutil.copy(next((synthetic_data / "COVID" / "masks").glob("*.png")), masks / "other-name.png")
    result = explain_images(run_dir / "model.keras", [synthetic_data / "COVID" / "images"], tmp_path / "x",
                            masks_dir=masks)
    assert any("no file in" in note and "named like the images" in note for note in result.notes)
    summary = summarize(result.table)
    assert summary["n"] == len(result.table)  # lung energy still measured: the images' own masks/
    assert "nan" not in summary_line(summary).lower()
    empty = summarize(result.table.assign(energy_in_lungs=np.nan, lung_mask_source="none"))
    assert empty["lung_energy_ratio"] is None and "not measured" in summary_line(empty)


def test_lung_energy_words_and_evaluate_summary(roi_run, synthetic_data, tmp_path):
    """evaluate measures the lung energy in its one pass, and writes metrics.json once, with it inside."""
    from covid_tf.lungs.energy import verdict
    from covid_tf.workflows.evaluate import evaluate_model

    assert verdict(1.05).startswith("no better than chance: the heat is not concentrated on the lungs")
    assert verdict(2.5) == "the heat is concentrated on the lungs"
    run_dir, _ = roi_run
    evaluation = evaluate_model(run_dir / "model.keras", synthetic_data, tmp_path / "eval", n_bootstrap=10,
                                lungs=False)
    summary = evaluation.metrics["lung_energy"]
    per_image = pd.read_csv(tmp_path / "eval" / "lung_energy.csv")
    assert len(per_image) == 6  # every COVID image is listed; the summary counts those with a defined share
    measured = int(per_image["energy_in_lungs"].notna().sum())
    assert summary["class"] == "COVID" and summary["n"] == measured >= 3 and summary["lung_energy_ratio"] > 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["lung_energy"]["lung_energy_ratio"] == summary["lung_energy_ratio"]
    assert "backbone" not in summary  # not a lung-attention model: its Grad-CAM layer is the backbone's own
    no_lungs = evaluate_model(run_dir / "model.keras", synthetic_data, tmp_path / "plain", n_bootstrap=10)
    assert "lung_energy" not in no_lungs.metrics and not (tmp_path / "plain" / "lung_energy.csv").exists()
