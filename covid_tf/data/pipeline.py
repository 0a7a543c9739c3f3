"""``tf.data`` input pipelines: parallel decode and resize, cache, shuffle, batch, augment, prefetch.

Images are decoded by ``covid_tf.images.load_image`` (the one tensor convention: float32 in
[0, 1], ``(H, W, C)``), so the pipeline reads every format the toolkit supports. Random
augmentation runs after the cache, so each epoch sees new variations without decoding again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from covid_tf import config
from covid_tf.data.images import load_image

AUTOTUNE = tf.data.AUTOTUNE
# Above this many bytes of decoded images, ``cache="auto"`` caches on disk instead of in memory
# (256 MiB: 4,096 grayscale images at 128 px; a 1 GiB limit let 10,000 of them grow RSS 1.7x).
MEMORY_CACHE_LIMIT = 256 << 20
# The shuffle buffer holds at most this many images, and at most this many bytes of them.
SHUFFLE_BUFFER = 1024
SHUFFLE_BUFFER_BYTES = 128 << 20


def decode_images(paths: tf.data.Dataset, image_size: int, channels: int, loader=None,
                  path_list: Sequence[str] | None = None) -> tf.data.Dataset:
    """Map a dataset of file paths to decoded, resized float32 images, in parallel.

    ``loader`` (``path -> (S, S, loader.channels) float32``, e.g. a lung ROI) replaces ``load_image``. A loader
    with a ``graph_decoder(path_list, fallback)`` (lung attention) decodes the images of ``path_list`` that it
    can in the graph (no Python, no GIL) and the others with ``fallback``, i.e. in Python.
    """
    out_channels = getattr(loader, "channels", channels)

    def load(path: np.ndarray) -> np.ndarray:
        if loader is not None:
            return np.asarray(loader(path.decode("utf-8")), dtype=np.float32)
        return load_image(path.decode("utf-8"), channels=channels, size=image_size)

    def in_python(path: tf.Tensor) -> tf.Tensor:
        return tf.numpy_function(load, [path], tf.float32, stateful=False)

    graph_decoder = getattr(loader, "graph_decoder", None)
    in_graph = graph_decoder(path_list, in_python) if graph_decoder is not None and path_list is not None else None

    def decode(path: tf.Tensor) -> tf.Tensor:
        image = (in_graph or in_python)(path)
        return tf.ensure_shape(image, (image_size, image_size, out_channels))

    return paths.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)


def _cache_name(paths: np.ndarray, labels: np.ndarray | None, *settings: object) -> str:
    """File name of an on-disk cache, unique to the files, their order, the labels and the decoding."""
    digest = hashlib.sha1(repr(settings).encode())
    digest.update("\0".join(paths.tolist()).encode("utf-8", "surrogateescape"))
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype="int64").tobytes())
    return f"tfdata-{digest.hexdigest()[:16]}"


def _cache(dataset: tf.data.Dataset, cache: bool | str | Path, n_bytes: int, cache_dir: Path | None,
           name: str = "tfdata"):
    if cache is False or cache is None:
        return dataset
    if cache == "auto":
        if n_bytes <= MEMORY_CACHE_LIMIT:
            return dataset.cache()
        directory = Path(cache_dir or config.CACHE_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        return dataset.cache(str(directory / name))
    if cache is True:
        return dataset.cache()
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    return dataset.cache(str(cache))


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    num_classes: int | None = None,
    image_size: int = config.IMAGE_SIZE,
    channels: int = config.CHANNELS,
    batch_size: int = config.BATCH_SIZE,
    shuffle: bool = False,
    augmentation: keras.layers.Layer | None = None,
    cache: bool | str | Path = "auto",
    cache_dir: str | Path | None = None,
    seed: int = config.SEED,
    drop_remainder: bool = False,
    loader=None,
    batch_transform=None,
) -> tf.data.Dataset:
    """Build a batched dataset of ``(images, one-hot labels)`` (or images only without labels).

    With ``shuffle`` the file order is shuffled once with ``seed`` before decoding (so the cache
    holds a mixed order) and again each epoch in a bounded buffer (so memory stays flat).
    ``cache`` is ``"auto"`` (memory below ``MEMORY_CACHE_LIMIT``, else a file in ``cache_dir``),
    ``True`` (memory), ``False`` or a file path. ``loader`` replaces the decoding (see :func:`decode_images`;
    its ``key`` names its cache); ``batch_transform`` maps each batch of images after the cache, before
    augmentation (e.g. random lung-mask jitter).
    """
    decoded = _decoded(paths, labels, num_classes, image_size, channels, shuffle, cache, cache_dir, seed, loader)
    return _batched(decoded, batch_size, shuffle, seed, drop_remainder, batch_transform, augmentation)


def make_training_datasets(
    paths: Sequence[str],
    labels: Sequence[int],
    *,
    num_classes: int | None = None,
    image_size: int = config.IMAGE_SIZE,
    channels: int = config.CHANNELS,
    batch_size: int = config.BATCH_SIZE,
    augmentation: keras.layers.Layer | None = None,
    cache: bool | str | Path = "auto",
    cache_dir: str | Path | None = None,
    seed: int = config.SEED,
    loader=None,
    batch_transform=None,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The shuffled training dataset of :func:`make_dataset` and its un-augmented twin, from one cache.

    The twin holds the images only, without ``batch_transform`` and ``augmentation``: exactly what
    ``make_dataset(paths, shuffle=True, cache=False, ...)`` gives (same order, same values), but read from the
    training dataset's cache instead of decoding every image again (PreciseBatchNorm iterates it every epoch).
    Iterate the twin after a full pass of the training dataset (which fills the cache; before, it decodes).
    """
    decoded = _decoded(paths, labels, num_classes, image_size, channels, True, cache, cache_dir, seed, loader)
    train = _batched(decoded, batch_size, True, seed, False, batch_transform, augmentation)
    images_only = dataclasses.replace(decoded, dataset=decoded.dataset.map(lambda x, y: x), labelled=False)
    return train, _batched(images_only, batch_size, True, seed, False, None, None)


@dataclasses.dataclass(frozen=True)
class _Decoded:
    """Decoded (and cached) single images in their seeded order, before shuffling and batching."""

    dataset: tf.data.Dataset
    count: int
    image_bytes: int
    labelled: bool


def _decoded(paths, labels, num_classes, image_size, channels, shuffle, cache, cache_dir, seed, loader) -> _Decoded:
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("make_dataset needs at least one image path")
    order = np.random.default_rng(seed).permutation(len(paths)) if shuffle else np.arange(len(paths))
    ordered_paths = np.asarray(paths)[order]
    images = decode_images(tf.data.Dataset.from_tensor_slices(ordered_paths), image_size, channels, loader,
                           ordered_paths.tolist())
    label_array = None
    if labels is not None:
        label_array = np.asarray(labels, dtype="int64")[order]
        if num_classes is None:
            num_classes = int(label_array.max()) + 1
        targets = tf.data.Dataset.from_tensor_slices(np.eye(num_classes, dtype="float32")[label_array])
        dataset = tf.data.Dataset.zip((images, targets))
    else:
        dataset = images
    image_bytes = image_size * image_size * getattr(loader, "channels", channels) * 4
    key = getattr(loader, "key", "")
    name = _cache_name(ordered_paths, label_array, image_size, channels, num_classes, key) if cache == "auto" else ""
    dataset = _cache(dataset, cache, len(paths) * image_bytes, Path(cache_dir) if cache_dir else None, name)
    return _Decoded(dataset, len(paths), image_bytes, labels is not None)


def _batched(decoded: _Decoded, batch_size: int, shuffle: bool, seed: int, drop_remainder: bool, batch_transform,
             augmentation) -> tf.data.Dataset:
    dataset = decoded.dataset
    if shuffle:
        buffer = min(decoded.count, SHUFFLE_BUFFER, max(1, SHUFFLE_BUFFER_BYTES // decoded.image_bytes))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if batch_transform is not None:
        dataset = _map_images(dataset, batch_transform, decoded.labelled)
    if augmentation is not None:
        dataset = _map_images(dataset, lambda x: augmentation(x, training=True), decoded.labelled)
    return dataset.prefetch(AUTOTUNE)


def mix_labels(dataset: tf.data.Dataset, layer: keras.layers.Layer | None) -> tf.data.Dataset:
    """Map a batched ``(images, one-hot labels)`` dataset through a label-mixing layer (``keras.layers.MixUp``),
    which takes and returns ``{"images", "labels"}``; ``None`` returns ``dataset`` as it is."""
    if layer is None:
        return dataset

    def mixed(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        output = layer({"images": images, "labels": labels}, training=True)
        return output["images"], output["labels"]

    return dataset.map(mixed, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def _map_images(dataset: tf.data.Dataset, function, labelled: bool) -> tf.data.Dataset:
    """Apply ``function`` to the image batches of a dataset (of ``(images, labels)`` when ``labelled``)."""
    if labelled:
        return dataset.map(lambda x, y: (function(x), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.map(function, num_parallel_calls=AUTOTUNE, deterministic=True)


def load_images(paths: Sequence[str], image_size: int, channels: int = config.CHANNELS) -> np.ndarray:
    """Load a few images into one (N, S, S, C) float32 array (for plots and explanations)."""
    return np.stack([load_image(p, channels=channels, size=image_size) for p in paths]).astype("float32")


def pixel_statistics(
    paths: Sequence[str], image_size: int, channels: int = config.CHANNELS, max_images: int = 2000, seed: int = 0,
    loader=None,
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel over (a seeded sample of) the given images."""
    rng = np.random.default_rng(seed)
    chosen = list(paths) if len(paths) <= max_images else list(rng.choice(paths, max_images, replace=False))
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for batch in make_dataset(chosen, image_size=image_size, channels=channels, batch_size=64, cache=False,
                              loader=loader):
        # [..., :channels]: a lung-attention loader appends the mask channel, which is not normalised.
        values = batch.numpy()[..., :channels].reshape(-1, channels).astype("float64")
        total += values.sum(0)
        total_sq += (values**2).sum(0)
        count += len(values)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return mean.tolist(), std.tolist()
