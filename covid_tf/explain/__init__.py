"""Class activation maps for the classifiers of covid_tf: CAM, Grad-CAM, Grad-CAM++, Score-CAM, LayerCAM.

Quick use::

    from covid_tf import explain
    heatmaps, classes, probabilities = explain.explain(model, images, method="gradcam")
    figure = explain.explanation_panel(images[0], heatmaps[0], threshold=0.85)

The package itself is callable as :func:`explain` (``from covid_tf import explain; explain(model, images)``).
``heatmaps`` are float32 (N, H, W) in [0, 1] at the input size. For repeated calls, build the
explainer once with :func:`get_explainer` (it compiles its ``tf.function`` on the first batch).
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from collections.abc import Sequence

import keras
import numpy as np

from covid_tf.explain.base import (
    BaseCAM,
    build_activation_model,
    default_target_layer,
    find_target_layer,
)
from covid_tf.explain.methods import (
    CAM,
    METHODS,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    find_cam_head,
    get_explainer,
)
from covid_tf.explain.overlay import colorize_heatmap, explanation_panel, overlay_heatmap
from covid_tf.explain.quality import (
    deletion_score,
    energy_in_mask,
    heatmap_iou,
    mask_area_fraction,
    pointing_game,
    summarize,
)
from covid_tf.explain.sanity import randomization_sanity_check, rank_correlation
from covid_tf.explain.segmentation import bounding_boxes, draw_contours, segment_heatmap, threshold_heatmap
from covid_tf.explain.target import find_logit_layer


class ExplainerCache:
    """Explainers kept for reuse, owned by the caller that creates it: a loop over batches then builds and traces
    each explainer once. Bounded to ``size`` explainers (each keeps its model alive); :meth:`clear` releases them."""

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"an explainer cache holds at least 1 explainer, got {size}")
        self.size = size
        self._explainers: OrderedDict[tuple, BaseCAM] = OrderedDict()

    def get(self, method: str, model: keras.Model, layer_name: str | None = None, batch_size: int = 32,
            score: str = "logit") -> BaseCAM:
        """The explainer for these arguments: the cached one, or a new one (the oldest is dropped when full)."""
        key = (id(model), str(method).lower(), layer_name, int(batch_size), score)
        explainer = self._explainers.get(key)
        if explainer is None or explainer.model is not model:
            explainer = get_explainer(method, model, layer_name=layer_name, batch_size=batch_size, score=score)
            self._explainers[key] = explainer
            while len(self._explainers) > self.size:
                self._explainers.popitem(last=False)
        self._explainers.move_to_end(key)
        return explainer

    def clear(self) -> None:
        """Forget every explainer (and so release their models)."""
        self._explainers.clear()

    def __len__(self) -> int:
        return len(self._explainers)


def explain(
    model: keras.Model,
    images: np.ndarray,
    method: str = "gradcam",
    class_index: int | Sequence[int] | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
    score: str = "logit",
    cache: ExplainerCache | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explain images with one method (``score``: see :func:`get_explainer`).

    Returns ``(heatmaps, class_indices, probabilities)``: float32 (N, H, W) in [0, 1], the explained
    class per image int64 (N,) (the predicted one unless ``class_index`` is given), and the model's
    probabilities float32 (N, C).

    Each call builds its explainer; pass a ``cache`` (:class:`ExplainerCache`) to reuse explainers across calls.
    """
    explainer = (cache.get(method, model, layer_name, batch_size, score) if cache is not None
                 else get_explainer(method, model, layer_name=layer_name, batch_size=batch_size, score=score))
    return explainer.explain(images, class_index)


__all__ = [
    "CAM",
    "METHODS",
    "ExplainerCache",
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "LayerCAM",
    "ScoreCAM",
    "bounding_boxes",
    "build_activation_model",
    "colorize_heatmap",
    "default_target_layer",
    "deletion_score",
    "draw_contours",
    "energy_in_mask",
    "explain",
    "explanation_panel",
    "find_cam_head",
    "find_logit_layer",
    "find_target_layer",
    "get_explainer",
    "heatmap_iou",
    "mask_area_fraction",
    "overlay_heatmap",
    "pointing_game",
    "randomization_sanity_check",
    "rank_correlation",
    "segment_heatmap",
    "summarize",
    "threshold_heatmap",
]


class _CallablePackage(types.ModuleType):
    """The package is callable: ``from covid_tf import explain`` then ``explain(model, images)`` (the public API
    since 0.1; the package keeps no state of its own)."""

    def __call__(self, *args, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
