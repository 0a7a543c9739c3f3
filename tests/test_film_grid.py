"""The overlap check's grid (:mod:`covid_tf.data.film_grid`) and what a decoding pass makes for it."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from covid_tf.data import film_grid
from covid_tf.data.discover import discover
from covid_tf.data.film_frame import THUMBNAIL, frame_thumbnail
from covid_tf.data.splits import make_split
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows.train import training_fingerprints


def _smooth_thumbnails(count: int, seed: int = 0) -> np.ndarray:
    """Random images with a film's mix of shading and detail."""
    rng = np.random.default_rng(seed)
    noise = rng.random((count, THUMBNAIL, THUMBNAIL)).astype(np.float32) * 255.0
    return np.stack([cv2.GaussianBlur(image, (0, 0), 2.0) for image in noise])


def _cell_means_by_hand(image: np.ndarray, framing: film_grid.Framing) -> np.ndarray:
    """(GRID, GRID) means of each cell of the framing's window, pixel by pixel (partly covered pixels weighted)."""
    def weights(centre: float, size: float) -> np.ndarray:
        edges = [(centre - size / 2 + size * k / film_grid.GRID) * THUMBNAIL for k in range(film_grid.GRID + 1)]
        matrix = np.zeros((film_grid.GRID, THUMBNAIL))
        for cell, pixel in itertools.product(range(film_grid.GRID), range(THUMBNAIL)):
            matrix[cell, pixel] = max(0.0, min(edges[cell + 1], pixel + 1) - max(edges[cell], pixel))
        return matrix / matrix.sum(axis=1, keepdims=True)

    rows, columns = weights(framing.centre_y, framing.height), weights(framing.centre_x, framing.width)
    return rows @ image @ columns.T


def test_the_cells_are_those_of_the_blurred_thumbnail() -> None:
    """The blur folded into the sampling weights gives what blurring the thumbnail first gives."""
    thumbnails = _smooth_thumbnails(3)
    framings = [film_grid.STORED_FRAMING, film_grid.FRAMINGS[0], film_grid.FRAMINGS[-1]]
    cells = film_grid.window_cells(film_grid.as_pixels(thumbnails), framings)
    for image, per_framing in zip(thumbnails, cells):
        blurred = cv2.GaussianBlur(image, (0, 0), film_grid.BLUR_SIGMA, borderType=cv2.BORDER_REFLECT_101)
        for framing, found in zip(framings, per_framing):
            expected = _cell_means_by_hand(blurred.astype(np.float64), framing).ravel()
            np.testing.assert_allclose(found, expected, atol=0.05)  # of 255 grey levels


def test_the_coarse_search_sees_the_coarse_blocks_of_the_full_grid() -> None:
    thumbnails = _smooth_thumbnails(4, seed=1)
    pixels = film_grid.as_pixels(thumbnails)
    fast = film_grid.coarse_query(pixels)
    full = film_grid.coarse_blocks(film_grid.query_descriptors(thumbnails))
    assert fast.shape == full.shape == (4, len(film_grid.FRAMINGS), film_grid.COARSE**2)
    assert (np.sum(fast * full, axis=-1) > 0.99).all()  # both standardised: the correlation


def test_every_framing_is_one_step_from_a_searched_one() -> None:
    """The first search's framings leave no framing more than one step away in size and in each shift."""
    sizes = sorted({f.width for f in film_grid.FRAMINGS})
    step = film_grid.MAX_CROP / 2

    def place(framing: film_grid.Framing) -> np.ndarray:
        return np.array([sizes.index(framing.width), (framing.centre_x - 0.5) / step, (framing.centre_y - 0.5) / step])

    searched = np.stack([place(film_grid.FRAMINGS[k]) for k in film_grid.SEARCH_FRAMINGS])
    assert len(searched) < len(film_grid.FRAMINGS) / 4
    for framing in film_grid.FRAMINGS:
        assert np.abs(searched - place(framing)).max(axis=1).min() <= 1 + 1e-9


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("readings") / "data"
    generate_dataset(data, classes=("COVID", "Normal"), per_class=6, size=64, seed=0, patients_per_class=3)
    return data


def test_a_decoding_pass_makes_frame_thumbnails_only_when_asked(small_data: Path) -> None:
    assert discover(small_data).frame_thumbnails == {}
    stored = discover(small_data, frame_readings="stored").frame_thumbnails
    query = discover(small_data, frame_readings="query").frame_thumbnails
    assert len(stored) == len(query) == 12
    for path, first in stored.items():
        assert first.shape == (1, THUMBNAIL, THUMBNAIL)
        assert 1 <= len(query[path]) <= 3 and np.array_equal(query[path][0], first[0])
        assert np.array_equal(first[0], frame_thumbnail(cv2.imread(path, cv2.IMREAD_GRAYSCALE) / np.float32(255)))
    with pytest.raises(ValueError, match="frame readings"):
        discover(small_data, frame_readings="all")


def test_training_fingerprints_are_read_from_the_files_where_the_index_has_none(small_data: Path) -> None:
    split = make_split(discover(small_data).frame, seed=0)
    from_files = training_fingerprints(discover(small_data), split)
    from_index = training_fingerprints(discover(small_data, frame_readings="stored"), split)
    assert len(from_files) == int(split["split"].isin(["train", "val"]).sum()) > 0
    assert from_files.paths == from_index.paths
    np.testing.assert_array_equal(from_files.fingerprints, from_index.fingerprints)
