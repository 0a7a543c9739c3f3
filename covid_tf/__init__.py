"""covid_tf: COVID-19 detection on chest X-rays and CT slices, with class activation maps.

The Python API, next to the command line::

    from covid_tf import TrainConfig, evaluate, explain, load_model, train_run

    result = train_run(TrainConfig(data="data/radiography", model="baseline", epochs=5), "runs/baseline")
    loaded = load_model("runs/baseline/model.keras")          # the model and its class names
    evaluate("runs/baseline/model.keras", "data/radiography", "runs/baseline/eval")
    heatmaps, classes, probabilities = explain.explain(loaded.model, images, method="gradcam")

Importing the package is cheap: these names load (with TensorFlow) on first use, and TensorFlow's
first import is kept free of C++ start-up noise (:mod:`covid_tf.tf_quiet`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from covid_tf import config as _config
from covid_tf import tf_quiet as _tf_quiet  # noqa: F401  (installs the quiet-import hook)

__version__ = _config.VERSION

# Public name -> (module, attribute); attribute None: the module itself (``covid_tf.explain``, the CAM package).
_API: dict[str, tuple[str, str | None]] = {
    "TrainConfig": ("covid_tf.runs.config", "TrainConfig"),
    "train_run": ("covid_tf.workflows.train", "train_run"),
    "load_model": ("covid_tf.runs.inference", "load_model"),
    "evaluate": ("covid_tf.workflows.evaluate", "evaluate_model"),
    "explain": ("covid_tf.explain", None),
    "software_versions": ("covid_tf.runs.record", "software_versions"),
}
__all__ = ["TrainConfig", "__version__", "evaluate", "explain", "load_model", "software_versions", "train_run"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these
    from covid_tf import explain
    from covid_tf.runs.config import TrainConfig
    from covid_tf.runs.inference import load_model
    from covid_tf.workflows.evaluate import evaluate_model as evaluate
    from covid_tf.workflows.train import train_run


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'covid_tf' has no attribute {name!r}")
    module_name, attribute = _API[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
