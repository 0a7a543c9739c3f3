"""One image discovery for every command: ``list_images`` (predict, explain, segment) finds the same files as
``discover`` (train, evaluate, occlusion, stress) under the same rules for links and non-image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from covid_tf.data.discover import discover
from covid_tf.data.image_files import list_images, walk_files
from covid_tf.data.images import save_png


def _images(folder, count, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        save_png(rng.random((24, 24)), folder / f"img_{index}.png")


@pytest.fixture
def linked_dataset(tmp_path):
    """A Radiography-layout dataset whose ``COVID/images`` is a link to a folder elsewhere, with lung masks."""
    _images(tmp_path / "elsewhere" / "covid", 3, seed=1)
    data = tmp_path / "data"
    (data / "COVID").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere" / "covid", data / "COVID" / "images")
    _images(data / "Normal" / "images", 3, seed=2)
    _images(data / "Normal" / "masks", 3, seed=3)
    os.symlink(data, data / "Normal" / "images" / "back")  # a link back into the dataset: never walked
    return data


def test_a_linked_images_folder_gives_the_same_images_to_every_command(linked_dataset):
    index = discover(linked_dataset)
    listed, skipped = list_images([linked_dataset])
    assert len(listed) == 6 and skipped == []
    assert sorted(listed) == sorted(str(Path(path).resolve()) for path in index.frame["path"])
    assert not any("/masks/" in path or "/back/" in path for path in listed)


def test_a_datasets_csv_is_no_skipped_image_and_other_files_are(linked_dataset):
    rows = [f"{folder}/images/img_{i}.png,{folder}" for folder in ("COVID", "Normal") for i in range(3)]
    (linked_dataset / "metadata.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (linked_dataset / "Normal" / "images" / "notes.txt").write_text("not an image\n")
    listed, skipped = list_images([linked_dataset])
    assert len(listed) == 6
    assert [(os.path.basename(item.path), item.reason) for item in skipped] == [
        ("notes.txt", "not an image file extension (.txt)")]
    assert len(discover(linked_dataset).frame) == 6  # the csv layout reads the same six images


def test_a_folder_link_that_loops_is_walked_once(tmp_path):
    _images(tmp_path / "outside", 2, seed=4)
    os.symlink(tmp_path / "outside", tmp_path / "outside" / "again")
    os.symlink(tmp_path / "outside", tmp_path / "outside" / "twice")
    given = tmp_path / "given"
    given.mkdir()
    os.symlink(tmp_path / "outside", given / "linked")
    assert [path.name for path in walk_files(given)] == ["img_0.png", "img_1.png"]
