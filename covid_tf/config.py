"""Every path and default of the project in one place.

Default folders (``data/``, ``reports/``, ``models/``, ``.cache/``) lie in the workspace: ``COVID_TF_HOME``
when set; else the source checkout when covid_tf runs from one (``pip install -e .``, ``make``); else the
working directory, so an installed wheel never writes into site-packages. Each folder can be redirected
on its own: ``COVID_TF_DATA_DIR``, ``COVID_TF_REPORTS_DIR``, ``COVID_TF_MODELS_DIR``, ``COVID_TF_CACHE_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

VERSION = "0.1.0"  # covid_tf.__version__ (pyproject.toml says the same)
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout, or site-packages for a wheel


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def is_source_checkout(root: Path = PROJECT_ROOT) -> bool:
    """Whether covid_tf runs from its source tree (a ``pyproject.toml`` beside the package), not a wheel."""
    return (root / "pyproject.toml").is_file() and not {"site-packages", "dist-packages"} & set(root.parts)


WORKSPACE = _env_path("COVID_TF_HOME", PROJECT_ROOT if is_source_checkout() else Path.cwd().resolve())

DATA_DIR = _env_path("COVID_TF_DATA_DIR", WORKSPACE / "data")
RAW_DATA_DIR = DATA_DIR / "raw"
INTERIM_DATA_DIR = DATA_DIR / "interim"
PROCESSED_DATA_DIR = DATA_DIR / "processed"
SYNTHETIC_DIR = DATA_DIR / "synthetic"
SYNTHETIC_CT_DIR = DATA_DIR / "synthetic_ct"
REPORTS_DIR = _env_path("COVID_TF_REPORTS_DIR", WORKSPACE / "reports")
FIGURES_DIR = REPORTS_DIR / "figures"
EXECUTED_NOTEBOOKS_DIR = REPORTS_DIR / "notebooks"
MODELS_DIR = _env_path("COVID_TF_MODELS_DIR", WORKSPACE / "models")
RUNS_DIR = MODELS_DIR / "runs"
CACHE_DIR = _env_path("COVID_TF_CACHE_DIR", WORKSPACE / ".cache")
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"

# The real development data beside the checkout (absent on a user's fresh clone).
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
RADIOGRAPHY_SUBSET_DIR = SHARED_DATA_DIR / "covid19-radiography-subset"
CT_UCSD_SUBSET_DIR = SHARED_DATA_DIR / "covid-ct-ucsd-subset"

SEED = 42
IMAGE_SIZE = 128
CHANNELS = 1
BATCH_SIZE = 16
EPOCHS = 20
# Adam learning rates: 1e-4 for the deep networks (seeds 000 and 001), 1e-3 for the small CNNs
# trained from scratch, which learn too slowly at 1e-4.
LEARNING_RATE = 1e-4
SCRATCH_CNN_LEARNING_RATE = 1e-3
EARLY_STOPPING_PATIENCE = 5
# Training images over which BatchNormalization statistics are recomputed after each epoch
# (covid_tf.callbacks.PreciseBatchNorm); 0 keeps Keras's moving averages.
PRECISE_BATCH_NORM_IMAGES = 1024

# Class names of the Kaggle COVID-19 Radiography Database, in the order of seed 004.
RADIOGRAPHY_CLASSES = ("Normal", "COVID", "Viral Pneumonia", "Lung Opacity")
BINARY_CLASSES = ("COVID", "Normal")
CT_CLASSES = ("COVID", "CAP", "Normal")
# Folder names that mean the same class in public datasets.
DEFAULT_CLASS_MAP = {
    "CT_COVID": "COVID",
    "CT_NonCOVID": "NonCOVID",
    "Lung_Opacity": "Lung Opacity",
    "Viral_Pneumonia": "Viral Pneumonia",
}

SPLIT_NAMES = ("train", "val", "test")
# The smallest image side every architecture accepts (ResNet50V2 and VGG16 need 32).
MIN_IMAGE_SIZE = 32
# The largest image side and batch size accepted, checked before any work (check_sizes): a 50000 px side would
# run out of memory after the data was read. COVID_TF_MAX_IMAGE_SIZE raises the side (and the batch budget).
MAX_IMAGE_SIZE = 1024
MAX_BATCH_SIZE = 4096
BATCH_IMAGES_AT_MAX_SIZE = 64  # one batch holds at most 64 x MAX_IMAGE_SIZE^2 pixels (64 Mpx)
DEFAULT_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

# How a model normalises its [0, 1] input (covid_tf.data.preprocessing.normalization_layer).
NORMALIZATION_KINDS = ("dataset", "imagenet", "per_image", "resnet_v2", "vgg16", "none")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def max_image_size() -> int:
    """``MAX_IMAGE_SIZE``, or ``COVID_TF_MAX_IMAGE_SIZE`` when set to a whole number."""
    value = os.environ.get("COVID_TF_MAX_IMAGE_SIZE", "")
    return int(value) if value.strip().isdigit() else MAX_IMAGE_SIZE


def check_sizes(image_size: int | None = None, batch_size: int | None = None, *,
                image_option: str = "--image-size", batch_option: str = "--batch-size") -> None:
    """Refuse an image side or batch size no machine can use (``CovidTfError``), before anything is read."""
    from covid_tf.errors import CovidTfError

    limit = max_image_size()
    if image_size is not None and image_size > limit:
        raise CovidTfError(f"{image_option} must be at most {limit} pixels, got {image_size} (a larger side needs "
                           "more memory than one machine has; set COVID_TF_MAX_IMAGE_SIZE to raise the limit)")
    if batch_size is None:
        return
    if batch_size < 1 or batch_size > MAX_BATCH_SIZE:
        raise CovidTfError(f"{batch_option} must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
    budget = BATCH_IMAGES_AT_MAX_SIZE * limit**2
    if image_size is not None and batch_size * image_size**2 > budget:
        raise CovidTfError(f"{batch_option} {batch_size} x {image_option} {image_size}: a batch of "
                           f"{batch_size * image_size**2 / 2**20:.0f} Mpx is more than the {budget / 2**20:.0f} Mpx "
                           f"allowed ({BATCH_IMAGES_AT_MAX_SIZE} images of {limit} px); lower {batch_option}")
