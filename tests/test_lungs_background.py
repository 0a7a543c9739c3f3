"""Background randomisation for lung-attention training: the lungs and the mask stay, the outside is filled."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.errors import CovidTfError
from covid_tf.lungs.roi.background import background_transform, grow_masks
from covid_tf.runs.config import TrainConfig


def _batch(count: int = 6, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.random((count, size, size, 1)).astype(np.float32)
    masks = np.zeros((count, size, size, 1), np.float32)
    masks[:, 8:24, 4:12] = 1.0
    masks[:, 8:24, 20:28] = 1.0
    masks[-1] = 1.0  # an image without plausible lungs: its mask is all ones, nothing is outside
    return np.concatenate([images, masks], axis=-1)


def test_probability_zero_changes_nothing():
    batch = _batch()
    np.testing.assert_array_equal(np.asarray(background_transform(1, 0.0, 2)(batch)), batch)


def test_the_lungs_and_the_mask_stay_and_the_outside_is_filled():
    batch = _batch()
    out = np.asarray(background_transform(1, 1.0, 0, seed=3)(batch))
    lungs = batch[..., 1] > 0
    np.testing.assert_array_equal(out[..., 1], batch[..., 1])  # the mask channel is the model's: untouched
    np.testing.assert_array_equal(out[..., 0][lungs], batch[..., 0][lungs])
    outside = ~lungs[:-1]
    assert not np.allclose(out[:-1, ..., 0][outside], batch[:-1, ..., 0][outside])
    np.testing.assert_array_equal(out[-1], batch[-1])  # all lung: nothing to fill


def test_dilation_keeps_a_rim_around_the_lungs():
    batch = _batch()
    out = np.asarray(background_transform(1, 1.0, 2, seed=3)(batch))
    rim = (slice(None, -1), slice(8, 24), 12)  # 1 px right of the left lung: inside the 2 px dilation
    np.testing.assert_array_equal(out[rim + (0,)], batch[rim + (0,)])


@pytest.mark.parametrize("radius", [0, 1, 4])
def test_grow_masks_is_a_square_maximum_filter_for_dilation_and_erosion(radius):
    from scipy import ndimage

    masks = (np.random.default_rng(radius).random((3, 20, 24, 1)) > 0.8).astype(np.float32)
    width = 2 * radius + 1
    expected = ndimage.maximum_filter(masks, size=(1, width, width, 1), mode="constant", cval=0.0)
    np.testing.assert_array_equal(np.asarray(grow_masks(masks, radius)), expected)
    eroded = -np.asarray(grow_masks(-masks, radius))
    np.testing.assert_array_equal(eroded, ndimage.minimum_filter(masks, size=(1, width, width, 1), mode="nearest"))


def test_the_same_seed_gives_the_same_fills():
    batch = _batch()
    first = np.asarray(background_transform(1, 0.5, 1, seed=7)(batch))
    again = np.asarray(background_transform(1, 0.5, 1, seed=7)(batch))
    np.testing.assert_array_equal(first, again)


def test_the_setting_is_checked_before_anything_runs(tmp_path):
    with pytest.raises(CovidTfError, match="probability"):
        TrainConfig(data=str(tmp_path), roi="lungs-attention", roi_background=1.5)
    with pytest.raises(CovidTfError, match="needs --roi lungs-attention"):
        TrainConfig(data=str(tmp_path), roi="none", roi_background=0.5)
    assert TrainConfig(data=str(tmp_path), roi="auto", roi_background=0.5).roi_background == 0.5
    with pytest.raises(CovidTfError, match="--roi-dilation"):
        TrainConfig(data=str(tmp_path), roi="auto", roi_dilation=1.5)


def test_the_command_line_sets_the_dilation_of_the_randomised_outside(tmp_path):
    """``--roi-dilation`` reaches the config (0: randomise right up to the lungs' outline); the default is kept."""
    from covid_tf.cli import build_parser
    from covid_tf.cli.commands.train import config_from_args
    from covid_tf.lungs.roi.modes import DEFAULT_DILATION

    parser = build_parser()
    base = ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--roi-background", "0.5"]
    assert config_from_args(parser.parse_args([*base, "--roi-dilation", "0"])).roi_dilation == 0.0
    assert config_from_args(parser.parse_args(base)).roi_dilation == DEFAULT_DILATION


def test_auto_adds_background_randomisation_to_lung_attention_only(tmp_path, monkeypatch):
    """The default (--roi auto) chose lung attention with half the backgrounds randomised (docs/LUNG_ROI.md)."""
    import pandas as pd

    from covid_tf.lungs.roi.modes import AUTO_BACKGROUND
    from covid_tf.workflows import train

    split = pd.DataFrame({"path": ["a.png"], "label": ["COVID"], "split": ["train"], "mask_path": [""]})
    for found, given, expected in (("lungs-attention", None, AUTO_BACKGROUND), ("none", None, 0.0),
                                   ("lungs-attention", 0.2, 0.2), ("lungs-attention", 0.0, 0.0)):
        monkeypatch.setattr(train, "resolve_auto", lambda *args, found=found, **kwargs: (found, "note"))
        cfg = TrainConfig(data=str(tmp_path), roi="auto", roi_background=given)
        resolved = train.resolve_run_config(cfg, split, ["COVID", "Normal"])
        assert (resolved.roi_resolved, resolved.roi_background) == (found, expected)
        assert cfg.roi_background == given and cfg.roi_resolved is None  # the caller's config is not changed
    explicit = train.resolve_run_config(TrainConfig(data=str(tmp_path), roi="lungs-attention"), split, ["C", "N"])
    assert explicit.roi_background == 0.0
