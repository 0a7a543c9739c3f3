"""Leave-one-source-out for the lung segmenter (``segment-train --leave-one-source-out``).

For every source S (or those named in ``folds``) a U-Net is trained on the train splits of the other sources
(validated on their val splits) and scored on *every* image of S: the honest figure for films from a
hospital the segmenter never saw. A fold starts from ``options.init`` unless that model was trained on S
(``options.init_seen``): then it starts from random weights. Writes ``without-<S>/`` (model.keras,
history.csv, scores.csv) per fold and ``loso.json`` / ``loso.csv`` with one row per fold, updated after each.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write_json, atomic_write_text, csv_text
from covid_tf.lungs.segmentation import evaluation, training
from covid_tf.lungs.segmentation.sources import MaskSource

LOSO_COLUMNS = ("left_out", "started_from", "n", "dice_mean", "dice_ci_low", "dice_ci_high", "dice_median",
                "dice_worst", "iou_mean", "failures", "failures_flagged", "good", "good_flagged", "seconds")


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
                         folds: Sequence[str] | None = None, loaded=None) -> dict:
    """Train and score one fold per left-out source; return ``{source: summary}`` (also in ``loso.json``).

    ``loaded``: the (frame, images, masks) of :func:`covid_tf.lungs.segmentation.training.load_sources`, if at hand."""
    import time

    out = Path(out)
    names = fold_names(sources, folds)
    frame, images, masks = loaded or training.load_sources(list(sources), out, options)
    results, rows = {}, []
    for held_out in names:
        started = time.perf_counter()
        fold = training.fold_options(options, held_out)
        folder = out / f"without-{held_out}"
        left_in = (frame["source"] != held_out).to_numpy()
        model = training.fit_unet(training.training_arrays(frame, images, masks, left_in), fold, folder)
        training.save_inference_model(model, fold, folder / "model.keras")
        held = ~left_in
        scores, _ = evaluation.score_arrays(model, frame[held], images[held], masks[held], options.batch_size)
        atomic_write_text(folder / "scores.csv", csv_text(scores))
        results[held_out] = {"started_from": fold.init or "random weights", **evaluation.summarize(scores)}
        rows.append(loso_row(held_out, fold.init or "random weights", results[held_out],
                             time.perf_counter() - started))
        atomic_write_json(out / "loso.json", results)
        atomic_write_text(out / "loso.csv", csv_text(pd.DataFrame(rows, columns=list(LOSO_COLUMNS))))
    return results
