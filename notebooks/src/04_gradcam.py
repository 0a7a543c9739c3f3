# %% [markdown]
# # 04 · Where do the models look? Grad-CAM and its relatives
#
# **Goal:** open the two classifiers of notebooks 02 and 03 and ask which pixels their decisions rest
# on. Grad-CAM (Selvaraju et al. 2017) weighs the feature maps of the last convolutional layer by the
# gradient of the class score and gives a coarse heatmap over the image. We look at right and wrong
# test predictions (as seed 001 looked at its misclassifications), compare Grad-CAM with Grad-CAM++,
# Score-CAM, LayerCAM and CAM, measure how well the heat agrees with the lungs and the lesions, and
# finally use the heatmaps to catch a model that learned a shortcut: a burned-in marker instead of the
# disease.
#
# The synthetic X-rays come with lung masks and lesion masks, so every statement can be checked with
# numbers: the share of the heat inside the lungs against the lungs' share of the image (chance), the
# pointing game (is the hottest pixel on a lesion?), the IoU of the region above 0.85 with the lesion.

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

data_dir = os.environ.get("COVID_TF_DATA", str(config.SYNTHETIC_DIR))
shortcut_dir = os.environ.get("COVID_TF_SHORTCUT_DATA", str(config.DATA_DIR / "synthetic_shortcut"))
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "64"))
epochs = int(os.environ.get("COVID_TF_EPOCHS", "8"))
batch_size = int(os.environ.get("COVID_TF_BATCH_SIZE", "32"))
smoke = bool(int(os.environ.get("COVID_TF_SMOKE", "0")))  # fewer images, quick models
seed = int(os.environ.get("COVID_TF_SEED", str(config.SEED)))

# %% [markdown]
# ## Setup

# %%
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from IPython.display import Image, display

from covid_tf import explain, figures
from covid_tf.data.discover import discover
from covid_tf.data.pipeline import load_images
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import predict_paths
from covid_tf.studies import shortcuts as studies
from covid_tf.synthetic.xray import generate_dataset
from covid_tf.workflows import train

# Keep TensorFlow's retracing notices (many small explainers, batches of several sizes) out of the output.
tf.get_logger().setLevel("ERROR")
# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)
class_names = ["COVID", "Normal"]
shown_per_kind = 2 if smoke else 4  # right and wrong predictions shown per model
study_images = 6 if smoke else 24  # COVID test images in the method comparison


# %% [markdown]
# ## The two models
#
# The fine-tuned ResNet50V2 of notebook 03 and the baseline CNN of notebook 02 are reused when their
# runs exist for this dataset; otherwise a quick one is trained here (ResNet50V2 with a random
# backbone, so expect a weak model). The test images of each run's own split are explained, and the
# masks come from the dataset index.

# %%
quick = dict(data=data_dir, classes=class_names, batch_size=batch_size, seed=seed, n_bootstrap=50)
models, splits = {}, {}
for name, run_name, settings in (
    ("ResNet50V2", "03_transfer", dict(model="resnet50v2", weights=None, image_size=image_size, epochs=1,
                                       fine_tune_epochs=0 if smoke else 1)),
    ("baseline CNN", "02_baseline", dict(model="baseline", image_size=image_size, epochs=epochs)),
):
    # A finished run on the same data and classes is reused; otherwise one is trained here, in memory only.
    result, reused = train.train_or_reuse(TrainConfig(**quick, **settings), config.RUNS_DIR / run_name,
                                          compare=("data", "classes"), save=False)
    models[name], splits[name] = result.model, result.split
    source = result.run_dir if reused else f"trained here, test accuracy {result.metrics['test']['accuracy']:.2f}"
    print(f"{name}: {source}; Grad-CAM layer {explain.default_target_layer(models[name])!r}")

index = discover(data_dir, classes=class_names).frame.set_index("path")


# %% [markdown]
# ## The Grad-CAM algorithm
#
# Grad-CAM (Selvaraju et al. 2017) in plain Keras, as in the keras-io example
# (`examples/vision/grad_cam.py`): one forward pass to the last convolutional layer's feature maps
# `A_k` and on to the class *logit* `z_c` (the score before the softmax), recorded by a
# `tf.GradientTape`; the gradient `dz_c / dA_k` averaged over the map gives each channel its weight;
# the weighted sum of the maps, with negative values set to zero, is the heatmap. (keras-io sets
# `model.layers[-1].activation = None` to get the logit; computing it from the output layer's kernel and
# bias, as below, leaves the model untouched.)

# %%
import time

import keras


def make_gradcam_heatmap(image, model, last_conv_layer_name, class_index=None):
    """Grad-CAM of one image (H, W, C) for ``class_index`` (default: the predicted class)."""
    # A model that maps the image to the last convolutional layer's activations and to the input of the
    # output layer. The output layer is Dense(classes, activation="softmax"): its logits are not a
    # layer output, so we compute them from its input with its kernel and bias.
    output_layer = model.get_layer("predictions")
    grad_model = keras.Model(model.inputs[0], [model.get_layer(last_conv_layer_name).output, output_layer.input])
    # Record the forward pass, from the activations to the logit of the class we explain.
    with tf.GradientTape() as tape:
        last_conv_layer_output, features = grad_model(image[np.newaxis])
        logits = tf.matmul(features, output_layer.kernel) + output_layer.bias
        if class_index is None:
            class_index = int(tf.argmax(logits[0]))
        class_logit = logits[:, class_index]
    # The gradient of the class logit with respect to the activations, averaged over space per channel.
    grads = tape.gradient(class_logit, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    # Each channel weighted by its mean gradient, summed over channels; the positive part, scaled to [0, 1].
    heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
    heatmap = tf.maximum(tf.squeeze(heatmap, axis=-1), 0) / tf.reduce_max(heatmap)
    return heatmap.numpy()


model = models["baseline CNN"]
layer_name = explain.default_target_layer(model)
covid_test = splits["baseline CNN"].query("split == 'test' and label == 'COVID'")
image = load_images(covid_test["path"].head(1).tolist(), int(model.inputs[0].shape[1]), 1)[0]
heatmap = make_gradcam_heatmap(image, model, layer_name)
print(f"Grad-CAM of layer {layer_name!r}: a {heatmap.shape[0]}x{heatmap.shape[1]} map for a "
      f"{image.shape[0]}x{image.shape[1]} image")


# %% [markdown]
# The map has the resolution of the feature maps. `covid_tf`'s explainer runs the same computation for a
# whole batch in one compiled `tf.function` (a different class per image allowed), then upsamples each
# map to the image size: done to our map, both must agree to float precision.

# %%
# covid_tf's explainer also upsamples the map bilinearly to the image size and scales it to [0, 1].
upsampled = tf.image.resize(heatmap[..., np.newaxis], image.shape[:2], method="bilinear")[..., 0].numpy()
upsampled = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min())
explainer = explain.get_explainer("gradcam", model, layer_name=layer_name)
library_heatmap = explainer(image[np.newaxis])[0]
difference = float(np.abs(library_heatmap - upsampled).max())
print(f"max |covid_tf - hand-written| = {difference:.2e}")
assert difference < 1e-4, difference

# The same images one at a time by hand, and as one batch by covid_tf (after one warm-up call each).
batch = load_images(covid_test["path"].head(8 if smoke else 32).tolist(), int(model.inputs[0].shape[1]), 1)
# Warm-up calls, not timed: the first call of each builds its model and compiles it for this batch size.
make_gradcam_heatmap(batch[0], model, layer_name)
explainer(batch)
began = time.perf_counter()
for one in batch:
    make_gradcam_heatmap(one, model, layer_name)
by_hand = time.perf_counter() - began
began = time.perf_counter()
explainer(batch)
batched = time.perf_counter() - began
print(f"{len(batch)} images: {by_hand:.2f} s one at a time by hand, {batched:.2f} s batched "
      f"({by_hand / batched:.1f} times faster)")


# %% [markdown]
# ## Let's test-drive it: right and wrong test predictions
#
# For each model, the most confident right predictions and the most confident mistakes of its test
# set, each explained for the class the model predicted. A model that is right for the right reason
# lights up the opacities in the lower, outer lung fields of COVID images.

# %%
predictions = {}
for name, model in models.items():
    test = splits[name][splits[name]["split"] == "test"].reset_index(drop=True)
    probabilities = predict_paths(model, test["path"], studies.input_size(model), 1)
    test["predicted"] = np.asarray(class_names)[probabilities.argmax(axis=1)]
    test["confidence"] = probabilities.max(axis=1)
    predictions[name] = test
    right = test[test["predicted"] == test["label"]].nlargest(shown_per_kind, "confidence")
    wrong = test[test["predicted"] != test["label"]].nlargest(shown_per_kind, "confidence")
    chosen = pd.concat([right, wrong])
    images = load_images(chosen["path"].tolist(), studies.input_size(model), 1)
    heatmaps, _, _ = explain.explain(model, images, method="gradcam")
    titles = [f"true {t}, pred {p} ({c:.2f})" for t, p, c in zip(chosen["label"], chosen["predicted"],
                                                                  chosen["confidence"])]
    figure = studies.overlay_grid(images, {"Grad-CAM": heatmaps}, row_titles=titles,
                                  title=f"{name}: {len(right)} right, {len(wrong)} wrong")
    slug = name.split()[0].lower()
    display(Image(filename=figures.save_report_figure(figure, figures_dir / f"04_right_wrong_{slug}.png")))

# %% [markdown]
# ## Five methods side by side
#
# Grad-CAM++ weighs positive gradients per pixel, Score-CAM weighs each feature map by how much the
# class probability rises when the image is masked by it (no gradients, one forward pass per map),
# LayerCAM (Jiang et al. 2021) weighs every activation by its own positive gradient,
# `relu(sum_k relu(dp/dA_k[i, j]) * A_k[i, j])`, and CAM reads the weights of a
# `GlobalAveragePooling -> Dense` output layer. Both our models have a hidden Dense layer in their head,
# where CAM is not defined: the method refuses, and the grid skips it.
#
# **Why the baseline CNN ends in global average pooling.** Behind `GlobalAveragePooling` a channel's
# gradient is the same at every position, so Grad-CAM's channel weights are exact and LayerCAM is
# Grad-CAM with the negatively weighted channels left out: the methods agree. A `Flatten -> Dense` head
# (an earlier version of this baseline) gives every position its own weights; Grad-CAM then averages a
# channel's gradient over the whole map and, on synthetic COVID images, pointed at the heart border and
# the clavicles (pointing game on the lesions 4-38%), while LayerCAM, which keeps the gradient per
# position, stayed nearer the lesions. The GAP baseline's Grad-CAM hits the lesions on 93-95% of them.

# %%
def covid_test_rows(name: str, count: int) -> pd.DataFrame:
    """The first ``count`` COVID test images of a model's split, with their lung and lesion masks."""
    test = splits[name][(splits[name]["split"] == "test") & (splits[name]["label"] == "COVID")].head(count)
    return index.loc[test["path"], ["mask_path", "lesion_path"]].reset_index()


for name, model in models.items():
    rows = covid_test_rows(name, 3)
    images = load_images(rows["path"].tolist(), studies.input_size(model), 1)
    maps = {}
    # Score-CAM runs one forward pass per feature map: ResNet50V2's 2048 maps are left out (as in the numbers below).
    small = model.count_params() < 5e6
    for method in ("gradcam", "gradcam++", "layercam", *(["scorecam"] if small else []), "cam"):
        try:
            maps[method] = explain.explain(model, images, method=method, class_index=0)[0]
        except ValueError as error:
            print(f"{name}, {method}: skipped ({str(error).split('. ')[0]})")
    figure = studies.overlay_grid(images, maps, title=f"{name}: explanations of 'COVID'")
    slug = name.split()[0].lower()
    display(Image(filename=figures.save_report_figure(figure, figures_dir / f"04_methods_{slug}.png")))

# %% [markdown]
# ## How good are the explanations? The numbers
#
# On COVID test images, explaining the class COVID:
#
# - **lung energy vs lung area**: the share of the heat inside the lungs, against the share of the image
#   the lungs cover (what a heatmap spread at random would get);
# - **pointing game**: how often the hottest pixel lies on a lesion (chance: the lesion area, about 5%);
# - **IoU** of the region above 0.85 (seed 000's segmentation) with the lesion mask;
# - **deletion**: how much the COVID probability drops when the hottest 20% of the pixels are replaced by
#   the image mean, minus the drop for random regions of the same size (positive = faithful);
# - **sanity check** (Adebayo et al. 2018): the rank correlation between the maps of the model and of a
#   copy with random weights; below 0.5 the map depends on what the model learned.
#
# Score-CAM needs one forward pass per feature map: on ResNet50V2 (2048 maps) it is left to the baseline,
# here and in the figures above.

# %%
tables = []
for name, model in models.items():
    small = model.count_params() < 5e6
    methods = ["gradcam", "gradcam++", "layercam", "cam"] + (["scorecam"] if small else [])
    table = studies.quality_table(model, covid_test_rows(name, study_images), class_names,
                                  methods=methods, class_name="COVID",
                                  sanity_images=4 if not smoke else (2 if small else 0), seed=seed)
    tables.append(table.assign(model=name))
quality = pd.concat(tables, ignore_index=True).set_index(["model", "method"])
quality.round(3)

# %% [markdown]
# ## The shortcut check
#
# The shortcut dataset has a bright "L" marker burned into a corner of 95% of the COVID images and of
# 5% of the normal ones. A model can score well by reading the marker instead of the lungs. We train
# the same baseline on it and explain the COVID test images of both datasets: a model that reads the
# marker puts its heat outside the lungs, on the corner tag.
#
# To show the failure in accuracy as well, both models are then tested on a *counterfactual* set: fresh
# images with the markers swapped (on 5% of the COVID images and 95% of the normal ones).

# %%
shortcut_result = train.train_run(TrainConfig(**{**quick, "data": shortcut_dir}, model="baseline",
                                                   image_size=image_size, epochs=epochs), None, verbose=0)
shortcut_model, shortcut_split = shortcut_result.model, shortcut_result.split
shortcut_index = studies.with_markers(discover(shortcut_dir, classes=class_names).frame, shortcut_dir)
shortcut_test = shortcut_index[shortcut_index["path"].isin(
    shortcut_split.loc[(shortcut_split["split"] == "test") & (shortcut_split["label"] == "COVID"), "path"])]
clean_test = covid_test_rows("baseline CNN", len(index)).assign(label="COVID")

shortcut_studies = {
    "shortcut model, shortcut data": studies.shortcut_study(
        shortcut_model, shortcut_test, class_names, class_name="COVID"),
    "clean model, clean data": studies.shortcut_study(
        models["baseline CNN"], clean_test, class_names, class_name="COVID"),
}

with tempfile.TemporaryDirectory() as folder:
    counterfactual_dir = Path(folder) / "counterfactual"
    generate_dataset(counterfactual_dir, classes=class_names, per_class=12 if smoke else 60, size=128,
                     seed=seed + 2, shortcut_class="COVID", shortcut_probability=0.05)
    counterfactual = studies.with_markers(discover(counterfactual_dir, classes=class_names).frame, counterfactual_dir)
    for name, model in (("shortcut model", shortcut_model), ("clean model", models["baseline CNN"])):
        shortcut_studies[f"{name}, counterfactual data"] = studies.shortcut_study(
            model, counterfactual, class_names, class_name="COVID")
comparison = studies.compare_shortcut_studies(shortcut_studies)
comparison[["n", "accuracy", "energy_in_lungs", "lung_area_fraction", "lung_energy_ratio", "pointing_lungs",
            "pointing_lesion"]].round(3)

# %% [markdown]
# `lung_energy_ratio` is 1 for heat spread at random, above 1 when the heat gathers on the lungs and
# below 1 when it avoids them. The accuracy on the counterfactual set tells whether the marker carried the
# decisions: a model that learned the disease keeps its accuracy when the markers move.

# %%
marked = shortcut_studies["shortcut model, shortcut data"].images
marked = marked[marked["has_marker"].fillna(False).astype(bool)].head(4)
images = load_images(marked["path"].tolist(), studies.input_size(shortcut_model), 1)
maps = {
    "shortcut model": explain.explain(shortcut_model, images, class_index=0)[0],
    "clean model": explain.explain(models["baseline CNN"], images, class_index=0)[0],
}
figure = studies.overlay_grid(images, maps, title="Grad-CAM of 'COVID' on COVID test images of the shortcut data")
Image(filename=figures.save_report_figure(figure, figures_dir / "04_shortcut.png"))
