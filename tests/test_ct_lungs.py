"""CT lung segmentation: Dice against the synthetic phantom's true lungs, on HU and on 8-bit slices; plausibility."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.ct.dicom import apply_window
from covid_tf.lungs import ct_lungs
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
