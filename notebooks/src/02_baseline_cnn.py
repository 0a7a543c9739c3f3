# %% [markdown]
# # 02 · A baseline CNN, tuned by grid search
#
# **Goal:** the baseline of seed 001, step by step: a small convolutional network trained from
# scratch to tell COVID-19 from normal chest X-rays, early stopping on the validation loss
# (patience 5), a grid search over batch size, learning rate and dropout, and finally the best
# configuration trained again on training + validation images and judged once on the test set.
#
# The notebook reads the built-in synthetic dataset by default. Point `data_dir` at the Kaggle
# COVID-19 Radiography Database (or any supported layout) to train on real images.

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

data_dir = os.environ.get("COVID_TF_DATA", str(config.SYNTHETIC_DIR))
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "128"))
epochs = int(os.environ.get("COVID_TF_EPOCHS", "20"))
batch_size = int(os.environ.get("COVID_TF_BATCH_SIZE", "32"))
smoke = bool(int(os.environ.get("COVID_TF_SMOKE", "0")))  # a tiny grid, few bootstrap samples
seed = int(os.environ.get("COVID_TF_SEED", str(config.SEED)))

# %% [markdown]
# ## Setup

# %%
import dataclasses

import numpy as np
from IPython.display import Image

from covid_tf import figures
from covid_tf.data import splits
from covid_tf.data.images import load_image
from covid_tf.figures import comparison, grids
from covid_tf.runs import record
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import predict_paths
from covid_tf.training import tuning
from covid_tf.workflows import train

# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)
run_dir = config.RUNS_DIR / "02_baseline"
class_names = ["COVID", "Normal"]

# %% [markdown]
# ## COVID versus normal, split without leakage
#
# The task is binary, as in seed 001. The split is stratified by class, keeps every patient and
# every group of duplicate images inside one split, and is saved: the baseline run, the grid search
# and the final model all use exactly these training, validation and test images.

# %%
base_config = TrainConfig(data=data_dir, model="baseline", classes=class_names, image_size=image_size,
                                epochs=epochs, batch_size=batch_size, seed=seed,
                                n_bootstrap=100 if smoke else 1000)
split, class_names = train.prepare_split(base_config)
split_file = splits.save_split(split, config.REPORTS_DIR / "02_split.csv")
base_config.split_file = str(split_file)
split.groupby(["split", "label"]).size().unstack(fill_value=0)

# %% [markdown]
# ## Train the baseline
#
# Three convolution blocks, global average pooling, a dense layer with dropout and a softmax.
# The model normalises its input with the training images' mean and standard deviation. Training
# stops when the validation loss has not improved for five epochs; the weights of the best epoch
# are kept. The run directory holds the configuration, split, history, model and metrics.

# %%
baseline = train.train_run(base_config, run_dir, overwrite=True, verbose=2)
print(f"validation accuracy {baseline.metrics['val']['accuracy']:.3f}, "
      f"test accuracy {baseline.metrics['test']['accuracy']:.3f} ({baseline.metrics['train_seconds']} s)")

# %% [markdown]
# ## Training curves
#
# Training and validation loss and accuracy per epoch. A validation loss that rises while the
# training loss falls is the sign of overfitting that early stopping reacts to.

# %%
figure = figures.plot_training_curves(baseline.history, title="Baseline CNN")
Image(filename=figures.save_report_figure(figure, figures_dir / "02_baseline_curves.png"))

# %% [markdown]
# ## Grid search over batch size, learning rate and dropout
#
# Seed 001 tuned three hyperparameters. keras-tuner's `GridSearch` trains one model per
# combination (same initial weights, same data), each with early stopping on the validation loss,
# and ranks them by their best validation accuracy. The test images play no part in the choice.
# Each trial gets half the epochs of the full run, to keep the search affordable on a CPU.

# %%
grid_epochs = max(1, epochs // 2)
if smoke:
    grid = {"batch_size": [8, 16], "learning_rate": [1e-3], "dropout": [0.5]}  # two trials: the code path, fast
else:
    grid = {"batch_size": [16, 32], "learning_rate": [1e-3, 3e-4], "dropout": [0.3, 0.5]}
search = tuning.grid_search(base_config, split, class_names, grid, epochs=grid_epochs,
                            directory=config.RUNS_DIR / "02_grid_search")
search.table

# %%
figure = figures.grid_search_figure(search.table)
Image(filename=figures.save_report_figure(figure, figures_dir / "02_grid_search.png"))

# %% [markdown]
# ## Train the best configuration on training + validation images
#
# Seed 001's last step: with the hyperparameters chosen, the validation images are added to the
# training images and a fresh model is trained for as many epochs as the best configuration
# needed in the grid search. Nothing is selected or stopped early any more, so no held-out
# images are needed before the test set.

# %%
best = search.best
final_config = dataclasses.replace(base_config, batch_size=int(best["batch_size"]),
                                   learning_rate=float(best["learning_rate"]), dropout=float(best["dropout"]))
final_epochs = int(best["best_epoch"])
print(f"best: batch size {final_config.batch_size}, learning rate {final_config.learning_rate:g}, "
      f"dropout {final_config.dropout:g}; {final_epochs} epoch(s) on train + val")
final_model = train.retrain_on_train_and_val(final_config, split, class_names, epochs=final_epochs, verbose=0)

# %%
figure = figures.plot_training_curves(final_model.history.history,
                                    title="Best configuration, trained on train + val (no validation data)")
Image(filename=figures.save_report_figure(figure, figures_dir / "02_final_curves.png"))

# %% [markdown]
# ## Evaluate on the test set
#
# The test images are used once, here. Metrics come with 95% bootstrap confidence intervals
# (patient-level when patients have several images); with a few dozen test images they are wide.

# %%
final_metrics, _ = train.evaluate_splits(final_model, final_config, split, class_names, names=("test",))
# The final model's folder is a run folder like the others (config.json, model.keras, metrics.json, written
# through the run record), so `evaluate`, `explain` and `report` read it.
final_dir = config.RUNS_DIR / "02_baseline_final"
final_dir.mkdir(parents=True, exist_ok=True)
record.write_config(final_dir, {**final_config.to_dict(), "epochs": final_epochs, "class_names": class_names})
record.write_model(final_dir, final_model)
record.write_metrics(final_dir, final_metrics)
comparison.runs_table({"baseline (defaults)": baseline.metrics["test"],
                  "baseline (tuned, train + val)": final_metrics["test"]})

# %%
figure = figures.plot_confusion_matrix(final_metrics["test"]["confusion_matrix"], class_names,
                                     title="Tuned baseline, test set")
Image(filename=figures.save_report_figure(figure, figures_dir / "02_confusion_matrix.png"))

# %% [markdown]
# ## ROC curve and sample predictions
#
# The ROC curve shows every trade-off between sensitivity and specificity the model offers; the
# sample grid shows test images with their true and predicted class (green right, red wrong).

# %%
test_rows = split[split["split"] == "test"]
test_labels = test_rows["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
test_probabilities = predict_paths(final_model, test_rows["path"], image_size, final_config.channels)
figure = figures.plot_roc_curves(test_labels, test_probabilities, class_names, title="Tuned baseline, test set")
Image(filename=figures.save_report_figure(figure, figures_dir / "02_roc.png"))

# %%
shown = slice(0, 8 if smoke else 16)
test_images = np.stack([load_image(path, channels=1, size=image_size) for path in test_rows["path"][shown]])
figure = grids.plot_sample_predictions(test_images, test_labels[shown], test_probabilities[shown], class_names)
Image(filename=figures.save_report_figure(figure, figures_dir / "02_sample_predictions.png"))
