# %% [markdown]
# # 06 · Lungs and shortcuts: does the model look where the disease is?
#
# **Goal:** notebook 04 showed that a model can score well by reading a burned-in marker instead of
# the lungs. On real chest X-rays the same happens less visibly: films from different hospitals differ in
# exposure, borders, text and positioning, and when the classes come from different sources a model
# learns the source (DeGrave et al., Nature Machine Intelligence 2021). Here we
#
# 1. find the lungs with the segmenter that ships with covid_tf (a small U-Net),
# 2. look at what each lung *region of interest* (ROI, `train --roi`) feeds the model,
# 3. run the **shortcut audit** (`python -m covid_tf audit`): the same quick model trained on the full
#    image, on the lungs only and on everything *but* the lungs, on one grouped split,
# 4. put a full-image model and ROI models side by side: test ROC-AUC with its 95 % CI, the share of the
#    Grad-CAM heat inside the lungs, and the heatmaps on the same images,
# 5. and ask the question that matters most, of each model: **does it decide from the lungs?** The
#    counterfactual check (`python -m covid_tf occlusion`) scores the same test images again with the lungs
#    filled and with everything outside them filled, with two fills (the image's mean grey and a strong blur
#    of the image itself), because one fill alone can mislead.
#
# What each number can show: the ROC-AUC says how well a model separates the classes, not from what; the
# Grad-CAM lung energy says where the heat of one layer lies, and for lung attention's pooled layer it is in
# the lungs by construction (the backbone's own layer is the honest one); only the occlusion check changes
# the image and watches the decision, so it leads.
#
# By default the data are the synthetic X-rays of notebook 04 with a marker burned into the corner of most
# COVID images, so the shortcut is known. Set `audit_data` to a real dataset (for example
# `../shared/data/covid19-radiography-subset` with `classes = "COVID,Normal"`) to audit it; its COVID and
# Normal images have no lung masks, so the shipped segmenter makes them (once, cached).

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

shortcut_dir = os.environ.get("COVID_TF_SHORTCUT_DATA", str(config.DATA_DIR / "synthetic_shortcut"))
audit_data = os.environ.get("COVID_TF_LUNGS_DATA", "")  # a real dataset; empty: the synthetic shortcut set
classes = os.environ.get("COVID_TF_LUNGS_CLASSES", "COVID,Normal")
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "64"))
epochs = int(os.environ.get("COVID_TF_EPOCHS", "8"))
batch_size = int(os.environ.get("COVID_TF_BATCH_SIZE", "32"))
threshold = float(os.environ.get("COVID_TF_AUDIT_THRESHOLD", "0.80"))  # lungs-removed ROC-AUC that flags shortcuts
smoke = bool(int(os.environ.get("COVID_TF_SMOKE", "0")))  # fewer images, fewer resamples
seed = int(os.environ.get("COVID_TF_SEED", str(config.SEED)))

# %% [markdown]
# ## Setup

# %%
from pathlib import Path

import tensorflow as tf
from IPython.display import Image, display

from covid_tf import figures
from covid_tf.data.discover import discover
from covid_tf.figures.lungs import plot_audit, plot_image_panels
from covid_tf.figures.occlusion import plot_occlusion_summary
from covid_tf.studies import lungs as lung_studies
from covid_tf.studies import shortcuts as explain_studies
from covid_tf.workflows import audit

tf.get_logger().setLevel("ERROR")  # keep TensorFlow's retracing notices out of the output
# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)
data = audit_data or shortcut_dir
class_names = classes.split(",")
audit_dir = config.RUNS_DIR / "06_audit"
per_class = 2 if smoke else 4  # images per class in the figures
n_bootstrap = 100 if smoke else 1000
run_figures = not smoke  # each run's own figures (runs/<roi>/figures/), not shown here: the smoke test skips them
index = discover(data, classes=class_names).frame
print(f"{len(index)} images of {', '.join(class_names)} in {data}; "
      f"{(index['mask_path'] != '').sum()} with their own lung mask")

# %% [markdown]
# ## The lungs, found by the shipped segmenter
#
# `python -m covid_tf segment` runs the U-Net that ships with covid_tf (trained on the database's own
# lung masks of children's X-rays) and keeps the two largest components with their holes filled. Its
# outline is red; where the dataset has its own mask, that one is green and the Dice overlap is in the
# title. A mask that is not a plausible pair of lungs is flagged, and the ROI models then use that image
# whole.

# %%
shown = index.groupby("label", sort=False).head(per_class).reset_index(drop=True)
mask_paths = [path or None for path in shown["mask_path"]]
panels, titles, segmentation = lung_studies.segmenter_panels(shown["path"].tolist(), mask_paths)
figure = plot_image_panels([panels[i:i + per_class] for i in range(0, len(panels), per_class)],
                           row_titles=shown["label"].unique().tolist(), column_titles=[],
                           title="Shipped segmenter (red) and the dataset's masks (green)")
display(Image(filename=figures.save_report_figure(figure, figures_dir / "06_segmenter.png")))
segmentation.assign(label=shown["label"]).round(3)

# %% [markdown]
# ## What each lung ROI feeds the model
#
# `train --roi lungs` crops each image to its lung box (with a margin) and resizes it; `lungs-masked`
# also sets everything outside the (slightly dilated) lungs to black; `lungs-removed` keeps only what lies
# *outside* the lungs. The last one is not for diagnosis: it is the audit's probe. If a model can still tell
# the classes apart from it, the data carries a shortcut.

# %%
modes = ["none", "lungs", "lungs-masked", "lungs-removed"]
rows = lung_studies.roi_input_rows(shown["path"].tolist()[::per_class], modes, image_size, mask_paths[::per_class])
figure = plot_image_panels(rows, column_titles=[lung_studies.ROI_TITLES[mode] for mode in modes],
                           row_titles=shown["label"].unique().tolist(), title=f"Model inputs at {image_size} px")
display(Image(filename=figures.save_report_figure(figure, figures_dir / "06_roi_inputs.png")))

# %% [markdown]
# ## The shortcut audit: three models, one split
#
# The audit trains the same quick model (the baseline CNN) three times on one grouped split and compares
# their test ROC-AUCs. Read the three numbers together:
#
# - **full image** high, **lungs only** close to it: the class signal is in the lungs.
# - **lungs removed** high (at least the threshold): the model separates the classes without seeing a lung.
#   Whatever it uses lies outside the lungs, a shortcut, and the full-image model may be using it too.
#
# The command line does the same: `python -m covid_tf audit DATA --out DIR --classes COVID,Normal`.
# When the dataset's `metadata.csv` has a `source` column with two or more sources, the audit also reports
# how well the source can be predicted from simple image features.

# %%
result = audit.run_audit(data, audit_dir, classes=class_names, image_size=image_size, epochs=epochs,
                         batch_size=batch_size, seed=seed, threshold=threshold, n_bootstrap=n_bootstrap,
                         run_figures=run_figures)
figure = plot_audit(result.table, threshold=threshold, source=result.source)
display(Image(filename=figures.save_report_figure(figure, figures_dir / "06_audit.png")))
print(result.verdict)
audit.audit_table(result)

# %% [markdown]
# ## Full image against lung ROIs, side by side
#
# Next to the audit's full-image and lungs-only models we train a third one with **lung attention**
# (`--roi lungs-attention`; `train`'s default `--roi auto` picks it, with background randomisation, when the
# training images have lungs):
# it sees the whole image, but its last feature map is averaged over the lungs only, so its decision is made
# from the lungs while their context stays visible. For each model, Grad-CAM explains the class COVID on the
# same COVID test images; heatmaps of cropped inputs are mapped back onto the full image, so all three are
# measured against the same lungs:
#
# - **energy in lungs**: the share of the heat inside the lung mask;
# - **lung area**: the share of the image the lungs cover, what heat spread at random would get;
# - **lung energy ratio**: their ratio; 1 is chance, and the higher the better.

# %%
runs = {"full image": audit_dir / "runs" / "none",
        "lung attention": audit.train_roi_run(audit_dir, "lungs-attention", run_figures=run_figures),
        "lungs only": audit_dir / "runs" / "lungs-masked"}
covid_test = lung_studies.split_images(audit_dir, "COVID", "test", count=4 if smoke else 24)
energies = {name: lung_studies.lung_energy(run, covid_test, class_name="COVID") for name, run in runs.items()}
lung_studies.compare_runs(runs, energies).round(3)

# %%
first = next(iter(energies.values()))
count = min(4, len(first.images))
figure = explain_studies.overlay_grid(first.images[:count],
                                      {name: energy.heatmaps[:count] for name, energy in energies.items()},
                                      title="Grad-CAM of 'COVID' on the full image, per model")
Image(filename=figures.save_report_figure(figure, figures_dir / "06_gradcam.png"))

# %% [markdown]
# ## Does the model decide from the lungs? The counterfactual check
#
# Each model scores the same test images three ways: as they are, with the (slightly dilated) lungs filled,
# and with everything outside them filled. A model that decides from the lungs falls to chance when the
# lungs are filled and keeps its ROC-AUC when the outside is filled; a model that reads a shortcut outside
# the lungs does the opposite. Two fills are shown: the image's mean grey writes the film's brightness into
# the lungs (and brightness may differ by class, an artefact of that fill), the blur removes the lungs'
# detail but keeps their brightness. The lung-attention model always gets the original lung masks.

# %%
from covid_tf.workflows.occlusion import run_occlusion

checks = {name: run_occlusion(Path(run) / "model.keras", data, audit_dir / "occlusion" / name.replace(" ", "_"),
                              split_file=audit_dir / "split.csv", subset="test", classes=class_names,
                              n_bootstrap=n_bootstrap, seed=seed, overwrite=True)
          for name, run in runs.items() if name != "lungs only"}
for name, check in checks.items():
    print(f"{name}: {check.line}")
    display(Image(filename=figures.save_report_figure(
        plot_occlusion_summary(check.summary), figures_dir / f"06_occlusion_{name.replace(' ', '_')}.png")))

# %% [markdown]
# ## What it means for a reader
#
# - **Lead with the counterfactual check.** A model whose ROC-AUC survives with its lungs filled is not
#   reading the lungs, whatever its heatmaps look like; one that falls to chance with the lungs filled and
#   holds with the outside filled decides from the lungs. Read both fills: when only the mean-grey fill keeps
#   a high score, the model is reading brightness, not lung detail.
#
# - **A high ROC-AUC is not evidence that a model reads the lungs.** Read the audit's verdict above: when
#   the lungs-removed model is well above chance (0.5; the verdict's line is 0.80), the images carry
#   differences between the classes outside the lungs (a burned-in marker in the synthetic set; hospital,
#   device, positioning, text on real films), and a published accuracy on that data overstates what the
#   model knows about COVID-19. How far above chance it gets, even under the line, is the size of the
#   shortcut; the full-image model's heatmaps show where it reads it.
# - **The lungs-only model is the honest comparison.** Its ROC-AUC is what the lungs themselves support;
#   a full-image model that beats it by a wide margin is using something else. Restricting the input to the
#   lungs raises the share of heat inside them (the ratio), but it is not free: a crude mask is itself a
#   cue, and black borders take away the context of the lungs' outline, so compare the variants by both
#   numbers, ROC-AUC and lung energy. Lung attention keeps the whole image in view and pools the lungs
#   only: on the real dev set it kept the full-image model's ROC-AUC and put about 0.8 of the heat inside
#   the lungs (docs/LUNG_ROI.md), which is why `train` uses it by default for chest X-rays.
# - **Check on other hospitals' X-rays.** An audit flags a shortcut; only an external test set shows how
#   much it costs. With a `source` column in `metadata.csv`, the audit also tells how easily the source
#   itself is predicted: when sources and classes are confounded, that is the shortcut to fear first.

# %% [markdown]
# ## Is the external test really external? Copies and sources
#
# Public X-ray collections republish one another's films, resized, re-encoded, cropped, relabelled or
# mirrored, and their classes often come from different hospitals. Both traps inflate an "external" ROC-AUC.
# Here we build such a test set on purpose: copies of some of the lung-attention model's *training* films
# (cut, re-encoded, mirrored, labelled), beside its unseen test films, with a source per film that is tied to
# the class (most COVID films from hospital A, which also exposes its films differently).
#
# `evaluate` compares every test image with the fingerprints `train` stored for the run's train and val
# images: the copies are listed in `overlap.csv` and left out of the headline numbers (all images' numbers stand
# beside them). With a `source` column in the data's `metadata.csv`, it adds the **within-source ROC-AUC**: only
# COVID-normal pairs of the same source count, so a model that tells the hospitals apart gains nothing there.

# %%
from covid_tf.figures.copies import plot_copy_pairs
from covid_tf.runs.record import RunRecord
from covid_tf.synthetic.copies import write_external_set
from covid_tf.workflows.evaluate import evaluate_model

count = 2 if smoke else 8
copied = [(path, label) for label in class_names
          for path in lung_studies.split_images(audit_dir, label, "train", count=count)]
fresh = [(path, label) for label in class_names
         for path in lung_studies.split_images(audit_dir, label, "test", count=3 * count)]
external_dir = config.DATA_DIR / "06_external_test"
planted = write_external_set(external_dir, copied, fresh, transforms=("crop", "jpeg", "mirror", "text"), seed=seed,
                             overwrite=True)  # the notebook's own folder: an earlier run's films are replaced
checked = evaluate_model(Path(runs["lung attention"]) / "model.keras", external_dir, audit_dir / "external_evaluation",
                         n_bootstrap=n_bootstrap, seed=seed, overwrite=True)
for note in checked.notes:
    print(note)
metrics = checked.metrics
print(f"copies found: {metrics['overlap']['n_copies']} of {metrics['overlap']['n_test_images']} "
      f"(planted: {int((planted['copy_of'] != '').sum())})")
print(f"ROC-AUC without the copies: {metrics['roc_auc']:.3f} (n={metrics['n']}); "
      f"with them: {metrics['all_images']['roc_auc']:.3f} (n={metrics['all_images']['n']})")
sources = metrics["sources"]
within = sources["within_source_roc_auc"]
print(f"within-source ROC-AUC: {'undefined' if within is None else f'{within:.3f}'} "
      f"({sources['within_source_pairs']} COVID-normal pairs of the same source)")
copies = RunRecord.read(audit_dir / "external_evaluation").overlap()
display(Image(filename=figures.save_report_figure(
    plot_copy_pairs(copies, limit=6, title="Test images that copy training images"),
    figures_dir / "06_overlap_copies.png")))

# %% [markdown]
# Read the three numbers together: the ROC-AUC *with* the copies is what a study that did not check would have
# reported; the ROC-AUC *without* them is the honest one on unseen films; the within-source ROC-AUC says how much
# of it survives when the source cannot help. On real data, `python -m covid_tf inspect EXTERNAL --against
# TRAINING --out DIR` finds the copies before anything is trained (README: "Is my external test really external?").

# %% [markdown]
# ## Does it hold up when the film is acquired differently? The stress check
#
# Films from another hospital differ in how they were taken: exposure, contrast, sharpness, noise, compression,
# resolution, framing, burned-in text. The stress check (`python -m covid_tf stress MODEL DATA --out DIR`) scores
# the same test images again under each of these shifts, at two or three strengths, and compares the ROC-AUC
# with the original's (bootstrap 95 % CIs; the drop's CI is paired, from the same resamples). Exposure and contrast
# change from film to film (drawn per image), as in a test set pooled from many settings: the ROC-AUC ranks the
# films, so a change that darkened every film alike would leave a model that reads brightness unharmed. The
# degradations (blur, noise, JPEG, resolution) hit every film at the stated strength. The inverted lookup table is
# a sanity case, left out of the mean drop: a model that does not react to it reads something odd.
#
# First, what the shifts do to one film, each at its strongest default strength:

# %%
import numpy as np

from covid_tf.data import shifts
from covid_tf.data.images import load_image

film = load_image(shown["path"].iloc[0], channels=1)
versions = [("original", film)] + [
    (f"{shift.title} {shift.strengths[-1]:g}",
     shifts.apply_shift(name, film, None, shift.strengths[-1], np.random.default_rng(seed))[0])
    for name, shift in shifts.SHIFTS.items()]
panels = [image for _, image in versions]
figure = plot_image_panels([panels[:6], panels[6:]], title="One film under each acquisition shift")
for ax, (title, _) in zip(figure.axes, versions):
    ax.set_title(title, fontsize="small")
figure.tight_layout()
display(Image(filename=figures.save_report_figure(figure, figures_dir / "06_shifts.png")))

# %% [markdown]
# Then the check, for the full-image model and the lung-attention model of the sections above. The one-line
# summary names the mean drop and the worst shift; the figure shows every shift and strength against the original
# (black line and band). Each image goes through the model once per shift and strength (30 times with the default
# table), so on a large test set `--max-images` checks a seeded sample.

# %%
from covid_tf.figures.stress import plot_stress_summary
from covid_tf.workflows.stress import run_stress

stressed = {name: run_stress(Path(run) / "model.keras", data, audit_dir / "stress" / name.replace(" ", "_"),
                             split_file=audit_dir / "split.csv", subset="test", classes=class_names,
                             max_images=24 if smoke else None, n_bootstrap=n_bootstrap, seed=seed, overwrite=True)
            for name, run in runs.items() if name != "lungs only"}
for name, check in stressed.items():
    print(f"{name}: {check.line}")
    display(Image(filename=figures.save_report_figure(
        plot_stress_summary(check.summary), figures_dir / f"06_stress_{name.replace(' ', '_')}.png")))

# %% [markdown]
# How to read it:
#
# - **A small mean drop with a narrow worst case** is what a model that reads the lungs' detail should show; a
#   large drop under one shift says what to fix: augment against it in training, or normalise it away.
# - **A model that reads a burned-in marker** loses its ROC-AUC under `text` and the border shifts (the marker is
#   covered or cut off), one that reads the film's brightness under `gamma` and `contrast`: the same shortcuts the
#   occlusion check finds, seen from the side of acquisition.
# - **The stress check is no external test.** It changes how films look, not who the patients are or how the
#   labels were made; a model can pass it and still fail at another hospital. Read it beside the occlusion check
#   and, where there is one, an external test set.
