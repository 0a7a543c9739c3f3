"""Class activation maps for the classifiers of covid_tf: CAM, Grad-CAM, Grad-CAM++, Score-CAM, LayerCAM.

Quick use::

    from covid_tf import explain
    heatmaps, classes, probabilities = explain.explain(model, images, method="gradcam")
    figure = explain.explanation_panel(images[0], heatmaps[0], threshold=0.85)

``heatmaps`` are float32 (N, H, W) in [0, 1] at the input size. For repeated calls, build the
explainer once with :func:`get_explainer` (it traces its ``tf.function`` on the first batch), or pass an
:class:`ExplainerCache`. The methods are the rows of :mod:`covid_tf.explain.cam_methods`.

Importing this package is cheap (no TensorFlow, so the command line reads the method table): the names
below, and the submodules, load on first use. The package is a plain module and keeps no state.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExplainerCache": "explainers", "explain": "explainers",
    "BaseCAM": "base", "build_activation_model": "base", "default_target_layer": "base", "find_target_layer": "base",
    "CAM": "methods", "GradCAM": "methods", "GradCAMPlusPlus": "methods", "LayerCAM": "methods",
    "ScoreCAM": "methods", "METHODS": "methods", "find_cam_head": "methods", "get_explainer": "methods",
    "CAM_METHODS": "cam_methods",
    "colorize_heatmap": "overlay", "explanation_panel": "overlay", "overlay_heatmap": "overlay",
    "deletion_score": "quality", "energy_in_mask": "quality", "heatmap_iou": "quality",
    "mask_area_fraction": "quality", "pointing_game": "quality", "summarize": "quality",
    "randomization_sanity_check": "sanity", "rank_correlation": "sanity",
    "bounding_boxes": "segmentation", "draw_contours": "segmentation", "segment_heatmap": "segmentation",
    "threshold_heatmap": "segmentation",
    "find_logit_layer": "target",
}
_SUBMODULES = ("base", "cam_methods", "explainers", "lung_energy", "methods", "overlay", "quality", "sanity",
               "segmentation", "target")
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
