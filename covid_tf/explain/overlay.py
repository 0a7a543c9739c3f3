"""Heatmaps drawn over images, and the four-panel explanation figure of seed 000."""

from __future__ import annotations

import cv2
import numpy as np
from matplotlib.figure import Figure

from covid_tf.explain.segmentation import DEFAULT_THRESHOLD, draw_contours, segment_heatmap


def _image_to_rgb_float(image: np.ndarray) -> np.ndarray:
    """Check a float image in [0, 1] (H, W), (H, W, 1) or (H, W, 3) and return it as float32 RGB."""
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"image must be float in [0, 1], got dtype {image.dtype} (divide 8-bit images by 255)"
        )
    if image.size and (not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0):
        raise ValueError(f"image must be float in [0, 1], got values in [{image.min()}, {image.max()}]")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., np.newaxis], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    return image.astype(np.float32)


def _heatmap_for(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Check a heatmap (H, W) in [0, 1] and resize it (bilinear) to ``size`` (height, width)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must have shape (H, W), got {heatmap.shape}")
    if heatmap.shape != size:
        heatmap = cv2.resize(heatmap, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.nan_to_num(heatmap), 0.0, 1.0)


def colorize_heatmap(heatmap: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Return a heatmap (H, W) in [0, 1] as a uint8 RGB image through an OpenCV colour map."""
    heatmap = _heatmap_for(heatmap, np.asarray(heatmap).shape[:2])
    colored_bgr = cv2.applyColorMap(np.uint8(np.round(255 * heatmap)), colormap)
    return cv2.cvtColor(colored_bgr, cv2.COLOR_BGR2RGB)


def overlay_heatmap(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """Blend a colour-mapped heatmap over an image: ``alpha * heat + (1 - alpha) * image``.

    Args:
        image: float in [0, 1], (H, W), (H, W, 1) or (H, W, 3); anything else raises ``ValueError``
            (as pytorch-grad-cam's ``show_cam_on_image``). Grayscale becomes RGB.
        heatmap: (h, w) in [0, 1]; resized to the image when the size differs.
        alpha: weight of the heatmap, in [0, 1].
        colormap: an OpenCV colour map; its BGR output is converted to RGB.

    Returns:
        uint8 RGB (H, W, 3).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = _image_to_rgb_float(image)
    heat = colorize_heatmap(_heatmap_for(heatmap, rgb.shape[:2]), colormap).astype(np.float32) / 255.0
    blended = alpha * heat + (1.0 - alpha) * rgb
    return np.uint8(np.round(255 * np.clip(blended, 0.0, 1.0)))


def explanation_panel(
    image: np.ndarray,
    heatmap: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    title: str | None = None,
    alpha: float = 0.4,
) -> Figure:
    """A four-panel figure: image | heatmap | overlay | thresholded region with its contours.

    The last panel is seed 000's "segmentation at threshold 0.85": the region where the heatmap is
    at least ``threshold``, outlined in red on the image. Returns a matplotlib ``Figure`` (not
    registered with pyplot; save it with ``fig.savefig``, Jupyter displays it).
    """
    rgb = _image_to_rgb_float(image)
    heat = _heatmap_for(heatmap, rgb.shape[:2])
    mask, contours = segment_heatmap(heat, threshold)
    image_uint8 = np.uint8(np.round(255 * rgb))
    region = np.uint8(np.round(image_uint8 * np.where(mask, 1.0, 0.35)[..., np.newaxis]))
    region = draw_contours(region, contours, color=(255, 0, 0), thickness=max(1, rgb.shape[0] // 128))

    figure = Figure(figsize=(12, 3.4), layout="constrained")
    axes = figure.subplots(1, 4)
    axes[0].imshow(rgb)
    axes[0].set_title("image")
    shown = axes[1].imshow(heat, cmap="jet", vmin=0.0, vmax=1.0)
    axes[1].set_title("heatmap")
    figure.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02)
    axes[2].imshow(overlay_heatmap(rgb, heat, alpha=alpha))
    axes[2].set_title("overlay")
    axes[3].imshow(region)
    axes[3].set_title(f"region >= {threshold:g} ({mask.mean():.0%} of image)")
    for axis in axes:
        axis.set_axis_off()
    if title:
        figure.suptitle(title)
    return figure
