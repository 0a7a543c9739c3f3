"""Explaining image files with a saved model, and the shortcut study.

The logic behind the ``explain`` command (which only parses options and prints):

- :func:`explain_images` loads a ``.keras`` model safely, expands files and folders, and explains the
  images a batch at a time (one explainer call per batch, nothing held beyond the batch). It writes one
  overlay PNG per image (or the four-panel figure image | heatmap | overlay | thresholded region) and
  ``explanations.csv`` with ``path, predicted, probability, explained, prob_<Class>..., output`` and, when
  masks are found, ``mask_path, energy_in_mask, mask_area_fraction, pointing_hit, iou``.
- :func:`find_mask` finds the mask of an image by file name: in a given folder, or beside ``images/`` as
  in the Radiography Database layout (``<Class>/masks/<name>`` lungs, ``<Class>/lesions/<name>`` lesions).
- :func:`shortcut_study` asks whether a model looks at the lungs at all: per image, the share of the
  heat inside the lung mask against the lungs' share of the image (the chance level), the hottest pixel
  in the lungs / in a lesion (pointing game), and the same aggregated per class.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.discover import SkippedFile, list_images
from covid_tf.data.images import load_image
from covid_tf.errors import CovidTfError, ImageReadError
from covid_tf.explain import get_explainer
from covid_tf.explain.base import BaseCAM
from covid_tf.explain.overlay import explanation_panel, overlay_heatmap
from covid_tf.explain.quality import summarize
from covid_tf.explain.segmentation import DEFAULT_THRESHOLD
from covid_tf.io_utils import atomic_write

CSV_NAME = "explanations.csv"
# --mask-kind -> the folder beside ``images/`` in the Radiography Database layout.
MASK_KINDS = {"lungs": "masks", "lesions": "lesions"}
MASK_COLUMNS = ("mask_path", "energy_in_mask", "mask_area_fraction", "pointing_hit", "iou")
# Overlays are drawn on the original image, shrunk so that its longer side is at most this.
MAX_DISPLAY_SIZE = 512
PROB_PREFIX = "prob_"

# The columns of a shortcut study, per image, after path / label / predicted / probability / explained.
SHORTCUT_COLUMNS = (
    "lung_energy",
    "lung_area",
    "energy_outside_lungs",
    "pointing_lungs",
    "lesion_energy",
    "lesion_area",
    "pointing_lesion",
)


@dataclass
class ExplainResult:
    """What :func:`explain_images` wrote and left out."""

    out_dir: Path
    table: pd.DataFrame
    outputs: list[Path]
    skipped: list[SkippedFile]
    class_names: list[str]
    method: str
    layer_name: str
    notes: list[str]


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_out_dir(out_dir: Path, inputs: Sequence[str | Path], masks_dir: Path | None, overwrite: bool) -> None:
    """Refuse an output folder inside an input folder (or the masks folder), the folder of an input file,
    a training run, or one holding earlier explanations (unless ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    given = [Path(item).expanduser() for item in inputs]
    folders = [item for item in given if item.is_dir()] + ([masks_dir] if masks_dir is not None else [])
    for folder in folders:
        if _is_within(out_dir, folder):
            raise CovidTfError(f"{out_dir}: is inside the input folder {folder.resolve()}; choose an --out "
                               "elsewhere (nothing is written into input folders)")
    for item in given:
        if item.is_file() and out_dir.resolve() == item.parent.resolve():
            raise CovidTfError(f"{out_dir}: is the folder of the input {item}; choose an --out elsewhere "
                               "(nothing is written into input folders)")
    if (out_dir / "model.keras").exists():
        raise CovidTfError(f"{out_dir}: holds a training run (model.keras); write the explanations elsewhere")
    if (out_dir / CSV_NAME).exists() and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds explanations ({CSV_NAME}); choose another --out "
                           "or pass --overwrite")


def output_names(paths: Sequence[str | Path], suffix: str = ".png") -> list[str]:
    """One output file name per input, derived from its name and unique among them.

    ``a/x.png`` and ``b/x.png`` become ``x.png`` and ``x_2.png`` (in input order); characters that are
    awkward in file names become ``_``; comparison ignores case (for case-insensitive file systems).
    """
    names, taken = [], set()
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "image"
        name, number = f"{stem}{suffix}", 1
        while name.lower() in taken:
            number += 1
            name = f"{stem}_{number}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


def find_mask(image_path: str | Path, masks_dir: str | Path | None = None, mask_kind: str = "lungs") -> Path | None:
    """The mask of an image, found by file name, or None.

    With ``masks_dir``: ``masks_dir/<name>``, else any file ``masks_dir/<stem>.*`` with an image extension.
    Without: the Radiography Database layout, ``<Class>/<folder>/<name>`` beside ``<Class>/images/<name>``,
    where ``folder`` is ``masks`` for ``mask_kind="lungs"`` and ``lesions`` for ``"lesions"``.
    """
    if mask_kind not in MASK_KINDS:
        raise CovidTfError(f"unknown mask kind {mask_kind!r}; choose one of {', '.join(MASK_KINDS)}")
    image_path = Path(image_path)
    if masks_dir is not None:
        folder = Path(masks_dir)
    elif image_path.parent.name == "images":
        folder = image_path.parent.parent / MASK_KINDS[mask_kind]
    else:
        return None
    candidate = folder / image_path.name
    if candidate.is_file():
        return candidate
    if masks_dir is not None:
        for extension in config.IMAGE_EXTENSIONS:
            candidate = folder / f"{image_path.stem}{extension}"
            if candidate.is_file():
                return candidate
    return None


def load_mask(path: str | Path) -> np.ndarray:
    """A mask file as bool (H, W): pixels above half the range are inside."""
    return load_image(path, channels=1)[..., 0] > 0.5


def _display_image(path: str, channels: int) -> np.ndarray:
    """The original image for the overlay, its longer side shrunk to at most ``MAX_DISPLAY_SIZE``."""
    image = load_image(path, channels=channels)
    height, width = image.shape[:2]
    scale = MAX_DISPLAY_SIZE / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
    return image


def _write_png(path: Path, rgb: np.ndarray) -> None:
    def write(tmp: Path) -> None:  # the temporary name ends in .png too, so OpenCV picks the format
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise CovidTfError(f"{path}: OpenCV could not write the PNG")

    atomic_write(path, write)


def _write_panel(path: Path, image: np.ndarray, heatmap: np.ndarray, threshold: float, title: str) -> None:
    figure = explanation_panel(image, heatmap, threshold=threshold, title=title)
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png", bbox_inches="tight"))


def _make_explainer(method: str, model: keras.Model, layer_name: str | None, batch_size: int) -> BaseCAM:
    try:
        return get_explainer(method, model, layer_name=layer_name, batch_size=batch_size)
    except ValueError as error:
        raise CovidTfError(f"cannot explain with {method!r}: {error}") from None


def _class_index(class_name: str | None, class_names: Sequence[str]) -> int | None:
    if class_name is None:
        return None
    if class_name not in class_names:
        raise CovidTfError(f"unknown class {class_name!r}; the model's classes are {', '.join(class_names)}")
    return list(class_names).index(class_name)


def _csv_rows(table: pd.DataFrame, header: bool) -> str:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, header=header, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


def explain_images(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    method: str = "gradcam",
    class_name: str | None = None,
    layer_name: str | None = None,
    masks_dir: str | Path | None = None,
    mask_kind: str = "lungs",
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = config.BATCH_SIZE,
    panels: bool = False,
    allow_unsafe: bool = False,
    overwrite: bool = False,
    on_skipped: Callable[[SkippedFile], None] | None = None,
) -> ExplainResult:
    """Explain image files (and folders of them) with a saved model; write overlays and ``explanations.csv``.

    Args:
        model_path: a ``.keras`` file; its run's ``config.json`` names the classes.
        inputs: image files and/or folders (searched recursively; ``masks/`` and ``lesions/`` are skipped).
        out_dir: the folder to write into; refused inside an input folder.
        method: "gradcam", "gradcam++", "scorecam" or "cam".
        class_name: explain this class for every image (default: each image's predicted class).
        layer_name: the target layer (default: the model's last convolutional layer).
        masks_dir, mask_kind: where masks are looked up (see :func:`find_mask`); with any mask found the
            CSV gets the columns ``mask_path, energy_in_mask, mask_area_fraction, pointing_hit, iou``
            (NaN for images without a mask or with an empty one).
        threshold: of the thresholded region (panel) and of the IoU.
        batch_size: images per explainer call; also how many images are in memory at once.
        panels: write the four-panel figure instead of the overlay alone.
        on_skipped: called with each unreadable file as soon as it is known.

    Raises ``CovidTfError`` for bad options, a missing model and when no image could be explained.
    """
    out_dir = Path(out_dir).expanduser()
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0.0 < threshold <= 1.0:
        raise CovidTfError(f"--threshold must lie in (0, 1], got {threshold}")
    if mask_kind not in MASK_KINDS:
        raise CovidTfError(f"unknown --mask-kind {mask_kind!r}; choose one of {', '.join(MASK_KINDS)}")
    masks_path = Path(masks_dir).expanduser() if masks_dir is not None else None
    if masks_path is not None and not masks_path.is_dir():
        raise CovidTfError(f"{masks_path}: --masks must be a folder of mask images")
    _check_out_dir(out_dir, inputs, masks_path, overwrite)

    from covid_tf.evaluation.inference import load_model

    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    requested = _class_index(class_name, names)
    explainer = _make_explainer(method, loaded.model, layer_name, batch_size)

    paths, skipped = list_images(inputs)
    for item in skipped:
        if on_skipped is not None:
            on_skipped(item)
    if not paths:
        raise CovidTfError(f"no readable image among the {len(inputs)} input(s) ({len(skipped)} file(s) skipped); "
                           "nothing explained")
    masks = [find_mask(path, masks_path, mask_kind) for path in paths]
    with_masks = masks_path is not None or any(mask is not None for mask in masks)
    file_names = output_names(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: list[pd.DataFrame] = []
    outputs: list[Path] = []
    notes: list[str] = []

    def skip(path: str, reason: str) -> None:
        item = SkippedFile(path, reason)
        skipped.append(item)
        if on_skipped is not None:
            on_skipped(item)

    def write(tmp: Path) -> None:
        header = True
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            for start in range(0, len(paths), batch_size):
                chosen, images = [], []
                for index in range(start, min(start + batch_size, len(paths))):
                    try:
                        images.append(load_image(paths[index], channels=loaded.channels, size=loaded.image_size))
                    except ImageReadError as error:  # changed since it was listed
                        skip(error.path, error.reason)
                        continue
                    chosen.append(index)
                if not chosen:
                    continue
                heatmaps, classes, probabilities = explainer.explain(np.stack(images), requested)
                predicted = np.argmax(probabilities, axis=-1)
                table = pd.DataFrame({
                    "path": [paths[i] for i in chosen],
                    "predicted": [names[k] for k in predicted],
                    "probability": probabilities[np.arange(len(chosen)), predicted],
                    "explained": [names[k] for k in classes],
                })
                for k, name in enumerate(names):
                    table[f"{PROB_PREFIX}{name}"] = probabilities[:, k]
                table["output"] = [file_names[i] for i in chosen]
                if with_masks:
                    batch_masks = []
                    for i in chosen:
                        try:
                            batch_masks.append(load_mask(masks[i]) if masks[i] is not None else None)
                        except ImageReadError as error:
                            notes.append(f"mask {error.path}: {error.reason}; no mask numbers for {paths[i]}")
                            batch_masks.append(None)
                    numbers = pd.DataFrame(summarize(heatmaps, batch_masks, threshold=threshold))
                    table["mask_path"] = [str(masks[i]) if masks[i] is not None else "" for i in chosen]
                    table["energy_in_mask"] = numbers["energy_in_mask"].to_numpy()
                    table["mask_area_fraction"] = numbers["mask_area_fraction"].to_numpy()
                    table["pointing_hit"] = numbers["pointing_game"].to_numpy()
                    table["iou"] = numbers["iou"].to_numpy()
                for row, i in enumerate(chosen):
                    target = out_dir / file_names[i]
                    try:
                        display = _display_image(paths[i], loaded.channels)
                    except ImageReadError:
                        display = images[row]
                    if panels:
                        title = (f"{Path(paths[i]).name}: predicted {table['predicted'].iloc[row]} "
                                 f"({table['probability'].iloc[row]:.2f}), {explainer.name} of "
                                 f"{table['explained'].iloc[row]}")
                        _write_panel(target, display, heatmaps[row], threshold, title)
                    else:
                        _write_png(target, overlay_heatmap(display, heatmaps[row]))
                    outputs.append(target)
                handle.write(_csv_rows(table, header=header))
                header = False
                tables.append(table)

    atomic_write(out_dir / CSV_NAME, write)
    if not tables:
        raise CovidTfError("none of the listed images could be read; nothing explained")
    return ExplainResult(out_dir, pd.concat(tables, ignore_index=True), outputs, skipped, list(names),
                         explainer.name, explainer.layer_name, notes)


# The shortcut study.


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
    ``lung_energy_over_area``: the mean energy in the lungs divided by the mean lung area (1 = chance,
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
        area = record["lung_area"]
        record["lung_energy_over_area"] = record["lung_energy"] / area if area and area > 0 else np.nan
        records.append(record)
    return pd.DataFrame(records).set_index("group")


def shortcut_study(
    model: keras.Model,
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
        model: a Keras model taking [0, 1] images.
        frame: rows with ``path`` and ``mask_path`` (lungs), optionally ``lesion_path``, ``label`` and any
            of ``split``, ``patient_id``, ``has_marker`` (kept in the result), as ``DatasetIndex.frame``.
            Rows without a lung mask are left out.
        class_names: the model's classes, in output order.
        class_name: explain this class on every image (e.g. "COVID"); default the predicted class.
        image_size, channels: of the model input (default: read from the model).

    Returns a :class:`ShortcutStudy`. Per image (``images``): ``path``, ``label``, ``predicted``,
    ``probability`` (of the predicted class), ``explained``, then :data:`SHORTCUT_COLUMNS`:
    ``lung_energy`` (share of the heat inside the lungs) against ``lung_area`` (the lungs' share of the
    image, the chance level), ``energy_outside_lungs``, ``pointing_lungs`` (1 when the hottest pixel lies
    in the lungs), and the same for the lesion mask (NaN where an image has no lesion). ``summary``: see
    :func:`summarize_shortcut`.
    """
    if "path" not in frame or "mask_path" not in frame:
        raise ValueError("frame needs the columns 'path' and 'mask_path' (lung masks), as DatasetIndex.frame")
    rows = frame[frame["mask_path"].fillna("").astype(str) != ""].reset_index(drop=True)
    if rows.empty:
        raise ValueError("no row of frame has a lung mask (mask_path): the study needs lung masks")
    _, height, _, model_channels = model.inputs[0].shape
    image_size = int(image_size or height)
    channels = int(channels or model_channels)
    requested = None
    if class_name is not None:
        if class_name not in class_names:
            raise ValueError(f"unknown class {class_name!r}; the model's classes are {', '.join(class_names)}")
        requested = list(class_names).index(class_name)
    explainer = get_explainer(method, model, layer_name=layer_name, batch_size=batch_size)
    has_lesions = "lesion_path" in rows
    records = []
    for start in range(0, len(rows), batch_size):
        chunk = rows.iloc[start:start + batch_size]
        images = np.stack([load_image(path, channels=channels, size=image_size) for path in chunk["path"]])
        heatmaps, classes, probabilities = explainer.explain(images, requested)
        lungs = [load_mask(path) for path in chunk["mask_path"]]
        lesions = [load_mask(path) if has_lesions and str(path or "") else None
                   for path in (chunk["lesion_path"] if has_lesions else [None] * len(chunk))]
        lung_numbers = summarize(heatmaps, lungs)
        lesion_numbers = summarize(heatmaps, lesions)
        predicted = np.argmax(probabilities, axis=-1)
        for row, (_, source) in enumerate(chunk.iterrows()):
            lung, lesion = lung_numbers[row], lesion_numbers[row]
            record = {"path": source["path"], "label": source.get("label", np.nan),
                      "predicted": class_names[predicted[row]],
                      "probability": float(probabilities[row, predicted[row]]),
                      "explained": class_names[classes[row]],
                      "lung_energy": lung["energy_in_mask"], "lung_area": lung["mask_area_fraction"],
                      "energy_outside_lungs": 1.0 - lung["energy_in_mask"],
                      "pointing_lungs": lung["pointing_game"],
                      "lesion_energy": lesion["energy_in_mask"],
                      "lesion_area": lesion["mask_area_fraction"] if lesion["mask_area_fraction"] > 0 else np.nan,
                      "pointing_lesion": lesion["pointing_game"]}
            for extra in ("split", "patient_id", "has_marker"):
                if extra in source.index:
                    record[extra] = source[extra]
            records.append(record)
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
    ``layer``, ``n``, ``lung_energy`` vs ``lung_area`` (chance), ``pointing_lesion``, ``lesion_iou`` (IoU of
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
    requested = None if class_name is None else list(class_names).index(class_name)
    rows = []
    for method in methods:
        began = time.perf_counter()
        try:
            explainer = get_explainer(method, model, layer_name=None if method == "cam" else layer_name,
                                      batch_size=batch_size)
        except ValueError as error:
            rows.append({"method": method, "note": str(error).split(". ")[0]})
            continue
        heatmaps, classes, _ = explainer.explain(images, requested)
        lung = pd.DataFrame(summarize(heatmaps, lungs, threshold=threshold))
        lesion = pd.DataFrame(summarize(heatmaps, lesions, threshold=threshold, model=model, images=images,
                                        class_indices=classes, seed=seed))
        row = {"method": explainer.name, "layer": explainer.layer_name, "n": len(images),
               "lung_energy": lung["energy_in_mask"].mean(), "lung_area": lung["mask_area_fraction"].mean(),
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
