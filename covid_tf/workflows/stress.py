"""The ``stress`` check: how a trained classifier's ROC-AUC holds up when the same films are acquired differently.

Every image is scored as it is and under each acquisition shift of :mod:`covid_tf.data.shifts` at each of its
strengths (exposure, contrast, blur, noise, JPEG, resolution, border crop and pad, burned-in text, and the inverted
lookup table as a sanity case), the positive class's ROC-AUC compared (:mod:`covid_tf.evaluation.stress`).

- Shifts are applied to the full-resolution image, seeded per image and shift, before the run's own ROI (crop,
  mask, lung attention) turns it into the model's input.
- A model with a lung ROI gets its masks as ``evaluate`` does (:meth:`~covid_tf.runs.inference.LoadedModel.
  roi_loader`: the dataset's, else the shipped segmenter's, cached); an image without plausible lungs is used
  whole. The lungs are those of the original film: a shift that moves pixels (crop, pad) moves them with it, so the
  check measures the classifier, not the segmenter.
- Images are streamed through ``tf.data`` as the occlusion check streams them
  (:func:`covid_tf.runs.variants.predict_variants`): each image is read once and all its versions go through
  the model in one batch. An image that cannot be read any more is left out and said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data import shifts as acquisition
from covid_tf.data.mask_files import mask_paths_of
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import stress as stress_stats
from covid_tf.evaluation.metrics import positive_class_index, to_jsonable
from covid_tf.evaluation.tables import label_indices
from covid_tf.io_utils import (
    atomic_write_json,
    resolved_path,
)
from covid_tf.lungs.roi.mask_table import fallback_note
from covid_tf.runs.inference import load_model
from covid_tf.runs.record import software_versions
from covid_tf.runs.variants import ShiftLoader, predict_variants
from covid_tf.workflows.checks import CheckOptions, check_output, with_settings

OUTPUT_FILES = ("stress.json", "stress.png")


@dataclass
class StressResult:
    """What :func:`run_stress` found and wrote."""

    summary: dict  # the content of stress.json
    rows: list[dict]  # one per version: shift, strength, auc, ci95, drop, drop_ci95, n (the original first)
    line: str  # the one-line summary: mean drop, worst shift, sanity case
    out_dir: Path
    notes: list[str]


@dataclass(frozen=True)
class StressOptions(CheckOptions):
    """Every setting of the stress check (:class:`~covid_tf.workflows.checks.CheckOptions`: which images, batch size,
    bootstrap, seed, safety), checked once, at construction.

    ``shifts``: ``"gamma,blur"``, ``"gamma:0.5:1"`` or ``{name: strengths}`` (:func:`covid_tf.data.shifts.
    parse_shifts`; None: every shift at its default strengths), kept as the plan ``{name: strengths}``;
    ``max_images``: a seeded sample of the images, stratified by class."""

    shifts: str | Sequence[str] | Mapping[str, Sequence[float]] | None = None
    max_images: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "shifts", acquisition.parse_shifts(self.shifts))
        except ValueError as error:
            raise CovidTfError(f"--shifts: {error}") from None
        super().__post_init__()
        if self.max_images is not None and self.max_images < 2:
            raise CovidTfError(f"--max-images must be at least 2, got {self.max_images}")


def select_images(data: str | Path, names: Sequence[str], options: StressOptions) -> tuple[pd.DataFrame, Path]:
    """The labelled images to stress (as ``evaluate`` selects them; at most ``max_images``, a seeded sample
    stratified by class) and the data root; a ``CovidTfError`` when the positive class's ROC-AUC is undefined."""
    from covid_tf.data.discover import discover
    from covid_tf.evaluation.evaluate import select_rows

    index = discover(data, classes=options.classes, class_map=options.class_map)
    rows = select_rows(index, split_file=options.split_file, split=options.subset)[0].reset_index(drop=True)
    max_images, seed = options.max_images, options.seed
    if max_images is not None and len(rows) > max_images:
        from sklearn.model_selection import train_test_split

        counts = rows["label"].value_counts()
        stratify = rows["label"] if counts.min() >= 2 and max_images >= len(counts) else None
        kept = train_test_split(rows.index.to_numpy(), train_size=max_images, random_state=seed, stratify=stratify)[0]
        rows = rows.loc[np.sort(kept)].reset_index(drop=True)
    y_true, positive_index = label_indices(rows["label"], names), positive_class_index(names)
    present = sorted({names[i] for i in np.unique(y_true)})
    if len(present) < 2 or positive_index not in y_true:
        raise CovidTfError(f"{data}: the {len(rows)} image(s) to check hold only {', '.join(present) or 'nothing'}; "
                           f"the stress check compares ROC-AUCs of {names[positive_index]} and needs it and another "
                           "class")
    return rows, index.root


def run_stress(model_path: str | Path, data: str | Path, out_dir: str | Path, options: StressOptions | None = None,
               *, on_step: Callable[[str], None] | None = None, **settings) -> StressResult:
    """The stress check of a saved model on a labelled dataset; writes ``stress.json`` and ``stress.png`` into
    ``out_dir`` (see the module's docstring).

    ``options``: :class:`StressOptions`, or its fields as keywords (``shifts="gamma,blur"``, ``n_bootstrap=0``, ...);
    ``on_step``: called with a line before each long step."""
    options = with_settings(options or StressOptions(), settings)
    plan, batch_size, n_bootstrap, seed = options.shifts, options.batch_size, options.n_bootstrap, options.seed
    say = on_step or (lambda _line: None)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_output(out_dir, data, model_path, options.overwrite, OUTPUT_FILES[0], "a stress check")
    loaded = load_model(model_path, allow_unsafe=options.allow_unsafe)
    names, positive_index = loaded.class_names, positive_class_index(loaded.class_names)
    rows, root = select_images(data, names, options)
    paths = rows["path"].astype(str).tolist()
    loader_of_roi, mask_table = loaded.roi_loader(paths, mask_paths_of(rows))  # evaluate's masks (None without an ROI)
    notes = [note for note in [fallback_note(mask_table)] if note]
    loader = ShiftLoader(loaded, plan, loader_of_roi.masks if loader_of_roi is not None else None, seed,
                         names=names_in(paths, root))
    say(f"predicting {len(paths)} image(s) x {len(loader.keys)} versions (the original and "
        f"{', '.join(plan)} at their strengths) ...")
    probabilities, reasons = predict_variants(loaded.model, paths, loader, batch_size)
    readable = np.array([reason == "" for reason in reasons], bool)
    notes.extend(f"left out {path}: {reason}" for path, reason in zip(paths, reasons) if reason)
    y_true = label_indices(rows["label"], names)[readable]
    if len(set(y_true.tolist())) < 2 or positive_index not in y_true:
        raise CovidTfError(f"{data}: too few readable images left ({int(readable.sum())} of {len(paths)}) to compare "
                           f"ROC-AUCs; e.g. {notes[-1] if notes else 'none'}")
    patients = rows["patient_id"].astype(str).to_numpy()[readable]
    result_rows = stress_stats.stress_results(
        y_true, probabilities[readable, :, positive_index], positive_index, loader.keys, n_bootstrap=n_bootstrap,
        seed=seed, groups=patients if len(set(patients)) < len(patients) else None)
    sanity = [name for name in plan if acquisition.SHIFTS[name].sanity]
    totals = stress_stats.summarise(result_rows, sanity)
    positive = names[positive_index] + (" vs rest" if len(names) > 2 else "")
    line = stress_stats.summary_line(result_rows, totals, positive)
    summary = {
        "model": resolved_path(loaded.path), "data": str(root), "roi": loaded.roi.mode, "class_names": names,
        "positive_class": names[positive_index], "auc": f"ROC-AUC of {positive}", "subset": options.subset,
        "split_file": resolved_path(options.split_file) if options.split_file else None, "n_images": len(rows),
        "n": int(readable.sum()), "n_left_out": int((~readable).sum()),
        "lung_mask_sources": mask_table["lung_mask_source"].value_counts().to_dict() if mask_table is not None else {},
        "shifts": {name: {"title": acquisition.SHIFTS[name].title, "strength": acquisition.SHIFTS[name].strength,
                          "strengths": list(values), "sanity": acquisition.SHIFTS[name].sanity}
                   for name, values in plan.items()},
        "results": result_rows, "mean_drop": totals["mean_drop"], "worst": totals["worst"], "summary_line": line,
        "n_bootstrap": n_bootstrap, "seed": seed, "versions": software_versions(),
    }
    write_outputs(out_dir, summary | {"seconds": round(time.perf_counter() - started, 1)})
    return StressResult(summary, result_rows, line, out_dir, notes)


def names_in(paths: Sequence[str], root: Path) -> dict[str, str]:
    """Each path's name inside the data folder ``root`` (POSIX), or its resolved path when it lies elsewhere."""
    base = Path(resolved_path(root))
    base = base if base.is_dir() else base.parent  # a label CSV: its folder
    names = {}
    for path in paths:
        full = Path(resolved_path(path))
        names[path] = full.relative_to(base).as_posix() if full.is_relative_to(base) else str(full)
    return names


def write_outputs(out_dir: Path, summary: dict) -> None:
    """``stress.png`` and, last (its presence marks a finished check), ``stress.json``."""
    from covid_tf.figures.stress import plot_stress_summary

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_stress_summary(summary, path=out_dir / OUTPUT_FILES[1])
    atomic_write_json(out_dir / OUTPUT_FILES[0], to_jsonable(summary))
