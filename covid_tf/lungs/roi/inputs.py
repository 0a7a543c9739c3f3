"""The lung ROI of a classifier run: its lung masks (dataset or segmenter, cached), and its input images.

``train --roi`` modes (:data:`ROI_MODES`), applied again by ``evaluate``, ``predict`` and ``explain``:

- ``none``: the full image.
- ``lungs``: the lung box with a margin (:func:`covid_tf.lungs.roi.geometry.lung_box`), resized to the model's size.
- ``lungs-masked``: the same crop with everything outside the dilated lungs set to a constant.
- ``lungs-removed``: the full image with the dilated lungs set to a constant, i.e. only what lies
  outside the lungs; for the shortcut audit (a model that still separates the classes from it has
  learned shortcuts), not for diagnosis.
- ``lungs-attention``: the full image, unmasked, with its lung mask as a last input channel; the model
  (:mod:`covid_tf.models.lung_attention`) averages its last feature map over the lungs only. (On the dev
  set the full image beat the lung box: docs/LUNG_ROI.md.)

Masks come from the dataset (``mask_path`` of the index, or ``<Class>/masks/<name>`` beside
``images/``), else from the shipped segmenter, computed once and cached as PNGs under
``config.CACHE_DIR / "lung_masks"``, named by a hash of the image's resolved path, modification time
and size and of the shipped segmenter file (a new segmenter does not reuse an old one's masks). An image
whose segmenter mask is not plausible (:func:`covid_tf.lungs.segmentation.masks.describe_mask`), or whose dataset mask
is empty, falls back to the full image; :func:`prepare_masks` says so in its
table (a run's ``roi.csv``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.images import load_image, resize_image, save_png
from covid_tf.data.mask_files import find_mask
from covid_tf.errors import ImageReadError
from covid_tf.io_utils import atomic_write, resolved_path
from covid_tf.lungs.roi import geometry
from covid_tf.lungs.roi.background import background_transform, grow_masks
from covid_tf.lungs.roi.modes import ATTENTION_MODE, CT_ATTENTION_MODE, RoiSpec, modality_of
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation.masks import read_mask
from covid_tf.lungs.segmentation.segmenter import SHIPPED_MODEL

AUTO_SAMPLE = 64  # training images segmented to decide what "auto" means
AUTO_MIN_LUNGS = 0.8  # share of them that must have plausible lungs
# CT lungs are tried only when the X-ray segmenter finds lungs on at most this share (X-rays get plausible "CT
# lungs" too: their lung fields are dark regions inside the body; the X-ray U-Net finds lungs on 3 % of CT slices).
AUTO_MAX_XRAY_LUNGS_FOR_CT = 0.2
MASK_CACHE = "lung_masks"
ROI_COLUMNS = ("path", "mask_path", "lung_mask_source", "roi_applied", "reason")
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
    checked = [mask_file_plausibility(mask_path, trusted=source == "dataset", modality=modality)
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
            rows.append([str(path), str(found), "dataset"])
        elif use_segmenter:
            target = cache / f"{cache_key(path)}{modality_of(modality).cache_suffix}.png"
            rows.append([str(path), str(target), "segmenter"])
            if not target.is_file():
                todo.append((str(path), target))
        else:
            rows.append([str(path), "", "none"])
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


def roi_image(image: np.ndarray, mask: np.ndarray | None, spec: RoiSpec, size: int,
              mask_channel: bool = False) -> tuple[np.ndarray, geometry.Box]:
    """The model's input of one (H, W, C) image at ``size`` x ``size``, and its crop box in full-image pixels.

    ``mask`` None (no plausible lungs) gives the full image. With ``mask_channel`` the constant is not
    applied; the dilated mask is appended as a last channel instead, for :func:`jitter_transform`.
    ``lungs-attention`` always appends the lung mask itself (all ones without lungs: the whole image is pooled).
    """
    height, width = image.shape[:2]
    full: geometry.Box = (0, 0, height, width)
    mask_channel = mask_channel or spec.mask_input
    kind = spec.kind
    if not kind.active or mask is None:
        resized = resize_image(image, size)
        if mask_channel:  # no lungs: the whole image is pooled (attention) or kept (the jitter's mask)
            keep = 0.0 if kind.removes_lungs else 1.0
            resized = np.concatenate([resized, np.full((size, size, 1), keep, np.float32)], axis=-1)
        return resized.astype(np.float32), full
    mask = lung_masks.resize_mask(mask, height, width)
    box = geometry.lung_box(mask, spec.margin) if kind.crop else full
    resized = geometry.crop_and_resize(image, box, size).astype(np.float32)
    if kind.fill is None and not kind.mask_channel:
        return resized, box
    if kind.mask_channel:
        lungs = resize_image(np.ascontiguousarray(geometry.crop(mask, box))[..., None].astype(np.float32), size)
        return np.concatenate([resized, lungs.reshape(size, size, 1)], axis=-1).astype(np.float32), box
    # The mask is applied at the model's size (as the training jitter does), so both agree exactly.
    grown = geometry.change_mask(mask, round(spec.dilation * max(height, width)))
    small = lung_masks.resize_mask(geometry.crop(grown, box), size, size)
    if mask_channel:
        return np.concatenate([resized, small[..., None].astype(np.float32)], axis=-1), box
    return geometry.apply_mask(resized, ~small if kind.removes_lungs else small, spec.fill), box


class RoiLoader:
    """``path -> model input`` under a spec, for the tf.data pipeline; ``channels`` is what it returns."""

    def __init__(self, spec: RoiSpec, table: pd.DataFrame, image_size: int, channels: int,
                 mask_channel: bool = False) -> None:
        self.spec, self.image_size, self.image_channels = spec, image_size, channels
        self.mask_channel = mask_channel or spec.mask_input
        self.channels = channels + (1 if self.mask_channel else 0)
        self.masks = {str(p): (m if ok else None) for p, m, ok in
                      zip(table["path"], table["mask_path"], table["roi_applied"].astype(bool))}
        self.key = f"roi:{spec}:{self.mask_channel}"

    def load(self, path: str) -> tuple[np.ndarray, geometry.Box, tuple[int, int]]:
        """The input of one image, its crop box and the full image's (H, W)."""
        image = load_image(path, channels=self.image_channels)
        mask_file = self.masks.get(str(path))
        mask = read_mask(mask_file) if mask_file else None
        if mask is not None and not mask.any():
            mask = None
        data, box = roi_image(image, mask, self.spec, self.image_size, self.mask_channel)
        return data, box, image.shape[:2]

    def __call__(self, path: str) -> np.ndarray:
        return self.load(path)[0]

    def graph_decoder(self, paths, fallback):
        """For ``tf.data``: ``path tensor -> input`` decoding ``paths`` in the graph where it gives what
        :meth:`__call__` gives (lungs-attention: no crop; :mod:`covid_tf.data.roi_pipeline`), else ``fallback``;
        None for the other modes."""
        if not self.spec.kind.mask_channel:  # lungs-attention and ct-lungs-attention
            return None
        from covid_tf.data import roi_pipeline

        table = roi_pipeline.mask_table(self.masks, [str(p) for p in paths], self.image_size, self.image_channels)
        return roi_pipeline.attention_decoder(table, self.image_size, self.image_channels, fallback)


def jitter_transform(spec: RoiSpec, seed: int = 0):
    """A batch function for training: dilate or erode each image's mask channel by a random radius in
    ``[-jitter, jitter]`` pixels, fill the mode's region with the constant (outside or the lungs) and drop it."""
    import tensorflow as tf

    radius = int(spec.jitter)
    generator = tf.random.Generator.from_seed(seed)

    def morph(masks, step: int):
        if step == 0:
            return masks
        pooled = grow_masks(masks if step > 0 else -masks, abs(step))  # erosion: the dilation of the negative
        return pooled if step > 0 else -pooled

    def apply(batch):
        images, masks = batch[..., :-1], batch[..., -1:]
        variants = tf.stack([morph(masks, step) for step in range(-radius, radius + 1)], axis=1)
        choice = generator.uniform([tf.shape(batch)[0]], 0, 2 * radius + 1, dtype=tf.int32)
        chosen = tf.gather(variants, choice, axis=1, batch_dims=1)
        keep = 1.0 - chosen if spec.kind.removes_lungs else chosen
        return images * keep + spec.fill * (1.0 - keep)

    return apply


@dataclass
class RoiInputs:
    """What a run feeds its pipelines: the ROI loader (None: plain decoding), the training loader and batch
    transform (the mask jitter), and the mask table (``ROI_COLUMNS``; the run's ``roi.csv``)."""

    loader: RoiLoader | None = None
    train_loader: RoiLoader | None = None
    transform: Callable | None = None
    table: pd.DataFrame | None = None


def _ct_share(paths: Sequence[str]) -> float:
    """The share of images that look like windowed CT slices
    (:func:`covid_tf.lungs.segmentation.ct_lungs.looks_like_ct`)."""
    from covid_tf.lungs.segmentation.ct_lungs import looks_like_ct

    return float(np.mean([looks_like_ct(load_image(path, channels=1)[..., 0]) for path in paths]))


def resolve_auto(paths: Sequence[str], mask_paths: Sequence[str | None] | None = None, *, seed: int = 0,
                 segmenter=None, cache_dir: str | Path | None = None) -> tuple[str, str]:
    """What ``roi="auto"`` means for these training images, and one line saying why.

    ``lungs-attention`` when at least :data:`AUTO_MIN_LUNGS` of a seeded sample of :data:`AUTO_SAMPLE` images
    have plausible lungs (the dataset's masks, else the segmenter's, cached as :func:`prepare_masks` does),
    else, when the X-ray segmenter finds lungs on at most :data:`AUTO_MAX_XRAY_LUNGS_FOR_CT` of them and at least
    :data:`AUTO_MIN_LUNGS` look like CT slices and have plausible CT lungs, ``ct-lungs-attention``, else ``none``:
    images where no pair of lungs is found train on the full image.
    """
    if not len(paths):
        return "none", "lung ROI (auto): no training images; full images"
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), min(AUTO_SAMPLE, len(paths)), replace=False))
    given = [mask_paths[i] for i in chosen] if mask_paths is not None else None
    table = prepare_masks([paths[i] for i in chosen], given, cache_dir=cache_dir, segmenter=segmenter)
    share = float(table["roi_applied"].astype(bool).mean())
    found = f"plausible lungs on {share:.0%} of {len(table)} sampled training images"
    if share >= AUTO_MIN_LUNGS:
        return ATTENTION_MODE, f"lung ROI (auto): {found}: --roi {ATTENTION_MODE}"
    if share <= AUTO_MAX_XRAY_LUNGS_FOR_CT and _ct_share([paths[i] for i in chosen]) >= AUTO_MIN_LUNGS:
        ct_table = prepare_masks([paths[i] for i in chosen], given, cache_dir=cache_dir, modality="ct")
        ct_share = float(ct_table["roi_applied"].astype(bool).mean())
        if ct_share >= AUTO_MIN_LUNGS:
            return CT_ATTENTION_MODE, (f"lung ROI (auto): {found}, CT lungs on {ct_share:.0%}: "
                                       f"--roi {CT_ATTENTION_MODE}")
        found += f" (CT lungs on {ct_share:.0%})"
    return "none", (f"lung ROI (auto): only {found} (not chest X-rays or CT slices, or the segmenters fail on "
                    "them): full images (--roi none)")


def run_inputs(cfg, split: pd.DataFrame) -> RoiInputs:
    """The lung ROI of a training config (``roi``, ``roi_margin``, ``roi_dilation``, ``roi_jitter``,
    ``roi_background``) on a split;
    masks from the split's ``mask_path`` column, the dataset layout or the segmenter (cached)."""
    spec = cfg.roi_spec
    if not spec.active:
        return RoiInputs()
    mask_paths = split["mask_path"].tolist() if "mask_path" in split else None
    table = prepare_masks(split["path"].tolist(), mask_paths, modality=spec.kind.modality)
    loader = RoiLoader(spec, table, cfg.image_size, cfg.channels)
    background = getattr(cfg, "roi_background", None) or 0.0
    if spec.mask_input and background:  # the outside of the lungs randomly filled (lung-attention training)
        dilation = round(spec.dilation * cfg.image_size)
        return RoiInputs(loader, loader, background_transform(cfg.channels, background, dilation, cfg.seed), table)
    if not spec.jitter:
        return RoiInputs(loader, loader, None, table)
    jittered = RoiLoader(spec, table, cfg.image_size, cfg.channels, mask_channel=True)
    return RoiInputs(loader, jittered, jitter_transform(spec, cfg.seed), table)


def fallback_note(table: pd.DataFrame | None) -> str:
    """One line on how many images had no plausible lungs and were used whole ('' when none)."""
    if table is None or table.empty:
        return ""
    fallen = table[~table["roi_applied"].astype(bool)]
    words = {"dataset": "from the dataset", "segmenter": "from the segmenter", "none": "without a mask"}
    text = "lung masks: " + ", ".join(f"{count} {words.get(str(name), f'from {name}')}"
                                      for name, count in table["lung_mask_source"].value_counts().items())
    if fallen.empty:
        return text + "; every image has plausible lungs"
    first = fallen.iloc[0]
    return (text + f"; {len(fallen)} image(s) without plausible lungs used whole (e.g. {first['path']}: "
            f"{first['reason']})")
