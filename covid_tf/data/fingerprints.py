"""Image fingerprints that survive the ways a film is copied: finding a test image among a model's training images.

A public film is often republished in another collection: resized, re-encoded as JPEG, brighter or darker,
converted to colour or to another bit depth, with a few per cent of border cut off or added, or with a text
label burned in. The fingerprint survives all of that and still tells two patients' chest films apart:

1. The film's frame thumbnail: flat borders trimmed, shrunk to a ``THUMBNAIL``-pixel square, histogram
   equalised (:func:`covid_tf.data.film_frame.frame_thumbnail`).
2. The *core* of the thumbnail on a grid, the smooth shading every chest film shares subtracted
   (:mod:`covid_tf.data.film_grid`): the detail that differs between patients. Stored as ``GRID**2`` signed bytes
   per image (:func:`stored_fingerprints`).

A query is compared with every stored fingerprint under several *framings* (:data:`~covid_tf.data.film_grid.
FRAMINGS`): the core as it would lie in the query if the query were the stored film with up to ``MAX_CROP`` of
each side cut off or added, and against each stored core mirrored too (a mirrored copy is the same film: it
counts); a query may come as several thumbnails (:func:`covid_tf.data.film_frame.frame_thumbnails`: other readings
of its borders and labels), of which the best counts. The search (:func:`match_fingerprints`):

1. the correlation of ``COARSE`` x ``COARSE`` block means under the 10 ``SEARCH_FRAMINGS`` keeps a
   ``SHORTLIST`` of stored images per query; under all 45 framings, the ``CANDIDATES`` best of those stay;
2. the full-grid correlation at a candidate's best framing, with the ``TRIM`` of the grid where the two differ
   most left out in blocks (a burned-in label), decides: a pair at or above ``threshold`` is a copy;
3. a query's best pairs just under it (from ``REFINE_FROM``) are aligned more finely first (:func:`_refine`).

Recall per copy kind, false matches among distinct real films and the cost: docs/OVERLAP.md,
``benchmarks/bench_overlap.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from covid_tf.data.film_frame import THUMBNAIL
from covid_tf.data.film_grid import (
    FRAMINGS,
    GRID,
    SEARCH_FRAMINGS,
    STORED_FRAMING,
    Framing,
    as_pixels,
    coarse_blocks,
    coarse_query,
    framed_cells,
    grid_detail,
    near_shifts,
    near_sizes,
    standardised,
    window_cells,
    window_matrices,
)

CANDIDATES = 3
SHORTLIST = 10  # stored images per query scored again under every framing
COARSE_THRESHOLD = 0.75
TRIM = 0.15  # of the grid left out where a pair differs most ...
TRIM_BLOCK = 3  # ... in blocks of this many cells a side
REFINE_FROM = 0.93
REFINE_MARGIN = 0.05  # only a query's best pairs are aligned again
DEFAULT_THRESHOLD = 0.975
FINGERPRINT_BYTES = GRID**2
FINGERPRINT_VERSION = 3  # 3: 8-bit films shrunk by whole factors, 48-pixel thumbnails (2: borders trimmed in turns)
_CHUNK = 512  # query thumbnails at once
_PAIRS = 512  # pairs whose thumbnails are gathered at once
_SCORES_PER_BLOCK = 1_000_000  # coarse scores held at once (4 MB: they stay in the cache)


def stored_fingerprints(thumbnails: np.ndarray) -> np.ndarray:
    """(N, ``FINGERPRINT_BYTES``) int8 fingerprints of (N, THUMBNAIL, THUMBNAIL) frame thumbnails."""
    thumbnails = np.asarray(thumbnails)
    if len(thumbnails) == 0:
        return np.zeros((0, FINGERPRINT_BYTES), dtype=np.int8)
    detail = grid_detail(window_cells(as_pixels(thumbnails), [STORED_FRAMING])[:, 0])
    scale = 127.0 / np.maximum(np.abs(detail).max(axis=1, keepdims=True), 1e-6)
    return np.round(detail * scale).astype(np.int8)


def _with_mirrors(targets: np.ndarray) -> np.ndarray:
    """(2N, D): the stored fingerprints, then their mirror images (the core is centred: a mirrored film's core is
    the mirrored core), so that mirrored copies are found without mirroring every query."""
    grids = targets.reshape(-1, GRID, GRID)
    return np.concatenate([targets, grids[:, :, ::-1].reshape(len(targets), -1)])


@dataclass(frozen=True)
class _Targets:
    """Stored fingerprints prepared for matching once: ``full`` (2N, D) standardised, then their mirror images
    (:func:`_with_mirrors`); ``coarse`` (2N, COARSE**2) and its transpose; ``count`` N."""

    full: np.ndarray
    coarse: np.ndarray
    coarse_by_column: np.ndarray
    count: int

    @classmethod
    def of(cls, stored: np.ndarray) -> _Targets:
        full = _with_mirrors(standardised(np.asarray(stored, dtype=np.float32)))
        coarse = np.ascontiguousarray(coarse_blocks(full), dtype=np.float32)
        return cls(full, coarse, np.ascontiguousarray(coarse.T), len(stored))


def trimmed_correlation(first: np.ndarray, second: np.ndarray, trim: float | None = None) -> np.ndarray:
    """Pearson correlation of matching rows of (P, GRID * GRID) arrays, the ``trim`` share (default ``TRIM``) of
    the grid left out where the two differ most, in whole blocks of ``TRIM_BLOCK`` x ``TRIM_BLOCK`` cells: a
    burned-in label or marker is one compact place, while two patients' films differ everywhere."""
    trim = TRIM if trim is None else trim
    if len(first) == 0:
        return np.zeros(0, dtype=np.float32)
    first, second = standardised(first), standardised(second)
    side = GRID // TRIM_BLOCK
    difference = np.abs(first - second).reshape(-1, side, TRIM_BLOCK, side, TRIM_BLOCK).sum(axis=(2, 4))
    dropped = int(round(trim * side * side))
    keep = np.ones(difference.shape, dtype=np.float32).reshape(len(first), -1)
    if dropped:
        worst = np.argpartition(-difference.reshape(len(first), -1), dropped - 1, axis=1)[:, :dropped]
        np.put_along_axis(keep, worst, 0.0, axis=1)
    keep = np.repeat(np.repeat(keep.reshape(-1, side, side), TRIM_BLOCK, axis=1), TRIM_BLOCK, axis=2)
    keep = keep.reshape(len(first), -1)
    count = keep.sum(axis=-1, keepdims=True)
    first = (first - (first * keep).sum(axis=-1, keepdims=True) / count) * keep
    second = (second - (second * keep).sum(axis=-1, keepdims=True) / count) * keep
    return (first * second).sum(axis=-1) / np.sqrt((first**2).sum(axis=-1) * (second**2).sum(axis=-1) + 1e-12)


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """(n, count) column indices of the ``count`` highest scores of each row of (n, m) ``scores`` (any order)."""
    count = min(count, scores.shape[1])
    return np.argpartition(-scores, count - 1, axis=1)[:, :count]


def _candidates(coarse_queries: np.ndarray, targets: _Targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``CANDIDATES`` best stored images of each query by the coarse correlation (at or above
    ``COARSE_THRESHOLD``): (pair's query, stored index, best framing).

    The ``SHORTLIST`` best of all stored images under the ``SEARCH_FRAMINGS`` (every framing lies within a step of
    one of them) are scored again under every framing: a crop shifts a copy's core by a fraction of a coarse cell,
    which lowers its score a little but seldom drops it from the shortlist.
    """
    coarse_targets, by_column = targets.coarse, targets.coarse_by_column
    search = list(SEARCH_FRAMINGS)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for rows in _chunks(len(coarse_queries), max(1, _SCORES_PER_BLOCK // max(1, len(search) * len(coarse_targets)))):
        block = coarse_queries[rows]
        searched = np.ascontiguousarray(block[:, search]).reshape(-1, block.shape[-1]) @ by_column
        shortlist = _top(searched.reshape(len(block), len(search), -1).max(axis=1), SHORTLIST)  # (n, S)
        scores = np.matmul(block, coarse_targets[shortlist].transpose(0, 2, 1))  # (n, F, S)
        best = scores.max(axis=1)
        position = _top(best, CANDIDATES)
        chosen = np.take_along_axis(shortlist, position, axis=1)
        queries = np.repeat(np.arange(len(block)), position.shape[1])
        kept = best[queries, position.ravel()] >= COARSE_THRESHOLD
        queries, position = queries[kept], position.ravel()[kept]
        found.append((queries + rows.start, chosen.ravel()[kept], scores[queries, :, position].argmax(axis=1)))
    if not found:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.intp)
    return tuple(np.concatenate(parts) for parts in zip(*found))  # type: ignore[return-value]


def _pair_descriptors(pixels: np.ndarray, pair_queries: np.ndarray, framing: np.ndarray) -> np.ndarray:
    """(P, GRID * GRID): the full-grid descriptor of each pair's query under the pair's framing."""
    rows, columns = window_matrices(FRAMINGS)
    descriptors = np.empty((len(pair_queries), GRID * GRID), dtype=np.float32)
    for part in _chunks(len(pair_queries), _PAIRS):
        chosen = framing[part]
        cells = framed_cells(pixels[pair_queries[part]], rows[chosen][:, None], columns[chosen][:, None])
        descriptors[part] = grid_detail(cells[:, 0, 0])
    return descriptors


def _best_aligned(pixels: np.ndarray, windows: Sequence[tuple[list[Framing], list[Framing]]],
                  unit_targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of the row and column windows of each query (P, T, T), the pairing whose descriptor correlates best with its
    standardised target (P, D): (P,) its row and column index and (P, D) that descriptor."""
    rows = np.stack([window_matrices(row_windows)[0] for row_windows, _ in windows])  # (P, 3, GRID, T)
    columns = np.stack([window_matrices(column_windows)[1] for _, column_windows in windows])
    cells = framed_cells(pixels, rows, columns)
    descriptors = grid_detail(cells.reshape(len(pixels), -1, GRID * GRID))  # (P, R * C, D), standardised
    aligned = np.matmul(descriptors, unit_targets[:, :, None])[..., 0].argmax(axis=1)
    row, column = np.divmod(aligned, cells.shape[2])
    return row, column, descriptors[np.arange(len(pixels)), aligned]


def _refine(pixels: np.ndarray, framings: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(P,) trimmed correlation of each query thumbnail (P, T, T) with its target (P, D) at the best aligned
    framing near its own (indices into ``FRAMINGS``, the search's best): first the best of the sizes near it,
    then the best of the shifts near that. The plain correlation picks the framing, as alignment is a property of
    the whole grid."""
    unit = standardised(targets)
    sizes = [near_sizes(FRAMINGS[index]) for index in framings]
    height, width, _ = _best_aligned(pixels, sizes, unit)
    best = [Framing(FRAMINGS[index].centre_x, FRAMINGS[index].centre_y, size[1][w].width, size[0][h].height)
            for index, size, h, w in zip(framings, sizes, height, width)]
    _, _, descriptors = _best_aligned(pixels, [near_shifts(framing) for framing in best], unit)
    return trimmed_correlation(descriptors, targets)


def _similarities(pixels: np.ndarray, targets: _Targets, threshold: float) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """The candidate pairs of query thumbnails (N, T, T) and stored fingerprints: (query index, stored index,
    similarity).

    A query's best pairs close to a copy (at or above ``REFINE_FROM``, below ``threshold``, within
    ``REFINE_MARGIN`` of its best) are aligned more finely (:func:`_refine`) first.
    """
    pair_queries, pair_targets, framing = _candidates(coarse_query(pixels), targets)
    similarity = trimmed_correlation(_pair_descriptors(pixels, pair_queries, framing), targets.full[pair_targets])
    query_best = np.full(len(pixels), -1.0, dtype=np.float32)
    np.maximum.at(query_best, pair_queries, similarity)
    close = np.flatnonzero((similarity >= REFINE_FROM) & (similarity < threshold)
                           & (similarity >= query_best[pair_queries] - REFINE_MARGIN))
    for part in _chunks(len(close), _PAIRS):
        members = close[part]
        refined = _refine(pixels[pair_queries[members]], framing[members], targets.full[pair_targets[members]])
        similarity[members] = np.maximum(similarity[members], refined)
    stored_index = pair_targets % targets.count
    # A film and its mirror image may both be candidates of one query: keep the better.
    order = np.lexsort((-similarity, stored_index, pair_queries))
    pairs = np.stack([pair_queries[order], stored_index[order]], axis=1)
    first = np.r_[True, np.any(pairs[1:] != pairs[:-1], axis=1)] if len(pairs) else np.zeros(0, dtype=bool)
    return pair_queries[order][first], stored_index[order][first], similarity[order][first]


def _query_stack(queries: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(M, THUMBNAIL, THUMBNAIL) thumbnails and the (M,) query each belongs to: a query is one thumbnail (T, T) or
    its frame thumbnails (K, T, T) (:func:`frame_thumbnails`)."""
    if isinstance(queries, np.ndarray) and queries.ndim == 3:
        return queries, np.arange(len(queries))
    parts = [np.asarray(query).reshape(-1, THUMBNAIL, THUMBNAIL) for query in queries]
    owners = np.repeat(np.arange(len(parts)), [len(part) for part in parts])
    return np.concatenate(parts) if parts else np.zeros((0, THUMBNAIL, THUMBNAIL), np.uint8), owners


def match_fingerprints(queries: np.ndarray | Sequence[np.ndarray], stored: np.ndarray,
                       threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, int, float]]:
    """``(query index, stored index, similarity)`` of every copy (similarity at or above ``threshold``), best
    match first per query.

    ``queries``: (Nq, THUMBNAIL, THUMBNAIL) frame thumbnails (:func:`frame_thumbnail`), or one (K, THUMBNAIL,
    THUMBNAIL) stack per query (:func:`frame_thumbnails`: the best of its thumbnails counts); ``stored``: (Ns,
    ``FINGERPRINT_BYTES``) fingerprints (:func:`stored_fingerprints`).
    """
    stored = np.asarray(stored)
    if stored.ndim != 2 or stored.shape[1] != FINGERPRINT_BYTES:
        raise ValueError(f"stored fingerprints must be (N, {FINGERPRINT_BYTES}), got {stored.shape}")
    thumbnails, owners = _query_stack(queries)
    if len(thumbnails) == 0 or len(stored) == 0:
        return []
    targets = _Targets.of(stored)
    best: dict[tuple[int, int], float] = {}
    for rows in _chunks(len(thumbnails), _CHUNK):
        pair_queries, pair_stored, similarity = _similarities(as_pixels(thumbnails[rows]), targets, threshold)
        copies = similarity >= threshold
        for q, s, value in zip(owners[pair_queries[copies] + rows.start], pair_stored[copies], similarity[copies]):
            if value > best.get((int(q), int(s)), -1.0):
                best[int(q), int(s)] = float(value)
    return sorted(((q, s, value) for (q, s), value in best.items()), key=lambda match: (match[0], -match[2]))
