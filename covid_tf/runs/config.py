"""``TrainConfig``: everything that defines a training run, saved as the run's ``config.json``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.lungs.roi.modes import (
    ATTENTION_MODE,
    AUTO,
    DEFAULT_DILATION,
    DEFAULT_MARGIN,
    JITTER_MODES,
    ROI_MODES,
    RoiSpec,
)
from covid_tf.models.architectures import get_architecture
from covid_tf.runs.recipes import LR_SCHEDULES, RECIPES, recipe_overrides

# Split fractions may be written with rounding (0.33,0.33,0.34 or 0.7,0.15,0.15); further off is a mistake.
FRACTION_TOLERANCE = 1e-3


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``)."""

    data: str
    model: str = "baseline"
    image_size: int = config.IMAGE_SIZE
    channels: int = config.CHANNELS
    epochs: int = config.EPOCHS
    fine_tune_epochs: int = 0
    unfreeze_blocks: int | str = "all"
    weights: str | None = None  # None (random), "auto" (ImageNet if available, see train_run), "imagenet", a file
    loss: str = "ce"
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: the architecture record's learning_rate, filled in by __post_init__
    fine_tune_learning_rate: float | None = None
    batch_size: int = config.BATCH_SIZE
    dropout: float = 0.5
    normalization: str = "auto"
    augmentation: str = "default"
    split_fractions: tuple[float, ...] = config.DEFAULT_SPLIT_FRACTIONS
    split_counts: tuple[int, ...] | None = None
    split_file: str | None = None
    classes: list[str] | None = None
    class_map: dict[str, str] = field(default_factory=dict)
    seed: int = config.SEED
    patience: int = config.EARLY_STOPPING_PATIENCE
    allow_leakage: bool = False
    n_bootstrap: int = 1000
    strategy: str = "default"  # covid_tf.distribute.STRATEGIES
    devices: list[str] | None = None  # devices of the 'mirrored' strategy (default: all local GPUs)
    mixed_precision: bool = False  # float16 compute, float32 variables and output (GPUs with tensor cores)
    precise_bn_images: int = config.PRECISE_BATCH_NORM_IMAGES  # covid_tf.callbacks.PreciseBatchNorm; 0: off
    # a mode of covid_tf.lungs.roi.modes.MODES (the one table of --roi modes) or "auto"
    # (the command line's default): train_run decides what auto means once, before anything is written, and
    # records it in roi_resolved (on a copy: the caller's config is never changed).
    roi: str = "none"
    roi_resolved: str | None = None
    roi_margin: float = DEFAULT_MARGIN  # of the lung box's height/width per side
    roi_dilation: float = DEFAULT_DILATION  # of the longer side: lungs-masked, lungs-removed, --roi-background
    roi_jitter: int = 0  # training only: random dilation/erosion of the mask by up to this many pixels
    # training only, lung attention: share of training images whose outside (beyond the dilated lungs) is
    # replaced by a random fill each epoch (covid_tf.lungs.roi.background); None: AUTO_BACKGROUND when roi="auto"
    # chooses lungs-attention, else 0 (train_run records the value that ran)
    roi_background: float | None = None
    class_names: list[str] = field(default_factory=list)
    # Small-data training (covid_tf.runs.recipes; docs/CT.md): label smoothing of the cross-entropy, MixUp's
    # Beta alpha (0: off), the learning-rate schedule ("plateau": halve on a validation-loss plateau; "cosine":
    # cosine decay over the epochs) and the recipe whose defaults the run took (None: train's own defaults).
    label_smoothing: float = 0.0
    mixup: float = 0.0
    lr_schedule: str = "plateau"
    recipe: str | None = None
    # Stop when the validation loss has not improved for `patience` epochs (False: train every epoch, a fixed
    # schedule as in seeds 000 and 004); alpha and gamma of loss "focal" (Lin et al. 2017's values).
    early_stopping: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # A CSV (path,infected) of slices a radiologist marked (seed 002): training drops those marked 0
    # (covid_tf.ct.infected); validation and test keep every slice.
    infected_slices: str | None = None

    def __post_init__(self) -> None:
        if not str(self.data).lower().startswith(("gs://", "s3://")):
            self.data = str(Path(self.data).expanduser().resolve())
        if self.learning_rate is None:  # said where the field is declared: the model's own default
            self.learning_rate = get_architecture(self.model).learning_rate
        self.validate()

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Every field's default (what a ``config.json`` written before a field existed meant by its absence)."""
        return {item.name: item.default for item in dataclasses.fields(cls) if item.default is not dataclasses.MISSING}

    @classmethod
    def from_recipe(cls, name: str | None, **explicit) -> TrainConfig:
        """A config with recipe ``name``'s defaults (``covid_tf.runs.recipes``) under the fields given in ``explicit``
        (``data`` at least): what the caller gives wins, as options given on ``train --recipe``'s command line do."""
        return cls(**{**recipe_overrides(name), **explicit})

    def validate(self) -> None:
        """Refuse settings no run can use, before anything is read or written (``CovidTfError``, one line each)."""
        for option, value in (("--lr", self.learning_rate), ("--fine-tune-lr", self.fine_tune_learning_rate)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise CovidTfError(f"{option} (learning rate) must be a finite number above 0, got {value}")
        for option, value, least in (("--image-size", self.image_size, config.MIN_IMAGE_SIZE),
                                     ("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1),
                                     ("--fine-tune-epochs", self.fine_tune_epochs, 0), ("--patience", self.patience, 0),
                                     ("--precise-bn-images", self.precise_bn_images, 0)):
            if int(value) != value:
                raise CovidTfError(f"{option} must be a whole number, got {value}")
            if value < least:
                bound = "0 or more" if least == 0 else f"at least {least}"
                raise CovidTfError(f"{option} must be {bound}, got {value}")
        config.check_sizes(self.image_size, self.batch_size)
        self._validate_normalization()
        if self.infected_slices is not None and not Path(self.infected_slices).expanduser().is_file():
            raise CovidTfError(f"{self.infected_slices}: --infected-slices CSV not found")
        if not 0.0 <= self.dropout < 1.0:
            raise CovidTfError(f"--dropout must be in [0, 1), got {self.dropout}")
        self._validate_split()
        self._validate_roi()
        self._validate_regularisation()

    def _validate_regularisation(self) -> None:
        if not (isinstance(self.label_smoothing, int | float) and 0.0 <= self.label_smoothing < 1.0):
            raise CovidTfError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss == "focal":
            raise CovidTfError("--label-smoothing applies to the cross-entropy losses, not --loss focal")
        if not (isinstance(self.mixup, int | float) and math.isfinite(self.mixup) and self.mixup >= 0):
            raise CovidTfError(f"--mixup (MixUp's alpha) must be a number of 0 or more, got {self.mixup}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise CovidTfError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not (isinstance(self.focal_alpha, int | float) and 0.0 <= self.focal_alpha <= 1.0):
            raise CovidTfError(f"--focal-alpha must be in [0, 1], got {self.focal_alpha}")
        if not (isinstance(self.focal_gamma, int | float) and math.isfinite(self.focal_gamma)
                and self.focal_gamma >= 0):
            raise CovidTfError(f"--focal-gamma must be a number of 0 or more, got {self.focal_gamma}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise CovidTfError(f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")

    def _validate_normalization(self) -> None:
        if self.normalization == "per-image":  # the command line's spelling
            self.normalization = "per_image"
        if self.normalization not in ("auto", *config.NORMALIZATION_KINDS):
            raise CovidTfError(f"--normalization must be one of {', '.join(('auto', *config.NORMALIZATION_KINDS))}, "
                               f"got {self.normalization!r}")
        if self.normalization == "dataset" and not get_architecture(self.model).dataset_statistics:
            raise CovidTfError(f"--normalization dataset does not fit {self.model}, whose pretrained weights expect "
                               "its own input convention: use auto (or imagenet, per-image)")

    def _validate_roi(self) -> None:
        if self.roi not in (AUTO, *ROI_MODES):
            raise CovidTfError(f"--roi must be one of {', '.join((AUTO, *ROI_MODES))}, got {self.roi!r}")
        if self.roi_resolved is not None and self.roi_resolved not in ROI_MODES:
            raise CovidTfError(f"roi_resolved must be one of {', '.join(ROI_MODES)}, got {self.roi_resolved!r}")
        for option, value in (("--roi-margin", self.roi_margin), ("--roi-dilation", self.roi_dilation),
                              ("--roi-jitter", self.roi_jitter)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise CovidTfError(f"{option} must be a number of 0 or more, got {value}")
        if self.roi_dilation >= 1.0:
            raise CovidTfError(f"--roi-dilation is a share of the image's longer side (below 1), got "
                               f"{self.roi_dilation}")
        if self.roi_background is not None and not 0.0 <= self.roi_background <= 1.0:
            raise CovidTfError(f"--roi-background must be a probability in [0, 1], got {self.roi_background}")
        if self.roi_background and self.roi not in (AUTO, ATTENTION_MODE):
            raise CovidTfError(f"--roi-background needs --roi {ATTENTION_MODE} (or auto), not {self.roi}")
        if self.roi_jitter and self.roi not in JITTER_MODES:
            raise CovidTfError(f"--roi-jitter needs --roi {' or '.join(JITTER_MODES)}, not {self.roi}")

    @property
    def roi_spec(self) -> RoiSpec:
        """The lung ROI of the run; ``auto`` must have been resolved (``roi_resolved``) first."""
        mode = self.roi_resolved or self.roi
        if mode == AUTO:
            raise CovidTfError("roi 'auto' is not resolved yet: train_run decides it from the training images")
        return RoiSpec(mode=mode, margin=self.roi_margin, dilation=self.roi_dilation, jitter=int(self.roi_jitter))

    def _validate_split(self) -> None:
        names = "/".join(config.SPLIT_NAMES)
        if self.split_counts is not None:
            if len(self.split_counts) != len(config.SPLIT_NAMES) or min(self.split_counts) < 0:
                raise CovidTfError(f"--split-counts must be {len(config.SPLIT_NAMES)} counts ({names}) of 0 or more, "
                                   f"got {','.join(map(str, self.split_counts))}")
            return
        fractions = tuple(self.split_fractions)
        text = ",".join(f"{value:g}" for value in fractions)
        if len(fractions) != len(config.SPLIT_NAMES) or not all(math.isfinite(f) and f >= 0 for f in fractions):
            raise CovidTfError(f"--split must be {len(config.SPLIT_NAMES)} fractions ({names}) of 0 or more, "
                               f"got {text}")
        if sum(fractions) <= 0:  # weights (1, 1, 1 = thirds) for library callers; the command line wants 1
            raise CovidTfError(f"--split fractions must not all be 0, got {text}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_fractions_add_up(fractions: tuple[float, ...], option: str = "--split") -> tuple[float, ...]:
    """Refuse fractions typed on a command line that do not add up to 1 (nothing is silently renormalised)."""
    if abs(sum(fractions) - 1.0) > FRACTION_TOLERANCE:
        text = ",".join(f"{value:g}" for value in fractions)
        raise CovidTfError(f"{option} fractions must add up to 1, got {text} (sum {sum(fractions):g})")
    return fractions
