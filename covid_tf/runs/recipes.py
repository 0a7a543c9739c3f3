"""Named training recipes: ``TrainConfig`` defaults chosen for one kind of data (``train --recipe NAME``).

A recipe changes only the defaults: whatever a caller gives explicitly (an option on the command line, a
keyword in Python) wins. ``ct`` was chosen by grouped cross-validation on the UCSD COVID-CT subset
(``benchmarks/ct_recipe_cv.py``; the table and the commands are in docs/CT.md)::

    python -m covid_tf train ~/data/covid-ct --out runs/ct --recipe ct
    cfg = TrainConfig.from_recipe("ct", data="~/data/covid-ct", epochs=10)   # epochs=10 wins over the recipe

The ``seed-*`` recipes are the experiments of the four seed documents (``../shared/seeds``): each sets every
hyperparameter its seed gives (``tests/test_seed_recipes.py`` reads them against the documents value by
value). A value the seed leaves open is either left to ``train``'s default or set, with a comment saying why.
Every seed trained the plain image, so each sets ``roi="none"`` (``train``'s command line defaults to lung
attention when it finds lungs). The split, the classes and the data are the caller's: a recipe is no dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# plateau: halve the rate when the validation loss stalls; cosine: decay over the epochs; constant: never change.
LR_SCHEDULES = ("plateau", "cosine", "constant")
# A fixed schedule as in seeds 000 and 004: all epochs, at one learning rate, no early stopping.
FIXED_SCHEDULE = {"lr_schedule": "constant", "early_stopping": False}

_SEED_000 = {
    # Gouda, "COVID-19 Classification and Heatmap Generation Using Deep Learning".
    "model": "resnet18", "image_size": 512, "augmentation": "rotate", "normalization": "dataset",
    "optimizer": "adam", "learning_rate": 1e-4, "loss": "weighted", "batch_size": 4, "epochs": 20,
    **FIXED_SCHEDULE, "roi": "none",
    # The seed's ResNet18 ends in torchvision's one linear layer: no dropout before it.
    "dropout": 0.0,
    # Open: the seed does not say whether its ResNet18 was pretrained; ImageNet weights when they can be had
    # (with 336 training images a pretrained backbone is the usual choice), else a random one, said in one line.
    "weights": "auto",
    # "Mean-std intensity normalization" without saying whose: the training images' (normalization dataset).
    # Best model by validation accuracy, then training accuracy: what every run keeps (BestModelCheckpoint).
}

_SEED_001_AUGMENTATION = "width-shift-rotate-zoom"  # "shifted in width", rotation 15 degrees, zoom 0.2
_SEED_001_BASELINE = {
    # Van Bauwel et al., "COVID-19 Assisted Diagnosis": the baseline CNN of task 2.
    "model": "baseline", "image_size": 128, "augmentation": _SEED_001_AUGMENTATION, "normalization": "dataset",
    "early_stopping": True, "patience": 5, "roi": "none",
    # The learning-rate plateau halving is train's, not the seed's: the rate stays as the grid search chose it.
    "lr_schedule": "constant",
    # Open: batch size, learning rate and dropout came from a grid search whose values the report left as
    # "XX" (notebook 02 runs that search); optimiser and epochs are not given: train's defaults (Adam, 20
    # epochs under early stopping).
}
_SEED_001_RESNET50V2 = {
    # The same report, task 3: ResNet50V2 + GAP + Dense 128 (ReLU) + dropout, frozen, then fine-tuned.
    "model": "resnet50v2", "image_size": 128, "augmentation": _SEED_001_AUGMENTATION,
    "early_stopping": True, "patience": 5, "lr_schedule": "constant", "roi": "none", "weights": "auto",
    # Open: the seed fine-tunes after training the head but gives no epoch count ("XX"); as many as the head's.
    "fine_tune_epochs": 20,
    # Deviation: the seed normalised with the dataset's mean and std; ResNet50V2's ImageNet weights expect
    # [-1, 1] and its record refuses "dataset", so the recipe keeps the model's own (normalization auto).
}

_SEED_002 = {
    # Zayan and Amin, "Deep ConvNet for COVID-19 detection from CT scan images": VGG16 fine-tuned from ImageNet
    # on 512 x 512 slices with focal loss.
    "model": "vgg16", "image_size": 512, "loss": "focal", "weights": "auto", "roi": "none",
    # Open: alpha and gamma are "prefixed" but not given: the values of the focal-loss paper (Lin et al. 2017).
    "focal_alpha": 0.25, "focal_gamma": 2.0,
    # Open: the seed describes no augmentation of its slices.
    "augmentation": "none",
    # Open: optimiser, learning rate, batch and epochs are not given: train's defaults (Adam at VGG16's 1e-4,
    # batch 16, 20 epochs under early stopping). "Finetuned" the whole network: no frozen phase.
}

_SEED_004_COMMON = {
    # Avadanei and Predescu, "COVID-19 cases from chest X-ray images": 128 x 128, ImageNet mean/std.
    "image_size": 128, "normalization": "imagenet", "roi": "none",
    # Rotations (angle not given: the preset's 10 degrees) and horizontal flips.
    "augmentation": "rotate-flip",
    # "7-10 epochs": the recipe takes 10, at one learning rate, without early stopping (the seed names none).
    "epochs": 10, **FIXED_SCHEDULE,
    # Open: no batch size is given: train's default (16).
}
_SEED_004_SMALL_CNN = {
    **_SEED_004_COMMON,
    # The seed's own CNN (Conv 6@5x5 -> max-pool 8 -> Conv 16@5x5 -> FC 100 -> 50 -> 4), SGD 0.01 momentum 0.9,
    # negative log-likelihood of a (log-)softmax: cross-entropy. The seed trained it with and without
    # augmentation; the recipe is the augmented run (--augmentation none gives the other).
    "model": "lenet", "optimizer": "sgd", "learning_rate": 0.01, "loss": "ce", "dropout": 0.0,
}
_SEED_004_RESNET18 = {
    **_SEED_004_COMMON,
    # ResNet18 with a 4-way output, cross-entropy, Adam at 3e-5, pretrained on ImageNet (--weights none: the
    # "from scratch" run); torchvision's head has no dropout.
    "model": "resnet18", "optimizer": "adam", "learning_rate": 3e-5, "loss": "ce", "dropout": 0.0,
    "weights": "auto",
}

RECIPES: Mapping[str, Mapping[str, object]] = MappingProxyType({
    # The best pooled out-of-fold ROC-AUC of the confirmed candidates (0.709 against 0.705 for train's defaults,
    # paired difference +0.005 [-0.045, +0.056]: not separable from the defaults on 522 slices), with the lowest
    # spread over folds (SD 0.047 against 0.071), at the defaults' cost.
    "ct": MappingProxyType({"augmentation": "ct", "label_smoothing": 0.1, "lr_schedule": "cosine"}),
    "seed-000": MappingProxyType(_SEED_000),
    "seed-001-baseline": MappingProxyType(_SEED_001_BASELINE),
    "seed-001-resnet50v2": MappingProxyType(_SEED_001_RESNET50V2),
    "seed-002": MappingProxyType(_SEED_002),
    "seed-004-small-cnn": MappingProxyType(_SEED_004_SMALL_CNN),
    "seed-004-resnet18": MappingProxyType(_SEED_004_RESNET18),
})

# What each recipe is, for train --help and the README.
RECIPE_SOURCES: Mapping[str, str] = MappingProxyType({
    "ct": "ours: a few hundred CT slices, docs/CT.md",
    "seed-000": "seed 000, Gouda: ResNet18, 512 px, weighted CE, Adam 1e-4, batch 4, 20 epochs",
    "seed-001-baseline": "seed 001, Van Bauwel et al.: baseline CNN, 128 px, early stopping (patience 5)",
    "seed-001-resnet50v2": "seed 001: ResNet50V2 frozen, then fine-tuned",
    "seed-002": "seed 002, Zayan and Amin: VGG16, 512 px, focal loss",
    "seed-004-small-cnn": "seed 004, Avadanei and Predescu: their small CNN, SGD 0.01, 10 epochs",
    "seed-004-resnet18": "seed 004: ResNet18, Adam 3e-5, 10 epochs",
})


def recipe_overrides(name: str | None) -> dict[str, object]:
    """The ``TrainConfig`` fields that recipe ``name`` sets (an empty dict for ``None``), with ``recipe`` itself."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return {**RECIPES[name], "recipe": name}
