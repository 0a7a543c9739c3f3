"""The one table of CAM methods, and the scores a gradient method differentiates; no TensorFlow, so the
command line reads it (``explain --method``, ``--score``) before it imports any model code.

A method is one row here plus its :class:`~covid_tf.explain.base.BaseCAM` subclass in
:mod:`covid_tf.explain.methods`: :data:`~covid_tf.explain.methods.METHODS`, ``get_explainer`` and the
``explain`` command all read this table, so a new row is accepted everywhere at once.
"""

from __future__ import annotations

#: Method name -> the name of its explainer class in ``covid_tf.explain.methods``, in the order ``--help`` lists.
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
    "cam": "CAM",
    "layercam": "LayerCAM",
}
#: Other spellings of a method (after case, ``_`` and ``-`` are dropped).
ALIASES = {"gradcamplusplus": "gradcam++", "gradcampp": "gradcam++"}
#: The scores a gradient method can differentiate: the pre-softmax class logit or the probability.
SCORES = ("logit", "probability")


def method_name(name: str) -> str:
    """The table's name of method ``name`` (case, ``_`` and ``-`` ignored; ``GradCAMPlusPlus`` is ``gradcam++``).

    Raises ``ValueError`` for a name the table does not hold."""
    key = str(name).strip().lower().replace("_", "").replace("-", "")
    key = ALIASES.get(key, key)
    if key not in CAM_METHODS:
        raise ValueError(f"unknown explanation method {name!r}; choose one of {sorted(CAM_METHODS)}")
    return key
