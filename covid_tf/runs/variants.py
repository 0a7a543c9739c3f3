"""Streamed prediction of many versions of each image through a run's ROI: the occlusion check's fills
(:class:`FillLoader`) and the stress check's acquisition shifts (:class:`ShiftLoader`).

A loader turns one path into ``(V, S, S, C)``: the model inputs of every version of that image, each made on the
full-resolution image and then through the run's own ROI (crop, mask, lung attention:
:func:`~covid_tf.lungs.roi.inputs.roi_image`) with the image's original lung mask. :func:`predict_variants` streams
the paths through ``tf.data``: each image is read, checked and turned into its versions once, in parallel, while
the model scores the batches before; every version of an image goes through the model in the same batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from covid_tf import config
from covid_tf.data import shifts as acquisition
from covid_tf.data.images import load_image
from covid_tf.errors import ImageReadError
from covid_tf.evaluation.stress import ORIGINAL
from covid_tf.io_utils import progress_bar
from covid_tf.lungs.roi import fills as lung_fills
from covid_tf.lungs.roi.inputs import roi_image
from covid_tf.lungs.roi.mask_table import read_plausible_mask
from covid_tf.lungs.segmentation.masks import read_mask, resize_mask

MAX_RESIZE_CHANNELS = 4  # OpenCV's area resize takes at most four channels


def seeded_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and a text key (an image's path or name, a shift): the same key, the same
    numbers, in any order and any process."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8", "surrogateescape"))])


class VersionLoader:
    """What every loader shares: the run's ROI, the model's input size and channels, and :meth:`empty`."""

    keys: list  # one per version, the original first

    def __init__(self, loaded, seed: int = config.SEED) -> None:
        self.spec, self.size, self.image_channels = loaded.roi, loaded.image_size, loaded.channels
        self.channels = int(loaded.model.inputs[0].shape[-1])
        self.seed = seed

    def empty(self) -> np.ndarray:
        """Zeros in place of an image left out (its probabilities are then meaningless)."""
        return np.zeros((len(self.keys), self.size, self.size, self.channels), np.float32)

    def checked(self, path: str) -> tuple[np.ndarray, str]:
        """``(inputs, reason)``: the versions' inputs and ``''``, or zeros and why the image was left out."""
        raise NotImplementedError


class FillLoader(VersionLoader):
    """The occlusion check's versions: the original, the dilated lungs filled and their outside filled, for each
    fill (:func:`~covid_tf.lungs.roi.fills.occlusion_images`); a lung-attention model's mask channel is the original
    mask's. :meth:`checked` also checks the mask first (:func:`~covid_tf.lungs.roi.mask_table.read_plausible_mask`, as
    ``evaluate`` does) from the same read."""

    def __init__(self, loaded, mask_files: dict[str, str], fills: Sequence[str], dilation: float,
                 seed: int = config.SEED, *, trusted: Collection[str] = (), modality: str = "xray") -> None:
        super().__init__(loaded, seed)
        self.masks, self.fills, self.dilation = dict(mask_files), tuple(fills), dilation
        self.trusted, self.modality = frozenset(trusted), modality
        self.keys = lung_fills.variant_keys(self.fills)
        self.per_call = max(1, MAX_RESIZE_CHANNELS // self.image_channels)  # variants per ROI call

    def __call__(self, path: str) -> np.ndarray:
        return self.variants(path, read_mask(self.masks[path]))

    def checked(self, path: str) -> tuple[np.ndarray, str]:
        """``(inputs, reason)``: the variants' inputs and ``''`` when the mask is plausible; else zeros and why not
        (the image is then left out of every variant), as for an image or mask that cannot be read."""
        mask, reason = read_plausible_mask(self.masks[path], path in self.trusted, self.modality)
        if mask is None:
            return self.empty(), reason
        try:
            return self.variants(path, mask), ""
        except ImageReadError as error:  # read whole when the data was indexed, broken since
            return self.empty(), f"image unreadable: {error.reason}"

    def variants(self, path: str, mask: np.ndarray) -> np.ndarray:
        image = load_image(path, channels=self.image_channels)
        mask = resize_mask(mask, *image.shape[:2])
        variants = lung_fills.occlusion_images(image, mask, self.fills, self.dilation, seeded_rng(self.seed, path))
        return np.stack([model_input for start in range(0, len(variants), self.per_call)
                         for model_input in self.roi_inputs(variants[start:start + self.per_call], mask)])

    def roi_inputs(self, variants: list[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
        """The model inputs of a few variants through one ROI call on them stacked along the channels: the same
        crop, resize and constant for each (every step works channel by channel; OpenCV resizes up to four
        channels at once); a lung-attention model's mask channel, appended once, is the original mask's."""
        stacked = roi_image(np.concatenate(variants, axis=-1), mask, self.spec, self.size)[0]
        split = np.split(stacked[..., :len(variants) * self.image_channels], len(variants), axis=-1)
        extra = stacked[..., len(variants) * self.image_channels:]
        return [np.concatenate([part, extra], axis=-1) for part in split]


class ShiftLoader(VersionLoader):
    """The stress check's versions: the image as it is and under every ``(shift, strength)`` of ``plan``
    (:attr:`keys`, the original first). ``masks``: each path's lung mask file (None: used whole); ``names``: each
    path's name in the shifts' seeds (its path inside the dataset, so that the same data gives the same shifts
    wherever it lies; default the path)."""

    def __init__(self, loaded, plan: Mapping[str, Sequence[float]], masks: Mapping[str, str | None] | None = None,
                 seed: int = config.SEED, names: Mapping[str, str] | None = None) -> None:
        super().__init__(loaded, seed)
        self.masks, self.names = dict(masks or {}), dict(names or {})
        self.keys = [(ORIGINAL, None)] + [(name, float(s)) for name, values in plan.items() for s in values]

    def checked(self, path: str) -> tuple[np.ndarray, str]:
        """``(inputs, '')``, or zeros and why the image was left out (it cannot be read any more)."""
        try:
            return self(path), ""
        except ImageReadError as error:
            return self.empty(), f"image unreadable: {error.reason}"

    def __call__(self, path: str) -> np.ndarray:
        image = load_image(path, channels=self.image_channels)
        mask = self.lung_mask(path, image.shape[:2])
        inputs = [self.model_input(image, mask)]
        for name, strength in self.keys[1:]:
            rng = seeded_rng(self.seed, f"{self.names.get(path, path)}\0{name}\0{strength}")
            inputs.append(self.model_input(*acquisition.apply_shift(name, image, mask, strength, rng)))
        return np.stack(inputs)

    def lung_mask(self, path: str, shape: tuple[int, int]) -> np.ndarray | None:
        """The image's plausible lung mask at its size, or None (no ROI, or no plausible lungs: used whole)."""
        mask_file = self.masks.get(path)
        mask = read_mask(mask_file) if mask_file else None
        return resize_mask(mask, *shape) if mask is not None and mask.any() else None

    def model_input(self, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return roi_image(np.clip(image, 0.0, 1.0), mask, self.spec, self.size)[0].astype(np.float32)


def predict_variants(model, paths: Sequence[str], loader: VersionLoader,
                     batch_size: int = config.BATCH_SIZE) -> tuple[np.ndarray, list[str]]:
    """Softmax probabilities ``(N, V, K)`` of every version of every image and each image's verdict ('' when it
    was used, else why not: its probabilities are then meaningless), streamed from disk in batches of about
    ``batch_size`` model inputs (``batch_size // V`` images, each read, checked and turned into its versions once,
    while the model scores the batches before)."""
    import tensorflow as tf

    paths = [str(p) for p in paths]
    n_variants, size, channels = len(loader.keys), loader.size, loader.channels
    if not paths:
        return np.zeros((0, n_variants, int(model.outputs[0].shape[-1])), np.float32), []
    per_batch = max(1, batch_size // n_variants)

    def decode(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        inputs, reason = tf.numpy_function(lambda p: loader.checked(p.decode("utf-8")), [path],
                                           (tf.float32, tf.string), stateful=False)
        return tf.ensure_shape(inputs, (n_variants, size, size, channels)), tf.ensure_shape(reason, ())

    dataset = (tf.data.Dataset.from_tensor_slices(paths)
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(per_batch).map(lambda x, reason: (tf.reshape(x, (-1, size, size, channels)), reason))
               .prefetch(tf.data.AUTOTUNE))
    spec = tf.TensorSpec((None, size, size, channels), tf.float32)
    forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    probabilities, reasons = [], []
    with progress_bar(total=-(-len(paths) // per_batch), desc="image versions", unit="batch") as bar:
        for inputs, batch_reasons in dataset:
            probabilities.append(np.asarray(forward(inputs), np.float32))
            reasons.extend(reason.decode("utf-8") for reason in batch_reasons.numpy())
            bar.update(1)
    return np.concatenate(probabilities).reshape(len(paths), n_variants, -1), reasons
