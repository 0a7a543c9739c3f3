"""Loading a trained model safely, with its class names, and predicting on image files."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from covid_tf import config
from covid_tf.errors import CovidTfError

RUN_CONFIG = "config.json"


@dataclass
class LoadedModel:
    """A Keras model with what is needed to feed it: class names, image size and channels."""

    model: keras.Model
    class_names: list[str]
    image_size: int
    channels: int
    path: Path

    def predict_paths(self, paths, batch_size: int = config.BATCH_SIZE) -> np.ndarray:
        """Softmax probabilities (N, K) for image files, streamed from disk in batches."""
        return predict_paths(self.model, paths, self.image_size, self.channels, batch_size)


def load_keras_model(path: str | Path, *, allow_unsafe: bool = False) -> keras.Model:
    """Load a ``.keras`` file with Keras safe mode on unless ``allow_unsafe``; clear errors otherwise."""
    import covid_tf.data.preprocessing  # noqa: F401
    import covid_tf.models  # noqa: F401
    import covid_tf.training.losses  # noqa: F401  (registers the custom serialisable objects)

    path = Path(path)
    if not path.is_file():
        raise CovidTfError(f"{path}: model file not found")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise CovidTfError(f"{path}: not a Keras 3 model file (expected a .keras archive written by model.save)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise CovidTfError(
                f"{path}: the model contains a Lambda layer, which can run arbitrary code when loaded; "
                "refused in safe mode. Load it only if you trust its source, with --allow-unsafe"
            ) from None
        raise CovidTfError(f"{path}: cannot load the model ({error})") from None
    except (OSError, KeyError, TypeError) as error:
        raise CovidTfError(f"{path}: cannot load the model ({type(error).__name__}: {error})") from None


def read_class_names(model_path: Path, num_classes: int) -> list[str]:
    """Class names from the run's ``config.json`` beside the model, else ``class_0``, ``class_1``..."""
    run_config = model_path.parent / RUN_CONFIG
    if run_config.is_file():
        try:
            names = json.loads(run_config.read_text()).get("class_names")
        except json.JSONDecodeError:
            names = None
        if names and len(names) == num_classes:
            return list(names)
    return [f"class_{i}" for i in range(num_classes)]


def load_model(path: str | Path, *, class_names=None, allow_unsafe: bool = False) -> LoadedModel:
    """Load a model for inference; class names from ``class_names`` or the run's config.json."""
    path = Path(path)
    model = load_keras_model(path, allow_unsafe=allow_unsafe)
    _, height, width, channels = model.inputs[0].shape
    num_classes = int(model.outputs[0].shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise CovidTfError(f"{path}: the model has {num_classes} outputs but {len(class_names)} class names were given")
    names = list(class_names) if class_names is not None else read_class_names(path, num_classes)
    if height is None or height != width:
        raise CovidTfError(f"{path}: expected a model with a fixed square input, got {model.inputs[0].shape}")
    return LoadedModel(model, names, int(height), int(channels), path)


def predict_paths(model: keras.Model, paths, image_size: int, channels: int, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities for image files, streamed from disk (memory does not grow with N)."""
    from covid_tf.data.pipeline import make_dataset

    paths = [str(p) for p in paths]
    if not paths:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype="float32")
    dataset = make_dataset(paths, image_size=image_size, channels=channels, batch_size=batch_size, cache=False)
    return np.asarray(model.predict(dataset, verbose=0), dtype="float32")
