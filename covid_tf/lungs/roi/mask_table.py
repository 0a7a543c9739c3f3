"""The lung masks of a classifier run, one row per image (a run's ``roi.csv``): where each mask comes from and
whether the ROI applies to it.

Masks come from the dataset (``mask_path`` of the index, or ``<Class>/masks/<name>`` beside ``images/``), else
from the shipped segmenter (or, for CT slices, the classical CT segmenter), computed once and cached as PNGs under
``config.CACHE_DIR / "lung_masks"``, named by a hash of the image's resolved path, modification time and size and
of the shipped segmenter file (a new segmenter does not reuse an old one's masks). An image whose segmenter mask is
not plausible (:func:`covid_tf.lungs.segmentation.masks.describe_mask`), or whose dataset mask is empty, falls
back to the full image; :func:`prepare_masks` says so in its table and :func:`fallback_note` in one line.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.images import load_image, save_png
from covid_tf.data.mask_files import find_mask
from covid_tf.errors import ImageReadError
from covid_tf.io_utils import atomic_write, resolved_path
from covid_tf.lungs.roi.modes import modality_of
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation.masks import read_mask
from covid_tf.lungs.segmentation.segmenter import SHIPPED_MODEL

MASK_CACHE = "lung_masks"
ROI_COLUMNS = ("path", "mask_path", "lung_mask_source", "roi_applied", "reason")
# Where a lung mask came from (roi.csv's lung_mask_source), and how fallback_note says it.
MASK_SOURCES = {"dataset": "from the dataset", "segmenter": "from the segmenter", "none": "without a mask"}
DATASET, SEGMENTER, NO_SOURCE = MASK_SOURCES
NO_MASK = "no lung mask"  # the reason of an image without a mask file


@functools.cache
def segmenter_fingerprint() -> str:
    """A short hash of the shipped segmenter file (covid_tf/lungs/lung_segmenter.keras), part of every cache key."""
    return hashlib.sha1(SHIPPED_MODEL.read_bytes()).hexdigest()[:12]


def cache_key(image_path: str | Path) -> str:
    """Name of an image's cached mask: its resolved path, modification time and size and the shipped segmenter's
    fingerprint, hashed."""
    stat = Path(image_path).stat()
    text = f"{resolved_path(image_path)}\0{stat.st_mtime_ns}\0{stat.st_size}\0{segmenter_fingerprint()}"
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _segment_into_cache(todo: list[tuple[str, Path]], segmenter, batch_size: int, modality: str = "xray") -> None:
    if modality_of(modality).ct:
        from covid_tf.lungs.segmentation.ct_lungs import segment_ct_slice

        for path, target in todo:
            mask = segment_ct_slice(load_image(path, channels=1)[..., 0])
            atomic_write(target, lambda tmp, m=mask: save_png(m.astype(np.uint8) * 255, tmp))
        return
    from covid_tf.lungs.segmentation.segmenter import load_segmenter, predict_masks

    model = segmenter if segmenter is not None else load_segmenter()
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        images = [load_image(path, channels=1) for path, _ in chunk]
        for (_, target), mask in zip(chunk, predict_masks(model, images, 256, batch_size)):
            atomic_write(target, lambda tmp, m=mask: save_png(m.astype(np.uint8) * 255, tmp))


def prepare_masks(paths: Sequence[str], mask_paths: Sequence[str | None] | None = None, *,
                  cache_dir: str | Path | None = None, use_segmenter: bool = True, segmenter=None,
                  batch_size: int = 16, modality: str = "xray") -> pd.DataFrame:
    """One row per image: its mask file, where it came from, and whether the ROI applies (``ROI_COLUMNS``).

    ``mask_paths`` (e.g. the index's ``mask_path``; empty for none) win, then the dataset layout's mask,
    then the segmenter's cached mask (segmented now when missing; never without ``use_segmenter``:
    ``lung_mask_source`` is then ``none``). ``roi_applied`` is False, with the reason, when a segmenter's
    mask is not a plausible pair of lungs (or a dataset's mask is empty): such an image is used whole.
    ``modality`` ``ct``: the CT lung segmenter and CT plausibility (:mod:`covid_tf.lungs.segmentation.ct_lungs`),
    cached apart.
    :func:`locate_masks` is the first half (the files), :func:`mask_file_plausibility` the second (each file read).
    """
    table = locate_masks(paths, mask_paths, cache_dir=cache_dir, use_segmenter=use_segmenter, segmenter=segmenter,
                         batch_size=batch_size, modality=modality)
    checked = [mask_file_plausibility(mask_path, trusted=source == DATASET, modality=modality)
               for mask_path, source in zip(table["mask_path"], table["lung_mask_source"])]
    table["roi_applied"] = [applied for applied, _ in checked]
    table["reason"] = [reason for _, reason in checked]
    return table[list(ROI_COLUMNS)]


def locate_masks(paths: Sequence[str], mask_paths: Sequence[str | None] | None = None, *,
                 cache_dir: str | Path | None = None, use_segmenter: bool = True, segmenter=None,
                 batch_size: int = 16, modality: str = "xray") -> pd.DataFrame:
    """``path, mask_path, lung_mask_source`` of each image, as :func:`prepare_masks` finds them (the segmenter's
    missing masks computed and cached now); no mask is read. ``mask_path`` is '' where ``lung_mask_source`` is
    ``none``."""
    cache = Path(cache_dir) if cache_dir is not None else Path(config.CACHE_DIR) / MASK_CACHE
    rows, todo = [], []
    for index, path in enumerate(paths):
        given = mask_paths[index] if mask_paths is not None else None
        found = Path(given) if given and Path(given).is_file() else find_mask(path)
        if found is not None:
            rows.append([str(path), str(found), DATASET])
        elif use_segmenter:
            target = cache / f"{cache_key(path)}{modality_of(modality).cache_suffix}.png"
            rows.append([str(path), str(target), SEGMENTER])
            if not target.is_file():
                todo.append((str(path), target))
        else:
            rows.append([str(path), "", NO_SOURCE])
    if todo:
        _segment_into_cache(todo, segmenter, batch_size, modality)
    return pd.DataFrame(rows, columns=list(ROI_COLUMNS[:3]))


def mask_file_plausibility(mask_path: str, trusted: bool, modality: str = "xray") -> tuple[bool, str]:
    """:func:`mask_plausibility` of a mask file; ``(False, reason)`` for no file or an unreadable one."""
    mask, reason = read_plausible_mask(mask_path, trusted, modality)
    return mask is not None, reason


def read_plausible_mask(mask_path: str, trusted: bool, modality: str = "xray") -> tuple[np.ndarray | None, str]:
    """``(mask, '')`` when the ROI applies to the mask file (:func:`mask_plausibility`), else ``(None, reason)``:
    no file (:data:`NO_MASK`), an unreadable one, or an implausible mask."""
    if not mask_path:
        return None, NO_MASK
    try:
        mask = read_mask(mask_path)
    except ImageReadError as error:
        return None, f"mask unreadable: {error.reason}"
    plausible, reason = mask_plausibility(mask, trusted, modality)
    return (mask, "") if plausible else (None, reason)


def mask_plausibility(mask: np.ndarray, trusted: bool, modality: str = "xray") -> tuple[bool, str]:
    """Whether the ROI applies to a bool mask, and why not: a dataset's own (``trusted``) mask unless empty; a
    segmenter's when it is a plausible pair of lungs (:func:`covid_tf.lungs.segmentation.masks.describe_mask`, or for CT
    :func:`covid_tf.lungs.segmentation.ct_lungs.describe_ct_mask`)."""
    if trusted:
        return (True, "") if mask.any() else (False, "the dataset's mask is empty")
    if modality_of(modality).ct:
        from covid_tf.lungs.segmentation.ct_lungs import describe_ct_mask

        summary = describe_ct_mask(mask)
    else:
        summary = lung_masks.describe_mask(mask)
    return summary.plausible, summary.reason


def fallback_note(table: pd.DataFrame | None) -> str:
    """One line on how many images had no plausible lungs and were used whole ('' when none)."""
    if table is None or table.empty:
        return ""
    fallen = table[~table["roi_applied"].astype(bool)]
    text = "lung masks: " + ", ".join(f"{count} {MASK_SOURCES.get(str(name), f'from {name}')}"
                                      for name, count in table["lung_mask_source"].value_counts().items())
    if fallen.empty:
        return text + "; every image has plausible lungs"
    first = fallen.iloc[0]
    return (text + f"; {len(fallen)} image(s) without plausible lungs used whole (e.g. {first['path']}: "
            f"{first['reason']})")
