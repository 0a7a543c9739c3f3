"""``segment-train``: train (or only score) the lung U-Net on sources with lung masks, and write its run folder
through the run record (:mod:`covid_tf.runs.record`).

    python -m covid_tf segment-train SOURCE [SOURCE...] --out RUN [--image-size 256] [--epochs 40] [--init FILE]
        [--leave-one-source-out [--folds NAMES] [--no-final]] [--evaluate FILE]

A run writes ``split.csv``, ``history.csv``, ``model.keras`` (inference only, no optimizer state), ``scores.csv``
(Dice, IoU and the plausibility verdict per image), ``figures/test_worst.png`` / ``test_best.png`` and, last,
``metrics.json`` (per source and split: Dice and IoU with bootstrap CIs, after post-processing, and how many
failures the plausibility check flags). ``--evaluate FILE`` trains nothing: ``split.csv``, ``scores.csv``,
``evaluation.json``. ``--leave-one-source-out``: for every source S (or those in ``--folds``) a U-Net trained on
the other sources and scored on *every* image of S, the honest figure for films from a hospital the segmenter
never saw; ``without-<S>/`` (model.keras, history.csv, scores.csv) per fold, and ``loso.json`` / ``loso.csv``,
updated after each fold. A fold starts from ``--init`` unless that model saw S (``--init-seen``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.errors import CovidTfError
from covid_tf.figures.segmenter import outline_overlay, save_overlay_grid
from covid_tf.io_utils import atomic_write, refuse_output_inside_inputs
from covid_tf.lungs.segmentation import scoring, training
from covid_tf.lungs.segmentation.segmenter import SHIPPED_MODEL, load_segmenter
from covid_tf.lungs.segmentation.sources import MaskSource
from covid_tf.runs import record

SCORES_FILE, EVALUATION_FILE, LOSO_JSON, LOSO_CSV = "scores.csv", "evaluation.json", "loso.json", "loso.csv"
LOSO_COLUMNS = ("left_out", "started_from", "n", "dice_mean", "dice_ci_low", "dice_ci_high", "dice_median",
                "dice_worst", "iou_mean", "failures", "failures_flagged", "good", "good_flagged", "seconds")
SHIPPED = "shipped"  # --init / --evaluate: the shipped segmenter


@dataclass(frozen=True)
class SegmentTrainRequest:
    """What ``segment-train`` is asked: the sources, the folder, the options and which stages run."""

    sources: Sequence[str | Path | MaskSource]
    out: Path
    options: training.SegmenterOptions = field(default_factory=training.SegmenterOptions)
    overwrite: bool = False
    evaluate: str | None = None  # a segmenter file (or "shipped") to score instead of training
    leave_one_source_out: bool = False
    folds: tuple[str, ...] = ()  # the sources to leave out in turn (default: each)
    final: bool = True  # after the folds, train the final model on every source


@dataclass
class SegmentTrainResult:
    """The summaries of what ran: ``{source: {split: summary}}`` of the final model or the scored one, and
    ``{left-out source: summary}`` of the folds."""

    sources: dict | None = None
    folds: dict | None = None


def model_file(text: str | None) -> str | None:
    """A segmenter file as the command line names it: ``shipped`` for the shipped one."""
    return str(SHIPPED_MODEL) if text == SHIPPED else text


def check_output_folder(inputs: Sequence[str | Path], out: Path, overwrite: bool) -> None:
    """Refuse an output inside an input, and an earlier run unless ``overwrite``."""
    refuse_output_inside_inputs(out, list(inputs))
    if (out / record.MODEL_FILE).exists() and not overwrite:
        raise CovidTfError(f"{out}: already holds a segmenter run ({record.MODEL_FILE}); choose another --out "
                           "or pass --overwrite")


def write_figures(scores: pd.DataFrame, arrays: dict, out: Path, count: int = 10) -> None:
    """Overlays of the worst and best test images by Dice (red: predicted, green: reference)."""
    test = np.nonzero((scores["split"] == "test").to_numpy())[0]
    if not len(test):
        return
    order = test[np.argsort(scores["dice"].to_numpy()[test], kind="stable")]
    for name, chosen in (("test_worst", order[:count]), ("test_best", order[::-1][:count])):
        panels = [outline_overlay(arrays["images"][i], arrays["predicted"][i], arrays["masks"][i][..., 0])
                  for i in chosen]
        titles = [f"{scores['source'].iloc[i]} {Path(scores['path'].iloc[i]).name}\nDice {scores['dice'].iloc[i]:.3f}"
                  for i in chosen]
        save_overlay_grid(panels, titles, out / "figures" / f"{name}.png", title=name.replace("_", " "))


def load_sources(sources: list[MaskSource], out: Path, options: training.SegmenterOptions):
    """Split the sources, write ``split.csv`` and load every image and mask at ``options.image_size``."""
    frame = training.split_frame(sources, options)
    record.write_table(out, record.SPLIT_FILE, frame[list(training.SPLIT_COLUMNS)])
    return frame, *scoring.load_pairs(frame, options.image_size)


def fit_and_save(arrays: dict, options: training.SegmenterOptions, folder: Path):
    """Train a U-Net on ``arrays``; write its ``history.csv`` and ``model.keras`` into ``folder``."""
    model, history = training.fit_unet(arrays, options)
    record.write_table(folder, record.HISTORY_FILE, history)
    copy = training.inference_model(model, options)
    atomic_write(folder / record.MODEL_FILE, lambda tmp: copy.save(tmp))
    return model


def train_segmenter(sources: Sequence[str | Path | MaskSource], out: str | Path, options: training.SegmenterOptions,
                    overwrite: bool = False) -> dict:
    """Train on the train splits of every source, score every split of every source, write every output of a
    segmenter run; return the metrics."""
    out, sources = Path(out), training.as_sources(sources)
    check_output_folder([source.root for source in sources], out, overwrite)
    started = time.perf_counter()
    frame, images, masks = load_sources(sources, out, options)
    model = fit_and_save(training.training_arrays(frame, images, masks), options, out)
    scores, arrays = scoring.score_arrays(model, frame, images, masks, options.batch_size)
    record.write_table(out, SCORES_FILE, scores)
    write_figures(scores, arrays, out)
    metrics = {"image_size": options.image_size, "sources": scoring.summarize_by_source(scores),
               "n_images": {name: frame[frame["source"] == name]["split"].value_counts().to_dict()
                            for name in frame["source"].unique()},
               "train_seconds": round(time.perf_counter() - started, 1),
               "data": {source.name: str(source.root) for source in sources},
               "options": asdict(options)}
    record.write_metrics(out, metrics)
    return metrics


def score_segmenter(sources: Sequence[str | Path | MaskSource], out: str | Path, segmenter: str | Path | None,
                    options: training.SegmenterOptions) -> dict:
    """Score a trained segmenter (default: the shipped one) on every split of every source, without training:
    ``scores.csv``, ``split.csv`` and ``evaluation.json`` (per source and split) in ``out``."""
    out, sources = Path(out), training.as_sources(sources)
    refuse_output_inside_inputs(out, [source.root for source in sources])
    model = load_segmenter(segmenter)
    frame, images, masks = load_sources(sources, out, options)
    scores, _ = scoring.score_arrays(model, frame, images, masks, options.batch_size)
    record.write_table(out, SCORES_FILE, scores)
    metrics = {"segmenter": str(segmenter or SHIPPED), "image_size": options.image_size,
               "sources": scoring.summarize_by_source(scores)}
    record.write_metrics(out, metrics, EVALUATION_FILE)
    return metrics


def fold_names(sources: Sequence[MaskSource], folds: Sequence[str] | None) -> list[str]:
    """The sources to leave out in turn (all by default); at least two sources are needed."""
    names = [source.name for source in sources]
    if len(names) < 2:
        raise CovidTfError("--leave-one-source-out needs at least two sources")
    chosen = list(folds) if folds else names
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise CovidTfError(f"--folds names unknown source(s) {', '.join(unknown)}; the sources are {', '.join(names)}")
    return chosen


def loso_row(held_out: str, started_from: str, summary: dict, seconds: float) -> dict:
    """One row of ``loso.csv`` from a fold's summary."""
    dice, iou, flags = summary["dice"], summary["iou"], summary["flags"]
    return {"left_out": held_out, "started_from": started_from, "n": dice["n"], "dice_mean": round(dice["mean"], 4),
            "dice_ci_low": round(dice["ci95"][0], 4), "dice_ci_high": round(dice["ci95"][1], 4),
            "dice_median": round(dice["median"], 4), "dice_worst": round(dice["min"], 4),
            "iou_mean": round(iou["mean"], 4), **flags, "seconds": round(seconds, 1)}


def leave_one_source_out(sources: Sequence[MaskSource], out: str | Path, options: training.SegmenterOptions,
                         folds: Sequence[str] | None = None) -> dict:
    """Train and score one fold per left-out source; return ``{source: summary}`` (also in ``loso.json``)."""
    out = Path(out)
    names = fold_names(sources, folds)
    frame, images, masks = load_sources(list(sources), out, options)
    results, rows = {}, []
    for held_out in names:
        started = time.perf_counter()
        fold = training.fold_options(options, held_out)
        left_in = (frame["source"] != held_out).to_numpy()
        folder = out / f"without-{held_out}"
        model = fit_and_save(training.training_arrays(frame, images, masks, left_in), fold, folder)
        held = ~left_in
        scores, _ = scoring.score_arrays(model, frame[held], images[held], masks[held], options.batch_size)
        record.write_table(folder, SCORES_FILE, scores)
        results[held_out] = {"started_from": fold.init or "random weights", **scoring.summarize(scores)}
        rows.append(loso_row(held_out, fold.init or "random weights", results[held_out],
                             time.perf_counter() - started))
        record.write_metrics(out, results, LOSO_JSON)
        record.write_table(out, LOSO_CSV, pd.DataFrame(rows, columns=list(LOSO_COLUMNS)))
    return results


def run_segment_train(request: SegmentTrainRequest) -> SegmentTrainResult:
    """The ``segment-train`` command: ``--evaluate`` alone, or the folds (``--leave-one-source-out``) and then,
    unless ``final`` is off, the final model on every source."""
    sources, out, options = training.as_sources(request.sources), Path(request.out), request.options
    if request.evaluate:
        scored = score_segmenter(sources, out, model_file(request.evaluate), options)
        return SegmentTrainResult(sources=scored["sources"])
    result = SegmentTrainResult()
    if request.leave_one_source_out:
        check_output_folder([source.root for source in sources], out, request.overwrite)
        result.folds = leave_one_source_out(sources, out, options, folds=request.folds)
        if not request.final:
            return result
    overwrite = request.overwrite or request.leave_one_source_out  # the folds' check above stands for this one
    result.sources = train_segmenter(sources, out, options, overwrite=overwrite)["sources"]
    return result
