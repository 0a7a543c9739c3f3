"""Loading a ``.keras`` model file safely: size and zip-bomb checks before Keras unpacks anything, and Keras
safe mode (no ``Lambda`` code) unless the caller trusts the file."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from covid_tf.errors import CovidTfError
from covid_tf.models.fused_batch_norm import fuse_batch_norm

# A .keras archive is a zip: its declared sizes are checked before Keras extracts anything, so a small
# file that inflates to gigabytes (a "zip bomb") is refused at once. Our largest model (ResNet50V2 with
# its optimizer state) is about 300 MB; raise the limit with COVID_TF_MAX_MODEL_MB for larger ones.
MAX_MODEL_BYTES = 1024 * 1024 * 1024
# An entry this large that compresses better than this ratio is zeros or repetition, not weights.
SUSPICIOUS_ENTRY_BYTES = 64 * 1024 * 1024
MAX_COMPRESSION_RATIO = 50
# Layers that run Python code of the file when loaded: refused unless --allow-unsafe.
UNSAFE_LAYERS = ("Lambda",)


def custom_objects() -> dict[str, type]:
    """The classes of covid_tf that older model files name, passed to Keras where models load (nothing is
    registered by importing a module for its side effect). Models are saved without their loss, and today's
    builders use built-in layers only: these are the legacy normalisation layers of files before 0.1.1."""
    from covid_tf.data.preprocessing import CaffeNormalization, PerImageStandardization

    return {f"covid_tf>{cls.__name__}": cls for cls in (CaffeNormalization, PerImageStandardization)}


def load_keras_model(path: str | Path, *, allow_unsafe: bool = False) -> keras.Model:
    """Load a ``.keras`` file with Keras safe mode on unless ``allow_unsafe``; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CovidTfError(f"{path}: model file not found")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise CovidTfError(f"{path}: not a Keras 3 model file (expected a .keras archive written by model.save)")
    unsafe = check_model_archive(path)
    if unsafe and not allow_unsafe:
        raise _unsafe_error(path, unsafe)
    try:
        model = keras.models.load_model(path, custom_objects=custom_objects(), compile=False,
                                        safe_mode=not allow_unsafe)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise _unsafe_error(path, "Lambda") from None
        raise CovidTfError(f"{path}: cannot load the model ({_first_line(error)})") from None
    except (OSError, KeyError, TypeError) as error:
        if not allow_unsafe and ("Lambda" in str(error) or "Could not locate function" in str(error)):
            raise _unsafe_error(path, "Lambda") from None
        raise CovidTfError(f"{path}: cannot load the model ({type(error).__name__}: {_first_line(error)})") from None
    fuse_batch_norm(model)  # the same outputs, about a third less CPU per image (covid_tf.models.fused_batch_norm)
    return model


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
