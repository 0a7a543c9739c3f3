# %% [markdown]
# # 01 · Exploring a chest X-ray dataset
#
# **Goal:** know the data before training on it: how many images per class and split, their sizes
# and modes, pixel statistics per split (as seed 001 reports them), what the classes look like, how
# intensities differ between classes, which images are duplicates, and what augmentation does.
#
# The notebook reads the built-in synthetic dataset by default. Point `data_dir` at the Kaggle
# COVID-19 Radiography Database (or any supported layout) to explore real images.

# %% [markdown]
# ## Configurable parameters

# %% tags=["parameters"]
import os

from covid_tf import config

data_dir = os.environ.get("COVID_TF_DATA", str(config.SYNTHETIC_DIR))
image_size = int(os.environ.get("COVID_TF_IMAGE_SIZE", "128"))
classes = os.environ.get("COVID_TF_CLASSES", "")  # e.g. "COVID,Normal"; empty for all
seed = config.SEED
smoke = False

# %% [markdown]
# ## Setup

# %%
from covid_tf import figures
from covid_tf.data import discover as data
from covid_tf.data import exploration, splits

# Each report figure is saved twice in figures_dir: a PNG (shown here) and a PDF (vector, for print).
figures_dir = config.FIGURES_DIR
figures_dir.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Index the dataset
#
# `discover` recognises the layout, decodes every file once, skips unreadable ones with a reason,
# and groups identical or near-identical images.

# %%
index = data.discover(data_dir, classes=data.parse_class_list(classes))
print(f"{len(index.frame)} images, layout {index.layout!r}, classes {index.class_counts()}")
print(f"{len(index.skipped)} skipped, {len(index.duplicate_groups)} duplicate groups")
index.frame.head()

# %% [markdown]
# ## Split without leakage
#
# A 70/15/15 split, stratified by class, that keeps every patient and every group of duplicate
# images inside one split. The split is saved so that a run can be repeated exactly.

# %%
split_frame = splits.make_split(index.frame, fractions=(0.70, 0.15, 0.15), seed=seed)
splits.save_split(split_frame, config.REPORTS_DIR / "01_split.csv")
print("leaks across splits:", splits.split_leaks(split_frame))
exploration.class_distribution(split_frame)

# %%
figure = exploration.class_distribution_figure(split_frame)
figures.save_report_figure(figure, figures_dir / "01_class_distribution.png")

# %% [markdown]
# ## Pixel statistics per split
#
# Seed 001 found similar means and standard deviations in every split; a large difference would
# hint at a shift between them. Training normalises with the training split's statistics only.

# %%
exploration.pixel_statistics_by_split(split_frame, image_size, max_images=100 if smoke else 500)

# %% [markdown]
# ## What the classes look like

# %%
figure = exploration.sample_grid_figure(index.frame, index.class_names, per_class=2 if smoke else 5,
                                        image_size=image_size, seed=seed)
figures.save_report_figure(figure, figures_dir / "01_samples_per_class.png")

# %% [markdown]
# ## Intensity histograms per class

# %%
figure = exploration.intensity_histogram_figure(index.frame, index.class_names,
                                                images_per_class=5 if smoke else 50,
                                                image_size=image_size, seed=seed)
figures.save_report_figure(figure, figures_dir / "01_intensity_histograms.png")

# %% [markdown]
# ## Augmentation preview
#
# Seed 001's augmentation: shifts, rotations up to 15 degrees and zoom up to 0.2, no flips (a
# flipped chest X-ray puts the heart on the wrong side). With `training=False` it is the identity.

# %%
from covid_tf.data.images import load_image

example = load_image(index.frame["path"].iloc[0], channels=1, size=image_size)
figure = exploration.augmentation_preview_figure(example, preset="shift-rotate-zoom", n=7, seed=seed)
figures.save_report_figure(figure, figures_dir / "01_augmentation_preview.png")

# %% [markdown]
# ## Duplicates
#
# Identical pictures under two names would inflate test scores if they landed in two splits.

# %%
for group in index.duplicate_groups[:10]:
    print(" = ".join(os.path.basename(p) for p in group))
