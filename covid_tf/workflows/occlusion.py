"""The counterfactual lung check (``occlusion``): does a trained classifier decide from the lungs?

The model predicts every image three ways: as it is, with the (dilated) lungs filled, and with everything
outside the (dilated) lungs filled, for each fill of :mod:`covid_tf.lungs.roi.fills`. A model that decides from
the lungs loses its ROC-AUC when the lungs are filled and keeps it when their surroundings are; a model whose
ROC-AUC survives filled lungs reads something else (markers, borders, the film's source).

- The ROC-AUC is that of the positive class (:func:`~covid_tf.evaluation.metrics.positive_class_index`; with
  more than two classes, the positive class against the rest), with stratified (patient-cluster when patients
  repeat) bootstrap 95% CIs from :mod:`covid_tf.evaluation.bootstrap`, on the same resamples for every variant.
- Lung masks as ``evaluate`` finds them (:func:`~covid_tf.lungs.roi.mask_table.prepare_masks`): the dataset's,
  else the shipped segmenter's (cached). An image without plausible lungs is left out of every variant and
  reported.
- Filling happens on the full-resolution image, before the run's own ROI (crop, mask, ...) turns it into the
  model's input; a lung-attention model gets the original lung mask as its mask channel.
- Images are streamed from disk through ``tf.data`` (:mod:`covid_tf.runs.variants`): each image and its mask are
  read once; the mask is checked there (as ``evaluate`` does) and the image filled, while the model scores the
  batches before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.mask_files import mask_paths_of
from covid_tf.data.sources import image_sources
from covid_tf.errors import CovidTfError
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
from covid_tf.io_utils import atomic_write_json, atomic_write_text, csv_rows, resolved_path
from covid_tf.lungs.roi import fills as lung_fills
from covid_tf.lungs.roi.mask_table import DATASET, NO_MASK, NO_SOURCE, locate_masks
from covid_tf.lungs.roi.modes import DEFAULT_DILATION, MODALITIES
from covid_tf.runs.inference import load_model
from covid_tf.runs.overlap import OverlapCheck, held_out_rows, training_reference
from covid_tf.runs.record import OVERLAP_FILE, RunRecord, software_versions, write_table
from covid_tf.runs.variants import FillLoader, predict_variants
from covid_tf.workflows.checks import CheckOptions, check_output, with_settings

OUTPUT_FILES = ("occlusion.json", "occlusion.png", "occlusion.csv", OVERLAP_FILE)
EXAMPLES = 5  # left-out images named in the JSON and the output


@dataclass(frozen=True)
class OcclusionOptions(CheckOptions):
    """Every setting of the occlusion check (:class:`~covid_tf.workflows.checks.CheckOptions`: which images, batch
    size, bootstrap, seed, safety), checked once, at construction.

    ``fills``: ``"mean,blur"`` or a sequence (:data:`covid_tf.lungs.roi.fills.FILLS`), kept as a tuple; ``dilation``:
    of the image's longer side; ``use_segmenter=False`` forbids the lung segmenter (only the dataset's masks);
    ``modality`` (``xray`` or ``ct``: whose lung segmenter) defaults to the run's (``ct`` for
    ``ct-lungs-attention``). Copies of training images are left out (``overlap.csv``) unless ``keep_overlap``;
    ``source_column``: the dataset CSV's column of each image's source (within-source ROC-AUCs)."""

    fills: str | Sequence[str] = lung_fills.DEFAULT_FILLS
    dilation: float = DEFAULT_DILATION
    use_segmenter: bool = True
    modality: str | None = None
    keep_overlap: bool = False
    source_column: str | None = None

    def __post_init__(self) -> None:
        if self.modality is not None and self.modality not in MODALITIES:
            raise CovidTfError(f"--modality: unknown {self.modality!r}; choose one of {', '.join(MODALITIES)}")
        try:
            object.__setattr__(self, "fills", lung_fills.parse_fills(self.fills))
            lung_fills.dilation_pixels(self.dilation, (1, 1))
        except ValueError as error:
            raise CovidTfError(f"--fills / --dilation: {error}") from None
        super().__post_init__()


@dataclass
class OcclusionResult:
    """What :func:`run_occlusion` found and wrote."""

    summary: dict  # the content of occlusion.json
    table: pd.DataFrame  # the content of occlusion.csv (every image, left-out ones included)
    label: str  # the verdict (DECIDES_FROM_LUNGS, SHORTCUTS, MIXED or NO_VERDICT)
    line: str  # the verdict line, thresholds included
    out_dir: Path
    notes: list[str]


def run_occlusion(model_path: str | Path, data: str | Path, out_dir: str | Path,
                  options: OcclusionOptions | None = None, *, on_step: Callable[[str], None] | None = None,
                  **settings) -> OcclusionResult:
    """The counterfactual lung check of a saved model on a labelled dataset; writes ``occlusion.json``,
    ``occlusion.png`` and ``occlusion.csv`` into ``out_dir`` (see the module's docstring).

    ``options``: :class:`OcclusionOptions`, or its fields as keywords (``fills="mean"``, ``n_bootstrap=0``, ...);
    ``on_step``: called with a line before each long step."""
    options = with_settings(options or OcclusionOptions(), settings)
    say, started, out_dir = on_step or (lambda _line: None), time.perf_counter(), Path(out_dir)
    check_output(out_dir, data, model_path, options.overwrite, OUTPUT_FILES[0], "an occlusion check")
    loaded = load_model(model_path, allow_unsafe=options.allow_unsafe)
    names = loaded.class_names
    rows, skipped, notes, root, overlap = select_images(data, loaded.path, options)
    y_all, positive_index = label_indices(rows["label"], names), positive_class_index(names)
    say(f"lung masks of {len(rows)} image(s) ...")
    modality = options.modality or loaded.roi.kind.modality
    masks, probabilities, loader = score_variants(loaded, rows, data, options, modality, say)
    included = masks["roi_applied"].to_numpy(bool)
    check_classes(y_all, included, masks, names, positive_index, data)
    scores = probabilities[included, :, positive_index]
    patients = rows["patient_id"].astype(str)[included].to_numpy()
    auc_rows = auc_results(y_all[included], scores, positive_index, loader.keys, n_bootstrap=options.n_bootstrap,
                           seed=options.seed, groups=patients if len(set(patients)) < len(patients) else None)
    positive = names[positive_index] + (" vs rest" if len(names) > 2 else "")
    label, line = verdict(nested_results(auc_rows), positive)
    table = per_image_table(rows, masks, included, scores, loader.keys, names[positive_index])
    notes.extend(filter(None, [left_out_note(table)]))
    summary = {
        "model": resolved_path(loaded.path), "data": str(root), "roi": loaded.roi.mode, "modality": modality,
        "class_names": names, "positive_class": names[positive_index], "auc": f"ROC-AUC of {positive}",
        "fills": list(options.fills), "dilation": options.dilation, "blur_sigma": lung_fills.BLUR_SIGMA,
        "subset": options.subset, "split_file": resolved_path(options.split_file) if options.split_file else None,
        "n_images": len(rows), "n": int(included.sum()), "n_left_out": int((~included).sum()),
        "left_out_examples": table.loc[~table["included"], ["path", "reason"]].head(EXAMPLES).to_dict("records"),
        "n_skipped": len(skipped), "lung_mask_sources": masks["lung_mask_source"].value_counts().to_dict(),
        "results": nested_results(auc_rows), "verdict": label, "verdict_line": line,
        "thresholds": {"lungs_filled_max_auc": LUNGS_FILLED_MAX_AUC,
                       "outside_filled_tolerance": OUTSIDE_FILLED_TOLERANCE, "shortcut_auc": SHORTCUT_AUC},
        "n_bootstrap": options.n_bootstrap, "seed": options.seed, "versions": software_versions(),
        "overlap": overlap.summary(excluded=not options.keep_overlap),
        "sources": variant_source_metrics(image_sources(root, rows["path"][included].tolist(), options.source_column),
                                          rows[included], scores, y_all[included] == positive_index, loader.keys,
                                          n_bootstrap=options.n_bootstrap, seed=options.seed),
    }
    notes.extend((summary["sources"] or {}).get("warnings", []))
    write_outputs(out_dir, summary | {"seconds": round(time.perf_counter() - started, 1)}, table, auc_rows,
                  overlap.copies)
    return OcclusionResult(summary, table, label, line, out_dir, notes)


def score_variants(loaded, rows: pd.DataFrame, data: str | Path, options: OcclusionOptions, modality: str,
                   say: Callable[[str], None]) -> tuple[pd.DataFrame, np.ndarray, FillLoader]:
    """Every image's mask row (the columns of :func:`~covid_tf.lungs.roi.mask_table.prepare_masks`: each mask checked as
    the stream reads it), the probabilities ``(N, V, K)`` of its variants (NaN for an image left out) and the loader
    (its ``keys``)."""
    located = lung_masks_of(rows, data, options.use_segmenter, modality)
    streamed = located["mask_path"].astype(bool).to_numpy()  # with a mask file, to be checked as it is read
    paths = rows["path"].astype(str)[streamed].tolist()
    loader = FillLoader(loaded, dict(zip(paths, located["mask_path"][streamed])), options.fills, options.dilation,
                        options.seed, trusted=located.loc[located["lung_mask_source"].eq(DATASET), "path"],
                        modality=modality)
    say(f"checking the lungs and predicting {len(paths)} image(s) x {len(loader.keys)} variants (the original; lungs "
        f"filled and outside filled with {', '.join(options.fills)}) ...")
    streamed_probabilities, reasons = predict_variants(loaded.model, paths, loader, options.batch_size)
    masks = with_plausibility(located, streamed, reasons)
    probabilities = np.full((len(rows), len(loader.keys), int(loaded.model.outputs[0].shape[-1])), np.nan, np.float32)
    probabilities[streamed] = streamed_probabilities
    probabilities[~masks["roi_applied"].to_numpy(bool)] = np.nan
    return masks, probabilities, loader


def select_images(data: str | Path, model_path: Path, options: OcclusionOptions
                  ) -> tuple[pd.DataFrame, list, list[str], Path, OverlapCheck]:
    """The labelled images to check (as ``evaluate`` selects them, copies of the model's training images left out
    unless ``options.keep_overlap``), the skipped files, notes, the data root and the overlap check; a
    ``CovidTfError`` when they hold one class only."""
    from covid_tf.data.discover import discover
    from covid_tf.evaluation.evaluate import select_rows

    training = training_reference(RunRecord.of_model(model_path))  # first: no frame thumbnails without it
    index = discover(data, classes=options.classes, class_map=options.class_map,
                     frame_readings=training.frame_readings)
    rows, skipped, _ = select_rows(index, split_file=options.split_file, split=options.subset)
    present = sorted(set(rows["label"].astype(str)))
    if len(present) < 2:
        raise CovidTfError(f"{data}: only one class ({present[0]}) among the {len(rows)} image(s) to check; the "
                           "occlusion check compares ROC-AUCs and needs images of two or more classes")
    thumbnails = training.test_thumbnails(rows["path"], index.frame_thumbnails.__getitem__)
    rows, overlap = held_out_rows(training, rows, thumbnails, keep_overlap=options.keep_overlap)
    notes = list(filter(None, [*overlap.notes, overlap.warning(excluded=not options.keep_overlap)]))
    return rows, skipped, notes, index.root, overlap  # the data's own notes are said by select_rows


def lung_masks_of(rows: pd.DataFrame, data: str | Path, use_segmenter: bool, modality: str = "xray") -> pd.DataFrame:
    """The images' lung mask files (:func:`locate_masks`: the dataset's, else the segmenter's, cached), one row each;
    a ``CovidTfError`` when there are none at all. Whether each is plausible is checked as it is read
    (:meth:`~covid_tf.runs.variants.FillLoader.checked`, :func:`with_plausibility`)."""
    masks = locate_masks(rows["path"].astype(str).tolist(), mask_paths_of(rows), use_segmenter=use_segmenter,
                         modality=modality)
    if not use_segmenter and (masks["lung_mask_source"] == NO_SOURCE).all():
        raise CovidTfError(f"{data}: has no lung masks (no <Class>/masks/ beside images/, no mask_path column) and "
                           "--no-segmenter forbids the lung segmenter; add masks or drop --no-segmenter")
    return masks


def with_plausibility(located: pd.DataFrame, streamed: np.ndarray, reasons: Sequence[str]) -> pd.DataFrame:
    """:func:`lung_masks_of`'s table with ``roi_applied`` and ``reason`` (the columns of
    :func:`~covid_tf.lungs.roi.mask_table.prepare_masks`): the streamed images' verdicts, 'no lung mask' for the
    rest."""
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
