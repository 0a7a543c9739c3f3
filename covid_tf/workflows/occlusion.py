"""The counterfactual lung check (``occlusion``): does a trained classifier decide from the lungs?

The model predicts every image three ways: as it is, with the (dilated) lungs filled, and with everything
outside the (dilated) lungs filled, for each fill of :mod:`covid_tf.lungs.roi.fills`. A model that decides from
the lungs loses its ROC-AUC when the lungs are filled and keeps it when their surroundings are; a model whose
ROC-AUC survives filled lungs reads something else (markers, borders, the film's source).

- The ROC-AUC is that of the positive class (:func:`~covid_tf.evaluation.metrics.positive_class_index`; with
  more than two classes, the positive class against the rest), with stratified (patient-cluster when patients
  repeat) bootstrap 95% CIs from :mod:`covid_tf.evaluation.bootstrap`, on the same resamples for every variant.
- Lung masks as ``evaluate`` finds them (:func:`~covid_tf.lungs.roi.inputs.prepare_masks`): the dataset's,
  else the shipped segmenter's (cached). An image without plausible lungs is left out of every variant and
  reported.
- Filling happens on the full-resolution image, before the run's own ROI (crop, mask, ...) turns it into the
  model's input; a lung-attention model gets the original lung mask as its mask channel.
- Images are streamed from disk through ``tf.data``: each image and its mask are read once; the mask is checked
  there (as ``evaluate`` does) and the image filled, while the model scores the batches before.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.images import load_image
from covid_tf.data.sources import image_sources
from covid_tf.errors import CovidTfError, ImageReadError
from covid_tf.evaluation.metrics import positive_class_index, to_jsonable
from covid_tf.evaluation.occlusion import (  # noqa: F401  (the verdict's labels and thresholds, re-exported)
    DECIDES_FROM_LUNGS,
    LUNGS_FILLED_MAX_AUC,
    MIXED,
    NO_VERDICT,
    OUTSIDE_FILLED_TOLERANCE,
    SHORTCUT_AUC,
    SHORTCUTS,
    auc_results,
    check_classes,
    left_out_note,
    nested_results,
    per_image_table,
    verdict,
)
from covid_tf.evaluation.sources import variant_source_metrics
from covid_tf.evaluation.tables import label_indices
from covid_tf.io_utils import (
    atomic_write_json,
    atomic_write_text,
    check_writable_output,
    csv_rows,
    progress_bar,
    refuse_output_inside_inputs,
    resolved_path,
    run_folder_of,
)
from covid_tf.lungs.roi import fills as lung_fills
from covid_tf.lungs.roi.inputs import NO_MASK, locate_masks, read_plausible_mask, roi_image
from covid_tf.lungs.roi.modes import DEFAULT_DILATION, MODALITIES
from covid_tf.lungs.segmentation.masks import read_mask, resize_mask
from covid_tf.runs.inference import load_model
from covid_tf.runs.overlap import OverlapCheck, held_out_rows
from covid_tf.runs.record import OVERLAP_FILE, RunRecord, software_versions, write_table

OUTPUT_FILES = ("occlusion.json", "occlusion.png", "occlusion.csv", OVERLAP_FILE)
EXAMPLES = 5  # left-out images named in the JSON and the output
MAX_RESIZE_CHANNELS = 4  # OpenCV's area resize takes at most four channels


class VariantLoader:
    """``path -> (V, S, S, C)``: the model inputs of every variant of one image (:func:`fills.occlusion_images`,
    each through the run's ROI with the image's original mask), for ``tf.data``. :meth:`checked` also checks the
    mask first (:func:`~covid_tf.lungs.roi.inputs.read_plausible_mask`, as ``evaluate`` does) from the same read."""

    def __init__(self, loaded, mask_files: dict[str, str], fills: Sequence[str], dilation: float,
                 seed: int = config.SEED, *, trusted: Collection[str] = (), modality: str = "xray") -> None:
        self.spec, self.size, self.image_channels = loaded.roi, loaded.image_size, loaded.channels
        self.channels = int(loaded.model.inputs[0].shape[-1])
        self.masks, self.fills, self.dilation, self.seed = dict(mask_files), tuple(fills), dilation, seed
        self.trusted, self.modality = frozenset(trusted), modality
        self.keys = lung_fills.variant_keys(self.fills)
        self.per_call = max(1, MAX_RESIZE_CHANNELS // self.image_channels)  # variants per ROI call

    def __call__(self, path: str) -> np.ndarray:
        return self.variants(path, read_mask(self.masks[path]))

    def checked(self, path: str) -> tuple[np.ndarray, str]:
        """``(inputs, reason)``: the variants' inputs and ``''`` when the mask is plausible; else zeros and why not
        (the image is then left out of every variant), as for an image or mask that cannot be read."""
        mask, reason = read_plausible_mask(self.masks[path], path in self.trusted, self.modality)
        if mask is None:
            return self.empty(), reason
        try:
            return self.variants(path, mask), ""
        except ImageReadError as error:  # read whole when the data was indexed, broken since
            return self.empty(), f"image unreadable: {error.reason}"

    def empty(self) -> np.ndarray:
        return np.zeros((len(self.keys), self.size, self.size, self.channels), np.float32)

    def variants(self, path: str, mask: np.ndarray) -> np.ndarray:
        image = load_image(path, channels=self.image_channels)
        mask = resize_mask(mask, *image.shape[:2])
        rng = np.random.default_rng([self.seed, zlib.crc32(path.encode("utf-8", "surrogateescape"))])
        variants = lung_fills.occlusion_images(image, mask, self.fills, self.dilation, rng)
        return np.stack([model_input for start in range(0, len(variants), self.per_call)
                         for model_input in self.roi_inputs(variants[start:start + self.per_call], mask)])

    def roi_inputs(self, variants: list[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
        """The model inputs of a few variants through one ROI call on them stacked along the channels: the same
        crop, resize and constant for each (every step works channel by channel; OpenCV resizes up to four
        channels at once); a lung-attention model's mask channel, appended once, is the original mask's."""
        stacked = roi_image(np.concatenate(variants, axis=-1), mask, self.spec, self.size)[0]
        split = np.split(stacked[..., :len(variants) * self.image_channels], len(variants), axis=-1)
        extra = stacked[..., len(variants) * self.image_channels:]
        return [np.concatenate([part, extra], axis=-1) for part in split]


def predict_variants(model, paths: Sequence[str], loader: VariantLoader,
                     batch_size: int = config.BATCH_SIZE) -> tuple[np.ndarray, list[str]]:
    """Softmax probabilities ``(N, V, K)`` of every variant of every image and each image's mask verdict ('' for
    plausible lungs, else why not: its probabilities are then meaningless), streamed from disk in batches of
    about ``batch_size`` model inputs (``batch_size // V`` images, each read, checked and filled once, while the
    model scores the batches before)."""
    import tensorflow as tf

    paths = [str(p) for p in paths]
    n_variants, size, channels = len(loader.keys), loader.size, loader.channels
    if not paths:
        return np.zeros((0, n_variants, int(model.outputs[0].shape[-1])), np.float32), []
    per_batch = max(1, batch_size // n_variants)

    def decode(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        inputs, reason = tf.numpy_function(lambda p: loader.checked(p.decode("utf-8")), [path],
                                           (tf.float32, tf.string), stateful=False)
        return tf.ensure_shape(inputs, (n_variants, size, size, channels)), tf.ensure_shape(reason, ())

    dataset = (tf.data.Dataset.from_tensor_slices(paths)
               .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(per_batch).map(lambda x, reason: (tf.reshape(x, (-1, size, size, channels)), reason))
               .prefetch(tf.data.AUTOTUNE))
    spec = tf.TensorSpec((None, size, size, channels), tf.float32)
    forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    probabilities, reasons = [], []
    with progress_bar(total=-(-len(paths) // per_batch), desc="occlusion", unit="batch") as bar:
        for inputs, batch_reasons in dataset:
            probabilities.append(np.asarray(forward(inputs), np.float32))
            reasons.extend(reason.decode("utf-8") for reason in batch_reasons.numpy())
            bar.update(1)
    return np.concatenate(probabilities).reshape(len(paths), n_variants, -1), reasons


def check_output(out_dir: Path, data: str | Path, model_path: str | Path, overwrite: bool) -> None:
    """Refuse an --out inside the data, that is or replaces a file of the model's run folder, an unwritable one,
    or one holding a check."""
    # The model's run folder is read (its config.json, split.csv): a new folder in it is fine (RUN/occlusion),
    # the folder itself or any of its files is not.
    refuse_output_inside_inputs(out_dir, [data, model_path], read_folders=[run_folder_of(model_path)])
    check_writable_output(out_dir, folder=True)
    if (out_dir / OUTPUT_FILES[0]).exists() and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds an occlusion check ({OUTPUT_FILES[0]}); choose another --out "
                           "or pass --overwrite")


@dataclass
class OcclusionResult:
    """What :func:`run_occlusion` found and wrote."""

    summary: dict  # the content of occlusion.json
    table: pd.DataFrame  # the content of occlusion.csv (every image, left-out ones included)
    label: str  # the verdict (DECIDES_FROM_LUNGS, SHORTCUTS, MIXED or NO_VERDICT)
    line: str  # the verdict line, thresholds included
    out_dir: Path
    notes: list[str]


def run_occlusion(model_path: str | Path, data: str | Path, out_dir: str | Path, *,
                  fills: str | Sequence[str] = lung_fills.DEFAULT_FILLS, dilation: float = DEFAULT_DILATION,
                  use_segmenter: bool = True, split_file: str | Path | None = None, subset: str | None = None,
                  classes: Sequence[str] | None = None, class_map: dict[str, str] | None = None,
                  batch_size: int = config.BATCH_SIZE, n_bootstrap: int = 1000, seed: int = config.SEED,
                  allow_unsafe: bool = False, overwrite: bool = False, modality: str | None = None,
                  on_step: Callable[[str], None] | None = None, keep_overlap: bool = False,
                  source_column: str | None = None) -> OcclusionResult:
    """The counterfactual lung check of a saved model on a labelled dataset; writes ``occlusion.json``,
    ``occlusion.png`` and ``occlusion.csv`` into ``out_dir`` (see the module's docstring).

    ``fills``: ``"mean,blur"`` or a sequence (:data:`covid_tf.lungs.roi.fills.FILLS`); ``dilation``: of the image's
    longer side; ``use_segmenter=False`` forbids the lung segmenter (only the dataset's masks);
    ``split_file``/``subset``, ``classes``/``class_map``: which images, as in ``evaluate``; ``modality``
    (``xray`` or ``ct``: whose lung segmenter) defaults to the run's (``ct`` for ``ct-lungs-attention``). Copies of
    training images are left out (``overlap.csv``) unless ``keep_overlap``; ``sources``: within-source ROC-AUCs.
    """
    say, started, out_dir = on_step or (lambda _line: None), time.perf_counter(), Path(out_dir)
    fills = check_options(fills, dilation, batch_size, n_bootstrap, modality)
    check_output(out_dir, data, model_path, overwrite)
    loaded = load_model(model_path, allow_unsafe=allow_unsafe)
    names = loaded.class_names
    rows, skipped, notes, root, overlap = select_images(data, loaded.path, split_file=split_file, subset=subset,
                                                        classes=classes, class_map=class_map, keep=keep_overlap)
    y_all, positive_index = label_indices(rows["label"], names), positive_class_index(names)
    say(f"lung masks of {len(rows)} image(s) ...")
    modality = modality or loaded.roi.kind.modality
    masks, probabilities, loader = score_variants(loaded, rows, data, use_segmenter, modality, fills, dilation, seed,
                                                  batch_size, say)
    included = masks["roi_applied"].to_numpy(bool)
    check_classes(y_all, included, masks, names, positive_index, data)
    scores = probabilities[included, :, positive_index]
    patients = rows["patient_id"].astype(str)[included].to_numpy()
    auc_rows = auc_results(y_all[included], scores, positive_index, loader.keys, n_bootstrap=n_bootstrap, seed=seed,
                           groups=patients if len(set(patients)) < len(patients) else None)
    positive = names[positive_index] + (" vs rest" if len(names) > 2 else "")
    label, line = verdict(nested_results(auc_rows), positive)
    table = per_image_table(rows, masks, included, scores, loader.keys, names[positive_index])
    notes.extend(filter(None, [left_out_note(table)]))
    summary = {
        "model": resolved_path(loaded.path), "data": str(root), "roi": loaded.roi.mode, "modality": modality,
        "class_names": names, "positive_class": names[positive_index], "auc": f"ROC-AUC of {positive}",
        "fills": list(fills), "dilation": dilation, "blur_sigma": lung_fills.BLUR_SIGMA, "subset": subset,
        "split_file": resolved_path(split_file) if split_file else None, "n_images": len(rows),
        "n": int(included.sum()), "n_left_out": int((~included).sum()),
        "left_out_examples": table.loc[~table["included"], ["path", "reason"]].head(EXAMPLES).to_dict("records"),
        "n_skipped": len(skipped), "lung_mask_sources": masks["lung_mask_source"].value_counts().to_dict(),
        "results": nested_results(auc_rows), "verdict": label, "verdict_line": line,
        "thresholds": {"lungs_filled_max_auc": LUNGS_FILLED_MAX_AUC,
                       "outside_filled_tolerance": OUTSIDE_FILLED_TOLERANCE, "shortcut_auc": SHORTCUT_AUC},
        "n_bootstrap": n_bootstrap, "seed": seed, "versions": software_versions(),
        "overlap": overlap.summary(excluded=not keep_overlap),
        "sources": variant_source_metrics(image_sources(root, rows["path"][included].tolist(), source_column),
                                          rows[included], scores, y_all[included] == positive_index, loader.keys,
                                          n_bootstrap=n_bootstrap, seed=seed),
    }
    notes.extend((summary["sources"] or {}).get("warnings", []))
    write_outputs(out_dir, summary | {"seconds": round(time.perf_counter() - started, 1)}, table, auc_rows,
                  overlap.copies)
    return OcclusionResult(summary, table, label, line, out_dir, notes)


def score_variants(loaded, rows: pd.DataFrame, data: str | Path, use_segmenter: bool, modality: str,
                   fills: Sequence[str], dilation: float, seed: int, batch_size: int,
                   say: Callable[[str], None]) -> tuple[pd.DataFrame, np.ndarray, VariantLoader]:
    """Every image's mask row (the columns of :func:`~covid_tf.lungs.roi.inputs.prepare_masks`: each mask checked as
    the stream reads it), the probabilities ``(N, V, K)`` of its variants (NaN for an image left out) and the loader
    (its ``keys``)."""
    located = lung_masks_of(rows, data, use_segmenter, modality)
    streamed = located["mask_path"].astype(bool).to_numpy()  # with a mask file, to be checked as it is read
    paths = rows["path"].astype(str)[streamed].tolist()
    loader = VariantLoader(loaded, dict(zip(paths, located["mask_path"][streamed])), fills, dilation, seed,
                           trusted=located.loc[located["lung_mask_source"].eq("dataset"), "path"], modality=modality)
    say(f"checking the lungs and predicting {len(paths)} image(s) x {len(loader.keys)} variants (the original; lungs "
        f"filled and outside filled with {', '.join(fills)}) ...")
    streamed_probabilities, reasons = predict_variants(loaded.model, paths, loader, batch_size)
    masks = with_plausibility(located, streamed, reasons)
    probabilities = np.full((len(rows), len(loader.keys), int(loaded.model.outputs[0].shape[-1])), np.nan, np.float32)
    probabilities[streamed] = streamed_probabilities
    probabilities[~masks["roi_applied"].to_numpy(bool)] = np.nan
    return masks, probabilities, loader


def check_options(fills: str | Sequence[str], dilation: float, batch_size: int, n_bootstrap: int,
                  modality: str | None = None) -> tuple[str, ...]:
    """The fills asked for; a ``CovidTfError`` for an unknown fill or modality, or a bad number."""
    if modality is not None and modality not in MODALITIES:
        raise CovidTfError(f"--modality: unknown {modality!r}; choose one of {', '.join(MODALITIES)}")
    try:
        chosen = lung_fills.parse_fills(fills)
        lung_fills.dilation_pixels(dilation, (1, 1))
    except ValueError as error:
        raise CovidTfError(f"--fills / --dilation: {error}") from None
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if n_bootstrap < 0:
        raise CovidTfError(f"--n-bootstrap must be 0 or more, got {n_bootstrap}")
    return chosen


def select_images(data: str | Path, model_path: Path, *, split_file=None, subset=None, classes=None,
                  class_map=None, keep: bool = False) -> tuple[pd.DataFrame, list, list[str], Path, OverlapCheck]:
    """The labelled images to check (as ``evaluate`` selects them, copies of the model's training images left out
    unless ``keep``), the skipped files, notes, the data root and the overlap check; a ``CovidTfError`` when they
    hold one class only."""
    from covid_tf.data.discover import discover
    from covid_tf.evaluation.evaluate import select_rows

    index = discover(data, classes=classes, class_map=class_map)
    rows, skipped, _ = select_rows(index, split_file=split_file, split=subset)
    present = sorted(set(rows["label"].astype(str)))
    if len(present) < 2:
        raise CovidTfError(f"{data}: only one class ({present[0]}) among the {len(rows)} image(s) to check; the "
                           "occlusion check compares ROC-AUCs and needs images of two or more classes")
    rows, overlap = held_out_rows(RunRecord.of_model(model_path), rows,
                                  [index.frame_thumbnails[path] for path in rows["path"]], keep_overlap=keep)
    notes = list(filter(None, [*overlap.notes, overlap.warning(excluded=not keep)]))
    return rows, skipped, notes, index.root, overlap  # the data's own notes are said by select_rows


def lung_masks_of(rows: pd.DataFrame, data: str | Path, use_segmenter: bool, modality: str = "xray") -> pd.DataFrame:
    """The images' lung mask files (:func:`locate_masks`: the dataset's, else the segmenter's, cached), one row each;
    a ``CovidTfError`` when there are none at all. Whether each is plausible is checked as it is read
    (:meth:`VariantLoader.checked`, :func:`with_plausibility`)."""
    mask_paths = rows["mask_path"].fillna("").astype(str).tolist() if "mask_path" in rows else None
    masks = locate_masks(rows["path"].astype(str).tolist(), mask_paths, use_segmenter=use_segmenter,
                         modality=modality)
    if not use_segmenter and (masks["lung_mask_source"] == "none").all():
        raise CovidTfError(f"{data}: has no lung masks (no <Class>/masks/ beside images/, no mask_path column) and "
                           "--no-segmenter forbids the lung segmenter; add masks or drop --no-segmenter")
    return masks


def with_plausibility(located: pd.DataFrame, streamed: np.ndarray, reasons: Sequence[str]) -> pd.DataFrame:
    """:func:`lung_masks_of`'s table with ``roi_applied`` and ``reason`` (the columns of
    :func:`~covid_tf.lungs.roi.inputs.prepare_masks`): the streamed images' verdicts, 'no lung mask' for the rest."""
    reason = np.full(len(located), NO_MASK, dtype=object)
    reason[streamed] = list(reasons)
    return located.assign(roi_applied=reason == "", reason=reason)


def write_outputs(out_dir: Path, summary: dict, table: pd.DataFrame, auc_rows: Sequence[dict],
                  copies: pd.DataFrame) -> None:
    """``occlusion.csv``, ``overlap.csv``, ``occlusion.png`` and, last (its presence marks a finished check),
    ``occlusion.json``."""
    from covid_tf.figures.occlusion import plot_occlusion

    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(out_dir, OVERLAP_FILE, copies)
    atomic_write_text(out_dir / OUTPUT_FILES[2], csv_rows(table, header=True))
    plot_occlusion(auc_rows, auc_label=summary["auc"], verdict=summary["verdict"], n=summary["n"],
                   lungs_filled_max=LUNGS_FILLED_MAX_AUC, shortcut_auc=SHORTCUT_AUC, path=out_dir / OUTPUT_FILES[1])
    atomic_write_json(out_dir / OUTPUT_FILES[0], to_jsonable(summary))
