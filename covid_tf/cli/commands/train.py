"""``train``: train a model on a dataset and write a run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.lungs.roi.modes import AUTO, DEFAULT_DILATION, DEFAULT_MARGIN, MODES
from covid_tf.models.architectures import model_names

ROI_CHOICES = (AUTO, *MODES)  # the ROI table imports no TensorFlow or OpenCV
HELP = "Train a model (baseline, small, lenet, resnet50v2, resnet18, vgg16) and write a run directory."
NORMALIZATION_CHOICES = ("auto", "dataset", "imagenet", "per-image", "resnet_v2", "vgg16", "none")


def _numbers(text: str, kind, option: str) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise CovidTfError(f"{option} expects comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise CovidTfError(f"{option} expects three numbers (train,val,test), got {text!r}")
    return values


def _devices(args: argparse.Namespace) -> list[str] | None:
    devices = [part.strip() for part in (args.devices or "").split(",") if part.strip()]
    if devices and args.strategy != "mirrored":
        raise CovidTfError("--devices needs --strategy mirrored")
    return devices or None


class _StoreExplicit(argparse._StoreAction):
    """argparse's ``store`` that also notes the option as given (``args.explicit``), so a recipe knows what to keep."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        super().__call__(parser, namespace, values, option_string)
        explicit = set(getattr(namespace, "explicit", None) or ())
        namespace.explicit = explicit | {self.dest}


class _StoreFalseExplicit(argparse._StoreFalseAction):
    """argparse's ``store_false`` that notes the option as given, as :class:`_StoreExplicit` does."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        super().__call__(parser, namespace, values, option_string)
        namespace.explicit = set(getattr(namespace, "explicit", None) or ()) | {self.dest}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name in (None, "store"):  # every plain option of train records that it was given (None: no action=)
        parser.register("action", name, _StoreExplicit)
    parser.set_defaults(explicit=set())
    parser.add_argument("data", help="dataset folder (any supported layout) or label CSV")
    parser.add_argument("--out", required=True, type=Path, help="run directory to write")
    parser.add_argument("--model", choices=model_names(), default="baseline", help="architecture")
    parser.add_argument("--image-size", type=int, default=config.IMAGE_SIZE, help="image side in pixels")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=config.CHANNELS,
                        help="1 (grayscale) or 3 (RGB) input channels")
    parser.add_argument("--epochs", type=int, default=config.EPOCHS, help="epochs (of the head, with a backbone)")
    parser.add_argument("--fine-tune-epochs", type=int, default=0,
                        help="after training the head on a frozen backbone, unfreeze and train this many epochs")
    parser.add_argument("--unfreeze", default="all", help="backbone blocks to unfreeze: a number or 'all'")
    parser.add_argument("--weights", default="auto",
                        help="auto (default: ImageNet when cached or downloadable, else a random backbone, said in "
                             "one line), imagenet, none, or a local weights file (.h5 / .weights.h5)")
    parser.add_argument("--loss", choices=("ce", "weighted", "balanced", "focal"), default="ce",
                        help="cross-entropy, class-weighted, balanced batches, or focal loss")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimiser")
    parser.add_argument("--lr", type=float, help="learning rate (default 1e-3 for baseline/small, else 1e-4)")
    parser.add_argument("--fine-tune-lr", type=float, help="learning rate after unfreezing (default lr/10)")
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="images per batch")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout rate of the classification head")
    parser.add_argument("--augmentation", default="default",
                        help="none, rotate, shift-rotate-zoom (default), width-shift-rotate-zoom, rotate-flip, "
                             "shift-rotate-zoom-flip, ct "
                             "(README: presets and papers)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions")
    split.add_argument("--split-counts", help="train,val,test image counts, e.g. 1600,400,200")
    split.add_argument("--split-file", help="a split.csv to reuse (path,label,split[,patient_id])")
    parser.add_argument("--classes", help="classes to use, comma-separated, e.g. COVID,Normal")
    parser.add_argument("--class-map", help="rename folders, e.g. CT_COVID=COVID,CT_NonCOVID=NonCOVID")
    parser.add_argument("--seed", type=int, default=config.SEED, help="random seed of the split and the training")
    parser.add_argument("--patience", type=int, default=config.EARLY_STOPPING_PATIENCE,
                        help="epochs without improvement before early stopping")
    parser.add_argument("--allow-leakage", action="store_true",
                        help="train even when a patient or duplicate image is in two splits of --split-file")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                        help="default: one device; mirrored: every local GPU (or --devices); "
                        "multiworker: several machines, configured by the TF_CONFIG environment variable "
                        "(Keras 3.15 cannot fit under it yet: keras-team/keras#20585)")
    parser.add_argument("--devices", help="with --strategy mirrored: devices to mirror over, e.g. /gpu:0,/gpu:1")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="float16 compute with float32 weights and outputs (faster on recent GPUs)")
    parser.add_argument("--precise-bn-images", type=int, default=config.PRECISE_BATCH_NORM_IMAGES,
                        help="recompute BatchNormalization statistics after each epoch on this many un-augmented "
                             "training images (0: keep Keras's moving averages; default %(default)s)")
    add_recipe_arguments(parser)
    add_seed_arguments(parser)
    add_roi_arguments(parser)


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """Normalisation, early stopping and focal loss's parameters: what the seed recipes set (README: Presets)."""
    parser.add_argument("--focal-alpha", type=float, default=0.25, help="--loss focal: alpha (default %(default)s)")
    parser.add_argument("--focal-gamma", type=float, default=2.0, help="--loss focal: gamma (default %(default)s)")
    parser.add_argument("--normalization", choices=NORMALIZATION_CHOICES, default="auto",
                        help="how the model normalises its input: auto (the model's own: the training images' "
                             "mean/std for the CNNs, ImageNet's for resnet18, [-1, 1] for resnet50v2, caffe for "
                             "vgg16), dataset (the training images' mean/std), imagenet (ImageNet's mean/std), "
                             "per-image (each image standardised), resnet_v2, vgg16 or none")
    parser.add_argument("--infected-slices", metavar="CSV",
                        help="a CSV path,infected of slices marked by a radiologist (seed 002): training drops the "
                             "slices it marks 0; validation and test keep every slice (default: none)")
    parser.add_argument("--no-early-stopping", dest="early_stopping", action=_StoreFalseExplicit,
                        help="train every epoch (a fixed schedule, with --lr-schedule constant); the best epoch "
                             "is still kept")


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recipe`` and the small-data options it sets (docs/CT.md)."""
    from covid_tf.runs.recipes import LR_SCHEDULES, RECIPE_SOURCES, RECIPES

    described = "; ".join(f"{name} ({RECIPE_SOURCES[name]})" for name in RECIPES)
    parser.add_argument("--recipe", choices=tuple(RECIPES),
                        help=f"named defaults for one kind of data or one seed's experiment: {described}. "
                             "Options given explicitly still win (README: Presets)")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the cross-entropy")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                        help="MixUp of training batches with Beta(ALPHA, ALPHA) weights (0: off, default)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="plateau",
                        help="plateau: halve the learning rate when the validation loss stalls (default); "
                             "cosine: cosine decay over the epochs; constant: never change it")


# TrainConfig fields a recipe may set, and the option (argparse dest) that gives each on the command line.
RECIPE_OPTIONS = {"model": "model", "image_size": "image_size", "epochs": "epochs", "augmentation": "augmentation",
                  "learning_rate": "lr", "batch_size": "batch_size", "dropout": "dropout", "patience": "patience",
                  "label_smoothing": "label_smoothing", "mixup": "mixup", "lr_schedule": "lr_schedule",
                  "normalization": "normalization", "optimizer": "optimizer", "loss": "loss", "weights": "weights",
                  "fine_tune_epochs": "fine_tune_epochs", "early_stopping": "early_stopping", "roi": "roi",
                  "focal_alpha": "focal_alpha", "focal_gamma": "focal_gamma"}


def with_recipe(fields: dict, args: argparse.Namespace) -> dict:
    """``fields`` (TrainConfig keywords from the options) with ``--recipe``'s defaults where no option was given."""
    from covid_tf.runs.recipes import recipe_overrides

    overrides = recipe_overrides(getattr(args, "recipe", None))
    given = getattr(args, "explicit", set())
    for name, value in overrides.items():
        if name not in RECIPE_OPTIONS and name != "recipe":
            raise CovidTfError(f"recipe {args.recipe!r} sets {name!r}, which has no option of train")
        if name == "recipe" or RECIPE_OPTIONS[name] not in given:
            fields[name] = value
    return fields


def add_roi_arguments(parser: argparse.ArgumentParser) -> None:
    """The lung-ROI options of ``train`` (the modes come from the ROI table)."""
    parser.add_argument("--roi", choices=ROI_CHOICES, default=AUTO,
                        help="lung region of interest: auto (lungs-attention when plausible lungs are found on "
                             "at least 80%% of 64 sampled training images, else none), "
                             + ", ".join(f"{name} ({mode.help})" for name, mode in MODES.items())
                             + ". Masks from the dataset's masks/, else from the shipped segmenter, computed once, "
                             "cached (default %(default)s)")
    parser.add_argument("--roi-margin", type=float, default=DEFAULT_MARGIN,
                        help="margin around the lung box, as a share of its height/width per side (default "
                             "%(default)s)")
    parser.add_argument("--roi-dilation", type=float, default=DEFAULT_DILATION, metavar="SHARE",
                        help="how far the lungs are grown, as a share of the image's longer side, before the "
                             "outside is blacked out (lungs-masked), the lungs are (lungs-removed) or the outside "
                             "is randomised (--roi-background) (default %(default)s)")
    parser.add_argument("--roi-background", type=float, default=None, metavar="P",
                        help="lungs-attention: replace everything outside the dilated lungs of a share P of the "
                             "training images, each epoch, by a random fill (mean grey, blur, noise or another "
                             "image), so the model must decide from the lungs (default: 0.5 when --roi auto "
                             "chooses lungs-attention, else 0)")
    parser.add_argument("--roi-jitter", type=int, default=0, metavar="PIXELS",
                        help="lungs-masked/lungs-removed: dilate or erode each training image's mask by a random "
                             "radius up to PIXELS (at --image-size), so that the mask's outline stops being a cue")


def config_from_args(args: argparse.Namespace):
    """Turn command-line options into a ``TrainConfig`` (validated by ``TrainConfig.validate``)."""
    from covid_tf.data.discover import parse_class_list, parse_class_map
    from covid_tf.runs.config import TrainConfig, check_fractions_add_up

    try:
        unfreeze = args.unfreeze if args.unfreeze == "all" else int(args.unfreeze)
    except ValueError:
        raise CovidTfError(f"--unfreeze expects a number of blocks or 'all', got {args.unfreeze!r}") from None
    weights = None if args.weights.lower() == "none" else args.weights
    if weights not in (None, "auto", "imagenet") and not Path(weights).is_file():
        raise CovidTfError(f"{weights}: weights file not found (use auto, none, imagenet or a path)")
    return TrainConfig(**with_recipe(dict(
        data=str(Path(args.data).expanduser().resolve()), model=args.model, image_size=args.image_size,
        channels=args.channels, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
        unfreeze_blocks=unfreeze, weights=weights, loss=args.loss, optimizer=args.optimizer,
        learning_rate=args.lr, fine_tune_learning_rate=args.fine_tune_lr, batch_size=args.batch_size,
        dropout=args.dropout, augmentation=args.augmentation,
        split_fractions=check_fractions_add_up(_numbers(args.split, float, "--split")),
        split_counts=_numbers(args.split_counts, int, "--split-counts") if args.split_counts else None,
        split_file=str(Path(args.split_file).resolve()) if args.split_file else None,
        classes=parse_class_list(args.classes), class_map=parse_class_map(args.class_map), seed=args.seed,
        patience=args.patience, allow_leakage=args.allow_leakage, strategy=args.strategy,
        devices=_devices(args), mixed_precision=args.mixed_precision, precise_bn_images=args.precise_bn_images,
        roi=args.roi, roi_margin=args.roi_margin, roi_dilation=args.roi_dilation, roi_jitter=args.roi_jitter,
        roi_background=args.roi_background,
        label_smoothing=args.label_smoothing, mixup=args.mixup, lr_schedule=args.lr_schedule,
        normalization=args.normalization, early_stopping=args.early_stopping, focal_alpha=args.focal_alpha,
        focal_gamma=args.focal_gamma,
        infected_slices=str(Path(args.infected_slices).expanduser().resolve()) if args.infected_slices else None,
    ), args))


def run(args: argparse.Namespace) -> int:
    from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs

    cfg = config_from_args(args)  # every setting checked (TrainConfig.validate) before anything is read or written
    refuse_output_inside_inputs(args.out, [args.data, *[path for path in (args.split_file, cfg.weights,
                                                                           cfg.infected_slices)
                                                        if path and Path(path).is_file()]])
    check_writable_output(args.out, folder=True)
    from covid_tf.workflows.train import train_run

    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    result = train_run(cfg, args.out, overwrite=args.overwrite, verbose=verbose)
    skipped = result.split.attrs.get("skipped", [])
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are not readable images (see {args.out / 'skipped.csv'}):")
        for path, reason in skipped[:5]:
            print(f"  {path}: {reason}")
        if len(skipped) > 5:
            print(f"  ... and {len(skipped) - 5} more")
    if result.roi_table is not None:
        from covid_tf.lungs.roi.mask_table import fallback_note

        print(f"{fallback_note(result.roi_table)} (see {args.out / 'roi.csv'})")
    for name in ("val", "test"):
        if name in result.metrics:
            values = result.metrics[name]
            auc = values.get("roc_auc")
            print(f"{name}: accuracy {values['accuracy']:.3f}, ROC-AUC "
                  f"{'n/a' if auc is None else format(auc, '.3f')} (n={values['n']})")
    print(f"run written to {args.out} ({result.metrics['train_seconds']:.0f} s)")
    return 0
