"""Splits: stratified, grouped (patients and duplicates), seeded, saved and loaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covid_tf.data.splits import load_split, make_split, save_split, split_leaks
from covid_tf.errors import CovidTfError


def frame_of(counts: dict[str, int], images_per_patient: int = 1) -> pd.DataFrame:
    rows = []
    for label, count in counts.items():
        for i in range(count):
            patient = f"{label}-{i // images_per_patient}"
            rows.append({"path": f"/{label}/{i}.png", "label": label, "patient_id": patient})
    return pd.DataFrame(rows)


def test_fractions_are_stratified_within_one_image_per_class():
    split = make_split(frame_of({"COVID": 101, "Normal": 57, "Viral": 23}), fractions=(0.7, 0.15, 0.15), seed=3)
    table = pd.crosstab(split["label"], split["split"])
    for label, size in {"COVID": 101, "Normal": 57, "Viral": 23}.items():
        for name, fraction in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
            assert abs(table.loc[label, name] - size * fraction) <= 1
    assert (split["split"] != "").all()


def test_counts_take_a_subset_in_class_proportion():
    split = make_split(frame_of({"COVID": 150, "Normal": 150}), counts=(160, 40, 20), seed=0)
    sizes = split["split"].value_counts()
    assert sizes["train"] == 160 and sizes["val"] == 40 and sizes["test"] == 20
    assert (split[split["split"] == "test"]["label"].value_counts() == 10).all()
    with pytest.raises(CovidTfError, match="only 300"):
        make_split(frame_of({"COVID": 150, "Normal": 150}), counts=(300, 40, 20))


def test_patients_and_duplicates_never_straddle_splits():
    frame = frame_of({"COVID": 120, "Normal": 120}, images_per_patient=4)
    frame["duplicate_group"] = np.arange(len(frame))
    frame.loc[[0, 50, 130], "duplicate_group"] = 9999  # the same picture under three patients
    split = make_split(frame, seed=7)
    assert split.groupby("patient_id")["split"].nunique().max() == 1
    assert split.loc[[0, 50, 130], "split"].nunique() == 1
    assert split_leaks(split) == []


def test_same_seed_same_split_other_seed_other_split():
    frame = frame_of({"COVID": 60, "Normal": 60})
    first, again, other = (make_split(frame, seed=s)["split"].tolist() for s in (1, 1, 2))
    assert first == again and first != other


def test_leaks_are_found_in_a_user_split():
    frame = frame_of({"COVID": 4}, images_per_patient=2)
    frame["split"] = ["train", "test", "train", "train"]
    leaks = split_leaks(frame)
    assert len(leaks) == 1 and leaks[0]["patients"] == ["COVID-0"] and leaks[0]["splits"] == ["test", "train"]


def test_save_and_load_round_trip(tmp_path):
    split = make_split(frame_of({"COVID": 10, "Normal": 10}), seed=0)
    save_split(split, tmp_path / "split.csv")
    loaded = load_split(tmp_path / "split.csv")
    assert loaded["split"].tolist() == split["split"].tolist()
    assert loaded["patient_id"].tolist() == split["patient_id"].tolist()
    (tmp_path / "bad.csv").write_text("path,label\n/a.png,COVID\n")
    with pytest.raises(CovidTfError, match="split"):
        load_split(tmp_path / "bad.csv")


@pytest.mark.realdata
def test_real_duplicate_groups_stay_in_one_split(radiography_dir):
    from covid_tf.data.discover import discover

    index = discover(radiography_dir)
    split = make_split(index.frame, seed=11)
    by_path = dict(zip(split["path"], split["split"]))
    for group in index.duplicate_groups:
        assert len({by_path[p] for p in group}) == 1
