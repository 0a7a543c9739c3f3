"""The lung ROI of a classifier run: the model's input images from each image and its lung mask
(:mod:`covid_tf.lungs.roi.mask_table` finds the masks).

``train --roi`` modes (:data:`covid_tf.lungs.roi.modes.ROI_MODES`), applied again by ``evaluate``, ``predict`` and
``explain``:

- ``none``: the full image.
- ``lungs``: the lung box with a margin (:func:`covid_tf.lungs.roi.geometry.lung_box`), resized to the model's size.
- ``lungs-masked``: the same crop with everything outside the dilated lungs set to a constant.
- ``lungs-removed``: the full image with the dilated lungs set to a constant, i.e. only what lies
  outside the lungs; for the shortcut audit (a model that still separates the classes from it has
  learned shortcuts), not for diagnosis.
- ``lungs-attention``: the full image, unmasked, with its lung mask as a last input channel; the model
  (:mod:`covid_tf.models.lung_attention`) averages its last feature map over the lungs only. (On the dev
  set the full image beat the lung box: docs/LUNG_ROI.md.)

``auto`` is resolved here (:func:`resolve_auto`), on a sample of the training images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.images import load_image, resize_image
from covid_tf.lungs.roi import geometry
from covid_tf.lungs.roi.background import background_transform, grow_masks
from covid_tf.lungs.roi.mask_table import prepare_masks
from covid_tf.lungs.roi.modes import ATTENTION_MODE, CT_ATTENTION_MODE, RoiSpec
from covid_tf.lungs.segmentation import masks as lung_masks
from covid_tf.lungs.segmentation.masks import read_mask

AUTO_SAMPLE = 64  # training images segmented to decide what "auto" means
AUTO_MIN_LUNGS = 0.8  # share of them that must have plausible lungs
# CT lungs are tried only when the X-ray segmenter finds lungs on at most this share (X-rays get plausible "CT
# lungs" too: their lung fields are dark regions inside the body; the X-ray U-Net finds lungs on 3 % of CT slices).
AUTO_MAX_XRAY_LUNGS_FOR_CT = 0.2
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
