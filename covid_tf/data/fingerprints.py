"""Image fingerprints that survive the ways a film is copied: finding a test image among a model's training images.

A public film is often republished in another collection: resized, re-encoded as JPEG, brighter or darker,
converted to colour or to another bit depth, with a few per cent of border cut off or added, or with a text
label burned in. The fingerprint survives all of that and still tells two patients' chest films apart:

1. The film's frame thumbnail: flat borders trimmed, shrunk to a ``THUMBNAIL``-pixel square, histogram
   equalised (:func:`covid_tf.data.film_frame.frame_thumbnail`).
2. The *core* (the central ``CORE`` of each axis) is averaged on a ``GRID`` x ``GRID`` grid and the smooth
   shading every chest film shares is subtracted (a Gaussian of ``DETAIL_SIGMA`` cells): what is left is the
   detail that differs between patients. Stored as ``GRID**2`` signed bytes per image (:func:`stored_fingerprints`).

A query is compared with every stored fingerprint under several *framings* (:data:`FRAMINGS`): the core as it
would lie in the query if the query were the stored film with up to ``MAX_CROP`` of each side cut off or added,
and against each stored core mirrored too (a mirrored copy is the same film: it counts); a query may come as
several thumbnails (:func:`covid_tf.data.film_frame.frame_thumbnails`: other readings of its borders and labels),
of which the best counts. First the correlation
of ``COARSE`` x ``COARSE`` averages over all framings keeps the ``CANDIDATES`` best stored images of each query;
then the full-grid correlation at their best framing, with the ``TRIM`` of the grid where they differ most left
out in blocks (a burned-in label), decides: a pair at or above ``threshold`` is a copy (:func:`match_fingerprints`).
Recall per copy kind and false matches among distinct real films: docs/OVERLAP.md, ``benchmarks/bench_overlap.py``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from covid_tf.data.film_frame import THUMBNAIL

GRID = 24
COARSE = 8
CORE = 0.8
MAX_CROP = 0.05
BLUR_SIGMA = 1.5  # in thumbnail pixels, before the grid
DETAIL_SIGMA = 1.8  # in grid cells: the shading subtracted
CANDIDATES = 10
COARSE_THRESHOLD = 0.75
TRIM = 0.15  # of the grid left out where a pair differs most ...
TRIM_BLOCK = 3  # ... in blocks of this many cells a side
REFINE_FROM = 0.93
REFINE_MARGIN = 0.05  # only a query's best pairs are aligned again
DEFAULT_THRESHOLD = 0.975
FINGERPRINT_BYTES = GRID * GRID
FINGERPRINT_VERSION = 2  # 2: borders trimmed side by side in turns, up to MAX_TRIM, at WORKING_SIZE
_CHUNK = 512
_SCORES_PER_BLOCK = 8_000_000  # coarse scores held at once (32 MB)


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
STORED_FRAMING = Framing(0.5, 0.5, CORE, CORE)


def _sampling_matrix(centre: float, size: float) -> np.ndarray:
    """(GRID, THUMBNAIL) weights that average the thumbnail's pixels over each of ``GRID`` cells of a window."""
    edges = (centre - size / 2.0 + size * np.arange(GRID + 1) / GRID) * THUMBNAIL
    pixels = np.arange(THUMBNAIL, dtype=np.float64)
    covered = np.clip(np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels), 0.0, None)
    return (covered / np.maximum(covered.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _blurred(thumbnails: np.ndarray) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(t.astype(np.float32), (0, 0), BLUR_SIGMA) for t in thumbnails])


def _sampled(blurred: np.ndarray, framings: Sequence[Framing], rows_of, columns_of) -> np.ndarray:
    """(N, F, r, c): ``rows_of(centre, size) @ image @ columns_of(centre, size).T`` of each framing, columns first
    (batched matrix products, each distinct column or row window computed once)."""
    column_keys = sorted({(f.centre_x, f.width) for f in framings})
    row_keys = sorted({(f.centre_y, f.height) for f in framings})
    columns = np.stack([columns_of(*key) for key in column_keys])
    rows = np.stack([rows_of(*key) for key in row_keys])
    by_columns = np.matmul(blurred[:, None], columns.transpose(0, 2, 1)[None])  # (N, columns, T, c)
    return np.stack([np.matmul(rows[row_keys.index((f.centre_y, f.height))],
                               by_columns[:, column_keys.index((f.centre_x, f.width))]) for f in framings], axis=1)


def _window_cells(blurred: np.ndarray, framings: Sequence[Framing]) -> np.ndarray:
    """(N, F, GRID * GRID) cell means of each framing's window in each blurred thumbnail (:func:`_blurred`)."""
    cells = _sampled(blurred, framings, _sampling_matrix, _sampling_matrix)
    return cells.reshape(len(blurred), len(framings), GRID * GRID)


def _coarse_query(blurred: np.ndarray) -> np.ndarray:
    """(N, len(FRAMINGS), COARSE * COARSE): :func:`_coarse` of :func:`query_descriptors`, computed without the full
    grid. Block means and the shading are linear: the blocks of ``cells - S cells S.T`` are
    ``(B R) T (B C).T - (B S R) T (B S C).T`` for the window's row and column sampling ``R``, ``C``."""
    blocks, shading = _block_matrix(), _shading_matrix()

    def plain(centre: float, size: float) -> np.ndarray:
        return blocks @ _sampling_matrix(centre, size)

    def smoothed(centre: float, size: float) -> np.ndarray:
        return blocks @ shading @ _sampling_matrix(centre, size)

    detail = _sampled(blurred, FRAMINGS, plain, plain) - _sampled(blurred, FRAMINGS, smoothed, smoothed)
    return _standardised(detail.reshape(len(blurred), len(FRAMINGS), COARSE * COARSE)).astype(np.float32)


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


def _detail(cells: np.ndarray) -> np.ndarray:
    """(..., GRID * GRID) cells minus their shading (a Gaussian of ``DETAIL_SIGMA`` cells), standardised."""
    grids = cells.reshape(-1, GRID, GRID).astype(np.float32)
    smoothing = _shading_matrix()
    shading = np.matmul(smoothing, np.matmul(grids, smoothing.T))
    return _standardised((grids - shading).reshape(cells.shape))


def _standardised(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean(axis=-1, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-6)


def stored_fingerprints(thumbnails: np.ndarray) -> np.ndarray:
    """(N, ``FINGERPRINT_BYTES``) int8 fingerprints of (N, THUMBNAIL, THUMBNAIL) frame thumbnails."""
    thumbnails = np.asarray(thumbnails)
    if len(thumbnails) == 0:
        return np.zeros((0, FINGERPRINT_BYTES), dtype=np.int8)
    detail = _detail(_window_cells(_blurred(thumbnails), [STORED_FRAMING])[:, 0])
    scale = 127.0 / np.maximum(np.abs(detail).max(axis=1, keepdims=True), 1e-6)
    return np.round(detail * scale).astype(np.int8)


def query_descriptors(thumbnails: np.ndarray) -> np.ndarray:
    """(N, len(FRAMINGS), GRID * GRID) standardised detail of every framing of each thumbnail."""
    return _detail(_window_cells(_blurred(np.asarray(thumbnails)), FRAMINGS))


def _with_mirrors(targets: np.ndarray) -> np.ndarray:
    """(2N, D): the stored fingerprints, then their mirror images (the core is centred: a mirrored film's core is
    the mirrored core), so that mirrored copies are found without mirroring every query."""
    grids = targets.reshape(-1, GRID, GRID)
    return np.concatenate([targets, grids[:, :, ::-1].reshape(len(targets), -1)])


def _coarse(descriptors: np.ndarray) -> np.ndarray:
    """``COARSE`` x ``COARSE`` block means of (..., GRID * GRID) descriptors, standardised."""
    factor = GRID // COARSE
    blocks = descriptors.reshape(*descriptors.shape[:-1], COARSE, factor, COARSE, factor).mean(axis=(-3, -1))
    return _standardised(blocks.reshape(*descriptors.shape[:-1], COARSE * COARSE))


def trimmed_correlation(first: np.ndarray, second: np.ndarray, trim: float | None = None) -> np.ndarray:
    """Pearson correlation of matching rows of (P, GRID * GRID) arrays, the ``trim`` share (default ``TRIM``) of
    the grid left out where the two differ most, in whole blocks of ``TRIM_BLOCK`` x ``TRIM_BLOCK`` cells: a
    burned-in label or marker is one compact place, while two patients' films differ everywhere."""
    trim = TRIM if trim is None else trim
    if len(first) == 0:
        return np.zeros(0, dtype=np.float32)
    first, second = _standardised(first), _standardised(second)
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


def _candidates(coarse_queries: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``CANDIDATES`` best stored images of each query by the coarse correlation (at or above
    ``COARSE_THRESHOLD``): (pair's query, stored index, best framing)."""
    coarse_targets = np.ascontiguousarray(_coarse(targets).T, dtype=np.float32)
    count, framings = coarse_queries.shape[:2]
    keep = min(CANDIDATES, len(targets))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for rows in _chunks(count, max(1, _SCORES_PER_BLOCK // max(1, framings * len(targets)))):
        block = np.ascontiguousarray(coarse_queries[rows])
        scores = (block.reshape(-1, block.shape[-1]) @ coarse_targets).reshape(*block.shape[:2], -1)  # (n, F, T)
        best = scores.max(axis=1)  # vectorised over the last axis; an argmax is not: taken for the kept pairs only
        top = np.argpartition(-best, keep - 1, axis=1)[:, :keep]
        queries = np.repeat(np.arange(len(block)), keep)
        stored = top.ravel()
        chosen = best[queries, stored] >= COARSE_THRESHOLD
        queries, stored = queries[chosen], stored[chosen]
        found.append((queries + rows.start, stored, scores[queries, :, stored].argmax(axis=1)))
    if not found:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.intp)
    return tuple(np.concatenate(parts) for parts in zip(*found))  # type: ignore[return-value]


def _pair_descriptors(blurred: np.ndarray, pair_queries: np.ndarray, framing: np.ndarray) -> np.ndarray:
    """(P, GRID * GRID): the full-grid descriptor of each pair's query under the pair's framing."""
    descriptors = np.empty((len(pair_queries), GRID * GRID), dtype=np.float32)
    for index in np.unique(framing):
        members = np.flatnonzero(framing == index)
        unique, inverse = np.unique(pair_queries[members], return_inverse=True)
        detail = _detail(_window_cells(blurred[unique], [FRAMINGS[index]])[:, 0])
        descriptors[members] = detail[inverse.ravel()]
    return descriptors


def _refined(framing: Framing) -> list[Framing]:
    """Framings around ``framing`` a quarter of the search's step apart in width, height and each shift (81 in
    all): a copy cut by different amounts on each side is stretched differently along each axis."""
    step = MAX_CROP / 4.0
    near = (1.0 - step, 1.0, 1.0 + step)
    return [Framing(framing.centre_x + dx, framing.centre_y + dy, framing.width * width, framing.height * height)
            for width in near for height in near for dx in (-step, 0.0, step) for dy in (-step, 0.0, step)]


def _refine(blurred: np.ndarray, framing_index: int, targets: np.ndarray) -> np.ndarray:
    """(P,) trimmed correlation of each blurred query thumbnail (P, T, T) with its target (P, D) at the best
    aligned of the framings near the one of ``framing_index`` (the search's best for all of them); the plain
    correlation picks the framing, as alignment is a property of the whole grid."""
    descriptors = _detail(_window_cells(blurred, _refined(FRAMINGS[framing_index])))  # (P, 81, D), standardised
    aligned = np.einsum("pfd,pd->pf", descriptors, _standardised(targets)).argmax(axis=1)
    return trimmed_correlation(descriptors[np.arange(len(targets)), aligned], targets)


def similarities(queries: np.ndarray, stored: np.ndarray, threshold: float = DEFAULT_THRESHOLD
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate pairs of query thumbnails and stored fingerprints: (query index, stored index, similarity).

    A query's best pairs close to a copy (at or above ``REFINE_FROM``, below ``threshold``, within
    ``REFINE_MARGIN`` of its best) are aligned more finely (:func:`_refine`) first.
    """
    blurred = _blurred(np.asarray(queries))
    targets = _with_mirrors(_standardised(np.asarray(stored, dtype=np.float32)))
    pair_queries, pair_targets, framing = _candidates(_coarse_query(blurred), targets)
    similarity = trimmed_correlation(_pair_descriptors(blurred, pair_queries, framing), targets[pair_targets])
    query_best = np.full(len(blurred), -1.0, dtype=np.float32)
    np.maximum.at(query_best, pair_queries, similarity)
    close = np.flatnonzero((similarity >= REFINE_FROM) & (similarity < threshold)
                           & (similarity >= query_best[pair_queries] - REFINE_MARGIN))
    for best in np.unique(framing[close]):
        members = close[framing[close] == best]
        refined = _refine(blurred[pair_queries[members]], int(best), targets[pair_targets[members]])
        similarity[members] = np.maximum(similarity[members], refined)
    stored_index = pair_targets % len(stored)
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
    best: dict[tuple[int, int], float] = {}
    for rows in _chunks(len(thumbnails), _CHUNK):
        pair_queries, pair_stored, similarity = similarities(thumbnails[rows], stored, threshold)
        copies = similarity >= threshold
        for q, s, value in zip(owners[pair_queries[copies] + rows.start], pair_stored[copies], similarity[copies]):
            if value > best.get((int(q), int(s)), -1.0):
                best[int(q), int(s)] = float(value)
    return sorted(((q, s, value) for (q, s), value in best.items()), key=lambda match: (match[0], -match[2]))
