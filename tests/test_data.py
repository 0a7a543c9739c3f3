"""Dataset discovery: every layout, class mapping and selection, skipped files, duplicates."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from covid_tf.data.discover import detect_layout, discover, parse_class_map
from covid_tf.data.image_files import list_images
from covid_tf.errors import CovidTfError
from tests.helpers import make_class_folders, write_png


def test_class_folders_layout(tmp_path):
    make_class_folders(tmp_path, {"CT_COVID": 3, "CT_NonCOVID": 2})
    index = discover(tmp_path)
    assert index.layout == "folders"
    assert index.class_counts() == {"COVID": 3, "NonCOVID": 2}  # default mapping of the UCSD names
    assert index.labels.tolist() == [0, 0, 0, 1, 1]
    assert not index.skipped


def test_radiography_layout_with_masks(tmp_path):
    make_class_folders(tmp_path, {"COVID": 2, "Normal": 2}, nested="images")
    write_png(tmp_path / "COVID" / "masks" / "img_0.png")
    index = discover(tmp_path, class_map={"COVID": "Covid-19"}, classes=["Normal", "Covid-19"])
    assert index.layout == "radiography"
    assert index.class_names == ["Normal", "Covid-19"]
    with_mask = index.frame[index.frame["mask_path"] != ""]
    assert len(with_mask) == 1 and with_mask["path"].iloc[0].endswith(os.path.join("images", "img_0.png"))
    assert len(index.frame) == 4  # masks are not images of the dataset


def test_predefined_splits_layout(tmp_path):
    for split in ("train", "val", "test"):
        make_class_folders(tmp_path / split, {"COVID": 1, "Normal": 1})
    index = discover(tmp_path)
    assert index.layout == "splits"
    assert sorted(index.frame["split"].unique()) == ["test", "train", "val"]


def test_csv_layout_reports_missing_files(tmp_path):
    make_class_folders(tmp_path / "imgs", {"a": 2})
    pd.DataFrame(
        {"path": ["imgs/a/img_0.png", "imgs/a/img_1.png", "imgs/a/gone.png"], "label": ["COVID", "Normal", "COVID"],
         "patient_id": ["p1", "p1", "p2"], "split": ["train", "test", "val"]}
    ).to_csv(tmp_path / "labels.csv", index=False)
    index = discover(tmp_path / "labels.csv")
    assert index.layout == "csv" and detect_layout(tmp_path) == "csv"
    assert index.frame["patient_id"].tolist() == ["p1", "p1"]
    assert index.frame["split"].tolist() == ["train", "test"]
    assert len(index.skipped) == 1 and "missing" in index.skipped[0].reason


def test_bad_files_are_skipped_with_reasons(tmp_path):
    make_class_folders(tmp_path, {"COVID": 2, "Normal": 2})
    (tmp_path / "COVID" / "empty.png").write_bytes(b"")
    (tmp_path / "COVID" / "text.png").write_text("hello")
    (tmp_path / "Normal" / "notes.txt").write_text("a note")
    index = discover(tmp_path)
    reasons = {os.path.basename(s.path): s.reason for s in index.skipped}
    assert "empty" in reasons["empty.png"] and "not an image" in reasons["text.png"]
    assert "extension" in reasons["notes.txt"]
    assert index.class_counts() == {"COVID": 2, "Normal": 2}


def test_symlink_loop_does_not_hang(tmp_path):
    make_class_folders(tmp_path, {"COVID": 1, "Normal": 1})
    os.symlink(tmp_path / "COVID", tmp_path / "COVID" / "loop")
    os.symlink(tmp_path / "COVID" / "self.png", tmp_path / "COVID" / "self.png")
    index = discover(tmp_path)
    assert index.class_counts() == {"COVID": 1, "Normal": 1}
    assert any("self.png" in s.path for s in index.skipped)


def test_duplicates_are_grouped(tmp_path):
    make_class_folders(tmp_path, {"COVID": 3, "Normal": 3})
    copy = (tmp_path / "COVID" / "img_0.png").read_bytes()
    (tmp_path / "Normal" / "copy of img_0.png").write_bytes(copy)
    index = discover(tmp_path)
    assert len(index.duplicate_groups) == 1 and len(index.duplicate_groups[0]) == 2
    groups = index.frame.groupby("duplicate_group").size()
    assert (groups == 2).sum() == 1


def test_unknown_class_and_bad_map_are_clear_errors(tmp_path):
    make_class_folders(tmp_path, {"COVID": 1})
    with pytest.raises(CovidTfError, match="Normal"):
        discover(tmp_path, classes=["Normal"])
    with pytest.raises(CovidTfError, match="FOLDER=CLASS"):
        parse_class_map("CT_COVID")
    with pytest.raises(CovidTfError, match="no such folder"):
        discover(tmp_path / "absent")


def test_empty_class_folder_is_reported(tmp_path):
    make_class_folders(tmp_path, {"COVID": 2})
    (tmp_path / "Normal").mkdir()
    (tmp_path / "Normal" / "broken.png").write_bytes(b"")
    index = discover(tmp_path)
    assert any("no readable images" in s.reason for s in index.skipped)


def test_list_images_expands_folders_and_skips(tmp_path):
    make_class_folders(tmp_path, {"x": 3})
    (tmp_path / "x" / "bad.png").write_bytes(b"")
    paths, skipped = list_images([tmp_path, tmp_path / "missing.png"])
    assert len(paths) == 3 and len(skipped) == 2
    assert np.all([os.path.isabs(p) for p in paths])


@pytest.mark.realdata
def test_real_radiography_subset(radiography_dir):
    index = discover(radiography_dir)
    assert index.class_counts() == {"COVID": 1000, "Normal": 1000, "Viral Pneumonia": 400}
    assert not index.skipped
    assert len(index.duplicate_groups) >= 5  # the subset holds real duplicate pictures
    assert all(len(group) >= 2 for group in index.duplicate_groups)


@pytest.mark.realdata
def test_real_ct_subset_loads_every_file(ct_dir):
    index = discover(ct_dir)
    assert not index.skipped
    assert len(index.frame) == 244 + 278
    assert {"RGBA", "RGB"} <= set(index.frame["mode"])
