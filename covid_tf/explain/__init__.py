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
from covid_tf.explain.methods import CAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, find_cam_head
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

METHODS: dict[str, type[BaseCAM]] = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "layercam": LayerCAM,
}

# The explainers of the last few explain() calls, so a loop over images does not rebuild and retrace
# them. Bounded, because each one keeps its model alive.
_CACHE_SIZE = 4
_recent_explainers: OrderedDict[tuple, BaseCAM] = OrderedDict()


def get_explainer(
    name: str, model: keras.Model, layer_name: str | None = None, batch_size: int = 32, score: str = "logit"
) -> BaseCAM:
    """Return the explainer ``name`` (one of :data:`METHODS`: "cam", "gradcam", "gradcam++", "scorecam",
    "layercam").

    ``layer_name`` defaults to the last layer with a 4-D output (for "cam": the layer feeding the
    GlobalAveragePooling2D). ``score`` is what gradient methods differentiate: "logit" (the pre-softmax
    class score, default) or "probability". Raises ``ValueError`` for an unknown name or a model the
    method cannot explain (e.g. "cam" on a head with a hidden Dense layer).
    """
    key = str(name).strip().lower().replace("_", "").replace("-", "")
    key = {"gradcamplusplus": "gradcam++", "gradcampp": "gradcam++"}.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown explanation method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[key](model, layer_name=layer_name, batch_size=batch_size, score=score)


def explain(
    model: keras.Model,
    images: np.ndarray,
    method: str = "gradcam",
    class_index: int | Sequence[int] | None = None,
    layer_name: str | None = None,
    batch_size: int = 32,
    score: str = "logit",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explain images with one method (``score``: see :func:`get_explainer`).

    Returns ``(heatmaps, class_indices, probabilities)``: float32 (N, H, W) in [0, 1], the explained
    class per image int64 (N,) (the predicted one unless ``class_index`` is given), and the model's
    probabilities float32 (N, C).

    The last few explainers are reused when the same model, method, layer and batch size come again.
    """
    key = (id(model), str(method).lower(), layer_name, int(batch_size), score)
    explainer = _recent_explainers.get(key)
    if explainer is None or explainer.model is not model:
        explainer = get_explainer(method, model, layer_name=layer_name, batch_size=batch_size, score=score)
        _recent_explainers[key] = explainer
        while len(_recent_explainers) > _CACHE_SIZE:
            _recent_explainers.popitem(last=False)
    _recent_explainers.move_to_end(key)
    return explainer.explain(images, class_index)


__all__ = [
    "CAM",
    "METHODS",
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
    """The package is callable: ``from covid_tf import explain`` then ``explain(model, images)``."""

    def __call__(self, *args, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
