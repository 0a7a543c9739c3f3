"""Research studies on explanations: does a model look at the lungs, and how do the methods compare?

- :func:`shortcut_study` asks whether a model looks at the lungs at all: per image, the share of the
  heat inside the lung mask against the lungs' share of the image (the chance level), the hottest pixel
  in the lungs / in a lesion (pointing game), and the same aggregated per class.
- :func:`compare_shortcut_studies`, :func:`quality_table` and :func:`overlay_grid` put several models,
  data sets or methods side by side (notebook 04).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covid_tf.data.images import load_image
from covid_tf.explain.cam_methods import method_name
from covid_tf.explain.explainers import requested_class
from covid_tf.explain.lung_energy import LungInputs, explained_batches
from covid_tf.explain.methods import METHODS, get_explainer
from covid_tf.explain.overlay import overlay_heatmap
from covid_tf.explain.quality import summarize
from covid_tf.explain.segmentation import DEFAULT_THRESHOLD
from covid_tf.lungs.segmentation.masks import read_mask as load_mask
from covid_tf.runs.inference import LoadedModel

# The columns of a shortcut study, per image, after path / label / predicted / probability / explained.
SHORTCUT_COLUMNS = (
    "energy_in_lungs",
    "lung_area_fraction",
    "energy_outside_lungs",
    "pointing_lungs",
    "energy_in_lesion",
    "lesion_area_fraction",
    "pointing_lesion",
)


@dataclass
class ShortcutStudy:
    """Per-image numbers (``images``) and their means per class and over all images (``summary``)."""

    images: pd.DataFrame
    summary: pd.DataFrame
    method: str
    layer_name: str


def _mean_or_nan(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else float("nan")


def summarize_shortcut(images: pd.DataFrame, by: str = "label") -> pd.DataFrame:
    """Means of the per-image numbers of a shortcut study per ``by`` group and over all rows ("all").

    Columns: ``n``, ``accuracy`` (when labels are known), the means of :data:`SHORTCUT_COLUMNS`, and
    ``lung_energy_ratio``: the mean energy in the lungs divided by the mean lung area (1 = chance,
    above 1 = the heat concentrates on the lungs, below 1 = it avoids them).
    """
    groups = [("all", images)]
    if by in images.columns:
        groups += [(str(name), rows) for name, rows in images.groupby(by, sort=False)]
    records = []
    for name, rows in groups:
        record: dict[str, object] = {"group": name, "n": len(rows)}
        if "label" in rows and rows["label"].notna().all():
            record["accuracy"] = float((rows["label"] == rows["predicted"]).mean()) if len(rows) else np.nan
        for column in SHORTCUT_COLUMNS:
            record[column] = _mean_or_nan(rows[column])
        area = record["lung_area_fraction"]
        record["lung_energy_ratio"] = record["energy_in_lungs"] / area if area and area > 0 else np.nan
        records.append(record)
    return pd.DataFrame(records).set_index("group")


def _study_record(source: pd.Series, predicted: str, probability: float, explained: str, lung: dict,
                  lesion: dict) -> dict:
    """One image's row of a shortcut study (see :func:`shortcut_study`)."""
    record = {"path": source["path"], "label": source.get("label", np.nan), "predicted": predicted,
              "probability": probability, "explained": explained,
              "energy_in_lungs": lung["energy_in_mask"], "lung_area_fraction": lung["mask_area_fraction"],
              "energy_outside_lungs": 1.0 - lung["energy_in_mask"],
              "pointing_lungs": lung["pointing_game"],
              "energy_in_lesion": lesion["energy_in_mask"],
              "lesion_area_fraction": lesion["mask_area_fraction"] if lesion["mask_area_fraction"] > 0 else np.nan,
              "pointing_lesion": lesion["pointing_game"]}
    for extra in ("split", "patient_id", "has_marker"):
        if extra in source.index:
            record[extra] = source[extra]
    return record


def _rows_with_lungs(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` with a lung mask; ``ValueError`` without the columns or without any mask."""
    if "path" not in frame or "mask_path" not in frame:
        raise ValueError("frame needs the columns 'path' and 'mask_path' (lung masks), as DatasetIndex.frame")
    rows = frame[frame["mask_path"].fillna("").astype(str) != ""].reset_index(drop=True)
    if rows.empty:
        raise ValueError("no row of frame has a lung mask (mask_path): the study needs lung masks")
    return rows


def shortcut_study(
    model: keras.Model | LoadedModel,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    method: str = "gradcam",
    class_name: str | None = None,
    layer_name: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 32,
) -> ShortcutStudy:
    """Where does the model look: inside the lungs, on the lesions, or elsewhere (a burned-in marker)?

    Args:
        model: a model with its run (:class:`~covid_tf.runs.inference.LoadedModel`: each image goes through
            the run's lung ROI, and its heatmap is measured on the full image, as ``explain`` does), or a Keras
            model taking [0, 1] images (the full image).
        frame: rows with ``path`` and ``mask_path`` (lungs), optionally ``lesion_path``, ``label`` and any
            of ``split``, ``patient_id``, ``has_marker`` (kept in the result), as ``DatasetIndex.frame``.
            Rows without a lung mask are left out.
        class_names: the model's classes, in output order.
        class_name: explain this class on every image (e.g. "COVID"); default the predicted class.
        image_size, channels: of a Keras model's input (default: read from the model).

    Returns a :class:`ShortcutStudy`. Per image (``images``): ``path``, ``label``, ``predicted``,
    ``probability`` (of the predicted class), ``explained``, then :data:`SHORTCUT_COLUMNS`:
    ``energy_in_lungs`` (share of the heat inside the lungs) against ``lung_area_fraction`` (the lungs' share of the
    image, the chance level), ``energy_outside_lungs``, ``pointing_lungs`` (1 when the hottest pixel lies
    in the lungs), and the same for the lesion mask (NaN where an image has no lesion). ``summary``: see
    :func:`summarize_shortcut`.
    """
    rows = _rows_with_lungs(frame)
    if not isinstance(model, LoadedModel):  # a model without its run: the full image, no ROI
        _, height, _, model_channels = model.inputs[0].shape
        model = LoadedModel(model, list(class_names), int(image_size or height), int(channels or model_channels),
                            Path(model.name))
    requested = requested_class(class_name, class_names)
    explainer = get_explainer(method, model.model, layer_name=layer_name, batch_size=batch_size)
    paths = rows["path"].astype(str).tolist()
    inputs = LungInputs(model, paths, rows["mask_path"].astype(str).tolist(), use_segmenter=False)
    has_lesions = "lesion_path" in rows
    records = []
    for batch in explained_batches(inputs, explainer, paths, requested, batch_size):
        chunk = rows.iloc[batch.indices]
        lungs = [load_mask(path) for path in chunk["mask_path"]]
        lesions = [load_mask(path) if has_lesions and str(path or "") else None
                   for path in (chunk["lesion_path"] if has_lesions else [None] * len(chunk))]
        lung_numbers = summarize(batch.heatmaps, lungs)
        lesion_numbers = summarize(batch.heatmaps, lesions)
        predicted = np.argmax(batch.probabilities, axis=-1)
        for row, (_, source) in enumerate(chunk.iterrows()):
            records.append(_study_record(source, class_names[predicted[row]],
                                         float(batch.probabilities[row, predicted[row]]),
                                         class_names[batch.classes[row]], lung_numbers[row], lesion_numbers[row]))
    images_table = pd.DataFrame(records)
    return ShortcutStudy(images_table, summarize_shortcut(images_table), explainer.name, explainer.layer_name)


def compare_shortcut_studies(studies: dict[str, ShortcutStudy], group: str = "all") -> pd.DataFrame:
    """One row per study (e.g. ``{"shortcut data": ..., "clean data": ...}``) of its ``group`` summary."""
    rows = {}
    for name, study in studies.items():
        if group in study.summary.index:
            rows[name] = study.summary.loc[group]
    return pd.DataFrame(rows).T


# Comparing methods.


def _load_study_rows(frame: pd.DataFrame, image_size: int, channels: int):
    images = np.stack([load_image(path, channels=channels, size=image_size) for path in frame["path"]])
    lungs = [load_mask(path) if str(path or "") else None for path in frame.get("mask_path", [""] * len(frame))]
    lesions = [load_mask(path) if str(path or "") else None
               for path in frame.get("lesion_path", [""] * len(frame))]
    return images, lungs, lesions


def quality_table(
    model: keras.Model,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    methods: Sequence[str] = ("gradcam", "gradcam++", "scorecam", "cam"),
    class_name: str | None = None,
    layer_name: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    sanity_images: int = 4,
    batch_size: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """The explanation-quality numbers of several methods on the same images, one row per method.

    ``frame`` as for :func:`shortcut_study` (``path``, ``mask_path``, ``lesion_path``). Columns: ``method``,
    ``layer``, ``n``, ``energy_in_lungs`` vs ``lung_area_fraction`` (chance), ``pointing_lesion``,
    ``lesion_iou`` (IoU of
    ``heatmap >= threshold`` with the lesion mask), ``deletion_drop`` / ``random_drop`` /
    ``drop_over_random`` (probability drop when the hottest 20% of pixels are removed, vs random regions),
    ``sanity_correlation`` and ``sanity_passed`` (model-parameter randomisation on the first
    ``sanity_images`` images; 0 skips it), ``seconds``. A method the model does not allow (CAM on a head
    with a hidden Dense layer) gets a row with only ``note`` filled in.
    """
    import time

    from covid_tf.explain.sanity import randomization_sanity_check

    _, height, _, channels = model.inputs[0].shape
    images, lungs, lesions = _load_study_rows(frame.reset_index(drop=True), int(height), int(channels))
    requested = requested_class(class_name, class_names)
    rows = []
    for method in methods:
        began = time.perf_counter()
        try:  # a method that reads its own layer (CAM) is not given the others' layer
            chosen = None if METHODS[method_name(method)].layer_fixed else layer_name
            explainer = get_explainer(method, model, layer_name=chosen, batch_size=batch_size)
        except ValueError as error:
            rows.append({"method": method, "note": str(error).split(". ")[0]})
            continue
        heatmaps, classes, _ = explainer.explain(images, requested)
        lung = pd.DataFrame(summarize(heatmaps, lungs, threshold=threshold))
        lesion = pd.DataFrame(summarize(heatmaps, lesions, threshold=threshold, model=model, images=images,
                                        class_indices=classes, seed=seed))
        row = {"method": explainer.name, "layer": explainer.layer_name, "n": len(images),
               "energy_in_lungs": lung["energy_in_mask"].mean(),
               "lung_area_fraction": lung["mask_area_fraction"].mean(),
               "pointing_lesion": lesion["pointing_game"].mean(), "lesion_iou": lesion["iou"].mean(),
               "deletion_drop": lesion["drop"].mean(), "random_drop": lesion["random_drop"].mean(),
               "drop_over_random": lesion["drop_over_random"].mean()}
        if sanity_images > 0:
            check = randomization_sanity_check(model, images[:sanity_images], method=explainer.name, seed=seed,
                                               layer_name=explainer.layer_name, class_index=classes[:sanity_images],
                                               batch_size=batch_size)
            row.update(sanity_correlation=check["mean_correlation"], sanity_passed=check["passed"])
        row.update(seconds=round(time.perf_counter() - began, 1), note="")
        rows.append(row)
    return pd.DataFrame(rows)


def overlay_grid(
    images: np.ndarray,
    heatmaps: dict[str, np.ndarray],
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.4,
):
    """A grid figure: one row per image, the image then one overlay per entry of ``heatmaps``.

    ``heatmaps`` maps a column title (e.g. a method name) to maps (N, H, W) in [0, 1] for the N images.
    """
    from matplotlib.figure import Figure

    images = np.asarray(images)
    columns = ["image", *heatmaps]
    count = len(images)
    figure = Figure(figsize=(2.2 * len(columns), 2.3 * count + (0.4 if title else 0)), layout="constrained")
    axes = np.atleast_2d(figure.subplots(count, len(columns), squeeze=False))
    for row in range(count):
        image = images[row]
        gray = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        axes[row, 0].imshow(gray, cmap="gray", vmin=0.0, vmax=1.0)
        for column, maps in enumerate(heatmaps.values(), start=1):
            axes[row, column].imshow(overlay_heatmap(image, maps[row], alpha=alpha))
        if row_titles is not None:
            axes[row, 0].set_ylabel(row_titles[row], fontsize=8)
        for column, name in enumerate(columns):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(name, fontsize=9)
    if title:
        figure.suptitle(title)
    return figure


def input_size(model: keras.Model) -> int:
    """The image side a model takes."""
    return int(model.inputs[0].shape[1])


def with_markers(frame: pd.DataFrame, folder: str | Path) -> pd.DataFrame:
    """Add the synthetic generator's ``has_marker`` column (from its metadata.csv) to an index frame."""
    metadata = Path(folder) / "metadata.csv"
    if not metadata.is_file():
        return frame
    table = pd.read_csv(metadata)
    if "has_marker" not in table:
        return frame
    markers = dict(zip(table["path"].map(lambda path: str((Path(folder) / path).resolve())), table["has_marker"]))
    return frame.assign(has_marker=frame["path"].map(markers).astype("boolean"))
