"""Model-parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

An explanation that explains the *model* must change when the model's weights are replaced by random
ones. :func:`randomization_sanity_check` clones the model, re-initialises its weights at random,
recomputes the maps for the same classes and reports the Spearman rank correlation between original
and randomised maps. A method that ignores the weights (an edge detector, the image itself) keeps a
correlation near 1 and fails.

Randomisation: every trainable weight of a randomised layer is redrawn from a normal distribution
with the mean and standard deviation of the original weight (seeded), so activations keep their
scale; non-trainable state (BatchNorm moving statistics) is kept. ``mode="full"`` randomises all
layers at once; ``mode="cascading"`` randomises layers one by one from the output down and
reports the correlation after each step (the final step equals the full randomisation).

Pass rule: ``passed = mean_correlation < max_correlation`` (default 0.5): the randomised maps must
share less than a moderate rank correlation with the original ones on average.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from scipy import stats

from covid_tf.explain.base import BaseCAM, as_image_batch

# method(model, images, class_indices) -> heatmaps (N, H, W)
HeatmapFunction = Callable[[keras.Model, np.ndarray, np.ndarray], np.ndarray]


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (average ranks for ties).

    Two constant arrays give 1.0 when equal and 0.0 otherwise; one constant array gives 0.0.
    """
    first = np.asarray(first, dtype=np.float64).ravel()
    second = np.asarray(second, dtype=np.float64).ravel()
    if first.shape != second.shape:
        raise ValueError(f"arrays differ in size: {first.size} and {second.size}")
    first_constant, second_constant = np.ptp(first) == 0, np.ptp(second) == 0
    if first_constant or second_constant:
        return 1.0 if first_constant and second_constant and np.array_equal(first, second) else 0.0
    return float(np.corrcoef(stats.rankdata(first), stats.rankdata(second))[0, 1])


def _as_heatmap_function(
    method: str | type[BaseCAM] | HeatmapFunction, layer_name: str | None, batch_size: int
) -> HeatmapFunction:
    """Turn a method name, a :class:`BaseCAM` subclass or a function into ``f(model, images, classes)``."""
    if isinstance(method, str) or (isinstance(method, type) and issubclass(method, BaseCAM)):

        def explain_with(model: keras.Model, images: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
            from covid_tf.explain.methods import get_explainer

            explainer = (
                get_explainer(method, model, layer_name=layer_name, batch_size=batch_size)
                if isinstance(method, str)
                else method(model, layer_name, batch_size)
            )
            return explainer.explain(images, class_indices)[0]

        return explain_with
    if callable(method):
        return method
    raise ValueError(f"method must be a method name, a BaseCAM subclass or a function, got {method!r}")


def _randomize_layer(layer: keras.layers.Layer, rng: np.random.Generator) -> bool:
    """Redraw a layer's trainable weights in place; return whether it had any."""
    changed = False
    for variable in layer.trainable_weights:
        values = np.asarray(variable.numpy(), dtype=np.float64)
        drawn = rng.normal(values.mean(), values.std(), size=values.shape)
        variable.assign(drawn.astype(variable.dtype))
        changed = True
    return changed


def _clone(model: keras.Model) -> keras.Model:
    """A copy with its own weights, uncompiled: ``clone_model`` of a compiled model compiles the copy from the
    compile config, which fails for a loss that holds a tensor (weighted cross-entropy: "unsupported type")."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    clone = keras.models.clone_model(keras.Model(inputs, model.outputs, name=model.name))
    clone.set_weights(model.get_weights())
    return clone


def _randomized_correlations(model: keras.Model, images: np.ndarray, class_indices: np.ndarray, explain,
                             original: np.ndarray, mode: str, seed: int) -> tuple[list[float], list[dict]]:
    """Rank correlations between the original maps and those of a randomised copy (all layers at once, or
    layer by layer from the top for "cascading", with the mean after each layer)."""
    rng = np.random.default_rng(seed)
    randomized = _clone(model)

    def correlations_now() -> list[float]:
        maps = np.asarray(explain(randomized, images, class_indices))
        return [rank_correlation(before, after) for before, after in zip(original, maps, strict=True)]

    cascade = []
    if mode == "full":
        for layer in randomized.layers:
            _randomize_layer(layer, rng)
        return correlations_now(), cascade
    correlations = [1.0] * len(images)
    for layer in reversed(randomized.layers):
        if _randomize_layer(layer, rng):
            correlations = correlations_now()
            cascade.append({"layer": layer.name, "mean_correlation": float(np.mean(correlations))})
    return correlations, cascade


def randomization_sanity_check(
    model: keras.Model,
    images: np.ndarray,
    method: str | type[BaseCAM] | HeatmapFunction = "gradcam",
    seed: int = 0,
    layer_name: str | None = None,
    mode: str = "full",
    class_index: int | np.ndarray | None = None,
    max_correlation: float = 0.5,
    batch_size: int = 32,
) -> dict:
    """Compare a method's maps on the model and on a copy with random weights.

    Args:
        model: the trained model (left unchanged).
        images: float32 (N, H, W, C) in [0, 1].
        method: a name of :func:`covid_tf.explain.get_explainer`, a :class:`BaseCAM` subclass, or a
            function ``f(model, images, class_indices) -> heatmaps (N, H, W)``.
        seed: seeds the random weights.
        mode: "full" (all layers at once) or "cascading" (from the output layer down).
        class_index: the classes explained on both models; default the original model's predictions
            (the randomised model's own predictions would change the question).
        max_correlation: the check passes when the mean correlation is below this.

    Returns:
        ``{"method", "mode", "seed", "class_indices", "correlations" (per image), "mean_correlation",
        "max_correlation", "passed"}``, plus for "cascading" ``"cascade"``: a list of
        ``{"layer", "mean_correlation"}`` after randomising each layer (top first).
    """
    if mode not in ("full", "cascading"):
        raise ValueError(f"mode must be 'full' or 'cascading', got {mode!r}")
    images = as_image_batch(images)
    explain = _as_heatmap_function(method, layer_name, batch_size)
    if class_index is None:
        class_indices = np.argmax(np.asarray(model(images, training=False)), axis=-1)
    else:
        class_indices = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (len(images),)).copy()
    original = np.asarray(explain(model, images, class_indices))
    correlations, cascade = _randomized_correlations(model, images, class_indices, explain, original, mode, seed)
    mean_correlation = float(np.mean(correlations))
    result = {
        "method": method if isinstance(method, str) else getattr(method, "__name__", repr(method)),
        "mode": mode,
        "seed": seed,
        "class_indices": class_indices.tolist(),
        "correlations": correlations,
        "mean_correlation": mean_correlation,
        "max_correlation": max_correlation,
        "passed": bool(mean_correlation < max_correlation),
    }
    if mode == "cascading":
        result["cascade"] = cascade
    return result
