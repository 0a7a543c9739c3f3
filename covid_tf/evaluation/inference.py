"""Loading a trained model safely with its class names; predicting image files (``predict_images``, for ``predict``)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.discover import SkippedFile, list_images
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.metrics import positive_class_index, predict_labels
from covid_tf.evaluation.tables import PROB_PREFIX
from covid_tf.io_utils import atomic_write, csv_rows, progress_bar
from covid_tf.lungs.roi_inputs import ATTENTION_MODE, RoiLoader, RoiSpec, fallback_note, prepare_masks
from covid_tf.models.lung_attention import has_lung_attention, image_channels

RUN_CONFIG = "config.json"
# A .keras archive is a zip: its declared sizes are checked before Keras extracts anything, so a small
# file that inflates to gigabytes (a "zip bomb") is refused at once. Our largest model (ResNet50V2 with
# its optimizer state) is about 300 MB; raise the limit with COVID_TF_MAX_MODEL_MB for larger ones.
MAX_MODEL_BYTES = 1024 * 1024 * 1024
# An entry this large that compresses better than this ratio is zeros or repetition, not weights.
SUSPICIOUS_ENTRY_BYTES = 64 * 1024 * 1024
MAX_COMPRESSION_RATIO = 50
# Layers that run Python code of the file when loaded: refused unless --allow-unsafe.
UNSAFE_LAYERS = ("Lambda",)


@dataclass
class LoadedModel:
    """A Keras model with what is needed to feed it: class names, image size and channels."""

    model: keras.Model
    class_names: list[str]
    image_size: int
    channels: int
    path: Path
    roi: RoiSpec = field(default_factory=RoiSpec)  # the run's lung ROI (config.json), applied to every input
    roi_table: pd.DataFrame | None = None  # lung masks of the last predict_paths call (ROI runs)

    def roi_loader(self, paths, mask_paths=None) -> tuple[RoiLoader | None, pd.DataFrame | None]:
        """The ROI loader of ``paths`` and their mask table (both None without an ROI); masks are cached."""
        if not self.roi.active:
            return None, None
        table = prepare_masks([str(p) for p in paths], mask_paths)
        return RoiLoader(self.roi, table, self.image_size, self.channels), table

    def predict_paths(self, paths, batch_size: int = config.BATCH_SIZE, mask_paths=None) -> np.ndarray:
        """Softmax probabilities (N, K) for image files, streamed from disk in batches, through the run's ROI."""
        loader, self.roi_table = self.roi_loader(paths, mask_paths)
        return predict_paths(self.model, paths, self.image_size, self.channels, batch_size, loader=loader)


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
    unsafe = check_model_archive(path)
    if unsafe and not allow_unsafe:
        raise _unsafe_error(path, unsafe)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise _unsafe_error(path, "Lambda") from None
        raise CovidTfError(f"{path}: cannot load the model ({_first_line(error)})") from None
    except (OSError, KeyError, TypeError) as error:
        if not allow_unsafe and ("Lambda" in str(error) or "Could not locate function" in str(error)):
            raise _unsafe_error(path, "Lambda") from None
        raise CovidTfError(f"{path}: cannot load the model ({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    """Keras errors run over many lines (with the whole layer config); the first says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _unsafe_error(path: Path, layer: str) -> CovidTfError:
    return CovidTfError(
        f"{path}: the model contains a {layer} layer, which can run arbitrary code when loaded; "
        "refused in safe mode. Load it only if you trust its source, with --allow-unsafe"
    )


def _max_model_bytes() -> int:
    try:
        return int(float(os.environ["COVID_TF_MAX_MODEL_MB"]) * 1024 * 1024)
    except (KeyError, ValueError):
        return MAX_MODEL_BYTES


def _layer_classes(node) -> set[str]:
    """Every ``class_name`` in a Keras config (nested models and wrappers included)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                found.add(item["class_name"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_entry_sizes(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    limit = _max_model_bytes()
    total = sum(entry.file_size for entry in entries)
    if total > limit:
        raise CovidTfError(f"{path}: the archive inflates to {total / 2**20:.0f} MiB, more than the "
                           f"{limit / 2**20:.0f} MiB allowed for a model (set COVID_TF_MAX_MODEL_MB to raise "
                           "the limit)")
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > SUSPICIOUS_ENTRY_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise CovidTfError(f"{path}: {entry.filename} inflates {ratio:.0f}-fold to "
                               f"{entry.file_size / 2**20:.0f} MiB; not the weights of a model")


def check_model_archive(path: Path) -> str | None:
    """Refuse archives that would inflate beyond the limit; return the first unsafe layer class, if any.

    Only the zip directory and ``config.json`` (a few KB) are read: nothing is extracted.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            _check_entry_sizes(path, entries)
            if "config.json" not in {entry.filename for entry in entries}:
                raise CovidTfError(f"{path}: not a Keras 3 model file (no config.json in the archive)")
            config_entry = archive.getinfo("config.json")
            if config_entry.file_size > 64 * 1024 * 1024:
                raise CovidTfError(f"{path}: its config.json declares {config_entry.file_size / 2**20:.0f} MiB")
            model_config = json.loads(archive.read(config_entry))
    except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError) as error:
        raise CovidTfError(f"{path}: not a readable Keras 3 model file ({_first_line(error)})") from None
    return next((name for name in UNSAFE_LAYERS if name in _layer_classes(model_config)), None)


def read_roi(model_path: Path) -> RoiSpec:
    """The lung ROI recorded in the run's ``config.json`` beside the model (none when absent)."""
    run_config = model_path.parent / RUN_CONFIG
    try:
        saved = json.loads(run_config.read_text()) if run_config.is_file() else {}
        return RoiSpec.from_config(saved if isinstance(saved, dict) else {})
    except (json.JSONDecodeError, ValueError, TypeError) as error:
        raise CovidTfError(f"{run_config}: the run's lung ROI is not readable ({error})") from None


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
    return loaded_model(load_keras_model(path, allow_unsafe=allow_unsafe), path, class_names=class_names)


def loaded_model(model: keras.Model, path: str | Path, *, class_names=None) -> LoadedModel:
    """A model already in memory with what feeds it: class names and lung ROI from the config.json beside
    ``path`` (its ``model.keras``), image size and image channels from its input."""
    path = Path(path)
    _, height, width, _ = model.inputs[0].shape
    num_classes = int(model.outputs[0].shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise CovidTfError(f"{path}: the model has {num_classes} outputs but {len(class_names)} class names were given")
    names = list(class_names) if class_names is not None else read_class_names(path, num_classes)
    if height is None or height != width:
        raise CovidTfError(f"{path}: expected a model with a fixed square input, got {model.inputs[0].shape}")
    roi_spec = read_roi(path)
    if has_lung_attention(model) and not roi_spec.mask_input:  # a lung-attention model without its config.json
        roi_spec = RoiSpec(mode=ATTENTION_MODE)
    return LoadedModel(model, names, int(height), image_channels(model), path, roi_spec)


def predict_paths(model: keras.Model, paths, image_size: int, channels: int, batch_size: int = 32,
                  loader=None) -> np.ndarray:
    """Softmax probabilities for image files, streamed from disk (memory does not grow with N);
    ``loader``: a lung ROI (:class:`covid_tf.lungs.roi_inputs.RoiLoader`) instead of plain decoding."""
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


def label_indices(labels: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Map label names onto the model's class indices; a clear error for a class the model does not know."""
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({str(label) for label in labels} - set(index_of))
    if unknown:
        raise CovidTfError(
            f"the data has class(es) {', '.join(unknown)} that the model does not know (its classes: "
            f"{', '.join(class_names)}); keep the model's classes with --classes or rename folders with --class-map"
        )
    return np.array([index_of[str(label)] for label in labels], dtype=np.int64)


def predictions_table(
    paths: Sequence[str], probabilities: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str],
    *, labels: Sequence[str] | None = None, patient_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``path[,label],predicted,probability|prob_<Class>...[,patient_id]`` as a DataFrame."""
    names = np.asarray(class_names, dtype=object)
    table = pd.DataFrame({"path": list(paths)})
    if labels is not None:
        table["label"] = list(labels)
    table["predicted"] = names[y_pred] if len(y_pred) else []
    if labels is None:
        table["probability"] = probabilities[np.arange(len(y_pred)), y_pred] if len(y_pred) else []
    for index, name in enumerate(class_names):
        table[f"{PROB_PREFIX}{name}"] = probabilities[:, index]
    if patient_ids is not None:
        table["patient_id"] = list(patient_ids)
    return table


# Images predicted per chunk by ``predict_images`` (rows are written after each chunk).
PREDICT_CHUNK = 2048


@dataclass
class PredictionResult:
    """What :func:`predict_images` wrote and left out."""

    out_path: Path
    n_predicted: int
    skipped: list[SkippedFile]
    class_names: list[str]
    roi_note: str = ""  # ROI runs: mask sources and images used whole for want of plausible lungs


def predict_images(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out_path: str | Path,
    *,
    batch_size: int = config.BATCH_SIZE,
    allow_unsafe: bool = False,
    overwrite: bool = False,
    threshold: float | None = None,
    on_skipped=None,
) -> PredictionResult:
    """Predict unlabelled images (files or folders) into a CSV ``path,predicted,probability,prob_<Class>...``.

    Unreadable files are left out and returned (``on_skipped(skipped_file)`` is called for each as soon as
    they are known). Images are predicted and written ``PREDICT_CHUNK`` at a time into a temporary file that
    replaces ``out_path`` at the end. Raises ``CovidTfError`` when no image could be predicted.
    """
    out_path = Path(out_path)
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if out_path.is_dir():
        raise CovidTfError(f"{out_path}: is a folder; --out takes a CSV file name")
    if out_path.exists() and not overwrite:
        raise CovidTfError(f"{out_path}: already exists; choose another --out or pass --overwrite")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise CovidTfError(f"--threshold must be a probability in [0, 1], got {threshold}")
    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    positive_index = None
    if threshold is not None:
        if len(names) != 2:
            raise CovidTfError(f"--threshold applies only to binary models; this one has {len(names)} classes")
        positive_index = positive_class_index(names)

    paths, skipped = list_images(inputs)
    if on_skipped is not None:
        for item in skipped:
            on_skipped(item)
    if not paths:
        raise CovidTfError(f"no readable image among the {len(inputs)} input(s) ({len(skipped)} file(s) skipped); "
                           "nothing predicted")

    tables = []

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            for start in range(0, len(paths), PREDICT_CHUNK):
                chunk = paths[start:start + PREDICT_CHUNK]
                probabilities = loaded.predict_paths(chunk, batch_size=batch_size)
                y_pred = predict_labels(probabilities, threshold=threshold, positive_index=positive_index)
                table = predictions_table(chunk, probabilities, y_pred, names)
                if loaded.roi_table is not None:  # flagged, and still classified on the full image
                    tables.append(loaded.roi_table)
                    table["lung_mask_source"] = loaded.roi_table["lung_mask_source"].to_numpy()
                    table["roi_applied"] = loaded.roi_table["roi_applied"].to_numpy()
                handle.write(csv_rows(table, header=start == 0))

    atomic_write(out_path, write)
    note = fallback_note(pd.concat(tables, ignore_index=True)) if tables else ""
    return PredictionResult(out_path, len(paths), skipped, names, note)
