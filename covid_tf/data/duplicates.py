"""Exact and near-identical duplicate images, found by a perceptual hash.

Each image is reduced to a 32x32 grayscale thumbnail and a 256-bit difference hash (dHash: is
each pixel of a 16x17 thumbnail brighter than its left neighbour). Two images are duplicates when
their hashes differ in at most ``max_distance`` bits *and* their standardised thumbnails differ by at
most ``max_mean_difference`` standard deviations on average (which keeps look-alike scans of different patients,
such as neighbouring CT slices of a phantom, apart). Groups are the connected components. On the
real Radiography subset, true duplicates differ by 0-5 bits and distinct X-rays by 13 or more, so
the default of 8 sits in the gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

DEFAULT_MAX_DISTANCE = 8
DEFAULT_MAX_MEAN_DIFFERENCE = 0.2
_CHUNK = 2048


def difference_hash(thumbnail: np.ndarray) -> np.ndarray:
    """Return the 256-bit difference hash of a grayscale thumbnail as a bool vector."""
    small = cv2.resize(np.asarray(thumbnail, dtype=np.float32), (17, 16), interpolation=cv2.INTER_AREA)
    return (small[:, 1:] > small[:, :-1]).ravel()


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Return the index pairs (i < j) whose hashes differ in at most ``max_distance`` bits."""
    bits = np.asarray(hashes, dtype=np.float32)
    pairs = []
    for start in range(0, len(bits), _CHUNK):
        block = bits[start : start + _CHUNK]
        distance = block @ (1.0 - bits).T + (1.0 - block) @ bits.T
        rows, cols = np.nonzero(distance <= max_distance)
        rows = rows + start
        keep = rows < cols
        pairs.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=int)


def duplicate_group_ids(
    hashes: np.ndarray,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    thumbnails: np.ndarray | None = None,
    max_mean_difference: float = DEFAULT_MAX_MEAN_DIFFERENCE,
) -> np.ndarray:
    """Label each image with a group id; images in one group are (near-)identical.

    With ``thumbnails`` (N, 32, 32), a hash match must also agree pixel by pixel (after standardising).
    """
    count = len(hashes)
    if count == 0:
        return np.zeros(0, dtype=int)
    pairs = near_duplicate_pairs(hashes, max_distance)
    if thumbnails is not None and len(pairs):
        flat = np.asarray(thumbnails, dtype=np.float32).reshape(count, -1)
        # Standardise each thumbnail so that a brightness or contrast change alone still matches.
        flat = (flat - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-6)
        difference = np.abs(flat[pairs[:, 0]] - flat[pairs[:, 1]]).mean(axis=1)
        pairs = pairs[difference <= max_mean_difference]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    return labels


def duplicate_groups(paths: Sequence[str], group_ids: np.ndarray) -> list[list[str]]:
    """Return the groups with two or more members, as sorted lists of paths, largest first."""
    members: dict[int, list[str]] = {}
    for path, group in zip(paths, group_ids):
        members.setdefault(int(group), []).append(str(path))
    groups = [sorted(paths) for paths in members.values() if len(paths) > 1]
    return sorted(groups, key=lambda group: (-len(group), group[0]))
