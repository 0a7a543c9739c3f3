"""A film's core on a grid: where it lies in a copy (framings) and the detail that tells patients apart.

The *core* of a frame thumbnail (:mod:`covid_tf.data.film_frame`) is its central ``CORE`` of each axis. In a copy
cut or padded by up to ``MAX_CROP`` a side it lies elsewhere and at another size: each :class:`Framing` is one
such place (:data:`FRAMINGS`, 45). :func:`window_cells` averages a thumbnail, blurred by ``BLUR_SIGMA``, over a
``GRID`` x ``GRID`` grid of a framing's window (matrix products, the blur folded into the weights);
:func:`grid_detail` subtracts the smooth shading every chest film shares (a Gaussian of ``DETAIL_SIGMA`` cells);
:func:`coarse_query` gives the ``COARSE`` x ``COARSE`` block means of that detail under every framing at a
fraction of the cost. The fingerprints and their matching: :mod:`covid_tf.data.fingerprints`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from covid_tf.data.film_frame import THUMBNAIL

GRID = 24
COARSE = 8
CORE = 0.8
MAX_CROP = 0.05
BLUR_SIGMA = 0.75  # in thumbnail pixels, before the grid
DETAIL_SIGMA = 1.8  # in grid cells: the shading subtracted


@dataclass(frozen=True)
class Framing:
    """Where the stored core lies in a query image: its centre and size as fractions of the query's sides."""

    centre_x: float
    centre_y: float
    width: float
    height: float


def _framings() -> tuple[Framing, ...]:
    """The stored core's place in a query that is the stored film cropped or padded by up to ``MAX_CROP`` a side.

    The query cut by ``c`` on each side shows the core at size ``CORE / (1 - 2c)``; padded by ``p``, at
    ``CORE / (1 + 2p)``; a cut on one side only shifts it by half the cut. Steps of half ``MAX_CROP``.
    """
    step = MAX_CROP / 2.0
    cut = [CORE / (1.0 - 2.0 * c) for c in (2 * step, step, 0.0)]
    scales = cut + [CORE / (1.0 + 2.0 * p) for p in (step, 2 * step)]
    shifts = (-step, 0.0, step)
    return tuple(Framing(0.5 + dx, 0.5 + dy, scale, scale)
                 for scale, dx, dy in itertools.product(scales, shifts, shifts))


FRAMINGS = _framings()


def _search_framings() -> tuple[int, ...]:
    """The framings of the first search: the second and fourth of the five sizes, each centred and shifted by a
    step diagonally both ways (10 of 45). Every framing lies within one step of one of them in size and in each
    shift."""
    scales = sorted({f.width for f in FRAMINGS}, reverse=True)
    step = MAX_CROP / 2.0
    return tuple(k for k, f in enumerate(FRAMINGS) if f.width in (scales[1], scales[3])
                 and abs(abs(f.centre_x - 0.5) - abs(f.centre_y - 0.5)) < step / 2)


SEARCH_FRAMINGS = _search_framings()
STORED_FRAMING = Framing(0.5, 0.5, CORE, CORE)


@functools.lru_cache(maxsize=4096)
def _sampling_matrix(centre: float, size: float) -> np.ndarray:
    """(GRID, THUMBNAIL) weights that average a thumbnail's pixels, blurred by ``BLUR_SIGMA``, over each of ``GRID``
    cells of a window along one axis (its centre and size as fractions of the side). Cached, read-only."""
    edges = (centre - size / 2.0 + size * np.arange(GRID + 1) / GRID) * THUMBNAIL
    position = np.arange(THUMBNAIL, dtype=np.float64)
    covered = np.clip(np.minimum(edges[1:, None], position + 1) - np.maximum(edges[:-1, None], position), 0.0, None)
    matrix = (covered / np.maximum(covered.sum(axis=1, keepdims=True), 1e-9)) @ _blur_matrix()
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


@functools.lru_cache(maxsize=1)
def _blur_matrix() -> np.ndarray:
    """(THUMBNAIL, THUMBNAIL) Gaussian blur of ``BLUR_SIGMA`` pixels along one axis (``M @ column``), borders
    mirrored: folded into the sampling matrices, it blurs every thumbnail at no cost of its own."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.eye(THUMBNAIL), BLUR_SIGMA, axis=0, mode="mirror")


def as_pixels(thumbnails: np.ndarray) -> np.ndarray:
    """(N, THUMBNAIL, THUMBNAIL) float32 thumbnails."""
    return np.asarray(thumbnails, dtype=np.float32).reshape(-1, THUMBNAIL, THUMBNAIL)


def _size_groups(framings: Sequence[Framing]) -> Iterator[tuple[list[int], list, list, list[int], list[int]]]:
    """The framings of each window size: their indices, their distinct row and column windows (``(centre, size)``)
    and, per framing, the index of its row and of its column window. A size's windows are sampled together."""
    for size in dict.fromkeys((f.width, f.height) for f in framings):
        members = [k for k, f in enumerate(framings) if (f.width, f.height) == size]
        row_keys = list(dict.fromkeys((framings[k].centre_y, framings[k].height) for k in members))
        column_keys = list(dict.fromkeys((framings[k].centre_x, framings[k].width) for k in members))
        yield (members, row_keys, column_keys,
               [row_keys.index((framings[k].centre_y, framings[k].height)) for k in members],
               [column_keys.index((framings[k].centre_x, framings[k].width)) for k in members])


def window_cells(pixels: np.ndarray, framings: Sequence[Framing]) -> np.ndarray:
    """(N, F, GRID * GRID) cell means of each framing's window of each thumbnail, blurred by ``BLUR_SIGMA``.

    Framings of one size are done together in two large matrix products (all their column windows side by side,
    then all their row windows), each distinct window computed once.
    """
    count, side = len(pixels), pixels.shape[-1]
    flat = np.ascontiguousarray(pixels, dtype=np.float32).reshape(count * side, side)
    cells = np.empty((count, len(framings), GRID, GRID), dtype=np.float32)
    for members, row_keys, column_keys, row_of, column_of in _size_groups(framings):
        columns = np.concatenate([_sampling_matrix(*key) for key in column_keys])  # (C * GRID, T)
        rows = np.concatenate([_sampling_matrix(*key) for key in row_keys])  # (R * GRID, T)
        by_columns = (flat @ columns.T).reshape(count, side, -1).transpose(1, 0, 2).reshape(side, -1)  # (T, N*C*G)
        both = (rows @ by_columns).reshape(len(row_keys), GRID, count, len(column_keys), GRID)
        cells[:, members] = both.transpose(2, 0, 3, 1, 4)[:, row_of, column_of]  # (N, members, GRID, GRID)
    return cells.reshape(count, len(framings), GRID * GRID)


def window_matrices(framings: Sequence[Framing]) -> tuple[np.ndarray, np.ndarray]:
    """(F, GRID, THUMBNAIL) row and column sampling weights of each framing's window (blur folded in)."""
    rows = np.stack([_sampling_matrix(f.centre_y, f.height) for f in framings])
    columns = np.stack([_sampling_matrix(f.centre_x, f.width) for f in framings])
    return rows, columns


def framed_cells(pixels: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(P, R, C, GRID * GRID): the cells of each of P thumbnails (P, T, T) under every pairing of its own R row
    and C column windows, (P, R, GRID, T) and (P, C, GRID, T) (:func:`window_matrices`): two batched matrix
    products, whatever framing each thumbnail has."""
    count, row_count, column_count = len(pixels), rows.shape[1], columns.shape[1]
    by_columns = np.matmul(pixels, columns.reshape(count, column_count * GRID, -1).transpose(0, 2, 1))
    both = np.matmul(rows.reshape(count, row_count * GRID, -1), by_columns)  # (P, R * GRID, C * GRID)
    both = both.reshape(count, row_count, GRID, column_count, GRID).transpose(0, 1, 3, 2, 4)
    return both.reshape(count, row_count, column_count, GRID * GRID)


def coarse_query(pixels: np.ndarray) -> np.ndarray:
    """(N, len(FRAMINGS), COARSE * COARSE): :func:`coarse_blocks` of :func:`query_descriptors`, computed without
    the full grid. Block means and the shading are linear: the blocks of ``cells - S cells S.T`` are
    ``(B R) T (B C).T - (B S R) T (B S C).T`` for the window's row and column sampling ``R``, ``C``. The rows of
    every window of a size are taken in one matrix product, each side's columns in one more."""
    count, side = len(pixels), pixels.shape[-1]
    by_row = np.ascontiguousarray(np.asarray(pixels, dtype=np.float32).transpose(1, 0, 2)).reshape(side, -1)
    detail = np.empty((count, len(FRAMINGS), COARSE, COARSE), dtype=np.float32)
    for members, row_keys, column_keys, row_of, column_of in _size_groups(FRAMINGS):
        rows = np.concatenate([_coarse_sampling(*key, smoothed) for smoothed in (False, True) for key in row_keys])
        sampled = (rows @ by_row).reshape(2, -1, side)  # (plain and smoothed, R * COARSE * N, T)
        plain, smoothed = ([_coarse_sampling(*key, kind) for key in column_keys] for kind in (False, True))
        both = sampled[0] @ np.concatenate(plain).T - sampled[1] @ np.concatenate(smoothed).T
        both = both.reshape(len(row_keys), COARSE, count, len(column_keys), COARSE)
        detail[:, members] = both.transpose(2, 0, 3, 1, 4)[:, row_of, column_of]
    return standardised(detail.reshape(count, len(FRAMINGS), COARSE * COARSE))


@functools.lru_cache(maxsize=1024)
def _coarse_sampling(centre: float, size: float, smoothed: bool) -> np.ndarray:
    """(COARSE, THUMBNAIL): block means (``B R``) or block means of the shading (``B S R``) of a window's cells."""
    sampling = _sampling_matrix(centre, size)
    matrix = _block_matrix() @ (_shading_matrix() @ sampling if smoothed else sampling)
    matrix.flags.writeable = False
    return matrix


@functools.lru_cache(maxsize=1)
def _block_matrix() -> np.ndarray:
    """(COARSE, GRID): the means of consecutive blocks of ``GRID // COARSE`` cells."""
    matrix = np.kron(np.eye(COARSE), np.full((1, GRID // COARSE), COARSE / GRID)).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


@functools.lru_cache(maxsize=1)
def _shading_matrix() -> np.ndarray:
    """(GRID, GRID) Gaussian smoothing of ``DETAIL_SIGMA`` cells along one axis, borders reflected."""
    from scipy.ndimage import gaussian_filter1d

    matrix = gaussian_filter1d(np.eye(GRID), DETAIL_SIGMA, axis=0, mode="reflect").astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def grid_detail(cells: np.ndarray) -> np.ndarray:
    """(..., GRID * GRID) cells minus their shading (a Gaussian of ``DETAIL_SIGMA`` cells), standardised."""
    grids = cells.reshape(-1, GRID, GRID).astype(np.float32)
    smoothing = _shading_matrix()
    shading = np.matmul(smoothing, np.matmul(grids, smoothing.T))
    return standardised((grids - shading).reshape(cells.shape))


def standardised(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean(axis=-1, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-6)


def coarse_blocks(descriptors: np.ndarray) -> np.ndarray:
    """``COARSE`` x ``COARSE`` block means of (..., GRID * GRID) descriptors, standardised."""
    factor = GRID // COARSE
    blocks = descriptors.reshape(*descriptors.shape[:-1], COARSE, factor, COARSE, factor).mean(axis=(-3, -1))
    return standardised(blocks.reshape(*descriptors.shape[:-1], COARSE * COARSE))


def near_sizes(framing: Framing) -> tuple[list[Framing], list[Framing]]:
    """``framing``'s row and column windows a quarter of the search's step taller or shorter, wider or narrower
    (3 each, 9 sizes in all): a copy cut by different amounts on each side is stretched differently along each
    axis."""
    step = MAX_CROP / 4.0
    near = (1.0 - step, 1.0, 1.0 + step)
    return ([Framing(framing.centre_x, framing.centre_y, framing.width, framing.height * scale) for scale in near],
            [Framing(framing.centre_x, framing.centre_y, framing.width * scale, framing.height) for scale in near])


def near_shifts(framing: Framing) -> tuple[list[Framing], list[Framing]]:
    """``framing``'s row and column windows shifted by a quarter of the search's step (3 each, 9 shifts in all)."""
    step = MAX_CROP / 4.0
    shifts = (-step, 0.0, step)
    return ([Framing(framing.centre_x, framing.centre_y + shift, framing.width, framing.height) for shift in shifts],
            [Framing(framing.centre_x + shift, framing.centre_y, framing.width, framing.height) for shift in shifts])


def query_descriptors(thumbnails: np.ndarray) -> np.ndarray:
    """(N, len(FRAMINGS), GRID * GRID) standardised detail of every framing of each thumbnail."""
    return grid_detail(window_cells(as_pixels(np.asarray(thumbnails)), FRAMINGS))
