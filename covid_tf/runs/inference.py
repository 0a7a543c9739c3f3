"""A trained model with what feeds it (class names, image size, channels, lung ROI from its run record), and
prediction of image files streamed from disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import progress_bar
from covid_tf.lungs.roi.inputs import RoiLoader
from covid_tf.lungs.roi.mask_table import prepare_masks
from covid_tf.lungs.roi.modes import RoiSpec
from covid_tf.models.loading import load_keras_model
from covid_tf.models.lung_attention import has_lung_attention, image_channels
from covid_tf.runs.record import RunRecord, model_roi


@dataclass(frozen=True)
class LoadedModel:
    """A Keras model with what is needed to feed it: class names, image size, channels and the run's lung ROI."""

    model: keras.Model
    class_names: list[str]
    image_size: int
    channels: int
    path: Path
    roi: RoiSpec = field(default_factory=RoiSpec)  # the run's lung ROI (its record), applied to every input
    record: RunRecord | None = None  # the run the model comes from (empty without a config.json beside it)

    def roi_loader(self, paths, mask_paths=None) -> tuple[RoiLoader | None, pd.DataFrame | None]:
        """The ROI loader of ``paths`` and their mask table (both None without an ROI); masks are cached."""
        if not self.roi.active:
            return None, None
        table = prepare_masks([str(p) for p in paths], mask_paths, modality=self.roi.kind.modality)
        return RoiLoader(self.roi, table, self.image_size, self.channels), table

    def predict_with_roi(self, paths, batch_size: int = config.BATCH_SIZE,
                         mask_paths=None) -> tuple[np.ndarray, pd.DataFrame | None]:
        """Softmax probabilities (N, K) for image files, streamed from disk in batches through the run's ROI,
        and the ROI's mask table (``covid_tf.lungs.roi.mask_table.ROI_COLUMNS``; None without an ROI)."""
        loader, table = self.roi_loader(paths, mask_paths)
        return predict_paths(self.model, paths, self.image_size, self.channels, batch_size, loader=loader), table

    def predict_paths(self, paths, batch_size: int = config.BATCH_SIZE, mask_paths=None) -> np.ndarray:
        """Softmax probabilities (N, K) for image files (:meth:`predict_with_roi` without the mask table)."""
        return self.predict_with_roi(paths, batch_size, mask_paths)[0]


def load_model(path: str | Path, *, class_names=None, allow_unsafe: bool = False) -> LoadedModel:
    """Load a model safely for inference; class names from ``class_names`` or the run's record."""
    path = Path(path)
    return loaded_model(load_keras_model(path, allow_unsafe=allow_unsafe), path, class_names=class_names)


def loaded_model(model: keras.Model, path: str | Path, *, class_names=None) -> LoadedModel:
    """A model already in memory with what feeds it: class names and lung ROI from the run record beside
    ``path`` (its ``model.keras``), image size and image channels from its input."""
    path = Path(path)
    _, height, width, _ = model.inputs[0].shape
    num_classes = int(model.outputs[0].shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise CovidTfError(f"{path}: the model has {num_classes} outputs but {len(class_names)} class names were given")
    record = RunRecord.of_model(path)
    names = list(class_names) if class_names is not None else record.class_names(num_classes)
    if height is None or height != width:
        raise CovidTfError(f"{path}: expected a model with a fixed square input, got {model.inputs[0].shape}")
    roi_spec = model_roi(record, has_lung_attention(model))
    return LoadedModel(model, names, int(height), image_channels(model), path, roi_spec, record)


def predict_paths(model: keras.Model, paths, image_size: int, channels: int, batch_size: int = 32,
                  loader=None, tta: bool = False) -> np.ndarray:
    """Softmax probabilities for image files, streamed from disk (memory does not grow with N);
    ``loader``: a lung ROI (:class:`covid_tf.lungs.roi.inputs.RoiLoader`) instead of plain decoding.
    ``tta``: test-time augmentation, the mean of the probabilities of each image and of its left-right mirror."""
    if tta:
        paths = [str(p) for p in paths]
        # The mirror of each image (and of a lung-attention model's mask channel), axis 2 of (N, H, W, C).
        mirrored = keras.Sequential([keras.layers.Lambda(lambda images: keras.ops.flip(images, axis=2)), model])
        plain = predict_paths(model, paths, image_size, channels, batch_size, loader)
        return (plain + predict_paths(mirrored, paths, image_size, channels, batch_size, loader)) / 2
    from covid_tf.data.pipeline import make_dataset

    paths = [str(p) for p in paths]
    if not paths:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype="float32")
    dataset = make_dataset(paths, image_size=image_size, channels=channels, batch_size=batch_size, cache=False,
                           loader=loader)
    bar = progress_bar(total=-(-len(paths) // batch_size), desc="predicting", unit="batch")

    class Progress(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None) -> None:  # noqa: ANN001
            bar.update(1)

    try:
        return np.asarray(model.predict(dataset, verbose=0, callbacks=[Progress()]), dtype="float32")
    finally:
        bar.close()


