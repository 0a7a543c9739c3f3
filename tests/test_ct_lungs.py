"""CT lung segmentation: Dice against the synthetic phantom's true lungs, on HU and on 8-bit slices; plausibility."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from covid_tf.ct.dicom import apply_window
from covid_tf.lungs.segmentation import ct_lungs
from covid_tf.synthetic.ct_phantom import Patient


def dice(found: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (found & truth).sum() / max(found.sum() + truth.sum(), 1))


@pytest.mark.parametrize("label", ["Normal", "COVID", "CAP"])
@pytest.mark.parametrize("hounsfield", [True, False])
def test_dice_against_the_phantoms_true_lungs(label, hounsfield):
    scores, plausible = [], []
    for index in range(3):
        patient = Patient(np.random.default_rng(index), label, 96)
        for height in np.linspace(0.05, 0.95, 5):
            hu, _ = patient.slice_hu(float(height))
            image = hu if hounsfield else apply_window(hu)  # the 8-bit lung-window PNG
            mask = ct_lungs.segment_ct_slice(image, hu=hounsfield)
            scores.append(dice(mask, patient.lung_mask(float(height))))
            plausible.append(ct_lungs.describe_ct_mask(mask).plausible)
    # Ground glass and dense CAP consolidation at the chest wall are brighter than the air threshold: a classical
    # segmenter leaves part of them out (measured: Normal 0.999, COVID 0.97-0.98, CAP 0.94).
    assert np.mean(scores) >= 0.9
    assert min(scores) >= 0.7 and all(plausible)


def test_implausible_masks_are_flagged_with_a_reason():
    empty = ct_lungs.describe_ct_mask(np.zeros((64, 64), bool))
    assert not empty.plausible and empty.reason == "no lungs found"
    one = np.zeros((64, 64), bool)
    one[10:50, 5:30] = True
    assert "expected 2" in ct_lungs.describe_ct_mask(one).reason
    stacked = np.zeros((64, 64), bool)
    stacked[5:25, 20:40] = stacked[35:60, 20:40] = True  # one above the other
    assert not ct_lungs.describe_ct_mask(stacked).plausible
    pair = np.zeros((64, 64), bool)
    pair[10:50, 5:25] = pair[10:50, 38:60] = True
    assert ct_lungs.describe_ct_mask(pair).plausible


def test_an_x_ray_like_or_blank_image_gives_no_plausible_lungs():
    assert not ct_lungs.segment_ct_slice(np.zeros((64, 64), np.uint8)).any()
    with pytest.raises(ValueError, match="shape"):
        ct_lungs.segment_ct_slice(np.zeros((2, 3, 4, 5)))


@pytest.fixture(scope="module")
def ct_slices(tmp_path_factory):
    """PNG slices (lung window) of a small synthetic CT set, with its label CSV."""
    from covid_tf.synthetic import ct as synthetic_ct
    from covid_tf.workflows import ct

    root = tmp_path_factory.mktemp("ct_lungs")
    synthetic_ct.generate_ct_dataset(root / "dicom", classes=("COVID", "Normal"), patients_per_class=2, slices=4,
                                     size=64, seed=5, extent=(0.1, 0.5))
    return ct.convert_ct(root / "dicom", root / "png")


def test_segment_command_with_modality_ct_writes_plausible_ct_masks(ct_slices, tmp_path, capsys):
    from covid_tf.cli import main

    assert main(["segment", str(ct_slices.root), "--out", str(tmp_path / "masks"), "--modality", "ct"]) == 0
    table = pd.read_csv(tmp_path / "masks" / "lungs.csv")
    assert len(table) == len(ct_slices.table) and table["plausible"].all()
    assert (table["components"] == 2).all() and "segmented" in capsys.readouterr().out


class NoXrayLungs:
    """A stand-in X-ray segmenter that finds no lungs, as the X-ray U-Net on real CT slices (3 %). (On the phantom's
    clean 64 px slices it finds plausible X-ray lungs, and auto keeps lungs-attention with its masks.)"""

    def __call__(self, batch, training=False):
        return np.zeros((*batch.shape[:3], 1), np.float32)


def test_roi_auto_chooses_ct_lungs_when_the_xray_segmenter_finds_none(ct_slices, tmp_path):
    from covid_tf.lungs.roi import inputs as roi_inputs
    from covid_tf.lungs.roi import mask_table
    from covid_tf.lungs.roi.modes import CT_ATTENTION_MODE

    paths = [str(ct_slices.root / path) for path in ct_slices.table["path"]]
    mode, note = roi_inputs.resolve_auto(paths, seed=0, segmenter=NoXrayLungs(), cache_dir=tmp_path / "cache")
    assert mode == CT_ATTENTION_MODE and "CT lungs on 100%" in note
    masks = mask_table.prepare_masks(paths[:3], cache_dir=tmp_path / "cache", modality="ct")
    assert masks["roi_applied"].all() and masks["lung_mask_source"].eq("segmenter").all()


def test_ct_lung_attention_trains_with_ct_masks(ct_slices, tmp_path):
    from covid_tf.lungs.roi.modes import CT_ATTENTION_MODE
    from covid_tf.workflows import ct

    result = ct.train_slices(ct_slices.csv_path, tmp_path / "run", model="small", roi=CT_ATTENTION_MODE, image_size=32,
                             epochs=1, batch_size=8, split_fractions=(2, 1, 1), n_bootstrap=5, verbose=0,
                             figures=False, augmentation="none")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["roi"] == CT_ATTENTION_MODE and result.model.inputs[0].shape[-1] == 2  # the image and its lungs
    roi_table = pd.read_csv(tmp_path / "run" / "roi.csv")
    assert roi_table["roi_applied"].all()

    # The counterfactual lung check of a CT run finds the lungs with the CT segmenter (the run's modality).
    from covid_tf.workflows.occlusion import run_occlusion

    checked = run_occlusion(tmp_path / "run" / "model.keras", ct_slices.csv_path, tmp_path / "occlusion",
                            fills=["blur"], n_bootstrap=5)
    summary = json.loads((tmp_path / "occlusion" / "occlusion.json").read_text())
    assert summary["modality"] == "ct" and summary["n"] > 0 and summary["lung_mask_sources"] == {
        "segmenter": summary["n_images"]}
    assert checked.summary["results"]["lungs_filled"]["blur"]["n"] == summary["n"]

    # explain and evaluate --lungs measure (and feed the attention model) the CT segmenter's lungs too.
    from covid_tf.explain.lung_energy import LungInputs
    from covid_tf.runs.inference import load_model

    paths = pd.read_csv(tmp_path / "run" / "split.csv")["path"].head(3).tolist()
    masks = LungInputs(load_model(tmp_path / "run" / "model.keras"), paths).table["mask_path"]
    assert masks.str.endswith("-ct.png").all(), masks.tolist()


@pytest.mark.realdata
def test_roi_auto_chooses_ct_lungs_on_the_ucsd_slices(ct_dir, tmp_path):
    from covid_tf.data import discover
    from covid_tf.lungs.roi import inputs as roi_inputs
    from covid_tf.lungs.roi.modes import CT_ATTENTION_MODE

    paths = discover.discover(ct_dir).frame["path"].tolist()
    mode, note = roi_inputs.resolve_auto(paths, seed=0, cache_dir=tmp_path / "cache")
    assert mode == CT_ATTENTION_MODE, note  # measured: X-ray lungs on 6 % of 64, CT lungs on 92 %


def test_ct_slices_are_two_toned_and_x_rays_are_not(ct_slices, tmp_path):
    from covid_tf.data.images import load_image
    from covid_tf.synthetic.xray import generate_dataset

    for path in ct_slices.table["path"]:
        assert ct_lungs.looks_like_ct(load_image(ct_slices.root / path, channels=1))
    generate_dataset(tmp_path / "xray", classes=["COVID", "Normal"], per_class=4, size=48, seed=5, overwrite=True)
    for path in sorted((tmp_path / "xray").glob("*/images/*.png")):
        assert not ct_lungs.looks_like_ct(load_image(path, channels=1))
