# %% [markdown]
# # 07 · Four classes: the small CNN and ResNet18 of seed 004
#
# **Goal:** re-run the experiment of seed 004 (Avădănei and Predescu, "COVID-19 cases from chest X-ray
# images"): Normal, COVID, Viral Pneumonia and Lung Opacity told apart by
#
# 1. the authors' own small CNN (Conv 6@5×5 → max-pool 8 → Conv 16@5×5 → FC 100 → 50 → 4), trained
#    without and with augmentation (rotations, horizontal flips), SGD at 0.01 with momentum 0.9;
# 2. ResNet18 from scratch and pretrained on ImageNet, Adam at 3e-5;
#
# all at 128 × 128 px with ImageNet's mean and standard deviation, for 10 epochs at a fixed learning rate.
# Each run is one recipe of `covid_tf` (`train --recipe seed-004-small-cnn`, `--recipe seed-004-resnet18`):
# the recipe holds the seed's values, the notebook only picks the data and the split.
#
# The notebook reads the built-in synthetic dataset by default (four synthetic classes). Point `data_dir`
# (or `COVID_TF_DATA`) at the COVID-19 Radiography Database to train on real images.

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

data_dir = os.environ.get("COVID_TF_DATA", str(config.SYNTHETIC_DIR))
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "128"))  # the seed's 128 x 128
epochs = int(os.environ.get("COVID_TF_EPOCHS", "10"))  # the seed's "7-10 epochs"
batch_size = int(os.environ.get("COVID_TF_BATCH_SIZE", "16"))  # not given by the seed
# The two ResNet18 runs take minutes on a CPU: `make demo` and the tests leave them out (notebook 08 trains one).
train_resnet18 = bool(int(os.environ.get("COVID_TF_TRAIN_RESNET18", "1")))
smoke = bool(int(os.environ.get("COVID_TF_SMOKE", "0")))  # few bootstrap samples
seed = int(os.environ.get("COVID_TF_SEED", str(config.SEED)))

# %% [markdown]
# ## Setup

# %%
import tensorflow as tf
from IPython.display import Image, display

from covid_tf import figures
from covid_tf.data import splits
from covid_tf.data.discover import discover
from covid_tf.figures import comparison, seeds
from covid_tf.models.transfer import resolve_weights
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.recipes import RECIPES
from covid_tf.workflows import train

# Keep TensorFlow's retracing notices (one model after another in a loop) out of the output.
tf.get_logger().setLevel("ERROR")
# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Four classes, one split for every run
#
# The seed's four classes, in its order, as far as the data holds them (the subset of the database in
# `../shared/data` has no Lung Opacity folder). The split is stratified by class and grouped by patient
# and duplicate images, as in the other notebooks; the seed split 70 / 15 / 15 % as we do. All runs
# below train and test on exactly these images.

# %%
available = set(discover(data_dir).frame["label"])
class_names = [name for name in config.RADIOGRAPHY_CLASSES if name in available]
print(f"classes: {', '.join(class_names)}")
common = dict(data=data_dir, classes=class_names, image_size=image_size, epochs=epochs, batch_size=batch_size,
              seed=seed, n_bootstrap=100 if smoke else 1000)
split, class_names = train.prepare_split(TrainConfig(**common))
common["split_file"] = str(splits.save_split(split, config.REPORTS_DIR / "07_split.csv"))
split.groupby(["split", "label"]).size().unstack(fill_value=0)

# %% [markdown]
# ## The seed's settings
#
# What the two recipes set, value by value (`covid_tf/runs/recipes.py` says where the seed leaves a value
# open and which value was taken). Our image size, epochs and batch size are this notebook's parameters.

# %%
{name: dict(RECIPES[name]) for name in ("seed-004-small-cnn", "seed-004-resnet18")}

# %% [markdown]
# ## Four runs
#
# The "pretrained" ResNet18 needs ImageNet weights. Keras has none for ResNet18: `covid_tf` takes a
# `resnet18_notop.weights.h5` from Keras' cache folder (`~/.keras/models`) when there is one, else the
# backbone is random and one line says so. A random "pretrained" run would repeat the from-scratch run
# image for image (same seed), so it is left out then. `make demo` and the tests train the two small CNNs only
# (`train_resnet18 = False`, to stay quick): a ResNet18 is trained end to end by notebook 08.

# %%
runs = {
    "small CNN": ("seed-004-small-cnn", {"augmentation": "none"}),
    "small CNN + augmentation": ("seed-004-small-cnn", {}),
}
if train_resnet18:
    runs["ResNet18 from scratch"] = ("seed-004-resnet18", {"weights": None})
    if resolve_weights("resnet18", "auto") is not None:
        runs["ResNet18 pretrained"] = ("seed-004-resnet18", {})
results = {}
for label, (recipe, changes) in runs.items():
    cfg = TrainConfig.from_recipe(recipe, **common, **changes)
    slug = label.lower().replace(" + ", "_").replace(" ", "_")
    results[label] = train.train_run(cfg, config.RUNS_DIR / f"07_{slug}", overwrite=True, verbose=0)
    metrics = results[label].metrics
    print(f"{label}: validation accuracy {metrics['val']['accuracy']:.3f}, test accuracy "
          f"{metrics['test']['accuracy']:.3f} ({metrics['train_seconds']:.0f} s)")

# %% [markdown]
# ## Confusion matrices
#
# Row-normalised, so each row shows where the images of one true class went (counts in brackets), as the
# seed's Fig. 5-7. On the real database the seed's models confused COVID and Lung Opacity most.

# %%
figure = seeds.confusion_matrices_figure(
    {label: result.metrics["test"]["confusion_matrix"] for label, result in results.items()}, class_names,
    title="Test set, rows: true class")
Image(filename=figures.save_report_figure(figure, figures_dir / "07_confusion_matrices.png"))

# %% [markdown]
# ## The seed's table beside ours
#
# The seed reports one accuracy per model on its 3,175 test images: 95 % for the pretrained ResNet18, 84 %
# from scratch, 80 % for its own CNN, and 2 % less with augmentation than without. Ours come with 95 %
# bootstrap confidence intervals; on a few dozen synthetic test images they are wide.

# %%
SEED_ACCURACY = {"small CNN": 0.80, "small CNN + augmentation": 0.78, "ResNet18 from scratch": 0.84,
                 "ResNet18 pretrained": 0.95}
test_metrics = {label: result.metrics["test"] for label, result in results.items()}
seeds.seed_table(test_metrics, SEED_ACCURACY).round(3)

# %%
figure = comparison.plot_run_comparison(test_metrics, title="Test accuracy and ROC-AUC (95% CI)")
Image(filename=figures.save_report_figure(figure, figures_dir / "07_runs.png"))

# %% [markdown]
# ## Training curves
#
# Ten epochs at one learning rate, no early stopping: the seed's schedule. The run keeps the weights of
# its best validation epoch (the seed noticed its best results at epoch 4).

# %%
for label, result in results.items():
    figure = figures.plot_training_curves(result.history, title=label)
    slug = label.lower().replace(" + ", "_").replace(" ", "_")
    display(Image(filename=figures.save_report_figure(figure, figures_dir / f"07_curves_{slug}.png")))

# %% [markdown]
# ## What differs from the seed
#
# - **Data.** The seed used the full database (21,165 images, 299 px). The synthetic classes here are drawn
#   by `covid_tf.synthetic`: Lung Opacity is one focal consolidation, Viral Pneumonia a diffuse haze.
# - **Pretrained weights.** Offline there are no ImageNet weights for ResNet18 (above: the line printed
#   by `resolve_weights`), so the seed's best run is only made with a local weights file.
# - **The small CNN's first dense layer.** The seed prints `Linear(in_features=16, ...)`, which cannot
#   follow a 11×11×16 feature map at 128 px; `lenet` flattens the map (the model `small` reads it as a
#   global average instead).
# - **Unstated values.** Activations (ReLU), the rotation angle (10°) and the batch size are not in the
#   seed; the recipe module says which value each takes.
