# %% [markdown]
# # 03 · Transfer learning with ResNet50V2
#
# **Goal:** seed 001's second model. A ResNet50V2 backbone with a small head on top (global
# average pooling, a dense layer with dropout, a softmax) is trained in two phases, as in the
# keras-io transfer-learning guide: first the head alone on the frozen backbone, then the whole
# network at a small learning rate ("fine-tuning"). The result is compared with the baseline CNN
# of notebook 02 on the same test images.
#
# **Pretrained weights.** Transfer learning pays off with ImageNet weights. With `weights = "auto"`
# (the default) the backbone starts from ImageNet when Keras has the file cached
# (`~/.keras/models/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5`) or can download it
# (once, about 90 MB); offline it starts from random weights, and one printed line says so and why.
# The numbers of a random backbone show the mechanics, not the benefit of pretraining.
# `weights = "imagenet"` insists on ImageNet (an error offline), `None` asks for a random backbone, and
# a path loads a local weights file.
#
# The model takes the same one-channel [0, 1] images as the baseline: it repeats the channel three
# times and scales to [-1, 1] inside its first layers, as ResNet50V2 expects.

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

data_dir = os.environ.get("COVID_TF_DATA", str(config.SYNTHETIC_DIR))
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "128"))
epochs = int(os.environ.get("COVID_TF_EPOCHS", "10"))  # head only, backbone frozen
fine_tune_epochs = int(os.environ.get("COVID_TF_FINE_TUNE_EPOCHS", "5"))  # whole network
batch_size = int(os.environ.get("COVID_TF_BATCH_SIZE", "32"))
weights = os.environ.get("COVID_TF_WEIGHTS") or "auto"  # "auto", "imagenet", None or a weights file
learning_rate = 1e-3
fine_tune_learning_rate = 1e-5
smoke = bool(int(os.environ.get("COVID_TF_SMOKE", "0")))
seed = int(os.environ.get("COVID_TF_SEED", str(config.SEED)))

# %% [markdown]
# ## Setup

# %%
import json

from IPython.display import Image

from covid_tf import figures, models
from covid_tf.data import splits
from covid_tf.data.pipeline import load_images
from covid_tf.figures import comparison, grids
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import predict_paths
from covid_tf.workflows import train

# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)
run_dir = config.RUNS_DIR / "03_transfer"
baseline_dir = config.RUNS_DIR / "02_baseline"
class_names = ["COVID", "Normal"]

# %% [markdown]
# ## COVID versus normal, the same split as notebook 02
#
# With the same data, classes and seed, `prepare_split` returns the split of notebook 02, so both
# models are tested on the same images. The split is saved with the run.

# %%
# "auto" becomes "imagenet" (the cached file, else downloaded once) or, offline, None with one line saying so.
weights = models.resolve_weights("resnet50v2", None if str(weights).lower() == "none" else weights)
transfer_config = TrainConfig(
    data=data_dir, model="resnet50v2", weights=weights, classes=class_names, image_size=image_size,
    epochs=epochs, fine_tune_epochs=fine_tune_epochs, unfreeze_blocks="all", learning_rate=learning_rate,
    fine_tune_learning_rate=fine_tune_learning_rate, batch_size=batch_size, seed=seed,
    n_bootstrap=100 if smoke else 1000,
)
split, class_names = train.prepare_split(transfer_config)
transfer_config.split_file = str(splits.save_split(split, config.REPORTS_DIR / "03_split.csv"))
split.groupby(["split", "label"]).size().unstack(fill_value=0)

# %% [markdown]
# ## Train: frozen backbone, then fine-tuning
#
# Phase 1 trains the head for `epochs` epochs with the backbone frozen (`trainable = False`, so its
# BatchNormalization layers run in inference mode). Phase 2 unfreezes the backbone, recompiles and
# trains `fine_tune_epochs` more epochs at `fine_tune_learning_rate`, small enough not to wreck
# pretrained features. Early stopping watches the validation loss in both phases; the weights of
# the best epoch are kept.

# %%
transfer = train.train_run(transfer_config, run_dir, overwrite=True, verbose=2)
print(f"validation accuracy {transfer.metrics['val']['accuracy']:.3f}, "
      f"test accuracy {transfer.metrics['test']['accuracy']:.3f} ({transfer.metrics['train_seconds']} s)")

# %% [markdown]
# ## Training curves of both phases
#
# The dashed line marks the start of fine-tuning. With ImageNet weights the validation loss
# usually drops again right after it; with a random backbone there is little to fine-tune.

# %%
figure = figures.plot_training_curves(transfer.history, title="ResNet50V2: head, then fine-tuning")
Image(filename=figures.save_report_figure(figure, figures_dir / "03_transfer_curves.png"))

# %% [markdown]
# ## Comparison with the baseline CNN
#
# The baseline run of notebook 02 is reused when it was tested on the same images; otherwise a
# quick baseline is trained here with the same split and epochs.

# %%
test_paths = set(split.loc[split["split"] == "test", "path"])
baseline_metrics = None
if (baseline_dir / "metrics.json").is_file() and (baseline_dir / "split.csv").is_file():
    baseline_split = splits.load_split(baseline_dir / "split.csv")
    if set(baseline_split.loc[baseline_split["split"] == "test", "path"]) == test_paths:
        baseline_metrics = json.loads((baseline_dir / "metrics.json").read_text())["test"]
        print(f"using the baseline run {baseline_dir}")
if baseline_metrics is None:
    baseline_config = TrainConfig(data=data_dir, model="baseline", classes=class_names,
                                        image_size=image_size, epochs=epochs, batch_size=batch_size, seed=seed,
                                        split_file=transfer_config.split_file,
                                        n_bootstrap=transfer_config.n_bootstrap)
    baseline_run = train.train_run(baseline_config, config.RUNS_DIR / "03_baseline", overwrite=True, verbose=0)
    baseline_metrics = baseline_run.metrics["test"]
test_metrics = {"baseline CNN": baseline_metrics, "ResNet50V2 (fine-tuned)": transfer.metrics["test"]}
comparison.runs_table(test_metrics)

# %% [markdown]
# The table above holds the numbers; the figure shows them as bars with their 95% intervals. A model
# that predicts the same for every image is *at chance*: the figure says so instead of drawing a bar
# (with a random, frozen backbone that is what the offline demo's ResNet50V2 does).

# %%
# Say why the transfer model may be at chance: it started from a random backbone, not ImageNet.
random_backbone = transfer.config.weights is None  # what the run started from ("auto" resolved)
comparison_notes = {"ResNet50V2 (fine-tuned)": "random backbone, no ImageNet weights"} if random_backbone else {}
figure = comparison.plot_run_comparison(test_metrics, notes=comparison_notes,
                                     title="Test set: baseline CNN vs ResNet50V2 (95% CI)")
Image(filename=figures.save_report_figure(figure, figures_dir / "03_comparison.png"))

# %% [markdown]
# ## Test-set confusion matrix and ROC curve

# %%
figure = figures.plot_confusion_matrix(transfer.metrics["test"]["confusion_matrix"], class_names,
                                     title="ResNet50V2 (fine-tuned), test set")
Image(filename=figures.save_report_figure(figure, figures_dir / "03_confusion_matrix.png"))

# %%
test_rows = split[split["split"] == "test"]
test_labels = test_rows["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
test_probabilities = predict_paths(transfer.model, test_rows["path"], image_size, transfer_config.channels)
figure = figures.plot_roc_curves(test_labels, test_probabilities, class_names,
                               title="ResNet50V2 (fine-tuned), test set")
Image(filename=figures.save_report_figure(figure, figures_dir / "03_roc.png"))

# %% [markdown]
# ## Test images with their true and predicted labels
#
# Seed 001's Fig. 6: a sample of test images, each titled with its true class and the model's prediction
# (green when right, red when wrong), to see which images the fine-tuned model gets wrong.

# %%
shown = slice(0, 8 if smoke else 16)
test_images = load_images(test_rows["path"].tolist()[shown], image_size, transfer_config.channels)
figure = grids.plot_sample_predictions(test_images, test_labels[shown], test_probabilities[shown], class_names)
Image(filename=figures.save_report_figure(figure, figures_dir / "03_sample_predictions.png"))
