"""Synthetic chest X-rays in the layout of the Kaggle COVID-19 Radiography Database.

The whole toolkit can run without real data: :func:`generate_dataset` writes

    OUT/<Class>/images/<Class>-0001.png    the radiograph (grayscale uint8, square)
    OUT/<Class>/masks/<Class>-0001.png     both lung fields (0/255)
    OUT/<Class>/lesions/<Class>-0001.png   the lesions (0/255; all zeros for Normal)
    OUT/metadata.csv                       path,label,patient_id,has_marker
    OUT/.covid_tf_synthetic                marks the folder as generator output

and :func:`render_case` draws one case in memory. Only numpy and OpenCV are used.

Each image is a PA film seen from the front (the patient's left is the image right): dark
background, torso and arms, two radiolucent lung fields, the heart shadow left of the patient
(right of the image centre line), spine, clavicles, posterior and anterior ribs, diaphragm domes,
a gastric bubble, vessels fanning out of the hila, smooth texture and quantum noise, then a small
shift / rotation / scale and an exposure change (brightness, contrast, gamma).

Lesions, always clipped to the lung mask:

* ``COVID``: bilateral, peripheral, lower-zone ground-glass opacities (soft hazy blobs near the
  outer lung borders of both lungs, lower half).
* ``Viral Pneumonia``: diffuse bilateral interstitial haze with reticular streaks from the hila.
* ``Lung Opacity``: one focal dense consolidation in one lung.
* ``Normal``: none.
* Any other class name: a generic pattern of 3-6 small round nodules scattered over both lungs.

Class names are matched case-insensitively, with ``_`` read as a space (``Lung_Opacity``).
``difficulty`` in [0, 1] scales the lesion contrast by ``1 - 0.85 * difficulty`` (higher = subtler);
it changes nothing else, so the same seed gives the same anatomy and lesion shapes at every
difficulty.

Shortcut (a confounder to test whether a model cheats): with ``shortcut_class`` set, a bright
burned-in marker (an "L" in a square tag, like a hospital side marker) is put in a corner of
the image, outside the lungs, on images of ``shortcut_class`` with probability
``shortcut_probability`` and on images of every other class with probability
``1 - shortcut_probability``. ``has_marker`` in the metadata says where it is.

Patients: ``patients_per_class`` patients per class (default: one image per patient); the
images of a patient share the base anatomy (torso, lungs, heart, ribs, vessels, texture) with
small per-image changes (inspiration, pose, exposure) and carry the same ``patient_id``.

Determinism: the random stream of each image is derived from ``(seed, class name, patient,
image)``, so the same seed gives byte-identical files, and a class renders the same whatever
other classes are asked for.
"""

from __future__ import annotations

import functools
import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write, atomic_write_text, claim_generated_folder, csv_text
from covid_tf.synthetic.anatomy import Anatomy, draw_anatomy, read_only, sample_anatomy
from covid_tf.synthetic.lesions import (
    DIFFICULTY_SLOPE,
    LESION_AMPLITUDE,
    LESION_THRESHOLD,
    lesion_field,
    lesion_pattern,
    marker_mask,
)

MARKER_FILE = ".covid_tf_synthetic"
METADATA_COLUMNS = ("path", "label", "patient_id", "has_marker")
MIN_SIZE = 32
MAX_SIZE = 2048

# Default difficulty: a baseline CNN at 64 px separates COVID from Normal within a few epochs.
DEFAULT_DIFFICULTY = 0.2


def render_case(
    rng: np.random.Generator,
    label: str,
    size: int = config.IMAGE_SIZE,
    *,
    difficulty: float = DEFAULT_DIFFICULTY,
    marker: bool = False,
    anatomy: Anatomy | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one synthetic chest X-ray in memory.

    Returns ``(image, lung_mask, lesion_mask)``: uint8 ``(size, size)``, bool, bool, with
    ``lesion_mask`` inside ``lung_mask`` (all False for Normal). ``anatomy`` (from
    :func:`sample_anatomy`) gives a patient's shared geometry; without it one is drawn from ``rng``.
    ``marker`` burns a bright corner tag outside the lungs, drawn last so the rest of the image
    does not change. ``difficulty`` changes only the lesion contrast, never the random stream.
    """
    size = _check_size(size)
    if not 0.0 <= float(difficulty) <= 1.0:
        raise CovidTfError(f"difficulty must be in [0, 1], got {difficulty}")
    pattern = lesion_pattern(label)
    if anatomy is None:
        anatomy = sample_anatomy(rng)
    image, lung, lung_soft = draw_anatomy(anatomy, rng, size)

    # Pose (small shift, rotation, scale) and exposure are drawn before the lesions, so a case
    # and the same case without lesions (or at another difficulty) differ only inside the lesions.
    angle = rng.uniform(-4.0, 4.0)
    scale = rng.uniform(0.95, 1.05)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.035, 0.035, 2) * size
    contrast = rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-0.05, 0.05)
    gamma = rng.uniform(0.8, 1.25)
    noise = rng.standard_normal((size, size), dtype=np.float32)

    field = np.zeros((size, size), np.float32) if pattern == "none" else lesion_field(pattern, lung, rng)
    stacked = cv2.merge([image, lung.astype(np.float32), field, lung_soft])
    warped = cv2.warpAffine(
        stacked, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    image, lung_w, field_w, lung_soft_w = cv2.split(warped)
    lung_mask = lung_w >= 0.5
    if pattern != "none":
        lesion_mask = (field_w >= LESION_THRESHOLD[pattern]) & lung_mask
        # Opacity fills the air space: it follows the lung darkening and stops at the final lung mask.
        amplitude = LESION_AMPLITUDE[pattern] * (1.0 - DIFFICULTY_SLOPE * float(difficulty))
        image += amplitude * field_w * lung_soft_w * lung_mask
    else:
        lesion_mask = np.zeros((size, size), bool)

    image = (image - 0.5) * contrast + (0.5 + brightness) + 0.012 * noise
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, _gamma_table(round(gamma, 3)))

    if marker:
        tag = marker_mask(size, lung_mask, rng)
        image[tag] = np.uint8(rng.integers(235, 256))
    return image, lung_mask, lesion_mask


@functools.lru_cache(maxsize=256)
def _gamma_table(gamma: float) -> np.ndarray:
    """The 8-bit lookup table of ``gamma`` (read-only: the cache hands the same array to every caller)."""
    return read_only(np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise CovidTfError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return int(size)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        classes = [classes]
    names = tuple(str(name).strip() for name in classes)
    if not names:
        raise CovidTfError("give at least one class name")
    for name in names:
        if not name or name in (".", "..") or any(c in name for c in "/\\:*?\"<>|") or name.startswith("."):
            raise CovidTfError(f"class name {name!r} cannot be a folder name")
    if len({name.lower() for name in names}) != len(names):
        raise CovidTfError(f"class names repeat: {', '.join(names)}")
    return names


def _encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV failing on a plain uint8 array
        raise CovidTfError("OpenCV could not encode a PNG")
    return buffer.tobytes()


def _prepare_output(out_dir: Path, overwrite: bool) -> set[str]:
    """Check the output folder; return the files a previous run of the generator wrote there."""
    listed = claim_generated_folder(out_dir, MARKER_FILE, "covid_tf.synthetic.generate_dataset", overwrite)
    return {str(Path(label, kind, name)) for label, name in listed for kind in ("images", "masks", "lesions")}


def _class_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _patient_sizes(per_class: int, patients: int) -> list[int]:
    base, extra = divmod(per_class, patients)
    return [base + (1 if index < extra else 0) for index in range(patients)]


def _check_counts(per_class, patients_per_class) -> tuple[int, int]:
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise CovidTfError(f"per_class must be a positive integer, got {per_class!r}")
    per_class = int(per_class)
    patients = per_class if patients_per_class is None else patients_per_class
    if isinstance(patients, bool) or int(patients) != patients or not 1 <= patients <= per_class:
        raise CovidTfError(
            f"patients_per_class must be an integer in [1, per_class={per_class}], got {patients!r}"
        )
    return per_class, int(patients)


def _check_options(names: tuple[str, ...], seed, difficulty: float, shortcut_class: str | None,
                   shortcut_probability: float) -> None:
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise CovidTfError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise CovidTfError(f"difficulty must be in [0, 1], got {difficulty}")
    if not 0.0 <= float(shortcut_probability) <= 1.0:
        raise CovidTfError(f"shortcut_probability must be in [0, 1], got {shortcut_probability}")
    if shortcut_class is not None and shortcut_class not in names:
        raise CovidTfError(f"shortcut_class {shortcut_class!r} is not one of the classes: {', '.join(names)}")
    if shortcut_class is None and shortcut_probability > 0:
        raise CovidTfError("shortcut_probability needs a shortcut_class")


def _has_marker(draw: float, name: str, shortcut_class: str | None, shortcut_probability: float) -> bool:
    """Whether an image of class ``name`` carries the marker, from its uniform ``draw``."""
    if shortcut_class is None:
        return False
    if name == shortcut_class:
        return draw < shortcut_probability
    return draw < 1.0 - shortcut_probability


def _write_case(out_dir: Path, name: str, file_name: str, image: np.ndarray, lung: np.ndarray,
                lesion: np.ndarray) -> set[str]:
    """Write one case's image, lung mask and lesion mask; return their paths relative to ``out_dir``."""
    written = set()
    for kind, array in (("images", image), ("masks", lung), ("lesions", lesion)):
        data = array if array.dtype == np.uint8 else array.astype(np.uint8) * np.uint8(255)
        png = _encode_png(data)
        atomic_write(out_dir / name / kind / file_name, lambda tmp, png=png: tmp.write_bytes(png))
        written.add(str(Path(name, kind, file_name)))
    return written


def generate_dataset(
    out_dir: str | os.PathLike[str] = config.SYNTHETIC_DIR,
    classes: Sequence[str] = config.BINARY_CLASSES,
    per_class: int = 100,
    size: int = config.IMAGE_SIZE,
    patients_per_class: int | None = None,
    seed: int = config.SEED,
    difficulty: float = DEFAULT_DIFFICULTY,
    shortcut_class: str | None = None,
    shortcut_probability: float = 0.0,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write a synthetic Radiography-Database-style dataset and return its metadata.

    ``patients_per_class`` defaults to ``per_class`` (one image per patient); images are shared
    out among the patients as evenly as possible. A folder that is not empty and has no
    ``.covid_tf_synthetic`` file is refused unless ``overwrite=True``, and even then only the
    generator's own file names are written; nothing else is deleted. Rerunning into a folder
    made by the generator removes the images, masks and lesions listed in its old
    ``metadata.csv`` that the new run does not write again.
    """
    names = _check_classes(classes)
    size = _check_size(size)
    per_class, patients = _check_counts(per_class, patients_per_class)
    _check_options(names, seed, difficulty, shortcut_class, shortcut_probability)

    out_dir = Path(out_dir)
    previous = _prepare_output(out_dir, overwrite)
    digits = max(4, len(str(per_class)))
    patient_digits = max(4, len(str(patients)))
    rows = []
    written: set[str] = set()
    for name in names:
        key = _class_key(name)
        for kind in ("images", "masks", "lesions"):
            (out_dir / name / kind).mkdir(parents=True, exist_ok=True)
        number = 0
        for patient_index, count in enumerate(_patient_sizes(per_class, patients)):
            patient_seed = np.random.SeedSequence(int(seed), spawn_key=(key, patient_index))
            anatomy = sample_anatomy(np.random.default_rng(patient_seed))
            patient_id = f"{name}-P{patient_index + 1:0{patient_digits}d}"
            for image_index in range(count):
                number += 1
                rng = np.random.default_rng(
                    np.random.SeedSequence(int(seed), spawn_key=(key, patient_index, image_index + 1))
                )
                # Drawn always, so the shortcut never shifts the stream.
                has_marker = _has_marker(rng.random(), name, shortcut_class, shortcut_probability)
                image, lung, lesion = render_case(
                    rng, name, size, difficulty=difficulty, marker=has_marker, anatomy=anatomy
                )
                file_name = f"{name}-{number:0{digits}d}.png"
                written |= _write_case(out_dir, name, file_name, image, lung, lesion)
                rows.append((f"{name}/images/{file_name}", name, patient_id, has_marker))
    for stale in (out_dir / relative for relative in sorted(previous - written)):
        if stale.is_file():
            stale.unlink()
    metadata = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    atomic_write_text(out_dir / "metadata.csv", csv_text(metadata, lineterminator="\n"))
    return metadata


def benchmark(size: int = config.IMAGE_SIZE, count: int = 200, seed: int = config.SEED) -> float:
    """Images per second of :func:`render_case` (in memory, COVID and Normal alternating)."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for index in range(count):
        render_case(rng, "COVID" if index % 2 else "Normal", size)
    return count / (time.perf_counter() - start)
