# %% [markdown]
# # 05 · CT slices, one decision per patient
#
# **Goal:** seed 002's CT workflow. The CT scans come as DICOM series; each slice is windowed into an
# 8-bit PNG, a slice classifier is trained on the PNGs (seed 002's VGG16 with focal loss by default), and the
# slice predictions of each patient are combined into one
# decision per patient by majority vote (and, for comparison, by the mean probability). As in seed 002,
# the patient decisions are written as one CSV per test folder.
#
# By default the notebook runs on a synthetic CT set (DICOM series of COVID, CAP and normal patients,
# made by `covid_tf.synthetic.ct`). Its series cover the lower and middle chest (`extent=(0.1, 0.5)`), where
# the CAP consolidation lies and most COVID lesions are: over the whole chest, 55 % of a CAP patient's slices
# show no lesion at all, yet carry the label CAP, and a slice model cannot learn what is not in the slice
# (seed 002 trained on the slices a radiologist had marked as infected for the same reason).
#
# **Real data.** `COVID_TF_CT_DIR=../shared/data/covid-ct-ucsd-subset` uses the UCSD COVID-CT slices: PNG
# already (classes `CT_COVID` / `CT_NonCOVID`, read as `COVID` / `NonCOVID`), crops of figures in papers, with
# no patient ids, so every slice counts as its own patient. Expect a slice ROC-AUC of about 0.77-0.80 with the
# baseline at 128 px and 20 epochs (issue 23; the UCSD authors report about 0.94 with pretraining), not the
# near-perfect figures of the synthetic set; see docs/CT.md for the CT recipe and the lung masks on these slices.
#
# **Pretrained weights.** Seed 002 fine-tuned an ImageNet VGG16, and so does this notebook by default
# (`ct_model = "vgg16"`, `weights = "auto"`): the backbone starts from ImageNet when Keras has the file cached
# (`~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`) or can download it; offline it starts
# from random weights, and one printed line says so. A VGG16 takes minutes on a CPU (on the demo's 96 training
# slices at 64 px: about 300 s against 30 s for the baseline CNN, on two busy cores), so `make demo` sets
# `ct_model = "baseline"` and the tests `"small"`; the numbers of a random VGG16 show the mechanics only.

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

ct_dir = os.environ.get("COVID_TF_CT_DIR", str(config.SYNTHETIC_CT_DIR))  # DICOM series or PNG slices
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "64"))
epochs = int(os.environ.get("COVID_TF_EPOCHS", "8"))  # for VGG16: the head only, backbone frozen
fine_tune_epochs = int(os.environ.get("COVID_TF_FINE_TUNE_EPOCHS", "3"))  # VGG16 only: whole network
batch_size = int(os.environ.get("COVID_TF_BATCH_SIZE", "32"))
# A hundred training slices make 3 steps per epoch at batch size 32: too few for the model to learn in 8 epochs.
ct_batch_size = int(os.environ.get("COVID_TF_CT_BATCH_SIZE", "8"))
ct_model = os.environ.get("COVID_TF_CT_MODEL", "vgg16")  # seed 002's; "baseline" or "small": faster on a CPU
loss = os.environ.get("COVID_TF_CT_LOSS", "focal")  # seed 002 (alpha 0.25, gamma 2); "ce" for cross-entropy
weights = os.environ.get("COVID_TF_WEIGHTS") or "auto"  # VGG16: ImageNet when cached or online, else random
window = os.environ.get("COVID_TF_CT_WINDOW", "lung")  # lung (-600, 1500), mediastinal (40, 400) or "C,W"
split_fractions = os.environ.get("COVID_TF_CT_SPLIT", "0.5,0.25,0.25")  # of the patients of each class
# "ct": `train --recipe ct` (stronger augmentation, label smoothing, cosine schedule; docs/CT.md). On the real
# UCSD slices it scored as today's defaults in grouped cross-validation (0.709 vs 0.705), so None is the default.
recipe = os.environ.get("COVID_TF_CT_RECIPE") or None
smoke = bool(int(os.environ.get("COVID_TF_SMOKE", "0")))
seed = int(os.environ.get("COVID_TF_SEED", str(config.SEED)))

# %% [markdown]
# ## Setup

# %%
from IPython.display import Image, display

from covid_tf import figures
from covid_tf.figures import ct as ct_figures
from covid_tf.workflows import ct, train

# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)
run_dir = config.RUNS_DIR / "05_ct_slices"
evaluation_dir = config.REPORTS_DIR / "05_ct_evaluation"
fractions = tuple(float(value) for value in split_fractions.split(","))

# %% [markdown]
# ## From DICOM to PNG slices
#
# Every DICOM image becomes an 8-bit PNG: stored values are rescaled to Hounsfield units (HU), then a
# window maps a range of HU onto 0-255. `prepare_ct_data` converts DICOM folders (into
# `data/interim/`) and writes a label CSV with each slice's class, patient id and test folder; a folder
# of PNG slices is used as it is. Seed 002 wrote 512 × 512 JPEGs instead: `python -m covid_tf dicom2png
# DICOM_DIR --out OUT --format jpg --size 512` does the same (PNG stays the default here: it is lossless).
# The seed also trained only on the slices its radiologists had marked infected: with such marks as a CSV
# (`path,infected`), `train --infected-slices CSV` (or `TrainConfig(infected_slices=...)`) leaves the
# training slices marked 0 out; `train --recipe seed-002` sets the seed's VGG16, 512 px and focal loss.

# %%
data_path, slices = ct.prepare_ct_data(ct_dir, window=window)
if slices is None:
    print(f"{ct_dir} holds image slices already: no conversion")
else:
    print(f"{len(slices.table)} labelled slices of {slices.num_patients} patients -> {slices.csv_path}")
    print(f"{slices.num_unlabelled} slices without a label left out, {len(slices.skipped)} files skipped")
    display(slices.table.groupby(["folder", "label"])["patient_id"].nunique().rename("patients").to_frame())

# %% [markdown]
# The same slice in the two classic windows: the lung window (center -600 HU, width 1500) shows the
# lung parenchyma and ground-glass opacities; the mediastinal window (40, 400) shows soft tissue and
# consolidation but turns the whole lung black. The model is trained on the window chosen above.

# %%
if slices is not None:
    middle = slices.table.iloc[len(slices.table) // 2]  # a slice from the middle of a series
    figure = ct_figures.window_figure(middle["source_path"], frame=int(middle["frame"]))
    display(Image(filename=figures.save_report_figure(figure, figures_dir / "05_windows.png")))

# %% [markdown]
# ## A patient-grouped split
#
# The slices of one patient look alike; if they sat in both the training and the test split, the test
# would measure memory rather than diagnosis. Splits are grouped by patient id (and by near-duplicate
# images), so each patient's slices share one split. The fractions count patients of each class.

# %%
slice_config = ct.slice_config(
    data_path, model=ct_model, loss=loss, recipe=recipe, weights=weights, image_size=image_size, epochs=epochs,
    fine_tune_epochs=fine_tune_epochs, batch_size=ct_batch_size, split_fractions=fractions, seed=seed,
    n_bootstrap=100 if smoke else 1000,
)
split, class_names = train.prepare_split(slice_config)
print(f"classes {class_names}; patients in more than one split: "
      f"{int((split.groupby('patient_id')['split'].nunique() > 1).sum())}")
split.groupby(["split", "label"]).agg(slices=("path", "size"), patients=("patient_id", "nunique")).unstack(fill_value=0)

# %% [markdown]
# ## Train the slice classifier
#
# The baseline CNN trains all its layers for `epochs` epochs. With VGG16 the head is trained first on the
# frozen backbone, then the whole network is fine-tuned at a tenth of the learning rate (`fine_tune_epochs`).
# Focal loss, `-alpha (1 - p_t)^gamma log(p_t)`, weighs the hard, misclassified slices more than the easy
# ones, as seed 002 did for its imbalanced classes.

# %%
slices_run = train.train_run(slice_config, run_dir, overwrite=True, verbose=0 if smoke else 2)
print(f"{ct_model} ({loss} loss): validation accuracy {slices_run.metrics['val']['accuracy']:.3f}, "
      f"{slices_run.metrics['train_seconds']} s")

# %%
figure = figures.plot_training_curves(slices_run.history, title=f"{ct_model}, {loss} loss: slice classifier")
Image(filename=figures.save_report_figure(figure, figures_dir / "05_training_curves.png"))

# %% [markdown]
# ## Evaluate per slice and per patient
#
# `evaluate_ct` predicts the test slices of the run's split (metrics with 95% bootstrap intervals,
# clustered by patient), then votes per patient: **majority** (each slice votes for its predicted class;
# ties go to the highest mean probability, then to class order) and **mean** (the class with the highest
# mean probability). The ROC-AUC of the patient rows uses the patients' mean probabilities.

# %%
evaluation = ct.evaluate_ct(run_dir, evaluation_dir, n_bootstrap=slice_config.n_bootstrap)
for note in evaluation.notes:
    print("note:", note)
ct.metrics_table(evaluation).round(3)

# %%
figure = figures.plot_confusion_matrix(evaluation.slice_metrics["confusion_matrix"], evaluation.class_names,
                                     title=f"Test slices (n={evaluation.slice_metrics['n']})")
Image(filename=figures.save_report_figure(figure, figures_dir / "05_slice_confusion_matrix.png"))

# %% [markdown]
# ## One decision per patient, one CSV per test folder
#
# Each bar is one test patient: the share of its slices voting for each class, with the patient's true
# class and the majority decision below. As in seed 002, the decisions are written to one CSV per test
# folder, beside a CSV with every patient.

# %%
patients = evaluation.patients["majority"]
figure = ct_figures.patient_votes_figure(patients, evaluation.class_names,
                                         title="Test patients: slice votes (majority)")
display(Image(filename=figures.save_report_figure(figure, figures_dir / "05_patient_votes.png")))
for path in evaluation.patient_csvs["majority"]:
    print(f"wrote {path}")
patients[["folder", "patient_id", "label", "predicted", "num_slices", "tie", "correct"]].head(20)

# %% [markdown]
# ## Where does the model look? Grad-CAM on a few test slices
#
# Grad-CAM weighs the last convolutional feature maps by the gradient of the predicted class and
# overlays the result on the slice. On the synthetic set the lesions sit in the lungs; a heatmap on the
# body outline or the table would mean the model found a shortcut.

# %%
chosen = evaluation.predictions.groupby("label", sort=True).head(2 if smoke else 3)
figure = ct_figures.gradcam_figure(slices_run.model, chosen["path"].tolist(), evaluation.class_names,
                           image_size=image_size, channels=slice_config.channels, labels=chosen["label"].tolist())
Image(filename=figures.save_report_figure(figure, figures_dir / "05_gradcam.png"))
