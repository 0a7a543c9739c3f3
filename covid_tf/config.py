"""Every path and default of the project in one place.

Paths can be redirected with environment variables, so notebooks, tests and the command line
never hard-code one: ``COVID_TF_DATA_DIR``, ``COVID_TF_REPORTS_DIR``, ``COVID_TF_MODELS_DIR``,
``COVID_TF_CACHE_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


DATA_DIR = _env_path("COVID_TF_DATA_DIR", PROJECT_ROOT / "data")
RAW_DATA_DIR = DATA_DIR / "raw"
INTERIM_DATA_DIR = DATA_DIR / "interim"
PROCESSED_DATA_DIR = DATA_DIR / "processed"
SYNTHETIC_DIR = DATA_DIR / "synthetic"
SYNTHETIC_CT_DIR = DATA_DIR / "synthetic_ct"
REPORTS_DIR = _env_path("COVID_TF_REPORTS_DIR", PROJECT_ROOT / "reports")
FIGURES_DIR = REPORTS_DIR / "figures"
EXECUTED_NOTEBOOKS_DIR = REPORTS_DIR / "notebooks"
MODELS_DIR = _env_path("COVID_TF_MODELS_DIR", PROJECT_ROOT / "models")
RUNS_DIR = MODELS_DIR / "runs"
CACHE_DIR = _env_path("COVID_TF_CACHE_DIR", PROJECT_ROOT / ".cache")
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
DEFAULT_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
