"""How well a heatmap agrees with a reference region (lesion or lung mask), and how much the model
depends on the hot region.

The agreement measures are plain numpy and take a heatmap (H, W) in [0, 1] and a bool mask; a mask of
another size is resized to the heatmap (nearest neighbour). They raise ``ValueError`` for an empty
mask, where they mean nothing (:func:`summarize` reports NaN instead).

| measure | meaning | chance level |
| --- | --- | --- |
| :func:`energy_in_mask` | share of the heat inside the mask | :func:`mask_area_fraction` |
| :func:`pointing_game` | the hottest pixel lies in the mask | :func:`mask_area_fraction` |
| :func:`heatmap_iou` | IoU of ``heatmap >= threshold`` with the mask | - |
| :func:`deletion_score` | probability drop when the hottest pixels are removed | ``random_drop`` |
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from covid_tf.explain.segmentation import DEFAULT_THRESHOLD, as_heatmap

FILL_MODES = ("mean", "blur")


def _finite_heatmap(heatmap: np.ndarray) -> np.ndarray:
    return np.nan_to_num(as_heatmap(heatmap, np.float64))


def _mask_for(mask: np.ndarray, shape: tuple[int, int], allow_empty: bool = False) -> np.ndarray:
    """Return a bool mask of ``shape``, resized with nearest neighbour when needed."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    mask = mask > 0
    if mask.shape != tuple(shape):
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    if not allow_empty and not mask.any():
        raise ValueError("mask is empty: the measure is undefined for an image without a marked region")
    return mask


def mask_area_fraction(mask: np.ndarray) -> float:
    """Share of the image the mask covers: chance level of :func:`energy_in_mask` and the pointing game."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    return float(np.mean(mask > 0))


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's sum that lies inside the mask, in [0, 1]; NaN for an all-zero heatmap (no heat:
    the share is undefined). The toolkit's one measure of it: lung energy and lesion energy both use it.

    A heatmap smaller than the mask is enlarged to it (bilinear), so a full-resolution lung mask keeps its
    outline; a smaller mask is enlarged to the heatmap (nearest neighbour)."""
    heatmap = _finite_heatmap(heatmap)
    mask = np.asarray(mask)
    mask = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
    if mask.ndim == 2 and mask.size > heatmap.size:
        heatmap = cv2.resize(heatmap, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = _mask_for(mask, heatmap.shape)
    total = heatmap.sum()
    return float(heatmap[mask].sum() / total) if total > 0 else float("nan")


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the hottest pixel lies inside the mask (with ties: whether any hottest pixel does).

    An all-zero heatmap points nowhere and returns False.
    """
    heatmap = _finite_heatmap(heatmap)
    mask = _mask_for(mask, heatmap.shape)
    peak = heatmap.max()
    if peak <= 0:
        return False
    return bool(np.any(mask & (heatmap == peak)))


def heatmap_iou(heatmap: np.ndarray, mask: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Intersection over union of the region ``heatmap >= threshold`` with the mask."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    heatmap = _finite_heatmap(heatmap)
    mask = _mask_for(mask, heatmap.shape)
    region = heatmap >= threshold
    return float(np.sum(region & mask) / np.sum(region | mask))


def _hottest(heatmap: np.ndarray, fraction: float) -> np.ndarray:
    """Bool mask of the ``fraction`` of pixels with the highest values (exactly that many, ties by order)."""
    count = int(round(fraction * heatmap.size))
    selected = np.zeros(heatmap.size, dtype=bool)
    if count > 0:
        selected[np.argsort(-heatmap.ravel(), kind="stable")[:count]] = True
    return selected.reshape(heatmap.shape)


def _fill_image(image: np.ndarray, fill: str | float) -> np.ndarray:
    """The image that replaces deleted pixels: the image mean, a strong blur, or a constant."""
    if isinstance(fill, str):
        if fill == "mean":
            return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).astype(np.float32)
        if fill == "blur":
            sigma = max(image.shape[0], image.shape[1]) / 8
            blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
            return blurred.reshape(image.shape).astype(np.float32)
        raise ValueError(f"fill must be one of {FILL_MODES} or a number in [0, 1], got {fill!r}")
    if not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"fill must be one of {FILL_MODES} or a number in [0, 1], got {fill!r}")
    return np.full(image.shape, float(fill), dtype=np.float32)


def _random_regions(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A random blobby region of the same area as the deleted one: smooth noise, hottest ``fraction``."""
    noise = rng.random((8, 8)).astype(np.float32)
    smooth = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return _hottest(smooth.astype(np.float64), fraction)


def deletion_score(
    model,
    image: np.ndarray,
    heatmap: np.ndarray,
    class_index: int,
    fraction: float = 0.2,
    fill: str | float = "mean",
    n_random: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """How much the class probability drops when the hottest ``fraction`` of pixels is removed.

    The removed pixels are replaced by ``fill``: "mean" (the image mean), "blur" (a strong Gaussian
    blur of the image) or a constant in [0, 1]. As a baseline the same area is removed at ``n_random``
    random blob-shaped regions (seeded). A faithful heatmap gives ``drop`` well above ``random_drop``.

    Returns ``{"probability", "deleted_probability", "drop", "random_drop", "drop_over_random"}``
    where ``drop_over_random = drop - random_drop``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3:
        raise ValueError(f"image must have shape (H, W, C), got {image.shape}")
    if image.min() < 0.0 or image.max() > 1.0:
        raise ValueError("image must be float in [0, 1]")
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.shape != image.shape[:2]:
        heatmap = cv2.resize(
            heatmap.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR
        ).astype(np.float64)
    heatmap = _finite_heatmap(heatmap)
    filled = _fill_image(image, fill)
    rng = np.random.default_rng(seed)
    regions = [_hottest(heatmap, fraction)] + [
        _random_regions(heatmap.shape, fraction, rng) for _ in range(n_random)
    ]
    batch = [image] + [np.where(region[..., np.newaxis], filled, image) for region in regions]
    probabilities = np.asarray(model(np.stack(batch).astype(np.float32), training=False))[:, int(class_index)]
    original, deleted, randoms = float(probabilities[0]), float(probabilities[1]), probabilities[2:]
    random_drop = float(np.mean(original - randoms))
    return {
        "probability": original,
        "deleted_probability": deleted,
        "drop": original - deleted,
        "random_drop": random_drop,
        "drop_over_random": (original - deleted) - random_drop,
    }


def _mask_measures(heatmap: np.ndarray, mask: np.ndarray | None, threshold: float) -> dict[str, float]:
    """Energy in the mask, its area, the pointing game and the IoU; NaN without a (non-empty) mask."""
    mask = None if mask is None else _mask_for(mask, heatmap.shape, allow_empty=True)
    if mask is None or not mask.any():
        return {"energy_in_mask": np.nan, "mask_area_fraction": np.nan if mask is None else 0.0,
                "pointing_game": np.nan, "iou": np.nan}
    return {"energy_in_mask": energy_in_mask(heatmap, mask), "mask_area_fraction": mask_area_fraction(mask),
            "pointing_game": float(pointing_game(heatmap, mask)), "iou": heatmap_iou(heatmap, mask, threshold)}


def summarize(
    heatmaps: np.ndarray,
    masks: Sequence[np.ndarray | None] | np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    model=None,
    images: np.ndarray | None = None,
    class_indices: Sequence[int] | np.ndarray | None = None,
    fraction: float = 0.2,
    fill: str | float = "mean",
    seed: int = 0,
) -> list[dict[str, float]]:
    """All measures for a batch: one dict per image.

    Args:
        heatmaps: (N, H, W) in [0, 1].
        masks: one bool mask per image (None, or an empty mask, for an image without a region: its
            mask measures are NaN); None skips the mask measures.
        threshold: for :func:`heatmap_iou` and ``hot_area_fraction``.
        model, images, class_indices: when all given, the :func:`deletion_score` numbers are added.

    Keys: ``hot_area_fraction`` always; with masks ``energy_in_mask``, ``mask_area_fraction``,
    ``pointing_game`` (1.0 / 0.0), ``iou``; with a model the keys of :func:`deletion_score`.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must have shape (N, H, W), got {heatmaps.shape}")
    if masks is not None and len(masks) != len(heatmaps):
        raise ValueError(f"got {len(masks)} masks for {len(heatmaps)} heatmaps")
    with_deletion = model is not None and images is not None and class_indices is not None
    if with_deletion and not (len(images) == len(class_indices) == len(heatmaps)):
        raise ValueError("images, class_indices and heatmaps must have the same length")
    rows = []
    for index, heatmap in enumerate(heatmaps):
        row: dict[str, float] = {"hot_area_fraction": float(np.mean(heatmap >= threshold))}
        if masks is not None:
            row.update(_mask_measures(heatmap, masks[index], threshold))
        if with_deletion:
            row.update(deletion_score(model, images[index], heatmap, int(class_indices[index]),
                                      fraction=fraction, fill=fill, seed=seed))
        rows.append(row)
    return rows
