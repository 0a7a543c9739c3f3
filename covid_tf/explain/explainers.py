"""``explain``, the one call over the CAM family, and :class:`ExplainerCache`, explainers kept by the caller
that owns it (the package itself keeps no state)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import keras
import numpy as np

from covid_tf.errors import CovidTfError
from covid_tf.explain.base import BaseCAM
from covid_tf.explain.methods import get_explainer


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
    """Explain images with one method (``score``: see :func:`~covid_tf.explain.methods.get_explainer`).

    Returns ``(heatmaps, class_indices, probabilities)``: float32 (N, H, W) in [0, 1], the explained
    class per image int64 (N,) (the predicted one unless ``class_index`` is given), and the model's
    probabilities float32 (N, C).

    Each call builds its explainer; pass a ``cache`` (:class:`ExplainerCache`) to reuse explainers across calls.
    """
    explainer = (cache.get(method, model, layer_name, batch_size, score) if cache is not None
                 else get_explainer(method, model, layer_name=layer_name, batch_size=batch_size, score=score))
    return explainer.explain(images, class_index)


def requested_class(class_name: str | None, class_names: Sequence[str]) -> int | None:
    """The ``class_index`` that explains ``class_name`` among a model's classes (None: each image's predicted
    class); ``CovidTfError`` naming the model's classes for a name it does not have."""
    if class_name is None:
        return None
    if class_name not in class_names:
        raise CovidTfError(f"unknown class {class_name!r}; the model's classes are {', '.join(class_names)}")
    return list(class_names).index(class_name)
