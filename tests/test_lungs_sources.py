"""Several mask sources for ``segment-train``: reading, per-source splits, scores, flag counts and
leave-one-source-out, on tiny synthetic films (and the shared adult masks when they are there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covid_tf.cli import main
from covid_tf.errors import CovidTfError
from covid_tf.lungs.segmentation import scoring
from covid_tf.lungs.segmentation import sources as mask_sources
from covid_tf.lungs.segmentation import training as train_segmenter
from covid_tf.lungs.segmentation.segmenter import SHIPPED_MODEL
from covid_tf.workflows import segment_train
from tests.helpers import write_png

SIZE = 32
ADULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lung-masks-adult"


def film(seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A bright film with two dark lungs (uint8) and their 0/255 mask; each seed's background differs (so
    no two films are near-duplicates)."""
    import cv2

    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    top, bottom = size // 5, size - size // 6 - int(rng.integers(0, 3))
    mask[top:bottom, size // 8 : size // 2 - 2] = 255
    mask[top:bottom, size // 2 + 2 : size - size // 8] = 255
    background = cv2.resize(rng.uniform(120, 250, (4, 4)).astype(np.float32), (size, size))
    image = np.where(mask > 0, 50, background) + rng.integers(0, 20, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def image_mask_folder(root: Path, count: int, first_seed: int = 0) -> Path:
    """``root/images/*.png`` and ``root/masks/*.png`` (the layout of lung-masks-adult/jsrt)."""
    for index in range(count):
        image, mask = film(first_seed + index)
        write_png(root / "images" / f"film{index}.png", image)
        write_png(root / "masks" / f"film{index}.png", mask)
    return root


def test_sources_are_named_and_two_names_are_refused(tmp_path):
    assert mask_sources.parse_source(str(tmp_path / "jsrt")) == mask_sources.MaskSource("jsrt", tmp_path / "jsrt")
    assert mask_sources.parse_source(f"adults={tmp_path}/a").name == "adults"
    with pytest.raises(CovidTfError, match="two sources are named jsrt"):
        mask_sources.parse_sources([f"jsrt={tmp_path}/a", f"{tmp_path}/jsrt"])
    with pytest.raises(CovidTfError, match="NAME=PATH"):
        mask_sources.parse_source("a,b=x")


def test_each_source_is_split_on_its_own_and_keeps_its_name(tmp_path):
    first = image_mask_folder(tmp_path / "one", 10)
    second = image_mask_folder(tmp_path / "two", 20, first_seed=100)
    sources = mask_sources.parse_sources([str(first), f"other={second}"])
    frame = mask_sources.split_sources(sources)
    counts = frame.groupby(["source", "split"]).size().to_dict()
    assert counts == {("one", "train"): 7, ("one", "val"): 2, ("one", "test"): 1,
                      ("other", "train"): 14, ("other", "val"): 3, ("other", "test"): 3}
    assert frame["patient_id"].str.startswith(("one/", "other/")).all()
    # Adding a source does not move the images of another one.
    alone = mask_sources.split_sources(sources[:1])
    assert alone.set_index("path")["split"].equals(frame[frame["source"] == "one"].set_index("path")["split"])


def test_a_source_without_masks_is_one_clear_error(tmp_path):
    write_png(tmp_path / "bare" / "images" / "a.png")
    (tmp_path / "bare" / "masks").mkdir()
    with pytest.raises(CovidTfError, match=r"bare: no image has a lung mask \(source bare\)"):
        mask_sources.read_source(mask_sources.parse_source(str(tmp_path / "bare")))


def test_flag_counts_count_failures_and_good_masks_that_are_flagged():
    scores = pd.DataFrame({"dice": [0.0, 0.7, 0.85, 0.95, 0.97], "plausible": [False, True, False, False, True]})
    assert scoring.flag_counts(scores) == {"failures": 2, "failures_flagged": 1, "good": 2, "good_flagged": 1}


def test_a_fold_starts_afresh_when_init_saw_the_source_it_leaves_out():
    options = train_segmenter.SegmenterOptions(init="shipped.keras", init_seen=("pediatric",))
    assert train_segmenter.fold_options(options, "pediatric").init is None
    assert train_segmenter.fold_options(options, "jsrt").init == "shipped.keras"


def test_init_of_another_shape_is_refused(tmp_path):
    options = train_segmenter.SegmenterOptions(image_size=32, levels=2, init=None)
    with pytest.raises(CovidTfError, match="do not match"):
        # The shipped segmenter has three levels.
        train_segmenter.initial_model(train_segmenter.SegmenterOptions(
            image_size=32, levels=2, init=str(SHIPPED_MODEL)))
    assert train_segmenter.initial_model(options).count_params() > 0


def test_leave_one_source_out_scores_every_image_of_the_source_left_out(tmp_path):
    first = image_mask_folder(tmp_path / "one", 6)
    second = image_mask_folder(tmp_path / "two", 6, first_seed=50)
    out = tmp_path / "run"
    assert main(["segment-train", str(first), str(second), "--out", str(out), "--image-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--levels", "1", "--base-filters", "4", "--stem", "1",
                 "--leave-one-source-out", "--folds", "two", "--no-final"]) == 0  # one fold: training is slow
    table = pd.read_csv(out / "loso.csv")
    assert table["left_out"].tolist() == ["two"] and table["n"].tolist() == [6]
    assert table["started_from"].tolist() == ["random weights"] and table["dice_mean"].between(0, 1).all()
    scores = pd.read_csv(out / "without-two" / "scores.csv")
    assert set(scores["source"]) == {"two"} and len(scores) == 6
    assert (out / "without-two" / "model.keras").is_file() and not (out / "without-one").exists()
    assert not (out / "model.keras").exists()
    assert json.loads((out / "loso.json").read_text())["two"]["dice"]["n"] == 6


@pytest.mark.skipif(not (ADULT / "jsrt" / "masks").is_dir(), reason="the shared adult lung masks are not here")
def test_the_shipped_segmenter_scores_a_handful_of_adult_films(tmp_path):
    # Reads the jsrt layout (images/ + masks/) and scores five films end to end (no training).
    folder = tmp_path / "jsrt"
    for path in sorted((ADULT / "jsrt" / "images").glob("*.png"))[:5]:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        (folder / "images" / path.name).symlink_to(path)
        (folder / "masks" / path.name).symlink_to(ADULT / "jsrt" / "masks" / path.name)
    metrics = segment_train.score_segmenter([folder], tmp_path / "out", None,
                                            train_segmenter.SegmenterOptions(image_size=256))
    summary = metrics["sources"]["jsrt"]["all"]
    assert summary["dice"]["n"] == 5 and summary["dice"]["median"] > 0.8
    assert len(pd.read_csv(tmp_path / "out" / "scores.csv")) == 5


def test_cached_segmenter_masks_are_keyed_by_the_shipped_segmenter(tmp_path, monkeypatch):
    from covid_tf.lungs.roi import mask_table

    image = write_png(tmp_path / "a.png")
    first = mask_table.cache_key(image)
    assert mask_table.cache_key(image) == first and len(mask_table.segmenter_fingerprint()) == 12
    monkeypatch.setattr(mask_table, "segmenter_fingerprint", lambda: "another file")
    assert mask_table.cache_key(image) != first
