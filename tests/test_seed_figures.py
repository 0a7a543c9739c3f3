"""The figures and table that set a seed's runs beside ours (covid_tf.figures.seeds, notebooks 07 and 08)."""

from __future__ import annotations

import numpy as np
import pytest

from covid_tf.figures import seeds

METRICS = {"accuracy": 0.75, "balanced_accuracy": 0.7, "roc_auc": 0.8, "n": 40,
           "ci95": {"accuracy": [0.6, 0.88], "roc_auc": [0.65, 0.9]}}


def test_seed_table_sets_the_seeds_accuracy_beside_ours_with_its_interval():
    table = seeds.seed_table({"small CNN": METRICS}, {"small CNN": 0.80, "unused": 0.9})
    row = table.loc["small CNN"]
    assert (row["seed accuracy"], row["accuracy"], row["accuracy_low"], row["accuracy_high"]) == (0.8, 0.75, 0.6,
                                                                                                  0.88)
    with pytest.raises(ValueError, match="no seed value"):
        seeds.seed_table({"ResNet18": METRICS}, {"small CNN": 0.8})


def test_confusion_matrices_figure_has_one_panel_per_run_and_checks_shapes():
    figure = seeds.confusion_matrices_figure({"a": [[3, 1], [0, 4]], "b": [[2, 2], [1, 3]]}, ["COVID", "Normal"])
    assert [axis.get_title() for axis in figure.axes] == ["a", "b"]
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert "0.75\n(3)" in texts and "1.00\n(4)" in texts  # row-normalised, counts in brackets
    with pytest.raises(ValueError, match="2x2"):
        seeds.confusion_matrices_figure({"a": np.eye(3)}, ["COVID", "Normal"])


def test_cam_mask_figure_outlines_the_region_above_the_threshold():
    images = np.full((2, 32, 32, 1), 0.5, dtype=np.float32)
    heatmaps = np.zeros((2, 8, 8), dtype=np.float32)
    heatmaps[0, 2:4, 2:4] = 1.0  # a hot quarter of the first map's top-left, nothing in the second
    lesion = np.zeros((32, 32), dtype=bool)
    lesion[20:28, 20:28] = True
    figure = seeds.cam_mask_figure(images, heatmaps, ["hot", "cold"], lesions=[lesion, None])
    first, second = figure.axes[1].images[0].get_array(), figure.axes[3].images[0].get_array()
    red = (first[..., 0] == 255) & (first[..., 1] == 0)
    assert red[:16, :16].any() and not red[16:, 16:].any()  # the 0.85 outline is where the heat is
    green = (first[..., 1] == 200) & (first[..., 0] == 0)
    assert green[18:30, 18:30].any() and not green[:16, :16].any()  # the lesion's outline
    assert not ((second[..., 0] == 255) & (second[..., 1] == 0)).any()  # no heat, no region
    assert figure.axes[3].get_title().endswith("0% of the image")
    with pytest.raises(ValueError, match="as many"):
        seeds.cam_mask_figure(images, heatmaps[:1], ["one", "two"])
